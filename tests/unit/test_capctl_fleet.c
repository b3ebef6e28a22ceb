/*
 * test_capctl_fleet: the capacity controller's verdicts with other instances' reports
 * (capctl.h), on an injected clock: enterprise active on another instance gates free here, a
 * remote threat cuts free here once per exchange, a lower tier pressing elsewhere makes the
 * latencies here not clear. Fixture: capctlfx.
 */
#include "capctlfx.h"
#include "capctl.h"

#include <pthread.h>
#include <setjmp.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

/* ---- the fleet (capctl_remote) ------------------------------------------------------------ */

static void remote(struct ccfx_sim *s, size_t i, bool active, bool threatened, bool fresh)
{
    const struct capctl_remote r = {
        .active = active, .threatened = threatened, .fresh = fresh, .pressure = 4};
    capctl_remote(s->c, i, &r);
}

static void enterprise_active_on_another_instance_gates_free_here(void **state)
{
    (void)state;
    struct ccfx_sim s;
    ccfx_sim_init(&s, ccfx_tiers);
    ccfx_sim_run(&s, 20, (struct ccfx_flow[]){CCFX_FREE_STORM, CCFX_QUIET, CCFX_QUIET});
    assert_false(ccfx_stats(&s, CCFX_FREE).gated); /* alone here: work-conserving */
    remote(&s, CCFX_ENT, true, false, true);
    ccfx_sim_run(&s, 20, (struct ccfx_flow[]){CCFX_FREE_STORM, CCFX_QUIET, CCFX_QUIET});
    assert_true(ccfx_stats(&s, CCFX_FREE).gated);
    assert_true(ccfx_stats(&s, CCFX_ENT).remote_active);
    /* active but content elsewhere: gated, never cut */
    assert_true(ccfx_limit_of(&s, CCFX_FREE) == 5);
    assert_int_equal(s.shed[CCFX_FREE], 0);
    capctl_remote(s.c, CCFX_ENT, NULL); /* the view lost: local control, free is not gated */
    ccfx_sim_run(&s, 1, (struct ccfx_flow[]){CCFX_FREE_STORM, CCFX_QUIET, CCFX_QUIET});
    assert_false(ccfx_stats(&s, CCFX_FREE).gated);
    assert_false(ccfx_stats(&s, CCFX_ENT).remote_active);
    capctl_destroy(s.c);
}

static void a_remote_threat_cuts_free_here_once_per_exchange(void **state)
{
    (void)state;
    struct ccfx_sim s;
    ccfx_sim_init(&s, ccfx_tiers);
    ccfx_sim_run(&s, 20, (struct ccfx_flow[]){CCFX_FREE_STORM, CCFX_QUIET, CCFX_QUIET});
    assert_true(ccfx_stats(&s, CCFX_FREE).pressing);
    /* One exchange says enterprise threatens its objective elsewhere (pressure 4): free is cut
     * by the deepest step, 0.5, once; the same report on later ticks cuts no further. */
    remote(&s, CCFX_ENT, true, true, true);
    double before = ccfx_limit_of(&s, CCFX_FREE);
    ccfx_sim_run(&s, 1, (struct ccfx_flow[]){CCFX_FREE_STORM, CCFX_QUIET, CCFX_QUIET});
    double after = ccfx_limit_of(&s, CCFX_FREE);
    assert_true(after < before);
    assert_true(after >= before * 0.5 * 0.99 || after == ccfx_tiers[CCFX_FREE].floor);
    remote(&s, CCFX_ENT, true, true, false); /* the same exchange, read again */
    ccfx_sim_run(&s, 3, (struct ccfx_flow[]){CCFX_FREE_STORM, CCFX_QUIET, CCFX_QUIET});
    assert_true(ccfx_limit_of(&s, CCFX_FREE) <=
                after); /* neither cut again nor grown while threatened */
    assert_true(ccfx_limit_of(&s, CCFX_FREE) >= after * 0.99);
    /* More exchanges with the threat: cut down to its floor, never below. */
    for (int k = 0; k < 40; k++) {
        remote(&s, CCFX_ENT, true, true, true);
        ccfx_sim_run(&s, 1, (struct ccfx_flow[]){CCFX_FREE_STORM, CCFX_QUIET, CCFX_QUIET});
    }
    assert_true(ccfx_limit_of(&s, CCFX_FREE) == ccfx_tiers[CCFX_FREE].floor);
    assert_true(s.shed[CCFX_FREE] > 0);
    /* The threat over everywhere: free grows back to its max. */
    remote(&s, CCFX_ENT, true, false, true);
    ccfx_sim_run(&s, 40, (struct ccfx_flow[]){CCFX_FREE_STORM, CCFX_QUIET, CCFX_QUIET});
    assert_true(ccfx_limit_of(&s, CCFX_FREE) == 5);
    capctl_destroy(s.c);
}

static void a_lower_tier_pressing_elsewhere_makes_latencies_here_not_clear(void **state)
{
    (void)state;
    struct ccfx_sim s;
    ccfx_sim_init(&s, ccfx_tiers);
    /* Enterprise alone here, hot: its level is its own latency. */
    ccfx_sim_run(&s, 50, (struct ccfx_flow[]){CCFX_QUIET, CCFX_QUIET, CCFX_ENT_HOT});
    double level = ccfx_stats(&s, CCFX_ENT).level_us;
    /* Free presses on another instance and enterprise slows fivefold here: its latencies are
     * not clear, so its level rises only slowly and it threatens its objective (with nothing
     * pressing elsewhere, the level would follow within a second and hide the storm). */
    const struct capctl_remote busy = {.active = true, .pressing = true};
    capctl_remote(s.c, CCFX_FREE, &busy);
    ccfx_sim_run(&s, 20, (struct ccfx_flow[]){CCFX_QUIET, CCFX_QUIET, {200, 450, 10, 0}});
    assert_true(ccfx_stats(&s, CCFX_ENT).threatened);
    assert_true(ccfx_stats(&s, CCFX_ENT).level_us < 2 * level);
    capctl_destroy(s.c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(enterprise_active_on_another_instance_gates_free_here),
        cmocka_unit_test(a_remote_threat_cuts_free_here_once_per_exchange),
        cmocka_unit_test(a_lower_tier_pressing_elsewhere_makes_latencies_here_not_clear),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
