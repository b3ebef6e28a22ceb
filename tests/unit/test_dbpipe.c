/*
 * test_dbpipe: the database pipeline (dbpipe.h) in process, on a real event loop against a real
 * PostgreSQL (scripts/test.sh's shared cluster, BH_TEST_PG_PORT; skipped without it). What the
 * pipe promises its owner, each outcome counted per statement (a second completion fails):
 *
 * - statements complete in the order sent, each with its own result, across batches, and the
 *   connection goes back reusable once all are read;
 * - a statement that fails in PostgreSQL fails itself (-EIO) and those after it in its batch
 *   (-EAGAIN: not run, may be sent again), never the next batch;
 * - a connection lost mid-pipeline (the relay in front of PostgreSQL cut) completes every
 *   pending statement -ECONNRESET exactly once, oldest first, after handing the connection
 *   back as lost;
 * - a statement past its deadline completes -ETIMEDOUT and the others -ECANCELED, exactly once
 *   each, after the connection went back to be cancelled (and it can be: the test cancels it);
 * - a loop that stops completes what is in flight -ESHUTDOWN, once;
 * - dbpipe_find joins only a pipe of the same owner and key, with room and a young head.
 */
#include "dbcancel.h"
#include "dbconn.h"
#include "dbpipe.h"
#include "evloop.h"
#include "mclock.h"
#include "pgproxy.h"
#include "unitdb.h"

#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#define SEC    1000000ll
#define MS     1000ll
#define WAIT_S 20 /* bound for any wait */
#define NSTMT  8

static char url[300]; /* the shared cluster's "bulkhead" database */
static PGconn *admin; /* the test's observer connection */

static const struct dbconn_stmt stmts[] = {
    {"pid", "SELECT pg_backend_pid()"},
    {"val", "SELECT $1::int"},
    {"sleep", "SELECT pg_sleep($1::float8)"},
    {"fail", "SELECT 1 / ($1::int - $1::int)"},
};

#define NEED_PG() UNITDB_NEED(admin)

/* One test's loop, pipe and what its callbacks saw. The mutex guards every field the callbacks
 * write (they run on the loop's thread); cv is broadcast on each. */
static struct fx {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct evloop *l;
    int src; /* the loop's source: an eventfd nobody writes */
    struct dbconn *conn;
    struct dbpipe *p; /* NULL once released */
    struct dbpipe_stmt s[NSTMT];
    int calls[NSTMT];      /* completions of each statement */
    int rc[NSTMT];         /* its outcome */
    char value[NSTMT][16]; /* its result's first value, "" without one */
    int order[NSTMT];      /* statement indexes in the order they completed */
    int ndone;             /* completions in all */
    int releases;          /* ops.release calls */
    enum dbpipe_end how;   /* the last one's */
    int done_at_release;   /* completions before it */
    struct dbconn *kept;   /* the connection handed back */
    int64_t pid;           /* conn's backend */
} fx;

static void nap_ms(int ms)
{
    struct timespec ts = {0, ms * 1000000L};
    nanosleep(&ts, NULL);
}

/* ---- the loop and the pipe's callbacks --------------------------------------------------- */

static void loop_run(void *ctx, unsigned i)
{
    (void)ctx;
    (void)i;
}

static int64_t loop_timeout(void *ctx, unsigned i)
{
    (void)ctx;
    (void)i;
    return -1;
}

static void on_release(void *ctx, struct dbconn *conn, enum dbpipe_end how)
{
    (void)ctx;
    pthread_mutex_lock(&fx.mu);
    fx.releases++;
    fx.how = how;
    fx.done_at_release = fx.ndone;
    fx.kept = conn;
    fx.p = NULL;
    pthread_cond_broadcast(&fx.cv);
    pthread_mutex_unlock(&fx.mu);
}

static const struct dbpipe_ops ops = {.release = on_release};

