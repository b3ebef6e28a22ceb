/*
 * test_report: the metrics snapshot and its three renderings (report.h), on a fake tier set
 * (real pools, breaker and limiter, no database) and on snapshots written by hand.
 *
 * Covered: report_read fills every tier from its parts and settings; /metrics/bulkheads has
 * every key the seed and the integration tests read, with the snapshot's numbers; /metrics is
 * valid exposition text (promtext's parser) with one family per name, every tier's series, the
 * tier="none" series and the optional Redis/API-key families only when those exist; the
 * dashboard's samples carry the same sections and keys plus the deprecated flat ones.
 */
#include "report.h"
#include "breaker.h"
#include "fakeset.h"
#include "log.h"
#include "../promtext.h"

#include <fcntl.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

static const char tiers_json[] =
    "{\"free\": {\"workers\": 3, \"queue_max\": 7, \"db_max\": 2, \"rate_limit\": 100},"
    " \"enterprise\": {\"workers\": 5, \"db_max\": 4}}";

static struct metrics_tier untiered;

static struct report_sources sources(struct tierset *ts)
{
    return (struct report_sources){.tiers = ts, .untiered = &untiered, .instance_id = "test"};
}

static json_t *get(json_t *root, const char *tier, const char *section, const char *key)
{
    json_t *t = json_object_get(root, tier);
    return json_object_get(section ? json_object_get(t, section) : t, key);
}

static void a_reading_has_every_tier_with_its_settings(void **state)
{
    (void)state;
    struct tierset *ts = fakeset_create(tiers_json, NULL);
    struct report_sources src = sources(ts);
    struct report_snap *s = calloc(1, sizeof(*s));
    report_read(&src, s);
    assert_int_equal(s->ntiers, 2);
    assert_string_equal(s->tier[0].name, "free");
    assert_int_equal(s->tier[0].wp.threads, 3);
    assert_int_equal(s->tier[0].db.max, 2);
    assert_int_equal(s->tier[0].cfg.rate_limit, 100);
    assert_string_equal(s->tier[0].rl_backend, "memory");
    assert_string_equal(s->tier[1].rl_backend, "none (unlimited)");
    assert_true(s->proc.healthy); /* no prober: nothing says otherwise */
    assert_string_equal(s->proc.instance_id, "test");
    free(s);
    fakeset_destroy(ts);
}

static void the_json_has_every_key_the_seed_and_the_tests_read(void **state)
{
    (void)state;
    struct tierset *ts = fakeset_create(tiers_json, NULL);
    struct report_sources src = sources(ts);
    struct report_snap *s = calloc(1, sizeof(*s));
    report_read(&src, s);
    char *text = report_json(s);
    json_t *root = json_loads(text, 0, NULL);
    assert_non_null(root);
    static const char *const keys[][2] = {
        {"connectionPool", "active"},
        {"connectionPool", "idle"},
        {"connectionPool", "pending"},
        {"connectionPool", "max"},
        {"threadPool", "active"},
        {"threadPool", "queued"},
        {"threadPool", "poolSize"},
        {"threadPool", "queueLimit"},
        {"threadPool", "completed"},
        {"threadPool", "rejected"},
        {"threadPool", "waitMs"},
        {"circuitBreaker", "state"},
        {"circuitBreaker", "failures"},
        {"circuitBreaker", "successes"},
        {"circuitBreaker", "timeouts"},
        {"circuitBreaker", "rejections"},
        {"circuitBreaker", "failureRate"},
        {"circuitBreaker", "lastChange"},
        {"circuitBreaker", "nextTrial"},
        {"rateLimiter", "limit"},
        {"rateLimiter", "windowSeconds"},
        {"rateLimiter", "allowed"},
        {"rateLimiter", "rejected"},
        {"rateLimiter", "keysTracked"},
        {"rateLimiter", "backend"},
        {"rateLimiter", "backendErrors"},
        {"fairness", "activeTenants"},
        {"fairness", "busiest"},
        {NULL, "requests"},
        {NULL, "latencyMs"},
    };
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
        if (!get(root, "enterprise", keys[i][0], keys[i][1]))
            fprintf(stderr, "missing %s.%s\n", keys[i][0], keys[i][1]);
        assert_non_null(get(root, "enterprise", keys[i][0], keys[i][1]));
    }
    assert_int_equal(json_integer_value(get(root, "free", "threadPool", "poolSize")), 3);
    assert_int_equal(json_integer_value(get(root, "free", "threadPool", "queueLimit")), 7);
    assert_int_equal(json_integer_value(get(root, "free", "rateLimiter", "limit")), 100);
    assert_true(json_is_null(get(root, "enterprise", "rateLimiter", "limit")));
    assert_string_equal(json_string_value(get(root, "free", "circuitBreaker", "state")), "CLOSED");
    assert_true(json_is_integer(json_object_get(get(root, "free", NULL, "requests"), "ok")));
    json_decref(root);
    free(text);
    free(s);
    fakeset_destroy(ts);
}

/* A snapshot of one tier "t" with distinct numbers, written by hand. */
static void handmade(struct report_snap *s)
{
    memset(s, 0, sizeof(*s));
    s->ntiers = 1;
    struct report_tier *t = &s->tier[0];
    t->name = "t";
    t->rl_backend = "memory";
    t->wp.busy = 7;
    t->wp.threads = 8;
    t->wp.queue_max = 9;
    t->db.active = 3;
    t->rl.rejected = 11;
    t->br.state = BREAKER_OPEN;
    t->br.timeouts = 5;
    t->outcomes[OUTCOME_RATE_LIMITED] = 11;
    t->total.counts[0] = 2;
    t->total.count = 2;
    s->proc.untiered_outcomes[OUTCOME_CLIENT_ERROR] = 4;
}

