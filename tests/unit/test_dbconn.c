/*
 * test_dbconn: the bounds of one deadline-driven connection (dbconn.h) against a real
 * PostgreSQL (scripts/test.sh's shared cluster, BH_TEST_PG_PORT; skipped without it): what a
 * cancel costs and how long it may take, and the waits a stop pipe or a deadline ends.
 * test_dbconn_stmt covers the rest of dbconn (statements, pipelines, reads in steps).
 *
 * - A cancel the server never answers (a relay that never accepts the cancel's connection)
 *   ends at the caller's deadline; the connection is reported unusable.
 * - A cancelled pipeline sends one cancel for its running batch, not one per statement, and a
 *   statement that ignores cancels gets them again less and less often (the count is checked
 *   against the time it took, so a slow machine sends fewer, never more).
 * - dbconn_query: a deadline ends it with -ETIMEDOUT, a stop pipe with -ECANCELED at once, even
 *   during a connect that gets no answer.
 */
#include "dbcancel.h"
#include "dbconn.h"
#include "mclock.h"
#include "pgproxy.h"
#include "unitdb.h"

#include <errno.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#define SEC    1000000ll
#define MS     1000ll
#define WAIT_S 20 /* bound for any wait on the server */

static char url[300]; /* the shared cluster's "bulkhead" database */
static PGconn *admin; /* the test's observer connection */

static const struct dbconn_stmt stmts[] = {
    {"pid", "SELECT pg_backend_pid()"},
    {"sleep", "SELECT pg_sleep($1::float8)"},
    {"stubborn", "SELECT bh_test_stubborn($1::float8)"},
};

#define NEED_PG() UNITDB_NEED(admin)

static void nap_ms(int ms)
{
    struct timespec ts = {0, ms * 1000000L};
    nanosleep(&ts, NULL);
}

static struct dbconn *open_url(const char *conninfo, const char *tag)
{
    char app[64];
    snprintf(app, sizeof(app), "bhc-%d-%s", (int)getpid(), tag);
    struct dbconn_params p = {.conninfo = conninfo, .appname = app, .stmts = stmts, .nstmts = 3};
    struct dbconn *c = NULL;
    char err[256] = "";
    int rc = dbconn_open(&p, mclock_now_us() + 10 * SEC, &c, err, sizeof(err));
    if (rc)
        fail_msg("open %s: %d %s", app, rc, err);
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

/* Whether backend pid runs a statement now (in pg_sleep when sleep is set). */
static bool running(int64_t pid, bool sleep)
{
    char sql[200];
    snprintf(sql, sizeof(sql),
             "SELECT count(*) FROM pg_stat_activity WHERE pid = %lld AND state = 'active'%s",
             (long long)pid, sleep ? " AND wait_event = 'PgSleep'" : "");
    PGresult *res = PQexec(admin, sql);
    bool yes = PQresultStatus(res) == PGRES_TUPLES_OK && !strcmp(PQgetvalue(res, 0, 0), "1");
    PQclear(res);
    return yes;
}

static void wait_running(int64_t pid, bool sleep)
{
    int64_t end = mclock_now_us() + WAIT_S * SEC;
    while (!running(pid, sleep) && mclock_now_us() < end)
        nap_ms(2);
    assert_true(running(pid, sleep));
}

/* ---- a call on a thread of its own, waited for with a bound ---------------------------- */

struct bounded {
    int (*fn)(struct bounded *);
    struct dbconn *c;
    int64_t deadline_us;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool done;
    int rc;
};

static void *bounded_main(void *arg)
{
    struct bounded *b = arg;
    int rc = b->fn(b);
    pthread_mutex_lock(&b->mu);
    b->rc = rc;
    b->done = true;
    pthread_cond_signal(&b->cv);
    pthread_mutex_unlock(&b->mu);
    return NULL;
}

/* Run b->fn on a thread; true when it returned within WAIT_S (a call stuck for good fails the
 * test instead of hanging it, and its thread is left behind). */
static bool run_bounded(struct bounded *b)
{
    pthread_mutex_init(&b->mu, NULL);
    mclock_cond_init(&b->cv);
    b->done = false;
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, bounded_main, b), 0);
    struct timespec until = mclock_timespec(mclock_now_us() + WAIT_S * SEC);
    pthread_mutex_lock(&b->mu);
    while (!b->done && pthread_cond_timedwait(&b->cv, &b->mu, &until) != ETIMEDOUT)
        ;
    bool done = b->done;
    pthread_mutex_unlock(&b->mu);
    if (!done) {
        pthread_detach(t);
        return false;
    }
    pthread_join(t, NULL);
    pthread_cond_destroy(&b->cv);
    pthread_mutex_destroy(&b->mu);
    return true;
}

