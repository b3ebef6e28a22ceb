/*
 * test_workpool_event: the worker pool's event-thread way (workpool_begin, workpool_hand,
 * workpool_end), driven from the test thread, which plays the event thread: a begun item holds a
 * slot there until it is ended or handed to a worker; begun items count against the thread limit
 * and the share; end with take_next returns the queued item begun; after stop, begin and hand are
 * refused and begun items still end. Fixture: workpoolfx.
 */
#include "workpoolfx.h"
#include "workpool.h"
#include "compiler.h"
#include "mclock.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

/* ---- the event-thread way ----------------------------------------------------------------- */

/* The test thread as an event thread: begin j for tenant tix. hold: if it is handed to a worker,
 * its run waits for release. */
static int begin(struct workpool *wp, struct wpfx_job *j, int tix, bool hold)
{
    j->tix = tix;
    j->hold = hold;
    return workpool_begin(wp, wpfx_tenant_names[tix], &j->item);
}

static struct workpool_stats pool_stats(struct workpool *wp)
{
    struct workpool_stats st;
    workpool_stats(wp, &st);
    return st;
}

/* A begun item is counted busy and holds one of the slots (threads) until it ends; idle counts
 * the slots left. With every slot held, workpool_begin says -EBUSY and changes nothing. */
static void a_begun_item_holds_a_slot_until_it_is_ended(void **state)
{
    (void)state;
    enum { A, B, C };
    struct wpfx_ctx c;
    wpfx_ctx_init(&c);
    struct workpool *wp = wpfx_pool(&c, 2, 10, 10, 2);
    struct wpfx_job a = {0}, b = {0}, x = {0};
    int64_t t0 = mclock_now_us();
    assert_int_equal(begin(wp, &a, A, false), 0);
    assert_non_null(a.item.tenant);
    assert_true(a.item.begun_us >= t0 && a.item.begun_us <= mclock_now_us());
    struct workpool_stats st = pool_stats(wp);
    assert_int_equal(st.busy, 1);
    assert_int_equal(st.idle, 1);
    assert_int_equal(st.queued, 0);
    assert_int_equal(st.submitted, 1);
    assert_int_equal(begin(wp, &b, B, false), 0);
    st = pool_stats(wp);
    assert_int_equal(st.busy, 2);
    assert_int_equal(st.idle, 0);

    assert_int_equal(begin(wp, &x, C, false), -EBUSY);
    st = pool_stats(wp);
    assert_int_equal(st.submitted, 2);
    assert_int_equal(st.busy, 2);
    assert_int_equal(st.tenants, 2); /* a refused newcomer is not remembered */

    assert_null(wpfx_end(wp, &a, false));
    st = pool_stats(wp);
    assert_int_equal(st.busy, 1);
    assert_int_equal(st.idle, 1);
    assert_int_equal(st.completed, 1);
    assert_int_equal(begin(wp, &x, C, false), 0); /* the slot a freed */
    assert_null(wpfx_end(wp, &x, true));          /* nothing queued: nothing to take */
    assert_null(wpfx_end(wp, &b, false));
    st = pool_stats(wp);
    assert_int_equal(st.busy, 0);
    assert_int_equal(st.idle, 2);
    assert_int_equal(st.submitted, 3);
    assert_int_equal(st.completed, 3);
    assert_int_equal(WPFX_CTX_READ(&c, c.completed), 0); /* no worker ran any of them */
    wpfx_stop_and_destroy(&c, wp);
}

/* share.h's rule holds for begun items: beside another active tenant, a tenant at its share
 * is refused although a slot is free; a newcomer gets it. */
static void begin_refuses_a_tenant_at_its_share_while_others_are_active(void **state)
{
    (void)state;
    enum { A, B, Z = 7 };
    struct wpfx_ctx c;
    wpfx_ctx_init(&c);
    struct workpool *wp = wpfx_pool(&c, 3, 10, 10, 1);
    struct wpfx_job z = {0}, a1 = {0}, a2 = {0}, b = {0};
    assert_int_equal(wpfx_submit(wp, &z, Z, true), 0);
    WPFX_WAIT_UNTIL(&c, z.started);
    assert_int_equal(begin(wp, &a1, A, false), 0);
    assert_int_equal(pool_stats(wp).idle, 1);
    assert_int_equal(begin(wp, &a2, A, false), -EBUSY);
    assert_int_equal(begin(wp, &b, B, false), 0);
    struct workpool_stats st = pool_stats(wp);
    assert_int_equal(st.busy, 3);
    assert_int_equal(st.submitted, 3);
    assert_null(wpfx_end(wp, &a1, false));
    assert_null(wpfx_end(wp, &b, false));
    wpfx_release(&c, &z);
    wpfx_wait_pool_completed(wp, 3);
    wpfx_stop_and_destroy(&c, wp);
}

