/*
 * test_dbpool: the connection pool (dbpool.h) against a real PostgreSQL: connections are
 * opened lazily and reused, never more than max, a connect past its requester's deadline is
 * kept, waiters are served first come first served and time out near their deadline, a connect
 * that fails or times out fails its waiter, stop wakes waiters.
 *
 * The fixture (dbpoolfx) counts the pool's backends on the server; the share rules between
 * tenants are in test_dbpool_share, broken and idle connections in test_dbpool_health, the
 * event threads' ways in in test_dbpool_event, statements on one connection in
 * test_dbconn_stmt. Nothing sleeps to synchronise: threads wait on pool state with a bound.
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

/* A connect started with too little of the requester's time left still completes (it is given
 * connect_timeout_us), and the connection is kept for the next requester instead of being
 * thrown away: under load, that is what stops connects from timing out one after another.
 * (Another connection is busy meanwhile: with nothing busy, the requester would wait for the
 * connect, see a_connect_that_times_out_with_nothing_busy_fails_its_waiter.) */
static void a_connect_past_the_requesters_deadline_is_kept(void **state)
{
    (void)state;
    DBFX_NEED_PG();
    char app[64];
    dbfx_app_for(app, sizeof(app), "late");
    struct dbpool_opts o = {.conn = dbfx_params(dbfx_url, app),
                            .max = 2,
                            .share = {.size = 2},
                            .connect_timeout_us = 10 * DBFX_SEC};
    struct dbpool *p = NULL;
    assert_int_equal(dbpool_create(&o, &p), 0);
    struct dbconn *busy = NULL, *c = NULL;
    assert_int_equal(dbfx_get(p, DBFX_A, 5 * DBFX_SEC, &busy), 0);
    char err[256];
    /* One microsecond: no connect is that fast. The connect goes on after the requester left. */
    assert_int_equal(dbpool_acquire(p, DBFX_B, mclock_now_us() + 1, &c, err, sizeof(err)),
                     -ETIMEDOUT);
    assert_null(c);
    dbfx_wait_opening_idle(p, 0, SIZE_MAX);
    struct dbpool_stats s = dbfx_stats(p);
    assert_int_equal(s.connects, 2);
    assert_int_equal(s.idle, 1);
    assert_int_equal(s.active, 1);
    /* The next requester gets that connection, nothing new opened. */
    assert_int_equal(dbfx_get(p, DBFX_B, 5 * DBFX_SEC, &c), 0);
    assert_int_equal(dbfx_stats(p).connects, 2);
    dbpool_release(p, c, false);
    dbpool_release(p, busy, false);
    dbpool_destroy(p);
}

