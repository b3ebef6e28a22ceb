/*
 * test_fleet: the exchange of tier states between instances (fleet.h). The state JSON round
 * trips and a malformed row is refused, not guessed; against a real PostgreSQL (the shared
 * cluster of scripts/test.sh, in a database of this test's own), two exchanges on one database
 * see each other's tiers by name and never their own, an instance that stops takes its row with
 * it, a lost connection is a failure that the next interval recovers from, and an unreachable
 * database leaves the view empty (local control). Every wait is on the condition, bounded.
 *
 * Fleet budgets (issue 28 item 3): the share rule splits a total by demand above the minimums,
 * keeps one minimum free for a newcomer and never grants past what the others claim (a random
 * walk of exchanges among three instances never claims more than the total); a lease is valid
 * for its validity and is the minimum after (the clock injected); two exchanges on one
 * database split a total by demand, and when one stops the other takes it back.
 */
#include "fleet.h"
#include "mclock.h"

#include <errno.h>
#include <libpq-fe.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#define WAIT_US 10000000 /* the bound on every wait for a condition */

static char url[300];
static char admin_url[300];
static bool have_pg;

static void nap(void)
{
    nanosleep(&(struct timespec){.tv_nsec = 5000000}, NULL);
}

static struct fleet_tier tier(const char *name, bool active, bool threatened, bool pressing)
{
    struct fleet_tier t = {.active = active, .threatened = threatened, .pressing = pressing};
    snprintf(t.name, sizeof(t.name), "%s", name);
    t.usage = pressing ? 2.5 : 0;
    t.pressure = threatened ? 1.5 : 0;
    t.in_progress = active ? 3 : 0;
    t.shed = 7;
    return t;
}

static void the_state_json_round_trips(void **state)
{
    (void)state;
    struct fleet_tier in[2] = {tier("free", true, false, true), tier("enterprise", true, true, 0)};
    char *json = fleet_encode(in, 2);
    struct fleet_tier out[4];
    assert_int_equal(fleet_decode(json, out, 4), 2);
    free(json);
    assert_string_equal(out[0].name, "free");
    assert_true(out[0].active && !out[0].threatened && out[0].pressing);
    assert_true(out[0].usage > 2.49 && out[0].usage < 2.51);
    assert_int_equal(out[0].in_progress, 3);
    assert_int_equal(out[0].shed, 7);
    assert_string_equal(out[1].name, "enterprise");
    assert_true(out[1].active && out[1].threatened && !out[1].pressing);
    assert_true(out[1].pressure > 1.49 && out[1].pressure < 1.51);
    /* max bounds what is read */
    json = fleet_encode(in, 2);
    assert_int_equal(fleet_decode(json, out, 1), 1);
    free(json);
}

static void a_fleet_budget_travels_with_its_tier_and_nothing_else_does(void **state)
{
    (void)state;
    struct fleet_tier in[2] = {tier("free", true, false, true), tier("pro", true, false, false)};
    in[1].budget_workers = 20; /* local settings: never sent */
    in[1].min_workers = 2;
    in[1].held_workers = 9;
    in[1].demand = 4;
    in[1].claim_workers = 9;
    in[1].claim_conns = 3;
    char *json = fleet_encode(in, 2);
    assert_null(strstr(json, "held"));
    assert_null(strstr(json, "budget"));
    assert_null(strstr(json, "min_"));
    struct fleet_tier out[2];
    assert_int_equal(fleet_decode(json, out, 2), 2);
    free(json);
    assert_int_equal(out[0].claim_workers + out[0].claim_conns + out[0].demand, 0);
    assert_int_equal(out[1].demand, 4);
    assert_int_equal(out[1].claim_workers, 9);
    assert_int_equal(out[1].claim_conns, 3);
    assert_int_equal(out[1].budget_workers + out[1].held_workers + out[1].min_workers, 0);
    /* another instance's numbers are clamped: negatives are nothing, the huge are bounded */
    const char *odd = "{\"tiers\":[{\"name\":\"pro\",\"active\":true,\"threatened\":false,"
                      "\"pressing\":false,\"pressure\":0,\"usage\":0,\"in_progress\":0,"
                      "\"shed\":0,\"demand\":-3,\"claim_workers\":9223372036854775807,"
                      "\"claim_conns\":2}]}";
    assert_int_equal(fleet_decode(odd, out, 2), 1);
    assert_int_equal(out[0].demand, 0);
    assert_int_equal(out[0].claim_workers, 1000000000);
    assert_int_equal(out[0].claim_conns, 2);
}

