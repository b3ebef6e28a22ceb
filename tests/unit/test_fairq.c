/*
 * test_fairq: the tier queue's order and bounds (fairq.h), driven with explicit times:
 * round-robin across tenants, FIFO inside one, the two queue bounds and the slack an idle worker
 * takes, the linger and the sweep, expiry, drain, the busiest-tenant list, hash-table growth,
 * long keys, limits applied to new pushes. The share cap and the brief verdict are in
 * test_fairq_share, fairq_take and the begun stamp in test_fairq_take, the order by cost in
 * test_fairq_cost (fixture: fairqfx). fairq is single-threaded by contract (the workpool locks
 * around it), so these tests need no threads.
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
    fqfx_qinit(&q, FQFX_BIG, FQFX_BIG, FQFX_BIG, 1000);
    static struct fqfx_job a[500];
    struct fqfx_job b, c;
    for (int i = 0; i < 500; i++)
        assert_int_equal(fqfx_push(&q, &a[i], "A", i, 1), FAIRQ_OK);
    /* A is served alone for a while, then B and C arrive with one item each. */
    for (int i = 0; i < 10; i++)
        assert_int_equal(fqfx_pop_done(&q, 2), 'A');
    assert_int_equal(fqfx_push(&q, &b, "B", 0, 3), FAIRQ_OK);
    assert_int_equal(fqfx_push(&q, &c, "C", 0, 3), FAIRQ_OK);
    /* One turn serves each of the three tenants once: B and C within the next three pops. */
    char got[3];
    for (int i = 0; i < 3; i++)
        got[i] = fqfx_pop_done(&q, 4);
    assert_non_null(memchr(got, 'A', 3));
    assert_non_null(memchr(got, 'B', 3));
    assert_non_null(memchr(got, 'C', 3));
    /* Then only A is left. */
    while (q.queued)
        assert_int_equal(fqfx_pop_done(&q, 5), 'A');
    assert_null(fairq_pop(&q, 6));
    fairq_destroy(&q);
}