static void opens_lazily_and_reuses_idle_connections(void **state)
{
    (void)state;
    DBFX_NEED_PG();
    char app[64];
    dbfx_app_for(app, sizeof(app), "lazy");
    struct dbpool *p = dbfx_mkpool(app, 4, 0, NULL);
    assert_int_equal(dbfx_backends(app), 0);
    assert_int_equal(dbfx_stats(p).connects, 0);

    struct dbconn *c1, *c2, *again;
    assert_int_equal(dbfx_get(p, DBFX_A, 5 * DBFX_SEC, &c1), 0);
    assert_int_equal(dbfx_wait_backends(app, 1), 1);
    int64_t pid = dbfx_q_int(c1, "pid", NULL);
    dbpool_release(p, c1, false);
    /* The idle connection is handed out again: same backend, nothing new opened. */
    assert_int_equal(dbfx_get(p, DBFX_B, 5 * DBFX_SEC, &again), 0);
    assert_ptr_equal(again, c1);
    assert_int_equal(dbfx_q_int(again, "pid", NULL), pid);
    assert_int_equal(dbfx_stats(p).connects, 1);
    /* A second one is opened only when the first is busy. */
    assert_int_equal(dbfx_get(p, DBFX_A, 5 * DBFX_SEC, &c2), 0);
    assert_ptr_not_equal(c2, again);
    assert_int_equal(dbfx_wait_backends(app, 2), 2);
    struct dbpool_stats s = dbfx_stats(p);
    assert_int_equal(s.connects, 2);
    assert_int_equal(s.active, 2);
    assert_int_equal(s.idle, 0);
    dbpool_release(p, again, false);
    dbpool_release(p, c2, false);
    s = dbfx_stats(p);
    assert_int_equal(s.active, 0);
    assert_int_equal(s.idle, 2);
    assert_int_equal(s.acquired, 3);
    dbfx_finish(p, app);
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
        if (dbfx_get(h->p, h->owner, 30 * DBFX_SEC, &c)) {
            h->fails++;
            continue;
        }
        long long peers = dbfx_q_int(c, "peers", NULL);
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
    DBFX_NEED_PG();
    enum { MAX = 3, THREADS = 8 };
    char app[64];
    dbfx_app_for(app, sizeof(app), "max");
    struct dbpool *p = dbfx_mkpool(app, MAX, 0, NULL);
    /* Fill the pool once: the fourth acquirer waits and times out, nothing more is opened. */
    struct dbconn *held[MAX], *extra;
    for (int i = 0; i < MAX; i++)
        assert_int_equal(dbfx_get(p, DBFX_A, 5 * DBFX_SEC, &held[i]), 0);
    assert_int_equal(dbfx_get(p, DBFX_B, 100 * DBFX_MS, &extra), -ETIMEDOUT);
    assert_int_equal(dbfx_wait_backends(app, MAX), MAX);
    for (int i = 0; i < MAX; i++)
        dbpool_release(p, held[i], false);

    /* Eight threads, 25 acquisitions each, while the server's view is sampled. */
    atomic_int done = 0;
    atomic_llong max_peers = 0;
    struct hammer h[THREADS];
    pthread_t tid[THREADS];
    for (int i = 0; i < THREADS; i++) {
        h[i] = (struct hammer){p, i % 2 ? DBFX_A : DBFX_B, &done, &max_peers, 0};
        assert_int_equal(pthread_create(&tid[i], NULL, hammer_main, &h[i]), 0);
    }
    int64_t max_seen = 0;
    while (atomic_load(&done) < THREADS) {
        int64_t n = dbfx_backends(app);
        if (n > max_seen)
            max_seen = n;
        dbfx_nap_ms(2);
    }
    for (int i = 0; i < THREADS; i++) {
        pthread_join(tid[i], NULL);
        assert_int_equal(h[i].fails, 0);
    }
    assert_true(max_seen <= MAX);
    assert_true(atomic_load(&max_peers) <= MAX);
    assert_true(atomic_load(&max_peers) >= 1);
    struct dbpool_stats s = dbfx_stats(p);
    assert_int_equal(s.connects, MAX);
    assert_int_equal(s.acquired, MAX + THREADS * 25);
    assert_int_equal(s.timeouts, 1);
    assert_int_equal(s.idle, MAX);
    assert_int_equal(dbfx_backends(app), MAX);
    dbfx_finish(p, app);
}

