/*
 * test_capctl: the capacity controller's verdicts (capctl.h) on injected latencies and an
 * injected clock (the simulation of capctlfx). Covered:
 * - work-conserving: a tier with nothing above it is never limited, however slow;
 * - light, jittery load never cuts, however sparse the tier above and however far its latency
 *   sits above the level it had while hot (issue 31), and a tier that does not press is never
 *   cut even when the tier above threatens its objective; a slowdown the tier above's clear
 *   requests share is not blamed on the tiers below (it cuts nobody), one beside them is;
 * - a storm cuts the lowest pressing tier first, down to its floor and never below, then the
 *   next one up; enterprise is never cut; a p99 past the objective threatens on its own;
 * - the storm's end: growth back to the maximum within the stated bound, also while the tier
 *   above sends too few requests for a verdict; a quiet tier above does not keep the cut;
 * - a floor of 0 closes the tier and it reopens;
 * - time threatened is counted, and the threshold shown is the one the verdict was judged by;
 * - on a simulated database the limit settles in a band.
 * The gate's pacing and the request path on threads are in test_capctl_gate, verdicts that
 * take in other instances' in test_capctl_fleet.
 */
#include "capctlfx.h"
#include "capctl.h"

#include <pthread.h>
#include <setjmp.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

/* ---- tests ---------------------------------------------------------------------------------- */

static void a_tier_with_nobody_above_is_never_limited(void **state)
{
    (void)state;
    struct ccfx_sim s;
    ccfx_sim_init(&s, ccfx_tiers);
    /* free alone, a storm of slow requests: nothing above it to protect. */
    ccfx_sim_run(&s, 50, (struct ccfx_flow[]){{100, 20000, 0, 0}, CCFX_QUIET, CCFX_QUIET});
    assert_false(ccfx_stats(&s, CCFX_FREE).gated);
    assert_true(ccfx_limit_of(&s, CCFX_FREE) == 5);
    assert_int_equal(s.shed[CCFX_FREE], 0);
    capctl_destroy(s.c);
}

static void light_jittery_load_never_cuts_however_sparse_the_tier_above(void **state)
{
    (void)state;
    struct ccfx_sim s;
    ccfx_sim_init(&s, ccfx_tiers);
    /* Enterprise hot first: its level is 0.09 ms. */
    ccfx_sim_run(&s, 50, (struct ccfx_flow[]){CCFX_QUIET, CCFX_QUIET, CCFX_ENT_HOT});
    assert_true(ccfx_stats(&s, CCFX_ENT).level_us < 120);
    /* Then light traffic for a minute: enterprise sparse, four times slower than its hot level
     * and jittery, free light over many tenants. Nobody is cut, nothing is shed. */
    for (int k = 0; k < 600; k++) {
        ccfx_sim_interval(&s, (struct ccfx_flow[]){CCFX_FREE_LIGHT, CCFX_QUIET, CCFX_ENT_SPARSE});
        assert_true(ccfx_limit_of(&s, CCFX_FREE) == 5);
        assert_false(ccfx_stats(&s, CCFX_FREE).pressing);
    }
    assert_true(ccfx_stats(&s, CCFX_FREE).gated);
    assert_int_equal(s.shed[CCFX_FREE], 0);
    /* The level followed the sparse client's latency: enterprise no longer reads as threatened,
     * and was so for a moment at most. */
    assert_false(ccfx_stats(&s, CCFX_ENT).threatened);
    assert_true(ccfx_stats(&s, CCFX_ENT).level_us > 250);
    assert_true(ccfx_stats(&s, CCFX_ENT).threatened_us < 5 * 1000 * CCFX_MS);
    capctl_destroy(s.c);
}

static void a_tier_that_does_not_press_is_not_cut(void **state)
{
    (void)state;
    struct ccfx_sim s;
    ccfx_sim_init(&s, ccfx_tiers);
    ccfx_sim_run(&s, 50, (struct ccfx_flow[]){CCFX_FREE_LIGHT, CCFX_QUIET, CCFX_ENT_HOT});
    /* Enterprise's own queries turn 50 times slower: it threatens its objective, but free's
     * light traffic is not what threatens it, so free is left alone. */
    ccfx_sim_run(&s, 3, (struct ccfx_flow[]){CCFX_FREE_LIGHT, CCFX_QUIET, {200, 5000, 100, 0}});
    assert_true(ccfx_stats(&s, CCFX_ENT).threatened);
    ccfx_sim_run(&s, 100, (struct ccfx_flow[]){CCFX_FREE_LIGHT, CCFX_QUIET, {200, 5000, 100, 0}});
    assert_true(ccfx_limit_of(&s, CCFX_FREE) == 5);
    assert_int_equal(s.shed[CCFX_FREE], 0);
    /* Nothing presses below it: its level follows, within seconds it is not threatened. */
    assert_false(ccfx_stats(&s, CCFX_ENT).threatened);
    capctl_destroy(s.c);
}

