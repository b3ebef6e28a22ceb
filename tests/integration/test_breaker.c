/*
 * test_breaker: layer 4 through the real binary: the seed's manual trigger verbatim, fail-fast
 * without touching a worker, half-open recovery both ways, what does and does not count, real
 * timeouts that give the connection back, a database outage and recovery without a restart,
 * and the operator controls.
 */
#include "harness.h"

#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <libpq-fe.h>

static struct h_suite suite = {.name = "breaker"}; /* a server with the seed defaults */
static struct h_server fast; /* another one, with short breaker timings from a tiers file */

#define FAST_TIERS                                                                                 \
    "{\"free\": {\"workers\": 4, \"db_max\": 2, \"rate_limit\": 1000, \"breaker_timeout_ms\": "    \
    "500, \"breaker_reset_ms\": 400},"                                                             \
    " \"pro\": {\"workers\": 4, \"db_max\": 2, \"rate_limit\": 0, \"breaker_reset_ms\": 400},"     \
    " \"enterprise\": {\"workers\": 4, \"db_max\": 2, \"breaker_reset_ms\": 400},"                 \
    " \"tiny\": {\"workers\": 1, \"queue_max\": 0, \"db_max\": 1, \"rate_limit\": 3}}"

static int setup(void **state)
{
    (void)state;
    if (h_suite_start(&suite))
        return -1;
    char env[400];
    if (h_tiers_env("tiers-fast.json", FAST_TIERS, env, sizeof(env)))
        return -1;
    const char *e[] = {env, NULL};
    return h_server_start(&fast, suite.db_url, e);
}

static int teardown(void **state)
{
    (void)state;
    h_suite_stop(&suite);
    h_server_stop(&fast, SIGTERM, 20000);
    return 0;
}

static json_t *tier_section(const struct h_server *s, const char *tier, const char *section)
{
    return h_metric_section(s->base, tier, section);
}

static char *breaker_state(const struct h_server *s, const char *tier)
{
    static char buf[32];
    return (char *)h_metric_text(s->base, tier, "circuitBreaker", "state", buf, sizeof(buf));
}

static long get(const struct h_server *s, const char *path, const char *tier, const char *tenant)
{
    char th[64], tn[96];
    snprintf(th, sizeof(th), "X-Tenant-Tier: %s", tier);
    snprintf(tn, sizeof(tn), "X-Tenant-Id: %s", tenant);
    const char *h[] = {th, tn, NULL};
    struct h_resp r;
    h_get(h_url(s, path), h, &r);
    long st = r.status;
    h_resp_free(&r);
    return st;
}

static void seed_manual_trigger_opens_free_only(void **state)
{
    (void)state;
    /* The seed README, verbatim: for i in {1..10}; do curl -H "X-Tenant-Tier: free"
     * "http://localhost:8080/api/data?force_error=true"; done */
    const char *h[] = {"X-Tenant-Tier: free", NULL};
    for (int i = 0; i < 10; i++) {
        struct h_resp r;
        h_get(h_url(&suite.srv, "/api/data?force_error=true"), h, &r);
        assert_true(r.status == 500 || r.status == 503);
        h_resp_free(&r);
    }
    assert_string_equal(breaker_state(&suite.srv, "free"), "OPEN");
    assert_string_equal(breaker_state(&suite.srv, "pro"), "CLOSED");
    assert_string_equal(breaker_state(&suite.srv, "enterprise"), "CLOSED");
    assert_int_equal(get(&suite.srv, "/api/data", "enterprise", "seed"), 200);
    assert_int_equal(get(&suite.srv, "/api/data", "pro", "seed"), 200);

    struct h_resp r;
    h_get(h_url(&suite.srv, "/api/data"), h, &r);
    assert_int_equal(r.status, 503);
    json_t *j = h_json(&r);
    assert_string_equal(json_string_value(json_object_get(j, "error")), "circuit_open");
    json_decref(j);
    char v[16];
    long retry = atol(h_header(&r, "Retry-After", v, sizeof(v)));
    assert_true(retry >= 1 && retry <= 10); /* time until half-open, reset is 10 s */
    h_resp_free(&r);

    json_t *cb = tier_section(&suite.srv, "free", "circuitBreaker");
    assert_true(json_integer_value(json_object_get(cb, "failures")) >= 5);
    assert_true(json_integer_value(json_object_get(cb, "rejections")) >= 1);
    assert_true(json_is_string(json_object_get(cb, "nextTrial")));
    assert_true(json_is_string(json_object_get(cb, "lastChange")));
    assert_true(json_real_value(json_object_get(cb, "failureRate")) >= 0.5);
    json_decref(cb);
}

