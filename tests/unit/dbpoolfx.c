/*
 * dbpoolfx: the pool tests' fixture (see dbpoolfx.h).
 */
#include "dbpoolfx.h"

#include "dbcancel.h"
#include "dbconn.h"
#include "dbpool.h"
#include "mclock.h"
#include "pgproxy.h"
#include "unitdb.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

char dbfx_url[300]; /* the shared cluster's "bulkhead" database */

PGconn *dbfx_admin; /* our observer connection, not part of any pool */

const char DBFX_A[] = "tenant-a", DBFX_B[] = "tenant-b"; /* owners: compared by address */

static const struct dbconn_stmt dbfx_stmts[] = {
    {"one", "SELECT 1"},
    {"pid", "SELECT pg_backend_pid()"},
    {"sleep", "SELECT pg_sleep($1::float8)"},
    {"div", "SELECT 1 / $1::int"},
    {"late", "SELECT 7 FROM pg_sleep($1::float8)"},
    {"peers", "SELECT count(*) FROM pg_stat_activity "
              "WHERE application_name = current_setting('application_name')"},
};

void dbfx_nap_ms(int ms)
{
    struct timespec ts = {0, ms * 1000000L};
    nanosleep(&ts, NULL);
}

/* A unique application_name for one test's pool. */
void dbfx_app_for(char *buf, size_t len, const char *tag)
{
    snprintf(buf, len, "bhu-%d-%s", (int)getpid(), tag);
}

struct dbconn_params dbfx_params(const char *conninfo, const char *app)
{
    return (struct dbconn_params){
        .conninfo = conninfo,
        .appname = app,
        .stmts = dbfx_stmts,
        .nstmts = sizeof(dbfx_stmts) / sizeof(dbfx_stmts[0]),
    };
}

/* others_active for the pools under test: a flag the test flips. */
bool dbfx_others_flag(const void *ctx)
{
    return atomic_load((const atomic_bool *)ctx);
}

/* A pool of max connections; while *others is set, a tenant holds tenant_cap at most (0: no
 * cap); `reserve` connections are kept for tenants holding none. */
struct dbpool *dbfx_mkpool_ex(const char *app, size_t max, size_t tenant_cap, size_t reserve,
                              atomic_bool *others)
{
    struct dbpool_opts o = {
        .conn = dbfx_params(dbfx_url, app),
        .max = max,
        .share = {.size = max, .cap = tenant_cap, .reserve = reserve},
        .others_active = others ? dbfx_others_flag : NULL,
        .others_ctx = others,
    };
    struct dbpool *p = NULL;
    assert_int_equal(dbpool_create(&o, &p), 0);
    return p;
}

struct dbpool *dbfx_mkpool(const char *app, size_t max, size_t tenant_cap, atomic_bool *others)
{
    return dbfx_mkpool_ex(app, max, tenant_cap, 0, others);
}

int dbfx_get(struct dbpool *p, const void *owner, int64_t wait_us, struct dbconn **c)
{
    char err[256];
    return dbpool_acquire(p, owner, mclock_now_us() + wait_us, c, err, sizeof(err));
}

struct dbpool_stats dbfx_stats(struct dbpool *p)
{
    struct dbpool_stats s;
    dbpool_stats(p, &s);
    return s;
}

/* Run a one-value statement on c and return the value as an integer. */
int64_t dbfx_q_int(struct dbconn *c, const char *stmt, const char *arg)
{
    PGresult *res = NULL;
    char err[256] = "";
    const char *vals[1] = {arg};
    int rc = dbconn_exec(c, stmt, arg ? 1 : 0, arg ? vals : NULL, mclock_now_us() + 10 * DBFX_SEC,
                         &res, err, sizeof(err));
    if (rc)
        fail_msg("%s: %d %s", stmt, rc, err);
    int64_t v = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
    PQclear(res);
    return v;
}

/* One integer from the admin connection. */
int64_t dbfx_admin_int(const char *sql, const char *arg)
{
    const char *vals[1] = {arg};
    PGresult *res =
        PQexecParams(dbfx_admin, sql, arg ? 1 : 0, NULL, arg ? vals : NULL, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK)
        fail_msg("admin query failed: %s", PQerrorMessage(dbfx_admin));
    int64_t v = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
    PQclear(res);
    return v;
}

