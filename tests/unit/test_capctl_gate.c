/*
 * test_capctl_gate: the capacity controller's gate (capctl.h) on an injected clock: below one
 * request it paces, a pause is bounded to CAPCTL_PAUSE_MAX_US whatever the request took and is
 * rescaled when the limit moves (issue 26, item 6); and the request path on several threads
 * beside the verdicts (and a reload) keeps its counts (run under ThreadSanitizer by
 * scripts/test.sh). Fixture: capctlfx.
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

/* Cut free to floor, then let what runs end and any pause pass (no tick: the limit and the
 * gate stay). */
static void cut_below_one(struct ccfx_sim *s, double floor)
{
    (void)ccfx_threaten_to(s, floor);
    s->now += (int64_t)(6 * CCFX_MS / floor); /* free's slowest request, and its rest */
    ccfx_sim_until(s, s->now);
}

static void below_one_request_the_gate_paces(void **state)
{
    (void)state;
    struct ccfx_sim s;
    cut_below_one(&s, 0.1);
    int64_t now = s.now, retry = 0;
    assert_true(capctl_enter(s.c, CCFX_FREE, now, &retry));
    assert_false(capctl_enter(s.c, CCFX_FREE, now, &retry)); /* one at a time */
    capctl_leave(s.c, CCFX_FREE, now, now + 2 * CCFX_MS);    /* it took 2 ms... */
    now += 2 * CCFX_MS;
    assert_false(
        capctl_enter(s.c, CCFX_FREE, now + 17 * CCFX_MS, &retry)); /* ...so 18 ms of rest */
    assert_true(retry == 1 * CCFX_MS);
    assert_true(capctl_enter(s.c, CCFX_FREE, now + 18 * CCFX_MS, &retry));
    capctl_leave(s.c, CCFX_FREE, now + 18 * CCFX_MS, now + 18 * CCFX_MS);
    assert_true(ccfx_stats(&s, CCFX_FREE).shedding);
    capctl_destroy(s.c);
}

static void a_pause_is_bounded_whatever_the_request_took(void **state)
{
    (void)state;
    struct ccfx_sim s;
    cut_below_one(&s, CAPCTL_MIN_LIMIT);
    /* At 1 % a request of 5 s would earn 495 s of rest: the pause is bounded. */
    int64_t now = s.now, retry = 0;
    assert_true(capctl_enter(s.c, CCFX_FREE, now, &retry));
    capctl_leave(s.c, CCFX_FREE, now, now + 5000 * CCFX_MS);
    now += 5000 * CCFX_MS;
    assert_false(capctl_enter(s.c, CCFX_FREE, now + CAPCTL_PAUSE_MAX_US - 1, &retry));
    assert_true(retry == 1);
    assert_true(capctl_enter(s.c, CCFX_FREE, now + CAPCTL_PAUSE_MAX_US, &retry));
    capctl_leave(s.c, CCFX_FREE, now + CAPCTL_PAUSE_MAX_US, now + CAPCTL_PAUSE_MAX_US);
    capctl_destroy(s.c);
}

static void a_pause_follows_the_limit_as_it_grows_back(void **state)
{
    (void)state;
    struct ccfx_sim s;
    cut_below_one(&s, 0.1);
    /* Enterprise is fast again (its last slow requests, ending now, still threaten once). */
    ccfx_sim_interval(&s, (struct ccfx_flow[]){CCFX_QUIET, CCFX_QUIET, CCFX_ENT_HOT});
    double was = ccfx_limit_of(&s, CCFX_FREE);
    assert_true(was < 1);
    /* A request of 100 ms: 100 x (1/limit - 1) ms of rest. */
    int64_t now = s.now, retry = 0, rest = (int64_t)(100 * CCFX_MS * (1 / was - 1));
    assert_true(capctl_enter(s.c, CCFX_FREE, now, &retry));
    capctl_leave(s.c, CCFX_FREE, now, now + 100 * CCFX_MS);
    assert_false(capctl_enter(s.c, CCFX_FREE, now + 50 * CCFX_MS, &retry));
    assert_true(llabs(retry - (50 * CCFX_MS + rest)) <= 1 * CCFX_MS);
    /* The limit grows in the next verdict (at now + 100 ms), and the rest still due shrinks in
     * proportion: it was taken at the old limit. */
    ccfx_sim_interval(&s, (struct ccfx_flow[]){CCFX_QUIET, CCFX_QUIET, CCFX_ENT_HOT});
    double lim = ccfx_limit_of(&s, CCFX_FREE);
    assert_true(lim > was && lim < 1);
    int64_t shrunk = (int64_t)((double)rest * (1 / lim - 1) / (1 / was - 1));
    assert_false(capctl_enter(s.c, CCFX_FREE, now + 50 * CCFX_MS, &retry));
    assert_true(llabs(retry - (50 * CCFX_MS + shrunk)) <= 1 * CCFX_MS);
    /* And once the limit is 1 or more, no pause is left at all: a request of 500 ms at that
     * limit earns its second of rest, which the growth to 1 drops. */
    int64_t t = now + 50 * CCFX_MS + retry;
    assert_true(capctl_enter(s.c, CCFX_FREE, t, &retry));
    capctl_leave(s.c, CCFX_FREE, t, t + 500 * CCFX_MS);
    assert_false(capctl_enter(s.c, CCFX_FREE, t + 600 * CCFX_MS, &retry));
    while (ccfx_limit_of(&s, CCFX_FREE) < 1)
        ccfx_sim_interval(&s, (struct ccfx_flow[]){CCFX_QUIET, CCFX_QUIET, CCFX_ENT_HOT});
    assert_true(capctl_enter(s.c, CCFX_FREE, t + 600 * CCFX_MS, &retry));
    capctl_leave(s.c, CCFX_FREE, t + 600 * CCFX_MS, t + 600 * CCFX_MS);
    capctl_destroy(s.c);
}

