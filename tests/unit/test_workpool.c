/*
 * test_workpool: the worker pool's contract (workpool.h) with real threads: every item runs
 * exactly once on a worker, never more at once than threads, submit refuses a full queue, a
 * tenant past its queue share and a stopped pool, a pool without a queue runs what finds a free
 * worker, expire drops only items queued before the cutoff, and the busiest tenants are listed
 * first. The share cap is in test_workpool_share, live resizes in test_workpool_resize, the
 * event-thread way in test_workpool_event; their jobs and waits are the fixture's (workpoolfx):
 * every wait is on the real condition, bounded; no test sleeps.
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

static void every_item_runs_exactly_once_on_a_worker(void **state)
{
    (void)state;
    enum { N = 2000 };
    struct wpfx_ctx c;
    wpfx_ctx_init(&c);
    struct workpool *wp = wpfx_pool(&c, 4, N, N, 4);
    struct wpfx_job *j = calloc(N, sizeof(*j));
    assert_non_null(j);
    for (int i = 0; i < N; i++)
        assert_int_equal(wpfx_submit(wp, &j[i], i % WPFX_NTENANTS, false), 0);
    WPFX_WAIT_UNTIL(&c, c.completed == N);
    wpfx_wait_pool_completed(wp, N);
    workpool_stop(wp);
    pthread_t me = pthread_self();
    for (int i = 0; i < N; i++) {
        assert_int_equal(j[i].runs, 1);
        assert_int_equal(j[i].drops, 0);
        assert_false(pthread_equal(j[i].ran_on, me));
    }
    assert_true(c.max_running <= 4);
    struct workpool_stats st;
    workpool_stats(wp, &st);
    assert_int_equal(st.threads, 4);
    assert_int_equal(st.submitted, N);
    assert_int_equal(st.completed, N);
    assert_int_equal(st.busy, 0);
    assert_int_equal(st.queued, 0);
    assert_int_equal(st.expired + st.rejected_full + st.rejected_tenant, 0);
    workpool_destroy(wp);
    wpfx_ctx_destroy(&c);
    free(j);
}

static void running_items_never_exceed_threads(void **state)
{
    (void)state;
    struct wpfx_ctx c;
    wpfx_ctx_init(&c);
    struct workpool *wp = wpfx_pool(&c, 3, 100, 100, 1);
    struct wpfx_job j[12];
    memset(j, 0, sizeof(j));
    for (int i = 0; i < 12; i++)
        assert_int_equal(wpfx_submit(wp, &j[i], 0, true), 0);
    WPFX_WAIT_UNTIL(&c, c.running == 3);
    /* All three workers are held; the rest waits in the queue. */
    struct workpool_stats st;
    workpool_stats(wp, &st);
    assert_int_equal(st.busy, 3);
    assert_int_equal(st.queued, 9);
    /* Release them one at a time, oldest first (one tenant: FIFO), each start checked. */
    for (int i = 0; i < 12; i++) {
        WPFX_WAIT_UNTIL(&c, j[i].started);
        wpfx_release(&c, &j[i]);
    }
    WPFX_WAIT_UNTIL(&c, c.completed == 12);
    assert_int_equal(WPFX_CTX_READ(&c, c.max_running), 3);
    wpfx_stop_and_destroy(&c, wp);
}

