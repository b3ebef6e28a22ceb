/*
 * test_fleet: the capacity controller across instances (issue 28 item 1; src/ops/fleet.c), in the
 * real binary: two instances on one PostgreSQL, enterprise's clients on A only, a free storm on
 * B only (the routing that took enterprise to 0.63 of its sink figure when each instance
 * defended only itself).
 *
 * - B's free is gated and cut for enterprise on A: B's enterprise section says the tier is
 *   active and threatened elsewhere, and B sheds free requests (503 shed) though B never served
 *   an enterprise request.
 * - The medium lost (the table locked by another session: every exchange waits out its
 *   deadline): B logs fleet_medium_down, reports bulkhead_fleet_up 0, and its free is no
 *   longer gated (local control: its storm is served); when the lock goes, B rejoins
 *   (fleet_medium_up) and gates free again.
 * - An instance that stops leaves the fleet at once: its row is deleted, the other sees no
 *   instance.
 * Enterprise's objective is 1 ms and its requests take 5 ms (delay_ms), so it threatens its
 * objective whatever the machine's speed: the test asserts states and counters, never timing.
 *
 * Fleet budgets (issue 28 item 3): pro's 20 workers and 10 connections are fleet totals
 * (budget_scope "fleet", minimums 2 and 1), split among the live instances.
 * - Two idle instances hold 9 workers and 4 connections each (README: Fleet budgets), their
 *   claims in the table sum to at most the total less a newcomer's minimum.
 * - A new instance has its minimum at once, before any exchange (the table locked meanwhile),
 *   and 6 workers and 3 connections once the three have exchanged: 18 + 2 <= 20, 9 + 1 <= 10.
 * - An instance killed (SIGKILL: its row stays) stops counting after its row's ttl: the other
 *   two are back at 9 and 4 while its row is still in the table.
 */
#include "harness.h"

#include <math.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#define FLEET_TIERS                                                                                \
    "{\"free\": {\"rate_limit\": 0},"                                                              \
    " \"pro\": {\"budget_scope\": \"fleet\", \"workers\": 20, \"db_max\": 10},"                    \
    " \"enterprise\": {\"latency_objective_ms\": 1}}"

static char db_url[300];
static char tiers_env[600];
static struct h_server a, b, c;

static int start_instance(struct h_server *s)
{
    const char *env[] = {
        tiers_env,      "FLEET=true",       "FLEET_INTERVAL_MS=50", "CAPACITY_INTERVAL_MS=50",
        "TARPIT=false", "ACCESS_LOG=false", "TEST_PARAMS=on",       NULL};
    return h_server_start(s, db_url, env);
}

static int setup(void **state)
{
    (void)state;
    if (h_db_create("fleet", db_url, sizeof(db_url)) ||
        h_tiers_env("fleet", FLEET_TIERS, tiers_env, sizeof(tiers_env)))
        return -1;
    if (start_instance(&a) || start_instance(&b))
        return -1;
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    if (a.pid > 0)
        h_server_stop(&a, SIGTERM, 30000);
    if (b.pid > 0)
        h_server_stop(&b, SIGTERM, 30000);
    if (c.pid > 0)
        h_server_stop(&c, SIGTERM, 30000);
    return 0;
}

/* tier.capacity.field of srv as a number (a bool as 0/1; NAN: missing). */
static double cap(const struct h_server *srv, const char *tier, const char *field)
{
    json_t *sec = h_metric_section(srv->base, tier, "capacity");
    json_t *f = json_object_get(sec, field);
    double v = json_is_number(f)    ? json_number_value(f)
               : json_is_boolean(f) ? json_is_true(f)
                                    : NAN;
    json_decref(sec);
    return v;
}

/* ---- load ------------------------------------------------------------------------------- */

struct load {
    const struct h_server *srv;
    const char *tier;
    const char *query; /* after /api/data? */
    int threads;
    atomic_bool stop;
    atomic_long ok, shed, other;
    pthread_t t[8];
};

