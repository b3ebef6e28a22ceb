/*
 * test_dbpool_health: the connection pool's (dbpool.h) dead and idle connections, against a
 * real PostgreSQL: a connection the server killed while idle is replaced, the reaper closes
 * killed connections and those idle past the timeout, a retrying caller takes a recently
 * released connection without a check, a broken release frees its slot, a smaller max closes
 * idle connections. Fixture: dbpoolfx.
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

/* Terminate backend pid and wait until the server no longer shows it. */
static void kill_backend(int64_t pid)
{
    char pidtxt[24];
    snprintf(pidtxt, sizeof(pidtxt), "%lld", (long long)pid);
    assert_int_equal(dbfx_admin_int("SELECT pg_terminate_backend($1::int)::int", pidtxt), 1);
    int64_t end = mclock_now_us() + DBFX_WAIT_S * DBFX_SEC;
    while (dbfx_admin_int("SELECT count(*) FROM pg_stat_activity WHERE pid = $1::int", pidtxt) &&
           mclock_now_us() < end)
        dbfx_nap_ms(5);
}

static void connection_killed_while_idle_is_replaced(void **state)
{
    (void)state;
    DBFX_NEED_PG();
    char app[64];
    dbfx_app_for(app, sizeof(app), "killed");
    struct dbpool *p = dbfx_mkpool(app, 1, 0, NULL);
    struct dbconn *c;
    int64_t pid = dbfx_take_with_pid(p, &c);
    assert_false(dbconn_is_dead(c));
    dbpool_release(p, c, false);

    kill_backend(pid);
    /* The pool still holds it as idle; the test may look at it since nothing else runs. */
    assert_true(dbconn_is_dead(c));

    struct dbconn *fresh;
    assert_int_equal(dbfx_get(p, DBFX_A, 5 * DBFX_SEC, &fresh), 0);
    assert_int_not_equal(dbfx_q_int(fresh, "pid", NULL), pid);
    assert_int_equal(dbfx_q_int(fresh, "one", NULL), 1);
    struct dbpool_stats s = dbfx_stats(p);
    assert_int_equal(s.closed_broken, 1);
    assert_int_equal(s.connects, 2);
    dbpool_release(p, fresh, false);
    dbfx_finish(p, app);
}

/* The janitor's reaper: idle connections whose backend the server killed are closed without a
 * request (closed_broken), the live idle one and the busy one are left alone. */
static void the_reaper_closes_idle_connections_the_server_killed(void **state)
{
    (void)state;
    DBFX_NEED_PG();
    char app[64];
    dbfx_app_for(app, sizeof(app), "reap");
    struct dbpool *p = dbfx_mkpool(app, 4, 0, NULL);
    struct dbconn *c[4];
    int64_t pid[4];
    for (int i = 0; i < 4; i++)
        pid[i] = dbfx_take_with_pid(p, &c[i]);
    for (int i = 0; i < 3; i++)
        dbpool_release(p, c[i], false);
    assert_int_equal(dbfx_stats(p).idle, 3);
    /* Nothing dead, no timeout: nothing to close. */
    assert_int_equal(dbpool_reap_idle(p, mclock_now_us(), 0), 0);
    assert_int_equal(dbfx_stats(p).idle, 3);

    kill_backend(pid[0]);
    kill_backend(pid[2]);
    kill_backend(pid[3]); /* busy: its holder finds out */
    size_t found = 0;
    int64_t end = mclock_now_us() + DBFX_WAIT_S * DBFX_SEC;
    while (found < 2 && mclock_now_us() < end) {
        found += dbpool_reap_idle(p, mclock_now_us(), 0);
        if (found < 2)
            dbfx_nap_ms(2); /* the server's end of a killed connection arrives on its own time */
    }
    assert_int_equal(found, 2);
    struct dbpool_stats st = dbfx_stats(p);
    assert_int_equal(st.idle, 1);
    assert_int_equal(st.active, 1);
    assert_int_equal(st.closed_broken, 2);
    assert_int_equal(st.closed_idle, 0);
    assert_int_equal(dbfx_wait_backends(app, 1), 1); /* pid[1]'s, and only it */
    struct dbconn *live;
    assert_int_equal(dbfx_take_with_pid(p, &live), pid[1]);
    dbpool_release(p, live, false);
    dbpool_release(p, c[3], true);
    assert_int_equal(dbfx_stats(p).closed_broken, 3);
    dbfx_finish(p, app);
}

