/*
 * test_tarpit: Retry-After enforcement (tarpit.h).
 *
 * On explicit times: the first refusal is answered at once; a client back before its
 * Retry-After is held until then (at most max_hold), and told to wait again from the release;
 * a client that waited is answered at once; either of its two keys catches it; an untracked
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

static void a_client_back_too_early_is_held_until_its_retry_time(void **state)
{
    (void)state;
    struct seen s;
    struct tarpit *tp = mk(&s, 100, 10);
    const int64_t t0 = 100 * S;
    /* First refusal: at once; it may come back at t0 + 1 s. */
    assert_int_equal(tarpit_check(tp, "free|id:a", "free|ip:1", 1 * S, t0), t0);
    /* Back after 200 ms: held until t0 + 1 s, and then told to wait 1 s from there. */
    assert_int_equal(tarpit_check(tp, "free|id:a", "free|ip:1", 1 * S, t0 + 200 * MS), t0 + 1 * S);
    assert_int_equal(tarpit_check(tp, "free|id:a", "free|ip:1", 1 * S, t0 + 1 * S + MS),
                     t0 + 2 * S);
    /* A client that waits as told is answered at once. */
    assert_int_equal(tarpit_check(tp, "free|id:a", "free|ip:1", 1 * S, t0 + 3 * S), t0 + 3 * S);
    /* A long Retry-After is enforced up to max_hold (5 s) only. */
    assert_int_equal(tarpit_check(tp, "free|id:b", NULL, 60 * S, t0), t0);
    assert_int_equal(tarpit_check(tp, "free|id:b", NULL, 60 * S, t0 + 1 * S), t0 + 6 * S);
    tarpit_destroy(tp);
}

static void either_key_catches_the_client(void **state)
{
    (void)state;
    struct seen s;
    struct tarpit *tp = mk(&s, 100, 10);
    const int64_t t0 = 100 * S;
    assert_int_equal(tarpit_check(tp, "free|id:x1", "free|ip:9", 1 * S, t0), t0);
    /* A fresh tenant id from the same address: still the same client. */
    assert_int_equal(tarpit_check(tp, "free|id:x2", "free|ip:9", 1 * S, t0 + 1), t0 + 1 * S);
    /* The same tenant from another address: the same client too. */
    assert_int_equal(tarpit_check(tp, "free|id:x1", "free|ip:8", 1 * S, t0 + 2), t0 + 1 * S);
    /* Another tier is another client: enterprise's requests from that address are untouched. */
    assert_int_equal(tarpit_check(tp, "enterprise|id:e", "enterprise|ip:9", 1 * S, t0 + 3), t0 + 3);
    tarpit_destroy(tp);
}

static void an_untracked_client_is_answered_at_once(void **state)
{
    (void)state;
    struct seen s;
    struct tarpit *tp = mk(&s, 2, 10);
    const int64_t t0 = 100 * S;
    assert_int_equal(tarpit_check(tp, "k1", NULL, 1 * S, t0), t0);
    assert_int_equal(tarpit_check(tp, "k2", NULL, 1 * S, t0), t0);
    /* The table is full: k3 is not remembered, so its retry is not held. */
    assert_int_equal(tarpit_check(tp, "k3", NULL, 1 * S, t0), t0);
    assert_int_equal(tarpit_check(tp, "k3", NULL, 1 * S, t0 + 1), t0 + 1);
    struct tarpit_stats st;
    tarpit_stats(tp, &st);
    assert_int_equal(st.clients, 2);
    /* Once the others' times pass, there is room again. */
    assert_int_equal(tarpit_sweep(tp, t0 + 2 * S), 2);
    assert_int_equal(tarpit_check(tp, "k3", NULL, 1 * S, t0 + 2 * S), t0 + 2 * S);
    assert_int_equal(tarpit_check(tp, "k3", NULL, 1 * S, t0 + 2 * S + 1), t0 + 3 * S);
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
        cmocka_unit_test(a_client_back_too_early_is_held_until_its_retry_time),
        cmocka_unit_test(either_key_catches_the_client),
        cmocka_unit_test(an_untracked_client_is_answered_at_once),
        cmocka_unit_test(held_requests_are_released_earliest_first),
        cmocka_unit_test(holds_are_bounded_and_stop_releases_them_all),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
