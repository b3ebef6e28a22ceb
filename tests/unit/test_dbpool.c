/*
 * test_dbpool: the connection pool and the deadline-driven connection (dbpool.h, dbconn.h)
 * against a real PostgreSQL.
 *
 * scripts/test.sh starts a shared cluster and exports BH_TEST_PG_PORT; without it every test
 * is skipped. Each test gives its pool its own application_name, so a separate libpq
 * connection (`admin`) can count the pool's backends in pg_stat_activity: what the server sees,
 * not what the pool believes. Threads wait for each other on pool state (pending waiters) with
 * bounded polls; nothing sleeps to synchronise. Also: the event threads' ways in (try_acquire,
 * which never waits, and cancel_release, a running statement cancelled on a pool thread), and
 * a statement sent and read in steps (dbconn_send, dbconn_read), with a relay (pgproxy) that
 * holds back the statement's end so that its error and its end come in separate reads.
 */
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

#define SEC    1000000ll
#define MS     1000ll
#define WAIT_S 20 /* bound for any wait on the server or the pool */

static char url[300]; /* the shared cluster's "bulkhead" database */
static PGconn *admin; /* our observer connection, not part of any pool */
static const char A[] = "tenant-a", B[] = "tenant-b"; /* owners: compared by address */

static const struct dbconn_stmt stmts[] = {
    {"one", "SELECT 1"},
    {"pid", "SELECT pg_backend_pid()"},
    {"sleep", "SELECT pg_sleep($1::float8)"},
    {"div", "SELECT 1 / $1::int"},
    {"late", "SELECT 7 FROM pg_sleep($1::float8)"},
    {"peers", "SELECT count(*) FROM pg_stat_activity "
              "WHERE application_name = current_setting('application_name')"},
};

#define NEED_PG() UNITDB_NEED(admin)

static void nap_ms(int ms)
{
    struct timespec ts = {0, ms * 1000000L};
    nanosleep(&ts, NULL);
}

/* A unique application_name for one test's pool. */
static void app_for(char *buf, size_t len, const char *tag)
{
    snprintf(buf, len, "bhu-%d-%s", (int)getpid(), tag);
}

static struct dbconn_params params(const char *conninfo, const char *app)
{
    return (struct dbconn_params){
        .conninfo = conninfo,
        .appname = app,
        .stmts = stmts,
        .nstmts = sizeof(stmts) / sizeof(stmts[0]),
    };
}

/* others_active for the pools under test: a flag the test flips. */
static bool others_flag(const void *ctx)
{
    return atomic_load((const atomic_bool *)ctx);
}

/* A pool of max connections; while *others is set, a tenant holds tenant_cap at most (0: no
 * cap); `reserve` connections are kept for tenants holding none. */
static struct dbpool *mkpool_ex(const char *app, size_t max, size_t tenant_cap, size_t reserve,
                                atomic_bool *others)
{
    struct dbpool_opts o = {
        .conn = params(url, app),
        .max = max,
        .share = {.size = max, .cap = tenant_cap, .reserve = reserve},
        .others_active = others ? others_flag : NULL,
        .others_ctx = others,
    };
    struct dbpool *p = NULL;
    assert_int_equal(dbpool_create(&o, &p), 0);
    return p;
}

static struct dbpool *mkpool(const char *app, size_t max, size_t tenant_cap, atomic_bool *others)
{
    return mkpool_ex(app, max, tenant_cap, 0, others);
}

static int get(struct dbpool *p, const void *owner, int64_t wait_us, struct dbconn **c)
{
    char err[256];
    return dbpool_acquire(p, owner, mclock_now_us() + wait_us, c, err, sizeof(err));
}

static struct dbpool_stats stats(struct dbpool *p)
{
    struct dbpool_stats s;
    dbpool_stats(p, &s);
    return s;
}

/* Run a one-value statement on c and return the value as an integer. */
static int64_t q_int(struct dbconn *c, const char *stmt, const char *arg)
{
    PGresult *res = NULL;
    char err[256] = "";
    const char *vals[1] = {arg};
    int rc = dbconn_exec(c, stmt, arg ? 1 : 0, arg ? vals : NULL, mclock_now_us() + 10 * SEC, &res,
                         err, sizeof(err));
    if (rc)
        fail_msg("%s: %d %s", stmt, rc, err);
    int64_t v = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
    PQclear(res);
    return v;
}

/* One integer from the admin connection. */
static int64_t admin_int(const char *sql, const char *arg)
{
    const char *vals[1] = {arg};
    PGresult *res = PQexecParams(admin, sql, arg ? 1 : 0, NULL, arg ? vals : NULL, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK)
        fail_msg("admin query failed: %s", PQerrorMessage(admin));
    int64_t v = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
    PQclear(res);
    return v;
}

/* Backends the server has for application_name app. */
static int64_t backends(const char *app)
{
    return admin_int("SELECT count(*) FROM pg_stat_activity WHERE application_name = $1", app);
}

/* Poll until the server shows exactly n backends for app (closing is asynchronous). */
static int64_t wait_backends(const char *app, int64_t n)
{
    int64_t end = mclock_now_us() + WAIT_S * SEC, v;
    while ((v = backends(app)) != n && mclock_now_us() < end)
        nap_ms(5);
    return v;
}

/* Poll until n acquirers wait in the pool. */
static void wait_pending(struct dbpool *p, size_t n)
{
    int64_t end = mclock_now_us() + WAIT_S * SEC;
    while (stats(p).pending != n && mclock_now_us() < end)
        nap_ms(1);
    assert_int_equal(stats(p).pending, n);
}

/* Poll until n connects are running (connects run on their own threads), then until idle
 * connections number n_idle (SIZE_MAX: either is not waited for). Bounded; the caller asserts. */
static void wait_opening_idle(struct dbpool *p, size_t n, size_t n_idle)
{
    int64_t end = mclock_now_us() + WAIT_S * SEC;
    while ((stats(p).opening != n || (n_idle != SIZE_MAX && stats(p).idle != n_idle)) &&
           mclock_now_us() < end)
        nap_ms(2);
}

static void finish(struct dbpool *p, const char *app)
{
    dbpool_stop(p);
    dbpool_destroy(p);
    assert_int_equal(wait_backends(app, 0), 0);
}

/* ---- a waiting acquirer on its own thread ------------------------------------------------ */

