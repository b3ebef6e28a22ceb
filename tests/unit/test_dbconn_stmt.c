/*
 * test_dbconn_stmt: statements on one deadline-driven connection (dbconn.h) against a real
 * PostgreSQL: a statement past its deadline times out and its cancel keeps the connection,
 * statement_timeout is the server-side backstop, an SQL error is -EIO and the connection
 * survives; pipelined statements end in order and fail alone, a failure in a batch leaves the
 * rest of it unrun, a cancelled pipeline ends every statement; a statement sent and read in
 * steps (dbconn_send, dbconn_read), with a relay (pgproxy) that holds back the statement's end
 * so that its error and its end come in separate reads. test_dbconn covers the bounds of a
 * cancel and of the waits. Fixture: dbpoolfx (the connection parameters, the observer).
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

/* ---- one connection ----------------------------------------------------------------------- */

/* Open a connection with prm (10 s to do it in); the test fails if it cannot. */
static struct dbconn *open_conn(const struct dbconn_params *prm)
{
    struct dbconn *c = NULL;
    char err[256] = "";
    int rc = dbconn_open(prm, mclock_now_us() + 10 * DBFX_SEC, &c, err, sizeof(err));
    if (rc)
        fail_msg("open %s: %d %s", prm->appname, rc, err);
    return c;
}

/* A connection to the shared cluster, its application_name made from tag (app_for). */
static struct dbconn *open_tagged(const char *tag)
{
    char app[64];
    dbfx_app_for(app, sizeof(app), tag);
    struct dbconn_params prm = dbfx_params(dbfx_url, app);
    return open_conn(&prm);
}

/* open_tagged's connection, in pipeline mode; its backend's pid (read before) in *pid. */
static struct dbconn *open_pipelined(const char *tag, int64_t *pid)
{
    struct dbconn *c = open_tagged(tag);
    *pid = dbfx_q_int(c, "pid", NULL);
    assert_int_equal(dbconn_pipe_enter(c), 0);
    return c;
}

static void exec_past_deadline_times_out_and_cancel_keeps_connection(void **state)
{
    (void)state;
    DBFX_NEED_PG();
    char app[64];
    dbfx_app_for(app, sizeof(app), "cancel");
    struct dbconn_params prm = dbfx_params(dbfx_url, app);
    struct dbconn *c = open_conn(&prm);
    char err[256] = "";
    int64_t pid = dbfx_q_int(c, "pid", NULL);

    const char *thirty[1] = {"30"};
    PGresult *res = (PGresult *)1;
    int64_t t0 = mclock_now_us();
    int rc = dbconn_exec(c, "sleep", 1, thirty, t0 + 300 * DBFX_MS, &res, err, sizeof(err));
    int64_t took = mclock_now_us() - t0;
    assert_int_equal(rc, -ETIMEDOUT);
    assert_null(res);
    assert_non_null(strstr(err, "timed out"));
    assert_true(took >= 299 * DBFX_MS && took < 5 * DBFX_SEC);

    /* Cancelled in PostgreSQL, read to its end: the same backend answers the next query. */
    t0 = mclock_now_us();
    assert_int_equal(dbcancel_run(c, t0 + 5 * DBFX_SEC), 0);
    assert_true(mclock_now_us() - t0 < 5 * DBFX_SEC);
    assert_int_equal(dbfx_q_int(c, "one", NULL), 1);
    assert_int_equal(dbfx_q_int(c, "pid", NULL), pid);
    dbconn_close(c);
    assert_int_equal(dbfx_wait_backends(app, 0), 0);
}

static void statement_timeout_is_a_server_side_backstop(void **state)
{
    (void)state;
    DBFX_NEED_PG();
    char app[64];
    dbfx_app_for(app, sizeof(app), "stmt-timeout");
    struct dbconn_params prm = dbfx_params(dbfx_url, app);
    prm.statement_timeout_ms = 150;
    struct dbconn *c = open_conn(&prm);
    char err[256] = "";
    const char *two[1] = {"2"};
    PGresult *res = NULL;
    /* The client deadline is far; PostgreSQL ends the statement (57014), reported as timeout. */
    int rc =
        dbconn_exec(c, "sleep", 1, two, mclock_now_us() + 30 * DBFX_SEC, &res, err, sizeof(err));
    assert_int_equal(rc, -ETIMEDOUT);
    assert_null(res);
    assert_int_equal(dbfx_q_int(c, "one", NULL), 1);
    dbconn_close(c);
}

static void sql_error_is_eio_and_connection_survives(void **state)
{
    (void)state;
    DBFX_NEED_PG();
    struct dbconn *c = open_tagged("eio");
    char err[256] = "";
    const char *zero[1] = {"0"};
    PGresult *res = (PGresult *)1;
    int rc =
        dbconn_exec(c, "div", 1, zero, mclock_now_us() + 10 * DBFX_SEC, &res, err, sizeof(err));
    assert_int_equal(rc, -EIO);
    assert_null(res);
    assert_non_null(strstr(err, "division by zero"));
    assert_null(strchr(err, '\n')); /* one line, for the logs */
    assert_int_equal(dbfx_q_int(c, "div", "2"), 0);
    assert_int_equal(dbfx_q_int(c, "one", NULL), 1);
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
    int64_t end = mclock_now_us() + DBFX_WAIT_S * DBFX_SEC;
    for (;;) {
        int rc = dbconn_read(c, res, err, errlen);
        if (rc != -EINPROGRESS)
            return rc;
        assert_null(*res);
        (*inprogress)++;
        if (!readable(PQsocket(c->pg), end))
            fail_msg("the statement did not end within %d s", DBFX_WAIT_S);
    }
}

