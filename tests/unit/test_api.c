/*
 * test_api: the endpoints (api.h) in process, over real HTTP (the http module and libcurl), on
 * a fake tier set with no database (apifx).
 *
 * Covered: the invalid_tier reply lists the set's tiers; unknown paths are 404; the rate limit
 * answers 429 with Retry-After and RateLimit-* headers; an open breaker answers circuit_open
 * with the time until a trial; a worker that cannot connect answers database_unavailable and
 * the breaker counts it; /metrics/bulkheads and /metrics render the set; admin needs the token
 * and knows the tiers, and checks tenant requests before the database; and replies stay right
 * while the main thread publishes new settings (under ThreadSanitizer: reload and the HTTP
 * threads do not race). The tarpit's holds are in test_api_tarpit.
 */
#include "apifx.h"
#include "admin.h"
#include "api.h"
#include "admission.h"
#include "datapath.h"
#include "datareq.h"
#include "breaker.h"
#include "capctl.h"
#include "config.h"
#include "fakeset.h"
#include "history.h"
#include "http.h"
#include "log.h"
#include "mclock.h"
#include "report.h"
#include "ratelimit.h"
#include "request.h"
#include "tarpit.h"
#include "tierset.h"

#include "../promtext.h"

#include <curl/curl.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <cmocka.h>

/* ---- tests -------------------------------------------------------------------------------- */

static void a_missing_tier_is_refused_with_the_valid_tiers(void **state)
{
    (void)state;
    struct apifx_reply r;
    apifx_fetch("GET", "/api/data", NULL, NULL, &r);
    assert_int_equal(r.status, 400);
    json_t *j = json_loads(r.body, 0, NULL);
    assert_string_equal(json_string_value(json_object_get(j, "error")), "invalid_tier");
    assert_string_equal(json_string_value(json_object_get(j, "message")),
                        "missing X-Tenant-Tier header; valid tiers: free, tiny, paced");
    json_t *valid = json_object_get(j, "valid_tiers");
    assert_int_equal(json_array_size(valid), 3);
    assert_string_equal(json_string_value(json_array_get(valid, 1)), "tiny");
    assert_non_null(json_string_value(json_object_get(j, "request_id")));
    json_decref(j);
}

static void an_unknown_path_is_not_found(void **state)
{
    (void)state;
    struct apifx_reply r;
    char code[64];
    apifx_fetch("GET", "/nope", NULL, NULL, &r);
    assert_int_equal(r.status, 404);
    assert_string_equal(apifx_error_code(&r, code, sizeof(code)), "not_found");
    apifx_fetch("DELETE", "/health", NULL, NULL, &r);
    assert_int_equal(r.status, 405);
    assert_string_equal(apifx_error_code(&r, code, sizeof(code)), "method_not_allowed");
}

static void the_rate_limit_answers_429_with_retry_after(void **state)
{
    (void)state;
    struct apifx_reply r;
    char code[64];
    for (int i = 0; i < 2; i++) {
        apifx_fetch("GET", "/api/data", "X-Tenant-Tier: tiny", "X-Tenant-Id: rl", &r);
        assert_int_equal(r.status, 503); /* admitted; no database behind it */
    }
    apifx_fetch("GET", "/api/data", "X-Tenant-Tier: tiny", "X-Tenant-Id: rl", &r);
    assert_int_equal(r.status, 429);
    assert_string_equal(apifx_error_code(&r, code, sizeof(code)), "rate_limited");
    assert_true(apifx_header_int(&r, "Retry-After") >= 1);
    assert_int_equal(apifx_header_int(&r, "RateLimit-Limit"), 2);
    assert_int_equal(apifx_header_int(&r, "RateLimit-Remaining"), 0);
    char want[96];
    snprintf(want, sizeof(want), "RateLimit: \"tiny\";r=0;t=%ld\r\n",
             apifx_header_int(&r, "Retry-After"));
    assert_non_null(strstr(r.headers, want));
    assert_non_null(strstr(r.headers, "RateLimit-Policy: \"tiny\";q=2;w="));
}