static void an_open_breaker_costs_no_worker_and_no_connection(void **state)
{
    (void)state;
    /* free is OPEN from the previous test (10 s reset). */
    assert_string_equal(breaker_state(&suite.srv, "free"), "OPEN");
    json_t *tp0 = tier_section(&suite.srv, "free", "threadPool");
    json_t *cp0 = tier_section(&suite.srv, "free", "connectionPool");
    const char *h[] = {"X-Tenant-Tier: free", "X-Tenant-Id: fast-fail", NULL};
    long st[50];
    assert_int_equal(h_burst("GET", h_url(&suite.srv, "/api/data"), h, 50, 10, st, NULL), 0);
    assert_int_equal(h_count(st, 50, 503), 50);
    json_t *tp1 = tier_section(&suite.srv, "free", "threadPool");
    json_t *cp1 = tier_section(&suite.srv, "free", "connectionPool");
    assert_int_equal(json_integer_value(json_object_get(tp1, "submitted")),
                     json_integer_value(json_object_get(tp0, "submitted")));
    assert_int_equal(json_integer_value(json_object_get(cp1, "acquired")),
                     json_integer_value(json_object_get(cp0, "acquired")));
    json_decref(tp0);
    json_decref(tp1);
    json_decref(cp0);
    json_decref(cp1);
}

static void open_breaker(const struct h_server *s, const char *tier, const char *tenant)
{
    for (int i = 0; i < 6 && strcmp(breaker_state(s, tier), "OPEN"); i++)
        get(s, "/api/data?force_error=true", tier, tenant);
    assert_string_equal(breaker_state(s, tier), "OPEN");
}

static void half_open_closes_after_a_good_trial(void **state)
{
    (void)state;
    open_breaker(&fast, "free", "trial-good");
    assert_true(H_WAIT(!strcmp(breaker_state(&fast, "free"), "HALF_OPEN"), 5000));
    assert_int_equal(get(&fast, "/api/data", "free", "trial-good"), 200);
    assert_string_equal(breaker_state(&fast, "free"), "CLOSED");
}

static void half_open_reopens_after_a_bad_trial(void **state)
{
    (void)state;
    open_breaker(&fast, "free", "trial-bad");
    assert_true(H_WAIT(!strcmp(breaker_state(&fast, "free"), "HALF_OPEN"), 5000));
    assert_int_equal(get(&fast, "/api/data?force_error=true", "free", "trial-bad"), 500);
    assert_string_equal(breaker_state(&fast, "free"), "OPEN");
    assert_int_equal(get(&fast, "/api/data", "free", "trial-bad"), 503);
    /* And it recovers by itself afterwards. */
    assert_true(H_WAIT(!strcmp(breaker_state(&fast, "free"), "HALF_OPEN"), 5000));
    assert_int_equal(get(&fast, "/api/data", "free", "trial-bad"), 200);
    assert_string_equal(breaker_state(&fast, "free"), "CLOSED");
}

struct slow_call {
    long status;
};

static void *slow_trial(void *arg)
{
    struct slow_call *c = arg;
    c->status = get(&fast, "/api/data?delay_ms=300", "free", "trial-one");
    return NULL;
}

static void half_open_admits_only_the_trial_call(void **state)
{
    (void)state;
    open_breaker(&fast, "free", "trial-one");
    assert_true(H_WAIT(!strcmp(breaker_state(&fast, "free"), "HALF_OPEN"), 5000));
    struct slow_call c;
    pthread_t th;
    pthread_create(&th, NULL, slow_trial, &c);
    assert_true(H_WAIT(h_metric(fast.base, "free", "threadPool", "active") == 1, 5000));
    /* While the trial runs, everyone else is refused. */
    for (int i = 0; i < 5; i++)
        assert_int_equal(get(&fast, "/api/data", "free", "trial-one"), 503);
    pthread_join(th, NULL);
    assert_int_equal(c.status, 200);
    assert_string_equal(breaker_state(&fast, "free"), "CLOSED");
}

