/*
 * test_workpool_share: the worker pool's share cap (workpool.h) with real threads: a tenant's
 * share is capped while others are active, a newcomer runs while a busy tenant holds every other
 * worker, a tenant with brief items takes one worker past its share. The tests use "probe" jobs
 * of another tenant: a probe that runs proves a worker was idle, so a capped tenant that did not
 * get it was refused by the cap. Fixture: workpoolfx.
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

static void tenant_share_is_capped_while_others_are_active(void **state)
{
    (void)state;
    enum { A, B, C };
    struct wpfx_ctx c;
    wpfx_ctx_init(&c);
    struct workpool *wp = wpfx_pool(&c, 4, 100, 100, 2);
    struct wpfx_job b1 = {0}, a[4], probe[2];
    memset(a, 0, sizeof(a));
    memset(probe, 0, sizeof(probe));

    /* B holds one worker; then A asks for four. */
    assert_int_equal(wpfx_submit(wp, &b1, B, true), 0);
    WPFX_WAIT_UNTIL(&c, c.t_running[B] == 1);
    for (int i = 0; i < 4; i++)
        assert_int_equal(wpfx_submit(wp, &a[i], A, true), 0);
    WPFX_WAIT_UNTIL(&c, c.t_running[A] == 2);
    assert_true(workpool_others_active(wp));

    /* A probe of C runs on the fourth worker, which A's queued items could not get. */
    assert_int_equal(wpfx_submit(wp, &probe[0], C, false), 0);
    WPFX_WAIT_UNTIL(&c, c.t_completed[C] == 1);
    wpfx_wait_pool_completed(wp, 1);
    struct workpool_stats st;
    workpool_stats(wp, &st);
    assert_int_equal(st.busy, 3);
    assert_int_equal(st.queued, 2);
    assert_int_equal(st.tenants, 3);
    assert_int_equal(WPFX_CTX_READ(&c, c.t_max[A]), 2);

    /* B finishes but lingers as active: A is still capped (a second probe proves a free worker). */
    wpfx_release(&c, &b1);
    WPFX_WAIT_UNTIL(&c, c.t_completed[B] == 1);
    assert_int_equal(wpfx_submit(wp, &probe[1], C, false), 0);
    WPFX_WAIT_UNTIL(&c, c.t_completed[C] == 2);
    assert_int_equal(WPFX_CTX_READ(&c, c.t_running[A]), 2);
    assert_int_equal(WPFX_CTX_READ(&c, c.t_max[A]), 2);

    /* Once B and C are forgotten (their linger passed), A alone takes every worker. Their
     * items must be done in the pool, not only in run(), or they are not idle yet. */
    wpfx_wait_pool_completed(wp, 3);
    workpool_expire(wp, 0, mclock_now_us() + 10 * 1000000ll);
    WPFX_WAIT_UNTIL(&c, c.t_running[A] == 4);
    workpool_stats(wp, &st);
    assert_int_equal(st.tenants, 1);
    assert_int_equal(st.expired, 0);
    assert_false(workpool_others_active(wp));

    wpfx_release_all(&c);
    WPFX_WAIT_UNTIL(&c, c.completed == 7);
    wpfx_stop_and_destroy(&c, wp);
}

/*
 * The reserve and the linger on real threads: A alone holds every worker but one; B's item
 * runs on that one while all of A's are still running; A drains to its share while B is
 * active and gets all but the reserve back only once B's linger has passed (the end of the
 * linger is injected through workpool_expire's now). Every item runs.
 */