static void on_done(struct dbpipe_stmt *s, PGresult *res, int rc, const char *err)
{
    (void)err;
    int i = (int)(s - fx.s);
    pthread_mutex_lock(&fx.mu);
    fx.calls[i]++;
    fx.rc[i] = rc;
    if (res && PQntuples(res) > 0)
        snprintf(fx.value[i], sizeof(fx.value[i]), "%s", PQgetvalue(res, 0, 0));
    if (fx.ndone < NSTMT)
        fx.order[fx.ndone] = i;
    fx.ndone++;
    pthread_cond_broadcast(&fx.cv);
    pthread_mutex_unlock(&fx.mu);
    PQclear(res);
}

/* Wait, WAIT_S at most, for n completions. */
static void wait_done(int n)
{
    struct timespec until = mclock_timespec(mclock_now_us() + WAIT_S * SEC);
    pthread_mutex_lock(&fx.mu);
    while (fx.ndone < n && pthread_cond_timedwait(&fx.cv, &fx.mu, &until) != ETIMEDOUT)
        ;
    int done = fx.ndone;
    pthread_mutex_unlock(&fx.mu);
    if (done < n)
        fail_msg("after %d s: %d of %d statements completed", WAIT_S, done, n);
}

/* Wait, WAIT_S at most, for n completions and a release. */
static void wait_settled(int n)
{
    struct timespec until = mclock_timespec(mclock_now_us() + WAIT_S * SEC);
    pthread_mutex_lock(&fx.mu);
    while ((fx.ndone < n || fx.releases == 0) &&
           pthread_cond_timedwait(&fx.cv, &fx.mu, &until) != ETIMEDOUT)
        ;
    int done = fx.ndone, rel = fx.releases;
    pthread_mutex_unlock(&fx.mu);
    if (done < n || rel == 0)
        fail_msg("after %d s: %d of %d statements completed, %d releases", WAIT_S, done, n, rel);
}

/* ---- what runs on the loop (evloop_call) ------------------------------------------------- */

struct push {
    int first, n; /* fx.s[first..first+n) */
    const char *name[NSTMT];
    const char *arg[NSTMT];
    int64_t deadline_us; /* every one's, or 0: 30 s from now */
    int64_t late_us;     /* the first one's instead, when set */
};

static void do_open(void *ctx, unsigned i)
{
    (void)ctx;
    (void)i;
    struct dbpipe *p = NULL;
    assert_int_equal(dbpipe_open(evloop_current(), fx.conn, &ops, &fx, &fx.s, "test", &p), 0);
    pthread_mutex_lock(&fx.mu);
    fx.p = p;
    pthread_mutex_unlock(&fx.mu);
}

static void do_push(void *ctx, unsigned i)
{
    (void)i;
    struct push *b = ctx;
    for (int k = 0; k < b->n; k++) {
        struct dbpipe_stmt *s = &fx.s[b->first + k];
        s->done = on_done;
        s->deadline_us = b->deadline_us ? b->deadline_us : mclock_now_us() + 30 * SEC;
        if (k == 0 && b->late_us)
            s->deadline_us = b->late_us;
        const char *v[] = {b->arg[k]};
        dbpipe_push(fx.p, s, b->name[k], 1, v);
    }
}

static void nothing(void *ctx, unsigned i)
{
    (void)ctx;
    (void)i;
}

/* ---- fixture ------------------------------------------------------------------------------ */

static struct dbconn *open_url(const char *conninfo)
{
    char app[64];
    snprintf(app, sizeof(app), "bhp-%d", (int)getpid());
    struct dbconn_params p = {.conninfo = conninfo, .appname = app, .stmts = stmts, .nstmts = 4};
    struct dbconn *c = NULL;
    char err[256] = "";
    int rc = dbconn_open(&p, mclock_now_us() + 10 * SEC, &c, err, sizeof(err));
    if (rc)
        fail_msg("open: %d %s", rc, err);
    return c;
}

static int64_t pid_of(struct dbconn *c)
{
    PGresult *res = NULL;
    char err[256] = "";
    assert_int_equal(
        dbconn_exec(c, "pid", 0, NULL, mclock_now_us() + 10 * SEC, &res, err, sizeof(err)), 0);
    int64_t v = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
    PQclear(res);
    return v;
}

