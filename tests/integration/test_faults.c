/*
 * test_faults: the server and the database restart while the server works, and nothing
 * acknowledged is lost.
 *
 * - The server is killed (SIGKILL) while writers post: every 201 is in the database, and the
 *   rows committed but never answered are bounded by the requests cut off.
 * - PostgreSQL is stopped and started, then crash-restarted (pg_ctl -m immediate), under
 *   sustained load on every tier: no crash, /health goes 503 and back, breakers open and close,
 *   pools reconnect by themselves, every acknowledged write survives; the time each tier took
 *   to serve again is printed.
 * Killed and stalled connections and a hung Redis are test_faults_conns's (fixture: faultsfx).
 * Numbers measured along the way are printed as TAP comments ("# ..."); timings are printed,
 * never bounded above: every wait is for a real condition, with a generous deadline.
 */
#include "faultsfx.h"
#include "faultkit.h"
#include "harness.h"

#include "../redisproc.h"

#include <curl/curl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

static struct h_pg pg; /* a private cluster, for the restarts */

static int setup(void **state)
{
    (void)state;
    if (ftfx_setup("faults"))
        return -1;
    return h_pg_start(&pg);
}

static int teardown(void **state)
{
    (void)state;
    h_pg_destroy(&pg);
    return 0;
}

/* ---- 1. the server killed mid-write ------------------------------------------------------- */

struct created_ctx {
    struct fk_client *c;
    int n;
    long want;
};

static bool enough_created(void *arg)
{
    struct created_ctx *x = arg;
    return fk_sum_created(x->c, x->n) >= x->want;
}

static void acknowledged_writes_survive_kill_9_of_the_server(void **state)
{
    (void)state;
    struct h_server s;
    const char *e[] = {ftfx_tiers_env, "ACCESS_LOG=false", NULL};
    assert_int_equal(h_server_start(&s, ftfx_db_url, e), 0);

    enum { WRITERS = 6 };
    struct fk_client c[WRITERS];
    atomic_bool stop = false;
    memset(c, 0, sizeof(c));
    for (int i = 0; i < WRITERS; i++) {
        c[i].base = s.base;
        c[i].tier = ftfx_tiers3[i % 3];
        snprintf(c[i].tenant, sizeof(c[i].tenant), "kill9-%d", i);
        c[i].post_every = 1;
        c[i].tag = "kill9";
        c[i].id = i;
        c[i].stop_on_transport = true;
        c[i].stop = &stop;
        assert_int_equal(fk_client_start(&c[i]), 0);
    }
    struct created_ctx x = {.c = c, .n = WRITERS, .want = 400};
    bool got = h_wait_until(enough_created, &x, 60000);
    int rc = h_server_stop(&s, SIGKILL, 5000);
    atomic_store(&stop, true);
    for (int i = 0; i < WRITERS; i++)
        fk_client_join(&c[i]);
    assert_true(got);
    assert_int_equal(rc, 128 + SIGKILL);

    long cut = 0;
    for (int i = 0; i < WRITERS; i++)
        cut += c[i].cut_off;
    int64_t acked = 0;
    int64_t present = fk_acked_present(ftfx_db_url, c, WRITERS, "kill9", &acked);
    int64_t committed =
        h_sql_int(ftfx_db_url, "SELECT count(*) FROM tenant_data WHERE payload->>'run' = 'kill9'");
    printf("# kill -9 under %d writers: %lld answered 201, %lld of them in the database; "
           "%lld rows committed in all (%lld committed but never answered), %ld requests cut "
           "off in flight\n",
           WRITERS, (long long)acked, (long long)present, (long long)committed,
           (long long)(committed - acked), cut);
    fflush(stdout);
    assert_int_equal(present, acked);
    assert_true(acked >= 400);
    /* A row nobody was told about can only come from a request the kill cut off. */
    assert_true(committed >= acked && committed - acked <= cut);
    for (int i = 0; i < WRITERS; i++)
        fk_client_free(&c[i]);

    /* The server starts again on the same database and serves at once. */
    assert_int_equal(h_server_start(&s, ftfx_db_url, e), 0);
    for (int t = 0; t < 3; t++)
        assert_int_equal(ftfx_tier_get(&s, ftfx_tiers3[t], "/api/data?limit=1"), 200);
    assert_int_equal(h_server_stop(&s, SIGTERM, 20000), 0);
}

/* ---- 2. the database restarted under load ---------------------------------------------- */

struct breakers_want {
    const struct h_server *s;
    const char *state;
};

static bool all_breakers(void *arg)
{
    struct breakers_want *w = arg;
    char b[32];
    for (int t = 0; t < 3; t++)
        if (strcmp(
                h_metric_text(w->s->base, ftfx_tiers3[t], "circuitBreaker", "state", b, sizeof(b)),
                w->state))
            return false;
    return true;
}

static bool all_tiers_served_after_mark(void *arg)
{
    struct ftfx_load *l = arg;
    for (int t = 0; t < 3; t++)
        if (!atomic_load(&l->ts[t].first_ok_ms))
            return false;
    return true;
}

/* After the database is back at `back_ms`: every tier serves again, breakers close. */
static void expect_recovery(const struct h_server *s, struct ftfx_load *l, int64_t back_ms,
                            const char *what)
{
    assert_true(h_wait_until(all_tiers_served_after_mark, l, 30000));
    assert_true(H_WAIT(fk_status(s->base, "/health", NULL) == 200, 30000));
    struct breakers_want closed = {.s = s, .state = "CLOSED"};
    assert_true(h_wait_until(all_breakers, &closed, 30000));
    for (int t = 0; t < 3; t++) {
        long long first = atomic_load(&l->ts[t].first_ok_ms);
        long long gap = atomic_load(&l->ts[t].max_gap_ms);
        printf("# %s: %s served again %lld ms after PostgreSQL was back (longest gap between "
               "two successes: %lld ms)\n",
               what, ftfx_tiers3[t], first - (long long)back_ms, gap);
    }
    fflush(stdout);
}

