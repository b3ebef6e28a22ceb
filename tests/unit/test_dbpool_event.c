/*
 * test_dbpool_event: the connection pool's ways in for the event threads (dbpool.h), against a
 * real PostgreSQL: try_acquire never waits and never connects, and gives way to waiters and to
 * the share rule; cancel_release cancels a running statement on a pool thread and returns the
 * connection; destroy waits for that cancel. Fixture: dbpoolfx.
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

static void try_acquire_takes_only_an_idle_connection_and_never_connects(void **state)
{
    (void)state;
    DBFX_NEED_PG();
    char app[64];
    dbfx_app_for(app, sizeof(app), "try");
    struct dbpool *p = dbfx_mkpool(app, 2, 0, NULL);
    struct dbconn *c = NULL, *d = NULL, *e = NULL;
    /* A cold pool has room for two, but nothing idle: no, and no connect started for it. */
    assert_int_equal(dbpool_try_acquire(p, DBFX_A, &c), -EAGAIN);
    assert_null(c);
    struct dbpool_stats s = dbfx_stats(p);
    assert_int_equal(s.connects + s.opening + s.pending + s.active, 0);
    assert_int_equal(dbfx_backends(app), 0);

    assert_int_equal(dbfx_get(p, DBFX_A, 5 * DBFX_SEC, &c), 0);
    dbpool_release(p, c, false);
    assert_int_equal(dbpool_try_acquire(p, DBFX_B, &d), 0);
    assert_ptr_equal(d, c);
    assert_int_equal(dbfx_q_int(d, "one", NULL), 1);
    s = dbfx_stats(p);
    assert_int_equal(s.active, 1);
    assert_int_equal(s.idle, 0);
    assert_int_equal(s.acquired, 2);
    assert_int_equal(dbpool_held(p, DBFX_B), 1);

    /* The only connection is busy; room for another, still no connect. */
    assert_int_equal(dbpool_try_acquire(p, DBFX_A, &e), -EAGAIN);
    assert_null(e);
    s = dbfx_stats(p);
    assert_int_equal(s.opening, 0);
    assert_int_equal(s.connects, 1);
    assert_int_equal(dbfx_wait_backends(app, 1), 1);
    dbpool_release(p, d, false);

    /* Stopped: nothing is handed out (the idle one is closed). */
    dbpool_stop(p);
    assert_int_equal(dbpool_try_acquire(p, DBFX_A, &e), -EAGAIN);
    dbpool_destroy(p);
    assert_int_equal(dbfx_wait_backends(app, 0), 0);
}

/* An idle connection is not taken past a waiter, nor by a tenant the share rule holds back;
 * the answer comes at once either way. */
static void try_acquire_gives_way_to_waiters_and_to_the_share_rule(void **state)
{
    (void)state;
    DBFX_NEED_PG();
    char app[64];
    dbfx_app_for(app, sizeof(app), "try-share");
    atomic_bool others = true;
    struct dbpool *p = dbfx_mkpool(app, 2, 1, &others);
    struct dbconn *a1, *b1, *x = NULL;
    assert_int_equal(dbfx_get(p, DBFX_A, 5 * DBFX_SEC, &a1), 0);
    assert_int_equal(dbfx_get(p, DBFX_B, 5 * DBFX_SEC, &b1), 0);
    dbpool_release(p, b1, false);
    /* A holds its share (1) beside an active B: the idle connection is not A's. */
    assert_int_equal(dbpool_try_acquire(p, DBFX_A, &x), -EAGAIN);
    assert_null(x);
    assert_int_equal(dbpool_try_acquire(p, DBFX_B, &x), 0);
    assert_ptr_equal(x, b1);
    dbpool_release(p, x, false);
    x = NULL;

    /* A waits for a connection (passed over, at its share). B could take the idle one, but
     * waiters go first: -EAGAIN, at once, and the idle connection stays. */
    struct dbfx_waiter w;
    memset(&w, 0, sizeof(w));
    dbfx_start_waiter(&w, p, DBFX_A, 60 * DBFX_SEC);
    dbfx_wait_pending(p, 1);
    int64_t t0 = mclock_now_us();
    assert_int_equal(dbpool_try_acquire(p, DBFX_B, &x), -EAGAIN);
    assert_true(mclock_now_us() - t0 < DBFX_SEC);
    assert_null(x);
    assert_int_equal(dbfx_stats(p).idle, 1);

    /* A's own connection comes back: the waiter is served, and B may take the idle one. */
    dbpool_release(p, a1, false);
    pthread_join(w.tid, NULL);
    assert_int_equal(w.rc, 0);
    assert_int_equal(dbpool_try_acquire(p, DBFX_B, &x), 0);
    assert_ptr_equal(x, b1);
    struct dbpool_stats s = dbfx_stats(p);
    assert_int_equal(s.active, 2);
    assert_int_equal(s.connects, 2);
    dbpool_release(p, w.got, false);
    dbpool_release(p, x, false);
    dbfx_finish(p, app);
}