/* Whether backend pid is in pg_sleep now. */
static bool sleeping(int64_t pid)
{
    char sql[200];
    snprintf(sql, sizeof(sql),
             "SELECT count(*) FROM pg_stat_activity WHERE pid = %lld AND state = 'active' "
             "AND wait_event = 'PgSleep'",
             (long long)pid);
    PGresult *res = PQexec(admin, sql);
    bool yes = PQresultStatus(res) == PGRES_TUPLES_OK && !strcmp(PQgetvalue(res, 0, 0), "1");
    PQclear(res);
    return yes;
}

static void terminate(int64_t pid)
{
    char sql[100];
    snprintf(sql, sizeof(sql), "SELECT pg_terminate_backend(%lld)", (long long)pid);
    PQclear(PQexec(admin, sql));
}

/* A loop, conn (opened on conninfo) and a pipe on it. */
static void start(const char *conninfo)
{
    memset(&fx, 0, sizeof(fx));
    pthread_mutex_init(&fx.mu, NULL);
    mclock_cond_init(&fx.cv);
    fx.conn = open_url(conninfo);
    fx.pid = pid_of(fx.conn);
    fx.src = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    assert_true(fx.src >= 0);
    struct evloop_ops lo = {.run = loop_run, .timeout_us = loop_timeout};
    assert_int_equal(evloop_start("pipe", 1, &fx.src, &lo, &fx.l), 0);
    evloop_call(fx.l, do_open, NULL);
}

/* Stop the loop (which would complete anything still on a pipe a second time, and fail the
 * test), check every statement of 0..n completed once, and close the connection. */
static void finish(int n)
{
    evloop_call(fx.l, nothing, NULL); /* a turn after the last completion */
    evloop_stop(fx.l);
    for (int i = 0; i < n; i++)
        assert_int_equal(fx.calls[i], 1);
    assert_int_equal(fx.ndone, n);
    assert_int_equal(fx.releases, 1);
    if (fx.kept)
        dbconn_close(fx.kept);
    close(fx.src);
    pthread_cond_destroy(&fx.cv);
    pthread_mutex_destroy(&fx.mu);
}

/* start, through a relay that can hold the server's messages (pgproxy.h). */
static struct pgproxy *start_relayed(void)
{
    struct pgproxy *px = NULL;
    assert_int_equal(pgproxy_start(atoi(getenv("BH_TEST_PG_PORT")), &px), 0);
    char purl[300];
    snprintf(purl, sizeof(purl),
             "postgresql://postgres@127.0.0.1:%d/bulkhead?sslmode=disable&gssencmode=disable",
             pgproxy_port(px));
    start(purl);
    return px;
}

/* Hold the first statement's rows at the relay: nothing completes, the pipe stays, until
 * let_go. */
static void hold_results(struct pgproxy *px)
{
    pgproxy_hold(px, 'T'); /* RowDescription: the first statement's rows begin with it */
}

static void let_go(struct pgproxy *px)
{
    assert_true(pgproxy_wait_held(px, mclock_now_us() + WAIT_S * SEC));
    pgproxy_release(px);
}

static void assert_order(int n)
{
    for (int i = 0; i < n; i++)
        assert_int_equal(fx.order[i], i);
}

/* ---- tests ------------------------------------------------------------------------------- */

static void statements_complete_in_order_with_their_own_results(void **state)
{
    (void)state;
    NEED_PG();
    struct pgproxy *px = start_relayed();
    struct push a = {0, 5, {"val", "val", "val", "val", "val"}, {"0", "1", "2", "3", "4"}, 0, 0};
    struct push b = {5, 3, {"val", "val", "val"}, {"5", "6", "7"}, 0, 0};
    hold_results(px);
    evloop_call(fx.l, do_push, &a); /* one batch */
    evloop_call(fx.l, do_push, &b); /* another, behind it */
    let_go(px);
    wait_settled(8);
    assert_order(8);
    for (int i = 0; i < 8; i++) {
        char want[16];
        snprintf(want, sizeof(want), "%d", i);
        assert_int_equal(fx.rc[i], 0);
        assert_string_equal(fx.value[i], want);
    }
    /* Reusable: pipeline mode left, nothing in flight. */
    assert_int_equal(fx.how, DBPIPE_END_KEEP);
    assert_int_equal(PQpipelineStatus(fx.kept->pg), PQ_PIPELINE_OFF);
    finish(8);
    pgproxy_stop(px);
}