static void client_errors_and_rejections_are_not_failures(void **state)
{
    (void)state;
    json_t *cb0 = tier_section(&suite.srv, "pro", "circuitBreaker");
    for (int i = 0; i < 20; i++)
        assert_int_equal(get(&suite.srv, "/api/data?delay_ms=nope", "pro", "client-errs"), 400);
    json_t *cb1 = tier_section(&suite.srv, "pro", "circuitBreaker");
    assert_int_equal(json_integer_value(json_object_get(cb1, "failures")),
                     json_integer_value(json_object_get(cb0, "failures")));
    assert_int_equal(json_integer_value(json_object_get(cb1, "successes")),
                     json_integer_value(json_object_get(cb0, "successes")));
    assert_string_equal(json_string_value(json_object_get(cb1, "state")), "CLOSED");
    json_decref(cb0);
    json_decref(cb1);

    /* tiny: 1 worker, no queue, 3 per minute. A burst is refused by the rate limiter (429)
     * and by the full bulkhead (503): neither is a failure of the tier. */
    const char *h[] = {"X-Tenant-Tier: tiny", "X-Tenant-Id: rejected", NULL};
    long st[10];
    assert_int_equal(h_burst("GET", h_url(&fast, "/api/data?delay_ms=200"), h, 10, 10, st, NULL),
                     0);
    assert_int_equal(h_count(st, 10, 429), 7);
    assert_true(h_count(st, 10, 503) >= 1);
    json_t *cb = tier_section(&fast, "tiny", "circuitBreaker");
    assert_int_equal(json_integer_value(json_object_get(cb, "failures")), 0);
    assert_int_equal(json_integer_value(json_object_get(cb, "timeouts")), 0);
    assert_string_equal(json_string_value(json_object_get(cb, "state")), "CLOSED");
    json_decref(cb);
}

/* A plain read runs on its event thread (no delay asked): a statement there that passes the
 * deadline, here blocked by a lock the test holds, is answered 504 at the deadline, cancelled
 * in PostgreSQL from another thread, and its connection comes back clean. */
static void an_event_thread_statement_past_its_deadline_is_cancelled_and_reused(void **state)
{
    (void)state;
    assert_int_equal(get(&fast, "/api/data", "free", "locked"), 200); /* warm a connection */
    json_t *cp0 = tier_section(&fast, "free", "connectionPool");
    int64_t timeouts0 = h_metric(fast.base, "free", "circuitBreaker", "timeouts");
    PGconn *locker = PQconnectdb(suite.db_url);
    assert_int_equal(PQstatus(locker), CONNECTION_OK);
    PGresult *res = PQexec(locker, "BEGIN; LOCK TABLE tenant_data IN ACCESS EXCLUSIVE MODE");
    assert_int_equal(PQresultStatus(res), PGRES_COMMAND_OK);
    PQclear(res);
    const char *h[] = {"X-Tenant-Tier: free", "X-Tenant-Id: locked", NULL};
    struct h_resp r;
    h_get(h_url(&fast, "/api/data"), h, &r);
    assert_int_equal(r.status, 504);
    json_t *j = h_json(&r);
    assert_string_equal(json_string_value(json_object_get(j, "error")), "timeout");
    json_decref(j);
    h_resp_free(&r);
    /* The lock is still held: only a cancel ends the statement that waits for it. */
    assert_true(H_WAIT(h_sql_int(suite.db_url, "SELECT count(*) FROM pg_stat_activity WHERE "
                                               "application_name = 'bulkhead-free' AND "
                                               "state = 'active'") == 0,
                       5000));
    assert_true(H_WAIT(h_metric(fast.base, "free", "connectionPool", "active") == 0 &&
                           h_metric(fast.base, "free", "connectionPool", "idle") >= 1,
                       5000));
    res = PQexec(locker, "COMMIT");
    PQclear(res);
    PQfinish(locker);
    assert_int_equal(h_metric(fast.base, "free", "circuitBreaker", "timeouts"), timeouts0 + 1);
    assert_int_equal(get(&fast, "/api/data", "free", "locked"), 200);
    json_t *cp1 = tier_section(&fast, "free", "connectionPool");
    assert_int_equal(json_integer_value(json_object_get(cp1, "closedBroken")),
                     json_integer_value(json_object_get(cp0, "closedBroken")));
    assert_int_equal(json_integer_value(json_object_get(cp1, "connects")),
                     json_integer_value(json_object_get(cp0, "connects")));
    json_decref(cp0);
    json_decref(cp1);
}