static void every_rendering_shows_the_snapshots_numbers(void **state)
{
    (void)state;
    struct report_snap *s = calloc(1, sizeof(*s));
    handmade(s);
    char *text = report_json(s);
    json_t *root = json_loads(text, 0, NULL);
    assert_int_equal(json_integer_value(get(root, "t", "threadPool", "active")), 7);
    assert_int_equal(json_integer_value(get(root, "t", "connectionPool", "active")), 3);
    assert_int_equal(json_integer_value(get(root, "t", "rateLimiter", "rejected")), 11);
    assert_int_equal(json_integer_value(get(root, "t", "circuitBreaker", "timeouts")), 5);
    assert_string_equal(json_string_value(get(root, "t", "circuitBreaker", "state")), "OPEN");
    json_decref(root);
    free(text);

    size_t len = 0;
    text = report_prometheus(s, &len);
    assert_int_equal(strlen(text), len);
    struct prom_doc d;
    char err[300] = "";
    int rc = prom_parse(text, &d, err, sizeof(err));
    if (rc)
        fprintf(stderr, "%s\n", err);
    assert_int_equal(rc, 0);
    assert_true(prom_value(&d, "bulkhead_workers_busy", 1, "tier", "t") == 7);
    assert_true(prom_value(&d, "bulkhead_db_connections_active", 1, "tier", "t") == 3);
    assert_true(prom_value(&d, "bulkhead_ratelimit_decisions_total", 2, "tier", "t", "result",
                           "rejected") == 11);
    assert_true(
        prom_value(&d, "bulkhead_breaker_calls_total", 2, "tier", "t", "result", "timeout") == 5);
    assert_true(prom_value(&d, "bulkhead_breaker_state", 2, "tier", "t", "state", "OPEN") == 1);
    assert_true(prom_value(&d, "bulkhead_breaker_state", 2, "tier", "t", "state", "CLOSED") == 0);
    assert_true(
        prom_value(&d, "bulkhead_requests_total", 2, "tier", "t", "outcome", "rate_limited") == 11);
    assert_true(prom_value(&d, "bulkhead_requests_total", 2, "tier", "none", "outcome",
                           "client_error") == 4);
    assert_true(prom_value(&d, "bulkhead_request_duration_seconds_count", 1, "tier", "t") == 2);
    prom_free(&d);
    free(text);
    free(s);
}

static void families_are_declared_once_and_optional_ones_only_when_present(void **state)
{
    (void)state;
    struct report_snap *s = calloc(1, sizeof(*s));
    handmade(s);
    size_t len;
    char *text = report_prometheus(s, &len);
    struct prom_doc d;
    char err[300] = "";
    assert_int_equal(prom_parse(text, &d, err, sizeof(err)), 0);
    for (size_t i = 0; i < d.nfam; i++) {
        assert_int_equal(d.fam[i].helps, 1);
        assert_int_equal(d.fam[i].types, 1);
        assert_true(d.fam[i].nsamples > 0);
    }
    assert_true(isnan(prom_value(&d, "bulkhead_ratelimit_backend_up", 0)));
    assert_true(isnan(prom_value(&d, "bulkhead_auth_keys", 0)));
    assert_true(prom_value(&d, "bulkhead_database_up", 0) == 0); /* proc left zeroed */
    prom_free(&d);
    free(text);

    s->proc.have_redis = true;
    s->proc.redis_up = 1;
    s->proc.have_auth = true;
    s->proc.auth_rejected = 6;
    text = report_prometheus(s, &len);
    assert_int_equal(prom_parse(text, &d, err, sizeof(err)), 0);
    assert_true(prom_value(&d, "bulkhead_ratelimit_backend_up", 0) == 1);
    assert_true(prom_value(&d, "bulkhead_auth_decisions_total", 1, "result", "rejected") == 6);
    prom_free(&d);
    free(text);
    free(s);
}

static void samples_carry_the_json_keys_and_the_deprecated_flat_ones(void **state)
{
    (void)state;
    struct report_snap *s = calloc(1, sizeof(*s));
    handmade(s);
    size_t n = report_sampled_count();
    assert_true(n > 0 && n <= REPORT_SAMPLED_MAX);
    uint64_t v[REPORT_SAMPLED_MAX];
    report_sample(&s->tier[0], v);
    json_t *o = json_object();
    report_sample_json(v, o);
    assert_int_equal(
        json_integer_value(json_object_get(json_object_get(o, "threadPool"), "queueLimit")), 9);
    assert_int_equal(json_integer_value(json_object_get(o, "queue_max")), 9);
    assert_int_equal(json_integer_value(json_object_get(o, "busy")), 7);
    assert_int_equal(json_integer_value(json_object_get(o, "db_active")), 3);
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(o, "circuitBreaker"), "state")), "OPEN");
    assert_string_equal(json_string_value(json_object_get(o, "breaker")), "OPEN");
    json_decref(o);
    free(s);
}

static int quiet(void **state)
{
    (void)state;
    log_setup(LOG_FORMAT_JSON, LOG_LEVEL_ERROR, false, open("/dev/null", O_WRONLY));
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(a_reading_has_every_tier_with_its_settings),
        cmocka_unit_test(the_json_has_every_key_the_seed_and_the_tests_read),
        cmocka_unit_test(every_rendering_shows_the_snapshots_numbers),
        cmocka_unit_test(families_are_declared_once_and_optional_ones_only_when_present),
        cmocka_unit_test(samples_carry_the_json_keys_and_the_deprecated_flat_ones),
    };
    return cmocka_run_group_tests(tests, quiet, NULL);
}
