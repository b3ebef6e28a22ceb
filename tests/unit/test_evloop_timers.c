/*
 * test_evloop_timers: the event loops' time (evloop.h; the fixture: evloopfx.h): the lag probe
 * (a loop kept busy shows up in its own lag histogram, an idle one keeps probing), and the
 * deadline heap: the order timers fire in (deadline, then arming; disarmed and re-armed ones),
 * and what many deadlines passing at once cost, counted in comparisons
 * (evloop_deadline_compares), not timed. Every wait is bounded by EVFX_WAIT_S; nothing sleeps.
 */
#include "evloop.h"
#include "compiler.h"
#include "evloopfx.h"
#include "mclock.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#define LAG_PROBE_US 1000  /* the lag test's probe interval */
#define BUSY_US      60000 /* how long it keeps loop 1 from waiting */

/* Loop thread: loop 1 computes for BUSY_US without waiting (a turn that serves too much); the
 * others return at once. */
static void busy_fn(void *arg, unsigned i)
{
    (void)arg;
    if (i != 1)
        return;
    int64_t until = mclock_now_us() + BUSY_US;
    while (mclock_now_us() < until)
        ;
}

/* Observations of h above bound_us, one of metrics_hist_bounds_us. */
static uint64_t lag_above(struct metrics_hist *h, int64_t bound_us)
{
    uint64_t n = 0;
    for (int b = 1; b <= METRICS_HIST_BUCKETS; b++)
        if (metrics_hist_bounds_us[b - 1] >= bound_us)
            n += atomic_load(&h->counts[b]);
    return n;
}

static void a_loop_kept_busy_shows_its_lag_and_an_idle_one_keeps_probing(void **state)
{
    (void)state;
    struct evfx c;
    memset(&c, 0, sizeof(c));
    evfx_start_probing(&c, LAG_PROBE_US);
    /* Idle loops wake for their probe: samples arrive with nothing else happening. */
    EVFX_WAIT_UNTIL(&c, atomic_load(&c.lag[0].count) >= 3 && atomic_load(&c.lag[2].count) >= 3);
    /* ... and, idle, they read them in time (some of them at least: this machine is shared). */
    assert_true(atomic_load(&c.lag[0].count) > lag_above(&c.lag[0], 10000));
    /* Loop 1 is kept busy for 60 ms: the probe that fell due meanwhile is read that late. */
    evloop_call(c.l, busy_fn, NULL);
    EVFX_WAIT_UNTIL(&c, lag_above(&c.lag[1], 50000) >= 1);
    /* A turn's time is when its wait returned: after the busy call, not before it. */
    int64_t after = mclock_now_us();
    EVFX_WAIT_UNTIL(&c, c.turn_us[1] >= after);
    evfx_stop(&c);
}

/* ---- the deadline heap --------------------------------------------------------------------- */

struct timerset;

/* A timer alone (a watch with fd -1). */
struct timer {
    struct evloop_watch w;
    struct timerset *set;
    uint64_t armed_seq; /* the order the test armed it in (a re-arm counts anew) */
    /* Under set->c->mu: */
    unsigned order; /* 1 for the first of the set to fire, ...; 0: has not fired */
    enum evloop_event ev;
};

struct timerset {
    struct evfx *c;
    struct timer *t;
    size_t n;
    uint64_t next_seq;    /* armed_seq of the next timer armed */
    int arm_failed;       /* evloop_watch calls that did not return 0 */
    uint64_t compares[3]; /* evloop_deadline_compares: before arming, after, after firing */
    unsigned fired;       /* under c->mu */
};

static void timer_fire(struct evloop_watch *w, enum evloop_event ev)
{
    struct timer *tm = container_of(w, struct timer, w);
    struct evfx *c = tm->set->c;
    pthread_mutex_lock(&c->mu);
    tm->order = ++tm->set->fired;
    tm->ev = ev;
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
}

/* Loop thread: arm (or re-arm) timer k of s at deadline_us. */
static void timer_arm(struct timerset *s, size_t k, int64_t deadline_us)
{
    struct timer *tm = &s->t[k];
    tm->set = s;
    tm->w.fd = -1;
    tm->w.fire = timer_fire;
    tm->armed_seq = s->next_seq++;
    if (evloop_watch(evloop_current(), &tm->w, NULL, deadline_us) != 0)
        s->arm_failed++;
}

/* Loop thread: read the count of comparisons into compares[slot], disarm what is armed. */
static void timers_read_and_disarm(struct timerset *s, int slot)
{
    s->compares[slot] = evloop_deadline_compares(evloop_current());
    for (size_t k = 0; k < s->n; k++)
        if (s->t[k].w.loop)
            evloop_unwatch(&s->t[k].w);
}

enum { MANY_PASSED = 5000, MANY_FAR = 5000, MANY = MANY_PASSED + MANY_FAR };

/* Loop 0: MANY_PASSED timers whose deadlines have passed, in a scrambled order, then MANY_FAR
 * an hour away; all in one call, so none fires before the last is armed. */
static void arm_many_fn(void *arg, unsigned i)
{
    struct timerset *s = arg;
    if (i != 0)
        return;
    s->compares[0] = evloop_deadline_compares(evloop_current());
    int64_t now = mclock_now_us();
    for (size_t k = 0; k < MANY; k++) {
        /* 7919 is prime to MANY_PASSED: every deadline of now-MANY_PASSED..now-1 once. */
        int64_t late = 1 + (int64_t)((k * 7919) % MANY_PASSED);
        timer_arm(s, k, k < MANY_PASSED ? now - late : now + 3600 * 1000000ll);
    }
    s->compares[1] = evloop_deadline_compares(evloop_current());
}

