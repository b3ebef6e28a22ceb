/*
 * test_fairq: the tier queue's fairness contract (fairq.h), driven with explicit times.
 *
 * Round-robin across tenants, FIFO inside one, the two queue bounds, the share cap that only
 * binds while other tenants are active (and the linger that keeps them active), expiry, drain,
 * sweep, the busiest-tenant list and hash-table growth; fairq_take (an item served at once,
 * without queueing, by the same share rule as fairq_pop) and the begun_us both stamp; the brief
 * verdict (a short mean hold and workers given back now: one past the share, never the reserve,
 * not for a burst begun at once, lapsing brief_us after the last end); the order by cost (the
 * tenant of least recent database time first, its cost halving every half-life, charged its
 * mean when popped and corrected when done, ties in turn, the share rule still binding). fairq is
 * single-threaded by contract (the workpool locks around it), so these tests need no threads.
 */
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

#define BIG 100000 /* a bound that never binds */

/* A test item: the embedded fairq_item plus who pushed it and in which order. */
struct job {
    struct fairq_item item;
    char tenant[FAIRQ_KEY_MAX + 1];
    int seq; /* push order within its tenant */
};

static struct job *job_of(struct fairq_item *it)
{
    return container_of(it, struct job, item);
}

/* Push one job for tenant at now; returns fairq_push's verdict. */
static int push(struct fairq *q, struct job *j, const char *tenant, int seq, int64_t now)
{
    snprintf(j->tenant, sizeof(j->tenant), "%s", tenant);
    j->seq = seq;
    return fairq_push(q, tenant, &j->item, now, 0);
}

/* Pop and return the job (NULL when nothing may be served). */
static struct job *pop(struct fairq *q, int64_t now)
{
    struct fairq_item *it = fairq_pop(q, now);
    return it ? job_of(it) : NULL;
}

/* Pop one job and finish it at once, returning its tenant's first letter. */
static char pop_done(struct fairq *q, int64_t now)
{
    struct fairq_item *it = fairq_pop(q, now);
    assert_non_null(it);
    fairq_done(q, it->tenant, now);
    return job_of(it)->tenant[0];
}

/* A queue with the old positional bounds: a pool too big to bind (BIG workers) and no
 * reserve, so only the queue bounds, the share and the linger act. */
static void qinit(struct fairq *q, size_t queue_max, size_t tenant_queue_max, size_t share,
                  int64_t linger)
{
    struct fairq_limits l = {.queue_max = queue_max,
                             .tenant_queue_max = tenant_queue_max,
                             .slots = {.size = BIG, .cap = share, .reserve = 0},
                             .linger_us = linger};
    fairq_init(q, &l);
}

static void qlimits(struct fairq *q, size_t queue_max, size_t tenant_queue_max, size_t share)
{
    struct fairq_limits l = q->lim;
    l.queue_max = queue_max;
    l.tenant_queue_max = tenant_queue_max;
    l.slots.cap = share;
    fairq_set_limits(q, &l);
}

static size_t list_len(struct fairq_item *it)
{
    size_t n = 0;
    for (; it; it = it->next)
        n++;
    return n;
}

static void newcomer_is_served_within_one_turn(void **state)
{
    (void)state;
    struct fairq q;
    qinit(&q, BIG, BIG, BIG, 1000);
    static struct job a[500];
    struct job b, c;
    for (int i = 0; i < 500; i++)
        assert_int_equal(push(&q, &a[i], "A", i, 1), FAIRQ_OK);
    /* A is served alone for a while, then B and C arrive with one item each. */
    for (int i = 0; i < 10; i++)
        assert_int_equal(pop_done(&q, 2), 'A');
    assert_int_equal(push(&q, &b, "B", 0, 3), FAIRQ_OK);
    assert_int_equal(push(&q, &c, "C", 0, 3), FAIRQ_OK);
    /* One turn serves each of the three tenants once: B and C within the next three pops. */
    char got[3];
    for (int i = 0; i < 3; i++)
        got[i] = pop_done(&q, 4);
    assert_non_null(memchr(got, 'A', 3));
    assert_non_null(memchr(got, 'B', 3));
    assert_non_null(memchr(got, 'C', 3));
    /* Then only A is left. */
    while (q.queued)
        assert_int_equal(pop_done(&q, 5), 'A');
    assert_null(fairq_pop(&q, 6));
    fairq_destroy(&q);
}

static void backlogged_tenants_alternate(void **state)
{
    (void)state;
    struct fairq q;
    qinit(&q, BIG, BIG, BIG, 1000);
    struct job j[3][20];
    const char *names[3] = {"A", "B", "C"};
    for (int t = 0; t < 3; t++)
        for (int i = 0; i < 20; i++)
            assert_int_equal(push(&q, &j[t][i], names[t], i, 1), FAIRQ_OK);
    /* Every window of three consecutive pops holds each tenant exactly once. */
    for (int turn = 0; turn < 20; turn++) {
        int seen[3] = {0};
        for (int k = 0; k < 3; k++)
            seen[pop_done(&q, 2) - 'A']++;
        assert_int_equal(seen[0], 1);
        assert_int_equal(seen[1], 1);
        assert_int_equal(seen[2], 1);
    }
    assert_int_equal(q.queued, 0);
    fairq_destroy(&q);
}

static void items_of_one_tenant_leave_in_push_order(void **state)
{
    (void)state;
    struct fairq q;
    qinit(&q, BIG, BIG, BIG, 1000);
    struct job a[50], b[50];
    for (int i = 0; i < 50; i++) {
        assert_int_equal(push(&q, &a[i], "A", i, 1 + i), FAIRQ_OK);
        assert_int_equal(push(&q, &b[i], "B", i, 1 + i), FAIRQ_OK);
    }
    int next[2] = {0, 0};
    for (int i = 0; i < 100; i++) {
        struct job *j = pop(&q, 100);
        assert_non_null(j);
        int t = j->tenant[0] - 'A';
        assert_int_equal(j->seq, next[t]);
        /* The item carries its tenant and push time. */
        assert_string_equal(j->item.tenant->key, j->tenant);
        assert_int_equal(j->item.enqueued_us, 1 + j->seq);
        next[t]++;
        fairq_done(&q, j->item.tenant, 100);
    }
    assert_int_equal(next[0], 50);
    assert_int_equal(next[1], 50);
    fairq_destroy(&q);
}