/* 40 free requests a second at 10 ms: 0.4 in progress, so it presses, and enterprise's sparse
 * requests overlap one of them about a third of the time. */
#define FREE_STEADY                                                                                \
    {                                                                                              \
        4, 10000, 1000, 0                                                                          \
    }

static void a_slowdown_its_clear_requests_share_is_not_blamed_on_the_tiers_below(void **state)
{
    (void)state;
    struct ccfx_sim s;
    ccfx_sim_init(&s, ccfx_tiers);
    ccfx_sim_run(&s, 50, (struct ccfx_flow[]){FREE_STEADY, CCFX_QUIET, CCFX_ENT_SPARSE});
    assert_true(ccfx_stats(&s, CCFX_FREE).pressing && ccfx_stats(&s, CCFX_FREE).gated);
    assert_true(ccfx_limit_of(&s, CCFX_FREE) == 5);
    /* The machine turns six times slower for everybody (another process, the database's own
     * work): enterprise's requests with nothing of free beside them are as slow as the rest.
     * Enterprise threatens its objective, and blames nobody: free is not cut. */
    const struct ccfx_flow ent_slow = {3, 2000, 500, 0};
    bool threatened = false;
    for (int k = 0; k < 50; k++) {
        ccfx_sim_interval(&s, (struct ccfx_flow[]){FREE_STEADY, CCFX_QUIET, ent_slow});
        threatened |= ccfx_stats(&s, CCFX_ENT).threatened;
        assert_true(ccfx_limit_of(&s, CCFX_FREE) == 5);
        assert_false(ccfx_stats(&s, CCFX_ENT).blamed);
    }
    assert_true(threatened);
    assert_int_equal(s.shed[CCFX_FREE], 0);
    /* The same rates, back to its own speed, but slowed by 5 ms whenever a free request runs
     * beside it: its clear requests are not slow, the threat is free's, and free is cut. */
    ccfx_sim_run(&s, 100, (struct ccfx_flow[]){FREE_STEADY, CCFX_QUIET, CCFX_ENT_SPARSE});
    assert_true(ccfx_limit_of(&s, CCFX_FREE) == 5);
    const struct ccfx_flow ent_beside = {3, 350, 150, 5000};
    bool blamed = false;
    for (int k = 0; k < 50 && ccfx_limit_of(&s, CCFX_FREE) == 5; k++) {
        ccfx_sim_interval(&s, (struct ccfx_flow[]){FREE_STEADY, CCFX_QUIET, ent_beside});
        blamed |= ccfx_stats(&s, CCFX_ENT).blamed;
    }
    assert_true(blamed);
    assert_true(ccfx_limit_of(&s, CCFX_FREE) < 5);
    capctl_destroy(s.c);
}

