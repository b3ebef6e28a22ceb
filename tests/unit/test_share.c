/*
 * test_share: the admission rule both pools apply (share.h), as a table of situations.
 *
 * A newcomer (holding nothing) takes any free slot, the reserve included; any other tenant never
 * takes the last `reserve` free slots, alone or not, brief or not, and while others are active
 * it stops at its share, or one slot past it when its requests are brief; nobody takes a slot
 * that is not free. And the
 * policy built from a tier's percentages: the share rounds down but never below 1, the reserve
 * rounds up, is at least 1 when set and always leaves a lone tenant one slot.
 */
#include "share.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

struct situation {
    const char *what;
    size_t size, cap, reserve;
    size_t held, in_use;
    bool others, brief;
    bool may;
};

static const struct situation situations[] = {
    {"a newcomer takes the last free slot, the reserve", 10, 5, 1, 0, 9, true, false, true},
    {"a newcomer takes it when alone too", 10, 5, 1, 0, 9, false, false, true},
    {"a busy tenant alone leaves the reserve free", 10, 5, 1, 9, 9, false, false, false},
    {"a busy tenant alone takes every slot but the reserve", 10, 5, 1, 8, 8, false, false, true},
    {"beside others, a busy tenant stops at its share", 10, 5, 1, 5, 6, true, false, false},
    {"beside others, below its share, it takes a slot", 10, 5, 1, 4, 6, true, false, true},
    {"beside others, below its share, it still leaves the reserve", 10, 5, 1, 4, 9, true, false,
     false},
    {"nobody takes a slot when none is free", 10, 5, 1, 0, 10, true, false, false},
    {"a pool shrunk below what is in use admits nobody", 4, 2, 1, 0, 6, false, false, false},
    {"without a reserve, a tenant alone takes the last slot", 5, 2, 0, 4, 4, false, false, true},
    {"without a reserve, the share still binds beside others", 5, 2, 0, 2, 3, true, false, false},
    {"a share of the whole pool binds nothing beside others", 5, 5, 0, 4, 4, true, false, true},
    {"brief requests never take the reserve, alone", 10, 5, 1, 9, 9, false, true, false},
    {"brief requests never take the reserve, beside others", 10, 5, 1, 5, 9, true, true, false},
    {"brief requests take one slot past the share beside others", 10, 5, 1, 5, 7, true, true, true},
    {"brief requests take no second slot past the share", 10, 5, 1, 6, 7, true, true, false},
    {"brief requests alone take every slot but the reserve", 10, 5, 1, 8, 8, false, true, true},
    {"brief requests take no slot when none is free", 10, 5, 1, 9, 10, true, true, false},
};

static void every_situation_gets_its_verdict(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(situations) / sizeof(situations[0]); i++) {
        const struct situation *s = &situations[i];
        struct share_policy p = {.size = s->size, .cap = s->cap, .reserve = s->reserve};
        if (share_may_take(&p, s->held, s->in_use, s->others, s->brief) != s->may)
            fail_msg("%s: expected %s", s->what, s->may ? "may take" : "may not take");
    }
}

static void a_lone_busy_tenant_fills_all_but_the_reserve(void **state)
{
    (void)state;
    /* Take slots one by one as a lone tenant would: it stops at size - reserve. */
    struct share_policy p = {.size = 10, .cap = 5, .reserve = 2};
    size_t held = 0;
    while (share_may_take(&p, held, held, false, false))
        held++;
    assert_int_equal(held, 8);
    /* Two newcomers still find a slot each; a third does not. */
    assert_true(share_may_take(&p, 0, held, true, false));
    assert_true(share_may_take(&p, 0, held + 1, true, false));
    assert_false(share_may_take(&p, 0, held + 2, true, false));
}

/* However brief a tenant's requests are said to be, a burst of them leaves a newcomer the
 * reserve and, beside others, holds one slot past the share at most. */
static void a_brief_tenant_bursting_leaves_the_reserve_and_one_past_its_share(void **state)
{
    (void)state;
    struct share_policy p = {.size = 10, .cap = 5, .reserve = 1};
    size_t held = 0;
    while (share_may_take(&p, held, held, false, true))
        held++;
    assert_int_equal(held, 9);
    assert_true(share_may_take(&p, 0, held, true, false)); /* the newcomer's */
    held = 0;
    while (share_may_take(&p, held, held + 1, true, true)) /* a neighbour holds one */
        held++;
    assert_int_equal(held, 6);
}

static void policies_from_percentages_round_as_documented(void **state)
{
    (void)state;
    /* free's built-in shape: 10 workers and 5 connections, share 50 %, reserve 10 %. */
    struct share_policy w = share_policy_pct(10, 50, 10), c = share_policy_pct(5, 50, 10);
    assert_int_equal(w.size, 10);
    assert_int_equal(w.cap, 5);
    assert_int_equal(w.reserve, 1);
    assert_int_equal(c.cap, 2);     /* 2.5 rounds down */
    assert_int_equal(c.reserve, 1); /* 0.5 rounds up */
    /* pro: 30 workers, 20 connections: 3 and 2 kept for newcomers. */
    assert_int_equal(share_policy_pct(30, 50, 10).reserve, 3);
    assert_int_equal(share_policy_pct(20, 50, 10).reserve, 2);
    /* No reserve unless asked; never below a share of 1; a one-slot pool keeps no reserve. */
    assert_int_equal(share_policy_pct(60, 100, 0).reserve, 0);
    assert_int_equal(share_policy_pct(60, 100, 0).cap, 60);
    assert_int_equal(share_policy_pct(3, 1, 0).cap, 1);
    assert_int_equal(share_policy_pct(1, 50, 50).reserve, 0);
    assert_int_equal(share_policy_pct(2, 50, 50).reserve, 1);
    /* 1 % of a small pool still reserves one slot; 50 % of any pool leaves half to the busy. */
    assert_int_equal(share_policy_pct(7, 50, 1).reserve, 1);
    assert_int_equal(share_policy_pct(1000, 50, 50).reserve, 500);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(every_situation_gets_its_verdict),
        cmocka_unit_test(a_lone_busy_tenant_fills_all_but_the_reserve),
        cmocka_unit_test(a_brief_tenant_bursting_leaves_the_reserve_and_one_past_its_share),
        cmocka_unit_test(policies_from_percentages_round_as_documented),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