static int64_t share(int64_t total, int64_t min, int64_t demand, int64_t others_demand,
                     int64_t others_claims, size_t others)
{
    const struct fleet_share_in in = {.total = total,
                                      .min = min,
                                      .demand = demand,
                                      .others_demand = others_demand,
                                      .others_claims = others_claims,
                                      .others = others};
    return fleet_share(&in);
}

static void the_share_rule_splits_by_demand_above_the_minimums(void **state)
{
    (void)state;
    /* alone: all but the newcomer's minimum, whatever its demand */
    assert_int_equal(share(20, 2, 0, 0, 0, 0), 18);
    assert_int_equal(share(20, 2, 7, 0, 0, 0), 18);
    /* two, demands 3 and 1: spare 20 - 3 x 2 = 14; 2 + 14 x 3/4 = 12 and 2 + 14 x 1/4 = 5 */
    assert_int_equal(share(20, 2, 3, 1, 0, 1), 12);
    assert_int_equal(share(20, 2, 1, 3, 12, 1), 5);
    /* nobody has demand: the spare split evenly */
    assert_int_equal(share(20, 2, 0, 0, 0, 1), 9);
    /* never past what the others claim (they shrink at their next exchange) */
    assert_int_equal(share(20, 2, 3, 1, 15, 1), 3);
    assert_int_equal(share(20, 2, 3, 1, 18, 1), 2); /* the minimum, whatever is left */
    /* more instances than minimums fit: each keeps its minimum */
    assert_int_equal(share(10, 2, 5, 20, 8, 4), 2);
    assert_int_equal(share(1, 1, 5, 0, 0, 0), 1);
}

/* Three instances take turns at random, with demands that change at random; each claims its
 * share (or more while a shrink drains, which the others must wait out). Whatever the order,
 * the claims and a newcomer's minimum never pass the total. */
static void random_exchanges_never_claim_more_than_the_total(void **state)
{
    (void)state;
    const int64_t total = 30, min = 3;
    int64_t claim[3] = {min, min, min}, demand[3] = {0, 0, 0};
    unsigned seed = 28;
    int64_t most = 0;
    for (int step = 0; step < 20000; step++) {
        int i = rand_r(&seed) % 3;
        demand[rand_r(&seed) % 3] = rand_r(&seed) % 50;
        int64_t od = 0, oc = 0;
        for (int j = 0; j < 3; j++)
            if (j != i) {
                od += demand[j];
                oc += claim[j];
            }
        int64_t s = share(total, min, demand[i], od, oc, 2);
        assert_true(s >= min);
        /* a shrink drains: the claim stays up to the old one for a turn or two */
        claim[i] = (rand_r(&seed) % 3 == 0 && claim[i] > s) ? claim[i] : s;
        int64_t sum = claim[0] + claim[1] + claim[2];
        if (sum + min > total)
            fail_msg("step %d: claims %lld + %lld + %lld and a newcomer's %lld pass %lld", step,
                     (long long)claim[0], (long long)claim[1], (long long)claim[2], (long long)min,
                     (long long)total);
        if (claim[i] > most)
            most = claim[i];
    }
    assert_true(most > total / 2); /* demand moved the shares, not only the minimums */
}

