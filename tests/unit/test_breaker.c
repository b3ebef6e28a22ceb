/*
 * test_breaker: the circuit breaker's state machine (breaker.h) on explicit times.
 *
 * CLOSED -> OPEN only with min_calls in the window and failures + timeouts at error_pct;
 * OPEN refuses with the time left; HALF_OPEN admits exactly trial_calls; trials close or reopen
 * it; the rolling window forgets; operators force it open, disable or reset it; the snapshot
 * reports it. Last, threads hammer one breaker while it flips, and the totals must add up.
 */
#include "breaker.h"
#include "log.h"
#include "mclock.h"

#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#define MS 1000ll
#define T0 (1000 * 1000 * MS) /* 1000 s: a whole number of 1 s buckets */

/* 50 % of at least 4 calls in a 10 s window of ten 1 s buckets opens it for 1 s; 2 trials. */
static const struct breaker_cfg cfg = {
    .error_pct = 50,
    .reset_ms = 1000,
    .window_ms = 10000,
    .buckets = 10,
    .min_calls = 4,
    .trial_calls = 2,
};

static enum breaker_permit acquire(struct breaker *b, int64_t now, int64_t *retry)
{
    int64_t r = -1;
    enum breaker_permit p = breaker_acquire(b, now, &r);
    if (retry)
        *retry = r;
    return p;
}

/* One call that is let through and ends with outcome. */
static void call(struct breaker *b, enum breaker_outcome outcome, int64_t now)
{
    enum breaker_permit p = acquire(b, now, NULL);
    assert_int_equal(p, BREAKER_ALLOW);
    breaker_record(b, p, outcome, now);
}

static struct breaker_snapshot snap(struct breaker *b, int64_t now)
{
    struct breaker_snapshot s;
    breaker_snapshot(b, now, &s);
    return s;
}

/* Open a fresh breaker at now with min_calls failures. */
static void open_at(struct breaker *b, int64_t now)
{
    for (int i = 0; i < cfg.min_calls; i++)
        call(b, BREAKER_FAILURE, now);
    assert_int_equal(snap(b, now).state, BREAKER_OPEN);
}

static void stays_closed_until_min_calls(void **state)
{
    (void)state;
    struct breaker *b = breaker_create("t", &cfg);
    for (int i = 0; i < 3; i++)
        call(b, BREAKER_FAILURE, T0);
    /* 100 % failures, but only 3 calls of the 4 needed. */
    struct breaker_snapshot s = snap(b, T0);
    assert_int_equal(s.state, BREAKER_CLOSED);
    assert_int_equal(s.window_calls, 3);
    assert_int_equal(s.window_failures, 3);
    call(b, BREAKER_FAILURE, T0);
    s = snap(b, T0);
    assert_int_equal(s.state, BREAKER_OPEN);
    assert_int_equal(s.opened, 1);
    breaker_destroy(b);
}

static void opens_exactly_at_the_threshold(void **state)
{
    (void)state;
    struct breaker *b = breaker_create("t", &cfg);
    for (int i = 0; i < 3; i++)
        call(b, BREAKER_SUCCESS, T0);
    call(b, BREAKER_FAILURE, T0); /* 1 of 4: 25 % */
    assert_int_equal(snap(b, T0).state, BREAKER_CLOSED);
    call(b, BREAKER_FAILURE, T0); /* 2 of 5: 40 % */
    assert_int_equal(snap(b, T0).state, BREAKER_CLOSED);
    call(b, BREAKER_FAILURE, T0); /* 3 of 6: exactly 50 % */
    assert_int_equal(snap(b, T0).state, BREAKER_OPEN);
    breaker_destroy(b);
}

