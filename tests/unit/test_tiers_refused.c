/*
 * test_tiers_refused: what the tier table refuses, naming "tiers.<tier>.<key>": values out of
 * range (bounds are inclusive for every key) or not integers, unknown keys, bad tier names,
 * malformed tables, breaker buckets that do not fit the window, more than 16 tiers. Fixture:
 * tiersfx.
 */
#include "tiersfx.h"
#include "tiers.h"

#include "../tierkeys.h"

#include <errno.h>
#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

static void bounds_are_inclusive_for_every_key(void **state)
{
    (void)state;
    struct tsfx_key_row rows[32];
    size_t n = tsfx_help_rows(rows, 32);
    for (size_t i = 0; i < n; i++) {
        int64_t ok[2] = {rows[i].min, rows[i].max}, bad[2] = {rows[i].min - 1, rows[i].max + 1};
        for (int k = 0; k < 2; k++) {
            char json[200], err[400], want[300];
            struct tier_table t;
            /* A tier of a new name states its rate limit. */
            snprintf(json, sizeof(json), "{\"t\": {\"rate_limit\": 0, \"%.63s\": %" PRId64 "}}",
                     rows[i].name, ok[k]);
            if (!strcmp(rows[i].name, "rate_limit"))
                snprintf(json, sizeof(json), "{\"t\": {\"rate_limit\": %" PRId64 "}}", ok[k]);
            if (tsfx_parse(json, &t, err, sizeof(err)) != 0)
                fail_msg("%s refused: %s", json, err);
            assert_int_equal(tsfx_field(&t.tiers[0], rows[i].name), ok[k]);
            snprintf(json, sizeof(json), "{\"t\": {\"%.63s\": %" PRId64 "}}", rows[i].name, bad[k]);
            if (strcmp(rows[i].name, "rate_limit"))
                snprintf(json, sizeof(json), "{\"t\": {\"rate_limit\": 0, \"%.63s\": %" PRId64 "}}",
                         rows[i].name, bad[k]);
            snprintf(want, sizeof(want),
                     "tiers.t.%.63s: must be an integer from %" PRId64 " to %" PRId64
                     " (got %" PRId64 ")",
                     rows[i].name, rows[i].min, rows[i].max, bad[k]);
            assert_int_equal(tsfx_parse(json, &t, err, sizeof(err)), -EINVAL);
            assert_string_equal(err, want);
        }
    }
}

static void non_integer_values_are_refused_naming_the_key(void **state)
{
    (void)state;
    static const struct {
        const char *value, *got;
    } bad[] = {
        {"\"5\"", "\"5\""}, {"5.0", "5.0"},         {"5.5", "5.5"}, {"true", "true"},
        {"null", "null"},   {"[5]", "[5]"},         {"{}", "{}"},   {"1e3", "1000.0"},
        {"-0.0", "-0.0"},   {"\"ten\"", "\"ten\""},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char json[200], want[200];
        snprintf(json, sizeof(json), "{\"pro\": {\"workers\": 4, \"db_max\": %s}}", bad[i].value);
        snprintf(want, sizeof(want), "tiers.pro.db_max: must be an integer from 1 to 1000 (got %s)",
                 bad[i].got);
        struct tier_table t;
        char err[400];
        assert_int_equal(tsfx_parse(json, &t, err, sizeof(err)), -EINVAL);
        assert_string_equal(err, want);
        assert_int_equal(t.count, 0);
    }
    /* A long value is cut in the message, which stays bounded. */
    tsfx_refused(
        "{\"pro\": {\"workers\": \"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"}}",
        "(got \"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa)");
    /* Integers beyond int64 are not even valid JSON to the parser. */
    tsfx_refused("{\"pro\": {\"workers\": 99999999999999999999}}", "tiers: invalid JSON");
}

static void unknown_keys_are_refused_naming_the_key(void **state)
{
    (void)state;
    tsfx_refused("{\"free\": {\"wrokers\": 3}}",
                 "tiers.free.wrokers: unknown key (see bulkhead --help)");
    tsfx_refused("{\"free\": {\"workers\": 3}, \"pro\": {\"Workers\": 3}}",
                 "tiers.pro.Workers: unknown");
    tsfx_refused("{\"free\": {\"workers \": 3}}", "tiers.free.workers : unknown key");
    tsfx_refused("{\"free\": {\"\": 3}}", "tiers.free.: unknown key");
}

