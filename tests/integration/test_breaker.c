/*
 * test_breaker: layer 4 through the real binary: the seed's manual trigger verbatim, fail-fast
 * without touching a worker, half-open recovery both ways, what does and does not count, real
 * timeouts that give the connection back, a database outage and recovery without a restart,
 * and the operator controls.
 */
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
     * and by the full bulkhead (503; one the tarpit held may be served when admitted again):
     * neither is a failure of the tier. */
    const char *h[] = {"X-Tenant-Tier: tiny", "X-Tenant-Id: rejected", NULL};
    long st[10];
    assert_int_equal(h_burst("GET", h_url(&fast, "/api/data?delay_ms=200"), h, 10, 10, st, NULL),
                     0);
    assert_int_equal(h_count(st, 10, 429), 7);
    assert_int_equal(h_count(st, 10, 503) + h_count(st, 10, 200), 3);
    json_t *cb = tier_section(&fast, "tiny", "circuitBreaker");
    assert_int_equal(json_integer_value(json_object_get(cb, "failures")), 0);
    assert_int_equal(json_integer_value(json_object_get(cb, "timeouts")), 0);
    assert_string_equal(json_string_value(json_object_get(cb, "state")), "CLOSED");
    json_decref(cb);
}

/* One figure (what) over the statements of app that PostgreSQL is running, those matching
 * "AND ..." more too ("" for all). */
static int64_t running_of(const char *app, const char *what, const char *more)
{
    char sql[300];
    snprintf(sql, sizeof(sql),
             "SELECT %s FROM pg_stat_activity WHERE datname = current_database() AND "
             "application_name = '%s' AND state = 'active'%s",
             what, app, more);
    return h_sql_int(suite.db_url, sql);
}

/* Statements of app that PostgreSQL is running (here: waiting for the test's lock). */
static int64_t active_statements(const char *app)
{
    return running_of(app, "count(*)", "");
}

static PGconn *lock_tenant_data(void)
{
    PGconn *locker = PQconnectdb(suite.db_url);
    assert_int_equal(PQstatus(locker), CONNECTION_OK);
    PGresult *res = PQexec(locker, "BEGIN; LOCK TABLE tenant_data IN ACCESS EXCLUSIVE MODE");
    assert_int_equal(PQresultStatus(res), PGRES_COMMAND_OK);
    PQclear(res);
    return locker;
}

