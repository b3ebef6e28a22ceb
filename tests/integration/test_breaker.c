/*
 * test_breaker: layer 4 through the real binary: the seed's manual trigger verbatim, fail-fast
 * without touching a worker, half-open recovery both ways, what does and does not count, a
 * database outage and recovery without a restart, and the operator controls. Real timeouts
 * that give the connection back are test_breaker_deadline's (fixture: breakerfx).
 */
#include "breakerfx.h"
#include "harness.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>
#include <libpq-fe.h>

static char *breaker_state(const struct h_server *s, const char *tier)
{
    static char buf[32];
    return (char *)h_metric_text(s->base, tier, "circuitBreaker", "state", buf, sizeof(buf));
}

static void seed_manual_trigger_opens_free_only(void **state)
{
    (void)state;
    /* The seed README, verbatim: for i in {1..10}; do curl -H "X-Tenant-Tier: free"
     * "http://localhost:8080/api/data?force_error=true"; done */
    const char *h[] = {"X-Tenant-Tier: free", NULL};
    for (int i = 0; i < 10; i++) {
        struct h_resp r;
        h_get(h_url(&brfx_suite.srv, "/api/data?force_error=true"), h, &r);
        assert_true(r.status == 500 || r.status == 503);
        h_resp_free(&r);
    }
    assert_string_equal(breaker_state(&brfx_suite.srv, "free"), "OPEN");
    assert_string_equal(breaker_state(&brfx_suite.srv, "pro"), "CLOSED");
    assert_string_equal(breaker_state(&brfx_suite.srv, "enterprise"), "CLOSED");
    assert_int_equal(brfx_get(&brfx_suite.srv, "/api/data", "enterprise", "seed"), 200);
    assert_int_equal(brfx_get(&brfx_suite.srv, "/api/data", "pro", "seed"), 200);

    struct h_resp r;
    h_get(h_url(&brfx_suite.srv, "/api/data"), h, &r);
    assert_int_equal(r.status, 503);
    json_t *j = h_json(&r);
    assert_string_equal(json_string_value(json_object_get(j, "error")), "circuit_open");
    json_decref(j);
    char v[16];
    long retry = atol(h_header(&r, "Retry-After", v, sizeof(v)));
    assert_true(retry >= 1 && retry <= 10); /* time until half-open, reset is 10 s */
    h_resp_free(&r);

    json_t *cb = brfx_tier_section(&brfx_suite.srv, "free", "circuitBreaker");
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
    assert_string_equal(breaker_state(&brfx_suite.srv, "free"), "OPEN");
    json_t *tp0 = brfx_tier_section(&brfx_suite.srv, "free", "threadPool");
    json_t *cp0 = brfx_tier_section(&brfx_suite.srv, "free", "connectionPool");
    const char *h[] = {"X-Tenant-Tier: free", "X-Tenant-Id: fast-fail", NULL};
    long st[50];
    assert_int_equal(h_burst("GET", h_url(&brfx_suite.srv, "/api/data"), h, 50, 10, st, NULL), 0);
    assert_int_equal(h_count(st, 50, 503), 50);
    json_t *tp1 = brfx_tier_section(&brfx_suite.srv, "free", "threadPool");
    json_t *cp1 = brfx_tier_section(&brfx_suite.srv, "free", "connectionPool");
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
        brfx_get(s, "/api/data?force_error=true", tier, tenant);
    assert_string_equal(breaker_state(s, tier), "OPEN");
}

static void half_open_closes_after_a_good_trial(void **state)
{
    (void)state;
    open_breaker(&brfx_fast, "free", "trial-good");
    assert_true(H_WAIT(!strcmp(breaker_state(&brfx_fast, "free"), "HALF_OPEN"), 5000));
    assert_int_equal(brfx_get(&brfx_fast, "/api/data", "free", "trial-good"), 200);
    assert_string_equal(breaker_state(&brfx_fast, "free"), "CLOSED");
}