struct waiter {
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

static void *waiter_main(void *arg)
{
    struct waiter *w = arg;
    w->rc = get(w->p, w->owner, w->wait_us, &w->got);
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

static void start_waiter(struct waiter *w, struct dbpool *p, const void *owner, int64_t wait_us)
{
    w->p = p;
    w->owner = owner;
    w->wait_us = wait_us;
    assert_int_equal(pthread_create(&w->tid, NULL, waiter_main, w), 0);
}

/* ---- the pool ----------------------------------------------------------------------------- */

/* Take a connection of p for A (5 s to wait) into *c; returns its backend's pid. */
static int64_t take_with_pid(struct dbpool *p, struct dbconn **c)
{
    assert_int_equal(get(p, A, 5 * SEC, c), 0);
    return q_int(*c, "pid", NULL);
}

/* A connect started with too little of the requester's time left still completes (it is given
 * connect_timeout_us), and the connection is kept for the next requester instead of being
 * thrown away: under load, that is what stops connects from timing out one after another.
 * (Another connection is busy meanwhile: with nothing busy, the requester would wait for the
 * connect, see a_connect_that_times_out_with_nothing_busy_fails_its_waiter.) */
static void a_connect_past_the_requesters_deadline_is_kept(void **state)
{
    (void)state;
    NEED_PG();
    char app[64];
    app_for(app, sizeof(app), "late");
    struct dbpool_opts o = {
        .conn = params(url, app), .max = 2, .share = {.size = 2}, .connect_timeout_us = 10 * SEC};
    struct dbpool *p = NULL;
    assert_int_equal(dbpool_create(&o, &p), 0);
    struct dbconn *busy = NULL, *c = NULL;
    assert_int_equal(get(p, A, 5 * SEC, &busy), 0);
    char err[256];
    /* One microsecond: no connect is that fast. The connect goes on after the requester left. */
    assert_int_equal(dbpool_acquire(p, B, mclock_now_us() + 1, &c, err, sizeof(err)), -ETIMEDOUT);
    assert_null(c);
    wait_opening_idle(p, 0, SIZE_MAX);
    struct dbpool_stats s = stats(p);
    assert_int_equal(s.connects, 2);
    assert_int_equal(s.idle, 1);
    assert_int_equal(s.active, 1);
    /* The next requester gets that connection, nothing new opened. */
    assert_int_equal(get(p, B, 5 * SEC, &c), 0);
    assert_int_equal(stats(p).connects, 2);
    dbpool_release(p, c, false);
    dbpool_release(p, busy, false);
    dbpool_destroy(p);
}

static void opens_lazily_and_reuses_idle_connections(void **state)
{
    (void)state;
    NEED_PG();
    char app[64];
    app_for(app, sizeof(app), "lazy");
    struct dbpool *p = mkpool(app, 4, 0, NULL);
    assert_int_equal(backends(app), 0);
    assert_int_equal(stats(p).connects, 0);

    struct dbconn *c1, *c2, *again;
    assert_int_equal(get(p, A, 5 * SEC, &c1), 0);
    assert_int_equal(wait_backends(app, 1), 1);
    int64_t pid = q_int(c1, "pid", NULL);
    dbpool_release(p, c1, false);
    /* The idle connection is handed out again: same backend, nothing new opened. */
    assert_int_equal(get(p, B, 5 * SEC, &again), 0);
    assert_ptr_equal(again, c1);
    assert_int_equal(q_int(again, "pid", NULL), pid);
    assert_int_equal(stats(p).connects, 1);
    /* A second one is opened only when the first is busy. */
    assert_int_equal(get(p, A, 5 * SEC, &c2), 0);
    assert_ptr_not_equal(c2, again);
    assert_int_equal(wait_backends(app, 2), 2);
    struct dbpool_stats s = stats(p);
    assert_int_equal(s.connects, 2);
    assert_int_equal(s.active, 2);
    assert_int_equal(s.idle, 0);
    dbpool_release(p, again, false);
    dbpool_release(p, c2, false);
    s = stats(p);
    assert_int_equal(s.active, 0);
    assert_int_equal(s.idle, 2);
    assert_int_equal(s.acquired, 3);
    finish(p, app);
}

struct hammer {
    struct dbpool *p;
    const void *owner;
    atomic_int *done;
    atomic_llong *max_peers; /* most backends of the pool a query ever saw */
    int fails;
};

static void *hammer_main(void *arg)
{
    struct hammer *h = arg;
    for (int i = 0; i < 25; i++) {
        struct dbconn *c;
        if (get(h->p, h->owner, 30 * SEC, &c)) {
            h->fails++;
            continue;
        }
        long long peers = q_int(c, "peers", NULL);
        long long seen = atomic_load(h->max_peers);
        while (peers > seen && !atomic_compare_exchange_weak(h->max_peers, &seen, peers))
            ;
        dbpool_release(h->p, c, false);
    }
    atomic_fetch_add(h->done, 1);
    return NULL;
}

static void never_opens_more_than_max(void **state)
{
    (void)state;
    NEED_PG();
    enum { MAX = 3, THREADS = 8 };
    char app[64];
    app_for(app, sizeof(app), "max");
    struct dbpool *p = mkpool(app, MAX, 0, NULL);
    /* Fill the pool once: the fourth acquirer waits and times out, nothing more is opened. */
    struct dbconn *held[MAX], *extra;
    for (int i = 0; i < MAX; i++)
        assert_int_equal(get(p, A, 5 * SEC, &held[i]), 0);
    assert_int_equal(get(p, B, 100 * MS, &extra), -ETIMEDOUT);
    assert_int_equal(wait_backends(app, MAX), MAX);
    for (int i = 0; i < MAX; i++)
        dbpool_release(p, held[i], false);

    /* Eight threads, 25 acquisitions each, while the server's view is sampled. */
    atomic_int done = 0;
    atomic_llong max_peers = 0;
    struct hammer h[THREADS];
    pthread_t tid[THREADS];
    for (int i = 0; i < THREADS; i++) {
        h[i] = (struct hammer){p, i % 2 ? A : B, &done, &max_peers, 0};
        assert_int_equal(pthread_create(&tid[i], NULL, hammer_main, &h[i]), 0);
    }
    int64_t max_seen = 0;
    while (atomic_load(&done) < THREADS) {
        int64_t n = backends(app);
        if (n > max_seen)
            max_seen = n;
        nap_ms(2);
    }
    for (int i = 0; i < THREADS; i++) {
        pthread_join(tid[i], NULL);
        assert_int_equal(h[i].fails, 0);
    }
    assert_true(max_seen <= MAX);
    assert_true(atomic_load(&max_peers) <= MAX);
    assert_true(atomic_load(&max_peers) >= 1);
    struct dbpool_stats s = stats(p);
    assert_int_equal(s.connects, MAX);
    assert_int_equal(s.acquired, MAX + THREADS * 25);
    assert_int_equal(s.timeouts, 1);
    assert_int_equal(s.idle, MAX);
    assert_int_equal(backends(app), MAX);
    finish(p, app);
}

static void acquire_times_out_near_its_deadline(void **state)
{
    (void)state;
    NEED_PG();
    char app[64];
    app_for(app, sizeof(app), "timeout");
    struct dbpool *p = mkpool(app, 1, 0, NULL);
    struct dbconn *c, *none = NULL;
    assert_int_equal(get(p, A, 5 * SEC, &c), 0);
    char err[256] = "";
    int64_t t0 = mclock_now_us();
    int rc = dbpool_acquire(p, B, t0 + 300 * MS, &none, err, sizeof(err));
    int64_t took = mclock_now_us() - t0;
    assert_int_equal(rc, -ETIMEDOUT);
    assert_null(none);
    assert_true(err[0] != '\0');
    assert_true(took >= 300 * MS - 1 * MS);
    assert_true(took < 300 * MS + 5 * SEC); /* generous: the machine is shared */
    struct dbpool_stats s = stats(p);
    assert_int_equal(s.timeouts, 1);
    assert_int_equal(s.pending, 0);
    assert_true(s.wait_us_total >= 299 * MS);
    /* A deadline already past fails at once. */
    t0 = mclock_now_us();
    assert_int_equal(get(p, B, -1 * SEC, &none), -ETIMEDOUT);
    assert_true(mclock_now_us() - t0 < 1 * SEC);
    dbpool_release(p, c, false);
    finish(p, app);
}

static void waiters_are_served_first_come_first_served(void **state)
{
    (void)state;
    NEED_PG();
    enum { N = 4 };
    char app[64];
    app_for(app, sizeof(app), "fifo");
    struct dbpool *p = mkpool(app, 1, 0, NULL);
    struct dbconn *c;
    assert_int_equal(get(p, A, 5 * SEC, &c), 0);
    pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
    int order[N], norder = 0;
    struct waiter w[N];
    memset(w, 0, sizeof(w));
    for (int i = 0; i < N; i++) {
        w[i].idx = i;
        w[i].order_mu = &mu;
        w[i].order = order;
        w[i].norder = &norder;
        start_waiter(&w[i], p, i % 2 ? A : B, 30 * SEC);
        wait_pending(p, (size_t)i + 1); /* queued in this order */
    }
    dbpool_release(p, c, false);
    for (int i = 0; i < N; i++)
        pthread_join(w[i].tid, NULL);
    assert_int_equal(norder, N);
    for (int i = 0; i < N; i++) {
        assert_int_equal(order[i], i);
        assert_int_equal(w[i].rc, 0);
        assert_ptr_equal(w[i].got, c); /* handed over, never reopened */
    }
    assert_int_equal(stats(p).connects, 1);
    finish(p, app);
}

static void tenant_cap_binds_while_others_are_active(void **state)
{
    (void)state;
    NEED_PG();
    char app[64];
    app_for(app, sizeof(app), "cap");
    atomic_bool others = true;
    struct dbpool *p = mkpool(app, 4, 2, &others);
    struct dbconn *a1, *a2, *a3, *b1, *b2;
    assert_int_equal(get(p, A, 5 * SEC, &a1), 0);
    assert_int_equal(get(p, A, 5 * SEC, &a2), 0);
    /* Two slots are free, but A holds its share. */
    assert_int_equal(get(p, A, 200 * MS, &a3), -ETIMEDOUT);
    assert_int_equal(get(p, B, 5 * SEC, &b1), 0);

    /* A capped waiter does not hold up another tenant behind it. */
    struct waiter wa = {0};
    start_waiter(&wa, p, A, 30 * SEC);
    wait_pending(p, 1);
    assert_int_equal(get(p, B, 5 * SEC, &b2), 0);
    assert_int_equal(stats(p).pending, 1);
    /* A released connection is not given to the capped waiter: it stays idle. */
    dbpool_release(p, b2, false);
    struct dbpool_stats s = stats(p);
    assert_int_equal(s.pending, 1);
    assert_int_equal(s.idle, 1);

    /* The other tenants go quiet: a kick re-runs the hand-off and A gets the idle one. */
    atomic_store(&others, false);
    dbpool_kick(p);
    pthread_join(wa.tid, NULL);
    assert_int_equal(wa.rc, 0);
    assert_ptr_equal(wa.got, b2);
    s = stats(p);
    assert_int_equal(s.active, 4);
    assert_int_equal(s.connects, 4);
    dbpool_release(p, wa.got, false);
    dbpool_release(p, a1, false);
    dbpool_release(p, a2, false);
    dbpool_release(p, b1, false);
    finish(p, app);
}

/*
 * The reserve (share.h): A alone holds every connection but one; B, a newcomer, gets that one
 * while A still holds all of its own. Then, with A's waiter pending (A at its share) and
 * connections idle, B's next acquire is served at once, not queued behind A's waiter. When B
 * goes quiet, A gets connections back up to all but the reserve.
 */
static void a_newcomer_never_waits_behind_a_busy_tenant(void **state)
{
    (void)state;
    NEED_PG();
    char app[64];
    app_for(app, sizeof(app), "reserve");
    atomic_bool others = false;
    struct dbpool *p = mkpool_ex(app, 5, 2, 1, &others);
    struct dbconn *a[5], *b[2];
    for (int i = 0; i < 4; i++)
        assert_int_equal(get(p, A, 5 * SEC, &a[i]), 0);
    /* A fifth for A waits although a slot is free: it is the newcomers' reserve. */
    struct waiter wa = {0};
    start_waiter(&wa, p, A, 30 * SEC);
    wait_pending(p, 1);
    assert_int_equal(stats(p).reserve, 1);

    /* B arrives (the worker pool now reports another tenant) and gets the reserve while A
     * holds all four of its connections. */
    atomic_store(&others, true);
    assert_int_equal(get(p, B, 5 * SEC, &b[0]), 0);
    assert_int_equal(dbpool_held(p, A), 4);
    assert_int_equal(dbpool_held(p, B), 1);

    /* A's queries end, two of them: A is at its share (2) beside B, so its waiter stays
     * pending and the two connections stay idle... */
    dbpool_release(p, a[3], false);
    dbpool_release(p, a[2], false);
    struct dbpool_stats s = stats(p);
    assert_int_equal(s.pending, 1);
    assert_int_equal(s.idle, 2);
    /* ...and B's next request takes one at once, passing A's waiter. */
    assert_int_equal(get(p, B, 5 * SEC, &b[1]), 0);
    assert_int_equal(stats(p).pending, 1);

    /* B goes quiet; once the worker pool says so, a kick hands A connections again, up to
     * every one but the reserve. */
    dbpool_release(p, b[0], false);
    dbpool_release(p, b[1], false);
    atomic_store(&others, false);
    dbpool_kick(p);
    pthread_join(wa.tid, NULL);
    assert_int_equal(wa.rc, 0);
    a[2] = wa.got;
    assert_int_equal(get(p, A, 5 * SEC, &a[3]), 0);
    assert_int_equal(dbpool_held(p, A), 4);
    assert_int_equal(get(p, A, 100 * MS, &a[4]), -ETIMEDOUT);
    s = stats(p);
    assert_int_equal(s.active, 4);
    assert_int_equal(s.idle, 1);
    assert_int_equal(s.pending, 0);
    for (int i = 0; i < 4; i++)
        dbpool_release(p, a[i], false);
    finish(p, app);
}

/* brief for the pools under test: the owner A is brief while this flag is set. */
static atomic_bool a_brief;
static bool brief_flag(const void *owner)
{
    return owner == A && atomic_load(&a_brief);
}

/* A tenant with brief requests takes one connection past its share beside others, never a
 * second; alone, every connection but the reserve, like any tenant (a newcomer takes the
 * reserve); as soon as it is not brief, its share binds again. */
static void brief_requests_take_one_connection_past_the_share_never_the_reserve(void **state)
{
    (void)state;
    NEED_PG();
    char app[64];
    app_for(app, sizeof(app), "brief");
    atomic_bool others = true;
    struct dbpool_opts o = {
        .conn = params(url, app),
        .max = 4,
        .share = {.size = 4, .cap = 1, .reserve = 1},
        .others_active = others_flag,
        .others_ctx = &others,
        .brief = brief_flag,
    };
    struct dbpool *p = NULL;
    assert_int_equal(dbpool_create(&o, &p), 0);
    struct dbconn *a[4], *b;
    atomic_store(&a_brief, true);
    assert_int_equal(get(p, A, 5 * SEC, &a[0]), 0);
    assert_int_equal(get(p, A, 5 * SEC, &a[1]), 0);           /* one past its share of 1 */
    assert_int_equal(get(p, A, 100 * MS, &a[2]), -ETIMEDOUT); /* not two */
    assert_int_equal(dbpool_held(p, A), 2);
    atomic_store(&others, false);
    assert_int_equal(get(p, A, 5 * SEC, &a[2]), 0);
    assert_int_equal(get(p, A, 100 * MS, &a[3]), -ETIMEDOUT); /* the reserve */
    assert_int_equal(get(p, B, 5 * SEC, &b), 0);              /* is the newcomer's */
    assert_int_equal(stats(p).active, 4);
    dbpool_release(p, b, false);
    for (int i = 1; i < 3; i++)
        dbpool_release(p, a[i], false);
    atomic_store(&others, true);
    atomic_store(&a_brief, false);
    assert_int_equal(get(p, A, 100 * MS, &a[1]), -ETIMEDOUT); /* at its share of 1 */
    dbpool_release(p, a[0], false);
    finish(p, app);
}

/* Connections being opened count as held: a cold pool cannot be filled past the reserve by
 * one tenant's concurrent first requests. */
/* One statement on the admin connection, whose result is not read. */
static void admin_do(const char *sql)
{
    PGresult *res = PQexec(admin, sql);
    if (PQresultStatus(res) != PGRES_TUPLES_OK && PQresultStatus(res) != PGRES_COMMAND_OK)
        fail_msg("admin %s: %s", sql, PQerrorMessage(admin));
    PQclear(res);
}

/* Connects run beside the waiter, not in it: a waiter whose connect is slow takes a connection
 * released meanwhile, and the connect, when it ends, leaves its connection idle for the next.
 * (A connect used to run on the waiting worker itself, which could take nothing else until it
 * ended: under load, requests failed pool_timeout while connections cycled around them.) A
 * connect is made slow by its session setup, which waits for an advisory lock the test holds. */
static void a_waiter_takes_a_released_connection_while_its_connect_is_slow(void **state)
{
    (void)state;
    NEED_PG();
    char app[64];
    app_for(app, sizeof(app), "slowconn");
    struct dbpool_opts o = {.conn = params(url, app), .max = 2, .connect_timeout_us = 20 * SEC};
    o.conn.setup_sql = "SELECT pg_advisory_xact_lock_shared(4217)";
    struct dbpool *p = NULL;
    assert_int_equal(dbpool_create(&o, &p), 0);
    struct dbconn *c1 = NULL;
    assert_int_equal(get(p, A, 5 * SEC, &c1), 0);

    admin_do("SELECT pg_advisory_lock(4217)"); /* every connect from now on waits in its setup */
    struct waiter w = {0};
    start_waiter(&w, p, B, 10 * SEC);
    wait_pending(p, 1);
    wait_opening_idle(p, 1, SIZE_MAX);
    assert_int_equal(stats(p).opening, 1);

    dbpool_release(p, c1, false);
    pthread_join(w.tid, NULL);
    assert_int_equal(w.rc, 0);
    assert_ptr_equal(w.got, c1);           /* the released one, at once */
    assert_int_equal(stats(p).opening, 1); /* while the connect still waits */
    assert_int_equal(stats(p).connects, 1);

    admin_do("SELECT pg_advisory_unlock(4217)");
    wait_opening_idle(p, 0, 1);
    struct dbpool_stats s = stats(p);
    assert_int_equal(s.idle, 1);
    assert_int_equal(s.opening, 0);
    assert_int_equal(s.connects, 2);
    assert_int_equal(s.connect_failures, 0);
    dbpool_release(p, w.got, false);
    finish(p, app);
}

/* The session's statement_timeout of c, as PostgreSQL reports it ("1s"). */
static void show_timeout(struct dbconn *c, char *buf, size_t len)
{
    PGresult *res = PQexec(c->pg, "SHOW statement_timeout");
    assert_int_equal(PQresultStatus(res), PGRES_TUPLES_OK);
    snprintf(buf, len, "%s", PQgetvalue(res, 0, 0));
    PQclear(res);
}

/* A reload that changes the statement timeout (a tier's call timeout) reaches the connections:
 * ones opened with the old one are closed when next released or found idle, and the next
 * request gets a connection set up with the new one. Before, they kept the start-up backstop,
 * which killed statements that the new, longer call timeout allowed. */
static void a_new_statement_timeout_replaces_the_connections_set_up_with_the_old(void **state)
{
    (void)state;
    NEED_PG();
    char app[64], v[32];
    app_for(app, sizeof(app), "stmt-timeout");
    struct dbpool_opts o = {.conn = params(url, app), .max = 2, .connect_timeout_us = 5 * SEC};
    o.conn.statement_timeout_ms = 1000;
    struct dbpool *p = NULL;
    assert_int_equal(dbpool_create(&o, &p), 0);
    struct dbconn *held = NULL, *idle = NULL;
    assert_int_equal(get(p, A, 5 * SEC, &held), 0);
    assert_int_equal(get(p, B, 5 * SEC, &idle), 0);
    show_timeout(held, v, sizeof(v));
    assert_string_equal(v, "1s");
    dbpool_release(p, idle, false);

    dbpool_set_limits(p, 2, (struct share_policy){.cap = 0}, 5 * SEC, 2500);
    dbpool_release(p, held, false); /* outdated: closed, not kept */
    struct dbconn *c = NULL;
    assert_int_equal(get(p, A, 5 * SEC, &c), 0); /* the idle one is outdated too */
    show_timeout(c, v, sizeof(v));
    assert_string_equal(v, "2500ms");
    struct dbpool_stats s = stats(p);
    assert_int_equal(s.connects, 3);
    assert_int_equal(s.closed_broken, 0);
    assert_int_equal(s.idle, 0);
    assert_int_equal(wait_backends(app, 1), 1);
    dbpool_release(p, c, false);
    finish(p, app);
}

/* How many openers have their answer (a connection or an error). */
static atomic_int openers_done;

static void *opener_main(void *arg)
{
    struct waiter *w = arg;
    w->rc = get(w->p, w->owner, w->wait_us, &w->got);
    atomic_fetch_add(&openers_done, 1);
    return NULL;
}

static bool openers_done_at_least(int n)
{
    for (int64_t end = mclock_now_us() + 30 * SEC; mclock_now_us() < end;) {
        if (atomic_load(&openers_done) >= n)
            return true;
        struct timespec ts = {0, 5 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    return false;
}

/* Three requests of one tenant on a cold pool of 3 with a reserve of 1: connects are started
 * for them (a connection being opened is nobody's yet), but the tenant ends holding 2 and its
 * third request waits while the last connection goes to a newcomer. No deadline decides it:
 * the waits are long (connects beside the rest of the suite took seconds), and the test waits
 * for the answers themselves. */
static void a_tenant_on_a_cold_pool_leaves_the_reserve_to_a_newcomer(void **state)
{
    (void)state;
    NEED_PG();
    char app[64];
    app_for(app, sizeof(app), "opening");
    struct dbpool *p = mkpool_ex(app, 3, 3, 1, NULL);
    /* Static: the threads would outlive a failed test's frame. */
    static struct waiter w[3];
    memset(w, 0, sizeof(w));
    atomic_store(&openers_done, 0);
    for (int i = 0; i < 3; i++) {
        w[i].p = p;
        w[i].owner = A;
        w[i].wait_us = 60 * SEC;
        assert_int_equal(pthread_create(&w[i].tid, NULL, opener_main, &w[i]), 0);
    }
    assert_true(openers_done_at_least(2));
    /* The newcomer gets the last connection while the tenant's third request still waits. */
    struct dbconn *b = NULL;
    assert_int_equal(get(p, B, 30 * SEC, &b), 0);
    assert_int_equal(atomic_load(&openers_done), 2);
    assert_true(stats(p).connects <= 3);
    /* The newcomer's and one of the tenant's back (two free, one of them the reserve): the
     * tenant's third request gets the other. */
    dbpool_release(p, b, false);
    int first = w[0].rc == 0 && w[0].got ? 0 : w[1].rc == 0 && w[1].got ? 1 : 2;
    assert_int_equal(w[first].rc, 0);
    dbpool_release(p, w[first].got, false);
    w[first].got = NULL;
    assert_true(openers_done_at_least(3));
    for (int i = 0; i < 3; i++) {
        pthread_join(w[i].tid, NULL);
        assert_int_equal(w[i].rc, 0);
    }
    assert_true(stats(p).connects <= 3);
    for (int i = 0; i < 3; i++)
        if (w[i].got)
            dbpool_release(p, w[i].got, false);
    finish(p, app);
}

/* A waiter whose deadline passes while nothing is busy and a connect runs waits for that
 * connect: its outcome is the answer. A database that does not answer (here: a connect whose
 * setup waits on a lock the test holds, past the connect timeout) fails the request with the
 * connect's error, as a breaker failure must, not with the pool's "no connection free". */
static void a_connect_that_times_out_with_nothing_busy_fails_its_waiter(void **state)
{
    (void)state;
    NEED_PG();
    char app[64];
    app_for(app, sizeof(app), "blackhole");
    struct dbpool_opts o = {.conn = params(url, app), .max = 2, .connect_timeout_us = 600 * MS};
    o.conn.setup_sql = "SELECT pg_advisory_xact_lock_shared(4218)";
    struct dbpool *p = NULL;
    assert_int_equal(dbpool_create(&o, &p), 0);
    admin_do("SELECT pg_advisory_lock(4218)");
    struct dbconn *c = NULL;
    char err[256] = "";
    int64_t t0 = mclock_now_us();
    assert_int_equal(dbpool_acquire(p, A, t0 + 200 * MS, &c, err, sizeof(err)), -ECONNRESET);
    int64_t took = mclock_now_us() - t0;
    assert_true(took >= 550 * MS && took < 3 * SEC);
    assert_non_null(strstr(err, "timed out"));
    admin_do("SELECT pg_advisory_unlock(4218)");
    struct dbpool_stats s = stats(p);
    assert_int_equal(s.connect_failures, 1);
    assert_int_equal(s.timeouts, 0);
    dbpool_stop(p);
    dbpool_destroy(p);
}

static void no_tenant_cap_when_alone(void **state)
{
    (void)state;
    NEED_PG();
    char app[64];
    app_for(app, sizeof(app), "alone");
    atomic_bool others = false;
    struct dbpool *pools[2] = {mkpool(app, 3, 1, &others), mkpool(app, 3, 1, NULL)};
    for (int k = 0; k < 2; k++) {
        struct dbconn *c[3];
        for (int i = 0; i < 3; i++)
            assert_int_equal(get(pools[k], A, 5 * SEC, &c[i]), 0);
        assert_int_equal(stats(pools[k]).active, 3);
        for (int i = 0; i < 3; i++)
            dbpool_release(pools[k], c[i], false);
    }
    dbpool_stop(pools[0]);
    dbpool_destroy(pools[0]);
    finish(pools[1], app);
}

/* Terminate backend pid and wait until the server no longer shows it. */
static void kill_backend(int64_t pid)
{
    char pidtxt[24];
    snprintf(pidtxt, sizeof(pidtxt), "%lld", (long long)pid);
    assert_int_equal(admin_int("SELECT pg_terminate_backend($1::int)::int", pidtxt), 1);
    int64_t end = mclock_now_us() + WAIT_S * SEC;
    while (admin_int("SELECT count(*) FROM pg_stat_activity WHERE pid = $1::int", pidtxt) &&
           mclock_now_us() < end)
        nap_ms(5);
}

static void connection_killed_while_idle_is_replaced(void **state)
{
    (void)state;
    NEED_PG();
    char app[64];
    app_for(app, sizeof(app), "killed");
    struct dbpool *p = mkpool(app, 1, 0, NULL);
    struct dbconn *c;
    int64_t pid = take_with_pid(p, &c);
    assert_false(dbconn_is_dead(c));
    dbpool_release(p, c, false);

    kill_backend(pid);
    /* The pool still holds it as idle; the test may look at it since nothing else runs. */
    assert_true(dbconn_is_dead(c));

    struct dbconn *fresh;
    assert_int_equal(get(p, A, 5 * SEC, &fresh), 0);
    assert_int_not_equal(q_int(fresh, "pid", NULL), pid);
    assert_int_equal(q_int(fresh, "one", NULL), 1);
    struct dbpool_stats s = stats(p);
    assert_int_equal(s.closed_broken, 1);
    assert_int_equal(s.connects, 2);
    dbpool_release(p, fresh, false);
    finish(p, app);
}

/* The janitor's reaper: idle connections whose backend the server killed are closed without a
 * request (closed_broken), the live idle one and the busy one are left alone. */
static void the_reaper_closes_idle_connections_the_server_killed(void **state)
{
    (void)state;
    NEED_PG();
    char app[64];
    app_for(app, sizeof(app), "reap");
    struct dbpool *p = mkpool(app, 4, 0, NULL);
    struct dbconn *c[4];
    int64_t pid[4];
    for (int i = 0; i < 4; i++)
        pid[i] = take_with_pid(p, &c[i]);
    for (int i = 0; i < 3; i++)
        dbpool_release(p, c[i], false);
    assert_int_equal(stats(p).idle, 3);
    /* Nothing dead, no timeout: nothing to close. */
    assert_int_equal(dbpool_reap_idle(p, mclock_now_us(), 0), 0);
    assert_int_equal(stats(p).idle, 3);

    kill_backend(pid[0]);
    kill_backend(pid[2]);
    kill_backend(pid[3]); /* busy: its holder finds out */
    size_t found = 0;
    int64_t end = mclock_now_us() + WAIT_S * SEC;
    while (found < 2 && mclock_now_us() < end) {
        found += dbpool_reap_idle(p, mclock_now_us(), 0);
        if (found < 2)
            nap_ms(2); /* the server's end of a killed connection arrives on its own time */
    }
    assert_int_equal(found, 2);
    struct dbpool_stats st = stats(p);
    assert_int_equal(st.idle, 1);
    assert_int_equal(st.active, 1);
    assert_int_equal(st.closed_broken, 2);
    assert_int_equal(st.closed_idle, 0);
    assert_int_equal(wait_backends(app, 1), 1); /* pid[1]'s, and only it */
    struct dbconn *live;
    assert_int_equal(take_with_pid(p, &live), pid[1]);
    dbpool_release(p, live, false);
    dbpool_release(p, c[3], true);
    assert_int_equal(stats(p).closed_broken, 3);
    finish(p, app);
}

/* With an idle timeout (time injected), the reaper closes what idled that long, least recently
 * used first, counted in closed_idle; 0 never closes. */
static void the_reaper_closes_connections_idle_past_the_timeout(void **state)
{
    (void)state;
    NEED_PG();
    char app[64];
    app_for(app, sizeof(app), "idlet");
    struct dbpool *p = mkpool(app, 2, 0, NULL);
    struct dbconn *c0, *c1;
    int64_t pid0 = take_with_pid(p, &c0), pid1 = take_with_pid(p, &c1);
    int64_t before = mclock_now_us();
    dbpool_release(p, c0, false);
    int64_t mid = mclock_now_us();
    while (mclock_now_us() <= mid)
        ; /* c1 goes idle strictly after mid */
    dbpool_release(p, c1, false);
    const int64_t timeout = 5 * SEC;
    assert_int_equal(dbpool_reap_idle(p, before + timeout - 1, timeout), 0);
    assert_int_equal(dbpool_reap_idle(p, mid + 1000 * SEC, 0), 0);
    assert_int_equal(stats(p).idle, 2);
    assert_int_equal(stats(p).closed_idle, 0);
    assert_int_equal(dbpool_reap_idle(p, mid + timeout, timeout), 0); /* none dead ... */
    struct dbpool_stats st = stats(p);
    assert_int_equal(st.closed_idle, 1); /* ... c0 idled 5 s */
    assert_int_equal(st.closed_broken, 0);
    assert_int_equal(st.idle, 1);
    assert_int_equal(wait_backends(app, 1), 1);
    struct dbconn *left;
    assert_int_equal(take_with_pid(p, &left), pid1);
    assert_int_not_equal(pid1, pid0);
    dbpool_release(p, left, false);
    finish(p, app);
}

struct async_take {
    struct dbpool_wait w; /* first: the callback's pointer is the struct's */
    atomic_bool done;
};

static void async_taken(struct dbpool_wait *w, struct dbconn *c, int rc, const char *err)
{
    (void)c;
    (void)err;
    assert_int_equal(rc, 0);
    atomic_store(&((struct async_take *)(void *)w)->done, true);
}

/* An acquire on the event threads' way in (dbpool_acquire_async), by A; the connect it may
 * start is waited for, bounded. */
static struct dbconn *take_async(struct dbpool *p, bool trust_recent)
{
    struct async_take t = {.w = {.owner = A,
                                 .deadline_us = mclock_now_us() + WAIT_S * SEC,
                                 .trust_recent = trust_recent,
                                 .done = async_taken}};
    atomic_init(&t.done, false);
    struct dbconn *c = NULL;
    char err[256] = "";
    int rc = dbpool_acquire_async(p, &t.w, &c, err, sizeof(err));
    if (rc == -EINPROGRESS) {
        int64_t end = mclock_now_us() + WAIT_S * SEC;
        while (!atomic_load(&t.done) && mclock_now_us() < end)
            nap_ms(2);
        assert_true(atomic_load(&t.done));
        c = t.w.granted;
        rc = 0;
    }
    assert_int_equal(rc, 0);
    return c;
}

/* A connection of p whose backend is killed while it is idle in p; its pid in *pid. */
static struct dbconn *killed_idle(struct dbpool *p, int64_t *pid)
{
    struct dbconn *c;
    *pid = take_with_pid(p, &c);
    dbpool_release(p, c, false);
    kill_backend(*pid);
    return c;
}

/* A caller that retries on a dead connection (a read on an event thread) is given a
 * connection released less than DBPOOL_TRUST_RECENT_US ago without the liveness check (a
 * system call per statement): here a killed one, which its statement then finds dead. One idle
 * for longer is checked even so, and so is any for a caller that does not retry. */
static void a_retrying_caller_takes_a_recently_released_connection_unchecked(void **state)
{
    (void)state;
    NEED_PG();
    char app[64];
    app_for(app, sizeof(app), "trusted");
    struct dbpool *p = mkpool(app, 1, 0, NULL);

    int64_t pid;
    struct dbconn *dead = killed_idle(p, &pid);
    struct dbconn *c = take_async(p, true);
    assert_ptr_equal(c, dead);
    assert_int_equal(stats(p).closed_broken, 0);
    PGresult *res = NULL;
    char err[256] = "";
    assert_int_equal(
        dbconn_exec(c, "one", 0, NULL, mclock_now_us() + 5 * SEC, &res, err, sizeof(err)),
        -ECONNRESET);
    assert_null(res);
    dbpool_release(p, c, true);
    assert_int_equal(stats(p).closed_broken, 1);

    /* Idle for longer than the window: checked, closed and replaced. The test may move its
     * release time back since nothing else runs. */
    dead = killed_idle(p, &pid);
    dead->released_us -= DBPOOL_TRUST_RECENT_US;
    c = take_async(p, true);
    /* Replaced: a new backend (not the address: the new connection may well be allocated
     * where the freed one was, as it once was in a full run). */
    assert_int_not_equal(q_int(c, "pid", NULL), pid);
    assert_int_equal(stats(p).closed_broken, 2);
    dbpool_release(p, c, false);

    /* Released just now, for a caller that does not retry: checked. */
    dead = killed_idle(p, &pid);
    c = take_async(p, false);
    assert_int_not_equal(q_int(c, "pid", NULL), pid);
    assert_int_equal(stats(p).closed_broken, 3);
    dbpool_release(p, c, false);
    finish(p, app);
}

static void broken_release_frees_the_slot(void **state)
{
    (void)state;
    NEED_PG();
    char app[64];
    app_for(app, sizeof(app), "broken");
    struct dbpool *p = mkpool(app, 1, 0, NULL);
    struct dbconn *c;
    int64_t pid = take_with_pid(p, &c);
    dbpool_release(p, c, true);
    struct dbpool_stats s = stats(p);
    assert_int_equal(s.closed_broken, 1);
    assert_int_equal(s.idle, 0);
    assert_int_equal(s.active, 0);
    /* With max 1, only a freed slot lets this succeed. */
    assert_int_equal(get(p, A, 5 * SEC, &c), 0);
    assert_int_not_equal(q_int(c, "pid", NULL), pid);
    assert_int_equal(stats(p).connects, 2);
    assert_int_equal(wait_backends(app, 1), 1);
    dbpool_release(p, c, false);
    finish(p, app);
}

static void smaller_max_closes_idle_connections(void **state)
{
    (void)state;
    NEED_PG();
    char app[64];
    app_for(app, sizeof(app), "shrink");
    struct dbpool *p = mkpool(app, 3, 0, NULL);
    struct dbconn *c[3], *d;
    for (int i = 0; i < 3; i++)
        assert_int_equal(get(p, A, 5 * SEC, &c[i]), 0);
    dbpool_release(p, c[0], false);
    dbpool_set_limits(p, 1, (struct share_policy){.cap = 0}, 1000000, 0);
    /* The idle one above max is closed now, busy ones when they come back. */
    assert_int_equal(stats(p).idle, 0);
    assert_int_equal(wait_backends(app, 2), 2);
    dbpool_release(p, c[1], false);
    dbpool_release(p, c[2], false);
    struct dbpool_stats s = stats(p);
    assert_int_equal(s.max, 1);
    assert_int_equal(s.idle, 1);
    assert_int_equal(wait_backends(app, 1), 1);
    assert_int_equal(get(p, A, 5 * SEC, &c[0]), 0);
    assert_int_equal(get(p, B, 100 * MS, &d), -ETIMEDOUT);
    dbpool_release(p, c[0], false);
    finish(p, app);
}

static void stop_wakes_waiters_with_eshutdown(void **state)
{
    (void)state;
    NEED_PG();
    char app[64];
    app_for(app, sizeof(app), "stop");
    struct dbpool *p = mkpool(app, 1, 0, NULL);
    struct dbconn *c, *none;
    assert_int_equal(get(p, A, 5 * SEC, &c), 0);
    struct waiter w[2];
    memset(w, 0, sizeof(w));
    start_waiter(&w[0], p, A, 60 * SEC);
    start_waiter(&w[1], p, B, 60 * SEC);
    wait_pending(p, 2);
    int64_t t0 = mclock_now_us();
    dbpool_stop(p);
    for (int i = 0; i < 2; i++) {
        pthread_join(w[i].tid, NULL);
        assert_int_equal(w[i].rc, -ESHUTDOWN);
        assert_true(w[i].done_us - t0 < 5 * SEC); /* woken, not timed out after 60 s */
    }
    assert_int_equal(get(p, A, 5 * SEC, &none), -ESHUTDOWN);
    /* The busy connection is closed when it comes back. */
    dbpool_release(p, c, false);
    assert_int_equal(stats(p).idle, 0);
    dbpool_destroy(p);
    assert_int_equal(wait_backends(app, 0), 0);
}

struct churner {
    pthread_t tid;
    struct dbpool *p;
    const void *owner;
    atomic_int *done;
    int ok, timeouts, other; /* read after join */
};

static void *churner_main(void *arg)
{
    struct churner *ch = arg;
    for (int i = 0; i < 30; i++) {
        struct dbconn *c;
        int rc = get(ch->p, ch->owner, 15 * SEC, &c);
        if (rc == 0) {
            ch->ok += q_int(c, "one", NULL) == 1;
            dbpool_release(ch->p, c, false);
        } else if (rc == -ETIMEDOUT) {
            ch->timeouts++;

        } else {
            ch->other++;
        }
    }
    atomic_fetch_add(ch->done, 1);
    return NULL;
}

static void hand_off_survives_flipping_caps(void **state)
{
    (void)state;
    NEED_PG();
    enum { MAX = 4, THREADS = 6 };
    char app[64];
    app_for(app, sizeof(app), "churn");
    atomic_bool others = true;
    struct dbpool *p = mkpool(app, MAX, 1, &others);
    atomic_int done = 0;
    struct churner ch[THREADS];
    for (int i = 0; i < THREADS; i++) {
        ch[i] = (struct churner){.p = p, .owner = i % 3 == 0 ? A : B, .done = &done};
        assert_int_equal(pthread_create(&ch[i].tid, NULL, churner_main, &ch[i]), 0);
    }
    /* While they run, the tier's activity and the tenant cap keep changing; every change is
     * followed by what the janitor or a reload would do (kick, set_limits). A waiter left
     * behind by a missed hand-off would time out. */
    int64_t max_seen = 0;
    for (unsigned k = 0; atomic_load(&done) < THREADS; k++) {
        atomic_store(&others, k % 2 == 0);
        dbpool_kick(p);
        dbpool_set_limits(p, MAX, (struct share_policy){.cap = 1 + k % 3}, 1000000, 0);
        int64_t n = backends(app);
        if (n > max_seen)
            max_seen = n;
    }
    int ok = 0;
    for (int i = 0; i < THREADS; i++) {
        pthread_join(ch[i].tid, NULL);
        assert_int_equal(ch[i].timeouts, 0);
        assert_int_equal(ch[i].other, 0);
        ok += ch[i].ok;
    }
    assert_int_equal(ok, THREADS * 30);
    assert_true(max_seen <= MAX);
    /* Connects started for waiters that were served by a released connection meanwhile end
     * on their own (their connections go idle). */
    wait_opening_idle(p, 0, SIZE_MAX);
    struct dbpool_stats st = stats(p);
    assert_int_equal(st.acquired, THREADS * 30);
    assert_true(st.connects <= MAX);
    assert_int_equal(st.pending + st.active + st.opening, 0);
    finish(p, app);
}

/* ---- the event threads' ways in ----------------------------------------------------------- */

/* Backends of the pool's test sleeping in pg_sleep now (pid's statement is running). */
static int64_t sleeping(int64_t pid)
{
    char pidtxt[24];
    snprintf(pidtxt, sizeof(pidtxt), "%lld", (long long)pid);
    return admin_int("SELECT count(*) FROM pg_stat_activity WHERE pid = $1::int "
                     "AND state = 'active' AND wait_event = 'PgSleep'",
                     pidtxt);
}

/* Poll until pid's statement is in pg_sleep: a cancel sent before it runs would find the
 * backend idle and be lost. */
static void wait_sleeping(int64_t pid)
{
    int64_t end = mclock_now_us() + WAIT_S * SEC;
    while (sleeping(pid) != 1 && mclock_now_us() < end)
        nap_ms(2);
    assert_int_equal(sleeping(pid), 1);
}

static void try_acquire_takes_only_an_idle_connection_and_never_connects(void **state)
{
    (void)state;
    NEED_PG();
    char app[64];
    app_for(app, sizeof(app), "try");
    struct dbpool *p = mkpool(app, 2, 0, NULL);
    struct dbconn *c = NULL, *d = NULL, *e = NULL;
    /* A cold pool has room for two, but nothing idle: no, and no connect started for it. */
    assert_int_equal(dbpool_try_acquire(p, A, &c), -EAGAIN);
    assert_null(c);
    struct dbpool_stats s = stats(p);
    assert_int_equal(s.connects + s.opening + s.pending + s.active, 0);
    assert_int_equal(backends(app), 0);

    assert_int_equal(get(p, A, 5 * SEC, &c), 0);
    dbpool_release(p, c, false);
    assert_int_equal(dbpool_try_acquire(p, B, &d), 0);
    assert_ptr_equal(d, c);
    assert_int_equal(q_int(d, "one", NULL), 1);
    s = stats(p);
    assert_int_equal(s.active, 1);
    assert_int_equal(s.idle, 0);
    assert_int_equal(s.acquired, 2);
    assert_int_equal(dbpool_held(p, B), 1);

    /* The only connection is busy; room for another, still no connect. */
    assert_int_equal(dbpool_try_acquire(p, A, &e), -EAGAIN);
    assert_null(e);
    s = stats(p);
    assert_int_equal(s.opening, 0);
    assert_int_equal(s.connects, 1);
    assert_int_equal(wait_backends(app, 1), 1);
    dbpool_release(p, d, false);

    /* Stopped: nothing is handed out (the idle one is closed). */
    dbpool_stop(p);
    assert_int_equal(dbpool_try_acquire(p, A, &e), -EAGAIN);
    dbpool_destroy(p);
    assert_int_equal(wait_backends(app, 0), 0);
}

/* An idle connection is not taken past a waiter, nor by a tenant the share rule holds back;
 * the answer comes at once either way. */
static void try_acquire_gives_way_to_waiters_and_to_the_share_rule(void **state)
{
    (void)state;
    NEED_PG();
    char app[64];
    app_for(app, sizeof(app), "try-share");
    atomic_bool others = true;
    struct dbpool *p = mkpool(app, 2, 1, &others);
    struct dbconn *a1, *b1, *x = NULL;
    assert_int_equal(get(p, A, 5 * SEC, &a1), 0);
    assert_int_equal(get(p, B, 5 * SEC, &b1), 0);
    dbpool_release(p, b1, false);
    /* A holds its share (1) beside an active B: the idle connection is not A's. */
    assert_int_equal(dbpool_try_acquire(p, A, &x), -EAGAIN);
    assert_null(x);
    assert_int_equal(dbpool_try_acquire(p, B, &x), 0);
    assert_ptr_equal(x, b1);
    dbpool_release(p, x, false);
    x = NULL;

    /* A waits for a connection (passed over, at its share). B could take the idle one, but
     * waiters go first: -EAGAIN, at once, and the idle connection stays. */
    struct waiter w;
    memset(&w, 0, sizeof(w));
    start_waiter(&w, p, A, 60 * SEC);
    wait_pending(p, 1);
    int64_t t0 = mclock_now_us();
    assert_int_equal(dbpool_try_acquire(p, B, &x), -EAGAIN);
    assert_true(mclock_now_us() - t0 < SEC);
    assert_null(x);
    assert_int_equal(stats(p).idle, 1);

    /* A's own connection comes back: the waiter is served, and B may take the idle one. */
    dbpool_release(p, a1, false);
    pthread_join(w.tid, NULL);
    assert_int_equal(w.rc, 0);
    assert_int_equal(dbpool_try_acquire(p, B, &x), 0);
    assert_ptr_equal(x, b1);
    struct dbpool_stats s = stats(p);
    assert_int_equal(s.active, 2);
    assert_int_equal(s.connects, 2);
    dbpool_release(p, w.got, false);
    dbpool_release(p, x, false);
    finish(p, app);
}

/* A statement past its deadline on an event thread: cancelled on a pool thread, its connection
 * comes back clean to the pool (same backend, not closed), long before the statement would
 * have ended. */
static void cancel_release_ends_a_running_statement_and_returns_the_connection(void **state)
{
    (void)state;
    NEED_PG();
    char app[64];
    app_for(app, sizeof(app), "cancel-rel");
    struct dbpool *p = mkpool(app, 1, 0, NULL);
    struct dbconn *c, *again;
    int64_t pid = take_with_pid(p, &c);
    const char *ten[1] = {"10"};
    char err[256] = "";
    assert_int_equal(dbconn_send(c, "sleep", 1, ten, err, sizeof(err)), 0);
    wait_sleeping(pid);

    int64_t t0 = mclock_now_us();
    dbpool_cancel_release(p, c, t0 + 5 * SEC);
    /* max 1: only the cancelled connection coming back can serve this. */
    assert_int_equal(get(p, B, 9 * SEC, &again), 0);
    int64_t took = mclock_now_us() - t0;
    print_message("# cancelled and back in %lld ms\n", (long long)(took / MS));
    assert_true(took < 5 * SEC);
    assert_ptr_equal(again, c);
    assert_int_equal(q_int(again, "pid", NULL), pid);
    assert_int_equal(q_int(again, "one", NULL), 1);
    assert_int_equal(sleeping(pid), 0);
    struct dbpool_stats s = stats(p);
    assert_int_equal(s.closed_broken, 0);
    assert_int_equal(s.connects, 1);
    dbpool_release(p, again, false);
    finish(p, app);
}

/* dbpool_destroy waits for a cancel in progress: when it returns, the statement has ended and
 * the canceller is done with the pool (AddressSanitizer would see it touch freed memory). */
static void destroy_waits_for_the_cancel_of_a_running_statement(void **state)
{
    (void)state;
    NEED_PG();
    char app[64];
    app_for(app, sizeof(app), "cancel-destroy");
    struct dbpool *p = mkpool(app, 1, 0, NULL);
    struct dbconn *c;
    int64_t pid = take_with_pid(p, &c);
    const char *ten[1] = {"10"};
    char err[256] = "";
    assert_int_equal(dbconn_send(c, "sleep", 1, ten, err, sizeof(err)), 0);
    wait_sleeping(pid);
    int64_t t0 = mclock_now_us();
    dbpool_cancel_release(p, c, t0 + 5 * SEC);
    dbpool_stop(p);
    dbpool_destroy(p);
    assert_true(mclock_now_us() - t0 < 5 * SEC);
    assert_int_equal(sleeping(pid), 0);
    assert_int_equal(wait_backends(app, 0), 0);
}

/* ---- one connection ----------------------------------------------------------------------- */

/* Open a connection with prm (10 s to do it in); the test fails if it cannot. */
static struct dbconn *open_conn(const struct dbconn_params *prm)
{
    struct dbconn *c = NULL;
    char err[256] = "";
    int rc = dbconn_open(prm, mclock_now_us() + 10 * SEC, &c, err, sizeof(err));
    if (rc)
        fail_msg("open %s: %d %s", prm->appname, rc, err);
    return c;
}

/* A connection to the shared cluster, its application_name made from tag (app_for). */
static struct dbconn *open_tagged(const char *tag)
{
    char app[64];
    app_for(app, sizeof(app), tag);
    struct dbconn_params prm = params(url, app);
    return open_conn(&prm);
}

/* open_tagged's connection, in pipeline mode; its backend's pid (read before) in *pid. */
static struct dbconn *open_pipelined(const char *tag, int64_t *pid)
{
    struct dbconn *c = open_tagged(tag);
    *pid = q_int(c, "pid", NULL);
    assert_int_equal(dbconn_pipe_enter(c), 0);
    return c;
}

static void exec_past_deadline_times_out_and_cancel_keeps_connection(void **state)
{
    (void)state;
    NEED_PG();
    char app[64];
    app_for(app, sizeof(app), "cancel");
    struct dbconn_params prm = params(url, app);
    struct dbconn *c = open_conn(&prm);
    char err[256] = "";
    int64_t pid = q_int(c, "pid", NULL);

    const char *thirty[1] = {"30"};
    PGresult *res = (PGresult *)1;
    int64_t t0 = mclock_now_us();
    int rc = dbconn_exec(c, "sleep", 1, thirty, t0 + 300 * MS, &res, err, sizeof(err));
    int64_t took = mclock_now_us() - t0;
    assert_int_equal(rc, -ETIMEDOUT);
    assert_null(res);
    assert_non_null(strstr(err, "timed out"));
    assert_true(took >= 299 * MS && took < 5 * SEC);

    /* Cancelled in PostgreSQL, read to its end: the same backend answers the next query. */
    t0 = mclock_now_us();
    assert_int_equal(dbcancel_run(c, t0 + 5 * SEC), 0);
    assert_true(mclock_now_us() - t0 < 5 * SEC);
    assert_int_equal(q_int(c, "one", NULL), 1);
    assert_int_equal(q_int(c, "pid", NULL), pid);
    dbconn_close(c);
    assert_int_equal(wait_backends(app, 0), 0);
}

static void statement_timeout_is_a_server_side_backstop(void **state)
{
    (void)state;
    NEED_PG();
    char app[64];
    app_for(app, sizeof(app), "stmt-timeout");
    struct dbconn_params prm = params(url, app);
    prm.statement_timeout_ms = 150;
    struct dbconn *c = open_conn(&prm);
    char err[256] = "";
    const char *two[1] = {"2"};
    PGresult *res = NULL;
    /* The client deadline is far; PostgreSQL ends the statement (57014), reported as timeout. */
    int rc = dbconn_exec(c, "sleep", 1, two, mclock_now_us() + 30 * SEC, &res, err, sizeof(err));
    assert_int_equal(rc, -ETIMEDOUT);
    assert_null(res);
    assert_int_equal(q_int(c, "one", NULL), 1);
    dbconn_close(c);
}

static void sql_error_is_eio_and_connection_survives(void **state)
{
    (void)state;
    NEED_PG();
    struct dbconn *c = open_tagged("eio");
    char err[256] = "";
    const char *zero[1] = {"0"};
    PGresult *res = (PGresult *)1;
    int rc = dbconn_exec(c, "div", 1, zero, mclock_now_us() + 10 * SEC, &res, err, sizeof(err));
    assert_int_equal(rc, -EIO);
    assert_null(res);
    assert_non_null(strstr(err, "division by zero"));
    assert_null(strchr(err, '\n')); /* one line, for the logs */
    assert_int_equal(q_int(c, "div", "2"), 0);
    assert_int_equal(q_int(c, "one", NULL), 1);
    assert_string_equal(dbconn_sqlstate(NULL), "");
    assert_false(dbconn_is_dead(c));
    dbconn_close(c);
}

/* Wait (bounded) until fd is readable. */
static bool readable(int fd, int64_t deadline_us)
{
    struct pollfd pfd = {.fd = fd, .events = POLLIN};
    int64_t left = deadline_us - mclock_now_us();
    return left > 0 && poll(&pfd, 1, (int)(left / 1000) + 1) == 1;
}

/* As an event loop would: read each time the socket is readable until the statement ended.
 * *inprogress counts the -EINPROGRESS answers. */
static int read_to_end(struct dbconn *c, PGresult **res, char *err, size_t errlen, int *inprogress)
{
    int64_t end = mclock_now_us() + WAIT_S * SEC;
    for (;;) {
        int rc = dbconn_read(c, res, err, errlen);
        if (rc != -EINPROGRESS)
            return rc;
        assert_null(*res);
        (*inprogress)++;
        if (!readable(PQsocket(c->pg), end))
            fail_msg("the statement did not end within %d s", WAIT_S);
    }
}

/* The outcome of the oldest pipelined statement on c, waiting for it (bounded). */
static int pipe_next_wait(struct dbconn *c, PGresult **res, char *err, size_t errlen)
{
    int64_t end = mclock_now_us() + WAIT_S * SEC;
    for (;;) {
        int rc = dbconn_pipe_next(c, res, err, errlen);
        if (rc != -EINPROGRESS)
            return rc;
        if (!readable(PQsocket(c->pg), end))
            fail_msg("no pipelined outcome within %d s", WAIT_S);
        assert_int_equal(dbconn_pipe_consume(c, err, errlen), 0);
    }
}

static int64_t res_int(PGresult *res)
{
    assert_non_null(res);
    int64_t v = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
    PQclear(res);
    return v;
}

/* Pipelined statements on one connection come back in order; each in a batch of its own (a
 * Sync after it) is its own transaction: the one that fails fails alone, with PostgreSQL's
 * message, and the connection leaves pipeline mode clean. */
static void pipelined_statements_end_in_order_and_fail_alone(void **state)
{
    (void)state;
    NEED_PG();
    int64_t pid;
    struct dbconn *c = open_pipelined("pipe", &pid);
    char err[256] = "";
    const char *zero[1] = {"0"}, *nap[1] = {"0.05"};
    const char *names[] = {"late", "div", "pid", "one"};
    for (int i = 0; i < 4; i++) {
        assert_int_equal(dbconn_pipe_send(c, names[i], i < 2 ? 1 : 0,
                                          i == 0   ? nap
                                          : i == 1 ? zero
                                                   : NULL,
                                          err, sizeof(err)),
                         0);
        assert_int_equal(c->pipe_unsynced, 1);
        assert_int_equal(dbconn_pipe_sync(c, err, sizeof(err)), 0);
        assert_int_equal(c->pipe_unsynced, 0);
    }
    assert_int_equal(c->pipe_pending, 4);
    assert_int_equal(c->pipe_syncs, 4);
    assert_int_equal(dbconn_pipe_exit(c), -EBUSY); /* statements in flight */

    PGresult *res = NULL;
    assert_int_equal(pipe_next_wait(c, &res, err, sizeof(err)), 0);
    assert_int_equal(res_int(res), 7);
    res = (PGresult *)1;
    assert_int_equal(pipe_next_wait(c, &res, err, sizeof(err)), -EIO);
    assert_null(res);
    assert_non_null(strstr(err, "division by zero"));
    assert_int_equal(pipe_next_wait(c, &res, err, sizeof(err)), 0);
    assert_int_equal(res_int(res), pid);
    assert_int_equal(pipe_next_wait(c, &res, err, sizeof(err)), 0);
    assert_int_equal(res_int(res), 1);
    assert_int_equal(pipe_next_wait(c, &res, err, sizeof(err)), -ENODATA);
    assert_int_equal(c->pipe_syncs, 0);

    assert_int_equal(dbconn_pipe_exit(c), 0);
    assert_int_equal(PQpipelineStatus(c->pg), PQ_PIPELINE_OFF);
    assert_int_equal(q_int(c, "one", NULL), 1);
    dbconn_close(c);
}

/* Statements queued together leave as one batch: each is answered with its own result, in
 * order; a failing one ends the batch (those after it are -EAGAIN, not run: nothing of them
 * happened, so they may be sent again), and the failure does not outlive its batch. */
static void a_failure_in_a_batch_leaves_the_rest_of_it_unrun_and_the_next_batch_runs(void **state)
{
    (void)state;
    NEED_PG();
    int64_t pid;
    struct dbconn *c = open_pipelined("pipebatch", &pid);
    char err[256] = "";
    const char *zero[1] = {"0"}, *nap[1] = {"0.05"};
    assert_int_equal(dbconn_pipe_send(c, "late", 1, nap, err, sizeof(err)), 0);
    assert_int_equal(dbconn_pipe_send(c, "pid", 0, NULL, err, sizeof(err)), 0);
    assert_int_equal(dbconn_pipe_send(c, "div", 1, zero, err, sizeof(err)), 0);
    assert_int_equal(dbconn_pipe_send(c, "sleep", 1, nap, err, sizeof(err)), 0);
    assert_int_equal(dbconn_pipe_send(c, "one", 0, NULL, err, sizeof(err)), 0);
    assert_int_equal(c->pipe_unsynced, 5);
    assert_int_equal(dbconn_pipe_sync(c, err, sizeof(err)), 0);
    assert_int_equal(dbconn_pipe_send(c, "pid", 0, NULL, err, sizeof(err)), 0);
    assert_int_equal(dbconn_pipe_sync(c, err, sizeof(err)), 0);
    assert_int_equal(c->pipe_pending, 6);
    assert_int_equal(c->pipe_syncs, 2);

    PGresult *res = NULL;
    assert_int_equal(pipe_next_wait(c, &res, err, sizeof(err)), 0);
    assert_int_equal(res_int(res), 7);
    assert_int_equal(pipe_next_wait(c, &res, err, sizeof(err)), 0);
    assert_int_equal(res_int(res), pid);
    res = (PGresult *)1;
    assert_int_equal(pipe_next_wait(c, &res, err, sizeof(err)), -EIO);
    assert_null(res);
    assert_non_null(strstr(err, "division by zero"));
    for (int i = 0; i < 2; i++) {
        res = (PGresult *)1;
        err[0] = '\0';
        assert_int_equal(pipe_next_wait(c, &res, err, sizeof(err)), -EAGAIN);
        assert_null(res);
        assert_non_null(strstr(err, "aborted"));
    }
    assert_int_equal(pipe_next_wait(c, &res, err, sizeof(err)), 0);
    assert_int_equal(res_int(res), pid);
    assert_int_equal(pipe_next_wait(c, &res, err, sizeof(err)), -ENODATA);
    assert_int_equal(dbconn_pipe_exit(c), 0);
    assert_int_equal(q_int(c, "one", NULL), 1);
    dbconn_close(c);
}

/* A cancel in pipeline mode ends every statement in flight, not only the running one (nobody
 * waits for the others), those queued and not yet written too, and leaves the connection
 * clean and out of pipeline mode. */
static void a_cancelled_pipeline_ends_every_statement_and_keeps_the_connection(void **state)
{
    (void)state;
    NEED_PG();
    int64_t pid;
    struct dbconn *c = open_pipelined("pipecancel", &pid);
    char err[256] = "";
    const char *long_nap[1] = {"30"};
    /* A batch of two, one of one, and one queued without its Sync. */
    for (int i = 0; i < 4; i++) {
        assert_int_equal(dbconn_pipe_send(c, "sleep", 1, long_nap, err, sizeof(err)), 0);
        if (i == 1 || i == 2)
            assert_int_equal(dbconn_pipe_sync(c, err, sizeof(err)), 0);
    }
    wait_sleeping(pid); /* the first one runs */
    int64_t t0 = mclock_now_us();
    assert_int_equal(dbcancel_run(c, t0 + 10 * SEC), 0);
    assert_true(mclock_now_us() - t0 < 10 * SEC); /* not 30 s sleeps */
    assert_int_equal(c->pipe_pending, 0);
    assert_int_equal(c->pipe_syncs, 0);
    assert_int_equal(c->pipe_unsynced, 0);
    assert_int_equal(PQpipelineStatus(c->pg), PQ_PIPELINE_OFF);
    assert_int_equal(q_int(c, "pid", NULL), pid);
    dbconn_close(c);
}

static void send_then_read_is_in_progress_until_the_statement_ends(void **state)
{
    (void)state;
    NEED_PG();
    struct dbconn *c = open_tagged("steps");
    char err[256] = "";
    const char *fifth[1] = {"0.2"};
    int64_t t0 = mclock_now_us();
    assert_int_equal(dbconn_send(c, "late", 1, fifth, err, sizeof(err)), 0);
    /* The server sleeps 200 ms first: nothing can be there yet. */
    PGresult *res = (PGresult *)1;
    assert_int_equal(dbconn_read(c, &res, err, sizeof(err)), -EINPROGRESS);
    assert_null(res);
    int inprogress = 1;
    assert_int_equal(read_to_end(c, &res, err, sizeof(err), &inprogress), 0);
    assert_true(mclock_now_us() - t0 >= 200 * MS);
    assert_non_null(res);
    assert_int_equal(PQntuples(res), 1);
    assert_string_equal(PQgetvalue(res, 0, 0), "7");
    PQclear(res);
    /* Read to its end: the connection is ready for the next statement. */
    assert_int_equal(q_int(c, "one", NULL), 1);
    dbconn_close(c);
}

/* A failed statement read in steps is -EIO with PostgreSQL's message, and its failure does
 * not outlive it: the next statement sent on the connection succeeds. */
static void a_failed_statement_read_in_steps_is_eio_with_the_server_message(void **state)
{
    (void)state;
    NEED_PG();
    struct dbconn *c = open_tagged("steps-eio");
    char err[256] = "";
    const char *zero[1] = {"0"}, *no_wait[1] = {"0"};
    assert_int_equal(dbconn_send(c, "div", 1, zero, err, sizeof(err)), 0);
    PGresult *res = NULL;
    int inprogress = 0;
    assert_int_equal(read_to_end(c, &res, err, sizeof(err), &inprogress), -EIO);
    assert_null(res);
    assert_non_null(strstr(err, "division by zero"));
    assert_null(strchr(err, '\n'));

    err[0] = '\0';
    assert_int_equal(dbconn_send(c, "late", 1, no_wait, err, sizeof(err)), 0);
    assert_int_equal(read_to_end(c, &res, err, sizeof(err), &inprogress), 0);
    assert_non_null(res);
    assert_string_equal(PQgetvalue(res, 0, 0), "7");
    PQclear(res);
    dbconn_close(c);
}

/* The error reaches the client before the end of its statement (ReadyForQuery, held back by
 * the relay): the read that sees the error says -EINPROGRESS, and the read that sees the end
 * returns the error with its message. */
static void an_error_read_before_its_statement_ends_is_returned_at_the_end(void **state)
{
    (void)state;
    NEED_PG();
    struct pgproxy *px = NULL;
    assert_int_equal(pgproxy_start(atoi(getenv("BH_TEST_PG_PORT")), &px), 0);
    char purl[300], app[64];
    snprintf(purl, sizeof(purl),
             "postgresql://postgres@127.0.0.1:%d/bulkhead?sslmode=disable&gssencmode=disable",
             pgproxy_port(px));
    app_for(app, sizeof(app), "split");
    struct dbconn_params prm = params(purl, app);
    struct dbconn *c = open_conn(&prm);
    char err[256] = "";

    pgproxy_hold(px, 'Z');
    unsigned errors = pgproxy_relayed(px, 'E');
    const char *zero[1] = {"0"};
    assert_int_equal(dbconn_send(c, "div", 1, zero, err, sizeof(err)), 0);
    assert_true(pgproxy_wait_held(px, mclock_now_us() + WAIT_S * SEC));
    assert_int_equal(pgproxy_relayed(px, 'E'), errors + 1);
    /* The error is on the socket, the end is not. */
    assert_true(readable(PQsocket(c->pg), mclock_now_us() + WAIT_S * SEC));
    PGresult *res = (PGresult *)1;
    assert_int_equal(dbconn_read(c, &res, err, sizeof(err)), -EINPROGRESS);
    assert_null(res);
    assert_int_equal(dbconn_read(c, &res, err, sizeof(err)), -EINPROGRESS); /* still not */

    pgproxy_release(px);
    int inprogress = 0;
    err[0] = '\0';
    assert_int_equal(read_to_end(c, &res, err, sizeof(err), &inprogress), -EIO);
    assert_null(res);
    assert_non_null(strstr(err, "division by zero"));
    assert_int_equal(q_int(c, "one", NULL), 1);
    dbconn_close(c);
    pgproxy_stop(px);
}

/* A TCP port on 127.0.0.1 that nothing listens on. */
static int closed_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(sa);
    assert_true(fd >= 0);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
    close(fd);
    return ntohs(sa.sin_port);
}

static void connect_to_closed_port_fails_fast(void **state)
{
    (void)state;
    NEED_PG();
    char bad[128], app[64];
    snprintf(bad, sizeof(bad), "postgresql://postgres@127.0.0.1:%d/bulkhead", closed_port());
    app_for(app, sizeof(app), "refused");
    struct dbconn_params prm = params(bad, app);
    struct dbconn *c = NULL;
    char err[256] = "";
    int64_t t0 = mclock_now_us();
    assert_int_equal(dbconn_open(&prm, t0 + 10 * SEC, &c, err, sizeof(err)), -ECONNRESET);
    assert_true(mclock_now_us() - t0 < 3 * SEC);
    assert_null(c);
    assert_non_null(strstr(err, "connect failed"));

    /* Through a pool: the connect's error is the waiter's answer (nothing else could serve
     * it). An acquire just after it fails at once with the same error and starts no connect (a
     * refusing database is not sent one per request); past the backoff, the next one tries
     * again. The slot is given back each time. */
    struct dbpool_opts o = {.conn = prm, .max = 1};
    struct dbpool *p = NULL;
    assert_int_equal(dbpool_create(&o, &p), 0);
    t0 = mclock_now_us();
    assert_int_equal(dbpool_acquire(p, A, t0 + 10 * SEC, &c, err, sizeof(err)), -ECONNRESET);
    assert_true(mclock_now_us() - t0 < 3 * SEC);
    assert_non_null(strstr(err, "connect failed"));
    err[0] = '\0';
    assert_int_equal(dbpool_acquire(p, B, mclock_now_us() + 10 * SEC, &c, err, sizeof(err)),
                     -ECONNRESET);
    assert_non_null(strstr(err, "connect failed"));
    assert_int_equal(stats(p).connect_failures, 1);
    nap_ms(150); /* past the backoff */
    t0 = mclock_now_us();
    assert_int_equal(dbpool_acquire(p, A, t0 + 10 * SEC, &c, err, sizeof(err)), -ECONNRESET);
    assert_true(mclock_now_us() - t0 < 3 * SEC);
    struct dbpool_stats s = stats(p);
    assert_int_equal(s.connect_failures, 2);
    assert_int_equal(s.connects, 0);
    assert_int_equal(s.opening, 0);
    dbpool_stop(p);
    dbpool_destroy(p);
}

static int group_setup(void **state)
{
    (void)state;
    if (unitdb_open(url, sizeof(url), &admin))
        return -1;
    if (!admin)
        return 0; /* every test skips */
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    return unitdb_close(&admin);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(opens_lazily_and_reuses_idle_connections),
        cmocka_unit_test(a_connect_past_the_requesters_deadline_is_kept),
        cmocka_unit_test(a_waiter_takes_a_released_connection_while_its_connect_is_slow),
        cmocka_unit_test(a_new_statement_timeout_replaces_the_connections_set_up_with_the_old),
        cmocka_unit_test(never_opens_more_than_max),
        cmocka_unit_test(acquire_times_out_near_its_deadline),
        cmocka_unit_test(waiters_are_served_first_come_first_served),
        cmocka_unit_test(tenant_cap_binds_while_others_are_active),
        cmocka_unit_test(no_tenant_cap_when_alone),
        cmocka_unit_test(a_newcomer_never_waits_behind_a_busy_tenant),
        cmocka_unit_test(a_tenant_on_a_cold_pool_leaves_the_reserve_to_a_newcomer),
        cmocka_unit_test(a_connect_that_times_out_with_nothing_busy_fails_its_waiter),
        cmocka_unit_test(brief_requests_take_one_connection_past_the_share_never_the_reserve),
        cmocka_unit_test(connection_killed_while_idle_is_replaced),
        cmocka_unit_test(the_reaper_closes_idle_connections_the_server_killed),
        cmocka_unit_test(the_reaper_closes_connections_idle_past_the_timeout),
        cmocka_unit_test(a_retrying_caller_takes_a_recently_released_connection_unchecked),
        cmocka_unit_test(broken_release_frees_the_slot),
        cmocka_unit_test(smaller_max_closes_idle_connections),
        cmocka_unit_test(stop_wakes_waiters_with_eshutdown),
        cmocka_unit_test(hand_off_survives_flipping_caps),
        cmocka_unit_test(exec_past_deadline_times_out_and_cancel_keeps_connection),
        cmocka_unit_test(statement_timeout_is_a_server_side_backstop),
        cmocka_unit_test(sql_error_is_eio_and_connection_survives),
        cmocka_unit_test(connect_to_closed_port_fails_fast),
        cmocka_unit_test(try_acquire_takes_only_an_idle_connection_and_never_connects),
        cmocka_unit_test(try_acquire_gives_way_to_waiters_and_to_the_share_rule),
        cmocka_unit_test(cancel_release_ends_a_running_statement_and_returns_the_connection),
        cmocka_unit_test(destroy_waits_for_the_cancel_of_a_running_statement),
        cmocka_unit_test(send_then_read_is_in_progress_until_the_statement_ends),
        cmocka_unit_test(pipelined_statements_end_in_order_and_fail_alone),
        cmocka_unit_test(a_failure_in_a_batch_leaves_the_rest_of_it_unrun_and_the_next_batch_runs),
        cmocka_unit_test(a_cancelled_pipeline_ends_every_statement_and_keeps_the_connection),
        cmocka_unit_test(a_failed_statement_read_in_steps_is_eio_with_the_server_message),
        cmocka_unit_test(an_error_read_before_its_statement_ends_is_returned_at_the_end),
    };
    return cmocka_run_group_tests_name("dbpool", tests, group_setup, group_teardown);
}