/* With an idle timeout (time injected), the reaper closes what idled that long, least recently
 * used first, counted in closed_idle; 0 never closes. */
static void the_reaper_closes_connections_idle_past_the_timeout(void **state)
{
    (void)state;
    DBFX_NEED_PG();
    char app[64];
    dbfx_app_for(app, sizeof(app), "idlet");
    struct dbpool *p = dbfx_mkpool(app, 2, 0, NULL);
    struct dbconn *c0, *c1;
    int64_t pid0 = dbfx_take_with_pid(p, &c0), pid1 = dbfx_take_with_pid(p, &c1);
    int64_t before = mclock_now_us();
    dbpool_release(p, c0, false);
    int64_t mid = mclock_now_us();
    while (mclock_now_us() <= mid)
        ; /* c1 goes idle strictly after mid */
    dbpool_release(p, c1, false);
    const int64_t timeout = 5 * DBFX_SEC;
    assert_int_equal(dbpool_reap_idle(p, before + timeout - 1, timeout), 0);
    assert_int_equal(dbpool_reap_idle(p, mid + 1000 * DBFX_SEC, 0), 0);
    assert_int_equal(dbfx_stats(p).idle, 2);
    assert_int_equal(dbfx_stats(p).closed_idle, 0);
    assert_int_equal(dbpool_reap_idle(p, mid + timeout, timeout), 0); /* none dead ... */
    struct dbpool_stats st = dbfx_stats(p);
    assert_int_equal(st.closed_idle, 1); /* ... c0 idled 5 s */
    assert_int_equal(st.closed_broken, 0);
    assert_int_equal(st.idle, 1);
    assert_int_equal(dbfx_wait_backends(app, 1), 1);
    struct dbconn *left;
    assert_int_equal(dbfx_take_with_pid(p, &left), pid1);
    assert_int_not_equal(pid1, pid0);
    dbpool_release(p, left, false);
    dbfx_finish(p, app);
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
    struct async_take t = {.w = {.owner = DBFX_A,
                                 .deadline_us = mclock_now_us() + DBFX_WAIT_S * DBFX_SEC,
                                 .trust_recent = trust_recent,
                                 .done = async_taken}};
    atomic_init(&t.done, false);
    struct dbconn *c = NULL;
    char err[256] = "";
    int rc = dbpool_acquire_async(p, &t.w, &c, err, sizeof(err));
    if (rc == -EINPROGRESS) {
        int64_t end = mclock_now_us() + DBFX_WAIT_S * DBFX_SEC;
        while (!atomic_load(&t.done) && mclock_now_us() < end)
            dbfx_nap_ms(2);
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
    *pid = dbfx_take_with_pid(p, &c);
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
    DBFX_NEED_PG();
    char app[64];
    dbfx_app_for(app, sizeof(app), "trusted");
    struct dbpool *p = dbfx_mkpool(app, 1, 0, NULL);

    int64_t pid;
    struct dbconn *dead = killed_idle(p, &pid);
    struct dbconn *c = take_async(p, true);
    assert_ptr_equal(c, dead);
    assert_int_equal(dbfx_stats(p).closed_broken, 0);
    PGresult *res = NULL;
    char err[256] = "";
    assert_int_equal(
        dbconn_exec(c, "one", 0, NULL, mclock_now_us() + 5 * DBFX_SEC, &res, err, sizeof(err)),
        -ECONNRESET);
    assert_null(res);
    dbpool_release(p, c, true);
    assert_int_equal(dbfx_stats(p).closed_broken, 1);

    /* Idle for longer than the window: checked, closed and replaced. The test may move its
     * release time back since nothing else runs. */
    dead = killed_idle(p, &pid);
    dead->released_us -= DBPOOL_TRUST_RECENT_US;
    c = take_async(p, true);
    /* Replaced: a new backend (not the address: the new connection may well be allocated
     * where the freed one was, as it once was in a full run). */
    assert_int_not_equal(dbfx_q_int(c, "pid", NULL), pid);
    assert_int_equal(dbfx_stats(p).closed_broken, 2);
    dbpool_release(p, c, false);

    /* Released just now, for a caller that does not retry: checked. */
    dead = killed_idle(p, &pid);
    c = take_async(p, false);
    assert_int_not_equal(dbfx_q_int(c, "pid", NULL), pid);
    assert_int_equal(dbfx_stats(p).closed_broken, 3);
    dbpool_release(p, c, false);
    dbfx_finish(p, app);
}

static void broken_release_frees_the_slot(void **state)
{
    (void)state;
    DBFX_NEED_PG();
    char app[64];
    dbfx_app_for(app, sizeof(app), "broken");
    struct dbpool *p = dbfx_mkpool(app, 1, 0, NULL);
    struct dbconn *c;
    int64_t pid = dbfx_take_with_pid(p, &c);
    dbpool_release(p, c, true);
    struct dbpool_stats s = dbfx_stats(p);
    assert_int_equal(s.closed_broken, 1);
    assert_int_equal(s.idle, 0);
    assert_int_equal(s.active, 0);
    /* With max 1, only a freed slot lets this succeed. */
    assert_int_equal(dbfx_get(p, DBFX_A, 5 * DBFX_SEC, &c), 0);
    assert_int_not_equal(dbfx_q_int(c, "pid", NULL), pid);
    assert_int_equal(dbfx_stats(p).connects, 2);
    assert_int_equal(dbfx_wait_backends(app, 1), 1);
    dbpool_release(p, c, false);
    dbfx_finish(p, app);
}

static void smaller_max_closes_idle_connections(void **state)
{
    (void)state;
    DBFX_NEED_PG();
    char app[64];
    dbfx_app_for(app, sizeof(app), "shrink");
    struct dbpool *p = dbfx_mkpool(app, 3, 0, NULL);
    struct dbconn *c[3], *d;
    for (int i = 0; i < 3; i++)
        assert_int_equal(dbfx_get(p, DBFX_A, 5 * DBFX_SEC, &c[i]), 0);
    dbpool_release(p, c[0], false);
    dbpool_set_limits(p, 1, (struct share_policy){.cap = 0}, 1000000, 0);
    /* The idle one above max is closed now, busy ones when they come back. */
    assert_int_equal(dbfx_stats(p).idle, 0);
    assert_int_equal(dbfx_wait_backends(app, 2), 2);
    dbpool_release(p, c[1], false);
    dbpool_release(p, c[2], false);
    struct dbpool_stats s = dbfx_stats(p);
    assert_int_equal(s.max, 1);
    assert_int_equal(s.idle, 1);
    assert_int_equal(dbfx_wait_backends(app, 1), 1);
    assert_int_equal(dbfx_get(p, DBFX_A, 5 * DBFX_SEC, &c[0]), 0);
    assert_int_equal(dbfx_get(p, DBFX_B, 100 * DBFX_MS, &d), -ETIMEDOUT);
    dbpool_release(p, c[0], false);
    dbfx_finish(p, app);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(connection_killed_while_idle_is_replaced),
        cmocka_unit_test(the_reaper_closes_idle_connections_the_server_killed),
        cmocka_unit_test(the_reaper_closes_connections_idle_past_the_timeout),
        cmocka_unit_test(a_retrying_caller_takes_a_recently_released_connection_unchecked),
        cmocka_unit_test(broken_release_frees_the_slot),
        cmocka_unit_test(smaller_max_closes_idle_connections),
    };
    return cmocka_run_group_tests_name("dbpool_health", tests, dbfx_group_setup,
                                       dbfx_group_teardown);
}
