/*
 * test_capctl: the capacity controller (capctl.h) on injected latencies and an injected clock.
 *
 * Three tiers as built in (free < pro < enterprise). Covered: a tier with nothing above it is
 * never limited, however slow (work-conserving); congestion of a higher tier cuts the lowest
 * gated tier first, down to its floor and never below, then the next one up; a higher tier
 * that went quiet does not keep a lower one cut; the top tier is
 * never cut, so a database slow for everybody cannot starve it; limits grow back additively
 * once the higher tiers are within tolerance; below one request the gate paces; and on a
 * simulated database whose enterprise latency grows with free's load, the limit settles in a
 * band instead of swinging between floor and max.
 */
#include "capctl.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <cmocka.h>

#define MS 1000ll
#define IV (100 * MS) /* the tick interval of these tests */

enum { FREE, PRO, ENT };

static const struct capctl_cfg cfg = {
    .enabled = true,
    .active_us = 1000 * MS,
    .baseline_us = 300 * 1000 * MS,
    .min_samples = 8,
    .decrease = 0.5,
    .increase = 0.1,
};

static struct capctl *mk(void)
{
    struct capctl *c = NULL;
    assert_int_equal(capctl_create(&cfg, 3, &c), 0);
    const struct capctl_tier_cfg t[3] = {
        {.priority = 10, .max = 5, .floor = 0.1, .tolerance = 1.0},
        {.priority = 20, .max = 20, .floor = 2, .tolerance = 1.0},
        {.priority = 30, .max = 50, .floor = 25, .tolerance = 0.5},
    };
    for (size_t i = 0; i < 3; i++)
        capctl_configure(c, i, &t[i]);
    return c;
}

/* One request of tier i at now: enter, served in lat_us, leave, observed. */
static bool serve(struct capctl *c, size_t i, int64_t now, int64_t lat_us)
{
    int64_t retry = 0;
    if (!capctl_enter(c, i, now, &retry))
        return false;
    capctl_leave(c, i, now, now + lat_us);
    capctl_observe(c, i, lat_us);
    return true;
}

/* An interval: n requests of each listed tier (lat < 0: that tier sends nothing), then the tick.
 * Returns the time after it. */
static int64_t interval(struct capctl *c, int64_t now, int n, const int64_t lat[3])
{
    for (int k = 0; k < n; k++)
        for (size_t i = 0; i < 3; i++)
            if (lat[i] >= 0)
                (void)serve(c, i, now + k, lat[i]);
    now += IV;
    (void)capctl_tick(c, now, NULL);
    return now;
}

static double limit_of(struct capctl *c, size_t i)
{
    struct capctl_tier_stats st;
    capctl_stats(c, i, &st);
    return st.limit;
}

static bool gated(struct capctl *c, size_t i)
{
    struct capctl_tier_stats st;
    capctl_stats(c, i, &st);
    return st.gated;
}

static void a_tier_with_nobody_above_is_never_limited(void **state)
{
    (void)state;
    struct capctl *c = mk();
    int64_t now = 1000 * 1000 * MS;
    /* free alone, fast then forty times slower: nothing above it to protect. */
    for (int k = 0; k < 20; k++)
        now = interval(c, now, 20, (int64_t[]){k < 10 ? 500 : 20000, -1, -1});
    assert_false(gated(c, FREE));
    assert_true(limit_of(c, FREE) == 5);
    for (int k = 0; k < 100; k++)
        assert_true(serve(c, FREE, now + k, 1000000)); /* and it is admitted, whatever it holds */
    capctl_destroy(c);
}

