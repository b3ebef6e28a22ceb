/*
 * test_tarpit: Retry-After enforcement and paced delivery (tarpit.h).
 *
 * On explicit times: a rate-limited request is held until its turn, the client's turns one
 * interval apart in arrival order, as far as its hold budget reaches; past that it is answered
 * at once with its turn as Retry-After, and a client back before that is held until then (at
 * most its budget), or until its turn when one comes within reach. A refusal about the tier is
 * answered at once the first time, and an early client is held until the time it was told (at
 * most its budget), without pushing that time; either of its two keys catches it; an untracked
 * client (table full) is answered at once. On the tarpit's thread: held requests are released
 * earliest first; past max_held a hold is refused and counted; stop releases everything held.
 */
#include "mclock.h"
#include "tarpit.h"

#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#define MS     1000ll
#define S      1000000ll
#define WAIT_S 30

/* What the release callback saw, in order. */
struct seen {
    pthread_mutex_t mu;
    int order[16];
    int n;
};

static void on_release(void *item, void *ctx)
{
    struct seen *s = ctx;
    pthread_mutex_lock(&s->mu);
    s->order[s->n++] = *(int *)item;
    pthread_mutex_unlock(&s->mu);
}

static struct tarpit *mk(struct seen *s, size_t max_clients, size_t max_held)
{
    memset(s, 0, sizeof(*s));
    pthread_mutex_init(&s->mu, NULL);
    struct tarpit_cfg cfg = {.max_clients = max_clients,
                             .max_held = max_held,
                             .max_hold_us = 5 * S,
                             .release = on_release,
                             .ctx = s};
    struct tarpit *tp = NULL;
    assert_int_equal(tarpit_create(&cfg, &tp), 0);
    return tp;
}

static int released(struct seen *s)
{
    pthread_mutex_lock(&s->mu);
    int n = s->n;
    pthread_mutex_unlock(&s->mu);
    return n;
}

static void wait_released(struct seen *s, int n)
{
    int64_t end = mclock_now_us() + WAIT_S * S;
    while (released(s) < n && mclock_now_us() < end)
        sched_yield();
    assert_int_equal(released(s), n);
}

/* The verdict on one refusal: its hold-until time, and the Retry-After in *retry. */
static int64_t check(struct tarpit *tp, const char *k1, const char *k2, int64_t wait,
                     int64_t interval, int64_t held, int64_t now, int64_t *retry)
{
    struct tarpit_refusal rf = {
        .key1 = k1, .key2 = k2, .wait_us = wait, .interval_us = interval, .held_us = held};
    struct tarpit_verdict v;
    tarpit_check(tp, &rf, now, &v);
    if (retry)
        *retry = v.retry_us;
    return v.until_us;
}

/* A rate limit's refusal: the limiter's wait and interval. */
static int64_t rate(struct tarpit *tp, const char *key, int64_t wait, int64_t interval,
                    int64_t held, int64_t now, int64_t *retry)
{
    return check(tp, key, NULL, wait, interval, held, now, retry);
}

/* A refusal about the tier, told wait. */
static int64_t tier(struct tarpit *tp, const char *k1, const char *k2, int64_t wait, int64_t held,
                    int64_t now, int64_t *retry)
{
    return check(tp, k1, k2, wait, 0, held, now, retry);
}

static void a_rate_limited_request_waits_for_its_turn_in_arrival_order(void **state)
{
    (void)state;
    struct seen s;
    struct tarpit *tp = mk(&s, 100, 10);
    const int64_t t0 = 100 * S, T = 600 * MS; /* 100 per minute */
    int64_t retry = 0;
    /* Refusals 1 ms apart, the limiter admitting the next one 200 ms from the first: each is
     * held until its turn, one interval after the one before, as far as 5 s reach. */
    for (int k = 0; k <= 8; k++) {
        int64_t now = t0 + k * MS;
        assert_int_equal(rate(tp, "free|id:a", 200 * MS - k * MS, T, 0, now, &retry),
                         t0 + 200 * MS + k * T);
        assert_int_equal(retry, t0 + 200 * MS + k * T - now);
    }
    /* The tenth has no turn within 5 s: refused at once (fail fast), told its turn, the first
     * free one (the turns held for the others are not given away). */
    int64_t now = t0 + 9 * MS;
    assert_int_equal(rate(tp, "free|id:a", 191 * MS, T, 0, now, &retry), now);
    assert_int_equal(retry, t0 + 200 * MS + 9 * T - now);
    /* Its client is back at once, and again: the first retry's turn is not yet within reach, so
     * it is held until the time told, at most 5 s; then admitted again and still refused, it is
     * answered with what is left. */
    now = t0 + 10 * MS;
    assert_int_equal(rate(tp, "free|id:a", 190 * MS, T, 0, now, NULL), now + 5 * S);
    now += 5 * S;
    assert_int_equal(rate(tp, "free|id:a", 190 * MS, T, 5 * S, now, &retry), now);
    assert_int_equal(retry, t0 + 200 * MS + 9 * T - now);
    /* Back once its turn is within reach: held until it, and served then. */
    assert_int_equal(rate(tp, "free|id:a", 100 * MS, T, 0, t0 + 1 * S, NULL),
                     t0 + 200 * MS + 9 * T);
    /* Another tenant has its own turns. */
    assert_int_equal(rate(tp, "free|id:b", 300 * MS, T, 0, t0, NULL), t0 + 300 * MS);
    tarpit_destroy(tp);
}

