/*
 * test_history: the dashboard's ring of samples (history.h), fed snapshots written by hand.
 *
 * Covered: a sample counts the requests of its own interval (not the totals) and the latency
 * quantiles of that interval; a poll gets only samples newer than the one it names; the ring
 * keeps the last HISTORY_SAMPLES; the document's keys are those of /metrics/bulkheads, and the
 * deprecated snake_case keys still carry the same values; the server's fleet medium is null
 * without FLEET, and says why while it is not up.
 */
#include "history.h"
#include "report.h"
#include "tiers.h"
#include "tierset.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

struct fixture {
    struct tierset *ts;
    struct history *h;
    struct report_snap *s; /* the next reading: tiers "free" and "pro" */
};

static int setup(void **state)
{
    static const char json[] = "{\"free\": {}, \"pro\": {}}";
    struct fixture *f = calloc(1, sizeof(*f));
    struct tier_table t;
    char err[200];
    if (tiers_parse(json, strlen(json), &t, err, sizeof(err)) || tierset_create(&t, &f->ts))
        return -1;
    f->h = history_create(f->ts);
    f->s = calloc(1, sizeof(*f->s));
    f->s->ntiers = 2;
    f->s->tier[0].name = "free";
    f->s->tier[1].name = "pro";
    f->s->proc.instance_id = "abc";
    f->s->proc.healthy = true;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    history_destroy(f->h);
    tierset_destroy(f->ts);
    free(f->s);
    free(f);
    return 0;
}

static json_t *poll_since(struct fixture *f, int64_t since)
{
    char *text = history_json(f->h, &f->s->proc, since);
    json_t *doc = json_loads(text, 0, NULL);
    free(text);
    assert_non_null(doc);
    return doc;
}

static json_t *sample_tier(json_t *doc, size_t i, const char *tier)
{
    return json_object_get(
        json_object_get(json_array_get(json_object_get(doc, "samples"), i), "tiers"), tier);
}

static json_int_t outcome(json_t *tier, const char *name)
{
    return json_integer_value(json_object_get(json_object_get(tier, "outcomes"), name));
}

static void each_sample_counts_the_requests_of_its_interval(void **state)
{
    struct fixture *f = *state;
    f->s->tier[0].outcomes[OUTCOME_OK] = 5;
    history_record(f->h, f->s);
    f->s->tier[0].outcomes[OUTCOME_OK] = 8;
    f->s->tier[0].outcomes[OUTCOME_RATE_LIMITED] = 2;
    history_record(f->h, f->s);
    json_t *doc = poll_since(f, 0);
    assert_int_equal(json_integer_value(json_object_get(doc, "last")), 2);
    assert_int_equal(outcome(sample_tier(doc, 0, "free"), "ok"), 5);
    assert_int_equal(outcome(sample_tier(doc, 1, "free"), "ok"), 3);
    assert_int_equal(outcome(sample_tier(doc, 1, "free"), "rate_limited"), 2);
    assert_int_equal(outcome(sample_tier(doc, 1, "pro"), "ok"), 0);
    json_decref(doc);
}

static void latency_quantiles_are_those_of_the_interval(void **state)
{
    struct fixture *f = *state;
    struct metrics_hist_snap *h = &f->s->tier[1].total;
    h->counts[0] = 100; /* <= 100 us */
    h->count = 100;
    history_record(f->h, f->s);
    h->counts[10] = 10; /* then 10 in (100 ms, 250 ms] */
    h->count = 110;
    history_record(f->h, f->s);
    json_t *doc = poll_since(f, 0);
    json_t *lat0 = json_object_get(sample_tier(doc, 0, "pro"), "latencyMs");
    json_t *lat1 = json_object_get(sample_tier(doc, 1, "pro"), "latencyMs");
    assert_true(json_real_value(json_object_get(lat0, "p99")) <= 0.1);
    double p50 = json_real_value(json_object_get(lat1, "p50"));
    assert_true(p50 > 100.0 && p50 <= 250.0); /* the interval saw only the slow ones */
    assert_true(json_real_value(json_object_get(sample_tier(doc, 1, "pro"), "p50_ms")) == p50);
    json_decref(doc);
}

static void a_poll_gets_only_newer_samples(void **state)
{
    struct fixture *f = *state;
    for (int i = 0; i < 3; i++)
        history_record(f->h, f->s);
    json_t *doc = poll_since(f, 2);
    json_t *samples = json_object_get(doc, "samples");
    assert_int_equal(json_array_size(samples), 1);
    assert_int_equal(json_integer_value(json_object_get(json_array_get(samples, 0), "seq")), 3);
    json_decref(doc);
    doc = poll_since(f, 3);
    assert_int_equal(json_array_size(json_object_get(doc, "samples")), 0);
    assert_int_equal(json_integer_value(json_object_get(doc, "last")), 3);
    json_decref(doc);
}