/* ---- cancels ----------------------------------------------------------------------------- */

static int cancel_fn(struct bounded *b)
{
    return dbcancel_run(b->c, b->deadline_us);
}

static void a_cancel_the_server_never_answers_ends_at_the_deadline(void **state)
{
    (void)state;
    NEED_PG();
    /* Through a relay: the cancel's own connection goes to the relay's port, where it completes
     * in the listen backlog and is never answered. */
    struct pgproxy *px = NULL;
    assert_int_equal(pgproxy_start(atoi(getenv("BH_TEST_PG_PORT")), &px), 0);
    char purl[300];
    snprintf(purl, sizeof(purl),
             "postgresql://postgres@127.0.0.1:%d/bulkhead?sslmode=disable&gssencmode=disable",
             pgproxy_port(px));
    struct dbconn *c = open_url(purl, "deaf");
    int64_t pid = pid_of(c);
    char err[256];
    const char *thirty[] = {"30"};
    assert_int_equal(dbconn_send(c, "sleep", 1, thirty, err, sizeof(err)), 0);
    wait_running(pid, true);
    struct bounded b = {.fn = cancel_fn, .c = c, .deadline_us = mclock_now_us() + 500 * MS};
    int64_t t0 = mclock_now_us();
    if (!run_bounded(&b))
        fail_msg("dbcancel_run still waiting %d s after its 0.5 s deadline", WAIT_S);
    print_message("# a cancel nobody answers: %d after %.3f s (deadline 0.5 s)\n", b.rc,
                  (double)(mclock_now_us() - t0) / 1e6);
    assert_true(b.rc < 0); /* not known to have ended: the connection is closed */
    assert_int_equal(c->cancels, 1);
    dbconn_close(c);
    pgproxy_stop(px);
    /* Its backend ends once its client is gone (client_connection_check_interval). */
    int64_t end = mclock_now_us() + WAIT_S * SEC;
    while (running(pid, false) && mclock_now_us() < end)
        nap_ms(10);
    assert_false(running(pid, false));
}

static void a_cancelled_batch_gets_one_cancel_not_one_per_statement(void **state)
{
    (void)state;
    NEED_PG();
    struct dbconn *c = open_url(url, "batch");
    int64_t pid = pid_of(c);
    char err[256];
    const char *thirty[] = {"30"};
    assert_int_equal(dbconn_pipe_enter(c), 0);
    for (int i = 0; i < 8; i++)
        assert_int_equal(dbconn_pipe_send(c, "sleep", 1, thirty, err, sizeof(err)), 0);
    assert_int_equal(dbconn_pipe_sync(c, err, sizeof(err)), 0);
    wait_running(pid, true);
    assert_int_equal(dbcancel_run(c, mclock_now_us() + 10 * SEC), 0);
    print_message("# a batch of 8 cancelled: %llu cancel requests\n",
                  (unsigned long long)c->cancels);
    /* The first statement is cancelled; the seven behind it in its batch never run. One
     * cancel, or two when the first took longer than the first re-send's wait (a loaded
     * machine); not one per statement. */
    assert_true(c->cancels >= 1 && c->cancels <= 2);
    assert_int_equal(c->pipe_pending, 0);
    assert_int_equal(PQpipelineStatus(c->pg), PQ_PIPELINE_OFF);
    assert_int_equal(pid_of(c), pid);
    dbconn_close(c);
}