static void submit_refuses_full_queue_tenant_share_and_shutdown(void **state)
{
    (void)state;
    enum { A, B, C, Z = 7 };
    struct wpfx_ctx c;
    wpfx_ctx_init(&c);
    struct workpool *wp = wpfx_pool(&c, 1, 2, 1, 1);
    struct wpfx_job x = {0}, a1 = {0}, a2 = {0}, b1 = {0}, c1 = {0}, late = {0};

    assert_int_equal(wpfx_submit(wp, &x, Z, true), 0);
    WPFX_WAIT_UNTIL(&c, x.started);
    assert_int_equal(wpfx_submit(wp, &a1, A, true), 0);
    assert_int_equal(wpfx_submit(wp, &a2, A, true), -EDQUOT); /* A's one queued place is taken */
    assert_int_equal(wpfx_submit(wp, &b1, B, true), 0);
    assert_int_equal(wpfx_submit(wp, &c1, C, true), -EAGAIN); /* two queued: the queue is full */
    struct workpool_stats st;
    workpool_stats(wp, &st);
    assert_int_equal(st.queued, 2);
    assert_int_equal(st.queue_max, 2);
    assert_int_equal(st.submitted, 3);
    assert_int_equal(st.rejected_tenant, 1);
    assert_int_equal(st.rejected_full, 1);

    /* Stop on another thread: queued items are dropped at once, the running one is awaited. */
    pthread_t stopper;
    assert_int_equal(pthread_create(&stopper, NULL, wpfx_stopper_main, &c), 0);
    WPFX_WAIT_UNTIL(&c, c.shutdown == 2);
    assert_int_equal(wpfx_submit(wp, &late, A, false), -ESHUTDOWN);
    assert_false(WPFX_CTX_READ(&c, c.stop_returned)); /* x is still held */
    assert_int_equal(WPFX_CTX_READ(&c, x.runs), 0);
    wpfx_release(&c, &x);
    pthread_join(stopper, NULL);

    assert_int_equal(x.runs, 1);
    assert_false(x.saw_stop_returned);
    struct wpfx_job *dropped[2] = {&a1, &b1};
    for (int i = 0; i < 2; i++) {
        struct wpfx_job *j = dropped[i];
        assert_int_equal(j->runs, 0);
        assert_int_equal(j->drops, 1);
        assert_int_equal(j->why, WORKPOOL_SHUTDOWN);
        assert_true(pthread_equal(j->dropped_on, stopper));
    }
    assert_int_equal(a2.runs + a2.drops + c1.runs + c1.drops + late.runs + late.drops, 0);
    workpool_stats(wp, &st);
    assert_int_equal(st.completed, 1);
    assert_int_equal(st.busy, 0);
    assert_int_equal(st.queued, 0);
    workpool_destroy(wp);
    wpfx_ctx_destroy(&c);
}

/* queue_max 0 (and so a tenant cap of 0): nothing may wait, but whatever finds a worker free
 * runs. The queue's limits count waiting items; an item that an idle worker takes at once does
 * not wait (it used to be refused, so a tier with queue_max 0 served nothing). */
static void a_pool_without_a_queue_runs_what_finds_a_free_worker(void **state)
{
    (void)state;
    enum { A, B };
    struct wpfx_ctx c;
    wpfx_ctx_init(&c);
    /* Parked workers are the ones counted as taking an item at once: park both first, with a
     * queue (before they park, a pool without one refuses everything), then remove it. */
    struct workpool *wp = wpfx_pool(&c, 2, 2, 2, 2);
    wpfx_park_every_worker(&c, wp, 2);
    struct workpool_limits none = wpfx_limits(2, 0, 0, 2);
    assert_int_equal(workpool_set_limits(wp, &none), 0);
    wpfx_wait_pool_idle(wp, 2);
    struct wpfx_job x1 = {0}, x2 = {0}, x3 = {0};
    /* Back to back, before either worker has woken: both count as taken at once. */
    assert_int_equal(wpfx_submit(wp, &x1, A, true), 0);
    assert_int_equal(wpfx_submit(wp, &x2, B, true), 0);
    assert_int_equal(wpfx_submit(wp, &x3, A, true), -EAGAIN); /* every worker has one: no queue */
    WPFX_WAIT_UNTIL(&c, x1.started && x2.started);
    wpfx_release_all(&c);
    wpfx_wait_pool_completed(wp, 2 + 2); /* the warm-up's two, then x1 and x2 */
    struct workpool_stats st;
    workpool_stats(wp, &st);
    assert_int_equal(st.submitted, 2 + 2);
    assert_int_equal(st.rejected_full, 1);
    assert_int_equal(x3.runs + x3.drops, 0);
    wpfx_stop_and_destroy(&c, wp);
}