static void an_open_breaker_answers_circuit_open(void **state)
{
    (void)state;
    struct breaker *b = tierset_find(apifx_srv.ts, "free")->breaker;
    breaker_force(b, BREAKER_FORCED_OPEN, false, 0);
    struct apifx_reply r;
    char code[64];
    apifx_fetch("GET", "/api/data", "X-Tenant-Tier: free", NULL, &r);
    assert_int_equal(r.status, 503);
    assert_string_equal(apifx_error_code(&r, code, sizeof(code)), "circuit_open");
    assert_int_equal(apifx_header_int(&r, "Retry-After"), 10); /* free's breaker_reset_ms */
    breaker_force(b, BREAKER_AUTO, true, 0);
}

static void a_worker_that_cannot_connect_answers_database_unavailable(void **state)
{
    (void)state;
    struct breaker_snapshot before, after;
    struct breaker *b = tierset_find(apifx_srv.ts, "free")->breaker;
    breaker_snapshot(b, 0, &before);
    struct apifx_reply r;
    char code[64];
    apifx_fetch("GET", "/api/data", "X-Tenant-Tier: free", "X-Tenant-Id: w", &r);
    assert_int_equal(r.status, 503);
    assert_string_equal(apifx_error_code(&r, code, sizeof(code)), "database_unavailable");
    assert_int_equal(apifx_header_int(&r, "Retry-After"), 1);
    breaker_snapshot(b, 0, &after);
    assert_int_equal(after.failures, before.failures + 1); /* recorded before the reply */
}

static void metrics_render_the_fake_set(void **state)
{
    (void)state;
    struct apifx_reply r;
    apifx_fetch("GET", "/metrics/bulkheads", NULL, NULL, &r);
    assert_int_equal(r.status, 200);
    json_t *j = json_loads(r.body, 0, NULL);
    assert_int_equal(json_object_size(j), 3);
    assert_int_equal(json_integer_value(json_object_get(
                         json_object_get(json_object_get(j, "tiny"), "threadPool"), "poolSize")),
                     1);
    json_decref(j);
    apifx_fetch("GET", "/metrics", NULL, NULL, &r);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.headers, "version=0.0.4"));
    struct prom_doc d;
    char err[300] = "";
    assert_int_equal(prom_parse(r.body, &d, err, sizeof(err)), 0);
    assert_true(prom_value(&d, "bulkhead_workers", 1, "tier", "free") == 2);
    prom_free(&d);
    apifx_fetch("GET", "/dashboard/data?since=0", NULL, NULL, &r);
    assert_int_equal(r.status, 200);
}

static void admin_needs_the_token_and_knows_the_tiers(void **state)
{
    (void)state;
    struct apifx_reply r;
    char code[64];
    apifx_fetch("POST", "/admin/breaker/free/open", NULL, NULL, &r);
    assert_int_equal(r.status, 401);
    assert_string_equal(apifx_error_code(&r, code, sizeof(code)), "unauthorized");
    assert_non_null(strcasestr(r.headers, "WWW-Authenticate: Bearer"));
    apifx_fetch("POST", "/admin/breaker/gold/open", "Authorization: Bearer secret", NULL, &r);
    assert_int_equal(r.status, 404);
    assert_string_equal(apifx_error_code(&r, code, sizeof(code)), "unknown_tier");
    apifx_fetch("POST", "/admin/breaker/free/open", "Authorization: Bearer secret", NULL, &r);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "\"OPEN\""));
    apifx_fetch("POST", "/admin/breaker/free/reset", "Authorization: Bearer secret", NULL, &r);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "\"CLOSED\""));
}

/* Tenant requests are checked on the HTTP thread: each bad one has its 4xx and never reaches
 * the worker; a good one does, and meets the database that is not there. */