static void a_newcomer_runs_while_a_busy_tenant_holds_every_other_worker(void **state)
{
    (void)state;
    enum { A, B };
    const int64_t linger = 1000000;
    struct wpfx_ctx c;
    wpfx_ctx_init(&c);
    struct workpool *wp = wpfx_pool_ex(&c, 4, 100, 100, 2, 1, linger);
    struct wpfx_job a[6], b = {0};
    memset(a, 0, sizeof(a));
    for (int i = 0; i < 6; i++)
        assert_int_equal(wpfx_submit(wp, &a[i], A, true), 0);
    WPFX_WAIT_UNTIL(&c, c.t_running[A] == 3);
    wpfx_wait_pool_idle(wp, 1); /* the reserved worker waits, A's three items queued or not */

    assert_int_equal(wpfx_submit(wp, &b, B, true), 0);
    WPFX_WAIT_UNTIL(&c, c.t_running[B] == 1);
    assert_int_equal(WPFX_CTX_READ(&c, c.t_completed[A]), 0);
    assert_int_equal(WPFX_CTX_READ(&c, c.t_max[A]), 3);

    /* One of A's items ends: A (3 running, share 2) does not take the worker back. A's items
     * run in submit order, so a[0] is one of the running ones. */
    wpfx_release(&c, &a[0]);
    wpfx_wait_pool_completed(wp, 1);
    wpfx_wait_pool_idle(wp, 1);
    assert_int_equal(WPFX_CTX_READ(&c, c.t_running[A]), 2);

    /* B ends but lingers: A stays at 2 until the linger is over, then takes 3 again. */
    wpfx_release(&c, &b);
    wpfx_wait_pool_completed(wp, 2);
    workpool_expire(wp, 0, mclock_now_us() + linger / 2);
    struct workpool_stats st;
    workpool_stats(wp, &st);
    assert_int_equal(st.tenants, 2);
    assert_int_equal(WPFX_CTX_READ(&c, c.t_running[A]), 2);
    workpool_expire(wp, 0, mclock_now_us() + 2 * linger);
    WPFX_WAIT_UNTIL(&c, c.t_running[A] == 3);
    wpfx_wait_pool_idle(wp, 1);
    workpool_stats(wp, &st);
    assert_int_equal(st.tenants, 1);
    assert_int_equal(st.expired, 0);

    wpfx_release_all(&c);
    WPFX_WAIT_UNTIL(&c, c.completed == 7);
    assert_int_equal(WPFX_CTX_READ(&c, c.t_completed[A]), 6);
    wpfx_stop_and_destroy(&c, wp);
}

/* The pool measures how long each item held its worker: a tenant whose items end at once while
 * it runs others is brief and, beside another tenant, takes one worker past its share; never a
 * second, and never the reserve: a newcomer that arrives next still finds a worker. */
static void a_tenant_with_brief_items_takes_one_worker_past_its_share(void **state)
{
    (void)state;
    enum { A, B, D };
    struct wpfx_ctx c;
    wpfx_ctx_init(&c);
    struct workpool *wp = wpfx_pool_brief(&c, 6, 100, 100, 2, 1, 1000000, 1000000);
    struct wpfx_job warm[FAIRQ_BRIEF_SAMPLES], b = {0}, d = {0}, a[4];
    memset(warm, 0, sizeof(warm));
    memset(a, 0, sizeof(a));
    assert_int_equal(wpfx_submit(wp, &a[0], A, true), 0);
    WPFX_WAIT_UNTIL(&c, c.t_running[A] == 1);
    /* Short items end while a[0] runs: A is giving workers back. */
    for (int i = 0; i < FAIRQ_BRIEF_SAMPLES; i++)
        assert_int_equal(wpfx_submit(wp, &warm[i], A, false), 0);
    wpfx_wait_pool_completed(wp, FAIRQ_BRIEF_SAMPLES);
    assert_true(workpool_tenant_brief(a[0].item.tenant));

    assert_int_equal(wpfx_submit(wp, &b, B, true), 0);
    WPFX_WAIT_UNTIL(&c, c.t_running[B] == 1);
    for (int i = 1; i < 4; i++)
        assert_int_equal(wpfx_submit(wp, &a[i], A, true), 0);
    WPFX_WAIT_UNTIL(&c, c.t_running[A] == 3); /* its share of 2, and one more */
    /* D arrives after A's last item: the one idle worker A may not take is D's, then only the
     * reserve is left and A's last item waits. */
    assert_int_equal(wpfx_submit(wp, &d, D, true), 0);
    WPFX_WAIT_UNTIL(&c, c.t_running[D] == 1);
    wpfx_wait_pool_idle(wp, 1);
    struct workpool_stats st;
    workpool_stats(wp, &st);
    assert_int_equal(st.queued, 1);
    assert_int_equal(WPFX_CTX_READ(&c, c.t_running[A]), 3);
    wpfx_release_all(&c);
    WPFX_WAIT_UNTIL(&c, c.completed == FAIRQ_BRIEF_SAMPLES + 6);
    wpfx_stop_and_destroy(&c, wp);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(tenant_share_is_capped_while_others_are_active),
        cmocka_unit_test(a_newcomer_runs_while_a_busy_tenant_holds_every_other_worker),
        cmocka_unit_test(a_tenant_with_brief_items_takes_one_worker_past_its_share),
    };
    return cmocka_run_group_tests_name("workpool_share", tests, NULL, NULL);
}
