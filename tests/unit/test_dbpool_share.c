/*
 * test_dbpool_share: how the connection pool (dbpool.h) shares its connections between
 * tenants, against a real PostgreSQL: the tenant cap binds only while others are active, a
 * newcomer never waits behind a busy tenant, the reserve is left to newcomers (also on a cold
 * pool), brief requests take one connection past their share but never the reserve, and hand-
 * offs survive caps that flip under load. Fixture: dbpoolfx.
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

static void tenant_cap_binds_while_others_are_active(void **state)
{
    (void)state;
    DBFX_NEED_PG();
    char app[64];
    dbfx_app_for(app, sizeof(app), "cap");
    atomic_bool others = true;
    struct dbpool *p = dbfx_mkpool(app, 4, 2, &others);
    struct dbconn *a1, *a2, *a3, *b1, *b2;
    assert_int_equal(dbfx_get(p, DBFX_A, 5 * DBFX_SEC, &a1), 0);
    assert_int_equal(dbfx_get(p, DBFX_A, 5 * DBFX_SEC, &a2), 0);
    /* Two slots are free, but A holds its share. */
    assert_int_equal(dbfx_get(p, DBFX_A, 200 * DBFX_MS, &a3), -ETIMEDOUT);
    assert_int_equal(dbfx_get(p, DBFX_B, 5 * DBFX_SEC, &b1), 0);

    /* A capped waiter does not hold up another tenant behind it. */
    struct dbfx_waiter wa = {0};
    dbfx_start_waiter(&wa, p, DBFX_A, 30 * DBFX_SEC);
    dbfx_wait_pending(p, 1);
    assert_int_equal(dbfx_get(p, DBFX_B, 5 * DBFX_SEC, &b2), 0);
    assert_int_equal(dbfx_stats(p).pending, 1);
    /* A released connection is not given to the capped waiter: it stays idle. */
    dbpool_release(p, b2, false);
    struct dbpool_stats s = dbfx_stats(p);
    assert_int_equal(s.pending, 1);
    assert_int_equal(s.idle, 1);

    /* The other tenants go quiet: a kick re-runs the hand-off and A gets the idle one. */
    atomic_store(&others, false);
    dbpool_kick(p);
    pthread_join(wa.tid, NULL);
    assert_int_equal(wa.rc, 0);
    assert_ptr_equal(wa.got, b2);
    s = dbfx_stats(p);
    assert_int_equal(s.active, 4);
    assert_int_equal(s.connects, 4);
    dbpool_release(p, wa.got, false);
    dbpool_release(p, a1, false);
    dbpool_release(p, a2, false);
    dbpool_release(p, b1, false);
    dbfx_finish(p, app);
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
    DBFX_NEED_PG();
    char app[64];
    dbfx_app_for(app, sizeof(app), "reserve");
    atomic_bool others = false;
    struct dbpool *p = dbfx_mkpool_ex(app, 5, 2, 1, &others);
    struct dbconn *a[5], *b[2];
    for (int i = 0; i < 4; i++)
        assert_int_equal(dbfx_get(p, DBFX_A, 5 * DBFX_SEC, &a[i]), 0);
    /* A fifth for A waits although a slot is free: it is the newcomers' reserve. */
    struct dbfx_waiter wa = {0};
    dbfx_start_waiter(&wa, p, DBFX_A, 30 * DBFX_SEC);
    dbfx_wait_pending(p, 1);
    assert_int_equal(dbfx_stats(p).reserve, 1);

    /* B arrives (the worker pool now reports another tenant) and gets the reserve while A
     * holds all four of its connections. */
    atomic_store(&others, true);
    assert_int_equal(dbfx_get(p, DBFX_B, 5 * DBFX_SEC, &b[0]), 0);
    assert_int_equal(dbpool_held(p, DBFX_A), 4);
    assert_int_equal(dbpool_held(p, DBFX_B), 1);

    /* A's queries end, two of them: A is at its share (2) beside B, so its waiter stays
     * pending and the two connections stay idle... */
    dbpool_release(p, a[3], false);
    dbpool_release(p, a[2], false);
    struct dbpool_stats s = dbfx_stats(p);
    assert_int_equal(s.pending, 1);
    assert_int_equal(s.idle, 2);
    /* ...and B's next request takes one at once, passing A's waiter. */
    assert_int_equal(dbfx_get(p, DBFX_B, 5 * DBFX_SEC, &b[1]), 0);
    assert_int_equal(dbfx_stats(p).pending, 1);

    /* B goes quiet; once the worker pool says so, a kick hands A connections again, up to
     * every one but the reserve. */
    dbpool_release(p, b[0], false);
    dbpool_release(p, b[1], false);
    atomic_store(&others, false);
    dbpool_kick(p);
    pthread_join(wa.tid, NULL);
    assert_int_equal(wa.rc, 0);
    a[2] = wa.got;
    assert_int_equal(dbfx_get(p, DBFX_A, 5 * DBFX_SEC, &a[3]), 0);
    assert_int_equal(dbpool_held(p, DBFX_A), 4);
    assert_int_equal(dbfx_get(p, DBFX_A, 100 * DBFX_MS, &a[4]), -ETIMEDOUT);
    s = dbfx_stats(p);
    assert_int_equal(s.active, 4);
    assert_int_equal(s.idle, 1);
    assert_int_equal(s.pending, 0);
    for (int i = 0; i < 4; i++)
        dbpool_release(p, a[i], false);
    dbfx_finish(p, app);
}