static void timeouts_count_as_failures_successes_never_open(void **state)
{
    (void)state;
    struct breaker *b = breaker_create("t", &cfg);
    for (int i = 0; i < 4; i++)
        call(b, BREAKER_TIMEOUT, T0);
    struct breaker_snapshot s = snap(b, T0);
    assert_int_equal(s.state, BREAKER_OPEN);
    assert_int_equal(s.timeouts, 4);
    assert_int_equal(s.failures, 0);
    assert_int_equal(s.window_failures, 4);
    breaker_destroy(b);

    b = breaker_create("t", &cfg);
    for (int i = 0; i < 1000; i++)
        call(b, BREAKER_SUCCESS, T0 + i * MS);
    s = snap(b, T0 + 999 * MS);
    assert_int_equal(s.state, BREAKER_CLOSED);
    assert_int_equal(s.successes, 1000);
    assert_int_equal(s.window_failures, 0);
    assert_true(s.failure_rate == 0.0);
    breaker_destroy(b);

    /* A success never opens it, even one that brings the window to min_calls at 75 %: the
     * verdict is taken on the next failure. */
    b = breaker_create("t", &cfg);
    for (int i = 0; i < 3; i++)
        call(b, BREAKER_FAILURE, T0);
    call(b, BREAKER_SUCCESS, T0);
    assert_int_equal(snap(b, T0).state, BREAKER_CLOSED);
    call(b, BREAKER_TIMEOUT, T0);
    assert_int_equal(snap(b, T0).state, BREAKER_OPEN);
    breaker_destroy(b);
}

static void open_refuses_with_time_until_half_open(void **state)
{
    (void)state;
    struct breaker *b = breaker_create("t", &cfg);
    open_at(b, T0);
    int64_t retry;
    assert_int_equal(acquire(b, T0, &retry), BREAKER_DENY);
    assert_int_equal(retry, 1000 * MS);
    assert_int_equal(acquire(b, T0 + 300 * MS, &retry), BREAKER_DENY);
    assert_int_equal(retry, 700 * MS);
    assert_int_equal(acquire(b, T0 + 1000 * MS - 1, &retry), BREAKER_DENY);
    assert_int_equal(retry, 1);
    struct breaker_snapshot s = snap(b, T0 + 1000 * MS - 1);
    assert_int_equal(s.state, BREAKER_OPEN);
    assert_int_equal(s.rejections, 3);
    breaker_destroy(b);
}

static void half_open_admits_exactly_trial_calls(void **state)
{
    (void)state;
    struct breaker *b = breaker_create("t", &cfg);
    open_at(b, T0);
    const int64_t t = T0 + 1000 * MS;
    /* Past reset_ms the snapshot already reports what the next call would see. */
    assert_int_equal(snap(b, t).state, BREAKER_HALF_OPEN);
    int64_t retry;
    assert_int_equal(acquire(b, t, NULL), BREAKER_TRIAL);
    assert_int_equal(acquire(b, t, NULL), BREAKER_TRIAL);
    for (int i = 0; i < 5; i++) {
        assert_int_equal(acquire(b, t + i * MS, &retry), BREAKER_DENY);
        assert_int_equal(retry, 1000 * MS); /* unknown: a trial's verdict is pending */
    }
    struct breaker_snapshot s = snap(b, t);
    assert_int_equal(s.state, BREAKER_HALF_OPEN);
    assert_int_equal(s.rejections, 5);
    assert_int_equal(s.next_trial_wall_us, 0);
    breaker_destroy(b);
}

static void trial_successes_close_and_clear_the_window(void **state)
{
    (void)state;
    struct breaker *b = breaker_create("t", &cfg);
    open_at(b, T0);
    const int64_t t = T0 + 1000 * MS;
    enum breaker_permit p1 = acquire(b, t, NULL), p2 = acquire(b, t, NULL);
    assert_int_equal(p1, BREAKER_TRIAL);
    assert_int_equal(p2, BREAKER_TRIAL);
    breaker_record(b, p1, BREAKER_SUCCESS, t + 10 * MS);
    /* One of two trials succeeded: still half-open, and its slot is not handed out again. */
    assert_int_equal(snap(b, t + 10 * MS).state, BREAKER_HALF_OPEN);
    assert_int_equal(acquire(b, t + 10 * MS, NULL), BREAKER_DENY);
    breaker_record(b, p2, BREAKER_SUCCESS, t + 20 * MS);
    struct breaker_snapshot s = snap(b, t + 20 * MS);
    assert_int_equal(s.state, BREAKER_CLOSED);
    assert_int_equal(s.window_calls, 0);
    assert_int_equal(s.window_failures, 0);
    /* The old failures are gone: three new ones are below min_calls again. */
    for (int i = 0; i < 3; i++)
        call(b, BREAKER_FAILURE, t + 30 * MS);
    assert_int_equal(snap(b, t + 30 * MS).state, BREAKER_CLOSED);
    breaker_destroy(b);
}

