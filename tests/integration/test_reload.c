/*
 * test_reload: SIGHUP re-reads TIERS_FILE and changes a running server (issue 8 item 6).
 * Proves: a raised rate limit admits more at once; workers 10 -> 2 and db_max 5 -> 1 show in
 * /metrics/bulkheads, requests in flight during the SIGHUP finish with 200, and once they are
 * done the tier never holds more than the new number of PostgreSQL connections (counted in
 * pg_stat_activity) nor runs more than the new number of requests at once; growing back works
 * live too; a broken or incompatible file is refused with the reason logged and the old
 * settings stay.
 *
 * Windows are an hour long, so admitted counts do not depend on the speed of the test.
 */
#include "harness.h"

#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

/* tiers_json: set by setup. No tarpit: a burst's refusals are answered at once (held, they
 * cost the suite 5 s a round). */
static struct h_suite suite = {.name = "reload", .env = {"TARPIT=false", NULL}};

static const char *count_free_conns =
    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND "
    "application_name = 'bulkhead-free'";

/* The tier table: free with the given numbers; pro and enterprise fixed. */
static void tiers_of(int rate_limit, int workers, int db_max, char *buf, size_t len)
{
    snprintf(buf, len,
             "{\"free\": {\"workers\": %d, \"db_max\": %d, \"rate_limit\": %d,"
             " \"rate_window_s\": 3600, \"queue_max\": 40, \"queue_timeout_ms\": 60000,"
             " \"db_acquire_timeout_ms\": 60000, \"breaker_timeout_ms\": 60000,"
             /* every worker and connection for one tenant: the pools' sizes are under test */
             " \"tenant_share_pct\": 100, \"tenant_queue_pct\": 100, \"tenant_reserve_pct\": 0},"
             " \"pro\": {\"workers\": 4, \"db_max\": 2, \"rate_limit\": 1000},"
             " \"enterprise\": {\"workers\": 4, \"db_max\": 2}}",
             workers, db_max, rate_limit);
}

/* Rewrite the server's tier file (before a SIGHUP). 0 or -1. */
static int write_tiers(int rate_limit, int workers, int db_max)
{
    char json[600];
    tiers_of(rate_limit, workers, db_max, json, sizeof(json));
    FILE *f = fopen(suite.tiers_path, "w");
    if (!f)
        return -1;
    fputs(json, f);
    return fclose(f) == 0 ? 0 : -1;
}

static int setup(void **state)
{
    (void)state;
    /* The start state; every test rewrites the file before its SIGHUP. */
    static char start[600];
    tiers_of(5, 10, 5, start, sizeof(start));
    suite.tiers_json = start;
    return h_suite_start(&suite);
}

static int teardown(void **state)
{
    (void)state;
    h_suite_stop(&suite);
    return 0;
}

/* free's section.field of /metrics/bulkheads. */
static long long metric(const char *section, const char *field)
{
    return h_metric(suite.srv.base, "free", section, field);
}

static int64_t free_conns(void)
{
    return h_sql_int(suite.db_url, count_free_conns);
}

#define RELOAD_OK  "\"level\":\"info\",\"type\":\"event\",\"event\":\"reload\""
#define RELOAD_BAD "\"level\":\"error\",\"type\":\"event\",\"event\":\"reload\""

/* SIGHUP and wait (bounded) for the reload's verdict in the log: true = accepted. */
static bool sighup(void)
{
    int ok0 = h_server_log_count(&suite.srv, RELOAD_OK);
    int bad0 = h_server_log_count(&suite.srv, RELOAD_BAD);
    assert_int_equal(kill(suite.srv.pid, SIGHUP), 0);
    assert_true(H_WAIT(h_server_log_count(&suite.srv, RELOAD_OK) > ok0 ||
                           h_server_log_count(&suite.srv, RELOAD_BAD) > bad0,
                       15000));
    return h_server_log_count(&suite.srv, RELOAD_OK) > ok0;
}