static void tier_names_are_lowercase_words_up_to_32(void **state)
{
    (void)state;
    const char *why = "a tier name is 1 to 32 characters of a-z, 0-9, '_' and '-'";
    tsfx_refused("{\"\": {}}", why);
    tsfx_refused("{\"Free\": {}}", why);
    tsfx_refused("{\"free tier\": {}}", why);
    tsfx_refused("{\"free.tier\": {}}", why);
    tsfx_refused("{\"caf\\u00e9\": {}}", why);
    tsfx_refused("{\"a/b\": {}}", why);
    tsfx_refused("{\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\": {}}", why); /* 33 */
    struct tier_table t;
    char err[400];
    assert_int_equal(
        tsfx_parse("{\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\": {\"rate_limit\": 0}, \"tier_2-b\": "
                   "{\"rate_limit\": 0}, \"0\": {\"rate_limit\": 0}}",
                   &t, err, sizeof(err)),
        0);
    assert_int_equal(t.count, 3);
    assert_int_equal(strlen(t.tiers[0].name), TIERS_NAME_MAX);
    assert_string_equal(t.tiers[1].name, "tier_2-b");
    assert_string_equal(t.tiers[2].name, "0");
}

static void malformed_tables_are_refused(void **state)
{
    (void)state;
    tsfx_refused("", "tiers: invalid JSON at line");
    tsfx_refused("{\"free\": ", "tiers: invalid JSON at line 1");
    tsfx_refused("{\"free\": {}} {}", "tiers: invalid JSON");
    tsfx_refused("{\"free\": {},}", "tiers: invalid JSON");
    tsfx_refused("{\"free\": {}, \"free\": {}}", "duplicate object key");
    tsfx_refused("{\"free\": {\"workers\": 1, \"workers\": 2}}", "duplicate object key");
    tsfx_refused("{}", "tiers: must be a non-empty object");
    tsfx_refused("[]", "tiers: must be a non-empty object");
    tsfx_refused("[{\"free\": {}}]", "tiers: must be a non-empty object");
    tsfx_refused("{\"free\": 5}", "tiers.free: must be an object of settings");
    tsfx_refused("{\"free\": []}", "tiers.free: must be an object of settings");
    tsfx_refused("{\"free\": {}, \"pro\": null}", "tiers.pro: must be an object of settings");
    /* A NUL byte inside the text is refused, not treated as the end. */
    static const char nul[] = "{\"free\": {}}\0{";
    struct tier_table t;
    char err[400];
    assert_int_equal(tiers_parse(nul, sizeof(nul) - 1, &t, err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "invalid JSON"));
}

static void breaker_buckets_must_fit_the_window(void **state)
{
    (void)state;
    tsfx_refused("{\"t\": {\"rate_limit\": 0, \"breaker_window_ms\": 10, \"breaker_buckets\": 11}}",
                 "tiers.t.breaker_buckets: more buckets than milliseconds in breaker_window_ms");
    struct tier_table t;
    char err[400];
    assert_int_equal(tsfx_parse("{\"t\": {\"rate_limit\": 0, \"breaker_window_ms\": 10, "
                                "\"breaker_buckets\": 10}}",
                                &t, err, sizeof(err)),
                     0);
}

/* {"t0": {}, "t1": {}, ...} with n tiers. */
static void n_tiers(char *buf, size_t cap, size_t n)
{
    size_t used = (size_t)snprintf(buf, cap, "{");
    for (size_t i = 0; i < n; i++)
        used += (size_t)snprintf(buf + used, cap - used,
                                 "%s\"t%zu\": {\"workers\": %zu, \"rate_limit\": 0}", i ? ", " : "",
                                 i, i + 1);
    snprintf(buf + used, cap - used, "}");
}

static void at_most_16_tiers(void **state)
{
    (void)state;
    char json[4096];
    struct tier_table t;
    char err[400];
    n_tiers(json, sizeof(json), TIERS_MAX);
    assert_int_equal(tsfx_parse(json, &t, err, sizeof(err)), 0);
    assert_int_equal(t.count, TIERS_MAX);
    for (size_t i = 0; i < TIERS_MAX; i++)
        assert_int_equal(t.tiers[i].workers, (int64_t)i + 1);
    n_tiers(json, sizeof(json), TIERS_MAX + 1);
    tsfx_refused(json, "tiers: at most 16 tiers");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(bounds_are_inclusive_for_every_key),
        cmocka_unit_test(non_integer_values_are_refused_naming_the_key),
        cmocka_unit_test(unknown_keys_are_refused_naming_the_key),
        cmocka_unit_test(tier_names_are_lowercase_words_up_to_32),
        cmocka_unit_test(malformed_tables_are_refused),
        cmocka_unit_test(breaker_buckets_must_fit_the_window),
        cmocka_unit_test(at_most_16_tiers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