static void trial_failure_or_timeout_reopens(void **state)
{
    (void)state;
    const enum breaker_outcome bad[2] = {BREAKER_FAILURE, BREAKER_TIMEOUT};
    for (int k = 0; k < 2; k++) {
        struct breaker *b = breaker_create("t", &cfg);
        open_at(b, T0);
        const int64_t t = T0 + 1000 * MS;
        enum breaker_permit p1 = acquire(b, t, NULL), p2 = acquire(b, t, NULL);
        assert_int_equal(p1, BREAKER_TRIAL);
        breaker_record(b, p1, bad[k], t + 50 * MS);
        struct breaker_snapshot s = snap(b, t + 50 * MS);
        assert_int_equal(s.state, BREAKER_OPEN);
        assert_int_equal(s.opened, 2);
        /* Open again for a whole reset_ms from the failed trial. */
        int64_t retry;
        assert_int_equal(acquire(b, t + 51 * MS, &retry), BREAKER_DENY);
        assert_int_equal(retry, 999 * MS);
        /* The other trial's late success does not close it. */
        breaker_record(b, p2, BREAKER_SUCCESS, t + 60 * MS);
        assert_int_equal(snap(b, t + 60 * MS).state, BREAKER_OPEN);
        assert_int_equal(acquire(b, t + 1050 * MS, NULL), BREAKER_TRIAL);
        breaker_destroy(b);
    }
}

static void trial_from_an_earlier_half_open_still_holds_its_slot(void **state)
{
    (void)state;
    struct breaker *b = breaker_create("t", &cfg);
    open_at(b, T0);
    const int64_t t = T0 + 1000 * MS;
    enum breaker_permit p1 = acquire(b, t, NULL), p2 = acquire(b, t, NULL);
    assert_int_equal(p2, BREAKER_TRIAL);
    breaker_record(b, p1, BREAKER_FAILURE, t); /* reopens; p2 is still running */
    /* Half-open again while p2 runs: only one new trial fits beside it. */
    const int64_t t2 = t + 1000 * MS;
    enum breaker_permit p3 = acquire(b, t2, NULL);
    assert_int_equal(p3, BREAKER_TRIAL);
    assert_int_equal(acquire(b, t2, NULL), BREAKER_DENY);
    /* p2 ends without a verdict: its slot goes to a new trial, still two at most. */
    breaker_release(b, p2);
    enum breaker_permit p4 = acquire(b, t2, NULL);
    assert_int_equal(p4, BREAKER_TRIAL);
    assert_int_equal(acquire(b, t2, NULL), BREAKER_DENY);
    breaker_record(b, p3, BREAKER_SUCCESS, t2 + 10 * MS);
    breaker_record(b, p4, BREAKER_SUCCESS, t2 + 20 * MS);
    assert_int_equal(snap(b, t2 + 20 * MS).state, BREAKER_CLOSED);
    breaker_destroy(b);
}

static void released_trial_frees_its_slot(void **state)
{
    (void)state;
    struct breaker *b = breaker_create("t", &cfg);
    open_at(b, T0);
    const int64_t t = T0 + 1000 * MS;
    enum breaker_permit p1 = acquire(b, t, NULL);
    assert_int_equal(acquire(b, t, NULL), BREAKER_TRIAL);
    assert_int_equal(acquire(b, t, NULL), BREAKER_DENY);
    /* A trial that ends without a verdict (client gone) gives its slot back... */
    breaker_release(b, p1);
    assert_int_equal(acquire(b, t, NULL), BREAKER_TRIAL);
    assert_int_equal(acquire(b, t, NULL), BREAKER_DENY);
    /* ...and releasing an ordinary permit changes nothing. */
    breaker_release(b, BREAKER_ALLOW);
    assert_int_equal(acquire(b, t, NULL), BREAKER_DENY);
    struct breaker_snapshot s = snap(b, t);
    assert_int_equal(s.state, BREAKER_HALF_OPEN);
    assert_int_equal(s.successes + s.failures + s.timeouts, 4); /* only open_at's calls */
    breaker_destroy(b);
}