/* A statement past its deadline on an event thread: cancelled on a pool thread, its connection
 * comes back clean to the pool (same backend, not closed), long before the statement would
 * have ended. */
static void cancel_release_ends_a_running_statement_and_returns_the_connection(void **state)
{
    (void)state;
    DBFX_NEED_PG();
    char app[64];
    dbfx_app_for(app, sizeof(app), "cancel-rel");
    struct dbpool *p = dbfx_mkpool(app, 1, 0, NULL);
    struct dbconn *c, *again;
    int64_t pid = dbfx_take_with_pid(p, &c);
    const char *ten[1] = {"10"};
    char err[256] = "";
    assert_int_equal(dbconn_send(c, "sleep", 1, ten, err, sizeof(err)), 0);
    dbfx_wait_sleeping(pid);

    int64_t t0 = mclock_now_us();
    dbpool_cancel_release(p, c, t0 + 5 * DBFX_SEC);
    /* max 1: only the cancelled connection coming back can serve this. */
    assert_int_equal(dbfx_get(p, DBFX_B, 9 * DBFX_SEC, &again), 0);
    int64_t took = mclock_now_us() - t0;
    print_message("# cancelled and back in %lld ms\n", (long long)(took / DBFX_MS));
    assert_true(took < 5 * DBFX_SEC);
    assert_ptr_equal(again, c);
    assert_int_equal(dbfx_q_int(again, "pid", NULL), pid);
    assert_int_equal(dbfx_q_int(again, "one", NULL), 1);
    assert_int_equal(dbfx_sleeping(pid), 0);
    struct dbpool_stats s = dbfx_stats(p);
    assert_int_equal(s.closed_broken, 0);
    assert_int_equal(s.connects, 1);
    dbpool_release(p, again, false);
    dbfx_finish(p, app);
}

/* dbpool_destroy waits for a cancel in progress: when it returns, the statement has ended and
 * the canceller is done with the pool (AddressSanitizer would see it touch freed memory). */
static void destroy_waits_for_the_cancel_of_a_running_statement(void **state)
{
    (void)state;
    DBFX_NEED_PG();
    char app[64];
    dbfx_app_for(app, sizeof(app), "cancel-destroy");
    struct dbpool *p = dbfx_mkpool(app, 1, 0, NULL);
    struct dbconn *c;
    int64_t pid = dbfx_take_with_pid(p, &c);
    const char *ten[1] = {"10"};
    char err[256] = "";
    assert_int_equal(dbconn_send(c, "sleep", 1, ten, err, sizeof(err)), 0);
    dbfx_wait_sleeping(pid);
    int64_t t0 = mclock_now_us();
    dbpool_cancel_release(p, c, t0 + 5 * DBFX_SEC);
    dbpool_stop(p);
    dbpool_destroy(p);
    assert_true(mclock_now_us() - t0 < 5 * DBFX_SEC);
    assert_int_equal(dbfx_sleeping(pid), 0);
    assert_int_equal(dbfx_wait_backends(app, 0), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(try_acquire_takes_only_an_idle_connection_and_never_connects),
        cmocka_unit_test(try_acquire_gives_way_to_waiters_and_to_the_share_rule),
        cmocka_unit_test(cancel_release_ends_a_running_statement_and_returns_the_connection),
        cmocka_unit_test(destroy_waits_for_the_cancel_of_a_running_statement),
    };
    return cmocka_run_group_tests_name("dbpool_event", tests, dbfx_group_setup,
                                       dbfx_group_teardown);
}