/* brief for the pools under test: the owner A is brief while this flag is set. */
static atomic_bool a_brief;
static bool brief_flag(const void *owner)
{
    return owner == DBFX_A && atomic_load(&a_brief);
}

/* A tenant with brief requests takes one connection past its share beside others, never a
 * second; alone, every connection but the reserve, like any tenant (a newcomer takes the
 * reserve); as soon as it is not brief, its share binds again. */
static void brief_requests_take_one_connection_past_the_share_never_the_reserve(void **state)
{
    (void)state;
    DBFX_NEED_PG();
    char app[64];
    dbfx_app_for(app, sizeof(app), "brief");
    atomic_bool others = true;
    struct dbpool_opts o = {
        .conn = dbfx_params(dbfx_url, app),
        .max = 4,
        .share = {.size = 4, .cap = 1, .reserve = 1},
        .others_active = dbfx_others_flag,
        .others_ctx = &others,
        .brief = brief_flag,
    };
    struct dbpool *p = NULL;
    assert_int_equal(dbpool_create(&o, &p), 0);
    struct dbconn *a[4], *b;
    atomic_store(&a_brief, true);
    assert_int_equal(dbfx_get(p, DBFX_A, 5 * DBFX_SEC, &a[0]), 0);
    assert_int_equal(dbfx_get(p, DBFX_A, 5 * DBFX_SEC, &a[1]), 0); /* one past its share of 1 */
    assert_int_equal(dbfx_get(p, DBFX_A, 100 * DBFX_MS, &a[2]), -ETIMEDOUT); /* not two */
    assert_int_equal(dbpool_held(p, DBFX_A), 2);
    atomic_store(&others, false);
    assert_int_equal(dbfx_get(p, DBFX_A, 5 * DBFX_SEC, &a[2]), 0);
    assert_int_equal(dbfx_get(p, DBFX_A, 100 * DBFX_MS, &a[3]), -ETIMEDOUT); /* the reserve */
    assert_int_equal(dbfx_get(p, DBFX_B, 5 * DBFX_SEC, &b), 0);              /* is the newcomer's */
    assert_int_equal(dbfx_stats(p).active, 4);
    dbpool_release(p, b, false);
    for (int i = 1; i < 3; i++)
        dbpool_release(p, a[i], false);
    atomic_store(&others, true);
    atomic_store(&a_brief, false);
    assert_int_equal(dbfx_get(p, DBFX_A, 100 * DBFX_MS, &a[1]), -ETIMEDOUT); /* at its share of 1 */
    dbpool_release(p, a[0], false);
    dbfx_finish(p, app);
}

/* How many openers have their answer (a connection or an error). */
static atomic_int openers_done;

static void *opener_main(void *arg)
{
    struct dbfx_waiter *w = arg;
    w->rc = dbfx_get(w->p, w->owner, w->wait_us, &w->got);
    atomic_fetch_add(&openers_done, 1);
    return NULL;
}

