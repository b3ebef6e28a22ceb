/*
 * test_budget: the connection budget check (server_check_budget). At start, and after a
 * reload, the server compares what its pools may open (1 health probe + every tier's db_max)
 * with what the database allows (max_connections - superuser_reserved_connections) and logs a
 * db_budget warning when it does not fit, or the budget line when it does. A tier whose budget
 * is the fleet's (budget_scope "fleet") counts its db_max once for the fleet, not per instance.
 *
 * The tight database is a private cluster whose superuser_reserved_connections is raised to
 * 250 by ALTER SYSTEM and a restart: scripts/pg.sh pins max_connections=300 on the command
 * line, which ALTER SYSTEM cannot override, so 300 - 250 = 50 connections are left.
 */
#include "harness.h"

#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#define BUDGET_WARN "\"level\":\"warn\",\"type\":\"event\",\"event\":\"db_budget\""
#define BUDGET_INFO "\"level\":\"info\",\"type\":\"event\",\"event\":\"db_budget\""

static struct h_pg tight;

static int setup(void **state)
{
    (void)state;
    if (h_pg_start(&tight))
        return -1;
    char admin[300];
    snprintf(admin, sizeof(admin), "postgresql://postgres@127.0.0.1:%d/postgres", tight.port);
    if (h_sql_exec(admin, "ALTER SYSTEM SET superuser_reserved_connections = 250"))
        return -1;
    if (h_pg_stop(&tight) || h_pg_resume(&tight))
        return -1;
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    h_pg_destroy(&tight);
    return 0;
}

static void a_database_too_small_for_the_pools_is_warned_about(void **state)
{
    (void)state;
    long long allowed =
        h_sql_int(tight.url, "SELECT current_setting('max_connections')::int - "
                             "current_setting('superuser_reserved_connections')::int");
    assert_int_equal(allowed, 50);
    /* Built-in tiers: 1 probe + 5 + 20 + 50 connections. */
    struct h_server s;
    assert_int_equal(h_server_start(&s, tight.url, NULL), 0);
    bool warned = h_server_log_count(&s, BUDGET_WARN) == 1;
    bool names = h_server_log_has(&s, "may open 76 connections but the database allows 50");
    assert_int_equal(h_server_stop(&s, SIGTERM, 20000), 0);
    printf("# database allows %lld, pools need 76: warning logged %s\n", allowed,
           warned ? "once" : "NOT");
    assert_true(warned);
    assert_true(names);
    assert_false(h_server_log_has(&s, BUDGET_INFO));
}

static void a_database_with_room_logs_the_budget(void **state)
{
    (void)state;
    char url[300];
    assert_int_equal(h_db_create("budget", url, sizeof(url)), 0);
    long long allowed = h_sql_int(url, "SELECT current_setting('max_connections')::int - "
                                       "current_setting('superuser_reserved_connections')::int");
    struct h_server s;
    assert_int_equal(h_server_start(&s, url, NULL), 0);
    char line[200];
    snprintf(line, sizeof(line),
             "connection budget: 76 per instance of %lld allowed; at most %lld "
             "instances fit",
             allowed, allowed / 76);
    bool logged = h_server_log_count(&s, BUDGET_INFO) == 1 && h_server_log_has(&s, line);
    assert_int_equal(h_server_stop(&s, SIGTERM, 20000), 0);
    printf("# database allows %lld: \"%s\" %s\n", allowed, line, logged ? "logged" : "NOT logged");
    assert_true(logged);
    assert_false(h_server_log_has(&s, BUDGET_WARN));
}

static void an_unreachable_database_is_no_reason_not_to_start(void **state)
{
    (void)state;
    char url[120];
    snprintf(url, sizeof(url), "postgresql://postgres@127.0.0.1:%d/bulkhead", h_free_port());
    struct h_server s;
    assert_int_equal(h_server_start_ex(&s, url, NULL, false), 0);
    bool warned = h_server_log_has(&s, "cannot check max_connections now");
    assert_int_equal(h_server_stop(&s, SIGTERM, 20000), 0);
    assert_true(warned);
}

