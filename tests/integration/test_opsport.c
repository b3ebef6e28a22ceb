/*
 * test_opsport: OPS_PORT, the operators' listener (issue 30). With it set, /metrics,
 * /metrics/bulkheads, /metrics/tenants, /dashboard (and its files), /dashboard/data and /admin
 * answer on the operators' port only, and the public port answers them 404 in JSON, however the
 * path is spelled, and changes nothing (a forced-open breaker through the public port stays
 * closed); the API answers on the public port only; the probes and /health answer on both. A server
 * without OPS_PORT serves everything on one port (every other integration test), and OPS_PORT equal
 * to API_PORT is refused at start.
 */
#include "harness.h"

#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include <cmocka.h>

static struct h_suite suite = {.name = "opsport"};
static char ops_env[32];
static char ops_base[64];

static int setup(void **state)
{
    (void)state;
    int port = h_free_port();
    snprintf(ops_env, sizeof(ops_env), "OPS_PORT=%d", port);
    snprintf(ops_base, sizeof(ops_base), "http://127.0.0.1:%d", port);
    suite.env[0] = ops_env;
    suite.env[1] = "ADMIN_TOKEN=ops-secret-0123456789abcdefghijklmn";
    return h_suite_start(&suite);
}

static int teardown(void **state)
{
    (void)state;
    h_suite_stop(&suite);
    return 0;
}

static const char *const admin_auth[] = {
    "Authorization: Bearer ops-secret-0123456789abcdefghijklmn", NULL};

/* method path on base: its status; *body its JSON (NULL to ignore it). */
static long ask(const char *base, const char *method, const char *path, json_t **body)
{
    char u[300];
    snprintf(u, sizeof(u), "%s%s", base, path);
    struct h_resp r;
    const char *const *headers = NULL;
    if (!strncmp(path, "/admin", 6) || !strncmp(path, "//admin", 7) || !strncmp(path, "/%61", 4))
        headers = admin_auth;
    const char *tier[] = {"X-Tenant-Tier: free", NULL};
    if (strstr(path, "/api/data"))
        headers = tier;
    h_request(method, u, headers, method[0] == 'P' ? "" : NULL, &r);
    long status = r.status;
    if (body)
        *body = h_json(&r);
    h_resp_free(&r);
    return status;
}

static const char *breaker_state(const char *base)
{
    static char state[32];
    return h_metric_text(base, "free", "circuitBreaker", "state", state, sizeof(state));
}

static void the_public_port_refuses_operator_paths_and_changes_nothing(void **state)
{
    (void)state;
    static const struct {
        const char *method, *path;
    } refused[] = {
        {"GET", "/metrics"},
        {"GET", "/metrics/bulkheads"},
        {"GET", "/metrics/tenants"},
        {"GET", "/dashboard"},
        {"GET", "/dashboard/dashboard.css"},
        {"GET", "/dashboard/dashboard-page.js"},
        {"GET", "/dashboard/data?since=0"},
        {"POST", "/admin/breaker/free/open"},
        {"GET", "/admin/tenants"},
        /* other spellings: decoded by libmicrohttpd, or not a route at all */
        {"GET", "/%6Detrics"},
        {"GET", "//metrics"},
        {"POST", "/%61dmin/breaker/free/open"},
        {"POST", "//admin/breaker/free/open"},
        {"GET", "/metrics?format=prometheus"},
    };
    for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++) {
        json_t *b = NULL;
        long st = ask(suite.srv.base, refused[i].method, refused[i].path, &b);
        if (st != 404)
            fail_msg("%s %s on the public port: %ld", refused[i].method, refused[i].path, st);
        assert_non_null(b);
        assert_string_equal(json_string_value(json_object_get(b, "error")), "not_found");
        assert_true(strlen(json_string_value(json_object_get(b, "request_id"))) > 0);
        json_decref(b);
    }
    /* The forced open through the public port did not happen. */
    assert_string_equal(breaker_state(ops_base), "CLOSED");
    printf("# public port: %zu operator requests answered 404 JSON; free's breaker still %s\n",
           sizeof(refused) / sizeof(refused[0]), breaker_state(ops_base));
}

