/*
 * test_fairq_share: the tier queue's share cap (fairq.h), with explicit times: it binds only
 * while other tenants are active, a newcomer takes the worker a busy tenant must leave; the brief
 * verdict (a short mean hold and workers given back now: one past the share, never the reserve,
 * not for a burst begun at once, recomputed by set_limits). Fixture: fairqfx.
 */
#include "fairqfx.h"
#include "compiler.h"
#include "fairq.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

static void share_cap_binds_only_while_others_are_active(void **state)
{
    (void)state;
    struct fairq q;
    fqfx_qinit(&q, FQFX_BIG, FQFX_BIG, 2, 1000);
    struct fqfx_job a[5], b;

    /* Alone, A may have every item in flight, past its share of 2. */
    for (int i = 0; i < 5; i++)
        assert_int_equal(fqfx_push(&q, &a[i], "A", i, 1), FAIRQ_OK);
    struct fqfx_job *running[5];
    for (int i = 0; i < 5; i++) {
        running[i] = fqfx_pop(&q, 2);
        assert_non_null(running[i]);
    }
    assert_int_equal(q.in_flight, 5);
    for (int i = 0; i < 5; i++)
        fairq_done(&q, running[i]->item.tenant, 3);

    /* With B active, A gets at most 2 in flight; the rest waits although it is queued. */
    assert_int_equal(fqfx_push(&q, &b, "B", 0, 4), FAIRQ_OK);
    for (int i = 0; i < 5; i++)
        assert_int_equal(fqfx_push(&q, &a[i], "A", i, 4), FAIRQ_OK);
    struct fqfx_job *x = fqfx_pop(&q, 5), *y = fqfx_pop(&q, 5), *z = fqfx_pop(&q, 5);
    assert_non_null(x);
    assert_non_null(y);
    assert_non_null(z);
    assert_null(fairq_pop(&q, 5));
    struct fairq_tenant *ta = a[0].item.tenant;
    assert_int_equal(ta->in_flight, 2);
    assert_int_equal(ta->queued, 3);
    assert_true(fairq_others_active(&q, ta));

    /* B finishing does not lift the cap: B lingers as active. */
    fairq_done(&q, b.item.tenant, 6);
    assert_null(fairq_pop(&q, 6));
    /* A finishing one of its own lets exactly one more of A's run. */
    struct fqfx_job *done_a = x->tenant[0] == 'A' ? x : y;
    fairq_done(&q, done_a->item.tenant, 7);
    assert_non_null(fqfx_pop(&q, 7));
    assert_null(fairq_pop(&q, 7));
    assert_int_equal(ta->in_flight, 2);

    fairq_drain(&q);
    while (q.in_flight)
        fairq_done(&q, ta, 8);
    fairq_destroy(&q);
}

/*
 * The reserve: a busy tenant alone leaves the last free worker for newcomers, a newcomer takes
 * it at once (ahead of the busy tenant's older items), the busy tenant drains to its share
 * while the newcomer is active, and gets everything but the reserve back once the newcomer's
 * linger has passed. Every item is served in the end.
 */