static void the_ring_keeps_the_last_samples(void **state)
{
    struct fixture *f = *state;
    for (int i = 0; i < HISTORY_SAMPLES + 10; i++)
        history_record(f->h, f->s);
    json_t *doc = poll_since(f, 0);
    json_t *samples = json_object_get(doc, "samples");
    assert_int_equal(json_array_size(samples), HISTORY_SAMPLES);
    assert_int_equal(json_integer_value(json_object_get(json_array_get(samples, 0), "seq")), 11);
    json_decref(doc);
}

static void keys_are_the_metrics_ones_and_the_deprecated_ones_agree(void **state)
{
    struct fixture *f = *state;
    f->s->tier[0].wp.queue_max = 20;
    f->s->tier[0].db.active = 4;
    f->s->tier[0].br.state = BREAKER_HALF_OPEN;
    f->s->proc.started_wall_us = 5000000;
    f->s->proc.in_flight = 3;
    history_record(f->h, f->s);
    json_t *doc = poll_since(f, 0);
    json_t *server = json_object_get(doc, "server");
    assert_int_equal(json_integer_value(json_object_get(server, "startedMs")), 5000);
    assert_int_equal(json_integer_value(json_object_get(server, "started_ms")), 5000);
    assert_int_equal(json_integer_value(json_object_get(server, "inFlight")), 3);
    assert_int_equal(json_integer_value(json_object_get(server, "in_flight")), 3);
    assert_string_equal(json_string_value(json_object_get(server, "instance")), "abc");
    assert_int_equal(json_integer_value(json_object_get(doc, "intervalMs")), HISTORY_INTERVAL_MS);
    assert_int_equal(json_integer_value(json_object_get(doc, "interval_ms")), HISTORY_INTERVAL_MS);
    json_t *tiers = json_object_get(doc, "tiers");
    assert_string_equal(json_string_value(json_array_get(tiers, 1)), "pro");
    json_t *free_tier = sample_tier(doc, 0, "free");
    assert_int_equal(
        json_integer_value(json_object_get(json_object_get(free_tier, "threadPool"), "queueLimit")),
        20);
    assert_int_equal(json_integer_value(json_object_get(free_tier, "queue_max")), 20);
    assert_int_equal(
        json_integer_value(json_object_get(json_object_get(free_tier, "connectionPool"), "active")),
        4);
    assert_int_equal(json_integer_value(json_object_get(free_tier, "db_active")), 4);
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(free_tier, "circuitBreaker"), "state")),
        "HALF_OPEN");
    assert_string_equal(json_string_value(json_object_get(free_tier, "breaker")), "HALF_OPEN");
    json_decref(doc);
}

static void the_fleet_medium_is_null_when_off_and_says_why_when_down(void **state)
{
    struct fixture *f = *state;
    json_t *doc = poll_since(f, 0);
    assert_true(json_is_null(json_object_get(json_object_get(doc, "server"), "fleet")));
    json_decref(doc);

    f->s->proc.have_fleet = true;
    f->s->proc.fleet_up = 1;
    f->s->proc.fleet_instances = 2;
    f->s->proc.fleet_exchanges = 40;
    f->s->proc.fleet_rtt_us = 1500;
    doc = poll_since(f, 0);
    json_t *fl = json_object_get(json_object_get(doc, "server"), "fleet");
    assert_true(json_is_true(json_object_get(fl, "up")));
    assert_int_equal(json_integer_value(json_object_get(fl, "instances")), 2);
    assert_int_equal(json_integer_value(json_object_get(fl, "exchanges")), 40);
    assert_true(json_real_value(json_object_get(fl, "exchangeMs")) == 1.5);
    assert_true(json_is_null(json_object_get(fl, "reason")));
    json_decref(doc);

    f->s->proc.fleet_up = 0;
    f->s->proc.fleet_failures = 1;
    snprintf(f->s->proc.fleet_reason, sizeof(f->s->proc.fleet_reason), "statement timeout");
    doc = poll_since(f, 0);
    fl = json_object_get(json_object_get(doc, "server"), "fleet");
    assert_true(json_is_false(json_object_get(fl, "up")));
    assert_int_equal(json_integer_value(json_object_get(fl, "failures")), 1);
    assert_string_equal(json_string_value(json_object_get(fl, "reason")), "statement timeout");
    json_decref(doc);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(each_sample_counts_the_requests_of_its_interval, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(latency_quantiles_are_those_of_the_interval, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(a_poll_gets_only_newer_samples, setup, teardown),
        cmocka_unit_test_setup_teardown(the_ring_keeps_the_last_samples, setup, teardown),
        cmocka_unit_test_setup_teardown(keys_are_the_metrics_ones_and_the_deprecated_ones_agree,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(the_fleet_medium_is_null_when_off_and_says_why_when_down,
                                        setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