static void *load_main(void *arg)
{
    struct load *l = arg;
    char th[64];
    snprintf(th, sizeof(th), "X-Tenant-Tier: %s", l->tier);
    char path[128];
    snprintf(path, sizeof(path), "/api/data?%s", l->query);
    for (long n = 0; !atomic_load(&l->stop); n++) {
        char tn[96];
        /* a fresh tenant per request: neither fairness nor a limit holds the storm back */
        snprintf(tn, sizeof(tn), "X-Tenant-ID: %s-%lx-%ld", l->tier, (unsigned long)pthread_self(),
                 n);
        const char *h[] = {th, tn, NULL};
        struct h_resp r;
        h_get(h_url(l->srv, path), h, &r);
        if (r.status == 200)
            atomic_fetch_add(&l->ok, 1);
        else if (r.status == 503 && r.body && strstr(r.body, "\"shed\""))
            atomic_fetch_add(&l->shed, 1);
        else
            atomic_fetch_add(&l->other, 1);
        h_resp_free(&r);
    }
    return NULL;
}

static void load_start(struct load *l)
{
    atomic_store(&l->stop, false);
    for (int i = 0; i < l->threads; i++)
        assert_int_equal(pthread_create(&l->t[i], NULL, load_main, l), 0);
}

static void load_stop(struct load *l)
{
    atomic_store(&l->stop, true);
    for (int i = 0; i < l->threads; i++)
        pthread_join(l->t[i], NULL);
}

static struct load ent = {
    .srv = &a, .tier = "enterprise", .query = "limit=1&delay_ms=5", .threads = 2};
static struct load storm = {.srv = &b, .tier = "free", .query = "limit=1", .threads = 6};

/* ---- tests ------------------------------------------------------------------------------ */

static void a_storm_on_one_instance_is_cut_for_enterprise_on_another(void **state)
{
    (void)state;
    /* Nothing on A yet: B's free is not gated. */
    assert_true(H_WAIT(cap(&b, "enterprise", "fleetActive") == 0, 10000));
    assert_true(cap(&b, "free", "gated") == 0);
    load_start(&ent);
    load_start(&storm);
    /* B hears that enterprise is active and threatened on A, gates free and sheds it. */
    bool heard = H_WAIT(cap(&b, "enterprise", "fleetActive") == 1 &&
                            cap(&b, "enterprise", "fleetThreatened") == 1,
                        20000);
    bool gated = H_WAIT(cap(&b, "free", "gated") == 1, 20000);
    bool shed = H_WAIT(atomic_load(&storm.shed) > 0 && cap(&b, "free", "limit") < 5, 20000);
    load_stop(&storm);
    load_stop(&ent);
    assert_true(heard);
    assert_true(gated);
    assert_true(shed);
    /* B served no enterprise request: all it knew came from A. */
    assert_int_equal(h_metric(b.base, "enterprise", "capacity", "admitted"), 0);
    assert_true(cap(&b, "free", "shed") > 0);
    assert_int_equal(atomic_load(&storm.other), 0); /* sheds, and nothing else refused */
    assert_true(atomic_load(&ent.ok) > 0);
    assert_int_equal(atomic_load(&ent.other) + atomic_load(&ent.shed), 0);
    assert_true(h_prom(b.base, "bulkhead_fleet_instances", NULL) == 1);
    assert_true(h_prom(b.base, "bulkhead_fleet_up", NULL) == 1);
}

static void the_lost_medium_falls_back_to_local_control_and_rejoins(void **state)
{
    (void)state;
    load_start(&ent);
    load_start(&storm);
    bool gated = H_WAIT(cap(&b, "free", "gated") == 1, 20000);

    /* Another session locks the table: every exchange waits out its deadline and fails. */
    PGconn *lock = PQconnectdb(db_url);
    PGresult *res = PQexec(lock, "BEGIN; LOCK TABLE bulkhead_fleet IN ACCESS EXCLUSIVE MODE");
    bool locked = PQresultStatus(res) == PGRES_COMMAND_OK;
    PQclear(res);
    bool down = H_WAIT(h_server_log_has(&b, "fleet_medium_down") &&
                           h_prom(b.base, "bulkhead_fleet_up", NULL) == 0,
                       20000);
    bool local =
        H_WAIT(cap(&b, "free", "gated") == 0 && cap(&b, "enterprise", "fleetActive") == 0, 20000);
    long ok_before = atomic_load(&storm.ok);
    bool served = H_WAIT(atomic_load(&storm.ok) > ok_before + 20, 20000);

    res = PQexec(lock, "COMMIT");
    PQclear(res);
    PQfinish(lock);
    bool back =
        H_WAIT(h_server_log_has(&b, "fleet_medium_up") &&
                   h_prom(b.base, "bulkhead_fleet_up", NULL) == 1 && cap(&b, "free", "gated") == 1,
               20000);
    load_stop(&storm);
    load_stop(&ent);
    assert_true(gated);
    assert_true(locked);
    assert_true(down);
    assert_true(local);
    assert_true(served);
    assert_true(back);
    assert_int_equal(atomic_load(&storm.other), 0);
    assert_true(h_prom(b.base, "bulkhead_fleet_failures_total", NULL) >= 1);
}

