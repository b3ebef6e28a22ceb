/*
 * test_core: the seed's contract end to end, against the real binary and a real PostgreSQL:
 * endpoints and their errors, tier isolation under saturation, pool recovery after killed
 * connections (idle ones closed without a request, and after the tier's idle timeout), tier
 * tables from a file, and graceful shutdown.
 */
#include "harness.h"

#include <pthread.h>
#include <setjmp.h>
#include <sys/wait.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

static struct h_suite suite = {.name = "core"};

static int setup(void **state)
{
    (void)state;
    return h_suite_start(&suite);
}

static int teardown(void **state)
{
    (void)state;
    h_suite_stop(&suite);
    return 0;
}

static void health_reports_healthy(void **state)
{
    (void)state;
    struct h_resp r;
    assert_int_equal(h_get(h_url(&suite.srv, "/health"), NULL, &r), 0);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "{\"status\":\"healthy\"}");
    char ct[64];
    assert_non_null(h_header(&r, "Content-Type", ct, sizeof(ct)));
    assert_string_equal(ct, "application/json");
    h_resp_free(&r);
}

static void data_returns_only_the_tiers_rows(void **state)
{
    (void)state;
    const char *tiers[] = {"free", "pro", "enterprise"};
    for (int t = 0; t < 3; t++) {
        char hdr[64], ten[64];
        snprintf(hdr, sizeof(hdr), "X-Tenant-Tier: %s", tiers[t]);
        snprintf(ten, sizeof(ten), "X-Tenant-Id: reader-%d", t);
        const char *h[] = {hdr, NULL};
        (void)ten;
        struct h_resp r;
        assert_int_equal(h_get(h_url(&suite.srv, "/api/data"), h, &r), 0);
        assert_int_equal(r.status, 200);
        json_t *rows = h_json(&r);
        assert_true(json_is_array(rows));
        assert_int_equal(json_array_size(rows), 10); /* init-db.sql seeds 10 per tier */
        size_t i;
        json_t *row;
        json_array_foreach(rows, i, row)
        {
            assert_string_equal(json_string_value(json_object_get(row, "tier")), tiers[t]);
            assert_true(json_is_object(json_object_get(row, "payload")));
            assert_true(json_is_integer(json_object_get(row, "id")));
            assert_true(json_is_string(json_object_get(row, "created_at")));
        }
        json_decref(rows);
        h_resp_free(&r);
    }
}

static void assert_error(const char *path, const char *const *hdrs, long status, const char *code)
{
    struct h_resp r;
    assert_int_equal(h_get(h_url(&suite.srv, path), hdrs, &r), 0);
    if (r.status != status)
        fprintf(stderr, "%s: got %ld %s\n", path, r.status, r.body);
    assert_int_equal(r.status, status);
    json_t *j = h_json(&r);
    assert_non_null(j);
    assert_string_equal(json_string_value(json_object_get(j, "error")), code);
    assert_true(json_is_string(json_object_get(j, "message")));
    json_decref(j);
    h_resp_free(&r);
}

static void missing_or_unknown_tier_is_400_listing_tiers(void **state)
{
    (void)state;
    const char *unknown[] = {"X-Tenant-Tier: platinum", NULL};
    const char *paths[] = {"/api/data", "/api/data"};
    const char *const *hdrs[] = {NULL, unknown};
    for (int i = 0; i < 2; i++) {
        struct h_resp r;
        assert_int_equal(h_get(h_url(&suite.srv, paths[i]), hdrs[i], &r), 0);
        assert_int_equal(r.status, 400);
        json_t *j = h_json(&r);
        assert_string_equal(json_string_value(json_object_get(j, "error")), "invalid_tier");
        json_t *valid = json_object_get(j, "valid_tiers");
        assert_int_equal(json_array_size(valid), 3);
        assert_string_equal(json_string_value(json_array_get(valid, 0)), "free");
        assert_string_equal(json_string_value(json_array_get(valid, 1)), "pro");
        assert_string_equal(json_string_value(json_array_get(valid, 2)), "enterprise");
        assert_non_null(
            strstr(json_string_value(json_object_get(j, "message")), "free, pro, enterprise"));
        json_decref(j);
        h_resp_free(&r);
    }
}