static void full_queue_refuses_and_changes_nothing(void **state)
{
    (void)state;
    struct fairq q;
    qinit(&q, 3, BIG, BIG, 1000);
    struct job j[4];
    assert_int_equal(push(&q, &j[0], "A", 0, 1), FAIRQ_OK);
    assert_int_equal(push(&q, &j[1], "B", 0, 1), FAIRQ_OK);
    assert_int_equal(push(&q, &j[2], "A", 1, 1), FAIRQ_OK);
    /* A refused item is not touched and no tenant is created for it. */
    memset(&j[3].item, 0xAB, sizeof(j[3].item));
    struct fairq_item before = j[3].item;
    assert_int_equal(fairq_push(&q, "C", &j[3].item, 2, 0), FAIRQ_FULL);
    assert_int_equal(fairq_push(&q, "A", &j[3].item, 2, 0), FAIRQ_FULL);
    assert_memory_equal(&before, &j[3].item, sizeof(before));
    assert_int_equal(q.queued, 3);
    assert_int_equal(q.ntenants, 2);
    assert_int_equal(q.in_flight, 0);
    /* Serving one item makes room for exactly one more. */
    (void)pop_done(&q, 3);
    assert_int_equal(push(&q, &j[3], "C", 0, 4), FAIRQ_OK);
    assert_int_equal(fairq_push(&q, "D", &j[3].item, 4, 0), FAIRQ_FULL);
    while (q.queued)
        (void)pop_done(&q, 5);
    fairq_destroy(&q);
}

/* Slack (idle workers that take an item at once) lets that many more in past both limits. */
static void slack_admits_items_an_idle_worker_takes_at_once(void **state)
{
    (void)state;
    struct fairq q;
    qinit(&q, 0, 0, BIG, 1000);
    struct job j[3] = {{.tenant = "A"}, {.tenant = "B"}, {.tenant = "C"}};
    assert_int_equal(fairq_push(&q, "A", &j[0].item, 0, 0), FAIRQ_FULL);
    assert_int_equal(fairq_push(&q, "A", &j[0].item, 0, 2), FAIRQ_OK);
    assert_int_equal(fairq_push(&q, "B", &j[1].item, 0, 2), FAIRQ_OK);
    assert_int_equal(fairq_push(&q, "C", &j[2].item, 0, 2), FAIRQ_FULL);
    assert_int_equal(q.queued, 2);
    assert_int_equal(pop_done(&q, 1), 'A');
    assert_int_equal(pop_done(&q, 1), 'B');
    fairq_destroy(&q);

    /* No slack for a tenant at its share while others are active: its item would wait. */
    qinit(&q, 0, 0, 1, 1000);
    struct job k[3] = {{.tenant = "A"}, {.tenant = "B"}, {.tenant = "A"}};
    assert_int_equal(fairq_push(&q, "A", &k[0].item, 0, 2), FAIRQ_OK);
    struct fairq_item *a = fairq_pop(&q, 1); /* A holds one worker: its share */
    assert_non_null(a);
    assert_int_equal(fairq_push(&q, "B", &k[1].item, 1, 1), FAIRQ_OK);
    assert_int_equal(fairq_push(&q, "A", &k[2].item, 1, 1), FAIRQ_FULL);
    assert_int_equal(pop_done(&q, 2), 'B');
    fairq_done(&q, a->tenant, 2);
    fairq_destroy(&q);
}

static void tenant_queue_bound_refuses_only_that_tenant(void **state)
{
    (void)state;
    struct fairq q;
    qinit(&q, BIG, 2, BIG, 1000);
    struct job a[3], b[2];
    assert_int_equal(push(&q, &a[0], "A", 0, 1), FAIRQ_OK);
    assert_int_equal(push(&q, &a[1], "A", 1, 1), FAIRQ_OK);
    memset(&a[2].item, 0xCD, sizeof(a[2].item));
    struct fairq_item before = a[2].item;
    assert_int_equal(fairq_push(&q, "A", &a[2].item, 2, 0), FAIRQ_TENANT_FULL);
    assert_memory_equal(&before, &a[2].item, sizeof(before));
    assert_int_equal(q.queued, 2);
    /* Another tenant is not affected by A's bound. */
    assert_int_equal(push(&q, &b[0], "B", 0, 2), FAIRQ_OK);
    assert_int_equal(push(&q, &b[1], "B", 1, 2), FAIRQ_OK);
    assert_int_equal(q.queued, 4);
    /* The bound counts queued items, not in-flight ones: one pop of A frees one place. */
    struct job *first = pop(&q, 3);
    assert_non_null(first);
    assert_string_equal(first->tenant, "A");
    assert_int_equal(push(&q, &a[2], "A", 2, 3), FAIRQ_OK);
    fairq_done(&q, first->item.tenant, 3);
    while (q.queued)
        (void)pop_done(&q, 4);
    fairq_destroy(&q);
}