/* ---- fleet budgets ---------------------------------------------------------------------- */

/* pro.budget.field of srv, a bool as 0/1 (INT64_MIN: no answer). */
static int64_t bud(const struct h_server *srv, const char *field)
{
    json_t *sec = h_metric_section(srv->base, "pro", "budget");
    json_t *f = json_object_get(sec, field);
    int64_t v = json_is_integer(f)   ? (int64_t)json_integer_value(f)
                : json_is_boolean(f) ? json_is_true(f)
                                     : INT64_MIN;
    json_decref(sec);
    return v;
}

/* srv holds workers and conns of pro's totals, leased, shared by instances. */
static bool holds(const struct h_server *srv, int64_t workers, int64_t conns, int64_t instances)
{
    json_t *sec = h_metric_section(srv->base, "pro", "budget");
    bool ok = sec && json_integer_value(json_object_get(sec, "workers")) == workers &&
              json_integer_value(json_object_get(sec, "connections")) == conns &&
              json_integer_value(json_object_get(sec, "instances")) == instances &&
              json_is_true(json_object_get(sec, "leased"));
    json_decref(sec);
    return ok;
}

/* pro's claims in the live rows of the table, summed (one statement: one instant). */
static int64_t claims(const char *field)
{
    char sql[400];
    snprintf(sql, sizeof(sql),
             "SELECT coalesce(sum((t->>'%s')::int), 0) FROM bulkhead_fleet, "
             "jsonb_array_elements(state->'tiers') t WHERE t->>'name' = 'pro' "
             "AND seen > now() - interval '1 second'",
             field);
    return h_sql_int(db_url, sql);
}

/* Whether srv's /metrics has this exact line (h_prom reads one label; these series have two). */
static bool prom_has(const struct h_server *srv, const char *line)
{
    struct h_resp r;
    bool has = h_get(h_url(srv, "/metrics"), NULL, &r) == 0 && r.status == 200 && r.body &&
               strstr(r.body, line);
    h_resp_free(&r);
    return has;
}

static void two_instances_split_a_fleet_budget_within_its_total(void **state)
{
    (void)state;
    /* idle: 20 - 3 x 2 = 14 spare workers split evenly, 2 + 7 each; 10 - 3 x 1 = 7 spare
     * connections, 1 + 3 each */
    bool split = H_WAIT(holds(&a, 9, 4, 2) && holds(&b, 9, 4, 2), 20000);
    printf("# pro on a: %lld workers, %lld connections; on b: %lld, %lld (of 20 and 10)\n",
           (long long)bud(&a, "workers"), (long long)bud(&a, "connections"),
           (long long)bud(&b, "workers"), (long long)bud(&b, "connections"));
    assert_true(split);
    /* the pools themselves have them */
    assert_int_equal(h_metric(a.base, "pro", "threadPool", "poolSize"), 9);
    assert_int_equal(h_metric(a.base, "pro", "connectionPool", "max"), 4);
    assert_int_equal(bud(&a, "fleetWorkers"), 20);
    assert_int_equal(bud(&a, "fleetConnections"), 10);
    char scope[16];
    assert_string_equal(h_metric_text(a.base, "pro", "budget", "scope", scope, sizeof(scope)),
                        "fleet");
    assert_string_equal(h_metric_text(a.base, "free", "budget", "scope", scope, sizeof(scope)),
                        "instance");
    assert_int_equal(h_metric(a.base, "free", "budget", "instances"), 1);
    /* the claims as the table has them, at one instant: the total less a newcomer's minimum */
    assert_true(claims("claim_workers") <= 18);
    assert_true(claims("claim_conns") <= 9);
    assert_true(prom_has(&a, "bulkhead_fleet_budget_share{tier=\"pro\",resource=\"workers\"} 9\n"));
    assert_true(prom_has(&a, "bulkhead_fleet_budget{tier=\"pro\",resource=\"connections\"} 10\n"));
    assert_true(h_prom(a.base, "bulkhead_fleet_budget_instances", "tier=\"pro\"") == 2);
}

