/*
 * test_breaker_deadline: deadlines through the real binary (fixture: breakerfx): a timeout
 * answers at the deadline and frees the connection; a statement on an event thread past its
 * deadline is cancelled and its connection reused; a tenant's reads share its connection (a
 * lane), each answered with its own rows; a lane past its deadline is cancelled whole and its
 * connection reused; a read that fails on a lane fails alone.
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

/* breakerfx's servers on a database of their own: the test files of one pass run at once. */
static int setup(void **state)
{
    brfx_suite.name = "breaker_deadline";
    return brfx_setup(state);
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
    return h_sql_int(brfx_suite.db_url, sql);
}

/* Statements of app that PostgreSQL is running (here: waiting for the test's lock). */
static int64_t active_statements(const char *app)
{
    return running_of(app, "count(*)", "");
}

static PGconn *lock_tenant_data(void)
{
    PGconn *locker = PQconnectdb(brfx_suite.db_url);
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
    assert_int_equal(brfx_get(&brfx_fast, "/api/data", "free", "locked"),
                     200); /* warm a connection */
    json_t *cp0 = brfx_tier_section(&brfx_fast, "free", "connectionPool");
    int64_t timeouts0 = h_metric(brfx_fast.base, "free", "circuitBreaker", "timeouts");
    PGconn *locker = lock_tenant_data();
    const char *h[] = {"X-Tenant-Tier: free", "X-Tenant-Id: locked", NULL};
    struct h_resp r;
    h_get(h_url(&brfx_fast, "/api/data"), h, &r);
    assert_int_equal(r.status, 504);
    json_t *j = h_json(&r);
    assert_string_equal(json_string_value(json_object_get(j, "error")), "timeout");
    json_decref(j);
    h_resp_free(&r);
    /* The lock is still held: only a cancel ends the statement that waits for it. */
    assert_true(H_WAIT(active_statements("bulkhead-free") == 0, 5000));
    assert_true(H_WAIT(h_metric(brfx_fast.base, "free", "connectionPool", "active") == 0 &&
                           h_metric(brfx_fast.base, "free", "connectionPool", "idle") >= 1,
                       5000));
    unlock_tenant_data(locker);
    assert_int_equal(h_metric(brfx_fast.base, "free", "circuitBreaker", "timeouts"), timeouts0 + 1);
    assert_int_equal(brfx_get(&brfx_fast, "/api/data", "free", "locked"), 200);
    json_t *cp1 = brfx_tier_section(&brfx_fast, "free", "connectionPool");
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
    return h_server_start(s, brfx_suite.db_url, e);
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
        ids[i] = h_sql_int(brfx_suite.db_url, sql);
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
    assert_int_equal(h_sql_int(brfx_suite.db_url, sql), 1);
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
    assert_int_equal(brfx_get(&brfx_fast, "/api/data", "free", "timeouts"),
                     200); /* warm a connection */
    json_t *cp0 = brfx_tier_section(&brfx_fast, "free", "connectionPool");
    json_t *cb0 = brfx_tier_section(&brfx_fast, "free", "circuitBreaker");
    const char *h[] = {"X-Tenant-Tier: free", "X-Tenant-Id: timeouts", NULL};
    struct h_resp r;
    h_get(h_url(&brfx_fast, "/api/data?delay_ms=10000"), h, &r);
    assert_int_equal(r.status, 504);
    assert_true(r.seconds < 3.0); /* breaker_timeout_ms is 500; the query would take 10 s */
    json_t *j = h_json(&r);
    assert_string_equal(json_string_value(json_object_get(j, "error")), "timeout");
    json_decref(j);
    h_resp_free(&r);
    /* The statement was cancelled in PostgreSQL and the same connection came back. */
    assert_true(H_WAIT(h_sql_int(brfx_suite.db_url, "SELECT count(*) FROM pg_stat_activity WHERE "
                                                    "datname = current_database() AND "
                                                    "application_name = 'bulkhead-free' AND "
                                                    "state = 'active'") == 0,
                       5000));
    assert_true(H_WAIT(h_metric(brfx_fast.base, "free", "connectionPool", "active") == 0 &&
                           h_metric(brfx_fast.base, "free", "connectionPool", "idle") >= 1,
                       5000));
    json_t *cp1 = brfx_tier_section(&brfx_fast, "free", "connectionPool");
    assert_int_equal(json_integer_value(json_object_get(cp1, "closedBroken")),
                     json_integer_value(json_object_get(cp0, "closedBroken")));
    json_t *cb1 = brfx_tier_section(&brfx_fast, "free", "circuitBreaker");
    assert_int_equal(json_integer_value(json_object_get(cb1, "timeouts")),
                     json_integer_value(json_object_get(cb0, "timeouts")) + 1);
    assert_int_equal(brfx_get(&brfx_fast, "/api/data", "free", "timeouts"), 200);
    json_t *cp2 = brfx_tier_section(&brfx_fast, "free", "connectionPool");
    assert_int_equal(json_integer_value(json_object_get(cp2, "connects")),
                     json_integer_value(json_object_get(cp0, "connects")));
    json_decref(cp0);
    json_decref(cp1);
    json_decref(cp2);
    json_decref(cb0);
    json_decref(cb1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(a_timeout_answers_at_the_deadline_and_frees_the_connection),
        cmocka_unit_test(an_event_thread_statement_past_its_deadline_is_cancelled_and_reused),
        cmocka_unit_test(a_tenants_reads_share_its_connection_each_answered_with_its_own_rows),
        cmocka_unit_test(a_lane_past_its_deadline_is_cancelled_whole_and_its_connection_reused),
        cmocka_unit_test(a_read_that_fails_on_a_lane_fails_alone),
    };
    return cmocka_run_group_tests(tests, setup, brfx_teardown);
}