static void unlock_tenant_data(PGconn *locker)
{
    PQclear(PQexec(locker, "COMMIT"));
    PQfinish(locker);
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
    PGconn *locker = lock_tenant_data();
    const char *h[] = {"X-Tenant-Tier: free", "X-Tenant-Id: locked", NULL};
    struct h_resp r;
    h_get(h_url(&fast, "/api/data"), h, &r);
    assert_int_equal(r.status, 504);
    json_t *j = h_json(&r);
    assert_string_equal(json_string_value(json_object_get(j, "error")), "timeout");
    json_decref(j);
    h_resp_free(&r);
    /* The lock is still held: only a cancel ends the statement that waits for it. */
    assert_true(H_WAIT(active_statements("bulkhead-free") == 0, 5000));
    assert_true(H_WAIT(h_metric(fast.base, "free", "connectionPool", "active") == 0 &&
                           h_metric(fast.base, "free", "connectionPool", "idle") >= 1,
                       5000));
    unlock_tenant_data(locker);
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

/* ---- lanes: a tenant's reads pipelined on one connection -------------------------------- */

/* One event loop and a join window of a minute: every read of a tenant that arrives while its
 * lane has room joins it, whatever the timing. */
#define LANE_TIERS                                                                                 \
    "{\"free\": {\"workers\": 4, \"db_max\": 4, \"rate_limit\": 0, \"breaker_timeout_ms\": 500,"   \
    " \"breaker_reset_ms\": 400, \"breaker_min_calls\": 100, \"tenant_share_pct\": 100,"           \
    " \"tenant_reserve_pct\": 0},"                                                                 \
    " \"enterprise\": {\"workers\": 8, \"db_max\": 2, \"breaker_timeout_ms\": 5000}}"

static int lane_server(struct h_server *s)
{
    char env[400];
    if (h_tiers_env("tiers-lanes.json", LANE_TIERS, env, sizeof(env)))
        return -1;
    const char *e[] = {env, "HTTP_THREADS=1", "DB_PIPELINE_JOIN_MS=60000", "DB_PIPELINE_DEPTH=4",
                       NULL};
    return h_server_start(s, suite.db_url, e);
}

struct lane_get {
    const struct h_server *s;
    char path[128];
    const char *tier;
    struct h_resp r;
    pthread_t th;
};

static void *lane_get_main(void *arg)
{
    struct lane_get *g = arg;
    char th[64];
    snprintf(th, sizeof(th), "X-Tenant-Tier: %s", g->tier);
    const char *h[] = {th, NULL}; /* the tenant is the client's address: one tenant */
    h_get(h_url(g->s, g->path), h, &g->r);
    return NULL;
}

static void lane_get_start(struct lane_get *g, const struct h_server *s, const char *tier,
                           const char *path)
{
    g->s = s;
    g->tier = tier;
    snprintf(g->path, sizeof(g->path), "%s", path);
    assert_int_equal(pthread_create(&g->th, NULL, lane_get_main, g), 0);
}

/* Start the lane server and warm one enterprise connection; ids[i] is the id of the
 * enterprise row at offset first + i, i < n (the row a read with cursor ids[i] - 1 starts at). */
static void lane_server_warm(struct h_server *s, int64_t *ids, int n, int first)
{
    assert_int_equal(lane_server(s), 0);
    for (int i = 0; i < n; i++) {
        char sql[160];
        snprintf(sql, sizeof(sql),
                 "SELECT id FROM tenant_data WHERE tier = 'enterprise' ORDER BY id OFFSET %d "
                 "LIMIT 1",
                 first + i);
        ids[i] = h_sql_int(suite.db_url, sql);
        assert_true(ids[i] > 0);
    }
    const char *eh[] = {"X-Tenant-Tier: enterprise", NULL};
    struct h_resp warm;
    h_get(h_url(s, "/api/data?limit=1"), eh, &warm);
    assert_int_equal(warm.status, 200);
    h_resp_free(&warm);
}

/* Four reads of one tenant, the first held by a lock: the three others are sent behind it on
 * its connection (one connection for four statements), and each is answered with its own page
 * (cursors chosen so that each expects a different row). */
static void a_tenants_reads_share_its_connection_each_answered_with_its_own_rows(void **state)
{
    (void)state;
    struct h_server s;
    int64_t ids[4];
    lane_server_warm(&s, ids, 4, 0);
    int64_t piped0 = h_metric(s.base, "enterprise", "connectionPool", "pipelined");

    PGconn *locker = lock_tenant_data();
    struct lane_get g[4];
    lane_get_start(&g[0], &s, "enterprise", "/api/data?limit=1");
    assert_true(H_WAIT(active_statements("bulkhead-enterprise") == 1, 10000));
    for (int i = 1; i < 4; i++) {
        char path[96];
        snprintf(path, sizeof(path), "/api/data?limit=1&cursor=%lld", (long long)ids[i - 1]);
        lane_get_start(&g[i], &s, "enterprise", path);
    }
    assert_true(
        H_WAIT(h_metric(s.base, "enterprise", "connectionPool", "pipelined") == piped0 + 3, 10000));
    /* Still one statement running, on the one connection held. */
    assert_int_equal(active_statements("bulkhead-enterprise"), 1);
    assert_int_equal(h_metric(s.base, "enterprise", "connectionPool", "active"), 1);
    unlock_tenant_data(locker);
    for (int i = 0; i < 4; i++) {
        pthread_join(g[i].th, NULL);
        assert_int_equal(g[i].r.status, 200);
        json_t *rows = h_json(&g[i].r);
        assert_true(json_is_array(rows));
        assert_int_equal(json_array_size(rows), 1);
        assert_int_equal(json_integer_value(json_object_get(json_array_get(rows, 0), "id")),
                         ids[i]);
        json_decref(rows);
        h_resp_free(&g[i].r);
    }
    assert_true(H_WAIT(h_metric(s.base, "enterprise", "connectionPool", "active") == 0, 5000));
    assert_int_equal(h_server_stop(&s, SIGTERM, 20000), 0);
}

/* Three reads on one lane, all held by a lock past their deadline: each is answered 504 (the
 * first at its deadline; the others, which had time left, on another connection, blocked too,
 * at theirs), and the cancels end every statement of each lane (not only the running one)
 * while the lock is still held, so the connections come back clean and are reused. */
static void a_lane_past_its_deadline_is_cancelled_whole_and_its_connection_reused(void **state)
{
    (void)state;
    struct h_server s;
    assert_int_equal(lane_server(&s), 0);
    const char *fh[] = {"X-Tenant-Tier: free", NULL};
    /* Three connections open and idle (a delayed read runs on a worker with a connection of
     * its own): under the lock no new one could be set up (preparing its statements waits for
     * the table). */
    /* On a slow machine (ThreadSanitizer beside other tests) a delayed read may pass the 500 ms
     * call timeout: its connection is cancelled and reused, or closed, so try again until three
     * are idle (the breaker needs 100 calls before it opens). */
    long st[3];
    bool three = false;
    for (int attempt = 0; attempt < 3 && !three; attempt++) {
        assert_int_equal(
            h_burst("GET", h_url(&s, "/api/data?limit=1&delay_ms=300"), fh, 3, 3, st, NULL), 0);
        three = H_WAIT(h_metric(s.base, "free", "connectionPool", "idle") == 3, 5000);
    }
    assert_true(three);
    int64_t piped0 = h_metric(s.base, "free", "connectionPool", "pipelined");
    int64_t broken0 = h_metric(s.base, "free", "connectionPool", "closedBroken");
    int64_t timeouts0 = h_metric(s.base, "free", "circuitBreaker", "timeouts");

    PGconn *locker = lock_tenant_data();
    struct lane_get g[3];
    lane_get_start(&g[0], &s, "free", "/api/data?limit=1");
    assert_true(H_WAIT(active_statements("bulkhead-free") == 1, 10000));
    lane_get_start(&g[1], &s, "free", "/api/data?limit=2");
    lane_get_start(&g[2], &s, "free", "/api/data?limit=3");
    assert_true(
        H_WAIT(h_metric(s.base, "free", "connectionPool", "pipelined") == piped0 + 2, 10000));
    for (int i = 0; i < 3; i++) {
        pthread_join(g[i].th, NULL);
        if (g[i].r.status != 504)
            fail_msg("read %d: %ld %s", i, g[i].r.status, g[i].r.body ? g[i].r.body : "");
        h_resp_free(&g[i].r);
    }
    assert_int_equal(h_metric(s.base, "free", "circuitBreaker", "timeouts"), timeouts0 + 3);
    /* The lock is still held: only cancels end the statements that wait for it. */
    assert_true(H_WAIT(active_statements("bulkhead-free") == 0, 10000));
    assert_true(H_WAIT(h_metric(s.base, "free", "connectionPool", "active") == 0 &&
                           h_metric(s.base, "free", "connectionPool", "idle") >= 1,
                       10000));
    unlock_tenant_data(locker);
    assert_int_equal(h_metric(s.base, "free", "connectionPool", "closedBroken"), broken0);
    struct h_resp r;
    h_get(h_url(&s, "/api/data?limit=1"), fh, &r);
    assert_int_equal(r.status, 200);
    h_resp_free(&r);
    assert_int_equal(h_server_stop(&s, SIGTERM, 20000), 0);
}

/* The backend of app whose statement waits for a lock (the test's), or 0. */
static int64_t lock_waiter(const char *app)
{
    return running_of(app, "coalesce(max(pid), 0)", " AND wait_event_type = 'Lock'");
}

static void cancel_backend(int64_t pid)
{
    char sql[80];
    snprintf(sql, sizeof(sql), "SELECT pg_cancel_backend(%lld)::int", (long long)pid);
    assert_int_equal(h_sql_int(suite.db_url, sql), 1);
}

/* A GET on a connection of its own whose last line is written later (raw_finish), so that
 * two requests can reach the server in one turn of its loop. */
struct raw_get {
    int fd;
    char buf[8192];
    size_t n;
};

static void raw_start(struct raw_get *g, const struct h_server *s, const char *path)
{
    g->n = 0;
    g->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(g->fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)s->port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(g->fd, (struct sockaddr *)&a, sizeof(a)), 0);
    char req[256];
    int n = snprintf(req, sizeof(req),
                     "GET %s HTTP/1.1\r\nHost: t\r\nX-Tenant-Tier: enterprise\r\n"
                     "Connection: close\r\n",
                     path);
    assert_int_equal(write(g->fd, req, (size_t)n), n);
}