static void acquire_times_out_near_its_deadline(void **state)
{
    (void)state;
    DBFX_NEED_PG();
    char app[64];
    dbfx_app_for(app, sizeof(app), "timeout");
    struct dbpool *p = dbfx_mkpool(app, 1, 0, NULL);
    struct dbconn *c, *none = NULL;
    assert_int_equal(dbfx_get(p, DBFX_A, 5 * DBFX_SEC, &c), 0);
    char err[256] = "";
    int64_t t0 = mclock_now_us();
    int rc = dbpool_acquire(p, DBFX_B, t0 + 300 * DBFX_MS, &none, err, sizeof(err));
    int64_t took = mclock_now_us() - t0;
    assert_int_equal(rc, -ETIMEDOUT);
    assert_null(none);
    assert_true(err[0] != '\0');
    assert_true(took >= 300 * DBFX_MS - 1 * DBFX_MS);
    assert_true(took < 300 * DBFX_MS + 5 * DBFX_SEC); /* generous: the machine is shared */
    struct dbpool_stats s = dbfx_stats(p);
    assert_int_equal(s.timeouts, 1);
    assert_int_equal(s.pending, 0);
    assert_true(s.wait_us_total >= 299 * DBFX_MS);
    /* A deadline already past fails at once. */
    t0 = mclock_now_us();
    assert_int_equal(dbfx_get(p, DBFX_B, -1 * DBFX_SEC, &none), -ETIMEDOUT);
    assert_true(mclock_now_us() - t0 < 1 * DBFX_SEC);
    dbpool_release(p, c, false);
    dbfx_finish(p, app);
}