static void a_failed_statement_fails_itself_and_the_rest_of_its_batch_only(void **state)
{
    (void)state;
    NEED_PG();
    struct pgproxy *px = start_relayed();
    struct push a = {0, 3, {"val", "fail", "val"}, {"1", "2", "3"}, 0, 0};
    struct push b = {3, 2, {"fail", "val"}, {"4", "5"}, 0, 0};
    struct push c = {5, 1, {"val"}, {"6"}, 0, 0};
    hold_results(px);
    evloop_call(fx.l, do_push, &a); /* three batches */
    evloop_call(fx.l, do_push, &b);
    evloop_call(fx.l, do_push, &c);
    let_go(px);
    wait_settled(6);
    assert_order(6);
    assert_int_equal(fx.rc[0], 0);
    assert_string_equal(fx.value[0], "1");
    assert_int_equal(fx.rc[1], -EIO);
    assert_int_equal(fx.rc[2], -EAGAIN); /* after the failure, in its batch: not run */
    assert_int_equal(fx.rc[3], -EIO);    /* the next batch runs: its own failure */
    assert_int_equal(fx.rc[4], -EAGAIN);
    assert_int_equal(fx.rc[5], 0); /* and the one after that is untouched */
    assert_string_equal(fx.value[5], "6");
    assert_int_equal(fx.how, DBPIPE_END_KEEP);
    finish(6);
    pgproxy_stop(px);
}

static void a_lost_connection_fails_every_pending_statement_once_in_order(void **state)
{
    (void)state;
    NEED_PG();
    struct pgproxy *px = start_relayed();
    int64_t pid = fx.pid;
    /* One batch that completes, one whose first statement sleeps (PostgreSQL sends a batch's
     * results at its end: none of it arrives), and one more behind it. */
    struct push a = {0, 1, {"val"}, {"1"}, 0, 0};
    struct push b = {1, 3, {"sleep", "val", "val"}, {"30", "2", "3"}, 0, 0};
    struct push c = {4, 1, {"val"}, {"4"}, 0, 0};
    hold_results(px);
    evloop_call(fx.l, do_push, &a);
    evloop_call(fx.l, do_push, &b);
    evloop_call(fx.l, do_push, &c);
    let_go(px);
    wait_done(1);
    int64_t end = mclock_now_us() + WAIT_S * SEC;
    while (!sleeping(pid) && mclock_now_us() < end)
        nap_ms(2);
    assert_true(sleeping(pid));
    pgproxy_stop(px); /* both sockets closed: the client reads the end of its connection */
    wait_settled(5);
    assert_order(5);
    assert_int_equal(fx.rc[0], 0);
    for (int i = 1; i < 5; i++)
        assert_int_equal(fx.rc[i], -ECONNRESET);
    assert_int_equal(fx.how, DBPIPE_END_LOST);
    assert_int_equal(fx.done_at_release, 1); /* handed back before the first failure */
    finish(5);
    terminate(pid); /* not left sleeping behind its cut relay */
}

static void a_statement_past_its_deadline_times_out_and_the_others_are_cancelled_once(void **state)
{
    (void)state;
    NEED_PG();
    start(url); /* no relay: the cancel's own connection must reach the server */
    int64_t pid = fx.pid;
    /* A batch that sleeps; then one more statement behind it, whose deadline comes first. */
    struct push a = {0, 2, {"sleep", "val"}, {"30", "2"}, 0, 0};
    evloop_call(fx.l, do_push, &a);
    int64_t end = mclock_now_us() + WAIT_S * SEC;
    while (!sleeping(pid) && mclock_now_us() < end)
        nap_ms(2);
    assert_true(sleeping(pid));
    struct push b = {2, 1, {"val"}, {"3"}, 0, mclock_now_us() + 100 * MS};
    evloop_call(fx.l, do_push, &b);
    wait_settled(3);
    assert_order(3);
    assert_int_equal(fx.rc[0], -ECANCELED);
    assert_int_equal(fx.rc[1], -ECANCELED);
    assert_int_equal(fx.rc[2], -ETIMEDOUT);
    assert_int_equal(fx.how, DBPIPE_END_CANCEL);
    assert_int_equal(fx.done_at_release, 0); /* handed back before the first completion */
    /* The owner cancels it: every statement read to its end, the connection clean. */
    assert_int_equal(dbcancel_run(fx.kept, mclock_now_us() + 10 * SEC), 0);
    assert_false(sleeping(pid));
    finish(3);
}