/* ---- threads ------------------------------------------------------------------------------ */

/* One client thread: requests of its tier at the shared clock until told to stop. */
struct client {
    struct capctl *c;
    size_t tier;
    int64_t lat;
    _Atomic int64_t *clock;
    atomic_bool *stop;
    long attempts, admitted;
};

static void *client_main(void *arg)
{
    struct client *cl = arg;
    while (!atomic_load(cl->stop)) {
        int64_t now = atomic_fetch_add(cl->clock, 3), retry = 0;
        cl->attempts++;
        if (!capctl_enter(cl->c, cl->tier, now, &retry))
            continue;
        cl->admitted++;
        capctl_leave(cl->c, cl->tier, now, now + cl->lat);
        capctl_observe(cl->c, cl->tier, cl->lat, now + cl->lat);
    }
    return NULL;
}

static void the_request_path_and_the_verdicts_run_side_by_side(void **state)
{
    (void)state;
    struct capctl *c = NULL;
    assert_int_equal(capctl_create(&ccfx_cfg, CCFX_NT, &c), 0);
    for (size_t i = 0; i < CCFX_NT; i++)
        capctl_configure(c, i, &ccfx_tiers[i]);
    _Atomic int64_t clock = 1000 * 1000 * CCFX_MS;
    atomic_bool stop = false;
    struct client cl[3] = {{c, CCFX_FREE, 5000, &clock, &stop, 0, 0},
                           {c, CCFX_FREE, 5000, &clock, &stop, 0, 0},
                           {c, CCFX_ENT, 90, &clock, &stop, 0, 0}};
    pthread_t th[3];
    for (int k = 0; k < 3; k++)
        assert_int_equal(pthread_create(&th[k], NULL, client_main, &cl[k]), 0);
    /* Ticks (and a reload) while the clients run: the gate, pacing and histograms are shared. */
    for (int k = 0; k < 300; k++) {
        int64_t now = atomic_fetch_add(&clock, CCFX_IV / 10) + CCFX_IV / 10;
        (void)capctl_tick(c, now, NULL);
        if (k == 150)
            capctl_configure(c, CCFX_FREE, &ccfx_tiers[CCFX_FREE]);
    }
    atomic_store(&stop, true);
    for (int k = 0; k < 3; k++)
        pthread_join(th[k], NULL);
    struct capctl_tier_stats f, e;
    capctl_stats(c, CCFX_FREE, &f);
    capctl_stats(c, CCFX_ENT, &e);
    assert_int_equal(f.in_progress, 0);
    assert_int_equal(e.in_progress, 0);
    assert_true(f.admitted == (uint64_t)(cl[0].admitted + cl[1].admitted));
    assert_true(f.admitted + f.shed == (uint64_t)(cl[0].attempts + cl[1].attempts));
    assert_true(e.admitted == (uint64_t)cl[2].attempts && e.shed == 0);
    capctl_destroy(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(below_one_request_the_gate_paces),
        cmocka_unit_test(a_pause_is_bounded_whatever_the_request_took),
        cmocka_unit_test(a_pause_follows_the_limit_as_it_grows_back),
        cmocka_unit_test(the_request_path_and_the_verdicts_run_side_by_side),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