static void raw_finish(struct raw_get *g)
{
    assert_int_equal(write(g->fd, "\r\n", 2), 2);
}

/* Read the reply to its end (the server closes: Connection: close); its status, and its body
 * parsed (caller decrefs). */
static long raw_reply(struct raw_get *g, json_t **body)
{
    for (;;) {
        struct pollfd p = {.fd = g->fd, .events = POLLIN};
        assert_int_equal(poll(&p, 1, 10000), 1);
        assert_true(g->n < sizeof(g->buf) - 1);
        ssize_t r = read(g->fd, g->buf + g->n, sizeof(g->buf) - 1 - g->n);
        assert_true(r >= 0);
        if (r == 0)
            break;
        g->n += (size_t)r;
    }
    close(g->fd);
    g->buf[g->n] = '\0';
    long status = strtol(g->buf + 9, NULL, 10); /* "HTTP/1.1 200" */
    const char *b = strstr(g->buf, "\r\n\r\n");
    assert_non_null(b);
    *body = json_loads(b + 4, 0, NULL);
    return status;
}

/* Three reads of a tenant on one lane, held by a lock; an operator cancels the running
 * statement twice (pg_cancel_backend): those two reads fail (504, the cancel's outcome). The
 * last two reach the server together, so most often they leave in one batch and PostgreSQL
 * does not run the second once the first failed: it is still answered with its own row once
 * the lock goes (taking a connection again), with no connection lost. */