static int admitted_of(const char *tenant, int n)
{
    char u[200], ten[100];
    snprintf(u, sizeof(u), "%s/api/data?limit=1", suite.srv.base);
    snprintf(ten, sizeof(ten), "X-Tenant-Id: %s", tenant);
    const char *h[] = {"X-Tenant-Tier: free", ten, NULL};
    long st[128];
    assert_true(n <= 128);
    h_burst("GET", u, h, n, 4, st, NULL);
    return h_count(st, n, 200);
}

static void raised_rate_limit_admits_more_at_once(void **state)
{
    (void)state;
    int before = admitted_of("rl-before", 20);
    assert_int_equal(before, 5);
    assert_int_equal(write_tiers(50, 10, 5), 0);
    assert_true(sighup());
    assert_int_equal(metric("rateLimiter", "limit"), 50);
    int after = admitted_of("rl-after", 60);
    printf("# rate_limit 5 -> 50 by SIGHUP: %d of 20 admitted before, %d of 60 after\n", before,
           after);
    assert_int_equal(after, 50);
}

/* Concurrent slow requests, run from a thread while the test reloads. */
struct slow {
    int n;
    int delay_ms;
    int parallel;
    long status[32];
};

static void *slow_run(void *arg)
{
    struct slow *s = arg;
    char u[200];
    snprintf(u, sizeof(u), "%s/api/data?limit=1&delay_ms=%d", suite.srv.base, s->delay_ms);
    /* Many tenants, so no tenant share gets in the way. */
    const char *h[] = {"X-Tenant-Tier: free", NULL};
    h_burst("GET", u, h, s->n, s->parallel, s->status, NULL);
    return NULL;
}

/* Samples the tier's PostgreSQL connections and running requests until told to stop. */
struct sampler {
    atomic_bool stop;
    long long max_conns;  /* most bulkhead-free connections seen in pg_stat_activity */
    long long max_active; /* most requests running on free's workers at once */
    int samples;
};

static void *sampler_run(void *arg)
{
    struct sampler *s = arg;
    while (!atomic_load(&s->stop)) {
        long long c = free_conns();
        long long a = metric("threadPool", "active"); /* no cmocka asserts on this thread */
        if (c > s->max_conns)
            s->max_conns = c;
        if (a > s->max_active)
            s->max_active = a;
        s->samples++;
    }
    return NULL;
}

/* Load free with n slow requests while sampling; returns the sampler's maxima. */
static void load_and_sample(int n, int delay_ms, struct sampler *smp, long *statuses)
{
    struct slow s = {.n = n, .delay_ms = delay_ms, .parallel = n};
    atomic_init(&smp->stop, false);
    smp->max_conns = smp->max_active = 0;
    smp->samples = 0;
    pthread_t ts, tl;
    assert_int_equal(pthread_create(&ts, NULL, sampler_run, smp), 0);
    assert_int_equal(pthread_create(&tl, NULL, slow_run, &s), 0);
    pthread_join(tl, NULL);
    atomic_store(&smp->stop, true);
    pthread_join(ts, NULL);
    memcpy(statuses, s.status, sizeof(long) * (size_t)n);
}