/* Slots, not threads, bound the work: with one slot held by a begun item, a pool of two
 * threads runs one queued item at a time on its workers; handed over, the begun item runs on
 * the other thread and the two together never exceed two. */
static void begun_items_count_against_the_thread_limit(void **state)
{
    (void)state;
    enum { A, B, C, N = 4 };
    struct wpfx_ctx c;
    wpfx_ctx_init(&c);
    struct workpool *wp = wpfx_pool(&c, 2, 10, 10, 2);
    struct wpfx_job a = {0}, x = {0}, q[N];
    memset(q, 0, sizeof(q));
    assert_int_equal(begin(wp, &a, A, true), 0);
    for (int i = 0; i < N; i++)
        assert_int_equal(wpfx_submit(wp, &q[i], B, true), 0);
    WPFX_WAIT_UNTIL(&c, q[0].started);
    struct workpool_stats st = pool_stats(wp);
    assert_int_equal(st.busy, 2);
    assert_int_equal(st.queued, N - 1);
    assert_int_equal(st.idle, 0);
    assert_int_equal(begin(wp, &x, C, false), -EBUSY);
    /* One item of B at a time while a holds the other slot (B alone may take both). */
    wpfx_release(&c, &q[0]);
    WPFX_WAIT_UNTIL(&c, q[1].started);
    assert_int_equal(WPFX_CTX_READ(&c, c.max_running), 1);
    assert_false(WPFX_CTX_READ(&c, q[2].started));

    int64_t begun = a.item.begun_us;
    assert_int_equal(workpool_hand(wp, &a.item), 0);
    WPFX_WAIT_UNTIL(&c, a.started);
    assert_int_equal(WPFX_CTX_READ(&c, c.running), 2);
    assert_false(pthread_equal(WPFX_CTX_READ(&c, a.ran_on), pthread_self()));
    assert_int_equal(WPFX_CTX_READ(&c, a.run_begun_us), begun);
    st = pool_stats(wp);
    assert_int_equal(st.busy, 2);
    assert_int_equal(st.queued, N - 2);

    wpfx_release_all(&c);
    WPFX_WAIT_UNTIL(&c, c.completed == N + 1);
    wpfx_wait_pool_completed(wp, N + 1);
    assert_int_equal(WPFX_CTX_READ(&c, c.max_running), 2);
    assert_int_equal(a.runs, 1);
    st = pool_stats(wp);
    assert_int_equal(st.busy, 0);
    assert_int_equal(st.submitted, N + 1);
    wpfx_stop_and_destroy(&c, wp);
}

/* A handed item runs on a worker with the slot it holds: it needs no free one (a queued item
 * waits for one meanwhile), and when it ends its slot is what lets the queued item in. */
static void a_handed_item_runs_on_a_worker_with_the_slot_it_holds(void **state)
{
    (void)state;
    enum { A, B, Z = 7 };
    struct wpfx_ctx c;
    wpfx_ctx_init(&c);
    struct workpool *wp = wpfx_pool(&c, 2, 10, 10, 2);
    struct wpfx_job x = {0}, h = {0}, q = {0};
    assert_int_equal(wpfx_submit(wp, &x, Z, true), 0);
    WPFX_WAIT_UNTIL(&c, x.started);
    assert_int_equal(begin(wp, &h, A, true), 0);
    assert_int_equal(wpfx_submit(wp, &q, B, false), 0);
    assert_int_equal(pool_stats(wp).queued, 1);

    int64_t begun = h.item.begun_us;
    assert_int_equal(workpool_hand(wp, &h.item), 0);
    WPFX_WAIT_UNTIL(&c, h.started);
    assert_false(pthread_equal(WPFX_CTX_READ(&c, h.ran_on), pthread_self()));
    assert_int_equal(WPFX_CTX_READ(&c, h.run_begun_us), begun); /* its hold began at begin */
    assert_int_equal(WPFX_CTX_READ(&c, c.running), 2);
    struct workpool_stats st = pool_stats(wp);
    assert_int_equal(st.busy, 2);
    assert_int_equal(st.queued, 1);
    assert_int_equal(WPFX_CTX_READ(&c, q.runs), 0);

    /* h ends: its slot goes to q while x still runs. */
    wpfx_release(&c, &h);
    WPFX_WAIT_UNTIL(&c, q.runs == 1);
    assert_int_equal(WPFX_CTX_READ(&c, x.runs), 0);
    wpfx_release(&c, &x);
    WPFX_WAIT_UNTIL(&c, c.completed == 3);
    wpfx_wait_pool_completed(wp, 3);
    assert_int_equal(WPFX_CTX_READ(&c, c.max_running), 2);
    assert_int_equal(h.runs, 1);
    wpfx_stop_and_destroy(&c, wp);
}