static void a_turn_beyond_reach_is_refused_at_once_and_its_time_enforced(void **state)
{
    (void)state;
    struct seen s;
    struct tarpit *tp = mk(&s, 100, 10);
    const int64_t t0 = 100 * S, T = 36 * S; /* 100 per hour */
    int64_t retry = 0;
    /* Its turn is 30 s away, past the 5 s any request is held: refused at once, told 30 s. */
    assert_int_equal(rate(tp, "free|id:h", 30 * S, T, 0, t0, &retry), t0);
    assert_int_equal(retry, 30 * S);
    /* Back after 1 s: early, so held 5 s, then (refused again) answered with what is left. */
    assert_int_equal(rate(tp, "free|id:h", 29 * S, T, 0, t0 + 1 * S, &retry), t0 + 6 * S);
    assert_int_equal(rate(tp, "free|id:h", 24 * S, T, 5 * S, t0 + 6 * S, &retry), t0 + 6 * S);
    assert_int_equal(retry, 24 * S);
    /* A request held 2 s already has 3 s left. */
    assert_int_equal(rate(tp, "free|id:h", 20 * S, T, 2 * S, t0 + 10 * S, NULL), t0 + 13 * S);
    /* Within 5 s of its turn, a request is held until its turn. */
    assert_int_equal(rate(tp, "free|id:h", 4 * S, T, 0, t0 + 26 * S, NULL), t0 + 30 * S);
    tarpit_destroy(tp);
}

static void a_tier_refusal_holds_an_early_client_until_its_time_and_no_longer(void **state)
{
    (void)state;
    struct seen s;
    struct tarpit *tp = mk(&s, 100, 10);
    const int64_t t0 = 100 * S;
    int64_t retry = 0;
    /* First refusal: at once; it may come back at t0 + 1 s. */
    assert_int_equal(tier(tp, "free|id:a", "free|ip:1", 1 * S, 0, t0, &retry), t0);
    assert_int_equal(retry, 1 * S);
    /* Back after 200 ms, and again after 300 ms: both held until t0 + 1 s, no later. */
    assert_int_equal(tier(tp, "free|id:a", "free|ip:1", 1 * S, 0, t0 + 200 * MS, NULL), t0 + 1 * S);
    assert_int_equal(tier(tp, "free|id:a", "free|ip:1", 1 * S, 0, t0 + 300 * MS, NULL), t0 + 1 * S);
    /* Admitted again at t0 + 1 s and refused: its time has come, so it is answered, and told
     * again from there. */
    assert_int_equal(tier(tp, "free|id:a", "free|ip:1", 1 * S, 800 * MS, t0 + 1 * S, &retry),
                     t0 + 1 * S);
    assert_int_equal(tier(tp, "free|id:a", "free|ip:1", 1 * S, 0, t0 + 1 * S + MS, NULL),
                     t0 + 2 * S);
    /* A client that waits as told is answered at once. */
    assert_int_equal(tier(tp, "free|id:a", "free|ip:1", 1 * S, 0, t0 + 3 * S, NULL), t0 + 3 * S);
    /* A long Retry-After is enforced up to max_hold (5 s) only. */
    assert_int_equal(tier(tp, "free|id:b", NULL, 60 * S, 0, t0, NULL), t0);
    assert_int_equal(tier(tp, "free|id:b", NULL, 60 * S, 0, t0 + 1 * S, NULL), t0 + 6 * S);
    tarpit_destroy(tp);
}

static void either_key_catches_the_client(void **state)
{
    (void)state;
    struct seen s;
    struct tarpit *tp = mk(&s, 100, 10);
    const int64_t t0 = 100 * S;
    assert_int_equal(tier(tp, "free|id:x1", "free|ip:9", 1 * S, 0, t0, NULL), t0);
    /* A fresh tenant id from the same address: still the same client. */
    assert_int_equal(tier(tp, "free|id:x2", "free|ip:9", 1 * S, 0, t0 + 1, NULL), t0 + 1 * S);
    /* The same tenant from another address: the same client too. */
    assert_int_equal(tier(tp, "free|id:x1", "free|ip:8", 1 * S, 0, t0 + 2, NULL), t0 + 1 * S);
    /* Another tier is another client: enterprise's requests from that address are untouched. */
    assert_int_equal(tier(tp, "enterprise|id:e", "enterprise|ip:9", 1 * S, 0, t0 + 3, NULL),
                     t0 + 3);
    tarpit_destroy(tp);
}