static void a_timeout_answers_at_the_deadline_and_frees_the_connection(void **state)
{
    (void)state;
    assert_int_equal(get(&fast, "/api/data", "free", "timeouts"), 200); /* warm a connection */
    json_t *cp0 = tier_section(&fast, "free", "connectionPool");
    json_t *cb0 = tier_section(&fast, "free", "circuitBreaker");
    const char *h[] = {"X-Tenant-Tier: free", "X-Tenant-Id: timeouts", NULL};
    struct h_resp r;
    h_get(h_url(&fast, "/api/data?delay_ms=10000"), h, &r);
    assert_int_equal(r.status, 504);
    assert_true(r.seconds < 3.0); /* breaker_timeout_ms is 500; the query would take 10 s */
    json_t *j = h_json(&r);
    assert_string_equal(json_string_value(json_object_get(j, "error")), "timeout");
    json_decref(j);
    h_resp_free(&r);
    /* The statement was cancelled in PostgreSQL and the same connection came back. */
    assert_true(H_WAIT(h_sql_int(suite.db_url, "SELECT count(*) FROM pg_stat_activity WHERE "
                                               "application_name = 'bulkhead-free' AND "
                                               "state = 'active'") == 0,
                       5000));
    assert_true(H_WAIT(h_metric(fast.base, "free", "connectionPool", "active") == 0 &&
                           h_metric(fast.base, "free", "connectionPool", "idle") >= 1,
                       5000));
    json_t *cp1 = tier_section(&fast, "free", "connectionPool");
    assert_int_equal(json_integer_value(json_object_get(cp1, "closedBroken")),
                     json_integer_value(json_object_get(cp0, "closedBroken")));
    json_t *cb1 = tier_section(&fast, "free", "circuitBreaker");
    assert_int_equal(json_integer_value(json_object_get(cb1, "timeouts")),
                     json_integer_value(json_object_get(cb0, "timeouts")) + 1);
    assert_int_equal(get(&fast, "/api/data", "free", "timeouts"), 200);
    json_t *cp2 = tier_section(&fast, "free", "connectionPool");
    assert_int_equal(json_integer_value(json_object_get(cp2, "connects")),
                     json_integer_value(json_object_get(cp0, "connects")));
    json_decref(cp0);
    json_decref(cp1);
    json_decref(cp2);
    json_decref(cb0);
    json_decref(cb1);
}

/* ---- database outage ------------------------------------------------------------------ */

static long health_of(const struct h_server *s)
{
    struct h_resp r;
    h_get(h_url(s, "/health"), NULL, &r);
    long st = r.status;
    h_resp_free(&r);
    return st;
}

static void a_database_outage_opens_breakers_and_everything_recovers(void **state)
{
    (void)state;
    struct h_pg pg;
    assert_int_equal(h_pg_start(&pg), 0);
    static char env[400];
    assert_int_equal(h_tiers_env("tiers-outage.json", FAST_TIERS, env, sizeof(env)), 0);
    const char *e[] = {env, "HEALTH_INTERVAL_MS=200", NULL};
    struct h_server s;
    assert_int_equal(h_server_start(&s, pg.url, e), 0);
    const char *tiers[] = {"free", "pro", "enterprise"};
    for (int t = 0; t < 3; t++)
        assert_int_equal(get(&s, "/api/data", tiers[t], "outage"), 200);

    assert_int_equal(h_pg_stop(&pg), 0);
    assert_true(H_WAIT(health_of(&s) == 503, 5000));
    struct h_resp r;
    h_get(h_url(&s, "/health"), NULL, &r);
    json_t *j = h_json(&r);
    assert_string_equal(json_string_value(json_object_get(j, "status")), "unhealthy");
    json_decref(j);
    h_resp_free(&r);
    for (int t = 0; t < 3; t++) {
        for (int i = 0; i < 8; i++) {
            long st = get(&s, "/api/data", tiers[t], "outage");
            assert_int_equal(st, 503); /* database_unavailable, then circuit_open */
        }
        assert_string_equal(breaker_state(&s, tiers[t]), "OPEN");
    }

    int64_t t0 = h_now_ms();
    assert_int_equal(h_pg_resume(&pg), 0);
    assert_true(H_WAIT(health_of(&s) == 200, 10000));
    for (int t = 0; t < 3; t++) {
        assert_true(H_WAIT(get(&s, "/api/data", tiers[t], "outage") == 200, 15000));
        printf("# %s served again %lld ms after PostgreSQL restarted\n", tiers[t],
               (long long)(h_now_ms() - t0));
        assert_string_equal(breaker_state(&s, tiers[t]), "CLOSED");
    }
    assert_int_equal(h_server_stop(&s, SIGTERM, 20000), 0);
    assert_int_equal(h_server_log_count(&s, "\"event\":\"db_down\""), 1);
    assert_int_equal(h_server_log_count(&s, "\"event\":\"db_up\""), 1);
    h_pg_destroy(&pg);
}