static void a_read_that_fails_on_a_lane_fails_alone(void **state)
{
    (void)state;
    struct h_server s;
    int64_t ids[2];
    lane_server_warm(&s, ids, 2, 2);
    int64_t piped0 = h_metric(s.base, "enterprise", "connectionPool", "pipelined");
    int64_t broken0 = h_metric(s.base, "enterprise", "connectionPool", "closedBroken");

    PGconn *locker = lock_tenant_data();
    struct lane_get first;
    lane_get_start(&first, &s, "enterprise", "/api/data?limit=1");
    int64_t pid = 0;
    assert_true(H_WAIT((pid = lock_waiter("bulkhead-enterprise")) != 0, 10000));
    struct raw_get g[2];
    for (int i = 0; i < 2; i++) {
        char path[96];
        snprintf(path, sizeof(path), "/api/data?limit=1&cursor=%lld", (long long)(ids[i] - 1));
        raw_start(&g[i], &s, path);
    }
    raw_finish(&g[0]);
    raw_finish(&g[1]);
    assert_true(
        H_WAIT(h_metric(s.base, "enterprise", "connectionPool", "pipelined") == piped0 + 2, 10000));

    cancel_backend(pid);
    pthread_join(first.th, NULL);
    assert_int_equal(first.r.status, 504);
    h_resp_free(&first.r);
    /* The first ended, so the lane's backend now waits with one of the two. */
    assert_true(H_WAIT(lock_waiter("bulkhead-enterprise") == pid, 10000));
    cancel_backend(pid);
    struct pollfd p[2] = {{.fd = g[0].fd, .events = POLLIN}, {.fd = g[1].fd, .events = POLLIN}};
    assert_true(poll(p, 2, 10000) >= 1);
    int failed = (p[0].revents & POLLIN) ? 0 : 1;
    json_t *body = NULL;
    assert_int_equal(raw_reply(&g[failed], &body), 504);
    json_decref(body);
    /* The other waits for the lock: on the lane, or on a connection taken again. */
    int64_t other = 0;
    assert_true(H_WAIT((other = lock_waiter("bulkhead-enterprise")) != 0, 10000));
    printf("# the other read %s\n",
           other == pid ? "ran in a batch of its own" : "was not run in its batch: sent again");
    unlock_tenant_data(locker);
    assert_int_equal(raw_reply(&g[1 - failed], &body), 200);
    assert_true(json_is_array(body));
    assert_int_equal(json_array_size(body), 1);
    assert_int_equal(json_integer_value(json_object_get(json_array_get(body, 0), "id")),
                     ids[1 - failed]);
    json_decref(body);
    assert_true(H_WAIT(h_metric(s.base, "enterprise", "connectionPool", "active") == 0, 5000));
    assert_int_equal(h_metric(s.base, "enterprise", "connectionPool", "closedBroken"), broken0);
    assert_int_equal(h_server_stop(&s, SIGTERM, 20000), 0);
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
                                               "datname = current_database() AND "
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
    assert_int_equal(admin(&suite.srv, "/admin/breaker/pro/open", "anything"), 404);
    assert_string_equal(breaker_state(&suite.srv, "pro"), "CLOSED");
}