static void share_cap_binds_only_while_others_are_active(void **state)
{
    (void)state;
    struct fairq q;
    qinit(&q, BIG, BIG, 2, 1000);
    struct job a[5], b;

    /* Alone, A may have every item in flight, past its share of 2. */
    for (int i = 0; i < 5; i++)
        assert_int_equal(push(&q, &a[i], "A", i, 1), FAIRQ_OK);
    struct job *running[5];
    for (int i = 0; i < 5; i++) {
        running[i] = pop(&q, 2);
        assert_non_null(running[i]);
    }
    assert_int_equal(q.in_flight, 5);
    for (int i = 0; i < 5; i++)
        fairq_done(&q, running[i]->item.tenant, 3);

    /* With B active, A gets at most 2 in flight; the rest waits although it is queued. */
    assert_int_equal(push(&q, &b, "B", 0, 4), FAIRQ_OK);
    for (int i = 0; i < 5; i++)
        assert_int_equal(push(&q, &a[i], "A", i, 4), FAIRQ_OK);
    struct job *x = pop(&q, 5), *y = pop(&q, 5), *z = pop(&q, 5);
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
    struct job *done_a = x->tenant[0] == 'A' ? x : y;
    fairq_done(&q, done_a->item.tenant, 7);
    assert_non_null(pop(&q, 7));
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
    struct fairq_limits l = {.queue_max = BIG,
                             .tenant_queue_max = BIG,
                             .slots = {.size = 4, .cap = 2, .reserve = 1},
                             .linger_us = linger};
    struct fairq q;
    fairq_init(&q, &l);
    struct job a[6], b;
    for (int i = 0; i < 6; i++)
        assert_int_equal(push(&q, &a[i], "A", i, 1), FAIRQ_OK);
    struct job *ra[6];
    int na = 0;
    /* Alone, A runs on 3 of the 4 workers, not 4. */
    while ((ra[na] = pop(&q, 1)))
        na++;
    assert_int_equal(na, 3);
    assert_int_equal(q.in_flight, 3);

    /* B arrives after A's queued items and gets the fourth worker at once. */
    assert_int_equal(push(&q, &b, "B", 0, 2), FAIRQ_OK);
    struct job *rb = pop(&q, 2);
    assert_non_null(rb);
    assert_string_equal(rb->tenant, "B");
    assert_null(fairq_pop(&q, 2)); /* every worker busy */

    /* B active: A, above its share of 2, does not take back a worker its own item frees. */
    fairq_done(&q, ra[--na]->item.tenant, 3);
    assert_null(fairq_pop(&q, 3));
    fairq_done(&q, ra[--na]->item.tenant, 4);
    ra[na] = pop(&q, 4); /* A at 1: below its share again */
    assert_non_null(ra[na]);
    na++;
    assert_null(fairq_pop(&q, 4));

    /* B finishes and lingers: A stays at its share. At the end of the linger B is forgotten
     * and A takes every worker but the reserve. */
    fairq_done(&q, rb->item.tenant, 5);
    assert_null(fairq_pop(&q, 5 + linger - 1));
    assert_int_equal(fairq_sweep(&q, 5 + linger - 1), 0);
    assert_int_equal(fairq_sweep(&q, 5 + linger), 1);
    ra[na] = pop(&q, 5 + linger);
    assert_non_null(ra[na]);
    na++;
    assert_null(fairq_pop(&q, 5 + linger)); /* 3 of 4: the reserve stays free */
    assert_int_equal(q.in_flight, 3);

    /* Nothing is lost: the rest of A's items run as workers free up. */
    int served = 0;
    while (na > 0) {
        fairq_done(&q, ra[--na]->item.tenant, 2000);
        struct job *n = pop(&q, 2000);
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
static struct fairq_tenant *cycle_brief(struct fairq *q, const char *key, struct job *w,
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
    struct fairq_limits l = {.queue_max = BIG,
                             .tenant_queue_max = BIG,
                             .slots = {.size = 6, .cap = 2, .reserve = 1},
                             .linger_us = 1000,
                             .brief_us = 5000};
    struct fairq q;
    fairq_init(&q, &l);
    struct job a[4], b, b2, c, w[FAIRQ_BRIEF_SAMPLES + 1];
    struct job warm[FAIRQ_BRIEF_SAMPLES];
    for (int i = 0; i < FAIRQ_BRIEF_SAMPLES; i++) {
        assert_true(fairq_take(&q, "A", &warm[i].item, 1));
        assert_false(fairq_tenant_brief(warm[i].item.tenant, 1)); /* not before enough samples */
        fairq_record_hold(&q, warm[i].item.tenant, 100);
        fairq_done(&q, warm[i].item.tenant, 1);
    }
    struct fairq_tenant *ta = cycle_brief(&q, "A", w, 1);

    assert_int_equal(push(&q, &b, "B", 0, 2), FAIRQ_OK);
    assert_ptr_equal(pop(&q, 2), &b);
    for (int i = 0; i < 4; i++)
        assert_int_equal(push(&q, &a[i], "A", i, 2), FAIRQ_OK);
    /* B active, A's share 2: brief A runs on 3 workers, not 4, though 3 are free. */
    assert_ptr_equal(pop(&q, 3), &a[0]);
    assert_ptr_equal(pop(&q, 3), &a[1]);
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
    struct fairq_limits l = {.queue_max = BIG,
                             .tenant_queue_max = BIG,
                             .slots = {.size = 10, .cap = 5, .reserve = 1},
                             .linger_us = 1000,
                             .brief_us = 5000};
    struct fairq q;
    fairq_init(&q, &l);
    struct job w[FAIRQ_BRIEF_SAMPLES + 1], burst[10], n;
    struct fairq_tenant *ta = cycle_brief(&q, "A", w, 10);
    for (int i = 0; i < 10; i++)
        assert_int_equal(push(&q, &burst[i], "A", i, 11), FAIRQ_OK);
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
    struct fairq_limits l = {.queue_max = BIG,
                             .tenant_queue_max = BIG,
                             .slots = {.size = 8, .cap = 2, .reserve = 1},
                             .linger_us = 1000000,
                             .brief_us = 5000};
    struct fairq q;
    fairq_init(&q, &l);
    struct job warm[FAIRQ_BRIEF_SAMPLES], b, a[4];
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
    struct fairq_limits l = {.queue_max = BIG,
                             .tenant_queue_max = BIG,
                             .slots = {.size = 4, .cap = 4},
                             .linger_us = 1000,
                             .brief_us = 5000};
    struct fairq q;
    fairq_init(&q, &l);
    struct job w[FAIRQ_BRIEF_SAMPLES + 1];
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

static void idle_tenant_lingers_then_sweep_lifts_the_cap(void **state)
{
    (void)state;
    const int64_t linger = 1000;
    struct fairq q;
    qinit(&q, BIG, BIG, 1, linger);
    struct job b, a[3];
    /* B runs one item and finishes at t=100. */
    assert_int_equal(push(&q, &b, "B", 0, 100), FAIRQ_OK);
    (void)pop_done(&q, 100);
    for (int i = 0; i < 3; i++)
        assert_int_equal(push(&q, &a[i], "A", i, 100), FAIRQ_OK);
    assert_non_null(pop(&q, 100));
    /* B is idle but within its linger: A stays at its share of 1. */
    assert_null(fairq_pop(&q, 200));
    assert_int_equal(fairq_sweep(&q, 100 + linger - 1), 0);
    assert_int_equal(q.ntenants, 2);
    assert_null(fairq_pop(&q, 100 + linger - 1));
    /* At exactly linger after its last activity B is forgotten; A (busy) is kept. */
    assert_int_equal(fairq_sweep(&q, 100 + linger), 1);
    assert_int_equal(q.ntenants, 1);
    assert_false(fairq_others_active(&q, a[0].item.tenant));
    assert_non_null(pop(&q, 100 + linger));
    assert_non_null(pop(&q, 100 + linger));
    assert_int_equal(a[0].item.tenant->in_flight, 3);
    while (q.in_flight)
        fairq_done(&q, a[0].item.tenant, 2000);
    fairq_destroy(&q);
}

static void sweep_frees_only_tenants_idle_for_linger(void **state)
{
    (void)state;
    const int64_t linger = 500;
    struct fairq q;
    qinit(&q, BIG, BIG, BIG, linger);
    struct job queued, flying, idle_old, idle_new;
    assert_int_equal(push(&q, &queued, "queued", 0, 10), FAIRQ_OK);
    assert_int_equal(push(&q, &flying, "flying", 0, 10), FAIRQ_OK);
    assert_int_equal(push(&q, &idle_old, "idle-old", 0, 10), FAIRQ_OK);
    assert_int_equal(push(&q, &idle_new, "idle-new", 0, 10), FAIRQ_OK);
    /* Pop all four; "queued" gets its item back in the queue afterwards. */
    struct fairq_tenant *flying_t = NULL;
    for (int i = 0; i < 4; i++) {
        struct job *j = pop(&q, 20);
        assert_non_null(j);
        struct fairq_tenant *t = j->item.tenant;
        if (!strcmp(t->key, "idle-new"))
            fairq_done(&q, t, 400);
        else if (!strcmp(t->key, "flying"))
            flying_t = t; /* stays in flight */
        else
            fairq_done(&q, t, 20);
    }
    assert_non_null(flying_t);
    assert_int_equal(push(&q, &queued, "queued", 1, 30), FAIRQ_OK);
    assert_int_equal(q.ntenants, 4);

    /* Long after linger: only tenants with nothing queued or in flight go, each when its own
     * linger has passed. */
    assert_int_equal(fairq_sweep(&q, 20 + linger - 1), 0);
    assert_int_equal(fairq_sweep(&q, 20 + linger), 1); /* idle-old */
    assert_int_equal(fairq_sweep(&q, 400 + linger - 1), 0);
    assert_int_equal(fairq_sweep(&q, 400 + linger), 1); /* idle-new */
    assert_int_equal(fairq_sweep(&q, 1000000), 0);      /* "queued" and "flying" are busy */
    assert_int_equal(q.ntenants, 2);

    /* A swept tenant that comes back is a fresh one and is served. */
    assert_int_equal(push(&q, &idle_old, "idle-old", 0, 1000001), FAIRQ_OK);
    assert_int_equal(q.ntenants, 3);
    fairq_drain(&q);
    fairq_done(&q, flying_t, 1000002);
    assert_int_equal(fairq_sweep(&q, 1000002 + linger), 3);
    assert_int_equal(q.ntenants, 0);
    fairq_destroy(&q);
}

static void expire_takes_exactly_items_older_than_cutoff(void **state)
{
    (void)state;
    struct fairq q;
    qinit(&q, BIG, BIG, BIG, 1000);
    struct job a[3], b[2], c[1];
    /* A at 10, 20, 30; B at 15, 25; C at 5 (all of C will expire). */
    assert_int_equal(push(&q, &c[0], "C", 0, 5), FAIRQ_OK);
    assert_int_equal(push(&q, &a[0], "A", 0, 10), FAIRQ_OK);
    assert_int_equal(push(&q, &b[0], "B", 0, 15), FAIRQ_OK);
    assert_int_equal(push(&q, &a[1], "A", 1, 20), FAIRQ_OK);
    assert_int_equal(push(&q, &b[1], "B", 1, 25), FAIRQ_OK);
    assert_int_equal(push(&q, &a[2], "A", 2, 30), FAIRQ_OK);

    /* Nothing is older than the oldest item. */
    assert_null(fairq_expire(&q, 5));
    assert_int_equal(q.queued, 6);

    /* Cutoff 20: the items pushed at 5, 10 and 15 go; the one pushed exactly at 20 stays. */
    struct fairq_item *gone = fairq_expire(&q, 20);
    assert_int_equal(list_len(gone), 3);
    bool seen_c0 = false, seen_a0 = false, seen_b0 = false;
    for (struct fairq_item *it = gone; it; it = it->next) {
        assert_true(it->enqueued_us < 20);
        seen_c0 |= it == &c[0].item;
        seen_a0 |= it == &a[0].item;
        seen_b0 |= it == &b[0].item;
    }
    assert_true(seen_c0 && seen_a0 && seen_b0);
    assert_int_equal(q.queued, 3);
    assert_int_equal(c[0].item.tenant->queued, 0);

    /* What is left is served, fairly and in order: A1, B1, A2 in some round-robin order. */
    int order_a = 1, order_b = 1;
    for (int i = 0; i < 3; i++) {
        struct job *j = pop(&q, 40);
        assert_non_null(j);
        assert_int_not_equal(j->tenant[0], 'C');
        if (j->tenant[0] == 'A')
            assert_int_equal(j->seq, order_a++);
        else
            assert_int_equal(j->seq, order_b++);
        fairq_done(&q, j->item.tenant, 40);
    }
    assert_null(fairq_pop(&q, 40));
    assert_null(fairq_expire(&q, INT64_MAX));
    fairq_destroy(&q);
}

static void drain_returns_every_queued_item_and_keeps_in_flight(void **state)
{
    (void)state;
    struct fairq q;
    qinit(&q, BIG, BIG, BIG, 1000);
    struct job j[10];
    const char *names[3] = {"A", "B", "C"};
    for (int i = 0; i < 10; i++)
        assert_int_equal(push(&q, &j[i], names[i % 3], i, 1), FAIRQ_OK);
    struct job *p1 = pop(&q, 2), *p2 = pop(&q, 2);
    assert_non_null(p1);
    assert_non_null(p2);
    struct fairq_item *all = fairq_drain(&q);
    assert_int_equal(list_len(all), 8);
    for (struct fairq_item *it = all; it; it = it->next)
        assert_true(it != &p1->item && it != &p2->item);
    assert_int_equal(q.queued, 0);
    assert_int_equal(q.in_flight, 2);
    assert_null(fairq_pop(&q, 3));
    assert_null(fairq_drain(&q));
    fairq_done(&q, p1->item.tenant, 3);
    fairq_done(&q, p2->item.tenant, 3);
    assert_int_equal(q.in_flight, 0);
    /* The queue works again after a drain. */
    assert_int_equal(push(&q, &j[0], "A", 0, 4), FAIRQ_OK);
    assert_int_equal(pop_done(&q, 5), 'A');
    fairq_destroy(&q);
}

static void top_lists_busiest_tenants_first_within_bound(void **state)
{
    (void)state;
    struct fairq q;
    qinit(&q, BIG, BIG, BIG, 1000);
    /* Tenant t<k> gets load k (queued, part of it in flight), pushed in a scrambled order. */
    static struct job j[200];
    int used = 0;
    const int order[10] = {3, 9, 1, 7, 5, 10, 2, 8, 4, 6};
    for (int i = 0; i < 10; i++) {
        char name[8];
        snprintf(name, sizeof(name), "t%d", order[i]);
        for (int k = 0; k < order[i]; k++)
            assert_int_equal(push(&q, &j[used++], name, k, 1), FAIRQ_OK);
    }
    /* Put a few in flight: load counts in-flight plus queued, so the order must not change. */
    for (int i = 0; i < 7; i++)
        assert_non_null(pop(&q, 2));
    /* A tenant with no load (idle, not yet swept) is never listed. */
    struct job idle;
    assert_int_equal(push(&q, &idle, "idle", 0, 2), FAIRQ_OK);
    struct job *ij = NULL;
    while (!ij || strcmp(ij->tenant, "idle") != 0) {
        ij = pop(&q, 3);
        assert_non_null(ij);
    }
    fairq_done(&q, ij->item.tenant, 3);
    assert_int_equal(q.ntenants, 11);

    const struct fairq_tenant *top[16];
    assert_int_equal(fairq_top(&q, top, 3), 3);
    assert_string_equal(top[0]->key, "t10");
    assert_string_equal(top[1]->key, "t9");
    assert_string_equal(top[2]->key, "t8");
    assert_int_equal(fairq_top(&q, top, 16), 10);
    for (int i = 0; i < 10; i++) {
        char want[8];
        snprintf(want, sizeof(want), "t%d", 10 - i);
        assert_string_equal(top[i]->key, want);
    }
    assert_int_equal(fairq_top(&q, top, 0), 0);
    assert_int_equal(fairq_top(&q, top, 1), 1);
    assert_string_equal(top[0]->key, "t10");

    fairq_drain(&q);
    struct htable_iter it;
    htable_iter_init(&it, &q.tenants);
    for (struct htable_node *n; (n = htable_iter_next(&it)) != NULL;) {
        struct fairq_tenant *t = container_of(n, struct fairq_tenant, hnode);
        while (t->in_flight)
            fairq_done(&q, t, 4);
    }
    fairq_destroy(&q);
}

static void hash_table_grows_and_keeps_every_tenant(void **state)
{
    (void)state;
    enum { N = 3000 };
    struct fairq q;
    qinit(&q, BIG, BIG, BIG, 1000);
    size_t initial = q.tenants.nbuckets;
    struct job *j = calloc(2 * N, sizeof(*j));
    assert_non_null(j);
    for (int i = 0; i < N; i++) {
        char name[16];
        snprintf(name, sizeof(name), "tenant-%d", i);
        assert_int_equal(push(&q, &j[i], name, 0, 1), FAIRQ_OK);
    }
    assert_int_equal(q.ntenants, N);
    assert_true(q.tenants.nbuckets > initial);
    assert_true(q.tenants.nbuckets >= N);
    /* Each tenant is still found after the rehashes: a second push joins its FIFO. */
    for (int i = 0; i < N; i++) {
        char name[16];
        snprintf(name, sizeof(name), "tenant-%d", i);
        assert_int_equal(push(&q, &j[N + i], name, 1, 2), FAIRQ_OK);
        assert_ptr_equal(j[N + i].item.tenant, j[i].item.tenant);
        assert_int_equal(j[i].item.tenant->queued, 2);
    }
    assert_int_equal(q.ntenants, N);
    /* The first turn serves every tenant's first item once. */
    char *seen = calloc(N, 1);
    assert_non_null(seen);
    for (int i = 0; i < N; i++) {
        struct job *got = pop(&q, 3);
        assert_non_null(got);
        assert_int_equal(got->seq, 0);
        int idx = atoi(got->tenant + strlen("tenant-"));
        assert_int_equal(seen[idx], 0);
        seen[idx] = 1;
        fairq_done(&q, got->item.tenant, 3);
    }
    free(seen);
    fairq_drain(&q);
    assert_int_equal(fairq_sweep(&q, 3 + 1000), N);
    fairq_destroy(&q);
    free(j);
}

static void long_keys_are_one_tenant(void **state)
{
    (void)state;
    struct fairq q;
    qinit(&q, BIG, 2, BIG, 1000);
    char key[FAIRQ_KEY_MAX + 40];
    memset(key, 'k', sizeof(key) - 1);
    key[sizeof(key) - 1] = '\0';
    struct job j[3];
    /* Keys past FAIRQ_KEY_MAX are cut to it; the same long key is always the same tenant. */
    assert_int_equal(fairq_push(&q, key, &j[0].item, 1, 0), FAIRQ_OK);
    assert_int_equal(fairq_push(&q, key, &j[1].item, 1, 0), FAIRQ_OK);
    assert_int_equal(q.ntenants, 1);
    assert_ptr_equal(j[0].item.tenant, j[1].item.tenant);
    assert_int_equal(strlen(j[0].item.tenant->key), FAIRQ_KEY_MAX);
    /* So its per-tenant bound holds. */
    assert_int_equal(fairq_push(&q, key, &j[2].item, 1, 0), FAIRQ_TENANT_FULL);
    fairq_drain(&q);
    fairq_destroy(&q);
}

static void set_limits_applies_to_new_pushes_only(void **state)
{
    (void)state;
    struct fairq q;
    qinit(&q, BIG, BIG, 0, 1000);
    /* A share of 0 means 1: a tenant always gets at least one worker. */
    assert_int_equal(q.lim.slots.cap, 1);
    struct job j[6];
    for (int i = 0; i < 4; i++)
        assert_int_equal(push(&q, &j[i], i % 2 ? "B" : "A", i, 1), FAIRQ_OK);
    /* Shrink below what is queued: items stay, new pushes are refused. */
    qlimits(&q, 2, 1, 1);
    assert_int_equal(q.queued, 4);
    assert_int_equal(push(&q, &j[4], "C", 0, 2), FAIRQ_FULL);
    int served = 0;
    while (q.queued > 1) {
        (void)pop_done(&q, 3);
        served++;
    }
    assert_int_equal(served, 3);
    /* Now there is room overall, but the per-tenant bound of 1 still holds. */
    assert_int_equal(push(&q, &j[4], "C", 0, 4), FAIRQ_OK);
    assert_int_equal(push(&q, &j[5], "C", 1, 4), FAIRQ_FULL);
    qlimits(&q, BIG, 1, 1);
    assert_int_equal(push(&q, &j[5], "C", 1, 4), FAIRQ_TENANT_FULL);
    fairq_drain(&q);
    fairq_destroy(&q);
}

/* A queue of `size` slots with a share of `cap` while others are active and no reserve. */
static void qinit_slots(struct fairq *q, size_t size, size_t cap, size_t reserve)
{
    struct fairq_limits l = {.queue_max = BIG,
                             .tenant_queue_max = BIG,
                             .slots = {.size = size, .cap = cap, .reserve = reserve},
                             .linger_us = 1000};
    fairq_init(q, &l);
}

/* fairq_take serves at once, counted in flight as fairq_pop counts, and stamps both times. */
static void take_serves_a_tenant_with_nothing_queued_at_once(void **state)
{
    (void)state;
    struct fairq q;
    qinit_slots(&q, 2, 2, 0);
    struct job a, b;
    assert_true(fairq_take(&q, "A", &a.item, 7));
    assert_non_null(a.item.tenant);
    assert_string_equal(a.item.tenant->key, "A");
    assert_int_equal(a.item.enqueued_us, 7);
    assert_int_equal(a.item.begun_us, 7);
    assert_int_equal(a.item.tenant->in_flight, 1);
    assert_int_equal(a.item.tenant->served, 1);
    assert_int_equal(a.item.tenant->queued, 0);
    assert_int_equal(q.in_flight, 1);
    assert_int_equal(q.queued, 0);
    assert_int_equal(q.ntenants, 1);
    /* Nothing was queued: there is nothing to pop, and the tenant is not on the ring. */
    assert_null(fairq_pop(&q, 8));
    assert_null(q.cursor);

    /* The slot it holds is one a queued item cannot get: the second slot goes, then none. */
    assert_int_equal(push(&q, &b, "B", 0, 9), FAIRQ_OK);
    struct job *rb = pop(&q, 10);
    assert_ptr_equal(rb, &b);
    assert_int_equal(q.in_flight, 2);
    /* fairq_done ends a taken item as it ends a popped one. */
    fairq_done(&q, a.item.tenant, 11);
    fairq_done(&q, rb->item.tenant, 11);
    assert_int_equal(q.in_flight, 0);
    assert_int_equal(a.item.tenant->in_flight, 0);
    /* Idle once the linger passed: swept like any tenant. */
    assert_int_equal(fairq_sweep(&q, 11 + 1000), 2);
    fairq_destroy(&q);
}

/* A tenant's own queued items go first: it may not overtake them, another tenant may. */
static void take_refuses_a_tenant_whose_items_wait(void **state)
{
    (void)state;
    struct fairq q;
    qinit_slots(&q, 4, 4, 0);
    struct job a1, a2, b;
    assert_int_equal(push(&q, &a1, "A", 0, 1), FAIRQ_OK);
    memset(&a2.item, 0xAB, sizeof(a2.item));
    struct fairq_item before = a2.item;
    assert_false(fairq_take(&q, "A", &a2.item, 2));
    assert_memory_equal(&before, &a2.item, sizeof(before)); /* refused: untouched */
    assert_int_equal(q.in_flight, 0);
    assert_int_equal(a1.item.tenant->in_flight, 0);
    assert_true(fairq_take(&q, "B", &b.item, 2));
    assert_int_equal(q.in_flight, 1);
    /* A's queued item is still next, and once it left the queue A may take again. */
    assert_ptr_equal(pop(&q, 3), &a1);
    assert_true(fairq_take(&q, "A", &a2.item, 4));
    assert_int_equal(a1.item.tenant->in_flight, 2);
    assert_int_equal(q.in_flight, 3);
    fairq_done(&q, a1.item.tenant, 5);
    fairq_done(&q, a2.item.tenant, 5);
    fairq_done(&q, b.item.tenant, 5);
    fairq_destroy(&q);
}

static void take_refuses_when_every_slot_is_in_flight(void **state)
{
    (void)state;
    struct fairq q;
    qinit_slots(&q, 2, 2, 0);
    struct job a, b, c, d;
    assert_true(fairq_take(&q, "A", &a.item, 1));
    assert_int_equal(push(&q, &b, "B", 0, 1), FAIRQ_OK);
    assert_ptr_equal(pop(&q, 2), &b); /* taken and popped items share the slots */
    assert_false(fairq_take(&q, "C", &c.item, 3));
    assert_false(fairq_take(&q, "A", &d.item, 3));
    assert_int_equal(q.in_flight, 2);
    assert_int_equal(q.ntenants, 2); /* a refused newcomer is not remembered */
    /* A slot freed by a popped item is taken as one freed by a taken item. */
    fairq_done(&q, b.item.tenant, 4);
    assert_true(fairq_take(&q, "C", &c.item, 5));
    assert_false(fairq_take(&q, "D", &d.item, 5));
    fairq_done(&q, a.item.tenant, 6);
    assert_true(fairq_take(&q, "D", &d.item, 6));
    assert_int_equal(q.in_flight, 2);
    assert_int_equal(q.ntenants, 4);
    fairq_done(&q, c.item.tenant, 7);
    fairq_done(&q, d.item.tenant, 7);
    fairq_destroy(&q);
}

/* share.h's rule, as fairq_take applies it: a tenant alone takes past its share, beside others
 * it stops at its share, a newcomer gets a free slot. */
static void take_holds_a_tenant_to_its_share_while_others_are_active(void **state)
{
    (void)state;
    struct fairq q;
    qinit_slots(&q, 5, 1, 0);
    struct job a[3], b[2], c;
    assert_true(fairq_take(&q, "A", &a[0].item, 1));
    assert_true(fairq_take(&q, "A", &a[1].item, 1)); /* alone: the share does not bind */
    assert_true(fairq_take(&q, "B", &b[0].item, 2)); /* a newcomer */
    struct fairq_tenant *ta = a[0].item.tenant, *tb = b[0].item.tenant;
    assert_true(fairq_others_active(&q, ta));
    assert_false(fairq_take(&q, "A", &a[2].item, 3)); /* 2 held, share 1, B active */
    assert_false(fairq_take(&q, "B", &b[1].item, 3)); /* 1 held = its share, A active */
    assert_int_equal(ta->in_flight, 2);
    assert_int_equal(tb->in_flight, 1);
    assert_int_equal(q.in_flight, 3);
    assert_true(fairq_take(&q, "C", &c.item, 3)); /* two slots are free: a newcomer gets one */
    assert_int_equal(q.in_flight, 4);

    fairq_done(&q, ta, 5);
    fairq_done(&q, ta, 5);
    fairq_done(&q, tb, 5);
    fairq_done(&q, c.item.tenant, 5);
    fairq_destroy(&q);
}

/* The reserve: a tenant holding slots leaves the last `reserve` free ones to tenants holding
 * none, taken or popped alike. */
static void take_leaves_the_reserve_to_a_tenant_holding_none(void **state)
{
    (void)state;
    struct fairq q;
    qinit_slots(&q, 3, 3, 1);
    struct job a[3], b;
    assert_true(fairq_take(&q, "A", &a[0].item, 1));
    assert_true(fairq_take(&q, "A", &a[1].item, 1));
    assert_false(fairq_take(&q, "A", &a[2].item, 1)); /* the last free slot is the reserve */
    assert_true(fairq_take(&q, "B", &b.item, 2));
    assert_int_equal(q.in_flight, 3);
    fairq_done(&q, a[0].item.tenant, 3);
    fairq_done(&q, a[1].item.tenant, 3);
    fairq_done(&q, b.item.tenant, 3);
    fairq_destroy(&q);
}

/* begun_us is when an item was counted in flight: its pop, not its push. */
static void pop_stamps_begun_when_it_serves(void **state)
{
    (void)state;
    struct fairq q;
    qinit(&q, BIG, BIG, BIG, 1000);
    struct job a, b;
    assert_int_equal(push(&q, &a, "A", 0, 5), FAIRQ_OK);
    assert_int_equal(push(&q, &b, "B", 0, 6), FAIRQ_OK);
    struct job *first = pop(&q, 9), *second = pop(&q, 12);
    assert_ptr_equal(first, &a);
    assert_ptr_equal(second, &b);
    assert_int_equal(a.item.enqueued_us, 5);
    assert_int_equal(a.item.begun_us, 9);
    assert_int_equal(b.item.enqueued_us, 6);
    assert_int_equal(b.item.begun_us, 12);
    fairq_done(&q, a.item.tenant, 13);
    fairq_done(&q, b.item.tenant, 13);
    fairq_destroy(&q);
}

/* ---- by cost (limits.by_cost) ---------------------------------------------------------- */

#define SEC 1000000 /* microseconds */

/* A queue by cost (or round-robin) that no share or bound limits, lingering an hour. */
static void qinit_cost(struct fairq *q, bool by_cost)
{
    struct fairq_limits l = {.queue_max = BIG,
                             .tenant_queue_max = BIG,
                             .slots = {.size = BIG, .cap = BIG, .reserve = 0},
                             .linger_us = 3600LL * SEC,
                             .by_cost = by_cost};
    fairq_init(q, &l);
}

/* One item of tenant pushed, popped, its runner charging cost_us, and done, all at now.
 * Returns the tenant (it lingers an hour). */
static struct fairq_tenant *run_one(struct fairq *q, const char *tenant, int64_t cost_us,
                                    int64_t now)
{
    struct job j;
    assert_int_equal(push(q, &j, tenant, 0, now), FAIRQ_OK);
    struct job *got = pop(q, now);
    assert_ptr_equal(got, &j);
    fairq_tenant_charge(j.item.tenant, cost_us);
    fairq_done(q, j.item.tenant, now);
    return j.item.tenant;
}

/* With "heavy" pushed before "light", which one the queue serves first at now. */
static char first_of_heavy_and_light(struct fairq *q, int64_t now)
{
    struct job h, l;
    assert_int_equal(push(q, &h, "heavy", 0, now), FAIRQ_OK);
    assert_int_equal(push(q, &l, "light", 0, now), FAIRQ_OK);
    char first = pop_done(q, now);
    pop_done(q, now);
    return first;
}

static void a_tenant_that_used_more_database_time_waits_behind_one_that_used_less(void **state)
{
    (void)state;
    for (int by_cost = 0; by_cost <= 1; by_cost++) {
        struct fairq q;
        qinit_cost(&q, by_cost);
        run_one(&q, "heavy", 200000, 10);
        run_one(&q, "light", 1000, 10);
        /* heavy is ahead in the ring: round-robin serves it first, the order by cost does
         * not (200 ms of database time against 1 ms). */
        assert_int_equal(first_of_heavy_and_light(&q, 20), by_cost ? 'l' : 'h');
        fairq_destroy(&q);
    }
}

static void a_tenants_cost_halves_every_half_life_and_it_gets_its_turn_back(void **state)
{
    (void)state;
    struct fairq q;
    qinit_cost(&q, true);
    struct fairq_tenant *heavy = run_one(&q, "heavy", 200000, 0);
    run_one(&q, "light", 10000, 0);
    assert_true(fairq_tenant_cost(heavy, 0) == 200000.0);
    assert_true(fairq_tenant_cost(heavy, FAIRQ_COST_HALF_LIFE_US) == 100000.0);
    assert_true(fairq_tenant_cost(heavy, 3 * FAIRQ_COST_HALF_LIFE_US) == 25000.0);
    /* Two half-lives on, heavy's 200 ms count 50 ms, light's 10 ms 2.5: heavy waits. Five
     * half-lives on, heavy's count 6.25 ms: light, charged 10 ms more just now, is behind. */
    assert_int_equal(first_of_heavy_and_light(&q, 2 * FAIRQ_COST_HALF_LIFE_US), 'l');
    run_one(&q, "light", 10000, 5 * FAIRQ_COST_HALF_LIFE_US);
    assert_int_equal(first_of_heavy_and_light(&q, 5 * FAIRQ_COST_HALF_LIFE_US), 'h');
    fairq_destroy(&q);
}

static void
an_item_is_charged_its_tenants_mean_cost_when_popped_and_corrected_when_done(void **state)
{
    (void)state;
    struct fairq q;
    qinit_cost(&q, true);
    run_one(&q, "heavy", 200000, 0);
    struct job a, b;
    assert_int_equal(push(&q, &a, "heavy", 0, 0), FAIRQ_OK);
    assert_int_equal(push(&q, &b, "heavy", 1, 0), FAIRQ_OK);
    struct fairq_tenant *t = a.item.tenant;
    assert_true(fairq_tenant_cost(t, 0) == 200000.0);
    /* Two statements running: charged 200 ms each (the mean) before either ends. */
    assert_ptr_equal(pop(&q, 0), &a);
    assert_ptr_equal(pop(&q, 0), &b);
    assert_true(fairq_tenant_cost(t, 0) == 600000.0);
    /* One ends having cost 300 ms: 100 ms more; the other 100 ms: 100 ms less. What is left
     * is what the three really cost. */
    fairq_tenant_charge(t, 300000);
    fairq_done(&q, t, 0);
    assert_true(fairq_tenant_cost(t, 0) == 700000.0);
    fairq_tenant_charge(t, 100000);
    fairq_done(&q, t, 0);
    assert_true(fairq_tenant_cost(t, 0) == 600000.0);
    assert_int_equal(t->cost_pending_us, 0);
    fairq_destroy(&q);
}

static void tenants_of_equal_cost_are_served_in_turn(void **state)
{
    (void)state;
    struct fairq q;
    qinit_cost(&q, true);
    struct job j[3][10];
    const char *names[3] = {"A", "B", "C"};
    for (int t = 0; t < 3; t++)
        for (int i = 0; i < 10; i++)
            assert_int_equal(push(&q, &j[t][i], names[t], i, 1), FAIRQ_OK);
    /* Nobody reports a cost: every window of three pops holds each tenant once. */
    for (int turn = 0; turn < 10; turn++) {
        int seen[3] = {0};
        for (int k = 0; k < 3; k++)
            seen[pop_done(&q, 2) - 'A']++;
        assert_int_equal(seen[0] + seen[1] + seen[2], 3);
        assert_int_equal(seen[0], 1);
        assert_int_equal(seen[1], 1);
    }
    fairq_destroy(&q);
}

static void the_cheapest_tenant_at_its_share_is_passed_over(void **state)
{
    (void)state;
    struct fairq q;
    qinit_cost(&q, true);
    struct fairq_limits l = q.lim;
    l.slots.cap = 1;
    fairq_set_limits(&q, &l);
    run_one(&q, "heavy", 200000, 0);
    struct job l1, l2, h1;
    assert_int_equal(push(&q, &l1, "light", 0, 1), FAIRQ_OK);
    assert_int_equal(push(&q, &l2, "light", 1, 1), FAIRQ_OK);
    assert_int_equal(push(&q, &h1, "heavy", 0, 1), FAIRQ_OK);
    assert_ptr_equal(pop(&q, 2), &l1);
    /* light holds its one worker: heavy is served although it cost more. */
    assert_ptr_equal(pop(&q, 2), &h1);
    assert_null(pop(&q, 2));
    fairq_done(&q, l1.item.tenant, 3);
    assert_ptr_equal(pop(&q, 3), &l2);
    fairq_done(&q, l2.item.tenant, 4);
    fairq_done(&q, h1.item.tenant, 4);
    fairq_destroy(&q);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(newcomer_is_served_within_one_turn),
        cmocka_unit_test(backlogged_tenants_alternate),
        cmocka_unit_test(items_of_one_tenant_leave_in_push_order),
        cmocka_unit_test(full_queue_refuses_and_changes_nothing),
        cmocka_unit_test(slack_admits_items_an_idle_worker_takes_at_once),
        cmocka_unit_test(tenant_queue_bound_refuses_only_that_tenant),
        cmocka_unit_test(share_cap_binds_only_while_others_are_active),
        cmocka_unit_test(idle_tenant_lingers_then_sweep_lifts_the_cap),
        cmocka_unit_test(a_newcomer_takes_the_worker_a_busy_tenant_must_leave),
        cmocka_unit_test(brief_requests_take_one_worker_past_the_share_until_they_turn_slow),
        cmocka_unit_test(a_brief_tenant_alone_leaves_the_reserve_to_a_newcomer),
        cmocka_unit_test(a_burst_begun_at_once_is_held_to_its_share_until_one_of_it_ends),
        cmocka_unit_test(set_limits_recomputes_the_brief_verdicts),
        cmocka_unit_test(sweep_frees_only_tenants_idle_for_linger),
        cmocka_unit_test(expire_takes_exactly_items_older_than_cutoff),
        cmocka_unit_test(drain_returns_every_queued_item_and_keeps_in_flight),
        cmocka_unit_test(top_lists_busiest_tenants_first_within_bound),
        cmocka_unit_test(hash_table_grows_and_keeps_every_tenant),
        cmocka_unit_test(long_keys_are_one_tenant),
        cmocka_unit_test(set_limits_applies_to_new_pushes_only),
        cmocka_unit_test(take_serves_a_tenant_with_nothing_queued_at_once),
        cmocka_unit_test(take_refuses_a_tenant_whose_items_wait),
        cmocka_unit_test(take_refuses_when_every_slot_is_in_flight),
        cmocka_unit_test(take_holds_a_tenant_to_its_share_while_others_are_active),
        cmocka_unit_test(take_leaves_the_reserve_to_a_tenant_holding_none),
        cmocka_unit_test(pop_stamps_begun_when_it_serves),
        cmocka_unit_test(a_tenant_that_used_more_database_time_waits_behind_one_that_used_less),
        cmocka_unit_test(a_tenants_cost_halves_every_half_life_and_it_gets_its_turn_back),
        cmocka_unit_test(
            an_item_is_charged_its_tenants_mean_cost_when_popped_and_corrected_when_done),
        cmocka_unit_test(tenants_of_equal_cost_are_served_in_turn),
        cmocka_unit_test(the_cheapest_tenant_at_its_share_is_passed_over),
    };
    return cmocka_run_group_tests_name("fairq", tests, NULL, NULL);
}