/* ---- operator controls -------------------------------------------------------------------- */

static long admin(const struct h_server *s, const char *path, const char *token)
{
    char auth[128];
    snprintf(auth, sizeof(auth), "Authorization: Bearer %s", token);
    const char *h[] = {auth, NULL};
    struct h_resp r;
    h_request("POST", h_url(s, path), token ? h : NULL, "", &r);
    long st = r.status;
    h_resp_free(&r);
    return st;
}

static void admin_endpoints_are_off_without_a_token(void **state)
{
    (void)state;
    assert_int_equal(admin(&suite.srv, "/admin/breaker/pro/open", "anything"), 404);
    assert_string_equal(breaker_state(&suite.srv, "pro"), "CLOSED");
}

static void operators_force_open_disable_and_reset(void **state)
{
    (void)state;
    const char *e[] = {"ADMIN_TOKEN=s3cret-token", NULL};
    struct h_server s;
    assert_int_equal(h_server_start(&s, suite.db_url, e), 0);
    assert_int_equal(admin(&s, "/admin/breaker/pro/open", "wrong"), 401);
    assert_int_equal(admin(&s, "/admin/breaker/pro/open", NULL), 401);
    assert_int_equal(admin(&s, "/admin/breaker/nosuch/open", "s3cret-token"), 404);
    assert_int_equal(admin(&s, "/admin/breaker/pro/explode", "s3cret-token"), 404);

    assert_int_equal(admin(&s, "/admin/breaker/pro/open", "s3cret-token"), 200);
    assert_string_equal(breaker_state(&s, "pro"), "OPEN");
    assert_int_equal(get(&s, "/api/data", "pro", "ops"), 503);
    assert_int_equal(get(&s, "/api/data", "enterprise", "ops"), 200);

    assert_int_equal(admin(&s, "/admin/breaker/pro/disable", "s3cret-token"), 200);
    for (int i = 0; i < 12; i++)
        assert_int_equal(get(&s, "/api/data?force_error=true", "pro", "ops"), 500);
    assert_string_equal(breaker_state(&s, "pro"), "CLOSED"); /* disabled: nothing trips it */
    json_t *cb = tier_section(&s, "pro", "circuitBreaker");
    assert_string_equal(json_string_value(json_object_get(cb, "mode")), "disabled");
    json_decref(cb);

    assert_int_equal(admin(&s, "/admin/breaker/pro/reset", "s3cret-token"), 200);
    cb = tier_section(&s, "pro", "circuitBreaker");
    assert_string_equal(json_string_value(json_object_get(cb, "mode")), "auto");
    assert_string_equal(json_string_value(json_object_get(cb, "state")), "CLOSED");
    json_decref(cb);
    assert_int_equal(get(&s, "/api/data", "pro", "ops"), 200);
    assert_int_equal(h_server_stop(&s, SIGTERM, 20000), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(seed_manual_trigger_opens_free_only),
        cmocka_unit_test(an_open_breaker_costs_no_worker_and_no_connection),
        cmocka_unit_test(half_open_closes_after_a_good_trial),
        cmocka_unit_test(half_open_reopens_after_a_bad_trial),
        cmocka_unit_test(half_open_admits_only_the_trial_call),
        cmocka_unit_test(client_errors_and_rejections_are_not_failures),
        cmocka_unit_test(a_timeout_answers_at_the_deadline_and_frees_the_connection),
        cmocka_unit_test(an_event_thread_statement_past_its_deadline_is_cancelled_and_reused),
        cmocka_unit_test(a_database_outage_opens_breakers_and_everything_recovers),
        cmocka_unit_test(admin_endpoints_are_off_without_a_token),
        cmocka_unit_test(operators_force_open_disable_and_reset),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