static void half_open_reopens_after_a_bad_trial(void **state)
{
    (void)state;
    open_breaker(&brfx_fast, "free", "trial-bad");
    assert_true(H_WAIT(!strcmp(breaker_state(&brfx_fast, "free"), "HALF_OPEN"), 5000));
    assert_int_equal(brfx_get(&brfx_fast, "/api/data?force_error=true", "free", "trial-bad"), 500);
    assert_string_equal(breaker_state(&brfx_fast, "free"), "OPEN");
    assert_int_equal(brfx_get(&brfx_fast, "/api/data", "free", "trial-bad"), 503);
    /* And it recovers by itself afterwards. */
    assert_true(H_WAIT(!strcmp(breaker_state(&brfx_fast, "free"), "HALF_OPEN"), 5000));
    assert_int_equal(brfx_get(&brfx_fast, "/api/data", "free", "trial-bad"), 200);
    assert_string_equal(breaker_state(&brfx_fast, "free"), "CLOSED");
}

struct slow_call {
    long status;
};

static void *slow_trial(void *arg)
{
    struct slow_call *c = arg;
    c->status = brfx_get(&brfx_fast, "/api/data?delay_ms=300", "free", "trial-one");
    return NULL;
}

static void half_open_admits_only_the_trial_call(void **state)
{
    (void)state;
    open_breaker(&brfx_fast, "free", "trial-one");
    assert_true(H_WAIT(!strcmp(breaker_state(&brfx_fast, "free"), "HALF_OPEN"), 5000));
    struct slow_call c;
    pthread_t th;
    pthread_create(&th, NULL, slow_trial, &c);
    assert_true(H_WAIT(h_metric(brfx_fast.base, "free", "threadPool", "active") == 1, 5000));
    /* While the trial runs, everyone else is refused. */
    for (int i = 0; i < 5; i++)
        assert_int_equal(brfx_get(&brfx_fast, "/api/data", "free", "trial-one"), 503);
    pthread_join(th, NULL);
    assert_int_equal(c.status, 200);
    assert_string_equal(breaker_state(&brfx_fast, "free"), "CLOSED");
}

static void client_errors_and_rejections_are_not_failures(void **state)
{
    (void)state;
    json_t *cb0 = brfx_tier_section(&brfx_suite.srv, "pro", "circuitBreaker");
    for (int i = 0; i < 20; i++)
        assert_int_equal(brfx_get(&brfx_suite.srv, "/api/data?delay_ms=nope", "pro", "client-errs"),
                         400);
    json_t *cb1 = brfx_tier_section(&brfx_suite.srv, "pro", "circuitBreaker");
    assert_int_equal(json_integer_value(json_object_get(cb1, "failures")),
                     json_integer_value(json_object_get(cb0, "failures")));
    assert_int_equal(json_integer_value(json_object_get(cb1, "successes")),
                     json_integer_value(json_object_get(cb0, "successes")));
    assert_string_equal(json_string_value(json_object_get(cb1, "state")), "CLOSED");
    json_decref(cb0);
    json_decref(cb1);

    /* tiny: 1 worker, no queue, 3 per minute. A burst is refused by the rate limiter (429)
     * and by the full bulkhead (503; a 200 if the worker is free again by then): neither is a
     * failure of the tier. */
    const char *h[] = {"X-Tenant-Tier: tiny", "X-Tenant-Id: rejected", NULL};
    long st[10];
    assert_int_equal(
        h_burst("GET", h_url(&brfx_fast, "/api/data?delay_ms=200"), h, 10, 10, st, NULL), 0);
    assert_int_equal(h_count(st, 10, 429), 7);
    assert_int_equal(h_count(st, 10, 503) + h_count(st, 10, 200), 3);
    json_t *cb = brfx_tier_section(&brfx_fast, "tiny", "circuitBreaker");
    assert_int_equal(json_integer_value(json_object_get(cb, "failures")), 0);
    assert_int_equal(json_integer_value(json_object_get(cb, "timeouts")), 0);
    assert_string_equal(json_string_value(json_object_get(cb, "state")), "CLOSED");
    json_decref(cb);
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
    assert_int_equal(h_tiers_env("tiers-outage.json", BRFX_FAST_TIERS, env, sizeof(env)), 0);
    const char *e[] = {env, "HEALTH_INTERVAL_MS=200", NULL};
    struct h_server s;
    assert_int_equal(h_server_start(&s, pg.url, e), 0);
    const char *tiers[] = {"free", "pro", "enterprise"};
    /* Each tier's first connect to the fresh cluster is within a bound, not its fast breaker
     * timeout (a 503 there beside the rest of the suite). */
    for (int t = 0; t < 3; t++)
        assert_true(H_WAIT(brfx_get(&s, "/api/data", tiers[t], "outage") == 200, 30000));

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
            long st = brfx_get(&s, "/api/data", tiers[t], "outage");
            assert_int_equal(st, 503); /* database_unavailable, then circuit_open */
        }
        assert_string_equal(breaker_state(&s, tiers[t]), "OPEN");
    }

    int64_t t0 = h_now_ms();
    assert_int_equal(h_pg_resume(&pg), 0);
    assert_true(H_WAIT(health_of(&s) == 200, 10000));
    for (int t = 0; t < 3; t++) {
        assert_true(H_WAIT(brfx_get(&s, "/api/data", tiers[t], "outage") == 200, 15000));
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

#define OPS_TOKEN "s3cret-token-0123456789abcdef0123" /* ADMIN_TOKEN: 32 characters at least */

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
    assert_int_equal(admin(&brfx_suite.srv, "/admin/breaker/pro/open", "anything"), 404);
    assert_string_equal(breaker_state(&brfx_suite.srv, "pro"), "CLOSED");
}