static void a_lease_is_valid_for_its_time_and_the_minimum_after(void **state)
{
    (void)state;
    struct fleet_tier t = tier("pro", true, false, false);
    t.budget_workers = 20;
    t.budget_conns = 10;
    t.min_workers = 2;
    t.min_conns = 1;
    const int64_t valid = 750000;
    /* no lease yet (a new instance): the minimum at once */
    struct fleet_lease none = {0};
    struct fleet_lease l = fleet_lease_at(&none, &t, 5000000, valid);
    assert_int_equal(l.workers, 2);
    assert_int_equal(l.conns, 1);
    assert_int_equal(l.instances, 1);
    const struct fleet_lease granted = {
        .workers = 12, .conns = 6, .instances = 2, .granted_us = 1000000};
    l = fleet_lease_at(&granted, &t, 1000000 + valid, valid);
    assert_int_equal(l.workers, 12);
    assert_int_equal(l.conns, 6);
    assert_int_equal(l.instances, 2);
    l = fleet_lease_at(&granted, &t, 1000000 + valid + 1, valid);
    assert_int_equal(l.workers, 2);
    assert_int_equal(l.conns, 1);
    assert_int_equal(l.instances, 1);
    /* a tier whose budget is per instance has no lease */
    t.budget_workers = 0;
    l = fleet_lease_at(&granted, &t, 1000000, valid);
    assert_int_equal(l.workers + l.conns + (int64_t)l.instances, 0);
}

static void a_malformed_row_is_refused_and_a_malformed_tier_skipped(void **state)
{
    (void)state;
    struct fleet_tier out[4];
    assert_int_equal(fleet_decode("not json", out, 4), -EINVAL);
    assert_int_equal(fleet_decode("{\"v\":1}", out, 4), -EINVAL);
    assert_int_equal(fleet_decode("{\"tiers\":{}}", out, 4), -EINVAL);
    /* a tier without its fields, one with a name too long, one with an empty name: skipped */
    const char *json =
        "{\"tiers\":[{\"name\":\"free\"},"
        "{\"name\":\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\",\"active\":true,"
        "\"threatened\":false,\"pressing\":false,\"pressure\":0,\"usage\":0,\"in_progress\":0,"
        "\"shed\":0},"
        "{\"name\":\"\",\"active\":true,\"threatened\":false,\"pressing\":false,\"pressure\":0,"
        "\"usage\":0,"
        "\"in_progress\":0,\"shed\":0},"
        "{\"name\":\"pro\",\"active\":true,\"threatened\":false,\"pressing\":false,"
        "\"pressure\":0,\"usage\":-1,"
        "\"in_progress\":-5,\"shed\":2}]}";
    assert_int_equal(fleet_decode(json, out, 4), 1);
    assert_string_equal(out[0].name, "pro");
    assert_true(out[0].usage == 0 && out[0].in_progress == 0); /* negatives are nothing */
}

static struct fleet *start(const char *conninfo, const char *id)
{
    const struct fleet_cfg cfg = {
        .conninfo = conninfo, .instance_id = id, .interval_us = 20000, .ttl_us = 1000000};
    struct fleet *f = NULL;
    assert_int_equal(fleet_start(&cfg, &f), 0);
    return f;
}

static const char *const names[] = {"free", "pro", "enterprise"};

/* Wait until f's view of the three tiers satisfies ok; the view is left in out. */
static bool wait_view(struct fleet *f, struct fleet_sum out[3],
                      bool (*ok)(const struct fleet_sum *s, bool live))
{
    int64_t end = mclock_now_us() + WAIT_US;
    for (;;) {
        bool live = fleet_view(f, names, 3, out);
        if (ok(out, live))
            return true;
        if (mclock_now_us() > end)
            return false;
        nap();
    }
}

static bool sees_enterprise_threatened(const struct fleet_sum *s, bool live)
{
    return live && s[2].active == 1 && s[2].threatened == 1 && s[0].pressing == 1;
}

static bool sees_nothing_live(const struct fleet_sum *s, bool live)
{
    return live && !s[0].active && !s[2].active;
}

/* Rows of the table for one instance. */
static int count_rows(const char *instance)
{
    PGconn *pg = PQconnectdb(url);
    const char *v[] = {instance};
    PGresult *res = PQexecParams(pg, "SELECT count(*) FROM bulkhead_fleet WHERE instance = $1", 1,
                                 NULL, v, NULL, NULL, 0);
    int n = PQresultStatus(res) == PGRES_TUPLES_OK ? atoi(PQgetvalue(res, 0, 0)) : -1;
    PQclear(res);
    PQfinish(pg);
    return n;
}