/* workpool_end with take_next: the queued item the freed slot lets in is popped for the caller
 * (begun now, counted in flight), and no worker runs it. */
static void end_with_take_next_returns_the_queued_item_begun_and_in_flight(void **state)
{
    (void)state;
    enum { A, B };
    struct wpfx_ctx c;
    wpfx_ctx_init(&c);
    struct workpool *wp = wpfx_pool(&c, 1, 10, 10, 1);
    struct wpfx_job a = {0}, q = {0};
    assert_int_equal(begin(wp, &a, A, false), 0);
    assert_int_equal(wpfx_submit(wp, &q, B, false), 0);
    assert_int_equal(pool_stats(wp).queued, 1);
    int64_t t_end = mclock_now_us();
    struct wpfx_job *next = wpfx_end(wp, &a, true);
    assert_ptr_equal(next, &q);
    assert_true(q.item.begun_us >= t_end && q.item.begun_us <= mclock_now_us());
    assert_true(q.item.enqueued_us <= t_end);
    struct workpool_stats st = pool_stats(wp);
    assert_int_equal(st.busy, 1);
    assert_int_equal(st.queued, 0);
    assert_int_equal(st.idle, 0);
    assert_int_equal(st.completed, 1);
    assert_null(wpfx_end(wp, next, true));
    st = pool_stats(wp);
    assert_int_equal(st.busy, 0);
    assert_int_equal(st.completed, 2);
    workpool_stop(wp);
    assert_int_equal(q.runs + q.drops, 0);
    workpool_destroy(wp);
    wpfx_ctx_destroy(&c);
}

/* Without take_next, the freed slot goes to a worker, which pops the queued item itself. */
static void end_without_take_next_lets_a_worker_run_the_queued_item(void **state)
{
    (void)state;
    enum { A, B };
    struct wpfx_ctx c;
    wpfx_ctx_init(&c);
    struct workpool *wp = wpfx_pool(&c, 1, 10, 10, 1);
    struct wpfx_job a = {0}, q = {0};
    assert_int_equal(begin(wp, &a, A, false), 0);
    assert_int_equal(wpfx_submit(wp, &q, B, false), 0);
    assert_int_equal(pool_stats(wp).queued, 1);
    int64_t t_end = mclock_now_us();
    assert_null(wpfx_end(wp, &a, false));
    WPFX_WAIT_UNTIL(&c, q.runs == 1);
    assert_false(pthread_equal(WPFX_CTX_READ(&c, q.ran_on), pthread_self()));
    assert_true(WPFX_CTX_READ(&c, q.run_begun_us) >= t_end); /* popped after the slot was freed */
    wpfx_wait_pool_completed(wp, 2);
    struct workpool_stats st = pool_stats(wp);
    assert_int_equal(st.busy, 0);
    assert_int_equal(st.queued, 0);
    assert_int_equal(st.submitted, 2);
    wpfx_stop_and_destroy(&c, wp);
}

/* Once stopping, begin and hand are refused (-ESHUTDOWN); an item handed before still runs
 * and is waited for; an item begun before still ends (it holds its slot until then). */