static void operators_force_open_disable_and_reset(void **state)
{
    (void)state;
    const char *e[] = {"ADMIN_TOKEN=" OPS_TOKEN, NULL};
    struct h_server s;
    assert_int_equal(h_server_start(&s, brfx_suite.db_url, e), 0);
    assert_int_equal(admin(&s, "/admin/breaker/pro/open", "wrong"), 401);
    assert_int_equal(admin(&s, "/admin/breaker/pro/open", NULL), 401);
    assert_int_equal(admin(&s, "/admin/breaker/nosuch/open", OPS_TOKEN), 404);
    assert_int_equal(admin(&s, "/admin/breaker/pro/explode", OPS_TOKEN), 404);

    assert_int_equal(admin(&s, "/admin/breaker/pro/open", OPS_TOKEN), 200);
    assert_string_equal(breaker_state(&s, "pro"), "OPEN");
    assert_int_equal(brfx_get(&s, "/api/data", "pro", "ops"), 503);
    assert_int_equal(brfx_get(&s, "/api/data", "enterprise", "ops"), 200);

    assert_int_equal(admin(&s, "/admin/breaker/pro/disable", OPS_TOKEN), 200);
    for (int i = 0; i < 12; i++)
        assert_int_equal(brfx_get(&s, "/api/data?force_error=true", "pro", "ops"), 500);
    assert_string_equal(breaker_state(&s, "pro"), "CLOSED"); /* disabled: nothing trips it */
    json_t *cb = brfx_tier_section(&s, "pro", "circuitBreaker");
    assert_string_equal(json_string_value(json_object_get(cb, "mode")), "disabled");
    json_decref(cb);

    assert_int_equal(admin(&s, "/admin/breaker/pro/reset", OPS_TOKEN), 200);
    cb = brfx_tier_section(&s, "pro", "circuitBreaker");
    assert_string_equal(json_string_value(json_object_get(cb, "mode")), "auto");
    assert_string_equal(json_string_value(json_object_get(cb, "state")), "CLOSED");
    json_decref(cb);
    assert_int_equal(brfx_get(&s, "/api/data", "pro", "ops"), 200);
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
        cmocka_unit_test(a_database_outage_opens_breakers_and_everything_recovers),
        cmocka_unit_test(admin_endpoints_are_off_without_a_token),
        cmocka_unit_test(operators_force_open_disable_and_reset),
    };
    return cmocka_run_group_tests(tests, brfx_setup, brfx_teardown);
}