static void rolling_window_forgets_old_buckets(void **state)
{
    (void)state;
    struct breaker *b = breaker_create("t", &cfg);
    for (int i = 0; i < 3; i++)
        call(b, BREAKER_FAILURE, T0);
    call(b, BREAKER_SUCCESS, T0 + 5000 * MS);
    assert_int_equal(snap(b, T0 + 10000 * MS - 1).window_calls, 4);
    /* The failures' bucket leaves the 10 s window; the success's stays. */
    struct breaker_snapshot s = snap(b, T0 + 10000 * MS);
    assert_int_equal(s.window_calls, 1);
    assert_int_equal(s.window_failures, 0);
    /* So one more failure is 1 of 2 calls, below min_calls: no opening. */
    call(b, BREAKER_FAILURE, T0 + 10000 * MS);
    assert_int_equal(snap(b, T0 + 10000 * MS).state, BREAKER_CLOSED);
    assert_int_equal(snap(b, T0 + 15000 * MS).window_calls, 1);
    assert_int_equal(snap(b, T0 + 30000 * MS).window_calls, 0);
    /* A bucket reused after a full turn of the ring starts from zero. */
    for (int i = 0; i < 3; i++)
        call(b, BREAKER_FAILURE, T0 + 20000 * MS);
    assert_int_equal(snap(b, T0 + 20000 * MS).window_calls, 3);
    assert_int_equal(snap(b, T0 + 20000 * MS).state, BREAKER_CLOSED);
    breaker_destroy(b);
}

static void forced_open_refuses_until_released(void **state)
{
    (void)state;
    struct breaker *b = breaker_create("t", &cfg);
    breaker_force(b, BREAKER_FORCED_OPEN, false, T0);
    int64_t retry;
    for (int64_t dt = 0; dt <= 100000 * MS; dt += 25000 * MS) {
        assert_int_equal(acquire(b, T0 + dt, &retry), BREAKER_DENY);
        assert_int_equal(retry, 1000 * MS);
    }
    struct breaker_snapshot s = snap(b, T0 + 100000 * MS);
    assert_int_equal(s.mode, BREAKER_FORCED_OPEN);
    assert_int_equal(s.state, BREAKER_OPEN); /* never "half-open in effect" while forced */
    assert_int_equal(s.next_trial_wall_us, 0);
    assert_int_equal(s.rejections, 5);
    /* Back to automatic without a reset: still open since T0, so reset_ms has long passed and
     * the next calls are trials, not a free-for-all. */
    const int64_t t = T0 + 100000 * MS;
    breaker_force(b, BREAKER_AUTO, false, t);
    assert_int_equal(snap(b, t).state, BREAKER_HALF_OPEN);
    assert_int_equal(acquire(b, t, NULL), BREAKER_TRIAL);
    assert_int_equal(acquire(b, t, NULL), BREAKER_TRIAL);
    assert_int_equal(acquire(b, t, NULL), BREAKER_DENY);
    breaker_destroy(b);

    /* Forced open, then reset: closed and passing at once; the forced opening counted once. */
    b = breaker_create("t", &cfg);
    breaker_force(b, BREAKER_FORCED_OPEN, false, T0);
    breaker_force(b, BREAKER_AUTO, true, T0 + 5 * MS);
    assert_int_equal(acquire(b, T0 + 5 * MS, NULL), BREAKER_ALLOW);
    assert_int_equal(snap(b, T0 + 5 * MS).opened, 1);
    breaker_destroy(b);
}

static void disabled_always_allows_and_never_opens(void **state)
{
    (void)state;
    struct breaker *b = breaker_create("t", &cfg);
    open_at(b, T0);
    breaker_force(b, BREAKER_DISABLED, false, T0);
    for (int i = 0; i < 100; i++)
        call(b, BREAKER_FAILURE, T0 + i * MS);
    struct breaker_snapshot s = snap(b, T0 + 100 * MS);
    assert_int_equal(s.mode, BREAKER_DISABLED);
    assert_int_equal(s.state, BREAKER_CLOSED);
    assert_int_equal(s.failures, 104); /* still counted */
    assert_int_equal(s.rejections, 0);
    assert_int_equal(s.opened, 1);
    breaker_destroy(b);
}