static void an_untracked_client_is_answered_at_once(void **state)
{
    (void)state;
    struct seen s;
    struct tarpit *tp = mk(&s, 2, 10);
    const int64_t t0 = 100 * S;
    /* Two clients told when to come back, two with turns taken: both tables are full. */
    assert_int_equal(tier(tp, "k1", NULL, 1 * S, 0, t0, NULL), t0);
    assert_int_equal(tier(tp, "k2", NULL, 1 * S, 0, t0, NULL), t0);
    assert_int_equal(rate(tp, "r1", 100 * MS, 600 * MS, 0, t0, NULL), t0 + 100 * MS);
    assert_int_equal(rate(tp, "r2", 100 * MS, 600 * MS, 0, t0, NULL), t0 + 100 * MS);
    /* k3 is not remembered, so its retry is not held; k4 is given no turn, so it is answered. */
    assert_int_equal(tier(tp, "k3", NULL, 1 * S, 0, t0, NULL), t0);
    assert_int_equal(tier(tp, "k3", NULL, 1 * S, 0, t0 + 1, NULL), t0 + 1);
    int64_t retry = 0;
    assert_int_equal(rate(tp, "k4", 100 * MS, 600 * MS, 0, t0 + 1, &retry), t0 + 1);
    assert_int_equal(retry, 100 * MS);
    struct tarpit_stats st;
    tarpit_stats(tp, &st);
    assert_int_equal(st.clients, 4);
    assert_int_equal(st.untracked, 3);
    /* Once the others' times pass, there is room again. */
    assert_int_equal(tarpit_sweep(tp, t0 + 2 * S), 4);
    assert_int_equal(tier(tp, "k3", NULL, 1 * S, 0, t0 + 2 * S, NULL), t0 + 2 * S);
    assert_int_equal(tier(tp, "k3", NULL, 1 * S, 0, t0 + 2 * S + 1, NULL), t0 + 3 * S);
    assert_int_equal(rate(tp, "k4", 100 * MS, 600 * MS, 0, t0 + 2 * S, NULL),
                     t0 + 2 * S + 100 * MS);
    tarpit_destroy(tp);
}

static void held_requests_are_released_earliest_first(void **state)
{
    (void)state;
    struct seen s;
    struct tarpit *tp = mk(&s, 100, 10);
    int items[3] = {30, 10, 20};
    int64_t now = mclock_now_us();
    for (int i = 0; i < 3; i++)
        assert_true(tarpit_hold(tp, &items[i], now + items[i] * MS));
    wait_released(&s, 3);
    assert_int_equal(s.order[0], 10);
    assert_int_equal(s.order[1], 20);
    assert_int_equal(s.order[2], 30);
    struct tarpit_stats st;
    tarpit_stats(tp, &st);
    assert_int_equal(st.held, 3);
    assert_int_equal(st.holding, 0);
    tarpit_destroy(tp);
}

static void holds_are_bounded_and_stop_releases_them_all(void **state)
{
    (void)state;
    struct seen s;
    struct tarpit *tp = mk(&s, 100, 2);
    int items[3] = {1, 2, 3};
    int64_t later = mclock_now_us() + 3600 * S;
    assert_true(tarpit_hold(tp, &items[0], later));
    assert_true(tarpit_hold(tp, &items[1], later + 1));
    assert_false(tarpit_hold(tp, &items[2], later)); /* past max_held: answer it at once */
    struct tarpit_stats st;
    tarpit_stats(tp, &st);
    assert_int_equal(st.holding, 2);
    assert_int_equal(st.overflow, 1);
    /* Shutdown does not wait an hour: both are released now, and no new hold is taken. */
    tarpit_stop(tp);
    assert_int_equal(released(&s), 2);
    assert_false(tarpit_hold(tp, &items[2], later));
    tarpit_destroy(tp);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(a_rate_limited_request_waits_for_its_turn_in_arrival_order),
        cmocka_unit_test(a_turn_beyond_reach_is_refused_at_once_and_its_time_enforced),
        cmocka_unit_test(a_tier_refusal_holds_an_early_client_until_its_time_and_no_longer),
        cmocka_unit_test(either_key_catches_the_client),
        cmocka_unit_test(an_untracked_client_is_answered_at_once),
        cmocka_unit_test(held_requests_are_released_earliest_first),
        cmocka_unit_test(holds_are_bounded_and_stop_releases_them_all),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