static void database_stop_and_start_under_load_recovers_by_itself(void **state)
{
    (void)state;
    struct h_server s;
    const char *e[] = {ftfx_tiers_env, "HEALTH_INTERVAL_MS=200", "ACCESS_LOG=false", NULL};
    assert_int_equal(h_server_start(&s, pg.url, e), 0);
    static struct ftfx_load l;
    ftfx_load_start(&l, &s, 2, 1, 100, 25, "restart");
    ftfx_load_warm(&l, 50);
    int64_t connects0 = ftfx_sum_metric(&s, "connectionPool", "connects");
    int64_t opened0 = ftfx_sum_metric(&s, "circuitBreaker", "opened");

    int64_t t_stop = h_now_ms();
    assert_int_equal(h_pg_stop(&pg), 0);
    assert_true(H_WAIT(fk_status(s.base, "/health", NULL) == 503, 30000));
    int64_t t_health = h_now_ms();
    struct breakers_want open = {.s = &s, .state = "OPEN"};
    assert_true(h_wait_until(all_breakers, &open, 30000));
    int64_t t_open = h_now_ms();
    printf("# clean stop: /health 503 after %lld ms, every breaker OPEN after %lld ms\n",
           (long long)(t_health - t_stop), (long long)(t_open - t_stop));

    assert_int_equal(h_pg_resume(&pg), 0);
    int64_t back = h_now_ms();
    atomic_store(&l.mark, back);
    expect_recovery(&s, &l, back, "clean stop/start");
    assert_true(fk_alive(s.pid));
    ftfx_load_stop(&l);

    fk_print_tally("stop/start", l.c, l.n, ftfx_tiers3, 3);
    ftfx_expect_clean_answers(&l);
    int64_t acked = 0;
    int64_t present = fk_acked_present(pg.url, l.c, l.n, "restart", &acked);
    printf("# clean stop/start: %lld writes acknowledged, %lld in the database; pools opened %lld "
           "new connections; breakers opened %lld times\n",
           (long long)acked, (long long)present,
           (long long)(ftfx_sum_metric(&s, "connectionPool", "connects") - connects0),
           (long long)(ftfx_sum_metric(&s, "circuitBreaker", "opened") - opened0));
    assert_int_equal(present, acked);
    assert_true(ftfx_sum_metric(&s, "connectionPool", "connects") > connects0);
    assert_true(ftfx_sum_metric(&s, "circuitBreaker", "opened") >= opened0 + 3);
    ftfx_load_free(&l);
    assert_int_equal(h_server_stop(&s, SIGTERM, 20000), 0);
    assert_int_equal(h_server_log_count(&s, "\"event\":\"db_down\""), 1);
    assert_int_equal(h_server_log_count(&s, "\"event\":\"db_up\""), 1);
}

static void database_crash_restart_under_load_loses_no_acknowledged_write(void **state)
{
    (void)state;
    struct h_server s;
    const char *e[] = {ftfx_tiers_env, "HEALTH_INTERVAL_MS=200", "ACCESS_LOG=false", NULL};
    assert_int_equal(h_server_start(&s, pg.url, e), 0);
    static struct ftfx_load l;
    ftfx_load_start(&l, &s, 2, 1, 100, 25, "crash");
    ftfx_load_warm(&l, 50);
    int64_t connects0 = ftfx_sum_metric(&s, "connectionPool", "connects");
    int64_t broken0 = ftfx_sum_metric(&s, "connectionPool", "closedBroken");

    /* Every backend is killed without a checkpoint; the start runs crash recovery. */
    int64_t t0 = h_now_ms();
    assert_int_equal(fk_pg_ctl(&pg, "-m immediate restart"), 0);
    int64_t back = h_now_ms();
    atomic_store(&l.mark, back);
    printf("# pg_ctl restart -m immediate took %lld ms\n", (long long)(back - t0));
    expect_recovery(&s, &l, back, "immediate restart");
    assert_true(fk_alive(s.pid));
    ftfx_load_stop(&l);

    fk_print_tally("immediate restart", l.c, l.n, ftfx_tiers3, 3);
    ftfx_expect_clean_answers(&l);
    int64_t acked = 0;
    int64_t present = fk_acked_present(pg.url, l.c, l.n, "crash", &acked);
    printf("# immediate restart: %lld writes acknowledged, %lld in the database after crash "
           "recovery; %lld broken connections closed, %lld new ones opened\n",
           (long long)acked, (long long)present,
           (long long)(ftfx_sum_metric(&s, "connectionPool", "closedBroken") - broken0),
           (long long)(ftfx_sum_metric(&s, "connectionPool", "connects") - connects0));
    assert_true(acked > 0);
    assert_int_equal(present, acked);
    assert_true(ftfx_sum_metric(&s, "connectionPool", "connects") > connects0);
    ftfx_load_free(&l);
    assert_int_equal(h_server_stop(&s, SIGTERM, 20000), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(acknowledged_writes_survive_kill_9_of_the_server),
        cmocka_unit_test(database_stop_and_start_under_load_recovers_by_itself),
        cmocka_unit_test(database_crash_restart_under_load_loses_no_acknowledged_write),
    };
    curl_global_init(CURL_GLOBAL_ALL);
    int rc = cmocka_run_group_tests(tests, setup, teardown);
    curl_global_cleanup();
    return rc;
}