static void two_instances_see_each_others_tiers_never_their_own(void **state)
{
    (void)state;
    if (!have_pg)
        skip();
    struct fleet *a = start(url, "a-two");
    struct fleet *b = start(url, "b-two");
    struct fleet_tier ta[2] = {tier("free", true, false, true), tier("enterprise", true, true, 0)};
    fleet_publish(a, ta, 2);
    struct fleet_tier tb[1] = {tier("free", true, false, false)};
    fleet_publish(b, tb, 1);

    struct fleet_sum sb[3];
    assert_true(wait_view(b, sb, sees_enterprise_threatened));
    assert_int_equal(sb[0].active, 1); /* a's free */
    assert_int_equal(sb[1].active, 0); /* nobody publishes pro */
    assert_int_equal(sb[2].in_progress, 3);
    assert_true(sb[2].pressure > 1.49 && sb[2].pressure < 1.51);
    struct fleet_sum sa[3];
    int64_t end = mclock_now_us() + WAIT_US;
    while (!(fleet_view(a, names, 3, sa) && sa[0].active == 1) && mclock_now_us() < end)
        nap();
    assert_int_equal(sa[0].active, 1); /* b's free only: its own is not counted */
    assert_int_equal(sa[0].pressing, 0);
    assert_int_equal(sa[2].active, 0); /* a's own enterprise is not in its view */
    struct fleet_stats st;
    fleet_stats(a, &st);
    assert_true(st.up);
    assert_int_equal(st.instances, 1);
    assert_true(st.exchanges > 0);

    /* a changes its mind: b follows at a later exchange */
    ta[1].threatened = false;
    fleet_publish(a, ta, 2);
    end = mclock_now_us() + WAIT_US;
    while (!(fleet_view(b, names, 3, sb) && sb[2].threatened == 0) && mclock_now_us() < end)
        nap();
    assert_int_equal(sb[2].threatened, 0);
    assert_int_equal(sb[2].active, 1);

    /* a stops: its row goes with it at once (not a ttl later), b sees nobody (and its view
     * is still live) */
    fleet_stop(a);
    assert_int_equal(count_rows("a-two"), 0);
    assert_int_equal(count_rows("b-two"), 1);
    assert_true(wait_view(b, sb, sees_nothing_live));
    fleet_stats(b, &st);
    assert_int_equal(st.instances, 0);
    fleet_stop(b);
}

/* pro with a fleet budget of 20 workers and 10 connections (minimums 2 and 1), held: the
 * lease granted so far (as the server's pools would have it). */
static struct fleet_tier budget_tier(int64_t demand, const struct fleet_lease *held)
{
    struct fleet_tier t = tier("pro", true, false, false);
    t.budget_workers = 20;
    t.budget_conns = 10;
    t.min_workers = 2;
    t.min_conns = 1;
    t.demand = demand;
    t.held_workers = held->workers ? held->workers : 2;
    t.held_conns = held->conns ? held->conns : 1;
    return t;
}

/* Publish f's pro (demand) with what it holds, until its lease has instances and the
 * predicate holds; the lease is left in *l. */
static bool wait_lease(struct fleet *f, int64_t demand, size_t instances, struct fleet_lease *l)
{
    const char *const pro[] = {"pro"};
    int64_t end = mclock_now_us() + WAIT_US;
    for (;;) {
        struct fleet_tier t = budget_tier(demand, l);
        fleet_publish(f, &t, 1);
        fleet_leases(f, pro, 1, l);
        if (l->granted_us > 0 && l->instances == instances)
            return true;
        if (mclock_now_us() > end)
            return false;
        nap();
    }
}