static void the_public_port_serves_the_api_the_probes_and_health(void **state)
{
    (void)state;
    static const char *const paths[] = {"/api/data?limit=1", "/health", "/livez", "/readyz"};
    for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++) {
        long st = ask(suite.srv.base, "GET", paths[i], NULL);
        if (st != 200)
            fail_msg("GET %s on the public port: %ld", paths[i], st);
    }
}

static void the_operators_port_serves_operator_paths_and_the_probes_only(void **state)
{
    (void)state;
    static const struct {
        const char *method, *path;
        long status;
    } served[] = {
        {"GET", "/metrics", 200},
        {"GET", "/metrics/bulkheads", 200},
        {"GET", "/metrics/tenants", 200},
        {"GET", "/dashboard", 200},
        {"GET", "/dashboard/dashboard.css", 200},
        {"GET", "/dashboard/dashboard-page.js", 200},
        {"GET", "/dashboard/nothing.js", 404},
        {"GET", "/dashboard/data?since=0", 200},
        {"GET", "/livez", 200},
        {"GET", "/readyz", 200},
        {"GET", "/health", 200},
        {"GET", "/%6Detrics", 200}, /* decoded: the same path */
        {"GET", "/api/data?limit=1", 404},
        {"POST", "/api/data", 404},
        {"GET", "/nothing", 404},
    };
    for (size_t i = 0; i < sizeof(served) / sizeof(served[0]); i++) {
        json_t *b = NULL;
        long st = ask(ops_base, served[i].method, served[i].path, &b);
        if (st != served[i].status)
            fail_msg("%s %s on the operators' port: %ld, not %ld", served[i].method, served[i].path,
                     st, served[i].status);
        if (st == 404)
            assert_string_equal(json_string_value(json_object_get(b, "error")), "not_found");
        json_decref(b);
    }
    /* The admin API works there, with its token, and /metrics there counts what it did. */
    assert_int_equal(ask(ops_base, "POST", "/admin/breaker/free/open", NULL), 200);
    assert_string_equal(breaker_state(ops_base), "OPEN");
    double opened = h_prom(ops_base, "bulkhead_breaker_opened_total", "tier=\"free\"");
    printf("# operators' port: breaker forced open; /metrics there says opened %.0f time(s)\n",
           opened);
    assert_true(opened == 1);
    long st = ask(suite.srv.base, "GET", "/api/data?limit=1", NULL);
    assert_int_equal(st, 503); /* the public port sees it */
    assert_int_equal(ask(ops_base, "POST", "/admin/breaker/free/reset", NULL), 200);
    assert_string_equal(breaker_state(ops_base), "CLOSED");
    /* The start-up log names both listeners. */
    assert_true(h_server_log_has(&suite.srv, "\"http: listening on 127.0.0.1:"));
    assert_true(h_server_log_has(&suite.srv, "\"ops: listening on 127.0.0.1:"));
}

static void ops_port_equal_to_api_port_is_refused_at_start(void **state)
{
    (void)state;
    char cmd[800];
    snprintf(cmd, sizeof(cmd), "cd '%s' && API_PORT=9191 OPS_PORT=9191 timeout 10 '%s' 2>&1",
             getenv("BH_TEST_WORK") ? getenv("BH_TEST_WORK") : "/tmp", h_bin());
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    char out[1000] = "";
    size_t n = fread(out, 1, sizeof(out) - 1, p);
    out[n] = '\0';
    int rc = pclose(p);
    printf("# %s", out);
    assert_true(WIFEXITED(rc) && WEXITSTATUS(rc) != 0);
    assert_non_null(strstr(out, "OPS_PORT: must differ from API_PORT (both 9191)"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(the_public_port_refuses_operator_paths_and_changes_nothing),
        cmocka_unit_test(the_public_port_serves_the_api_the_probes_and_health),
        cmocka_unit_test(the_operators_port_serves_operator_paths_and_the_probes_only),
        cmocka_unit_test(ops_port_equal_to_api_port_is_refused_at_start),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