static void operators_force_open_disable_and_reset(void **state)
{
    (void)state;
    const char *e[] = {"ADMIN_TOKEN=" OPS_TOKEN, NULL};
    struct h_server s;
    assert_int_equal(h_server_start(&s, suite.db_url, e), 0);
    assert_int_equal(admin(&s, "/admin/breaker/pro/open", "wrong"), 401);
    assert_int_equal(admin(&s, "/admin/breaker/pro/open", NULL), 401);
    assert_int_equal(admin(&s, "/admin/breaker/nosuch/open", OPS_TOKEN), 404);
    assert_int_equal(admin(&s, "/admin/breaker/pro/explode", OPS_TOKEN), 404);

    assert_int_equal(admin(&s, "/admin/breaker/pro/open", OPS_TOKEN), 200);
    assert_string_equal(breaker_state(&s, "pro"), "OPEN");
    assert_int_equal(get(&s, "/api/data", "pro", "ops"), 503);
    assert_int_equal(get(&s, "/api/data", "enterprise", "ops"), 200);

    assert_int_equal(admin(&s, "/admin/breaker/pro/disable", OPS_TOKEN), 200);
    for (int i = 0; i < 12; i++)
        assert_int_equal(get(&s, "/api/data?force_error=true", "pro", "ops"), 500);
    assert_string_equal(breaker_state(&s, "pro"), "CLOSED"); /* disabled: nothing trips it */
    json_t *cb = tier_section(&s, "pro", "circuitBreaker");
    assert_string_equal(json_string_value(json_object_get(cb, "mode")), "disabled");
    json_decref(cb);

    assert_int_equal(admin(&s, "/admin/breaker/pro/reset", OPS_TOKEN), 200);
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
        cmocka_unit_test(a_tenants_reads_share_its_connection_each_answered_with_its_own_rows),
        cmocka_unit_test(a_lane_past_its_deadline_is_cancelled_whole_and_its_connection_reused),
        cmocka_unit_test(a_read_that_fails_on_a_lane_fails_alone),
        cmocka_unit_test(a_database_outage_opens_breakers_and_everything_recovers),
        cmocka_unit_test(admin_endpoints_are_off_without_a_token),
        cmocka_unit_test(operators_force_open_disable_and_reset),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