static void a_storm_cuts_the_lowest_pressing_tier_first_and_never_below_its_floor(void **state)
{
    (void)state;
    struct ccfx_sim s;
    ccfx_sim_init(&s, ccfx_tiers);
    const struct ccfx_flow pro = {40, 2000, 500, 0}; /* 0.8 in progress: pressing */
    ccfx_sim_run(&s, 50, (struct ccfx_flow[]){CCFX_FREE_STORM, pro, CCFX_ENT_HOT});
    assert_true(ccfx_stats(&s, CCFX_FREE).gated && ccfx_stats(&s, CCFX_PRO).gated &&
                !ccfx_stats(&s, CCFX_ENT).gated);
    assert_true(ccfx_limit_of(&s, CCFX_FREE) == 5 && ccfx_limit_of(&s, CCFX_PRO) == 20);
    assert_true(ccfx_stats(&s, CCFX_FREE).pressing && ccfx_stats(&s, CCFX_PRO).pressing);
    /* Every request of theirs running slows enterprise by 5 ms: free is cut, pro untouched
     * while free can give. */
    const struct ccfx_flow slow = {200, 90, 10, 5000};
    int k = 0;
    while (ccfx_limit_of(&s, CCFX_FREE) > 0.1 && k++ < 50) {
        ccfx_sim_interval(&s, (struct ccfx_flow[]){CCFX_FREE_STORM, pro, slow});
        assert_true(ccfx_limit_of(&s, CCFX_PRO) == 20);
    }
    assert_true(ccfx_limit_of(&s, CCFX_FREE) == 0.1); /* the floor, not below */
    assert_true(k <= 10);
    assert_true(s.shed[CCFX_FREE] > 0);
    /* Still threatened: now pro is cut, to its floor of 2 at the least; enterprise never. */
    ccfx_sim_run(&s, 30, (struct ccfx_flow[]){CCFX_FREE_STORM, pro, slow});
    assert_true(ccfx_limit_of(&s, CCFX_PRO) == 2);
    assert_true(ccfx_limit_of(&s, CCFX_FREE) == 0.1);
    assert_false(ccfx_stats(&s, CCFX_ENT).gated);
    assert_true(ccfx_limit_of(&s, CCFX_ENT) == 50);
    assert_int_equal(s.shed[CCFX_ENT], 0);
    capctl_destroy(s.c);
}

static void a_p99_past_the_objective_threatens_on_its_own(void **state)
{
    (void)state;
    struct capctl_tier_cfg tc[CCFX_NT];
    memcpy(tc, ccfx_tiers, sizeof(tc));
    tc[CCFX_ENT].objective_us = 10 * CCFX_MS;
    struct ccfx_sim s;
    ccfx_sim_init(&s, tc);
    ccfx_sim_run(&s, 50, (struct ccfx_flow[]){CCFX_FREE_STORM, CCFX_QUIET, CCFX_ENT_HOT});
    assert_false(ccfx_stats(&s, CCFX_ENT).threatened);
    /* The median does not move, but one request in fifty takes 50 ms: past the objective. */
    struct ccfx_flow ent = CCFX_ENT_HOT;
    ent.n = 50;
    ccfx_sim_interval(&s, (struct ccfx_flow[]){CCFX_FREE_STORM, CCFX_QUIET, ent});
    for (int k = 0; k < 3; k++) {
        assert_true(capctl_enter(s.c, CCFX_ENT, s.now, &(int64_t){0}));
        capctl_leave(s.c, CCFX_ENT, s.now, s.now + 50 * CCFX_MS);
        capctl_observe(s.c, CCFX_ENT, 50 * CCFX_MS, s.now + 50 * CCFX_MS);
        ccfx_sim_interval(&s, (struct ccfx_flow[]){CCFX_FREE_STORM, CCFX_QUIET, ent});
    }
    struct capctl_tier_stats st = ccfx_stats(&s, CCFX_ENT);
    assert_true(st.mean_us < 150);
    assert_true(st.p99_us > 10 * CCFX_MS);
    assert_true(ccfx_limit_of(&s, CCFX_FREE) < 5);
    capctl_destroy(s.c);
}

/* Enterprise beside a storm: every free request running slows it by 5 ms. */
#define ENT_STORMED                                                                                \
    {                                                                                              \
        200, 90, 10, 5000                                                                          \
    }

/* A storm: free offers 5 requests in progress, each slowing enterprise, for three seconds:
 * free is cut until it runs about a tenth of the time (enterprise's typical latency leaves its
 * slowest tenth out), well below one request. */
static void storm_free(struct ccfx_sim *s)
{
    ccfx_sim_run(s, 50, (struct ccfx_flow[]){CCFX_QUIET, CCFX_QUIET, CCFX_ENT_HOT});
    ccfx_sim_run(s, 30, (struct ccfx_flow[]){CCFX_FREE_STORM, CCFX_QUIET, ENT_STORMED});
    assert_true(ccfx_limit_of(s, CCFX_FREE) <= 0.3);
    assert_true(ccfx_stats(s, CCFX_ENT).threatened_us > 0);
}