static void a_new_instance_has_its_minimum_at_once_and_its_share_after(void **state)
{
    (void)state;
    /* The table locked: no exchange can happen, so what c has is what it took by itself. */
    PGconn *lock = PQconnectdb(db_url);
    PGresult *res = PQexec(lock, "BEGIN; LOCK TABLE bulkhead_fleet IN ACCESS EXCLUSIVE MODE");
    bool locked = PQresultStatus(res) == PGRES_COMMAND_OK;
    PQclear(res);
    int64_t t0 = h_now_ms();
    int started = start_instance(&c);
    int64_t w = bud(&c, "workers"), n = bud(&c, "connections");
    int64_t leased = bud(&c, "leased");
    /* a and b cannot renew their leases either: their shares fall to the minimum */
    bool fell = H_WAIT(bud(&a, "workers") == 2 && bud(&b, "workers") == 2 &&
                           bud(&a, "connections") == 1 && bud(&a, "leased") == 0,
                       20000);
    int64_t fell_ms = h_now_ms() - t0;
    res = PQexec(lock, "COMMIT");
    PQclear(res);
    PQfinish(lock);
    assert_true(locked);
    assert_int_equal(started, 0);
    printf("# a new instance before any exchange: %lld workers, %lld connections\n", (long long)w,
           (long long)n);
    assert_int_equal(w, 2);
    assert_int_equal(n, 1);
    assert_int_equal(leased, 0);
    printf("# the table locked: a and b at their minimums %lld ms later (leases valid 950 ms)\n",
           (long long)fell_ms);
    assert_true(fell);
    /* three idle: 20 - 4 x 2 = 12 spare, 2 + 4 each; 10 - 4 = 6 spare, 1 + 2 each */
    bool split = H_WAIT(holds(&a, 6, 3, 3) && holds(&b, 6, 3, 3) && holds(&c, 6, 3, 3), 20000);
    assert_true(split);
    assert_true(claims("claim_workers") <= 18);
    assert_true(claims("claim_conns") <= 9);
}

static void a_killed_instances_share_returns_after_its_ttl(void **state)
{
    (void)state;
    assert_true(H_WAIT(holds(&c, 6, 3, 3), 20000));
    assert_int_equal(h_sql_int(db_url, "SELECT count(*) FROM bulkhead_fleet"), 3);
    int64_t t0 = h_now_ms();
    assert_int_equal(h_server_stop(&c, SIGKILL, 10000), 128 + SIGKILL);
    /* c's row stays (nobody deleted it) but stops counting after its ttl (1 s): a and b are
     * back at half of the spare each */
    bool back = H_WAIT(holds(&a, 9, 4, 2) && holds(&b, 9, 4, 2), 20000);
    int64_t rows = h_sql_int(db_url, "SELECT count(*) FROM bulkhead_fleet");
    printf("# SIGKILL to the share back on both others: %lld ms (ttl 1,000 ms, interval 50 ms)\n",
           (long long)(h_now_ms() - t0));
    assert_true(back);
    assert_int_equal(rows, 3);
    assert_true(claims("claim_workers") <= 18);
    /* the dead row would otherwise stay ten minutes: the last test counts rows */
    assert_int_equal(h_sql_exec(db_url, "DELETE FROM bulkhead_fleet WHERE seen < now() - "
                                        "interval '1 second'"),
                     0);
}

static void an_instance_that_stops_leaves_the_fleet_at_once(void **state)
{
    (void)state;
    assert_true(H_WAIT(h_prom(b.base, "bulkhead_fleet_instances", NULL) == 1, 10000));
    assert_int_equal(h_sql_int(db_url, "SELECT count(*) FROM bulkhead_fleet"), 2);
    assert_int_equal(h_server_stop(&a, SIGTERM, 30000), 0);
    a.pid = 0;
    /* its row is gone now, not a ttl later */
    assert_int_equal(h_sql_int(db_url, "SELECT count(*) FROM bulkhead_fleet"), 1);
    assert_true(H_WAIT(h_prom(b.base, "bulkhead_fleet_instances", NULL) == 0, 10000));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(a_storm_on_one_instance_is_cut_for_enterprise_on_another),
        cmocka_unit_test(the_lost_medium_falls_back_to_local_control_and_rejoins),
        cmocka_unit_test(two_instances_split_a_fleet_budget_within_its_total),
        cmocka_unit_test(a_new_instance_has_its_minimum_at_once_and_its_share_after),
        cmocka_unit_test(a_killed_instances_share_returns_after_its_ttl),
        cmocka_unit_test(an_instance_that_stops_leaves_the_fleet_at_once),
    };
    return cmocka_run_group_tests_name("fleet", tests, setup, teardown);
}