static void waiters_are_served_first_come_first_served(void **state)
{
    (void)state;
    DBFX_NEED_PG();
    enum { N = 4 };
    char app[64];
    dbfx_app_for(app, sizeof(app), "fifo");
    struct dbpool *p = dbfx_mkpool(app, 1, 0, NULL);
    struct dbconn *c;
    assert_int_equal(dbfx_get(p, DBFX_A, 5 * DBFX_SEC, &c), 0);
    pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
    int order[N], norder = 0;
    struct dbfx_waiter w[N];
    memset(w, 0, sizeof(w));
    for (int i = 0; i < N; i++) {
        w[i].idx = i;
        w[i].order_mu = &mu;
        w[i].order = order;
        w[i].norder = &norder;
        dbfx_start_waiter(&w[i], p, i % 2 ? DBFX_A : DBFX_B, 30 * DBFX_SEC);
        dbfx_wait_pending(p, (size_t)i + 1); /* queued in this order */
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
    assert_int_equal(dbfx_stats(p).connects, 1);
    dbfx_finish(p, app);
}

/* Connections being opened count as held: a cold pool cannot be filled past the reserve by
 * one tenant's concurrent first requests. */
/* One statement on the admin connection, whose result is not read. */
static void admin_do(const char *sql)
{
    PGresult *res = PQexec(dbfx_admin, sql);
    if (PQresultStatus(res) != PGRES_TUPLES_OK && PQresultStatus(res) != PGRES_COMMAND_OK)
        fail_msg("admin %s: %s", sql, PQerrorMessage(dbfx_admin));
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
    DBFX_NEED_PG();
    char app[64];
    dbfx_app_for(app, sizeof(app), "slowconn");
    struct dbpool_opts o = {
        .conn = dbfx_params(dbfx_url, app), .max = 2, .connect_timeout_us = 20 * DBFX_SEC};
    o.conn.setup_sql = "SELECT pg_advisory_xact_lock_shared(4217)";
    struct dbpool *p = NULL;
    assert_int_equal(dbpool_create(&o, &p), 0);
    struct dbconn *c1 = NULL;
    assert_int_equal(dbfx_get(p, DBFX_A, 5 * DBFX_SEC, &c1), 0);

    admin_do("SELECT pg_advisory_lock(4217)"); /* every connect from now on waits in its setup */
    struct dbfx_waiter w = {0};
    dbfx_start_waiter(&w, p, DBFX_B, 10 * DBFX_SEC);
    dbfx_wait_pending(p, 1);
    dbfx_wait_opening_idle(p, 1, SIZE_MAX);
    assert_int_equal(dbfx_stats(p).opening, 1);

    dbpool_release(p, c1, false);
    pthread_join(w.tid, NULL);
    assert_int_equal(w.rc, 0);
    assert_ptr_equal(w.got, c1);                /* the released one, at once */
    assert_int_equal(dbfx_stats(p).opening, 1); /* while the connect still waits */
    assert_int_equal(dbfx_stats(p).connects, 1);

    admin_do("SELECT pg_advisory_unlock(4217)");
    dbfx_wait_opening_idle(p, 0, 1);
    struct dbpool_stats s = dbfx_stats(p);
    assert_int_equal(s.idle, 1);
    assert_int_equal(s.opening, 0);
    assert_int_equal(s.connects, 2);
    assert_int_equal(s.connect_failures, 0);
    dbpool_release(p, w.got, false);
    dbfx_finish(p, app);
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
    DBFX_NEED_PG();
    char app[64], v[32];
    dbfx_app_for(app, sizeof(app), "stmt-timeout");
    struct dbpool_opts o = {
        .conn = dbfx_params(dbfx_url, app), .max = 2, .connect_timeout_us = 5 * DBFX_SEC};
    o.conn.statement_timeout_ms = 1000;
    struct dbpool *p = NULL;
    assert_int_equal(dbpool_create(&o, &p), 0);
    struct dbconn *held = NULL, *idle = NULL;
    assert_int_equal(dbfx_get(p, DBFX_A, 5 * DBFX_SEC, &held), 0);
    assert_int_equal(dbfx_get(p, DBFX_B, 5 * DBFX_SEC, &idle), 0);
    show_timeout(held, v, sizeof(v));
    assert_string_equal(v, "1s");
    dbpool_release(p, idle, false);

    dbpool_set_limits(p, 2, (struct share_policy){.cap = 0}, 5 * DBFX_SEC, 2500);
    dbpool_release(p, held, false); /* outdated: closed, not kept */
    struct dbconn *c = NULL;
    assert_int_equal(dbfx_get(p, DBFX_A, 5 * DBFX_SEC, &c), 0); /* the idle one is outdated too */
    show_timeout(c, v, sizeof(v));
    assert_string_equal(v, "2500ms");
    struct dbpool_stats s = dbfx_stats(p);
    assert_int_equal(s.connects, 3);
    assert_int_equal(s.closed_broken, 0);
    assert_int_equal(s.idle, 0);
    assert_int_equal(dbfx_wait_backends(app, 1), 1);
    dbpool_release(p, c, false);
    dbfx_finish(p, app);
}

/* A waiter whose deadline passes while nothing is busy and a connect runs waits for that
 * connect: its outcome is the answer. A database that does not answer (here: a connect whose
 * setup waits on a lock the test holds, past the connect timeout) fails the request with the
 * connect's error, as a breaker failure must, not with the pool's "no connection free". */
static void a_connect_that_times_out_with_nothing_busy_fails_its_waiter(void **state)
{
    (void)state;
    DBFX_NEED_PG();
    char app[64];
    dbfx_app_for(app, sizeof(app), "blackhole");
    struct dbpool_opts o = {
        .conn = dbfx_params(dbfx_url, app), .max = 2, .connect_timeout_us = 600 * DBFX_MS};
    o.conn.setup_sql = "SELECT pg_advisory_xact_lock_shared(4218)";
    struct dbpool *p = NULL;
    assert_int_equal(dbpool_create(&o, &p), 0);
    admin_do("SELECT pg_advisory_lock(4218)");
    struct dbconn *c = NULL;
    char err[256] = "";
    int64_t t0 = mclock_now_us();
    assert_int_equal(dbpool_acquire(p, DBFX_A, t0 + 200 * DBFX_MS, &c, err, sizeof(err)),
                     -ECONNRESET);
    int64_t took = mclock_now_us() - t0;
    assert_true(took >= 550 * DBFX_MS && took < 3 * DBFX_SEC);
    assert_non_null(strstr(err, "timed out"));
    admin_do("SELECT pg_advisory_unlock(4218)");
    struct dbpool_stats s = dbfx_stats(p);
    assert_int_equal(s.connect_failures, 1);
    assert_int_equal(s.timeouts, 0);
    dbpool_stop(p);
    dbpool_destroy(p);
}

static void stop_wakes_waiters_with_eshutdown(void **state)
{
    (void)state;
    DBFX_NEED_PG();
    char app[64];
    dbfx_app_for(app, sizeof(app), "stop");
    struct dbpool *p = dbfx_mkpool(app, 1, 0, NULL);
    struct dbconn *c, *none;
    assert_int_equal(dbfx_get(p, DBFX_A, 5 * DBFX_SEC, &c), 0);
    struct dbfx_waiter w[2];
    memset(w, 0, sizeof(w));
    dbfx_start_waiter(&w[0], p, DBFX_A, 60 * DBFX_SEC);
    dbfx_start_waiter(&w[1], p, DBFX_B, 60 * DBFX_SEC);
    dbfx_wait_pending(p, 2);
    int64_t t0 = mclock_now_us();
    dbpool_stop(p);
    for (int i = 0; i < 2; i++) {
        pthread_join(w[i].tid, NULL);
        assert_int_equal(w[i].rc, -ESHUTDOWN);
        assert_true(w[i].done_us - t0 < 5 * DBFX_SEC); /* woken, not timed out after 60 s */
    }
    assert_int_equal(dbfx_get(p, DBFX_A, 5 * DBFX_SEC, &none), -ESHUTDOWN);
    /* The busy connection is closed when it comes back. */
    dbpool_release(p, c, false);
    assert_int_equal(dbfx_stats(p).idle, 0);
    dbpool_destroy(p);
    assert_int_equal(dbfx_wait_backends(app, 0), 0);
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
    DBFX_NEED_PG();
    char bad[128], app[64];
    snprintf(bad, sizeof(bad), "postgresql://postgres@127.0.0.1:%d/bulkhead", closed_port());
    dbfx_app_for(app, sizeof(app), "refused");
    struct dbconn_params prm = dbfx_params(bad, app);
    struct dbconn *c = NULL;
    char err[256] = "";
    int64_t t0 = mclock_now_us();
    assert_int_equal(dbconn_open(&prm, t0 + 10 * DBFX_SEC, &c, err, sizeof(err)), -ECONNRESET);
    assert_true(mclock_now_us() - t0 < 3 * DBFX_SEC);
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
    assert_int_equal(dbpool_acquire(p, DBFX_A, t0 + 10 * DBFX_SEC, &c, err, sizeof(err)),
                     -ECONNRESET);
    assert_true(mclock_now_us() - t0 < 3 * DBFX_SEC);
    assert_non_null(strstr(err, "connect failed"));
    err[0] = '\0';
    assert_int_equal(
        dbpool_acquire(p, DBFX_B, mclock_now_us() + 10 * DBFX_SEC, &c, err, sizeof(err)),
        -ECONNRESET);
    assert_non_null(strstr(err, "connect failed"));
    assert_int_equal(dbfx_stats(p).connect_failures, 1);
    dbfx_nap_ms(150); /* past the backoff */
    t0 = mclock_now_us();
    assert_int_equal(dbpool_acquire(p, DBFX_A, t0 + 10 * DBFX_SEC, &c, err, sizeof(err)),
                     -ECONNRESET);
    assert_true(mclock_now_us() - t0 < 3 * DBFX_SEC);
    struct dbpool_stats s = dbfx_stats(p);
    assert_int_equal(s.connect_failures, 2);
    assert_int_equal(s.connects, 0);
    assert_int_equal(s.opening, 0);
    dbpool_stop(p);
    dbpool_destroy(p);
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
        cmocka_unit_test(a_connect_that_times_out_with_nothing_busy_fails_its_waiter),
        cmocka_unit_test(stop_wakes_waiters_with_eshutdown),
        cmocka_unit_test(connect_to_closed_port_fails_fast),
    };
    return cmocka_run_group_tests_name("dbpool", tests, dbfx_group_setup, dbfx_group_teardown);
}