static void admin_tenant_requests_are_checked_before_the_database(void **state)
{
    (void)state;
    static const struct {
        const char *method, *path, *ctype, *body;
        long status;
        const char *code;
    } cases[] = {
        {"POST", "/admin/tenants", "application/json", "{\"name\":\"a b\",\"tier\":\"free\"}", 400,
         "invalid_tenant"},
        {"POST", "/admin/tenants", "application/json", "{\"name\":\"a\",\"tier\":\"gold\"}", 400,
         "invalid_tier"},
        {"POST", "/admin/tenants", "application/json",
         "{\"name\":\"a\",\"tier\":\"free\",\"rate_limit\":-5}", 400, "invalid_argument"},
        {"POST", "/admin/tenants", "application/json", "{\"name\":\"a\"", 400, "invalid_body"},
        {"POST", "/admin/tenants", "text/plain", "{\"name\":\"a\",\"tier\":\"free\"}", 415,
         "unsupported_media_type"},
        {"PATCH", "/admin/tenants/a", "application/json", "{}", 400, "invalid_body"},
        {"PATCH", "/admin/tenants", "application/json", "{\"tier\":\"free\"}", 405,
         "method_not_allowed"},
        {"PUT", "/admin/tenants/a", NULL, NULL, 405, "method_not_allowed"},
        {"GET", "/admin/tenants/bad%20name", NULL, NULL, 400, "invalid_tenant"},
        {"GET", "/admin/tenants/a/keys", NULL, NULL, 405, "method_not_allowed"},
        {"GET", "/admin/tenants/a/other", NULL, NULL, 404, "not_found"},
        {"GET", "/admin/tenants?limit=0", NULL, NULL, 400, "invalid_argument"},
        {"GET", "/admin/audit?before=x", NULL, NULL, 400, "invalid_argument"},
        {"DELETE", "/admin/tenants/a", "application/json", "{}", 400, "invalid_body"},
        {"GET", "/admin/elsewhere", NULL, NULL, 404, "not_found"},
        {"GET", "/admin/tenants/a", NULL, NULL, 503, "database_unavailable"},
        {"POST", "/admin/tenants", "application/json", "{\"name\":\"a\",\"tier\":\"free\"}", 503,
         "database_unavailable"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct apifx_reply r;
        char ctype[64], code[64];
        snprintf(ctype, sizeof(ctype), "Content-Type: %s", cases[i].ctype ? cases[i].ctype : "x/y");
        apifx_fetch_body(cases[i].method, cases[i].path, "Authorization: Bearer secret",
                         cases[i].ctype ? ctype : NULL, cases[i].body, &r);
        if (r.status != cases[i].status ||
            strcmp(apifx_error_code(&r, code, sizeof(code)), cases[i].code))
            fail_msg("%s %s: %ld %s", cases[i].method, cases[i].path, r.status, r.body);
    }
    struct apifx_reply r;
    apifx_fetch_body("POST", "/admin/tenants", "Content-Type: application/json", NULL,
                     "{\"name\":\"a\",\"tier\":\"free\"}", &r);
    assert_int_equal(r.status, 401); /* the token comes first */
}

/* The main thread publishes new settings while a client reads them through the endpoints. */
static void *client_main(void *arg)
{
    atomic_bool *stop = arg;
    long wrong = 0;
    while (!atomic_load(stop)) {
        struct apifx_reply r;
        apifx_fetch("GET", "/api/data", "X-Tenant-Tier: gold", NULL, &r);
        wrong += r.status != 400;
        apifx_fetch("GET", "/metrics/bulkheads", NULL, NULL, &r);
        wrong += r.status != 200;
    }
    return (void *)wrong;
}

static void replies_stay_right_while_settings_are_reloaded(void **state)
{
    (void)state;
    atomic_bool stop = false;
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, client_main, &stop), 0);
    struct tier_table next = *tierset_snapshot(apifx_srv.ts);
    for (int g = 0; g < 300; g++) {
        next.tiers[1].rate_window_s = 3600 + g;
        tierset_publish(apifx_srv.ts, &next);
        struct apifx_reply r;
        apifx_fetch("GET", "/metrics/bulkheads", NULL, NULL, &r);
        assert_int_equal(r.status, 200);
    }
    atomic_store(&stop, true);
    void *wrong;
    pthread_join(th, &wrong);
    assert_null(wrong);
    assert_int_equal(tierset_cfg(tierset_find(apifx_srv.ts, "tiny"))->rate_window_s, 3600 + 299);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(a_missing_tier_is_refused_with_the_valid_tiers),
        cmocka_unit_test(an_unknown_path_is_not_found),
        cmocka_unit_test(the_rate_limit_answers_429_with_retry_after),
        cmocka_unit_test(an_open_breaker_answers_circuit_open),
        cmocka_unit_test(a_worker_that_cannot_connect_answers_database_unavailable),
        cmocka_unit_test(metrics_render_the_fake_set),
        cmocka_unit_test(admin_needs_the_token_and_knows_the_tiers),
        cmocka_unit_test(admin_tenant_requests_are_checked_before_the_database),
        cmocka_unit_test(replies_stay_right_while_settings_are_reloaded),
    };
    return cmocka_run_group_tests(tests, apifx_setup, apifx_teardown);
}