static void two_exchanges_split_a_fleet_budget_and_the_survivor_takes_it_back(void **state)
{
    (void)state;
    if (!have_pg)
        skip();
    struct fleet *a = start(url, "a-budget");
    struct fleet *b = start(url, "b-budget");
    struct fleet_lease la = {0}, lb = {0};
    /* a new instance has its minimum before any exchange */
    const char *const pro[] = {"pro"};
    struct fleet_tier t = budget_tier(3, &la);
    fleet_publish(a, &t, 1);
    fleet_leases(a, pro, 1, &la);
    assert_int_equal(la.workers, 2);
    assert_int_equal(la.conns, 1);
    assert_int_equal(la.granted_us, 0);
    t = budget_tier(1, &lb);
    fleet_publish(b, &t, 1);
    /* demands 3 and 1: after both have exchanged twice, 12 and 5 workers of 20 */
    bool both = wait_lease(a, 3, 2, &la) && wait_lease(b, 1, 2, &lb);
    assert_true(both);
    int64_t end = mclock_now_us() + WAIT_US;
    while (!(la.workers == 12 && lb.workers == 5) && mclock_now_us() < end) {
        assert_true(wait_lease(a, 3, 2, &la) && wait_lease(b, 1, 2, &lb));
        assert_true(la.workers + lb.workers + 2 <= 20); /* and a newcomer's minimum */
        assert_true(la.conns + lb.conns + 1 <= 10);
    }
    printf("# shares of 20 workers for demands 3 and 1: %lld and %lld; of 10 connections: %lld "
           "and %lld\n",
           (long long)la.workers, (long long)lb.workers, (long long)la.conns, (long long)lb.conns);
    assert_int_equal(la.workers, 12);
    assert_int_equal(lb.workers, 5);
    assert_true(la.conns + lb.conns + 1 <= 10);
    assert_true(la.conns > lb.conns);
    /* b stops: a is alone at its next exchange and takes all but a newcomer's minimum */
    fleet_stop(b);
    assert_true(wait_lease(a, 3, 1, &la));
    end = mclock_now_us() + WAIT_US;
    while (la.workers != 18 && mclock_now_us() < end)
        assert_true(wait_lease(a, 3, 1, &la));
    assert_int_equal(la.workers, 18);
    assert_int_equal(la.conns, 9);
    fleet_stop(a);
}

static int terminate_fleet_backends(void)
{
    PGconn *pg = PQconnectdb(url);
    PGresult *res = PQexec(pg, "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                               "WHERE application_name = 'bulkhead-fleet' "
                               "AND datname = current_database()");
    int n = PQresultStatus(res) == PGRES_TUPLES_OK ? atoi(PQgetvalue(res, 0, 0)) : -1;
    PQclear(res);
    PQfinish(pg);
    return n;
}

static void a_lost_connection_fails_once_and_the_next_interval_reconnects(void **state)
{
    (void)state;
    if (!have_pg)
        skip();
    struct fleet *a = start(url, "a-lost");
    struct fleet *b = start(url, "b-lost");
    struct fleet_tier ta[1] = {tier("enterprise", true, true, false)};
    fleet_publish(a, ta, 1);
    struct fleet_sum sb[3];
    int64_t end = mclock_now_us() + WAIT_US;
    while (!(fleet_view(b, names, 3, sb) && sb[2].active == 1) && mclock_now_us() < end)
        nap();
    assert_int_equal(sb[2].active, 1);

    /* at least these two (a backend of the test before may still be on its way out) */
    assert_true(terminate_fleet_backends() >= 2);
    struct fleet_stats st;
    end = mclock_now_us() + WAIT_US;
    do {
        fleet_stats(b, &st);
        if (st.failures > 0)
            break;
        nap();
    } while (mclock_now_us() < end);
    assert_true(st.failures >= 1);
    /* and back: a fresh exchange after the failure sees a again */
    uint64_t after = st.exchanges;
    end = mclock_now_us() + WAIT_US;
    do {
        fleet_stats(b, &st);
        nap();
    } while (!(st.up && st.exchanges > after + 1) && mclock_now_us() < end);
    assert_true(st.up);
    assert_true(fleet_view(b, names, 3, sb));
    assert_int_equal(sb[2].active, 1);
    fleet_stop(a);
    fleet_stop(b);
}

