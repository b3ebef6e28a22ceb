/*
 * test_fairq_take: fairq_take (an item served at once, without queueing, by the same share
 * rule as fairq_pop) and the begun_us stamp of a served item, with explicit times. Fixture:
 * fairqfx.
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

/* A queue of `size` slots with a share of `cap` while others are active and no reserve. */
static void qinit_slots(struct fairq *q, size_t size, size_t cap, size_t reserve)
{
    struct fairq_limits l = {.queue_max = FQFX_BIG,
                             .tenant_queue_max = FQFX_BIG,
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
    struct fqfx_job a, b;
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
    assert_int_equal(fqfx_push(&q, &b, "B", 0, 9), FAIRQ_OK);
    struct fqfx_job *rb = fqfx_pop(&q, 10);
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
    struct fqfx_job a1, a2, b;
    assert_int_equal(fqfx_push(&q, &a1, "A", 0, 1), FAIRQ_OK);
    memset(&a2.item, 0xAB, sizeof(a2.item));
    struct fairq_item before = a2.item;
    assert_false(fairq_take(&q, "A", &a2.item, 2));
    assert_memory_equal(&before, &a2.item, sizeof(before)); /* refused: untouched */
    assert_int_equal(q.in_flight, 0);
    assert_int_equal(a1.item.tenant->in_flight, 0);
    assert_true(fairq_take(&q, "B", &b.item, 2));
    assert_int_equal(q.in_flight, 1);
    /* A's queued item is still next, and once it left the queue A may take again. */
    assert_ptr_equal(fqfx_pop(&q, 3), &a1);
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
    struct fqfx_job a, b, c, d;
    assert_true(fairq_take(&q, "A", &a.item, 1));
    assert_int_equal(fqfx_push(&q, &b, "B", 0, 1), FAIRQ_OK);
    assert_ptr_equal(fqfx_pop(&q, 2), &b); /* taken and popped items share the slots */
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
    struct fqfx_job a[3], b[2], c;
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
    struct fqfx_job a[3], b;
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
    fqfx_qinit(&q, FQFX_BIG, FQFX_BIG, FQFX_BIG, 1000);
    struct fqfx_job a, b;
    assert_int_equal(fqfx_push(&q, &a, "A", 0, 5), FAIRQ_OK);
    assert_int_equal(fqfx_push(&q, &b, "B", 0, 6), FAIRQ_OK);
    struct fqfx_job *first = fqfx_pop(&q, 9), *second = fqfx_pop(&q, 12);
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(take_serves_a_tenant_with_nothing_queued_at_once),
        cmocka_unit_test(take_refuses_a_tenant_whose_items_wait),
        cmocka_unit_test(take_refuses_when_every_slot_is_in_flight),
        cmocka_unit_test(take_holds_a_tenant_to_its_share_while_others_are_active),
        cmocka_unit_test(take_leaves_the_reserve_to_a_tenant_holding_none),
        cmocka_unit_test(pop_stamps_begun_when_it_serves),
    };
    return cmocka_run_group_tests_name("fairq_take", tests, NULL, NULL);
}