static void reset_closes_and_clears_the_window(void **state)
{
    (void)state;
    struct breaker *b = breaker_create("t", &cfg);
    open_at(b, T0);
    assert_int_equal(acquire(b, T0, NULL), BREAKER_DENY);
    breaker_force(b, BREAKER_AUTO, true, T0 + 10 * MS);
    struct breaker_snapshot s = snap(b, T0 + 10 * MS);
    assert_int_equal(s.state, BREAKER_CLOSED);
    assert_int_equal(s.mode, BREAKER_AUTO);
    assert_int_equal(s.window_calls, 0);
    /* Totals since start are kept. */
    assert_int_equal(s.failures, 4);
    assert_int_equal(s.rejections, 1);
    call(b, BREAKER_SUCCESS, T0 + 10 * MS);
    for (int i = 0; i < 3; i++)
        call(b, BREAKER_FAILURE, T0 + 10 * MS);
    assert_int_equal(snap(b, T0 + 10 * MS).state, BREAKER_OPEN); /* 3 of 4: opens afresh */
    breaker_destroy(b);
}

static void snapshot_reports_rates_and_times(void **state)
{
    (void)state;
    struct breaker *b = breaker_create("t", &cfg);
    call(b, BREAKER_FAILURE, T0);
    for (int i = 0; i < 3; i++)
        call(b, BREAKER_SUCCESS, T0);
    struct breaker_snapshot s = snap(b, T0);
    assert_int_equal(s.state, BREAKER_CLOSED);
    assert_int_equal(s.window_calls, 4);
    assert_int_equal(s.window_failures, 1);
    assert_true(s.failure_rate == 0.25);
    assert_int_equal(s.next_trial_wall_us, 0);

    /* Opening stamps the wall clock; next_trial is wall time plus what is left of reset_ms. */
    int64_t wall_before = mclock_wall_us();
    call(b, BREAKER_FAILURE, T0 + 1 * MS); /* 2 of 5 */
    call(b, BREAKER_TIMEOUT, T0 + 1 * MS); /* 3 of 6: opens */
    int64_t wall_after = mclock_wall_us();
    s = snap(b, T0 + 301 * MS);
    int64_t wall_snap = mclock_wall_us();
    assert_int_equal(s.state, BREAKER_OPEN);
    assert_true(s.last_change_wall_us >= wall_before && s.last_change_wall_us <= wall_after);
    assert_true(s.next_trial_wall_us >= wall_after + 700 * MS);
    assert_true(s.next_trial_wall_us <= wall_snap + 700 * MS);
    assert_true(s.failure_rate == 0.5);
    assert_int_equal(s.window_calls, 6);
    assert_int_equal(s.window_failures, 3);
    assert_int_equal(s.failures, 2);
    assert_int_equal(s.timeouts, 1);
    assert_int_equal(s.successes, 3);
    assert_string_equal(breaker_state_name(s.state), "OPEN");
    assert_string_equal(breaker_state_name(BREAKER_HALF_OPEN), "HALF_OPEN");
    assert_string_equal(breaker_mode_name(s.mode), "auto");
    assert_string_equal(breaker_mode_name(BREAKER_FORCED_OPEN), "forced_open");
    breaker_destroy(b);
}

/* ---- threads ---------------------------------------------------------------------------- */

/* A fast-flipping breaker: 10 calls in 100 ms, 10 ms open, 3 trials. */
static const struct breaker_cfg fast = {
    .error_pct = 50,
    .reset_ms = 10,
    .window_ms = 100,
    .buckets = 10,
    .min_calls = 10,
    .trial_calls = 3,
};

struct worker {
    struct breaker *b;
    _Atomic int64_t *clock; /* shared fake time: every operation advances it by 50 us */
    pthread_barrier_t *go;
    uint64_t seed;
    /* What this thread saw and did. */
    uint64_t allowed, trials, denied, released, outcomes[3];
};