static void backlogged_tenants_alternate(void **state)
{
    (void)state;
    struct fairq q;
    fqfx_qinit(&q, FQFX_BIG, FQFX_BIG, FQFX_BIG, 1000);
    struct fqfx_job j[3][20];
    const char *names[3] = {"A", "B", "C"};
    for (int t = 0; t < 3; t++)
        for (int i = 0; i < 20; i++)
            assert_int_equal(fqfx_push(&q, &j[t][i], names[t], i, 1), FAIRQ_OK);
    /* Every window of three consecutive pops holds each tenant exactly once. */
    for (int turn = 0; turn < 20; turn++) {
        int seen[3] = {0};
        for (int k = 0; k < 3; k++)
            seen[fqfx_pop_done(&q, 2) - 'A']++;
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
    fqfx_qinit(&q, FQFX_BIG, FQFX_BIG, FQFX_BIG, 1000);
    struct fqfx_job a[50], b[50];
    for (int i = 0; i < 50; i++) {
        assert_int_equal(fqfx_push(&q, &a[i], "A", i, 1 + i), FAIRQ_OK);
        assert_int_equal(fqfx_push(&q, &b[i], "B", i, 1 + i), FAIRQ_OK);
    }
    int next[2] = {0, 0};
    for (int i = 0; i < 100; i++) {
        struct fqfx_job *j = fqfx_pop(&q, 100);
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
    fqfx_qinit(&q, 3, FQFX_BIG, FQFX_BIG, 1000);
    struct fqfx_job j[4];
    assert_int_equal(fqfx_push(&q, &j[0], "A", 0, 1), FAIRQ_OK);
    assert_int_equal(fqfx_push(&q, &j[1], "B", 0, 1), FAIRQ_OK);
    assert_int_equal(fqfx_push(&q, &j[2], "A", 1, 1), FAIRQ_OK);
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
    (void)fqfx_pop_done(&q, 3);
    assert_int_equal(fqfx_push(&q, &j[3], "C", 0, 4), FAIRQ_OK);
    assert_int_equal(fairq_push(&q, "D", &j[3].item, 4, 0), FAIRQ_FULL);
    while (q.queued)
        (void)fqfx_pop_done(&q, 5);
    fairq_destroy(&q);
}

/* Slack (idle workers that take an item at once) lets that many more in past both limits. */
static void slack_admits_items_an_idle_worker_takes_at_once(void **state)
{
    (void)state;
    struct fairq q;
    fqfx_qinit(&q, 0, 0, FQFX_BIG, 1000);
    struct fqfx_job j[3] = {{.tenant = "A"}, {.tenant = "B"}, {.tenant = "C"}};
    assert_int_equal(fairq_push(&q, "A", &j[0].item, 0, 0), FAIRQ_FULL);
    assert_int_equal(fairq_push(&q, "A", &j[0].item, 0, 2), FAIRQ_OK);
    assert_int_equal(fairq_push(&q, "B", &j[1].item, 0, 2), FAIRQ_OK);
    assert_int_equal(fairq_push(&q, "C", &j[2].item, 0, 2), FAIRQ_FULL);
    assert_int_equal(q.queued, 2);
    assert_int_equal(fqfx_pop_done(&q, 1), 'A');
    assert_int_equal(fqfx_pop_done(&q, 1), 'B');
    fairq_destroy(&q);

    /* No slack for a tenant at its share while others are active: its item would wait. */
    fqfx_qinit(&q, 0, 0, 1, 1000);
    struct fqfx_job k[3] = {{.tenant = "A"}, {.tenant = "B"}, {.tenant = "A"}};
    assert_int_equal(fairq_push(&q, "A", &k[0].item, 0, 2), FAIRQ_OK);
    struct fairq_item *a = fairq_pop(&q, 1); /* A holds one worker: its share */
    assert_non_null(a);
    assert_int_equal(fairq_push(&q, "B", &k[1].item, 1, 1), FAIRQ_OK);
    assert_int_equal(fairq_push(&q, "A", &k[2].item, 1, 1), FAIRQ_FULL);
    assert_int_equal(fqfx_pop_done(&q, 2), 'B');
    fairq_done(&q, a->tenant, 2);
    fairq_destroy(&q);
}

static void tenant_queue_bound_refuses_only_that_tenant(void **state)
{
    (void)state;
    struct fairq q;
    fqfx_qinit(&q, FQFX_BIG, 2, FQFX_BIG, 1000);
    struct fqfx_job a[3], b[2];
    assert_int_equal(fqfx_push(&q, &a[0], "A", 0, 1), FAIRQ_OK);
    assert_int_equal(fqfx_push(&q, &a[1], "A", 1, 1), FAIRQ_OK);
    memset(&a[2].item, 0xCD, sizeof(a[2].item));
    struct fairq_item before = a[2].item;
    assert_int_equal(fairq_push(&q, "A", &a[2].item, 2, 0), FAIRQ_TENANT_FULL);
    assert_memory_equal(&before, &a[2].item, sizeof(before));
    assert_int_equal(q.queued, 2);
    /* Another tenant is not affected by A's bound. */
    assert_int_equal(fqfx_push(&q, &b[0], "B", 0, 2), FAIRQ_OK);
    assert_int_equal(fqfx_push(&q, &b[1], "B", 1, 2), FAIRQ_OK);
    assert_int_equal(q.queued, 4);
    /* The bound counts queued items, not in-flight ones: one pop of A frees one place. */
    struct fqfx_job *first = fqfx_pop(&q, 3);
    assert_non_null(first);
    assert_string_equal(first->tenant, "A");
    assert_int_equal(fqfx_push(&q, &a[2], "A", 2, 3), FAIRQ_OK);
    fairq_done(&q, first->item.tenant, 3);
    while (q.queued)
        (void)fqfx_pop_done(&q, 4);
    fairq_destroy(&q);
}

static void idle_tenant_lingers_then_sweep_lifts_the_cap(void **state)
{
    (void)state;
    const int64_t linger = 1000;
    struct fairq q;
    fqfx_qinit(&q, FQFX_BIG, FQFX_BIG, 1, linger);
    struct fqfx_job b, a[3];
    /* B runs one item and finishes at t=100. */
    assert_int_equal(fqfx_push(&q, &b, "B", 0, 100), FAIRQ_OK);
    (void)fqfx_pop_done(&q, 100);
    for (int i = 0; i < 3; i++)
        assert_int_equal(fqfx_push(&q, &a[i], "A", i, 100), FAIRQ_OK);
    assert_non_null(fqfx_pop(&q, 100));
    /* B is idle but within its linger: A stays at its share of 1. */
    assert_null(fairq_pop(&q, 200));
    assert_int_equal(fairq_sweep(&q, 100 + linger - 1), 0);
    assert_int_equal(q.ntenants, 2);
    assert_null(fairq_pop(&q, 100 + linger - 1));
    /* At exactly linger after its last activity B is forgotten; A (busy) is kept. */
    assert_int_equal(fairq_sweep(&q, 100 + linger), 1);
    assert_int_equal(q.ntenants, 1);
    assert_false(fairq_others_active(&q, a[0].item.tenant));
    assert_non_null(fqfx_pop(&q, 100 + linger));
    assert_non_null(fqfx_pop(&q, 100 + linger));
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
    fqfx_qinit(&q, FQFX_BIG, FQFX_BIG, FQFX_BIG, linger);
    struct fqfx_job queued, flying, idle_old, idle_new;
    assert_int_equal(fqfx_push(&q, &queued, "queued", 0, 10), FAIRQ_OK);
    assert_int_equal(fqfx_push(&q, &flying, "flying", 0, 10), FAIRQ_OK);
    assert_int_equal(fqfx_push(&q, &idle_old, "idle-old", 0, 10), FAIRQ_OK);
    assert_int_equal(fqfx_push(&q, &idle_new, "idle-new", 0, 10), FAIRQ_OK);
    /* Pop all four; "queued" gets its item back in the queue afterwards. */
    struct fairq_tenant *flying_t = NULL;
    for (int i = 0; i < 4; i++) {
        struct fqfx_job *j = fqfx_pop(&q, 20);
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
    assert_int_equal(fqfx_push(&q, &queued, "queued", 1, 30), FAIRQ_OK);
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
    assert_int_equal(fqfx_push(&q, &idle_old, "idle-old", 0, 1000001), FAIRQ_OK);
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
    fqfx_qinit(&q, FQFX_BIG, FQFX_BIG, FQFX_BIG, 1000);
    struct fqfx_job a[3], b[2], c[1];
    /* A at 10, 20, 30; B at 15, 25; C at 5 (all of C will expire). */
    assert_int_equal(fqfx_push(&q, &c[0], "C", 0, 5), FAIRQ_OK);
    assert_int_equal(fqfx_push(&q, &a[0], "A", 0, 10), FAIRQ_OK);
    assert_int_equal(fqfx_push(&q, &b[0], "B", 0, 15), FAIRQ_OK);
    assert_int_equal(fqfx_push(&q, &a[1], "A", 1, 20), FAIRQ_OK);
    assert_int_equal(fqfx_push(&q, &b[1], "B", 1, 25), FAIRQ_OK);
    assert_int_equal(fqfx_push(&q, &a[2], "A", 2, 30), FAIRQ_OK);

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
        struct fqfx_job *j = fqfx_pop(&q, 40);
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
    fqfx_qinit(&q, FQFX_BIG, FQFX_BIG, FQFX_BIG, 1000);
    struct fqfx_job j[10];
    const char *names[3] = {"A", "B", "C"};
    for (int i = 0; i < 10; i++)
        assert_int_equal(fqfx_push(&q, &j[i], names[i % 3], i, 1), FAIRQ_OK);
    struct fqfx_job *p1 = fqfx_pop(&q, 2), *p2 = fqfx_pop(&q, 2);
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
    assert_int_equal(fqfx_push(&q, &j[0], "A", 0, 4), FAIRQ_OK);
    assert_int_equal(fqfx_pop_done(&q, 5), 'A');
    fairq_destroy(&q);
}

static void top_lists_busiest_tenants_first_within_bound(void **state)
{
    (void)state;
    struct fairq q;
    fqfx_qinit(&q, FQFX_BIG, FQFX_BIG, FQFX_BIG, 1000);
    /* Tenant t<k> gets load k (queued, part of it in flight), pushed in a scrambled order. */
    static struct fqfx_job j[200];
    int used = 0;
    const int order[10] = {3, 9, 1, 7, 5, 10, 2, 8, 4, 6};
    for (int i = 0; i < 10; i++) {
        char name[8];
        snprintf(name, sizeof(name), "t%d", order[i]);
        for (int k = 0; k < order[i]; k++)
            assert_int_equal(fqfx_push(&q, &j[used++], name, k, 1), FAIRQ_OK);
    }
    /* Put a few in flight: load counts in-flight plus queued, so the order must not change. */
    for (int i = 0; i < 7; i++)
        assert_non_null(fqfx_pop(&q, 2));
    /* A tenant with no load (idle, not yet swept) is never listed. */
    struct fqfx_job idle;
    assert_int_equal(fqfx_push(&q, &idle, "idle", 0, 2), FAIRQ_OK);
    struct fqfx_job *ij = NULL;
    while (!ij || strcmp(ij->tenant, "idle") != 0) {
        ij = fqfx_pop(&q, 3);
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
    fqfx_qinit(&q, FQFX_BIG, FQFX_BIG, FQFX_BIG, 1000);
    size_t initial = q.tenants.nbuckets;
    struct fqfx_job *j = calloc(2 * N, sizeof(*j));
    assert_non_null(j);
    for (int i = 0; i < N; i++) {
        char name[16];
        snprintf(name, sizeof(name), "tenant-%d", i);
        assert_int_equal(fqfx_push(&q, &j[i], name, 0, 1), FAIRQ_OK);
    }
    assert_int_equal(q.ntenants, N);
    assert_true(q.tenants.nbuckets > initial);
    assert_true(q.tenants.nbuckets >= N);
    /* Each tenant is still found after the rehashes: a second push joins its FIFO. */
    for (int i = 0; i < N; i++) {
        char name[16];
        snprintf(name, sizeof(name), "tenant-%d", i);
        assert_int_equal(fqfx_push(&q, &j[N + i], name, 1, 2), FAIRQ_OK);
        assert_ptr_equal(j[N + i].item.tenant, j[i].item.tenant);
        assert_int_equal(j[i].item.tenant->queued, 2);
    }
    assert_int_equal(q.ntenants, N);
    /* The first turn serves every tenant's first item once. */
    char *seen = calloc(N, 1);
    assert_non_null(seen);
    for (int i = 0; i < N; i++) {
        struct fqfx_job *got = fqfx_pop(&q, 3);
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
    fqfx_qinit(&q, FQFX_BIG, 2, FQFX_BIG, 1000);
    char key[FAIRQ_KEY_MAX + 40];
    memset(key, 'k', sizeof(key) - 1);
    key[sizeof(key) - 1] = '\0';
    struct fqfx_job j[3];
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
    fqfx_qinit(&q, FQFX_BIG, FQFX_BIG, 0, 1000);
    /* A share of 0 means 1: a tenant always gets at least one worker. */
    assert_int_equal(q.lim.slots.cap, 1);
    struct fqfx_job j[6];
    for (int i = 0; i < 4; i++)
        assert_int_equal(fqfx_push(&q, &j[i], i % 2 ? "B" : "A", i, 1), FAIRQ_OK);
    /* Shrink below what is queued: items stay, new pushes are refused. */
    qlimits(&q, 2, 1, 1);
    assert_int_equal(q.queued, 4);
    assert_int_equal(fqfx_push(&q, &j[4], "C", 0, 2), FAIRQ_FULL);
    int served = 0;
    while (q.queued > 1) {
        (void)fqfx_pop_done(&q, 3);
        served++;
    }
    assert_int_equal(served, 3);
    /* Now there is room overall, but the per-tenant bound of 1 still holds. */
    assert_int_equal(fqfx_push(&q, &j[4], "C", 0, 4), FAIRQ_OK);
    assert_int_equal(fqfx_push(&q, &j[5], "C", 1, 4), FAIRQ_FULL);
    qlimits(&q, FQFX_BIG, 1, 1);
    assert_int_equal(fqfx_push(&q, &j[5], "C", 1, 4), FAIRQ_TENANT_FULL);
    fairq_drain(&q);
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
        cmocka_unit_test(idle_tenant_lingers_then_sweep_lifts_the_cap),
        cmocka_unit_test(sweep_frees_only_tenants_idle_for_linger),
        cmocka_unit_test(expire_takes_exactly_items_older_than_cutoff),
        cmocka_unit_test(drain_returns_every_queued_item_and_keeps_in_flight),
        cmocka_unit_test(top_lists_busiest_tenants_first_within_bound),
        cmocka_unit_test(hash_table_grows_and_keeps_every_tenant),
        cmocka_unit_test(long_keys_are_one_tenant),
        cmocka_unit_test(set_limits_applies_to_new_pushes_only),
    };
    return cmocka_run_group_tests_name("fairq", tests, NULL, NULL);
}