static void congestion_above_cuts_the_lowest_first_and_never_below_its_floor(void **state)
{
    (void)state;
    struct capctl *c = mk();
    int64_t now = 1000 * 1000 * MS;
    /* Everyone active; enterprise's baseline is 1 ms. */
    for (int k = 0; k < 5; k++)
        now = interval(c, now, 20, (int64_t[]){1000, 1000, 1000});
    assert_true(gated(c, FREE) && gated(c, PRO) && !gated(c, ENT));
    assert_true(limit_of(c, FREE) == 5 && limit_of(c, PRO) == 20);
    /* Enterprise at 10 ms (tolerance 50 %): free is cut, pro untouched while free can give. */
    int cuts = 0;
    double last = 5;
    while (limit_of(c, FREE) > 0.1 && cuts < 50) {
        now = interval(c, now, 20, (int64_t[]){-1, 1000, 10000});
        assert_true(limit_of(c, FREE) < last);
        assert_true(limit_of(c, PRO) == 20);
        last = limit_of(c, FREE);
        cuts++;
    }
    assert_true(limit_of(c, FREE) == 0.1); /* the floor, not below */
    assert_true(cuts <= 7);                /* halving from 5 */
    /* Still congested: now pro is cut, to its floor of 2 at the least; enterprise never. */
    for (int k = 0; k < 20; k++)
        now = interval(c, now, 20, (int64_t[]){-1, 1000, 10000});
    assert_true(limit_of(c, PRO) == 2);
    assert_true(limit_of(c, FREE) == 0.1);
    assert_false(gated(c, ENT));
    assert_true(limit_of(c, ENT) == 50);
    capctl_destroy(c);
}

static void a_quiet_tier_above_does_not_keep_the_cut(void **state)
{
    (void)state;
    struct capctl *c = mk();
    int64_t now = 1000 * 1000 * MS;
    for (int k = 0; k < 5; k++)
        now = interval(c, now, 20, (int64_t[]){1000, -1, 1000});
    /* A burst of enterprise's own congests it: free is cut. */
    for (int k = 0; k < 3; k++)
        now = interval(c, now, 20, (int64_t[]){1000, -1, 10000});
    assert_true(limit_of(c, FREE) < 5);
    /* Enterprise stops: for the second it still counts as active, free stays gated, but its
     * stale verdict does not hold the cut: free grows back within that second. */
    for (int k = 0; k < 9; k++) {
        (void)serve(c, FREE, now, 1000);
        now += IV;
        (void)capctl_tick(c, now, NULL);
    }
    assert_true(gated(c, FREE));
    assert_true(limit_of(c, FREE) == 5);
    capctl_destroy(c);
}

static void a_database_slow_for_everybody_does_not_starve_enterprise(void **state)
{
    (void)state;
    struct capctl *c = mk();
    int64_t now = 1000 * 1000 * MS;
    for (int k = 0; k < 5; k++)
        now = interval(c, now, 20, (int64_t[]){1000, 1000, 1000});
    /* Every tier 50 times slower for a long time. */
    for (int k = 0; k < 100; k++)
        now = interval(c, now, 20, (int64_t[]){50000, 50000, 50000});
    assert_true(limit_of(c, FREE) == 0.1);
    assert_true(limit_of(c, PRO) == 2);
    assert_true(limit_of(c, ENT) == 50);
    for (int k = 0; k < 100; k++)
        assert_true(serve(c, ENT, now + k, 50000));
    capctl_destroy(c);
}

static void limits_grow_back_once_the_tiers_above_are_within_tolerance(void **state)
{
    (void)state;
    struct capctl *c = mk();
    int64_t now = 1000 * 1000 * MS;
    for (int k = 0; k < 5; k++)
        now = interval(c, now, 20, (int64_t[]){1000, -1, 1000});
    for (int k = 0; k < 10; k++)
        now = interval(c, now, 20, (int64_t[]){1000, -1, 10000});
    assert_true(limit_of(c, FREE) == 0.1);
    /* Enterprise back at 1.2 ms (within 50 %): free grows by a tenth of its max an interval. */
    double prev = limit_of(c, FREE);
    for (int k = 0; k < 9; k++) {
        now = interval(c, now, 20, (int64_t[]){1000, -1, 1200});
        assert_true(limit_of(c, FREE) > prev);
        assert_true(limit_of(c, FREE) - prev <= 0.5 + 1e-9);
        prev = limit_of(c, FREE);
    }
    for (int k = 0; k < 3; k++)
        now = interval(c, now, 20, (int64_t[]){1000, -1, 1200});
    assert_true(limit_of(c, FREE) == 5);
    /* And when enterprise leaves, free is not gated at all. */
    for (int k = 0; k < 12; k++)
        now = interval(c, now, 20, (int64_t[]){1000, -1, -1});
    assert_false(gated(c, FREE));
    capctl_destroy(c);
}