static void a_statement_that_ignores_cancels_gets_them_less_and_less_often(void **state)
{
    (void)state;
    NEED_PG();
    struct dbconn *c = open_url(url, "stubborn");
    int64_t pid = pid_of(c);
    char err[256];
    const char *secs[] = {"1.5"};
    assert_int_equal(dbconn_pipe_enter(c), 0);
    assert_int_equal(dbconn_pipe_send(c, "stubborn", 1, secs, err, sizeof(err)), 0);
    assert_int_equal(dbconn_pipe_sync(c, err, sizeof(err)), 0);
    wait_running(pid, true); /* in its loop's pg_sleep: inside the block that catches cancels */
    int64_t t0 = mclock_now_us();
    assert_int_equal(dbcancel_run(c, t0 + 10 * SEC), 0);
    double took_ms = (double)(mclock_now_us() - t0) / 1000.0;
    /* The re-sends wait DBCANCEL_RECANCEL_FIRST_MS, then twice as long each time: in t ms at
     * most 1 + log2(1 + t / first) cancels. A re-send every 100 ms would be about t / 100. */
    double most = 1.0 + floor(log2(1.0 + took_ms / DBCANCEL_RECANCEL_FIRST_MS));
    print_message("# a statement ignoring cancels for 1.5 s: %llu cancel requests in %.0f ms "
                  "(at most %.0f)\n",
                  (unsigned long long)c->cancels, took_ms, most);
    assert_true(c->cancels >= 2); /* it was cancelled again while it ran */
    assert_true((double)c->cancels <= most);
    assert_int_equal(pid_of(c), pid); /* it ended by itself: the connection is clean */
    dbconn_close(c);
}

/* ---- dbconn_query: deadline and stop ------------------------------------------------------ */

static void a_query_past_its_deadline_times_out(void **state)
{
    (void)state;
    NEED_PG();
    struct dbconn *c = open_url(url, "qdeadline");
    PGresult *res = (PGresult *)1;
    char err[256] = "";
    int64_t t0 = mclock_now_us();
    int rc = dbconn_query(c, "SELECT pg_sleep(30)", 0, NULL, t0 + 200 * MS, &res, err, sizeof(err));
    assert_int_equal(rc, -ETIMEDOUT);
    assert_null(res);
    assert_true(mclock_now_us() - t0 >= 199 * MS);
    dbconn_close(c);
    /* A query with parameters returns its result, errors included, for the caller to read. */
    c = open_url(url, "qparams");
    const char *v[] = {"41"};
    assert_int_equal(dbconn_query(c, "SELECT $1::int + 1", 1, v, mclock_now_us() + 10 * SEC, &res,
                                  err, sizeof(err)),
                     0);
    assert_int_equal(PQresultStatus(res), PGRES_TUPLES_OK);
    assert_string_equal(PQgetvalue(res, 0, 0), "42");
    PQclear(res);
    assert_int_equal(dbconn_query(c, "SELECT 1 / $1::int", 1, (const char *[]){"0"},
                                  mclock_now_us() + 10 * SEC, &res, err, sizeof(err)),
                     0);
    assert_int_equal(PQresultStatus(res), PGRES_FATAL_ERROR);
    assert_string_equal(dbconn_sqlstate(res), "22012");
    PQclear(res);
    dbconn_close(c);
}

static int query_fn(struct bounded *b)
{
    PGresult *res = NULL;
    char err[256];
    int rc =
        dbconn_query(b->c, "SELECT pg_sleep(30)", 0, NULL, b->deadline_us, &res, err, sizeof(err));
    PQclear(res);
    return rc;
}