static void expire_drops_only_items_queued_before_cutoff(void **state)
{
    (void)state;
    enum { A, B, Z = 7 };
    struct wpfx_ctx c;
    wpfx_ctx_init(&c);
    struct workpool *wp = wpfx_pool(&c, 1, 10, 10, 1);
    struct wpfx_job x = {0}, a1 = {0}, a2 = {0}, b1 = {0};
    assert_int_equal(wpfx_submit(wp, &x, Z, true), 0);
    WPFX_WAIT_UNTIL(&c, x.started);
    assert_int_equal(wpfx_submit(wp, &a1, A, false), 0);
    /* Let the clock tick so a2 is strictly younger than a1 (microseconds: a short spin). */
    while (mclock_now_us() <= a1.item.enqueued_us)
        ;
    assert_int_equal(wpfx_submit(wp, &a2, A, false), 0);
    assert_int_equal(wpfx_submit(wp, &b1, B, false), 0);

    workpool_expire(wp, a2.item.enqueued_us, mclock_now_us());
    /* The drop callback ran on this thread, before workpool_expire returned. */
    assert_int_equal(WPFX_CTX_READ(&c, c.expired), 1);
    assert_int_equal(a1.drops, 1);
    assert_int_equal(a1.why, WORKPOOL_EXPIRED);
    assert_true(pthread_equal(a1.dropped_on, pthread_self()));
    struct workpool_stats st;
    workpool_stats(wp, &st);
    assert_int_equal(st.expired, 1);
    assert_int_equal(st.queued, 2);
    assert_int_equal(st.tenants, 3); /* nobody lingered out: now_us is now */

    wpfx_release(&c, &x);
    WPFX_WAIT_UNTIL(&c, c.completed == 3);
    workpool_stop(wp);
    assert_int_equal(a1.runs, 0);
    assert_int_equal(a2.runs, 1);
    assert_int_equal(b1.runs, 1);
    assert_int_equal(a2.drops + b1.drops, 0);
    workpool_stats(wp, &st);
    assert_int_equal(st.submitted, 4);
    assert_int_equal(st.completed + st.expired, st.submitted);
    workpool_destroy(wp);
    wpfx_ctx_destroy(&c);
}

static void top_tenants_lists_busiest_first(void **state)
{
    (void)state;
    enum { A, B, Z = 7 };
    struct wpfx_ctx c;
    wpfx_ctx_init(&c);
    struct workpool *wp = wpfx_pool(&c, 1, 100, 100, 1);
    struct wpfx_job x = {0}, a[3], b = {0};
    memset(a, 0, sizeof(a));
    assert_int_equal(wpfx_submit(wp, &x, Z, true), 0);
    WPFX_WAIT_UNTIL(&c, x.started);
    for (int i = 0; i < 3; i++)
        assert_int_equal(wpfx_submit(wp, &a[i], A, true), 0);
    assert_int_equal(wpfx_submit(wp, &b, B, true), 0);
    struct workpool_tenant_load top[20];
    assert_int_equal(workpool_top_tenants(wp, top, 20), 3);
    assert_string_equal(top[0].key, "A");
    assert_int_equal(top[0].queued, 3);
    assert_int_equal(top[0].in_flight, 0);
    /* H (one running) and B (one queued) tie for second place. */
    for (int i = 1; i < 3; i++) {
        if (!strcmp(top[i].key, "H")) {
            assert_int_equal(top[i].in_flight, 1);
            assert_int_equal(top[i].queued, 0);
        } else {
            assert_string_equal(top[i].key, "B");
            assert_int_equal(top[i].in_flight, 0);
            assert_int_equal(top[i].queued, 1);
        }
    }
    assert_int_equal(workpool_top_tenants(wp, top, 1), 1);
    assert_string_equal(top[0].key, "A");
    wpfx_release_all(&c);
    WPFX_WAIT_UNTIL(&c, c.completed == 5);
    wpfx_stop_and_destroy(&c, wp);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(every_item_runs_exactly_once_on_a_worker),
        cmocka_unit_test(running_items_never_exceed_threads),
        cmocka_unit_test(submit_refuses_full_queue_tenant_share_and_shutdown),
        cmocka_unit_test(a_pool_without_a_queue_runs_what_finds_a_free_worker),
        cmocka_unit_test(expire_drops_only_items_queued_before_cutoff),
        cmocka_unit_test(top_tenants_lists_busiest_first),
    };
    return cmocka_run_group_tests_name("workpool", tests, NULL, NULL);
}
