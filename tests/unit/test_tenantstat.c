/*
 * test_tenantstat: per-tenant accounting over the last minute (tenantstat.h), on explicit times.
 *
 * The heaviest tenant by database time heads the top with its exact figures, and by= ranks by
 * the field asked; refusals count by reason and shadow refusals apart; the tier's totals hold
 * every tenant, held or not. A million distinct tenants leave at most the bound held and the
 * heavy one on top, exact. The window slides: a past minute counts for its part still within
 * the last 60 s, and nothing after two. Threads recording at once lose nothing.
 */
#include "tenantstat.h"

#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#define MS       1000ll
#define S        1000000ll
#define T0       (1000 * 60 * S) /* a minute's start */
#define HELD_MAX (TENANTSTAT_STRIPES * TENANTSTAT_STRIPE_KEYS)

static void rec(struct tenantstat *ts, const char *key, int64_t db_us, int64_t now)
{
    struct tenantstat_sample s = {.db_us = db_us, .refused = TENANTSTAT_NONE};
    tenantstat_record(ts, 0, key, &s, now);
}

static void the_heaviest_tenant_by_database_time_heads_the_top_with_exact_figures(void **state)
{
    (void)state;
    struct tenantstat *ts = tenantstat_create(2);
    for (int i = 0; i < 100; i++) {
        rec(ts, "id:cheap", 1 * MS, T0 + i * MS);
        rec(ts, "id:cheap", 1 * MS, T0 + i * MS);
        rec(ts, "id:heavy", 50 * MS, T0 + i * MS);
    }
    struct tenantstat_row top[4];
    struct tenantstat_counts total;
    size_t held;
    size_t n = tenantstat_top(ts, 0, TENANTSTAT_DB_US, 4, T0 + 1 * S, top, &total, &held);
    assert_int_equal(n, 2);
    assert_int_equal(held, 2);
    assert_string_equal(top[0].key, "id:heavy");
    assert_int_equal(top[0].err, 0);
    assert_int_equal(top[0].c.v[TENANTSTAT_DB_US], 100 * 50 * MS);
    assert_int_equal(top[0].c.v[TENANTSTAT_REQUESTS], 100);
    assert_int_equal(top[1].c.v[TENANTSTAT_DB_US], 200 * MS);
    assert_int_equal(total.v[TENANTSTAT_REQUESTS], 300);
    /* by=requests: the cheap one sent more. */
    n = tenantstat_top(ts, 0, tenantstat_field_by_name("requests"), 1, T0 + 1 * S, top, &total,
                       &held);
    assert_int_equal(n, 1);
    assert_string_equal(top[0].key, "id:cheap");
    assert_int_equal(tenantstat_field_by_name("bogus"), -1);
    /* Another tier saw nothing. */
    assert_int_equal(tenantstat_top(ts, 1, TENANTSTAT_DB_US, 4, T0 + 1 * S, top, &total, &held), 0);
    assert_int_equal(total.v[TENANTSTAT_REQUESTS], 0);
    struct tenantstat_row one;
    assert_true(tenantstat_get(ts, 0, "id:heavy", T0 + 1 * S, &one));
    assert_int_equal(one.c.v[TENANTSTAT_DB_US], 100 * 50 * MS);
    assert_false(tenantstat_get(ts, 0, "id:nobody", T0 + 1 * S, &one));
    assert_false(tenantstat_get(ts, 1, "id:heavy", T0 + 1 * S, &one));
    tenantstat_destroy(ts);
}

static void refusals_count_by_reason_and_shadow_refusals_apart(void **state)
{
    (void)state;
    struct tenantstat *ts = tenantstat_create(1);
    struct tenantstat_sample rl = {.refused = TENANTSTAT_RATE_LIMITED};
    struct tenantstat_sample db = {.refused = TENANTSTAT_DB_TIME_EXHAUSTED};
    struct tenantstat_sample shadow = {
        .db_us = 5 * MS, .refused = TENANTSTAT_NONE, .shadow = 1u << TENANTSTAT_DB_TIME_EXHAUSTED};
    for (int i = 0; i < 3; i++)
        tenantstat_record(ts, 0, "id:a", &rl, T0);
    tenantstat_record(ts, 0, "id:a", &db, T0);
    for (int i = 0; i < 4; i++)
        tenantstat_record(ts, 0, "id:a", &shadow, T0);
    struct tenantstat_row r;
    assert_true(tenantstat_get(ts, 0, "id:a", T0, &r));
    assert_int_equal(r.c.v[TENANTSTAT_REQUESTS], 8);
    assert_int_equal(r.c.v[TENANTSTAT_REFUSED], 4);
    assert_int_equal(r.c.v[TENANTSTAT_REFUSED_BY + TENANTSTAT_RATE_LIMITED], 3);
    assert_int_equal(r.c.v[TENANTSTAT_REFUSED_BY + TENANTSTAT_DB_TIME_EXHAUSTED], 1);
    assert_int_equal(r.c.v[TENANTSTAT_SHADOW_BY + TENANTSTAT_DB_TIME_EXHAUSTED], 4);
    assert_int_equal(r.c.v[TENANTSTAT_DB_US], 20 * MS);
    assert_string_equal(tenantstat_reason_name(TENANTSTAT_DB_TIME_EXHAUSTED), "db_time_exhausted");
    tenantstat_destroy(ts);
}