static void a_stop_pipe_ends_a_query_at_once(void **state)
{
    (void)state;
    NEED_PG();
    int stop[2];
    assert_int_equal(pipe(stop), 0);
    struct dbconn_params p = {
        .conninfo = url, .appname = "bhc-stop", .stmts = stmts, .nstmts = 3, .stop_fd = &stop[0]};
    struct dbconn *c = NULL;
    char err[256] = "";
    assert_int_equal(dbconn_open(&p, mclock_now_us() + 10 * SEC, &c, err, sizeof(err)), 0);
    int64_t pid = pid_of(c);
    struct bounded b = {.fn = query_fn, .c = c, .deadline_us = mclock_now_us() + 60 * SEC};
    pthread_mutex_init(&b.mu, NULL);
    mclock_cond_init(&b.cv);
    /* The stop is written once the statement runs; the query returns without waiting for it. */
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, bounded_main, &b), 0);
    wait_running(pid, true);
    int64_t t0 = mclock_now_us();
    assert_int_equal(write(stop[1], "x", 1), 1);
    pthread_join(t, NULL);
    print_message("# stop pipe written: the query returned after %.3f s\n",
                  (double)(mclock_now_us() - t0) / 1e6);
    assert_int_equal(b.rc, -ECANCELED);
    assert_true(mclock_now_us() - t0 < WAIT_S * SEC);
    dbconn_close(c);
    /* Written before: a connect that would get no answer returns at once too. */
    struct pgproxy *px = NULL;
    assert_int_equal(pgproxy_start(atoi(getenv("BH_TEST_PG_PORT")), &px), 0);
    pgproxy_hold(px, 'R'); /* the authentication request: the connect never completes */
    char purl[300];
    snprintf(purl, sizeof(purl),
             "postgresql://postgres@127.0.0.1:%d/bulkhead?sslmode=disable&gssencmode=disable",
             pgproxy_port(px));
    p.conninfo = purl;
    t0 = mclock_now_us();
    assert_int_equal(dbconn_open(&p, t0 + 60 * SEC, &c, err, sizeof(err)), -ECANCELED);
    assert_true(mclock_now_us() - t0 < WAIT_S * SEC);
    pgproxy_stop(px);
    close(stop[0]);
    close(stop[1]);
    pthread_cond_destroy(&b.cv);
    pthread_mutex_destroy(&b.mu);
}

static int group_setup(void **state)
{
    (void)state;
    if (unitdb_open(url, sizeof(url), &admin))
        return -1;
    if (!admin)
        return 0; /* every test skips */
    /* A statement that catches every cancel until it has run `secs` seconds: the whole timed
     * loop is inside the block that catches them (a cancel that lands outside it, in the few
     * instructions between the handler and the block again, would end the statement). */
    PGresult *res =
        PQexec(admin, "CREATE OR REPLACE FUNCTION bh_test_stubborn(secs float8) RETURNS int "
                      "LANGUAGE plpgsql AS $$ DECLARE t0 timestamptz := clock_timestamp(); "
                      "caught int := 0; done bool := false; BEGIN LOOP BEGIN "
                      "WHILE clock_timestamp() < t0 + secs * interval '1 s' LOOP "
                      "PERFORM pg_sleep(0.01); END LOOP; done := true; "
                      "EXCEPTION WHEN query_canceled THEN caught := caught + 1; END; "
                      "EXIT WHEN done; END LOOP; RETURN caught; END $$");
    bool ok = PQresultStatus(res) == PGRES_COMMAND_OK;
    if (!ok)
        fprintf(stderr, "cannot create bh_test_stubborn: %s", PQresultErrorMessage(res));
    PQclear(res);
    return ok ? 0 : -1;
}

static int group_teardown(void **state)
{
    (void)state;
    return unitdb_close(&admin);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(a_cancel_the_server_never_answers_ends_at_the_deadline),
        cmocka_unit_test(a_cancelled_batch_gets_one_cancel_not_one_per_statement),
        cmocka_unit_test(a_statement_that_ignores_cancels_gets_them_less_and_less_often),
        cmocka_unit_test(a_query_past_its_deadline_times_out),
        cmocka_unit_test(a_stop_pipe_ends_a_query_at_once),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
