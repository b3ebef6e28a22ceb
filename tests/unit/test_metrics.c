/*
 * test_metrics: histogram buckets and quantiles, snapshot deltas, status and outcome
 * counting (metrics.h).
 *
 * Bucket bounds are inclusive upper bounds (Prometheus `le`); quantiles interpolate linearly
 * inside the bucket that holds the rank, and the +Inf bucket reports the last finite bound.
 */
#include "apierr.h"
#include "metrics.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#define LAST_BOUND metrics_hist_bounds_us[METRICS_HIST_BUCKETS - 1]

static struct metrics_hist_snap read_hist(const struct metrics_hist *h)
{
    struct metrics_hist_snap s;
    metrics_hist_read(h, &s);
    return s;
}

/* The bucket index one observation of us lands in. */
static int bucket_of(int64_t us)
{
    struct metrics_hist h;
    memset(&h, 0, sizeof(h));
    metrics_hist_add(&h, us);
    struct metrics_hist_snap s = read_hist(&h);
    int found = -1;
    for (int i = 0; i <= METRICS_HIST_BUCKETS; i++) {
        if (s.counts[i]) {
            assert_int_equal(found, -1);
            assert_int_equal(s.counts[i], 1);
            found = i;
        }
    }
    assert_int_equal(s.count, 1);
    return found;
}

static void bounds_are_increasing(void **state)
{
    (void)state;
    for (int i = 1; i < METRICS_HIST_BUCKETS; i++)
        assert_true(metrics_hist_bounds_us[i] > metrics_hist_bounds_us[i - 1]);
    assert_int_equal(metrics_hist_bounds_us[0], 100);
    assert_int_equal(LAST_BOUND, 60000000);
}

static void values_land_in_the_bucket_of_their_upper_bound(void **state)
{
    (void)state;
    for (int i = 0; i < METRICS_HIST_BUCKETS; i++) {
        int64_t b = metrics_hist_bounds_us[i];
        assert_int_equal(bucket_of(b), i);         /* a bound belongs to its own bucket (le) */
        assert_int_equal(bucket_of(b + 1), i + 1); /* one past it to the next */
        if (i > 0)
            assert_int_equal(bucket_of(metrics_hist_bounds_us[i - 1] + 1), i);
    }
    assert_int_equal(bucket_of(0), 0);
    assert_int_equal(bucket_of(-5), 0);
    assert_int_equal(bucket_of(INT64_MAX / 2), METRICS_HIST_BUCKETS);
}

static void sum_and_count_track_observations(void **state)
{
    (void)state;
    struct metrics_hist h;
    memset(&h, 0, sizeof(h));
    metrics_hist_add(&h, 150);
    metrics_hist_add(&h, 2000);
    metrics_hist_add(&h, -30); /* clock skew: counted as 0 */
    struct metrics_hist_snap s = read_hist(&h);
    assert_int_equal(s.count, 3);
    assert_int_equal(s.sum_us, 2150);
    assert_int_equal(s.counts[0], 1);
    assert_int_equal(s.counts[1], 1);
    assert_int_equal(s.counts[4], 1);
}

static void quantile_interpolates_inside_the_bucket(void **state)
{
    (void)state;
    struct metrics_hist h;
    memset(&h, 0, sizeof(h));
    /* Ten observations in (100, 250]: the quantiles spread linearly over that range. */
    for (int i = 0; i < 10; i++)
        metrics_hist_add(&h, 200);
    struct metrics_hist_snap s = read_hist(&h);
    assert_int_equal(metrics_hist_quantile(&s, NULL, 0.0), 100);
    assert_int_equal(metrics_hist_quantile(&s, NULL, 0.5), 175);
    assert_int_equal(metrics_hist_quantile(&s, NULL, 0.9), 235);
    assert_int_equal(metrics_hist_quantile(&s, NULL, 1.0), 250);

    /* Half in [0, 100], half in (500, 1000]. */
    memset(&h, 0, sizeof(h));
    for (int i = 0; i < 50; i++) {
        metrics_hist_add(&h, 10);
        metrics_hist_add(&h, 700);
    }
    s = read_hist(&h);
    assert_int_equal(metrics_hist_quantile(&s, NULL, 0.25), 50);
    assert_int_equal(metrics_hist_quantile(&s, NULL, 0.5), 100); /* top of the first bucket */
    assert_int_equal(metrics_hist_quantile(&s, NULL, 0.75), 750);
    assert_int_equal(metrics_hist_quantile(&s, NULL, 0.99), 990);
}

static void quantile_of_empty_and_overflow(void **state)
{
    (void)state;
    struct metrics_hist h;
    memset(&h, 0, sizeof(h));
    struct metrics_hist_snap s = read_hist(&h);
    assert_int_equal(metrics_hist_quantile(&s, NULL, 0.5), 0);
    assert_int_equal(metrics_hist_quantile(&s, &s, 0.99), 0);
    /* Beyond the last bound all that is known is "more than LAST_BOUND". */
    metrics_hist_add(&h, 90 * 1000000ll);
    metrics_hist_add(&h, 120 * 1000000ll);
    s = read_hist(&h);
    assert_int_equal(metrics_hist_quantile(&s, NULL, 0.5), LAST_BOUND);
    assert_int_equal(metrics_hist_quantile(&s, NULL, 1.0), LAST_BOUND);
}