static void pools_shrink_live_and_in_flight_requests_finish(void **state)
{
    (void)state;
    assert_int_equal(metric("threadPool", "poolSize"), 10);
    assert_int_equal(metric("connectionPool", "max"), 5);

    /* Six requests of 1.5 s: five hold all five connections, one waits for a connection. */
    struct slow s = {.n = 6, .delay_ms = 1500, .parallel = 6};
    pthread_t tl;
    assert_int_equal(pthread_create(&tl, NULL, slow_run, &s), 0);
    assert_true(H_WAIT(free_conns() >= 5, 20000));

    assert_int_equal(write_tiers(50, 2, 1), 0);
    assert_true(sighup());
    long long pool = metric("threadPool", "poolSize"), max = metric("connectionPool", "max");
    pthread_join(tl, NULL);
    int ok = h_count(s.status, 6, 200);
    printf("# SIGHUP with 6 requests in flight (5 connections open): poolSize 10 -> %lld, "
           "connectionPool.max 5 -> %lld; %d of 6 in-flight requests answered 200\n",
           pool, max, ok);
    assert_int_equal(pool, 2);
    assert_int_equal(max, 1);
    assert_int_equal(ok, 6);

    /* In-flight work is over: the surplus connections are closed... */
    assert_true(H_WAIT(free_conns() >= 0 && free_conns() <= 1, 20000));
    /* ...and new load never opens more than one, nor runs more than two requests at once. */
    struct sampler smp;
    long st[8];
    load_and_sample(8, 300, &smp, st);
    printf("# after the shrink, 8 concurrent requests: all %d answered 200; at most %lld "
           "connection(s) and %lld running request(s) seen in %d samples\n",
           h_count(st, 8, 200), smp.max_conns, smp.max_active, smp.samples);
    assert_int_equal(h_count(st, 8, 200), 8);
    assert_true(smp.samples > 0);
    assert_int_equal(smp.max_conns, 1);
    assert_true(smp.max_active >= 1 && smp.max_active <= 2);
}

static void pools_grow_back_live(void **state)
{
    (void)state;
    assert_int_equal(write_tiers(50, 12, 6), 0);
    assert_true(sighup());
    assert_int_equal(metric("threadPool", "poolSize"), 12);
    assert_int_equal(metric("connectionPool", "max"), 6);
    struct sampler smp;
    long st[12];
    load_and_sample(12, 1500, &smp, st);
    printf("# grown to 12 workers / 6 connections, 12 concurrent requests: %d answered 200; "
           "at most %lld connections and %lld running requests seen\n",
           h_count(st, 12, 200), smp.max_conns, smp.max_active);
    assert_int_equal(h_count(st, 12, 200), 12);
    assert_int_equal(smp.max_conns, 6);
    assert_true(smp.max_active > 2);
}

static void broken_or_incompatible_files_are_refused_and_nothing_changes(void **state)
{
    (void)state;
    struct {
        const char *json;
        const char *why;
    } bad[] = {
        {"{\"free\": {\"workers\": 0}, \"pro\": {}, \"enterprise\": {}}", "tiers.free.workers"},
        {"{\"free\": {\"rate_limit\": 7}, \"pro\": {}}", "cannot be added or removed"},
        {"{\"free\": {}, \"pro\": {}, \"gold\": {\"rate_limit\": 0}}", "tier gold is new"},
        {"{\"free\": ", "invalid JSON"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        FILE *f = fopen(suite.tiers_path, "w");
        assert_non_null(f);
        fputs(bad[i].json, f);
        fclose(f);
        assert_false(sighup());
        /* The refusal names the reason. */
        char needle[120];
        snprintf(needle, sizeof(needle), "%s", bad[i].why);
        assert_true(h_server_log_count(&suite.srv, needle) >= 1);
        assert_int_equal(metric("threadPool", "poolSize"), 12);
        assert_int_equal(metric("connectionPool", "max"), 6);
        assert_int_equal(metric("rateLimiter", "limit"), 50);
    }
    printf("# %zu bad files refused; poolSize 12, max 6, limit 50 kept\n",
           sizeof(bad) / sizeof(bad[0]));
    /* Still serving, with the old limit. */
    assert_int_equal(admitted_of("after-refusals", 3), 3);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(raised_rate_limit_admits_more_at_once),
        cmocka_unit_test(pools_shrink_live_and_in_flight_requests_finish),
        cmocka_unit_test(pools_grow_back_live),
        cmocka_unit_test(broken_or_incompatible_files_are_refused_and_nothing_changes),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