static void below_one_request_the_gate_paces(void **state)
{
    (void)state;
    struct capctl *c = mk();
    int64_t now = 1000 * 1000 * MS;
    for (int k = 0; k < 5; k++)
        now = interval(c, now, 20, (int64_t[]){1000, -1, 1000});
    for (int k = 0; k < 10; k++)
        now = interval(c, now, 20, (int64_t[]){-1, -1, 10000});
    assert_true(limit_of(c, FREE) == 0.1);
    /* Keep enterprise active (no tick: the limit stays), and drive free by hand. */
    int64_t retry = 0;
    assert_true(capctl_enter(c, FREE, now, &retry));
    assert_false(capctl_enter(c, FREE, now, &retry)); /* one at a time */
    capctl_leave(c, FREE, now, now + 2 * MS);         /* it took 2 ms... */
    now += 2 * MS;
    assert_false(capctl_enter(c, FREE, now + 17 * MS, &retry)); /* ...so 18 ms of rest */
    assert_true(retry == 1 * MS);
    assert_true(capctl_enter(c, FREE, now + 18 * MS, &retry));
    capctl_leave(c, FREE, now + 18 * MS, now + 18 * MS);
    struct capctl_tier_stats st;
    capctl_stats(c, FREE, &st);
    assert_true(st.shed >= 2);
    assert_true(st.shedding);
    capctl_destroy(c);
}

/*
 * A simulated database: enterprise's latency is 1 ms plus 1.5 ms per free request running (free
 * sends more than it may: its running requests are its limit, clipped to its max). Enterprise
 * tolerates 50 %, i.e. 1.5 ms: the limit that meets it is 1/3 of a request. After a settling
 * time the limit stays within [floor, 1] and enterprise is mostly within its tolerance.
 */
static void on_a_simulated_database_the_limit_settles_in_a_band(void **state)
{
    (void)state;
    struct capctl *c = mk();
    int64_t now = 1000 * 1000 * MS;
    for (int k = 0; k < 5; k++)
        now = interval(c, now, 20, (int64_t[]){1000, -1, 1000});
    double lo = 1e9, hi = 0;
    int within = 0;
    for (int k = 0; k < 300; k++) {
        double running = limit_of(c, FREE);
        if (running > 5)
            running = 5;
        int64_t ent = 1000 + (int64_t)(1500 * running);
        now = interval(c, now, 20, (int64_t[]){1000, -1, ent});
        if (k >= 100) {
            double l = limit_of(c, FREE);
            lo = l < lo ? l : lo;
            hi = l > hi ? l : hi;
            within += ent <= 1500 * 1.25; /* within the tolerance, give or take a bucket */
        }
    }
    printf("# free's limit settled in [%.3f, %.3f]; enterprise within tolerance %d of 200\n", lo,
           hi, within);
    assert_true(lo >= 0.1);
    assert_true(hi <= 1.0);
    assert_true(within >= 100);
    capctl_destroy(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(a_tier_with_nobody_above_is_never_limited),
        cmocka_unit_test(congestion_above_cuts_the_lowest_first_and_never_below_its_floor),
        cmocka_unit_test(a_quiet_tier_above_does_not_keep_the_cut),
        cmocka_unit_test(a_database_slow_for_everybody_does_not_starve_enterprise),
        cmocka_unit_test(limits_grow_back_once_the_tiers_above_are_within_tolerance),
        cmocka_unit_test(below_one_request_the_gate_paces),
        cmocka_unit_test(on_a_simulated_database_the_limit_settles_in_a_band),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