static uint64_t next_rand(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    pthread_barrier_wait(w->go);
    for (int i = 0; i < 20000; i++) {
        int64_t now = atomic_fetch_add(w->clock, 50);
        int64_t retry;
        enum breaker_permit p = breaker_acquire(w->b, now, &retry);
        if (p == BREAKER_DENY) {
            w->denied++;
            continue;
        }
        if (p == BREAKER_TRIAL)
            w->trials++;
        else
            w->allowed++;
        /* Phases of mostly failing and mostly succeeding calls, so the breaker flips. */
        uint64_t r = next_rand(&w->seed) % 100;
        bool bad_phase = (now / 20000) % 2 == 0;
        now = atomic_fetch_add(w->clock, 50);
        if (r < 5) {
            breaker_release(w->b, p);
            w->released++;
            continue;
        }
        enum breaker_outcome o = r < (bad_phase ? 80u : 10u)
                                     ? (r % 2 ? BREAKER_FAILURE : BREAKER_TIMEOUT)
                                     : BREAKER_SUCCESS;
        breaker_record(w->b, p, o, now);
        w->outcomes[o]++;
    }
    return NULL;
}

static void concurrent_use_keeps_counts_consistent(void **state)
{
    (void)state;
    enum { THREADS = 8 };
    struct breaker *b = breaker_create("t", &fast);
    _Atomic int64_t fake_now = T0;
    pthread_barrier_t go;
    pthread_barrier_init(&go, NULL, THREADS);
    struct worker w[THREADS];
    pthread_t tid[THREADS];
    for (int i = 0; i < THREADS; i++) {
        w[i] = (struct worker){
            .b = b, .clock = &fake_now, .go = &go, .seed = 88172645463325252ull + i};
        assert_int_equal(pthread_create(&tid[i], NULL, worker_main, &w[i]), 0);
    }
    uint64_t allowed = 0, trials = 0, denied = 0, released = 0, outcomes[3] = {0};
    for (int i = 0; i < THREADS; i++) {
        pthread_join(tid[i], NULL);
        allowed += w[i].allowed;
        trials += w[i].trials;
        denied += w[i].denied;
        released += w[i].released;
        for (int o = 0; o < 3; o++)
            outcomes[o] += w[i].outcomes[o];
    }
    struct breaker_snapshot s = snap(b, atomic_load(&fake_now));
    assert_int_equal(allowed + trials + denied, THREADS * 20000);
    assert_int_equal(outcomes[0] + outcomes[1] + outcomes[2] + released, allowed + trials);
    assert_int_equal(s.successes, outcomes[BREAKER_SUCCESS]);
    assert_int_equal(s.failures, outcomes[BREAKER_FAILURE]);
    assert_int_equal(s.timeouts, outcomes[BREAKER_TIMEOUT]);
    assert_int_equal(s.rejections, denied);
    /* It did flip, and half-open admitted trials. */
    assert_true(s.opened >= 2);
    assert_true(trials > 0);
    assert_true(denied > 0);
    pthread_barrier_destroy(&go);
    breaker_destroy(b);
}

static int quiet_logs(void **state)
{
    (void)state;
    /* Transitions are logged at info/warn; keep the TAP output clean. */
    log_setup(LOG_FORMAT_TEXT, LOG_LEVEL_ERROR, false, 2);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(stays_closed_until_min_calls),
        cmocka_unit_test(opens_exactly_at_the_threshold),
        cmocka_unit_test(timeouts_count_as_failures_successes_never_open),
        cmocka_unit_test(open_refuses_with_time_until_half_open),
        cmocka_unit_test(half_open_admits_exactly_trial_calls),
        cmocka_unit_test(trial_successes_close_and_clear_the_window),
        cmocka_unit_test(trial_failure_or_timeout_reopens),
        cmocka_unit_test(released_trial_frees_its_slot),
        cmocka_unit_test(trial_from_an_earlier_half_open_still_holds_its_slot),
        cmocka_unit_test(rolling_window_forgets_old_buckets),
        cmocka_unit_test(forced_open_refuses_until_released),
        cmocka_unit_test(disabled_always_allows_and_never_opens),
        cmocka_unit_test(reset_closes_and_clears_the_window),
        cmocka_unit_test(snapshot_reports_rates_and_times),
        cmocka_unit_test(concurrent_use_keeps_counts_consistent),
    };
    return cmocka_run_group_tests_name("breaker", tests, quiet_logs, NULL);
}