static void after_stop_begin_and_hand_are_refused_and_begun_items_still_end(void **state)
{
    (void)state;
    enum { A, B, C, D };
    struct wpfx_ctx c;
    wpfx_ctx_init(&c);
    struct workpool *wp = wpfx_pool(&c, 2, 10, 10, 2);
    struct wpfx_job a = {0}, h = {0}, q = {0}, x = {0}, late = {0};
    assert_int_equal(begin(wp, &a, A, false), 0);
    assert_int_equal(begin(wp, &h, B, true), 0);
    assert_int_equal(workpool_hand(wp, &h.item), 0);
    WPFX_WAIT_UNTIL(&c, h.started);
    assert_int_equal(wpfx_submit(wp, &q, C, false), 0); /* no slot: it waits */

    pthread_t stopper;
    assert_int_equal(pthread_create(&stopper, NULL, wpfx_stopper_main, &c), 0);
    WPFX_WAIT_UNTIL(&c, c.shutdown == 1); /* the stop dropped q: the pool is stopping */
    assert_int_equal(begin(wp, &x, D, false), -ESHUTDOWN);
    assert_int_equal(workpool_hand(wp, &a.item), -ESHUTDOWN);
    assert_int_equal(wpfx_submit(wp, &late, D, false), -ESHUTDOWN);
    assert_false(WPFX_CTX_READ(&c, c.stop_returned)); /* h is still held on its worker */
    wpfx_release(&c, &h);
    pthread_join(stopper, NULL);
    assert_int_equal(h.runs, 1);
    assert_false(h.saw_stop_returned);
    assert_int_equal(q.drops, 1);
    assert_int_equal(q.why, WORKPOOL_SHUTDOWN);

    struct workpool_stats st = pool_stats(wp);
    assert_int_equal(st.busy, 1); /* a, begun here */
    assert_null(wpfx_end(wp, &a, true));
    st = pool_stats(wp);
    assert_int_equal(st.busy, 0);
    assert_int_equal(st.completed, 2);
    assert_int_equal(st.submitted, 3);
    assert_int_equal(a.runs + x.runs + x.drops + late.runs + late.drops, 0);
    workpool_destroy(wp);
    wpfx_ctx_destroy(&c);
}

/*
 * Every slot is held by a begun item (a request running on its event thread) and the worker is
 * parked with nothing it may run: a pool without a queue must refuse a newcomer's item (-EAGAIN),
 * as it does when its workers are busy. It queues it instead, past queue_max 0, to wait for the
 * slot: workpool_submit passes the parked workers as fairq_push's slack ("will take an item at
 * once"), and fairq_push checks the share rule, which sees no free slot, only for a tenant it
 * already knows.
 */
static void
a_pool_without_a_queue_refuses_a_newcomer_while_begun_items_hold_every_slot(void **state)
{
    (void)state;
    enum { A, B };
    struct wpfx_ctx c;
    wpfx_ctx_init(&c);
    struct workpool *wp = wpfx_pool(&c, 1, 1, 1, 1);
    wpfx_park_every_worker(&c, wp, 1);
    struct workpool_limits none = wpfx_limits(1, 0, 0, 1);
    assert_int_equal(workpool_set_limits(wp, &none), 0);
    struct wpfx_job a = {0}, q = {0};
    assert_int_equal(begin(wp, &a, A, false), 0);
    int rc = wpfx_submit(wp, &q, B, false);
    struct workpool_stats st = pool_stats(wp);
    /* Undo before judging, so that a failure leaves nothing running. */
    assert_null(wpfx_end(wp, &a, false));
    if (rc == 0)
        WPFX_WAIT_UNTIL(&c, q.runs == 1);
    assert_int_equal(st.queued, 0);
    assert_int_equal(rc, -EAGAIN);
    wpfx_stop_and_destroy(&c, wp);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(a_begun_item_holds_a_slot_until_it_is_ended),
        cmocka_unit_test(begin_refuses_a_tenant_at_its_share_while_others_are_active),
        cmocka_unit_test(begun_items_count_against_the_thread_limit),
        cmocka_unit_test(a_handed_item_runs_on_a_worker_with_the_slot_it_holds),
        cmocka_unit_test(end_with_take_next_returns_the_queued_item_begun_and_in_flight),
        cmocka_unit_test(end_without_take_next_lets_a_worker_run_the_queued_item),
        cmocka_unit_test(after_stop_begin_and_hand_are_refused_and_begun_items_still_end),
        cmocka_unit_test(
            a_pool_without_a_queue_refuses_a_newcomer_while_begun_items_hold_every_slot),
    };
    return cmocka_run_group_tests_name("workpool_event", tests, NULL, NULL);
}