static void a_stopping_loop_ends_what_is_in_flight_once(void **state)
{
    (void)state;
    NEED_PG();
    start(url);
    int64_t pid = fx.pid;
    struct push a = {0, 2, {"sleep", "val"}, {"30", "2"}, 0, 0};
    evloop_call(fx.l, do_push, &a);
    int64_t end = mclock_now_us() + WAIT_S * SEC;
    while (!sleeping(pid) && mclock_now_us() < end)
        nap_ms(2);
    evloop_stop(fx.l); /* the statements complete as it stops */
    assert_int_equal(fx.ndone, 2);
    assert_int_equal(fx.calls[0], 1);
    assert_int_equal(fx.calls[1], 1);
    assert_int_equal(fx.rc[0], -ESHUTDOWN);
    assert_int_equal(fx.rc[1], -ESHUTDOWN);
    assert_int_equal(fx.releases, 1);
    assert_int_equal(fx.how, DBPIPE_END_STOP);
    dbconn_close(fx.kept);
    terminate(pid);
    close(fx.src);
}

struct find {
    const void *ctx, *key;
    size_t depth;
    int64_t age_us;
    struct dbpipe *found;
};

static void do_find(void *arg, unsigned i)
{
    (void)i;
    struct find *f = arg;
    f->found = dbpipe_find(evloop_current(), f->ctx, f->key, f->depth, f->age_us, mclock_now_us());
}

static struct dbpipe *find(const void *ctx, const void *key, size_t depth, int64_t age_us)
{
    struct find f = {ctx, key, depth, age_us, NULL};
    evloop_call(fx.l, do_find, &f);
    return f.found;
}

static void a_pipe_is_joined_by_its_own_key_with_room_and_a_young_head(void **state)
{
    (void)state;
    NEED_PG();
    struct pgproxy *px = start_relayed();
    struct dbpipe *p = fx.p;
    assert_null(find(&fx, &fx.s, 4, 60 * SEC)); /* nothing in flight: not joined */
    struct push a = {0, 2, {"val", "val"}, {"1", "2"}, 0, 0};
    hold_results(px);
    evloop_call(fx.l, do_push, &a);
    assert_ptr_equal(find(&fx, &fx.s, 3, 60 * SEC), p);
    assert_null(find(&fx, &fx.s, 2, 60 * SEC));   /* full */
    assert_null(find(&fx, &fx, 3, 60 * SEC));     /* another key */
    assert_null(find(&fx.s, &fx.s, 3, 60 * SEC)); /* another owner */
    assert_null(find(&fx, &fx.s, 3, 0));          /* its head is older than that */
    let_go(px);
    wait_settled(2);
    assert_int_equal(fx.rc[0], 0);
    assert_int_equal(fx.rc[1], 0);
    finish(2);
    pgproxy_stop(px);
}

static int group_setup(void **state)
{
    (void)state;
    return unitdb_open(url, sizeof(url), &admin); /* no cluster: every test skips */
}

static int group_teardown(void **state)
{
    (void)state;
    return unitdb_close(&admin);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(statements_complete_in_order_with_their_own_results),
        cmocka_unit_test(a_failed_statement_fails_itself_and_the_rest_of_its_batch_only),
        cmocka_unit_test(a_lost_connection_fails_every_pending_statement_once_in_order),
        cmocka_unit_test(a_statement_past_its_deadline_times_out_and_the_others_are_cancelled_once),
        cmocka_unit_test(a_stopping_loop_ends_what_is_in_flight_once),
        cmocka_unit_test(a_pipe_is_joined_by_its_own_key_with_room_and_a_young_head),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