static bool openers_done_at_least(int n)
{
    for (int64_t end = mclock_now_us() + 30 * DBFX_SEC; mclock_now_us() < end;) {
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
    DBFX_NEED_PG();
    char app[64];
    dbfx_app_for(app, sizeof(app), "opening");
    struct dbpool *p = dbfx_mkpool_ex(app, 3, 3, 1, NULL);
    /* Static: the threads would outlive a failed test's frame. */
    static struct dbfx_waiter w[3];
    memset(w, 0, sizeof(w));
    atomic_store(&openers_done, 0);
    for (int i = 0; i < 3; i++) {
        w[i].p = p;
        w[i].owner = DBFX_A;
        w[i].wait_us = 60 * DBFX_SEC;
        assert_int_equal(pthread_create(&w[i].tid, NULL, opener_main, &w[i]), 0);
    }
    assert_true(openers_done_at_least(2));
    /* The newcomer gets the last connection while the tenant's third request still waits. */
    struct dbconn *b = NULL;
    assert_int_equal(dbfx_get(p, DBFX_B, 30 * DBFX_SEC, &b), 0);
    assert_int_equal(atomic_load(&openers_done), 2);
    assert_true(dbfx_stats(p).connects <= 3);
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
    assert_true(dbfx_stats(p).connects <= 3);
    for (int i = 0; i < 3; i++)
        if (w[i].got)
            dbpool_release(p, w[i].got, false);
    dbfx_finish(p, app);
}

static void no_tenant_cap_when_alone(void **state)
{
    (void)state;
    DBFX_NEED_PG();
    char app[64];
    dbfx_app_for(app, sizeof(app), "alone");
    atomic_bool others = false;
    struct dbpool *pools[2] = {dbfx_mkpool(app, 3, 1, &others), dbfx_mkpool(app, 3, 1, NULL)};
    for (int k = 0; k < 2; k++) {
        struct dbconn *c[3];
        for (int i = 0; i < 3; i++)
            assert_int_equal(dbfx_get(pools[k], DBFX_A, 5 * DBFX_SEC, &c[i]), 0);
        assert_int_equal(dbfx_stats(pools[k]).active, 3);
        for (int i = 0; i < 3; i++)
            dbpool_release(pools[k], c[i], false);
    }
    dbpool_stop(pools[0]);
    dbpool_destroy(pools[0]);
    dbfx_finish(pools[1], app);
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
        int rc = dbfx_get(ch->p, ch->owner, 15 * DBFX_SEC, &c);
        if (rc == 0) {
            ch->ok += dbfx_q_int(c, "one", NULL) == 1;
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
    DBFX_NEED_PG();
    enum { MAX = 4, THREADS = 6 };
    char app[64];
    dbfx_app_for(app, sizeof(app), "churn");
    atomic_bool others = true;
    struct dbpool *p = dbfx_mkpool(app, MAX, 1, &others);
    atomic_int done = 0;
    struct churner ch[THREADS];
    for (int i = 0; i < THREADS; i++) {
        ch[i] = (struct churner){.p = p, .owner = i % 3 == 0 ? DBFX_A : DBFX_B, .done = &done};
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
        int64_t n = dbfx_backends(app);
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
    dbfx_wait_opening_idle(p, 0, SIZE_MAX);
    struct dbpool_stats st = dbfx_stats(p);
    assert_int_equal(st.acquired, THREADS * 30);
    assert_true(st.connects <= MAX);
    assert_int_equal(st.pending + st.active + st.opening, 0);
    dbfx_finish(p, app);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(tenant_cap_binds_while_others_are_active),
        cmocka_unit_test(no_tenant_cap_when_alone),
        cmocka_unit_test(a_newcomer_never_waits_behind_a_busy_tenant),
        cmocka_unit_test(a_tenant_on_a_cold_pool_leaves_the_reserve_to_a_newcomer),
        cmocka_unit_test(brief_requests_take_one_connection_past_the_share_never_the_reserve),
        cmocka_unit_test(hand_off_survives_flipping_caps),
    };
    return cmocka_run_group_tests_name("dbpool_share", tests, dbfx_group_setup,
                                       dbfx_group_teardown);
}