static void a_reload_that_outgrows_the_database_is_warned_about(void **state)
{
    (void)state;
    char env[400];
    assert_int_equal(h_tiers_env("tiers-budget.json",
                                 "{\"free\": {\"db_max\": 5}, \"pro\": {\"db_max\": 10}}", env,
                                 sizeof(env)),
                     0);
    const char *e[] = {env, NULL};
    struct h_server s;
    assert_int_equal(h_server_start(&s, tight.url, e), 0);
    /* 1 + 5 + 10 = 16 of 50: fits. */
    assert_true(h_server_log_has(&s, "connection budget: 16 per instance of 50 allowed"));
    assert_false(h_server_log_has(&s, BUDGET_WARN));

    assert_int_equal(h_tiers_env("tiers-budget.json",
                                 "{\"free\": {\"db_max\": 5}, \"pro\": {\"db_max\": 60}}", env,
                                 sizeof(env)),
                     0);
    assert_int_equal(kill(s.pid, SIGHUP), 0);
    bool warned = H_WAIT(h_server_log_count(&s, BUDGET_WARN) >= 1, 15000);
    bool names = h_server_log_has(&s, "may open 66 connections but the database allows 50");
    assert_int_equal(h_server_stop(&s, SIGTERM, 20000), 0);
    printf("# reload to 1 + 5 + 60 = 66 connections of 50: warning %s\n",
           warned ? "logged" : "NOT logged");
    assert_true(warned);
    assert_true(names);
}

static void a_fleet_budget_counts_once_for_the_fleet(void **state)
{
    (void)state;
    char env[400];
    assert_int_equal(h_tiers_env("tiers-budget-fleet.json",
                                 "{\"free\": {\"db_max\": 5},"
                                 " \"pro\": {\"db_max\": 10, \"budget_scope\": \"fleet\"}}",
                                 env, sizeof(env)),
                     0);
    const char *e[] = {env, "FLEET=true", NULL};
    struct h_server s;
    assert_int_equal(h_server_start(&s, tight.url, e), 0);
    /* 1 + 5 per instance, 10 for the fleet: (50 - 10) / 6 = 6 instances (per instance, 1 + 5 +
     * 10 = 16 would let 3 fit) */
    bool logged = h_server_log_has(&s, "connection budget: 6 per instance and 10 for the fleet "
                                       "(budget_scope fleet) of 50 allowed; at most 6 instances "
                                       "fit");
    assert_int_equal(h_server_stop(&s, SIGTERM, 20000), 0);
    assert_true(logged);
    assert_false(h_server_log_has(&s, BUDGET_WARN));
}

static void a_fleet_budget_without_the_fleet_view_is_refused_at_start(void **state)
{
    (void)state;
    char env[400];
    assert_int_equal(h_tiers_env("tiers-budget-fleet.json",
                                 "{\"free\": {\"db_max\": 5},"
                                 " \"pro\": {\"db_max\": 10, \"budget_scope\": \"fleet\"}}",
                                 env, sizeof(env)),
                     0);
    const char *e[] = {env, "FLEET=false", NULL};
    struct h_server s;
    int rc = h_server_start(&s, tight.url, e);
    bool said = h_server_log_has(&s, "tiers.pro.budget_scope: \\\"fleet\\\" needs the fleet view "
                                     "(FLEET=true and CAPACITY_CONTROL=true)");
    if (rc == 0)
        h_server_stop(&s, SIGTERM, 20000);
    assert_int_not_equal(rc, 0);
    assert_true(said);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(a_database_too_small_for_the_pools_is_warned_about),
        cmocka_unit_test(a_database_with_room_logs_the_budget),
        cmocka_unit_test(an_unreachable_database_is_no_reason_not_to_start),
        cmocka_unit_test(a_reload_that_outgrows_the_database_is_warned_about),
        cmocka_unit_test(a_fleet_budget_counts_once_for_the_fleet),
        cmocka_unit_test(a_fleet_budget_without_the_fleet_view_is_refused_at_start),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