static void a_million_distinct_tenants_stay_within_the_bound_and_the_heavy_one_on_top(void **state)
{
    (void)state;
    struct tenantstat *ts = tenantstat_create(1);
    char key[32];
    int64_t heavy_requests = 0;
    for (int i = 0; i < 1000000; i++) {
        int64_t now = T0 + i; /* a million within one second */
        snprintf(key, sizeof(key), "id:t%d", i);
        rec(ts, key, 1 * MS, now);
        if (i % 1000 == 0) {
            rec(ts, "id:heavy", 20 * MS, now);
            heavy_requests++;
        }
    }
    struct tenantstat_row top[TENANTSTAT_TOP_MAX];
    struct tenantstat_counts total;
    size_t held;
    size_t n = tenantstat_top(ts, 0, TENANTSTAT_DB_US, 10, T0 + 1 * S, top, &total, &held);
    assert_int_equal(n, 10);
    assert_true(held <= HELD_MAX);
    assert_string_equal(top[0].key, "id:heavy");
    assert_int_equal(top[0].err, 0); /* taken in before the table filled: exact */
    assert_int_equal(top[0].c.v[TENANTSTAT_REQUESTS], heavy_requests);
    assert_int_equal(top[0].c.v[TENANTSTAT_DB_US], heavy_requests * 20 * MS);
    /* The totals still count every one of them. */
    assert_int_equal(total.v[TENANTSTAT_REQUESTS], 1000000 + heavy_requests);
    tenantstat_destroy(ts);
}

static void the_window_slides_and_a_minute_leaves_it_after_two(void **state)
{
    (void)state;
    struct tenantstat *ts = tenantstat_create(1);
    for (int i = 0; i < 600; i++)
        rec(ts, "id:a", 1 * MS, T0 + i * 100 * MS); /* 600 over the first minute */
    struct tenantstat_row r;
    assert_true(tenantstat_get(ts, 0, "id:a", T0 + 59 * S, &r));
    assert_int_equal(r.c.v[TENANTSTAT_REQUESTS], 600);
    /* 15 s into the next minute, 45 s of the first are still within the last 60 s. */
    assert_true(tenantstat_get(ts, 0, "id:a", T0 + 75 * S, &r));
    assert_int_equal(r.c.v[TENANTSTAT_REQUESTS], 450);
    rec(ts, "id:a", 1 * MS, T0 + 75 * S); /* rolls the stripe: the same view, plus one */
    assert_true(tenantstat_get(ts, 0, "id:a", T0 + 75 * S, &r));
    assert_int_equal(r.c.v[TENANTSTAT_REQUESTS], 451);
    /* Two minutes on: gone, and a record then drops it from the table. */
    assert_false(tenantstat_get(ts, 0, "id:a", T0 + 180 * S, &r));
    rec(ts, "id:b", 1 * MS, T0 + 180 * S);
    struct tenantstat_row top[4];
    struct tenantstat_counts total;
    size_t held;
    tenantstat_top(ts, 0, TENANTSTAT_DB_US, 4, T0 + 180 * S, top, &total, &held);
    assert_int_equal(total.v[TENANTSTAT_REQUESTS], 1);
    tenantstat_destroy(ts);
}

#define THREADS 4
#define PER     20000

static void *recorder(void *arg)
{
    struct tenantstat *ts = arg;
    char key[32];
    for (int i = 0; i < PER; i++) {
        snprintf(key, sizeof(key), "id:t%d", i % 64);
        rec(ts, key, 1, T0 + i);
    }
    return NULL;
}

static void threads_recording_at_once_lose_nothing(void **state)
{
    (void)state;
    struct tenantstat *ts = tenantstat_create(1);
    pthread_t th[THREADS];
    for (int i = 0; i < THREADS; i++)
        assert_int_equal(pthread_create(&th[i], NULL, recorder, ts), 0);
    struct tenantstat_row top[TENANTSTAT_TOP_MAX];
    struct tenantstat_counts total;
    size_t held;
    tenantstat_top(ts, 0, TENANTSTAT_DB_US, 10, T0, top, &total, &held); /* a reader meanwhile */
    for (int i = 0; i < THREADS; i++)
        pthread_join(th[i], NULL);
    size_t n = tenantstat_top(ts, 0, TENANTSTAT_REQUESTS, TENANTSTAT_TOP_MAX, T0 + PER, top, &total,
                              &held);
    assert_int_equal(n, 64);
    int64_t sum = 0;
    for (size_t i = 0; i < n; i++)
        sum += top[i].c.v[TENANTSTAT_REQUESTS];
    assert_int_equal(sum, THREADS * PER);
    assert_int_equal(total.v[TENANTSTAT_DB_US], THREADS * PER);
    tenantstat_destroy(ts);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(the_heaviest_tenant_by_database_time_heads_the_top_with_exact_figures),
        cmocka_unit_test(refusals_count_by_reason_and_shadow_refusals_apart),
        cmocka_unit_test(a_million_distinct_tenants_stay_within_the_bound_and_the_heavy_one_on_top),
        cmocka_unit_test(the_window_slides_and_a_minute_leaves_it_after_two),
        cmocka_unit_test(threads_recording_at_once_lose_nothing),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