static void bad_arguments_are_400_and_consume_nothing(void **state)
{
    (void)state;
    const char *h[] = {"X-Tenant-Tier: free", "X-Tenant-Id: bad-args", NULL};
    const char *bad[] = {"/api/data?delay_ms=abc",
                         "/api/data?delay_ms=-1",
                         "/api/data?delay_ms=30001",
                         "/api/data?delay_ms=1.5",
                         "/api/data?delay_ms=",
                         "/api/data?delay_ms=%2B5",
                         "/api/data?force_error=yes",
                         "/api/data?limit=0",
                         "/api/data?limit=1001",
                         "/api/data?cursor=x",
                         "/api/data?delay_ms=99999999999999999999999"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_error(bad[i], h, 400, "invalid_argument");
    const char *badten[] = {"X-Tenant-Tier: free", "X-Tenant-Id: no spaces", NULL};
    assert_error("/api/data", badten, 400, "invalid_tenant");

    /* None of them used the tenant's rate limit: the next request sees 99 remaining. */
    struct h_resp r;
    assert_int_equal(h_get(h_url(&suite.srv, "/api/data"), h, &r), 0);
    assert_int_equal(r.status, 200);
    char v[32];
    assert_non_null(h_header(&r, "RateLimit-Remaining", v, sizeof(v)));
    assert_string_equal(v, "99");
    h_resp_free(&r);
}

static void unknown_path_404_wrong_method_405(void **state)
{
    (void)state;
    assert_error("/nope", NULL, 404, "not_found");
    struct h_resp r;
    assert_int_equal(h_request("DELETE", h_url(&suite.srv, "/health"), NULL, NULL, &r), 0);
    assert_int_equal(r.status, 405);
    char allow[64];
    assert_non_null(h_header(&r, "Allow", allow, sizeof(allow)));
    assert_string_equal(allow, "GET, HEAD");
    json_t *j = h_json(&r);
    assert_string_equal(json_string_value(json_object_get(j, "error")), "method_not_allowed");
    json_decref(j);
    h_resp_free(&r);

    assert_int_equal(h_request("PUT", h_url(&suite.srv, "/api/data"), NULL, NULL, &r), 0);
    assert_int_equal(r.status, 405);
    assert_non_null(h_header(&r, "Allow", allow, sizeof(allow)));
    assert_string_equal(allow, "GET, HEAD, POST");
    h_resp_free(&r);
}

static void force_error_runs_a_failing_statement(void **state)
{
    (void)state;
    const char *h[] = {"X-Tenant-Tier: pro", "X-Tenant-Id: forcer", NULL};
    struct h_resp r;
    assert_int_equal(h_get(h_url(&suite.srv, "/api/data?force_error=true"), h, &r), 0);
    assert_int_equal(r.status, 500);
    json_t *j = h_json(&r);
    assert_string_equal(json_string_value(json_object_get(j, "error")), "database_error");
    /* The error came from PostgreSQL itself. */
    assert_non_null(strstr(json_string_value(json_object_get(j, "message")), "division by zero"));
    json_decref(j);
    h_resp_free(&r);
    /* force_error=false is an ordinary read. */
    assert_int_equal(h_get(h_url(&suite.srv, "/api/data?force_error=false"), h, &r), 0);
    assert_int_equal(r.status, 200);
    h_resp_free(&r);
}

static void pages_follow_the_cursor(void **state)
{
    (void)state;
    const char *h[] = {"X-Tenant-Tier: enterprise", NULL};
    struct h_resp r;
    assert_int_equal(h_get(h_url(&suite.srv, "/api/data?limit=4"), h, &r), 0);
    assert_int_equal(r.status, 200);
    json_t *p1 = h_json(&r);
    assert_int_equal(json_array_size(p1), 4);
    char cur[32];
    assert_non_null(h_header(&r, "X-Next-Cursor", cur, sizeof(cur)));
    assert_int_equal(atoll(cur), json_integer_value(json_object_get(json_array_get(p1, 3), "id")));
    h_resp_free(&r);
    char path[80];
    snprintf(path, sizeof(path), "/api/data?limit=4&cursor=%s", cur);
    assert_int_equal(h_get(h_url(&suite.srv, path), h, &r), 0);
    json_t *p2 = h_json(&r);
    assert_int_equal(json_array_size(p2), 4);
    assert_true(json_integer_value(json_object_get(json_array_get(p2, 0), "id")) > atoll(cur));
    h_resp_free(&r);
    snprintf(path, sizeof(path), "/api/data?limit=4&cursor=%lld",
             (long long)json_integer_value(json_object_get(json_array_get(p2, 3), "id")));
    assert_int_equal(h_get(h_url(&suite.srv, path), h, &r), 0);
    json_t *p3 = h_json(&r);
    assert_int_equal(json_array_size(p3), 2); /* 10 rows: 4 + 4 + 2 */
    assert_null(h_header(&r, "X-Next-Cursor", cur, sizeof(cur)));
    h_resp_free(&r);
    json_decref(p1);
    json_decref(p2);
    json_decref(p3);
}

static void metrics_show_every_tier_with_seed_fields(void **state)
{
    (void)state;
    json_t *m = h_get_json(h_url(&suite.srv, "/metrics/bulkheads"));
    assert_non_null(m);
    const char *tiers[] = {"free", "pro", "enterprise"};
    const int64_t conns[] = {5, 20, 50}, threads[] = {10, 30, 60};
    for (int t = 0; t < 3; t++) {
        json_t *tj = json_object_get(m, tiers[t]);
        assert_non_null(tj);
        json_t *cp = json_object_get(tj, "connectionPool");
        assert_int_equal(json_integer_value(json_object_get(cp, "max")), conns[t]);
        assert_true(json_is_integer(json_object_get(cp, "active")));
        assert_true(json_is_integer(json_object_get(cp, "idle")));
        assert_true(json_is_integer(json_object_get(cp, "pending")));
        json_t *tp = json_object_get(tj, "threadPool");
        assert_int_equal(json_integer_value(json_object_get(tp, "poolSize")), threads[t]);
        assert_true(json_is_integer(json_object_get(tp, "active")));
        assert_true(json_is_integer(json_object_get(tp, "queued")));
        assert_true(json_is_integer(json_object_get(tp, "queueLimit")));
        assert_true(json_is_integer(json_object_get(tp, "completed")));
        json_t *cb = json_object_get(tj, "circuitBreaker");
        assert_non_null(json_string_value(json_object_get(cb, "state")));
    }
    json_decref(m);
}

static void request_id_is_echoed_or_generated(void **state)
{
    (void)state;
    const char *h[] = {"X-Request-Id: trace-123.abc", NULL};
    struct h_resp r;
    char v[80];
    assert_int_equal(h_get(h_url(&suite.srv, "/health"), h, &r), 0);
    assert_string_equal(h_header(&r, "X-Request-Id", v, sizeof(v)), "trace-123.abc");
    h_resp_free(&r);
    const char *bad[] = {"X-Request-Id: has spaces in it", NULL};
    assert_int_equal(h_get(h_url(&suite.srv, "/health"), bad, &r), 0);
    assert_non_null(h_header(&r, "X-Request-Id", v, sizeof(v)));
    assert_string_not_equal(v, "has spaces in it");
    assert_true(strlen(v) > 8);
    h_resp_free(&r);
}

/* ---- saturation ------------------------------------------------------------------------- */

struct burst_ctx {
    char url[256];
    const char *const *hdrs;
    int n;
    long statuses[64];
};

static void *burst_thread(void *arg)
{
    struct burst_ctx *b = arg;
    h_burst("GET", b->url, b->hdrs, b->n, b->n, b->statuses, NULL);
    return NULL;
}

static void saturated_free_tier_stays_in_its_compartment(void **state)
{
    (void)state;
    /* 4 tenants x 10 slow requests: more than free's 10 workers + 20 queue slots. */
    static const char *hdr[4][3] = {
        {"X-Tenant-Tier: free", "X-Tenant-Id: sat-a", NULL},
        {"X-Tenant-Tier: free", "X-Tenant-Id: sat-b", NULL},
        {"X-Tenant-Tier: free", "X-Tenant-Id: sat-c", NULL},
        {"X-Tenant-Tier: free", "X-Tenant-Id: sat-d", NULL},
    };
    struct burst_ctx b[4];
    pthread_t th[4];
    double held0 = h_prom(suite.srv.base, "bulkhead_tarpit_held_total", NULL);
    for (int i = 0; i < 4; i++) {
        snprintf(b[i].url, sizeof(b[i].url), "%s", h_url(&suite.srv, "/api/data?delay_ms=1500"));
        b[i].hdrs = hdr[i];
        b[i].n = 10;
        pthread_create(&th[i], NULL, burst_thread, &b[i]);
    }
    /* While free is saturated: at most 5 free connections, and enterprise answers. */
    int64_t max_free = 0, samples = 0, ent_ok = 0;
    const char *eh[] = {"X-Tenant-Tier: enterprise", NULL};
    int64_t until = h_now_ms() + 1200;
    while (h_now_ms() < until) {
        int64_t n = h_sql_int(suite.db_url, "SELECT count(*) FROM pg_stat_activity "
                                            "WHERE datname = current_database() AND "
                                            "application_name = 'bulkhead-free'");
        assert_true(n >= 0);
        if (n > max_free)
            max_free = n;
        samples++;
        struct h_resp r;
        h_get(h_url(&suite.srv, "/api/data"), eh, &r);
        assert_int_equal(r.status, 200);
        assert_true(r.seconds < 1.0); /* generous: typically a few ms */
        ent_ok++;
        h_resp_free(&r);
    }
    for (int i = 0; i < 4; i++)
        pthread_join(th[i], NULL);
    assert_true(samples > 3);
    assert_true(max_free >= 1);
    assert_true(max_free <= 5);
    assert_true(ent_ok > 3);

    int ok = 0, full = 0, other503 = 0;
    for (int i = 0; i < 4; i++) {
        ok += h_count(b[i].statuses, 10, 200);
        other503 += h_count(b[i].statuses, 10, 503);
    }
    /* 40 requests, 10 workers + 20 queue slots: at least 10 refused as bulkhead_full, the first
     * at once and the rest held by the tarpit (the same client, back inside its Retry-After),
     * then admitted again (served if a slot came free meanwhile). A request is counted when it
     * completes, just after its response went out: wait for it. */
    assert_true(H_WAIT(
        (full = (int)h_metric(suite.srv.base, "free", "requests", "bulkhead_full") +
                (int)(h_prom(suite.srv.base, "bulkhead_tarpit_held_total", NULL) - held0)) >= 10,
        10000));
    assert_true(full >= 10);
    assert_true(ok >= 1);
    assert_int_equal(ok + other503, 40);
    /* Everything was answered and the compartment drained. */
    json_t *m = h_get_json(h_url(&suite.srv, "/metrics/bulkheads"));
    json_t *tp = json_object_get(json_object_get(m, "free"), "threadPool");
    assert_int_equal(json_integer_value(json_object_get(tp, "active")), 0);
    assert_int_equal(json_integer_value(json_object_get(tp, "queued")), 0);
    json_decref(m);
}

/* ---- recovery --------------------------------------------------------------------------- */

static void pools_recover_from_killed_connections(void **state)
{
    (void)state;
    const char *h[] = {"X-Tenant-Tier: enterprise", NULL};
    long st[8];
    assert_int_equal(h_burst("GET", h_url(&suite.srv, "/api/data"), h, 8, 8, st, NULL), 0);
    assert_int_equal(h_count(st, 8, 200), 8);
    /* A connect started during the burst may still be running: one that ends after the kill
     * below would put a live connection at the head of the idle list, in front of the dead
     * ones, and the sequential requests would never meet them. Kill when none is opening. */
    const char *b = suite.srv.base;
    assert_true(H_WAIT(h_metric(b, "enterprise", "connectionPool", "opening") == 0 &&
                           h_metric(b, "enterprise", "connectionPool", "active") == 0,
                       10000));
    assert_true(h_metric(b, "enterprise", "connectionPool", "idle") >= 1);
    /* With a timeout, pg_terminate_backend returns once each backend has exited, so every idle
     * connection is dead (not about to die) when the requests below arrive: two idle ones
     * still dying in a row would fail a read past its one retry. */
    int64_t killed = h_sql_int(suite.db_url, "SELECT count(pg_terminate_backend(pid, 5000)) FROM "
                                             "pg_stat_activity WHERE datname = current_database() "
                                             "AND application_name = 'bulkhead-enterprise'");
    assert_true(killed >= 1);
    /* Every request after the kill succeeds: dead connections are detected and replaced. */
    for (int i = 0; i < 20; i++) {
        struct h_resp r;
        h_get(h_url(&suite.srv, "/api/data"), h, &r);
        assert_int_equal(r.status, 200);
        h_resp_free(&r);
    }
    json_t *m = h_get_json(h_url(&suite.srv, "/metrics/bulkheads"));
    json_t *cp = json_object_get(json_object_get(m, "enterprise"), "connectionPool");
    assert_true(json_integer_value(json_object_get(cp, "closedBroken")) >= 1);
    json_decref(m);
}

/* pro's connections are killed while idle and no request runs: the janitor finds them (their
 * sockets are readable) and closes them, counted as broken, without a request meeting them. */
static void idle_connections_killed_by_the_database_are_closed_without_a_request(void **state)
{
    (void)state;
    const char *b = suite.srv.base;
    /* Slow reads never share a connection: four of them open four. */
    const char *h[] = {"X-Tenant-Tier: pro", NULL};
    long st[4];
    assert_int_equal(h_burst("GET", h_url(&suite.srv, "/api/data?delay_ms=100"), h, 4, 4, st, NULL),
                     0);
    assert_int_equal(h_count(st, 4, 200), 4);
    assert_true(H_WAIT(h_metric(b, "pro", "connectionPool", "opening") == 0 &&
                           h_metric(b, "pro", "connectionPool", "active") == 0,
                       10000));
    int64_t idle = h_metric(b, "pro", "connectionPool", "idle");
    int64_t broken0 = h_metric(b, "pro", "connectionPool", "closedBroken");
    assert_true(idle >= 4);
    int64_t t0 = h_now_ms();
    int64_t killed = h_sql_int(suite.db_url, "SELECT count(pg_terminate_backend(pid, 5000)) FROM "
                                             "pg_stat_activity WHERE datname = current_database() "
                                             "AND application_name = 'bulkhead-pro'");
    assert_int_equal(killed, idle);
    bool closed = H_WAIT(h_metric(b, "pro", "connectionPool", "idle") == 0 &&
                             h_metric(b, "pro", "connectionPool", "closedBroken") == broken0 + idle,
                         10000);
    printf("# %lld idle connections killed: %s after %lld ms, no request sent\n", (long long)idle,
           closed ? "closed" : "NOT closed", (long long)(h_now_ms() - t0));
    assert_true(closed);
    assert_true(
        h_server_log_has(&suite.srv, "idle connections were killed or closed by the database"));
    /* The next request opens a connection as usual. */
    struct h_resp r;
    h_get(h_url(&suite.srv, "/api/data"), h, &r);
    assert_int_equal(r.status, 200);
    h_resp_free(&r);
}

/* db_idle_timeout_ms: connections idle that long are closed by the janitor (closedIdle), not as
 * broken; the tier opens new ones on demand. */
static void connections_idle_past_the_tiers_timeout_are_closed(void **state)
{
    (void)state;
    char env[400];
    assert_int_equal(h_tiers_env("tiers-idle.json",
                                 "{\"pro\": {\"db_idle_timeout_ms\": 300, \"rate_limit\": 0}}", env,
                                 sizeof(env)),
                     0);
    const char *e[] = {env, NULL};
    struct h_server s2;
    assert_int_equal(h_server_start(&s2, suite.db_url, e), 0);
    const char *h[] = {"X-Tenant-Tier: pro", NULL};
    long st[3];
    assert_int_equal(h_burst("GET", h_url(&s2, "/api/data?delay_ms=50"), h, 3, 3, st, NULL), 0);
    assert_int_equal(h_count(st, 3, 200), 3);
    assert_true(H_WAIT(h_metric(s2.base, "pro", "connectionPool", "opening") == 0, 10000));
    int64_t opened = h_metric(s2.base, "pro", "connectionPool", "connects");
    assert_true(opened >= 3);
    assert_true(H_WAIT(h_metric(s2.base, "pro", "connectionPool", "idle") == 0 &&
                           h_metric(s2.base, "pro", "connectionPool", "active") == 0,
                       10000));
    assert_int_equal(h_metric(s2.base, "pro", "connectionPool", "closedIdle"), opened);
    assert_int_equal(h_metric(s2.base, "pro", "connectionPool", "closedBroken"), 0);
    struct h_resp r;
    h_get(h_url(&s2, "/api/data"), h, &r);
    assert_int_equal(r.status, 200);
    h_resp_free(&r);
    assert_int_equal(h_server_stop(&s2, SIGTERM, 20000), 0);
}

/* ---- graceful shutdown ------------------------------------------------------------------ */

struct inflight {
    char url[256];
    long status[6];
};

static void *inflight_thread(void *arg)
{
    struct inflight *f = arg;
    const char *h[] = {"X-Tenant-Tier: pro", "X-Tenant-Id: drain", NULL};
    h_burst("GET", f->url, h, 6, 6, f->status, NULL);
    return NULL;
}

static void sigterm_finishes_in_flight_requests(void **state)
{
    (void)state;
    struct h_server s2;
    assert_int_equal(h_server_start(&s2, suite.db_url, NULL), 0);
    struct inflight f;
    snprintf(f.url, sizeof(f.url), "%s", h_url(&s2, "/api/data?delay_ms=1000"));
    pthread_t th;
    pthread_create(&th, NULL, inflight_thread, &f);
    assert_true(H_WAIT(h_metric(s2.base, "pro", "threadPool", "active") == 6, 5000));
    int rc = h_server_stop(&s2, SIGTERM, 20000);
    pthread_join(th, NULL);
    assert_int_equal(rc, 0);
    assert_int_equal(h_count(f.status, 6, 200), 6);
    assert_true(h_server_log_has(&s2, "stopped cleanly"));
}

/* ---- tier tables -------------------------------------------------------------------------- */

static void a_fourth_tier_comes_from_the_tiers_file(void **state)
{
    (void)state;
    char env[400];
    assert_int_equal(h_tiers_env("tiers-gold.json",
                                 "{\"free\": {\"workers\": 2, \"db_max\": 1, \"rate_limit\": 3},"
                                 " \"gold\": {\"workers\": 4, \"db_max\": 3, \"rate_limit\": 0}}",
                                 env, sizeof(env)),
                     0);
    const char *e[] = {env, NULL};
    struct h_server s2;
    assert_int_equal(h_server_start(&s2, suite.db_url, e), 0);
    char u[200];
    snprintf(u, sizeof(u), "%s/api/data", s2.base);
    const char *gold[] = {"X-Tenant-Tier: gold", NULL};
    struct h_resp r;
    assert_int_equal(h_get(u, gold, &r), 0);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "[]"); /* no rows for the new tier yet */
    h_resp_free(&r);
    const char *pro[] = {"X-Tenant-Tier: pro", NULL};
    assert_int_equal(h_get(u, pro, &r), 0);
    assert_int_equal(r.status, 400); /* the file replaced the table: pro is gone */
    h_resp_free(&r);
    snprintf(u, sizeof(u), "%s/metrics/bulkheads", s2.base);
    json_t *m = h_get_json(u);
    assert_int_equal(json_object_size(m), 2);
    assert_int_equal(json_integer_value(json_object_get(
                         json_object_get(json_object_get(m, "gold"), "threadPool"), "poolSize")),
                     4);
    assert_int_equal(json_integer_value(json_object_get(
                         json_object_get(json_object_get(m, "free"), "connectionPool"), "max")),
                     1);
    json_decref(m);
    assert_int_equal(h_server_stop(&s2, SIGTERM, 20000), 0);
}