/* Backends the server has for application_name app. */
int64_t dbfx_backends(const char *app)
{
    return dbfx_admin_int("SELECT count(*) FROM pg_stat_activity WHERE application_name = $1", app);
}

/* Poll until the server shows exactly n backends for app (closing is asynchronous). */
int64_t dbfx_wait_backends(const char *app, int64_t n)
{
    int64_t end = mclock_now_us() + DBFX_WAIT_S * DBFX_SEC, v;
    while ((v = dbfx_backends(app)) != n && mclock_now_us() < end)
        dbfx_nap_ms(5);
    return v;
}

/* Poll until n acquirers wait in the pool. */
void dbfx_wait_pending(struct dbpool *p, size_t n)
{
    int64_t end = mclock_now_us() + DBFX_WAIT_S * DBFX_SEC;
    while (dbfx_stats(p).pending != n && mclock_now_us() < end)
        dbfx_nap_ms(1);
    assert_int_equal(dbfx_stats(p).pending, n);
}

/* Poll until n connects are running (connects run on their own threads), then until idle
 * connections number n_idle (SIZE_MAX: either is not waited for). Bounded; the caller asserts. */
void dbfx_wait_opening_idle(struct dbpool *p, size_t n, size_t n_idle)
{
    int64_t end = mclock_now_us() + DBFX_WAIT_S * DBFX_SEC;
    while ((dbfx_stats(p).opening != n || (n_idle != SIZE_MAX && dbfx_stats(p).idle != n_idle)) &&
           mclock_now_us() < end)
        dbfx_nap_ms(2);
}

void dbfx_finish(struct dbpool *p, const char *app)
{
    dbpool_stop(p);
    dbpool_destroy(p);
    assert_int_equal(dbfx_wait_backends(app, 0), 0);
}

static void *dbfx_waiter_main(void *arg)
{
    struct dbfx_waiter *w = arg;
    w->rc = dbfx_get(w->p, w->owner, w->wait_us, &w->got);
    w->done_us = mclock_now_us();
    if (w->order_mu) {
        pthread_mutex_lock(w->order_mu);
        w->order[(*w->norder)++] = w->idx;
        pthread_mutex_unlock(w->order_mu);
        if (w->rc == 0)
            dbpool_release(w->p, w->got, false);
    }
    return NULL;
}

void dbfx_start_waiter(struct dbfx_waiter *w, struct dbpool *p, const void *owner, int64_t wait_us)
{
    w->p = p;
    w->owner = owner;
    w->wait_us = wait_us;
    assert_int_equal(pthread_create(&w->tid, NULL, dbfx_waiter_main, w), 0);
}

/* ---- the pool ----------------------------------------------------------------------------- */

/* Take a connection of p for A (5 s to wait) into *c; returns its backend's pid. */
int64_t dbfx_take_with_pid(struct dbpool *p, struct dbconn **c)
{
    assert_int_equal(dbfx_get(p, DBFX_A, 5 * DBFX_SEC, c), 0);
    return dbfx_q_int(*c, "pid", NULL);
}

/* ---- the event threads' ways in ----------------------------------------------------------- */

/* Backends of the pool's test sleeping in pg_sleep now (pid's statement is running). */
int64_t dbfx_sleeping(int64_t pid)
{
    char pidtxt[24];
    snprintf(pidtxt, sizeof(pidtxt), "%lld", (long long)pid);
    return dbfx_admin_int("SELECT count(*) FROM pg_stat_activity WHERE pid = $1::int "
                          "AND state = 'active' AND wait_event = 'PgSleep'",
                          pidtxt);
}

/* Poll until pid's statement is in pg_sleep: a cancel sent before it runs would find the
 * backend idle and be lost. */
void dbfx_wait_sleeping(int64_t pid)
{
    int64_t end = mclock_now_us() + DBFX_WAIT_S * DBFX_SEC;
    while (dbfx_sleeping(pid) != 1 && mclock_now_us() < end)
        dbfx_nap_ms(2);
    assert_int_equal(dbfx_sleeping(pid), 1);
}

int dbfx_group_setup(void **state)
{
    (void)state;
    if (unitdb_open(dbfx_url, sizeof(dbfx_url), &dbfx_admin))
        return -1;
    if (!dbfx_admin)
        return 0; /* every test skips */
    return 0;
}

int dbfx_group_teardown(void **state)
{
    (void)state;
    return unitdb_close(&dbfx_admin);
}
