/*
 * dbpoolfx: the fixture of the connection pool's tests (test_dbpool, test_dbpool_share,
 * test_dbpool_health, test_dbpool_event) and of test_dbconn_stmt, against the shared
 * PostgreSQL cluster (unitdb; without it every test skips).
 *
 * Each test gives its pool its own application_name (dbfx_app_for), so the observer
 * connection dbfx_admin counts the pool's backends in pg_stat_activity: what the server sees,
 * not what the pool believes. The waits poll pool or server state with a bound
 * (DBFX_WAIT_S); the caller asserts. The file that includes this includes cmocka.h first.
 */
#ifndef BULKHEAD_TESTS_DBPOOLFX_H
#define BULKHEAD_TESTS_DBPOOLFX_H

#include "dbconn.h"
#include "dbpool.h"
#include "unitdb.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define DBFX_SEC 1000000ll

#define DBFX_MS 1000ll

#define DBFX_WAIT_S 20 /* bound for any wait on the server or the pool */

extern char dbfx_url[300];

extern PGconn *dbfx_admin;

extern const char DBFX_A[], DBFX_B[];

#define DBFX_NEED_PG() UNITDB_NEED(dbfx_admin)

void dbfx_nap_ms(int ms);

/* A unique application_name for one test's pool. */
void dbfx_app_for(char *buf, size_t len, const char *tag);

struct dbconn_params dbfx_params(const char *conninfo, const char *app);

/* others_active for the pools under test: a flag the test flips. */
bool dbfx_others_flag(const void *ctx);

/* A pool of max connections; while *others is set, a tenant holds tenant_cap at most (0: no
 * cap); `reserve` connections are kept for tenants holding none. */
struct dbpool *dbfx_mkpool_ex(const char *app, size_t max, size_t tenant_cap, size_t reserve,
                              atomic_bool *others);

struct dbpool *dbfx_mkpool(const char *app, size_t max, size_t tenant_cap, atomic_bool *others);

int dbfx_get(struct dbpool *p, const void *owner, int64_t wait_us, struct dbconn **c);

struct dbpool_stats dbfx_stats(struct dbpool *p);

/* Run a one-value statement on c and return the value as an integer. */
int64_t dbfx_q_int(struct dbconn *c, const char *stmt, const char *arg);

/* One integer from the admin connection. */
int64_t dbfx_admin_int(const char *sql, const char *arg);

/* Backends the server has for application_name app. */
int64_t dbfx_backends(const char *app);

/* Poll until the server shows exactly n backends for app (closing is asynchronous). */
int64_t dbfx_wait_backends(const char *app, int64_t n);

/* Poll until n acquirers wait in the pool. */
void dbfx_wait_pending(struct dbpool *p, size_t n);

/* Poll until n connects are running (connects run on their own threads), then until idle
 * connections number n_idle (SIZE_MAX: either is not waited for). Bounded; the caller asserts. */
void dbfx_wait_opening_idle(struct dbpool *p, size_t n, size_t n_idle);

void dbfx_finish(struct dbpool *p, const char *app);

struct dbfx_waiter {
    pthread_t tid;
    struct dbpool *p;
    const void *owner;
    int64_t wait_us;
    int idx;
    /* FIFO test: record the order of hand-offs, then give the connection back at once. */
    pthread_mutex_t *order_mu;
    int *order, *norder;
    /* Results, read after join. */
    int rc;
    struct dbconn *got;
    int64_t done_us;
};

void dbfx_start_waiter(struct dbfx_waiter *w, struct dbpool *p, const void *owner, int64_t wait_us);

/* Take a connection of p for A (5 s to wait) into *c; returns its backend's pid. */
int64_t dbfx_take_with_pid(struct dbpool *p, struct dbconn **c);

/* Backends of the pool's test sleeping in pg_sleep now (pid's statement is running). */
int64_t dbfx_sleeping(int64_t pid);

/* Poll until pid's statement is in pg_sleep: a cancel sent before it runs would find the
 * backend idle and be lost. */
void dbfx_wait_sleeping(int64_t pid);

int dbfx_group_setup(void **state);

int dbfx_group_teardown(void **state);

#endif