static void a_newcomer_takes_the_worker_a_busy_tenant_must_leave(void **state)
{
    (void)state;
    const int64_t linger = 1000;
    struct fairq_limits l = {.queue_max = FQFX_BIG,
                             .tenant_queue_max = FQFX_BIG,
                             .slots = {.size = 4, .cap = 2, .reserve = 1},
                             .linger_us = linger};
    struct fairq q;
    fairq_init(&q, &l);
    struct fqfx_job a[6], b;
    for (int i = 0; i < 6; i++)
        assert_int_equal(fqfx_push(&q, &a[i], "A", i, 1), FAIRQ_OK);
    struct fqfx_job *ra[6];
    int na = 0;
    /* Alone, A runs on 3 of the 4 workers, not 4. */
    while ((ra[na] = fqfx_pop(&q, 1)))
        na++;
    assert_int_equal(na, 3);
    assert_int_equal(q.in_flight, 3);

    /* B arrives after A's queued items and gets the fourth worker at once. */
    assert_int_equal(fqfx_push(&q, &b, "B", 0, 2), FAIRQ_OK);
    struct fqfx_job *rb = fqfx_pop(&q, 2);
    assert_non_null(rb);
    assert_string_equal(rb->tenant, "B");
    assert_null(fairq_pop(&q, 2)); /* every worker busy */

    /* B active: A, above its share of 2, does not take back a worker its own item frees. */
    fairq_done(&q, ra[--na]->item.tenant, 3);
    assert_null(fairq_pop(&q, 3));
    fairq_done(&q, ra[--na]->item.tenant, 4);
    ra[na] = fqfx_pop(&q, 4); /* A at 1: below its share again */
    assert_non_null(ra[na]);
    na++;
    assert_null(fairq_pop(&q, 4));

    /* B finishes and lingers: A stays at its share. At the end of the linger B is forgotten
     * and A takes every worker but the reserve. */
    fairq_done(&q, rb->item.tenant, 5);
    assert_null(fairq_pop(&q, 5 + linger - 1));
    assert_int_equal(fairq_sweep(&q, 5 + linger - 1), 0);
    assert_int_equal(fairq_sweep(&q, 5 + linger), 1);
    ra[na] = fqfx_pop(&q, 5 + linger);
    assert_non_null(ra[na]);
    na++;
    assert_null(fairq_pop(&q, 5 + linger)); /* 3 of 4: the reserve stays free */
    assert_int_equal(q.in_flight, 3);

    /* Nothing is lost: the rest of A's items run as workers free up. */
    int served = 0;
    while (na > 0) {
        fairq_done(&q, ra[--na]->item.tenant, 2000);
        struct fqfx_job *n = fqfx_pop(&q, 2000);
        if (n) {
            ra[na++] = n;
            served++;
        }
    }
    assert_int_equal(served, 1); /* 6 pushed: 5 ran above, the last one here */
    assert_int_equal(q.queued, 0);
    assert_int_equal(q.in_flight, 0);
    fairq_destroy(&q);
}

/* Give tenant key FAIRQ_BRIEF_SAMPLES items of 100 us, each ending at now while the next runs
 * (fairq_take, so the caller's queue must let it hold two): its mean hold is short and it is
 * giving workers back, so it is brief until now + brief_us. w[FAIRQ_BRIEF_SAMPLES] stays in
 * flight for the caller to end. */
static struct fairq_tenant *cycle_brief(struct fairq *q, const char *key, struct fqfx_job *w,
                                        int64_t now)
{
    assert_true(fairq_take(q, key, &w[0].item, now));
    for (int i = 1; i <= FAIRQ_BRIEF_SAMPLES; i++) {
        assert_true(fairq_take(q, key, &w[i].item, now));
        fairq_record_hold(q, w[i - 1].item.tenant, 100);
        fairq_done(q, w[i - 1].item.tenant, now);
    }
    struct fairq_tenant *t = w[0].item.tenant;
    assert_int_equal(t->in_flight, 1);
    assert_int_equal(t->hold_avg_us, 100);
    assert_true(fairq_tenant_brief(t, now));
    return t;
}

/* Brief requests: once a tenant's recent items held a worker for less than brief_us on
 * average (after FAIRQ_BRIEF_SAMPLES of them) and it is giving workers back, it may take one
 * worker past its share beside others, never two and never the reserve; one slow item makes it
 * an ordinary tenant again. */