static void after_a_storm_free_is_back_at_its_max_within_two_seconds(void **state)
{
    (void)state;
    struct ccfx_sim s;
    ccfx_sim_init(&s, ccfx_tiers);
    storm_free(&s);
    /* The storm ends; light traffic, enterprise sparse (far above the level it had while hot).
     * The bound the README states: 2 s. */
    int k = 0;
    while (ccfx_limit_of(&s, CCFX_FREE) < 5 && k < 100) {
        ccfx_sim_interval(&s, (struct ccfx_flow[]){CCFX_FREE_LIGHT, CCFX_QUIET, CCFX_ENT_SPARSE});
        k++;
    }
    printf("# free back at its max %d ms after the storm\n", k * 100);
    assert_true(k * CCFX_IV <= 2000 * CCFX_MS);
    /* And it stays there. */
    uint64_t shed = s.shed[CCFX_FREE];
    for (int n = 0; n < 300; n++) {
        ccfx_sim_interval(&s, (struct ccfx_flow[]){CCFX_FREE_LIGHT, CCFX_QUIET, CCFX_ENT_SPARSE});
        assert_true(ccfx_limit_of(&s, CCFX_FREE) == 5);
    }
    assert_true(s.shed[CCFX_FREE] == shed);
    capctl_destroy(s.c);
}

static void a_cut_tier_whose_traffic_turns_light_is_released_at_the_next_verdict(void **state)
{
    (void)state;
    struct ccfx_sim s;
    ccfx_sim_init(&s, ccfx_tiers);
    storm_free(&s);
    /* The storm stops while enterprise is still busy (and its last verdict may threaten): the
     * first interval in which free's limit refused nothing and was barely used gives it all
     * back, before its light traffic meets the limit. */
    assert_true(ccfx_limit_of(&s, CCFX_FREE) < 5);
    ccfx_sim_interval(&s, (struct ccfx_flow[]){CCFX_FREE_LIGHT, CCFX_QUIET, CCFX_ENT_HOT});
    ccfx_sim_interval(&s, (struct ccfx_flow[]){CCFX_FREE_LIGHT, CCFX_QUIET, CCFX_ENT_HOT});
    assert_true(ccfx_limit_of(&s, CCFX_FREE) == 5);
    uint64_t shed = s.shed[CCFX_FREE];
    ccfx_sim_run(&s, 100, (struct ccfx_flow[]){CCFX_FREE_LIGHT, CCFX_QUIET, CCFX_ENT_HOT});
    assert_true(s.shed[CCFX_FREE] == shed);
    assert_true(ccfx_limit_of(&s, CCFX_FREE) == 5);
    capctl_destroy(s.c);
}

static void a_tier_above_with_too_few_samples_does_not_block_growth(void **state)
{
    (void)state;
    struct ccfx_sim s;
    ccfx_sim_init(&s, ccfx_tiers);
    storm_free(&s);
    /* Enterprise's latency is back (one verdict says so), then it sends two requests per
     * interval: a verdict every ten intervals at best. free still presses (the storm goes on,
     * but no longer hurts enterprise): it grows in every interval, verdict or not. */
    ccfx_sim_interval(&s, (struct ccfx_flow[]){CCFX_FREE_STORM, CCFX_QUIET, CCFX_ENT_HOT});
    assert_false(ccfx_stats(&s, CCFX_ENT).threatened);
    double prev = ccfx_limit_of(&s, CCFX_FREE);
    int k = 0;
    for (; k < 200 && prev < 5; k++) {
        ccfx_sim_interval(&s, (struct ccfx_flow[]){CCFX_FREE_STORM, CCFX_QUIET, {2, 90, 10, 0}});
        assert_true(ccfx_stats(&s, CCFX_FREE).pressing);
        assert_true(ccfx_limit_of(&s, CCFX_FREE) > prev);
        prev = ccfx_limit_of(&s, CCFX_FREE);
    }
    assert_true(prev == 5);
    /* Slowly at first (probing: a tier above threatened within the last second), then at the
     * full rate: from its floor to 5 within 1 s + 1 s. */
    assert_true(k * CCFX_IV <= 2100 * CCFX_MS);
    capctl_destroy(s.c);
}

static void a_quiet_tier_above_does_not_keep_the_cut(void **state)
{
    (void)state;
    struct ccfx_sim s;
    ccfx_sim_init(&s, ccfx_tiers);
    storm_free(&s);
    /* Enterprise stops: for a second it still counts as active and free stays gated, but its
     * stale verdict does not hold the cut; then free is not gated at all. */
    ccfx_sim_run(&s, 9, (struct ccfx_flow[]){CCFX_FREE_STORM, CCFX_QUIET, CCFX_QUIET});
    assert_true(ccfx_stats(&s, CCFX_FREE).gated);
    assert_false(ccfx_stats(&s, CCFX_ENT).threatened);
    ccfx_sim_run(&s, 12, (struct ccfx_flow[]){CCFX_FREE_STORM, CCFX_QUIET, CCFX_QUIET});
    assert_false(ccfx_stats(&s, CCFX_FREE).gated);
    assert_true(ccfx_limit_of(&s, CCFX_FREE) == 5);
    capctl_destroy(s.c);
}