static void bad_tier_files_are_refused_naming_the_key(void **state)
{
    (void)state;
    struct {
        const char *json;
        const char *expect;
    } cases[] = {
        {"{\"free\": {\"workers\": 0}}", "tiers.free.workers"},
        {"{\"free\": {\"wrokers\": 3}}", "tiers.free.wrokers: unknown key"},
        {"{\"free\": {\"db_max\": \"five\"}}", "tiers.free.db_max"},
        {"{\"Free Tier\": {}}", "a tier name is"},
        {"{\"free\": ", "invalid JSON"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char path[300];
        snprintf(path, sizeof(path), "%s/tiers-bad-%zu.json", getenv("BH_TEST_WORK"), i);
        FILE *f = fopen(path, "w");
        fputs(cases[i].json, f);
        fclose(f);
        char cmd[900];
        snprintf(cmd, sizeof(cmd), "cd %s && TIERS_FILE=%s DATABASE_URL=%s %s/%s 2>&1",
                 getenv("BH_TEST_WORK"), path, suite.db_url, getenv("BH_ROOT"),
                 getenv("BULKHEAD_BIN") ? getenv("BULKHEAD_BIN") : "build/bulkhead");
        FILE *p = popen(cmd, "r");
        char out[2000] = "";
        size_t n = fread(out, 1, sizeof(out) - 1, p);
        out[n] = '\0';
        int status = pclose(p);
        assert_int_equal(WEXITSTATUS(status), 1);
        if (!strstr(out, cases[i].expect))
            fprintf(stderr, "case %zu: %s\n", i, out);
        assert_non_null(strstr(out, cases[i].expect));
        assert_non_null(strstr(out, "configuration refused"));
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(health_reports_healthy),
        cmocka_unit_test(data_returns_only_the_tiers_rows),
        cmocka_unit_test(missing_or_unknown_tier_is_400_listing_tiers),
        cmocka_unit_test(bad_arguments_are_400_and_consume_nothing),
        cmocka_unit_test(unknown_path_404_wrong_method_405),
        cmocka_unit_test(force_error_runs_a_failing_statement),
        cmocka_unit_test(pages_follow_the_cursor),
        cmocka_unit_test(metrics_show_every_tier_with_seed_fields),
        cmocka_unit_test(request_id_is_echoed_or_generated),
        cmocka_unit_test(saturated_free_tier_stays_in_its_compartment),
        cmocka_unit_test(pools_recover_from_killed_connections),
        cmocka_unit_test(idle_connections_killed_by_the_database_are_closed_without_a_request),
        cmocka_unit_test(connections_idle_past_the_tiers_timeout_are_closed),
        cmocka_unit_test(sigterm_finishes_in_flight_requests),
        cmocka_unit_test(a_fourth_tier_comes_from_the_tiers_file),
        cmocka_unit_test(bad_tier_files_are_refused_naming_the_key),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