/* The outcome of the oldest pipelined statement on c, waiting for it (bounded). */
static int pipe_next_wait(struct dbconn *c, PGresult **res, char *err, size_t errlen)
{
    int64_t end = mclock_now_us() + DBFX_WAIT_S * DBFX_SEC;
    for (;;) {
        int rc = dbconn_pipe_next(c, res, err, errlen);
        if (rc != -EINPROGRESS)
            return rc;
        if (!readable(PQsocket(c->pg), end))
            fail_msg("no pipelined outcome within %d s", DBFX_WAIT_S);
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
    DBFX_NEED_PG();
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
    assert_int_equal(dbfx_q_int(c, "one", NULL), 1);
    dbconn_close(c);
}

/* Statements queued together leave as one batch: each is answered with its own result, in
 * order; a failing one ends the batch (those after it are -EAGAIN, not run: nothing of them
 * happened, so they may be sent again), and the failure does not outlive its batch. */
static void a_failure_in_a_batch_leaves_the_rest_of_it_unrun_and_the_next_batch_runs(void **state)
{
    (void)state;
    DBFX_NEED_PG();
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
    assert_int_equal(dbfx_q_int(c, "one", NULL), 1);
    dbconn_close(c);
}

/* A cancel in pipeline mode ends every statement in flight, not only the running one (nobody
 * waits for the others), those queued and not yet written too, and leaves the connection
 * clean and out of pipeline mode. */
static void a_cancelled_pipeline_ends_every_statement_and_keeps_the_connection(void **state)
{
    (void)state;
    DBFX_NEED_PG();
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
    dbfx_wait_sleeping(pid); /* the first one runs */
    int64_t t0 = mclock_now_us();
    assert_int_equal(dbcancel_run(c, t0 + 10 * DBFX_SEC), 0);
    assert_true(mclock_now_us() - t0 < 10 * DBFX_SEC); /* not 30 s sleeps */
    assert_int_equal(c->pipe_pending, 0);
    assert_int_equal(c->pipe_syncs, 0);
    assert_int_equal(c->pipe_unsynced, 0);
    assert_int_equal(PQpipelineStatus(c->pg), PQ_PIPELINE_OFF);
    assert_int_equal(dbfx_q_int(c, "pid", NULL), pid);
    dbconn_close(c);
}

static void send_then_read_is_in_progress_until_the_statement_ends(void **state)
{
    (void)state;
    DBFX_NEED_PG();
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
    assert_true(mclock_now_us() - t0 >= 200 * DBFX_MS);
    assert_non_null(res);
    assert_int_equal(PQntuples(res), 1);
    assert_string_equal(PQgetvalue(res, 0, 0), "7");
    PQclear(res);
    /* Read to its end: the connection is ready for the next statement. */
    assert_int_equal(dbfx_q_int(c, "one", NULL), 1);
    dbconn_close(c);
}

/* A failed statement read in steps is -EIO with PostgreSQL's message, and its failure does
 * not outlive it: the next statement sent on the connection succeeds. */
static void a_failed_statement_read_in_steps_is_eio_with_the_server_message(void **state)
{
    (void)state;
    DBFX_NEED_PG();
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
    DBFX_NEED_PG();
    struct pgproxy *px = NULL;
    assert_int_equal(pgproxy_start(atoi(getenv("BH_TEST_PG_PORT")), &px), 0);
    char purl[300], app[64];
    snprintf(purl, sizeof(purl),
             "postgresql://postgres@127.0.0.1:%d/bulkhead?sslmode=disable&gssencmode=disable",
             pgproxy_port(px));
    dbfx_app_for(app, sizeof(app), "split");
    struct dbconn_params prm = dbfx_params(purl, app);
    struct dbconn *c = open_conn(&prm);
    char err[256] = "";

    pgproxy_hold(px, 'Z');
    unsigned errors = pgproxy_relayed(px, 'E');
    const char *zero[1] = {"0"};
    assert_int_equal(dbconn_send(c, "div", 1, zero, err, sizeof(err)), 0);
    assert_true(pgproxy_wait_held(px, mclock_now_us() + DBFX_WAIT_S * DBFX_SEC));
    assert_int_equal(pgproxy_relayed(px, 'E'), errors + 1);
    /* The error is on the socket, the end is not. */
    assert_true(readable(PQsocket(c->pg), mclock_now_us() + DBFX_WAIT_S * DBFX_SEC));
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
    assert_int_equal(dbfx_q_int(c, "one", NULL), 1);
    dbconn_close(c);
    pgproxy_stop(px);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(exec_past_deadline_times_out_and_cancel_keeps_connection),
        cmocka_unit_test(statement_timeout_is_a_server_side_backstop),
        cmocka_unit_test(sql_error_is_eio_and_connection_survives),
        cmocka_unit_test(send_then_read_is_in_progress_until_the_statement_ends),
        cmocka_unit_test(pipelined_statements_end_in_order_and_fail_alone),
        cmocka_unit_test(a_failure_in_a_batch_leaves_the_rest_of_it_unrun_and_the_next_batch_runs),
        cmocka_unit_test(a_cancelled_pipeline_ends_every_statement_and_keeps_the_connection),
        cmocka_unit_test(a_failed_statement_read_in_steps_is_eio_with_the_server_message),
        cmocka_unit_test(an_error_read_before_its_statement_ends_is_returned_at_the_end),
    };
    return cmocka_run_group_tests_name("dbconn_stmt", tests, dbfx_group_setup, dbfx_group_teardown);
}