static void brief_requests_take_one_worker_past_the_share_until_they_turn_slow(void **state)
{
    (void)state;
    struct fairq_limits l = {.queue_max = FQFX_BIG,
                             .tenant_queue_max = FQFX_BIG,
                             .slots = {.size = 6, .cap = 2, .reserve = 1},
                             .linger_us = 1000,
                             .brief_us = 5000};
    struct fairq q;
    fairq_init(&q, &l);
    struct fqfx_job a[4], b, b2, c, w[FAIRQ_BRIEF_SAMPLES + 1];
    struct fqfx_job warm[FAIRQ_BRIEF_SAMPLES];
    for (int i = 0; i < FAIRQ_BRIEF_SAMPLES; i++) {
        assert_true(fairq_take(&q, "A", &warm[i].item, 1));
        assert_false(fairq_tenant_brief(warm[i].item.tenant, 1)); /* not before enough samples */
        fairq_record_hold(&q, warm[i].item.tenant, 100);
        fairq_done(&q, warm[i].item.tenant, 1);
    }
    struct fairq_tenant *ta = cycle_brief(&q, "A", w, 1);

    assert_int_equal(fqfx_push(&q, &b, "B", 0, 2), FAIRQ_OK);
    assert_ptr_equal(fqfx_pop(&q, 2), &b);
    for (int i = 0; i < 4; i++)
        assert_int_equal(fqfx_push(&q, &a[i], "A", i, 2), FAIRQ_OK);
    /* B active, A's share 2: brief A runs on 3 workers, not 4, though 3 are free. */
    assert_ptr_equal(fqfx_pop(&q, 3), &a[0]);
    assert_ptr_equal(fqfx_pop(&q, 3), &a[1]);
    assert_null(fairq_pop(&q, 3));
    assert_true(fairq_tenant_brief(ta, 3)); /* still brief: it is the bound that holds it */
    assert_int_equal(ta->in_flight, 3);
    assert_int_equal(q.in_flight, 4);
    /* Of the two free workers a newcomer takes one; the last is the reserve. */
    assert_true(fairq_take(&q, "C", &c.item, 3));
    assert_false(fairq_take(&q, "B", &b2.item, 3)); /* B holds one: the reserve is not its */

    /* A 200 ms item: A's mean jumps past 5 ms and A is held to its share. */
    fairq_record_hold(&q, ta, 200000);
    fairq_done(&q, ta, 4);
    assert_false(fairq_tenant_brief(ta, 4));
    assert_int_equal(ta->in_flight, 2);
    assert_null(fairq_pop(&q, 4)); /* A at 2 = its share beside B and C */

    fairq_drain(&q);
    while (ta->in_flight)
        fairq_done(&q, ta, 5);
    fairq_done(&q, b.item.tenant, 5);
    fairq_done(&q, c.item.tenant, 5);
    fairq_destroy(&q);
}

/* The issue-26 case in one queue: a tenant alone turns brief on cheap items, then sends slow
 * ones all at once. However brief, it fills every worker but the reserve, and a newcomer takes
 * the reserve while none of the burst has ended. */
static void a_brief_tenant_alone_leaves_the_reserve_to_a_newcomer(void **state)
{
    (void)state;
    struct fairq_limits l = {.queue_max = FQFX_BIG,
                             .tenant_queue_max = FQFX_BIG,
                             .slots = {.size = 10, .cap = 5, .reserve = 1},
                             .linger_us = 1000,
                             .brief_us = 5000};
    struct fairq q;
    fairq_init(&q, &l);
    struct fqfx_job w[FAIRQ_BRIEF_SAMPLES + 1], burst[10], n;
    struct fairq_tenant *ta = cycle_brief(&q, "A", w, 10);
    for (int i = 0; i < 10; i++)
        assert_int_equal(fqfx_push(&q, &burst[i], "A", i, 11), FAIRQ_OK);
    int served = 0;
    while (fairq_pop(&q, 12))
        served++;
    assert_int_equal(served, 8); /* 9 held with the cheap one still running */
    assert_int_equal(ta->in_flight, 9);
    assert_true(fairq_tenant_brief(ta, 12));
    assert_true(fairq_take(&q, "N", &n.item, 13));
    assert_int_equal(q.in_flight, 10);

    fairq_drain(&q);
    while (ta->in_flight)
        fairq_done(&q, ta, 14);
    fairq_done(&q, n.item.tenant, 14);
    fairq_destroy(&q);
}

/* The verdict sees the work in progress: a tenant whose past items were all short is not brief
 * for a burst begun at once after its last end (nothing it holds ran when it last gave a
 * worker back), so beside others the burst stops at its share; once one of the burst ends while
 * the rest run, it is brief, for brief_us after that end and no longer. */