static void quantile_of_a_delta_sees_only_new_observations(void **state)
{
    (void)state;
    struct metrics_hist h;
    memset(&h, 0, sizeof(h));
    for (int i = 0; i < 1000; i++)
        metrics_hist_add(&h, 50); /* fast, before the first snapshot */
    struct metrics_hist_snap before = read_hist(&h);
    for (int i = 0; i < 10; i++)
        metrics_hist_add(&h, 20000); /* slow, in (10000, 25000] */
    struct metrics_hist_snap after = read_hist(&h);
    /* Over everything the median is fast; over the interval it is slow. */
    assert_true(metrics_hist_quantile(&after, NULL, 0.5) <= 100);
    assert_int_equal(metrics_hist_quantile(&after, &before, 0.5), 17500);
    assert_int_equal(metrics_hist_quantile(&after, &before, 1.0), 25000);
    /* No new observations: empty interval. */
    assert_int_equal(metrics_hist_quantile(&after, &after, 0.5), 0);
}

/* Index of status in metrics_status_codes (the last index is "other"). */
static int status_index(int status)
{
    struct metrics_tier m;
    metrics_init(&m);
    metrics_observe(&m, OUTCOME_OK, status, 10, -1, -1);
    int found = -1;
    for (int i = 0; i < METRICS_STATUS_COUNT; i++)
        if (atomic_load(&m.statuses[i]))
            found = i;
    return found;
}

static void status_codes_map_to_their_slot_or_other(void **state)
{
    (void)state;
    for (int i = 0; i < METRICS_STATUS_COUNT - 1; i++)
        assert_int_equal(status_index(metrics_status_codes[i]), i);
    assert_int_equal(metrics_status_codes[METRICS_STATUS_COUNT - 1], 0);
    const int others[] = {0, 100, 202, 302, 418, 501, 599, -1};
    for (size_t i = 0; i < sizeof(others) / sizeof(others[0]); i++)
        assert_int_equal(status_index(others[i]), METRICS_STATUS_COUNT - 1);
    /* Every status the server answers has its own slot (issue 18: 411 and 499 were "other"). */
    const int answered[] = {200, 201, 204, 400, 401, 403, 404, 405, 409, 411,
                            413, 414, 415, 417, 429, 431, 499, 500, 503, 504};
    for (size_t i = 0; i < sizeof(answered) / sizeof(answered[0]); i++)
        assert_true(status_index(answered[i]) < METRICS_STATUS_COUNT - 1);
    for (int e = 0; e < APIERR_COUNT; e++)
        assert_true(status_index((int)apierr_status((enum apierr)e)) < METRICS_STATUS_COUNT - 1);
}

static void observe_counts_outcome_and_present_stages(void **state)
{
    (void)state;
    struct metrics_tier m;
    metrics_init(&m);
    metrics_observe(&m, OUTCOME_OK, 200, 1500, 300, 900);
    metrics_observe(&m, OUTCOME_RATE_LIMITED, 429, 40, -1, -1); /* never queued or queried */
    metrics_observe(&m, OUTCOME_POOL_TIMEOUT, 503, 2000000, 100, -1);
    assert_int_equal(atomic_load(&m.outcomes[OUTCOME_OK]), 1);
    assert_int_equal(atomic_load(&m.outcomes[OUTCOME_RATE_LIMITED]), 1);
    assert_int_equal(atomic_load(&m.outcomes[OUTCOME_POOL_TIMEOUT]), 1);
    assert_int_equal(atomic_load(&m.outcomes[OUTCOME_ERROR]), 0);
    struct metrics_hist_snap total = read_hist(&m.total), queue = read_hist(&m.queue),
                             query = read_hist(&m.query);
    assert_int_equal(total.count, 3);
    assert_int_equal(total.sum_us, 1500 + 40 + 2000000);
    assert_int_equal(queue.count, 2);
    assert_int_equal(queue.sum_us, 400);
    assert_int_equal(query.count, 1);
    assert_int_equal(query.sum_us, 900);
}

static void outcome_names_are_the_label_values(void **state)
{
    (void)state;
    const char *want[OUTCOME_COUNT] = {
        "ok",    "rate_limited", "bulkhead_full", "queue_timeout", "pool_timeout", "circuit_open",
        "error", "timeout",      "client_error",  "unavailable",   "held",         "shed"};
    for (int o = 0; o < OUTCOME_COUNT; o++)
        assert_string_equal(metrics_outcome_name((enum metrics_outcome)o), want[o]);
    assert_string_equal(metrics_outcome_name(OUTCOME_COUNT), "unknown");
    assert_string_equal(metrics_outcome_name((enum metrics_outcome) - 1), "unknown");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(bounds_are_increasing),
        cmocka_unit_test(values_land_in_the_bucket_of_their_upper_bound),
        cmocka_unit_test(sum_and_count_track_observations),
        cmocka_unit_test(quantile_interpolates_inside_the_bucket),
        cmocka_unit_test(quantile_of_empty_and_overflow),
        cmocka_unit_test(quantile_of_a_delta_sees_only_new_observations),
        cmocka_unit_test(status_codes_map_to_their_slot_or_other),
        cmocka_unit_test(observe_counts_outcome_and_present_stages),
        cmocka_unit_test(outcome_names_are_the_label_values),
    };
    return cmocka_run_group_tests_name("metrics", tests, NULL, NULL);
}