static void
a_database_slow_for_everybody_cuts_only_until_the_slowness_shows_as_its_own(void **state)
{
    (void)state;
    struct ccfx_sim s;
    ccfx_sim_init(&s, ccfx_tiers);
    ccfx_sim_run(&s, 50, (struct ccfx_flow[]){CCFX_FREE_STORM, {40, 2000, 0, 0}, CCFX_ENT_HOT});
    /* Every tier 50 times slower, whatever the others do. Enterprise is never limited; free
     * is cut at first (enterprise's latency is new, and free always had something running),
     * until enterprise's requests that ended with nothing below running show the same
     * latency: it is enterprise's own, and cutting free would not help; free grows back. */
    double least = 5;
    for (int k = 0; k < 300; k++) {
        ccfx_sim_interval(
            &s, (struct ccfx_flow[]){{100, 250000, 0, 0}, {1, 50000, 0, 0}, {200, 4500, 0, 0}});
        least = ccfx_limit_of(&s, CCFX_FREE) < least ? ccfx_limit_of(&s, CCFX_FREE) : least;
    }
    assert_true(least < 1);
    assert_true(ccfx_limit_of(&s, CCFX_FREE) == 5);
    assert_true(ccfx_limit_of(&s, CCFX_PRO) == 20);
    assert_true(ccfx_limit_of(&s, CCFX_ENT) == 50);
    assert_int_equal(s.shed[CCFX_ENT], 0);
    assert_false(ccfx_stats(&s, CCFX_ENT).threatened);
    capctl_destroy(s.c);
}

static void a_floor_of_zero_closes_the_tier_and_it_reopens(void **state)
{
    (void)state;
    struct ccfx_sim s;
    (void)ccfx_threaten_to(&s, 0);
    /* Cut to nothing: not one request at a time, none, while enterprise is threatened. */
    uint64_t served = s.served[CCFX_FREE];
    ccfx_sim_run(&s, 10, (struct ccfx_flow[]){CCFX_FREE_STORM, CCFX_QUIET, {200, 2000, 0, 0}});
    assert_true(ccfx_limit_of(&s, CCFX_FREE) == 0);
    assert_int_equal(s.served[CCFX_FREE], served);
    assert_true(s.shed[CCFX_FREE] > 900);
    assert_int_equal(s.last_retry, 0); /* retry at the next verdict */
    /* Enterprise within its objective again: free grows back from nothing. */
    ccfx_sim_run(&s, 25, (struct ccfx_flow[]){CCFX_FREE_STORM, CCFX_QUIET, CCFX_ENT_HOT});
    assert_true(ccfx_limit_of(&s, CCFX_FREE) == 5);
    assert_true(s.served[CCFX_FREE] > served);
    capctl_destroy(s.c);
}

static void the_time_threatened_is_counted(void **state)
{
    (void)state;
    struct ccfx_sim s;
    ccfx_sim_init(&s, ccfx_tiers);
    ccfx_sim_run(&s, 50, (struct ccfx_flow[]){CCFX_QUIET, CCFX_QUIET, CCFX_ENT_HOT});
    assert_int_equal(ccfx_stats(&s, CCFX_ENT).threatened_us, 0);
    /* Ten intervals far past its threshold, then back: a second threatened. */
    ccfx_sim_run(&s, 10, (struct ccfx_flow[]){CCFX_QUIET, {100, 10000, 0, 0}, {200, 2000, 100, 0}});
    assert_true(ccfx_stats(&s, CCFX_ENT).threatened);
    ccfx_sim_run(&s, 20, (struct ccfx_flow[]){CCFX_QUIET, CCFX_QUIET, CCFX_ENT_HOT});
    struct capctl_tier_stats st = ccfx_stats(&s, CCFX_ENT);
    assert_false(st.threatened);
    assert_int_equal(st.threatened_us, 1000 * CCFX_MS);
    assert_true(st.objective_us == 300 * CCFX_MS);
    assert_true(st.threshold_us >= st.level_us + 50);
    capctl_destroy(s.c);
}

