/*
 * test_fairq_cost: the tier queue's order by cost (fairq.h), with explicit times: the tenant of
 * least recent database time first, its cost halving every half-life, charged its mean when
 * popped and corrected when done, ties in turn, the share rule still binding. Fixture: fairqfx.
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

/* ---- by cost (limits.by_cost) ---------------------------------------------------------- */

#define SEC 1000000 /* microseconds */

/* A queue by cost (or round-robin) that no share or bound limits, lingering an hour. */
static void qinit_cost(struct fairq *q, bool by_cost)
{
    struct fairq_limits l = {.queue_max = FQFX_BIG,
                             .tenant_queue_max = FQFX_BIG,
                             .slots = {.size = FQFX_BIG, .cap = FQFX_BIG, .reserve = 0},
                             .linger_us = 3600LL * SEC,
                             .by_cost = by_cost};
    fairq_init(q, &l);
}

/* One item of tenant pushed, popped, its runner charging cost_us, and done, all at now.
 * Returns the tenant (it lingers an hour). */
static struct fairq_tenant *run_one(struct fairq *q, const char *tenant, int64_t cost_us,
                                    int64_t now)
{
    struct fqfx_job j;
    assert_int_equal(fqfx_push(q, &j, tenant, 0, now), FAIRQ_OK);
    struct fqfx_job *got = fqfx_pop(q, now);
    assert_ptr_equal(got, &j);
    fairq_tenant_charge(j.item.tenant, cost_us);
    fairq_done(q, j.item.tenant, now);
    return j.item.tenant;
}

/* With "heavy" pushed before "light", which one the queue serves first at now. */
static char first_of_heavy_and_light(struct fairq *q, int64_t now)
{
    struct fqfx_job h, l;
    assert_int_equal(fqfx_push(q, &h, "heavy", 0, now), FAIRQ_OK);
    assert_int_equal(fqfx_push(q, &l, "light", 0, now), FAIRQ_OK);
    char first = fqfx_pop_done(q, now);
    fqfx_pop_done(q, now);
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
    struct fqfx_job a, b;
    assert_int_equal(fqfx_push(&q, &a, "heavy", 0, 0), FAIRQ_OK);
    assert_int_equal(fqfx_push(&q, &b, "heavy", 1, 0), FAIRQ_OK);
    struct fairq_tenant *t = a.item.tenant;
    assert_true(fairq_tenant_cost(t, 0) == 200000.0);
    /* Two statements running: charged 200 ms each (the mean) before either ends. */
    assert_ptr_equal(fqfx_pop(&q, 0), &a);
    assert_ptr_equal(fqfx_pop(&q, 0), &b);
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
    struct fqfx_job j[3][10];
    const char *names[3] = {"A", "B", "C"};
    for (int t = 0; t < 3; t++)
        for (int i = 0; i < 10; i++)
            assert_int_equal(fqfx_push(&q, &j[t][i], names[t], i, 1), FAIRQ_OK);
    /* Nobody reports a cost: every window of three pops holds each tenant once. */
    for (int turn = 0; turn < 10; turn++) {
        int seen[3] = {0};
        for (int k = 0; k < 3; k++)
            seen[fqfx_pop_done(&q, 2) - 'A']++;
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
    struct fqfx_job l1, l2, h1;
    assert_int_equal(fqfx_push(&q, &l1, "light", 0, 1), FAIRQ_OK);
    assert_int_equal(fqfx_push(&q, &l2, "light", 1, 1), FAIRQ_OK);
    assert_int_equal(fqfx_push(&q, &h1, "heavy", 0, 1), FAIRQ_OK);
    assert_ptr_equal(fqfx_pop(&q, 2), &l1);
    /* light holds its one worker: heavy is served although it cost more. */
    assert_ptr_equal(fqfx_pop(&q, 2), &h1);
    assert_null(fqfx_pop(&q, 2));
    fairq_done(&q, l1.item.tenant, 3);
    assert_ptr_equal(fqfx_pop(&q, 3), &l2);
    fairq_done(&q, l2.item.tenant, 4);
    fairq_done(&q, h1.item.tenant, 4);
    fairq_destroy(&q);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(a_tenant_that_used_more_database_time_waits_behind_one_that_used_less),
        cmocka_unit_test(a_tenants_cost_halves_every_half_life_and_it_gets_its_turn_back),
        cmocka_unit_test(
            an_item_is_charged_its_tenants_mean_cost_when_popped_and_corrected_when_done),
        cmocka_unit_test(tenants_of_equal_cost_are_served_in_turn),
        cmocka_unit_test(the_cheapest_tenant_at_its_share_is_passed_over),
    };
    return cmocka_run_group_tests_name("fairq_cost", tests, NULL, NULL);
}