static void a_burst_begun_at_once_is_held_to_its_share_until_one_of_it_ends(void **state)
{
    (void)state;
    struct fairq_limits l = {.queue_max = FQFX_BIG,
                             .tenant_queue_max = FQFX_BIG,
                             .slots = {.size = 8, .cap = 2, .reserve = 1},
                             .linger_us = 1000000,
                             .brief_us = 5000};
    struct fairq q;
    fairq_init(&q, &l);
    struct fqfx_job warm[FAIRQ_BRIEF_SAMPLES], b, a[4];
    for (int i = 0; i < FAIRQ_BRIEF_SAMPLES; i++) {
        assert_true(fairq_take(&q, "A", &warm[i].item, 1));
        fairq_record_hold(&q, warm[i].item.tenant, 100);
        fairq_done(&q, warm[i].item.tenant, 1);
    }
    struct fairq_tenant *ta = warm[0].item.tenant;
    assert_int_equal(ta->hold_avg_us, 100);  /* short on average ... */
    assert_false(fairq_tenant_brief(ta, 2)); /* ... but nothing of it runs: not giving back */
    assert_true(fairq_take(&q, "B", &b.item, 2));

    assert_true(fairq_take(&q, "A", &a[0].item, 10));
    assert_true(fairq_take(&q, "A", &a[1].item, 10));
    assert_false(fairq_take(&q, "A", &a[2].item, 10)); /* at its share, not brief */
    assert_false(fairq_tenant_brief(ta, 10));

    /* a[0] ends short while a[1] runs: A is giving workers back, and brief. */
    fairq_record_hold(&q, ta, 100);
    fairq_done(&q, ta, 11);
    assert_true(fairq_tenant_brief(ta, 11));
    assert_true(fairq_take(&q, "A", &a[0].item, 11));
    assert_true(fairq_take(&q, "A", &a[2].item, 11)); /* one past its share */
    assert_false(fairq_take(&q, "A", &a[3].item, 11));
    /* Nothing of it ends for brief_us: it is brief no more. */
    assert_true(fairq_tenant_brief(ta, 11 + 4999));
    assert_false(fairq_tenant_brief(ta, 11 + 5000));

    for (int i = 0; i < 3; i++)
        fairq_done(&q, ta, 6000);
    fairq_done(&q, b.item.tenant, 6000);
    fairq_destroy(&q);
}

/* A reload that turns brief off (brief_us 0) ends every verdict at once. */
static void set_limits_recomputes_the_brief_verdicts(void **state)
{
    (void)state;
    struct fairq_limits l = {.queue_max = FQFX_BIG,
                             .tenant_queue_max = FQFX_BIG,
                             .slots = {.size = 4, .cap = 4},
                             .linger_us = 1000,
                             .brief_us = 5000};
    struct fairq q;
    fairq_init(&q, &l);
    struct fqfx_job w[FAIRQ_BRIEF_SAMPLES + 1];
    struct fairq_tenant *ta = cycle_brief(&q, "A", w, 1);
    l.brief_us = 0;
    fairq_set_limits(&q, &l);
    assert_false(fairq_tenant_brief(ta, 2));
    l.brief_us = 5000;
    fairq_set_limits(&q, &l);
    assert_true(fairq_tenant_brief(ta, 2));
    fairq_done(&q, ta, 3);
    fairq_destroy(&q);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(share_cap_binds_only_while_others_are_active),
        cmocka_unit_test(a_newcomer_takes_the_worker_a_busy_tenant_must_leave),
        cmocka_unit_test(brief_requests_take_one_worker_past_the_share_until_they_turn_slow),
        cmocka_unit_test(a_brief_tenant_alone_leaves_the_reserve_to_a_newcomer),
        cmocka_unit_test(a_burst_begun_at_once_is_held_to_its_share_until_one_of_it_ends),
        cmocka_unit_test(set_limits_recomputes_the_brief_verdicts),
    };
    return cmocka_run_group_tests_name("fairq_share", tests, NULL, NULL);
}