static void an_unreachable_database_leaves_an_empty_view(void **state)
{
    (void)state;
    /* port 1: nothing listens there, the connect is refused at once */
    struct fleet *f = start("postgresql://postgres@127.0.0.1:1/none?connect_timeout=1", "alone");
    struct fleet_tier t[1] = {tier("free", true, false, true)};
    fleet_publish(f, t, 1);
    struct fleet_stats st;
    int64_t end = mclock_now_us() + WAIT_US;
    do {
        fleet_stats(f, &st);
        nap();
    } while (st.failures < 2 && mclock_now_us() < end);
    assert_true(st.failures >= 2);
    assert_false(st.up);
    struct fleet_sum s[3];
    assert_false(fleet_view(f, names, 3, s));
    for (int i = 0; i < 3; i++)
        assert_int_equal(s[i].active + s[i].threatened + s[i].pressing, 0);
    fleet_stop(f);
}

static void bad_settings_are_refused(void **state)
{
    (void)state;
    struct fleet *f = NULL;
    struct fleet_cfg cfg = {.conninfo = "x", .instance_id = "i", .interval_us = 0, .ttl_us = 1};
    assert_int_equal(fleet_start(&cfg, &f), -EINVAL);
    cfg.interval_us = 1000;
    cfg.ttl_us = 999; /* a ttl shorter than one interval would never see anybody */
    assert_int_equal(fleet_start(&cfg, &f), -EINVAL);
    cfg.ttl_us = 1000;
    cfg.instance_id = NULL;
    assert_int_equal(fleet_start(&cfg, &f), -EINVAL);
}

static int exec_admin(const char *sql)
{
    PGconn *pg = PQconnectdb(admin_url);
    PGresult *res = PQexec(pg, sql);
    int rc = PQresultStatus(res) == PGRES_COMMAND_OK ? 0 : -1;
    if (rc)
        fprintf(stderr, "%s: %s", sql, PQerrorMessage(pg));
    PQclear(res);
    PQfinish(pg);
    return rc;
}

static char db[100];

static int group_setup(void **state)
{
    (void)state;
    const char *port = getenv("BH_TEST_PG_PORT");
    if (!port || !*port)
        return 0; /* the database tests skip */
    const char *prefix = getenv("BH_TEST_DB_PREFIX");
    snprintf(db, sizeof(db), "%sfleet_unit", prefix ? prefix : "");
    snprintf(admin_url, sizeof(admin_url), "postgresql://postgres@127.0.0.1:%s/postgres", port);
    snprintf(url, sizeof(url), "postgresql://postgres@127.0.0.1:%s/%s", port, db);
    char sql[200];
    snprintf(sql, sizeof(sql), "DROP DATABASE IF EXISTS \"%s\" WITH (FORCE)", db);
    if (exec_admin(sql))
        return -1;
    snprintf(sql, sizeof(sql), "CREATE DATABASE \"%s\"", db);
    if (exec_admin(sql))
        return -1;
    have_pg = true;
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    if (have_pg) {
        char sql[200];
        snprintf(sql, sizeof(sql), "DROP DATABASE IF EXISTS \"%s\" WITH (FORCE)", db);
        (void)exec_admin(sql);
    }
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(the_state_json_round_trips),
        cmocka_unit_test(a_malformed_row_is_refused_and_a_malformed_tier_skipped),
        cmocka_unit_test(a_fleet_budget_travels_with_its_tier_and_nothing_else_does),
        cmocka_unit_test(the_share_rule_splits_by_demand_above_the_minimums),
        cmocka_unit_test(random_exchanges_never_claim_more_than_the_total),
        cmocka_unit_test(a_lease_is_valid_for_its_time_and_the_minimum_after),
        cmocka_unit_test(bad_settings_are_refused),
        cmocka_unit_test(two_instances_see_each_others_tiers_never_their_own),
        cmocka_unit_test(a_lost_connection_fails_once_and_the_next_interval_reconnects),
        cmocka_unit_test(an_unreachable_database_leaves_an_empty_view),
        cmocka_unit_test(two_exchanges_split_a_fleet_budget_and_the_survivor_takes_it_back),
    };
    return cmocka_run_group_tests_name("fleet", tests, group_setup, group_teardown);
}