static void the_threshold_shown_is_the_one_the_verdict_was_judged_by(void **state)
{
    (void)state;
    struct ccfx_sim s;
    ccfx_sim_init(&s, ccfx_tiers);
    ccfx_sim_run(&s, 50, (struct ccfx_flow[]){CCFX_QUIET, CCFX_QUIET, CCFX_ENT_HOT});
    /* Enterprise turns sparse at 0.25 ms, nothing below: its first verdict (after ten
     * intervals) passes its threshold of 0.19 ms, and moves its level towards 0.25 ms, which
     * lifts the threshold past 0.25 ms. What the stats show is what the verdict was judged by. */
    int k = 0;
    while (!ccfx_stats(&s, CCFX_ENT).threatened && k++ < 20)
        ccfx_sim_interval(&s, (struct ccfx_flow[]){CCFX_QUIET, CCFX_QUIET, {3, 250, 0, 0}});
    struct capctl_tier_stats st = ccfx_stats(&s, CCFX_ENT);
    assert_true(st.threatened);
    assert_true(st.mean_us > st.threshold_us);
    assert_true(st.threshold_us < 200);
    assert_true(st.level_us > st.threshold_us - 100); /* the level moved on */
    capctl_destroy(s.c);
}

/*
 * A simulated database: enterprise's latency is 0.09 ms plus 1 ms per free request running,
 * free offers 5 at once. Enterprise's typical latency leaves its slowest tenth out and may
 * grow by max(50 %, 0.05 ms): free is held to running about a tenth of the time, and after
 * settling its limit stays in a band well below one request, above its floor, never shut.
 */
static void on_a_simulated_database_the_limit_settles_in_a_band(void **state)
{
    (void)state;
    struct ccfx_sim s;
    ccfx_sim_init(&s, ccfx_tiers);
    ccfx_sim_run(&s, 50, (struct ccfx_flow[]){CCFX_QUIET, CCFX_QUIET, CCFX_ENT_HOT});
    const struct ccfx_flow ent = {200, 90, 10, 1000};
    double lo = 1e9, hi = 0, sum = 0;
    int threatened = 0;
    for (int k = 0; k < 600; k++) {
        ccfx_sim_interval(&s, (struct ccfx_flow[]){CCFX_FREE_STORM, CCFX_QUIET, ent});
        if (k >= 100) {
            double l = ccfx_limit_of(&s, CCFX_FREE);
            lo = l < lo ? l : lo;
            hi = l > hi ? l : hi;
            sum += l;
            threatened += ccfx_stats(&s, CCFX_ENT).threatened;
        }
    }
    printf("# free's limit settled in [%.3f, %.3f], mean %.2f; enterprise threatened %d of 500\n",
           lo, hi, sum / 500, threatened);
    assert_true(lo >= 0.1);
    assert_true(hi <= 0.5);
    assert_true(s.served[CCFX_FREE] > 1000);
    capctl_destroy(s.c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(a_tier_with_nobody_above_is_never_limited),
        cmocka_unit_test(light_jittery_load_never_cuts_however_sparse_the_tier_above),
        cmocka_unit_test(a_tier_that_does_not_press_is_not_cut),
        cmocka_unit_test(a_slowdown_its_clear_requests_share_is_not_blamed_on_the_tiers_below),
        cmocka_unit_test(a_storm_cuts_the_lowest_pressing_tier_first_and_never_below_its_floor),
        cmocka_unit_test(a_p99_past_the_objective_threatens_on_its_own),
        cmocka_unit_test(after_a_storm_free_is_back_at_its_max_within_two_seconds),
        cmocka_unit_test(a_cut_tier_whose_traffic_turns_light_is_released_at_the_next_verdict),
        cmocka_unit_test(a_tier_above_with_too_few_samples_does_not_block_growth),
        cmocka_unit_test(a_quiet_tier_above_does_not_keep_the_cut),
        cmocka_unit_test(
            a_database_slow_for_everybody_cuts_only_until_the_slowness_shows_as_its_own),
        cmocka_unit_test(a_floor_of_zero_closes_the_tier_and_it_reopens),
        cmocka_unit_test(the_time_threatened_is_counted),
        cmocka_unit_test(the_threshold_shown_is_the_one_the_verdict_was_judged_by),
        cmocka_unit_test(on_a_simulated_database_the_limit_settles_in_a_band),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