static void read_many_fn(void *arg, unsigned i)
{
    if (i == 0)
        timers_read_and_disarm(arg, 2);
}

static uint64_t ceil_log2(uint64_t n)
{
    uint64_t k = 0;
    while ((1ull << k) < n)
        k++;
    return k;
}

/* With n = 10,000 watches armed, k = 5,000 deadlines passing at once cost O(k log n)
 * comparisons (a heap's pops), not O(k n) (a walk of every watch for each that fires), and
 * arming costs O(log n) each. Counted by the loop (evloop_deadline_compares), not timed. */
static void many_deadlines_passing_at_once_cost_k_log_n_comparisons(void **state)
{
    (void)state;
    struct evfx c;
    evfx_start(&c);
    struct timerset s = {.c = &c, .n = MANY, .t = calloc(MANY, sizeof(struct timer))};
    assert_non_null(s.t);
    evloop_call(c.l, arm_many_fn, &s);
    assert_int_equal(s.arm_failed, 0);
    EVFX_WAIT_UNTIL(&c, s.fired == MANY_PASSED);
    evloop_call(c.l, read_many_fn, &s);
    for (size_t k = 0; k < MANY; k++) {
        if (k < MANY_PASSED) {
            assert_int_not_equal(s.t[k].order, 0);
            assert_int_equal(s.t[k].ev, EVLOOP_TIMEOUT);
        } else {
            assert_int_equal(s.t[k].order, 0); /* an hour away */
        }
    }
    uint64_t lg = ceil_log2(MANY), arming = s.compares[1] - s.compares[0],
             expiring = s.compares[2] - s.compares[1];
    printf("# %d armed: %" PRIu64 " comparisons to arm (bound %" PRIu64 "), %" PRIu64
           " for %d to pass (bound %" PRIu64 ")\n",
           MANY, arming, MANY * lg, expiring, MANY_PASSED, 3 * MANY_PASSED * lg);
    assert_true(arming <= MANY * lg);
    /* Each pop: a sift down of two comparisons a level, and the root against the clock. */
    assert_true(expiring <= 3 * MANY_PASSED * lg);
    free(s.t);
    evfx_stop(&c);
}

enum { ORDERED = 64 };

/* Loop 1: ORDERED timers whose deadlines passed, two to a deadline, scrambled; then timer 5
 * and 17 disarmed, timer 9 re-armed before all of them and timer 10 after all of them. */
static void arm_ordered_fn(void *arg, unsigned i)
{
    struct timerset *s = arg;
    if (i != 1)
        return;
    int64_t now = mclock_now_us();
    for (size_t k = 0; k < ORDERED; k++)
        timer_arm(s, k, now - 1000 + (int64_t)((k * 37) % ORDERED) / 2);
    evloop_unwatch(&s->t[5].w);
    evloop_unwatch(&s->t[17].w);
    timer_arm(s, 9, now - 2000);
    timer_arm(s, 10, now - 1000 + ORDERED);
}

static void read_ordered_fn(void *arg, unsigned i)
{
    if (i == 1)
        timers_read_and_disarm(arg, 2);
}

/* Deadlines fire earliest first, equal ones in the order armed; a disarmed watch does not
 * fire, and one armed again while armed fires once, at its new deadline. */
static void timers_fire_by_deadline_then_arming_order(void **state)
{
    (void)state;
    struct evfx c;
    evfx_start(&c);
    struct timer t[ORDERED];
    memset(t, 0, sizeof(t));
    struct timerset s = {.c = &c, .n = ORDERED, .t = t};
    evloop_call(c.l, arm_ordered_fn, &s);
    assert_int_equal(s.arm_failed, 0);
    EVFX_WAIT_UNTIL(&c, s.fired == ORDERED - 2);
    evfx_round_trip(&c);
    evloop_call(c.l, read_ordered_fn, &s);
    assert_int_equal(EVFX_READ(&c, s.fired), ORDERED - 2);
    assert_int_equal(t[5].order, 0);
    assert_int_equal(t[17].order, 0);
    assert_int_equal(t[9].order, 1);
    assert_int_equal(t[10].order, ORDERED - 2);
    struct timer *by_order[ORDERED + 1] = {0};
    for (size_t k = 0; k < ORDERED; k++)
        if (t[k].order)
            by_order[t[k].order] = &t[k];
    for (unsigned o = 2; o <= ORDERED - 2; o++) {
        const struct timer *a = by_order[o - 1], *b = by_order[o];
        assert_non_null(a);
        assert_non_null(b);
        assert_true(a->w.deadline_us < b->w.deadline_us ||
                    (a->w.deadline_us == b->w.deadline_us && a->armed_seq < b->armed_seq));
    }
    evfx_stop(&c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(a_loop_kept_busy_shows_its_lag_and_an_idle_one_keeps_probing),
        cmocka_unit_test(many_deadlines_passing_at_once_cost_k_log_n_comparisons),
        cmocka_unit_test(timers_fire_by_deadline_then_arming_order),
    };
    return cmocka_run_group_tests_name("evloop_timers", tests, NULL, NULL);
}
