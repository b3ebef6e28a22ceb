/*
 * test_tiers: the tier table. The built-in table is config/tiers.json and carries the seed's
 * numbers; a key left out of a tier named like a built-in one keeps the built-in value, in a tier
 * of a new name it takes its default, except rate_limit, which a new tier must state; the
 * README's example tier file gives exactly what the README says; anything else (unknown keys,
 * values out of range or not integers, bad tier names, duplicates, too many tiers) is refused
 * naming "tiers.<tier>.<key>"; the tenant caps derived from the shares are never below 1.
 */
#include "tiers.h"

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

/* Every per-tier key and where it lands, independent of tiers.c's own table. */
static const struct {
    const char *name;
    size_t offset;
} key_fields[] = {
    {"workers", offsetof(struct tier_cfg, workers)},
    {"queue_max", offsetof(struct tier_cfg, queue_max)},
    {"queue_timeout_ms", offsetof(struct tier_cfg, queue_timeout_ms)},
    {"db_max", offsetof(struct tier_cfg, db_max)},
    {"db_acquire_timeout_ms", offsetof(struct tier_cfg, db_acquire_timeout_ms)},
    {"db_idle_timeout_ms", offsetof(struct tier_cfg, db_idle_timeout_ms)},
    {"rate_limit", offsetof(struct tier_cfg, rate_limit)},
    {"rate_window_s", offsetof(struct tier_cfg, rate_window_s)},
    {"breaker_timeout_ms", offsetof(struct tier_cfg, breaker_timeout_ms)},
    {"breaker_error_pct", offsetof(struct tier_cfg, breaker_error_pct)},
    {"breaker_reset_ms", offsetof(struct tier_cfg, breaker_reset_ms)},
    {"breaker_window_ms", offsetof(struct tier_cfg, breaker_window_ms)},
    {"breaker_buckets", offsetof(struct tier_cfg, breaker_buckets)},
    {"breaker_min_calls", offsetof(struct tier_cfg, breaker_min_calls)},
    {"breaker_trial_calls", offsetof(struct tier_cfg, breaker_trial_calls)},
    {"tenant_share_pct", offsetof(struct tier_cfg, tenant_share_pct)},
    {"tenant_queue_pct", offsetof(struct tier_cfg, tenant_queue_pct)},
    {"tenant_reserve_pct", offsetof(struct tier_cfg, tenant_reserve_pct)},
    {"brief_request_ms", offsetof(struct tier_cfg, brief_request_ms)},
    {"fair_queue_cost", offsetof(struct tier_cfg, fair_queue_cost)},
    {"tenant_linger_ms", offsetof(struct tier_cfg, tenant_linger_ms)},
    {"priority", offsetof(struct tier_cfg, priority)},
    {"capacity_floor_pct", offsetof(struct tier_cfg, capacity_floor_pct)},
    {"capacity_tolerance_pct", offsetof(struct tier_cfg, capacity_tolerance_pct)},
    {"capacity_margin_us", offsetof(struct tier_cfg, capacity_margin_us)},
    {"latency_objective_ms", offsetof(struct tier_cfg, latency_objective_ms)},
    {"db_time_ms_per_min", offsetof(struct tier_cfg, db_time_ms_per_min)},
    {"rate_limit_shadow", offsetof(struct tier_cfg, rate_limit_shadow)},
    {"db_time_shadow", offsetof(struct tier_cfg, db_time_shadow)},
};
#define KEY_COUNT (sizeof(key_fields) / sizeof(key_fields[0]))

static int64_t field(const struct tier_cfg *c, const char *key)
{
    for (size_t i = 0; i < KEY_COUNT; i++) {
        if (!strcmp(key_fields[i].name, key)) {
            int64_t v;
            memcpy(&v, (const char *)c + key_fields[i].offset, sizeof(v));
            return v;
        }
    }
    fail_msg("no field for key %s", key);
    return -1;
}

/* The keys as tiers_print_help documents them (name, default, min, max). */
struct key_row {
    char name[64];
    bool required; /* no default: a tier of a new name must state it */
    int64_t def, min, max;
};

static size_t help_rows(struct key_row *rows, size_t max)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    assert_non_null(f);
    tiers_print_help(f, true);
    fclose(f);
    size_t n = 0;
    char *save = NULL;
    for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        struct key_row r = {.required = false};
        if (sscanf(line, "| `%63[^`]` | required | %" SCNd64 "..%" SCNd64 " |", r.name, &r.min,
                   &r.max) == 3)
            r.required = true;
        else if (sscanf(line, "| `%63[^`]` | %" SCNd64 " | %" SCNd64 "..%" SCNd64 " |", r.name,
                        &r.def, &r.min, &r.max) != 4)
            continue;
        assert_true(n < max);
        rows[n++] = r;
    }
    free(text);
    return n;
}

static int parse(const char *json, struct tier_table *t, char *err, size_t errlen)
{
    err[0] = '\0';
    return tiers_parse(json, strlen(json), t, err, errlen);
}

/* Parse and expect refusal with err containing want; the table is left empty. */
static void refused(const char *json, const char *want)
{
    struct tier_table t;
    char err[400];
    if (parse(json, &t, err, sizeof(err)) != -EINVAL)
        fail_msg("accepted %s", json);
    if (!strstr(err, want))
        fail_msg("%s: \"%s\" does not contain \"%s\"", json, err, want);
    assert_int_equal(t.count, 0);
}

static void builtin_table_is_config_tiers_json(void **state)
{
    (void)state;
    struct tier_table builtin, file;
    tiers_builtin(&builtin);
    char err[400];
    if (tiers_load_file(ASSET_ROOT "/config/tiers.json", &file, err, sizeof(err)) != 0)
        fail_msg("%s", err);
    assert_int_equal(builtin.count, file.count);
    assert_memory_equal(&builtin, &file, sizeof(builtin));
}

static void builtin_table_has_the_seed_numbers(void **state)
{
    (void)state;
    struct tier_table t;
    tiers_builtin(&t);
    assert_int_equal(t.count, 3);
    static const struct {
        const char *name;
        int64_t conns, per_min, threads;
    } seed[] = {{"free", 5, 100, 10}, {"pro", 20, 1000, 30}, {"enterprise", 50, 0, 60}};
    for (size_t i = 0; i < 3; i++) {
        /* In file order, which is the order of /metrics and the dashboard. */
        assert_string_equal(t.tiers[i].name, seed[i].name);
        assert_int_equal(tiers_find(&t, seed[i].name), (int)i);
        assert_int_equal(t.tiers[i].db_max, seed[i].conns);
        assert_int_equal(t.tiers[i].rate_limit, seed[i].per_min); /* 0 = unlimited */
        assert_int_equal(t.tiers[i].rate_window_s, 60);
        assert_int_equal(t.tiers[i].workers, seed[i].threads);
    }
    assert_int_equal(tiers_find(&t, "gold"), -1);
    assert_int_equal(tiers_find(&t, "Free"), -1);
    char names[64];
    tiers_names(&t, names, sizeof(names));
    assert_string_equal(names, "free, pro, enterprise");
}

static void a_new_tier_takes_the_documented_defaults_for_keys_left_out(void **state)
{
    (void)state;
    struct key_row rows[32];
    size_t n = help_rows(rows, 32);
    assert_int_equal(n, KEY_COUNT); /* the help and this test know the same keys */
    struct tier_table t;
    char err[400];
    assert_int_equal(parse("{\"bare\": {\"rate_limit\": 0}}", &t, err, sizeof(err)), 0);
    assert_int_equal(t.count, 1);
    assert_string_equal(t.tiers[0].name, "bare");
    for (size_t i = 0; i < n; i++) {
        if (rows[i].required) {
            assert_string_equal(rows[i].name, "rate_limit"); /* the only key without default */
            continue;
        }
        if (field(&t.tiers[0], rows[i].name) != rows[i].def)
            fail_msg("%s: default %" PRId64 ", parsed %" PRId64, rows[i].name, rows[i].def,
                     field(&t.tiers[0], rows[i].name));
    }
    /* The defaults as documented in tiers.h's comments and the README. */
    assert_int_equal(t.tiers[0].workers, 10);
    assert_int_equal(t.tiers[0].queue_max, 20);
    assert_int_equal(t.tiers[0].db_max, 5);
    assert_int_equal(t.tiers[0].rate_limit, 0);
    assert_int_equal(t.tiers[0].breaker_error_pct, 50);
    assert_int_equal(t.tiers[0].tenant_share_pct, 100);
    assert_int_equal(t.tiers[0].tenant_reserve_pct, 0);
    assert_int_equal(t.tiers[0].tenant_linger_ms, 1000);
    assert_int_equal(t.tiers[0].brief_request_ms, 5);
    /* Two keys set, the rest defaulted. */
    assert_int_equal(parse("{\"t\": {\"db_max\": 7, \"rate_limit\": 9}}", &t, err, sizeof(err)), 0);
    assert_int_equal(t.tiers[0].db_max, 7);
    assert_int_equal(t.tiers[0].rate_limit, 9);
    assert_int_equal(t.tiers[0].workers, 10);
}

static void a_tier_named_like_a_builtin_keeps_its_values_for_keys_left_out(void **state)
{
    (void)state;
    struct tier_table builtin, t;
    tiers_builtin(&builtin);
    char err[400];
    /* The example: this used to make free unlimited and drop its queue share to 100. */
    assert_int_equal(parse("{\"free\": {\"workers\": 12}}", &t, err, sizeof(err)), 0);
    assert_int_equal(t.count, 1);
    struct tier_cfg want = builtin.tiers[tiers_find(&builtin, "free")];
    want.workers = 12;
    assert_memory_equal(&t.tiers[0], &want, sizeof(want));
    assert_int_equal(t.tiers[0].rate_limit, 100);
    assert_int_equal(t.tiers[0].tenant_queue_pct, 50);
    assert_int_equal(t.tiers[0].tenant_share_pct, 50);
    /* Each tier inherits from its own name, in any order; an empty object is the built-in tier. */
    assert_int_equal(parse("{\"enterprise\": {}, \"pro\": {\"rate_limit\": 0}, \"free\": {}}", &t,
                           err, sizeof(err)),
                     0);
    assert_int_equal(t.count, 3);
    assert_memory_equal(&t.tiers[0], &builtin.tiers[tiers_find(&builtin, "enterprise")],
                        sizeof(t.tiers[0]));
    want = builtin.tiers[tiers_find(&builtin, "pro")];
    want.rate_limit = 0; /* unlimited, because it says so */
    assert_memory_equal(&t.tiers[1], &want, sizeof(want));
    assert_memory_equal(&t.tiers[2], &builtin.tiers[tiers_find(&builtin, "free")],
                        sizeof(t.tiers[2]));
    /* Values still have to be valid, whatever the name. */
    refused("{\"pro\": {\"workers\": 0}}", "tiers.pro.workers: must be an integer from 1");
}

static void a_tier_of_a_new_name_must_state_its_rate_limit(void **state)
{
    (void)state;
    refused("{\"gold\": {\"workers\": 4}}",
            "tiers.gold.rate_limit: missing: a tier not named like a built-in one (free, pro, "
            "enterprise) must state it");
    refused("{\"free\": {}, \"gold\": {}}", "tiers.gold.rate_limit: missing");
    /* Names are exact: "Free" is not free (and not a valid name either), "free2" is new. */
    refused("{\"free2\": {\"workers\": 4}}", "tiers.free2.rate_limit: missing");
    struct tier_table t;
    char err[400];
    assert_int_equal(parse("{\"gold\": {\"rate_limit\": 0}}", &t, err, sizeof(err)), 0);
    assert_int_equal(t.tiers[0].rate_limit, 0); /* unlimited, written */
}

/* The text between the first occurrence of from (after start) and the next until, copied. */
static char *between(const char *text, const char *from, const char *until)
{
    const char *a = strstr(text, from);
    if (!a)
        return NULL;
    a += strlen(from);
    const char *b = strstr(a, until);
    if (!b)
        return NULL;
    return strndup(a, (size_t)(b - a));
}

static void the_readme_example_gives_what_the_readme_says(void **state)
{
    (void)state;
    FILE *f = fopen(ASSET_ROOT "/README.md", "r");
    assert_non_null(f);
    static char readme[1 << 18];
    size_t len = fread(readme, 1, sizeof(readme) - 1, f);
    fclose(f);
    readme[len] = '\0';
    char *json = between(readme, "<!-- tier file example -->\n```json\n", "```");
    assert_non_null(json);
    struct tier_table builtin, t;
    tiers_builtin(&builtin);
    char err[400];
    if (parse(json, &t, err, sizeof(err)) != 0)
        fail_msg("the README's example is refused: %s", err);
    /* "gives four tiers: free as built in but 60 requests per minute per tenant; pro exactly as
     * built in; enterprise with 80 workers and 60 connections, still unlimited; gold with 40
     * workers, 30 connections, 5,000 requests per minute per tenant, a 1.5 s call timeout, and
     * every other key at its default (a queue of 20, tenant shares of 100 %)". */
    assert_int_equal(t.count, 4);
    struct tier_cfg want = builtin.tiers[tiers_find(&builtin, "free")];
    want.rate_limit = 60;
    assert_memory_equal(&t.tiers[tiers_find(&t, "free")], &want, sizeof(want));
    assert_int_equal(want.workers, 10);
    assert_int_equal(want.db_max, 5);
    assert_int_equal(want.tenant_queue_pct, 50);
    assert_int_equal(want.tenant_share_pct, 50);
    assert_memory_equal(&t.tiers[tiers_find(&t, "pro")],
                        &builtin.tiers[tiers_find(&builtin, "pro")], sizeof(want));
    want = builtin.tiers[tiers_find(&builtin, "enterprise")];
    want.workers = 80;
    want.db_max = 60;
    assert_memory_equal(&t.tiers[tiers_find(&t, "enterprise")], &want, sizeof(want));
    assert_int_equal(want.rate_limit, 0);
    const struct tier_cfg *gold = &t.tiers[tiers_find(&t, "gold")];
    struct tier_table bare;
    assert_int_equal(parse("{\"gold\": {\"rate_limit\": 0}}", &bare, err, sizeof(err)), 0);
    want = bare.tiers[0];
    want.workers = 40;
    want.db_max = 30;
    want.rate_limit = 5000;
    want.breaker_timeout_ms = 1500;
    assert_memory_equal(gold, &want, sizeof(want));
    assert_int_equal(gold->rate_window_s, 60);
    assert_int_equal(gold->queue_max, 20);
    assert_int_equal(gold->tenant_share_pct, 100);
    assert_int_equal(gold->tenant_queue_pct, 100);
    /* "Without "rate_limit", gold would be refused:" followed by the exact message. */
    static const char gold_limit[] = "\"rate_limit\": 5000, ";
    const char *cut = strstr(json, gold_limit);
    assert_non_null(cut);
    char without[2048];
    snprintf(without, sizeof(without), "%.*s%s", (int)(cut - json), json,
             cut + sizeof(gold_limit) - 1);
    assert_int_equal(parse(without, &t, err, sizeof(err)), -EINVAL);
    char line[600];
    snprintf(line, sizeof(line), "bulkhead: configuration refused: TIERS_FILE tiers.json: %s\n",
             err);
    if (!strstr(readme, line))
        fail_msg("the README does not show the refusal as \"%s\"", line);
    free(json);
}

static void bounds_are_inclusive_for_every_key(void **state)
{
    (void)state;
    struct key_row rows[32];
    size_t n = help_rows(rows, 32);
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
            if (parse(json, &t, err, sizeof(err)) != 0)
                fail_msg("%s refused: %s", json, err);
            assert_int_equal(field(&t.tiers[0], rows[i].name), ok[k]);
            snprintf(json, sizeof(json), "{\"t\": {\"%.63s\": %" PRId64 "}}", rows[i].name, bad[k]);
            if (strcmp(rows[i].name, "rate_limit"))
                snprintf(json, sizeof(json), "{\"t\": {\"rate_limit\": 0, \"%.63s\": %" PRId64 "}}",
                         rows[i].name, bad[k]);
            snprintf(want, sizeof(want),
                     "tiers.t.%.63s: must be an integer from %" PRId64 " to %" PRId64
                     " (got %" PRId64 ")",
                     rows[i].name, rows[i].min, rows[i].max, bad[k]);
            assert_int_equal(parse(json, &t, err, sizeof(err)), -EINVAL);
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
        assert_int_equal(parse(json, &t, err, sizeof(err)), -EINVAL);
        assert_string_equal(err, want);
        assert_int_equal(t.count, 0);
    }
    /* A long value is cut in the message, which stays bounded. */
    refused("{\"pro\": {\"workers\": \"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"}}",
            "(got \"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa)");
    /* Integers beyond int64 are not even valid JSON to the parser. */
    refused("{\"pro\": {\"workers\": 99999999999999999999}}", "tiers: invalid JSON");
}

static void unknown_keys_are_refused_naming_the_key(void **state)
{
    (void)state;
    refused("{\"free\": {\"wrokers\": 3}}",
            "tiers.free.wrokers: unknown key (see bulkhead --help)");
    refused("{\"free\": {\"workers\": 3}, \"pro\": {\"Workers\": 3}}",
            "tiers.pro.Workers: unknown");
    refused("{\"free\": {\"workers \": 3}}", "tiers.free.workers : unknown key");
    refused("{\"free\": {\"\": 3}}", "tiers.free.: unknown key");
}

static void tier_names_are_lowercase_words_up_to_32(void **state)
{
    (void)state;
    const char *why = "a tier name is 1 to 32 characters of a-z, 0-9, '_' and '-'";
    refused("{\"\": {}}", why);
    refused("{\"Free\": {}}", why);
    refused("{\"free tier\": {}}", why);
    refused("{\"free.tier\": {}}", why);
    refused("{\"caf\\u00e9\": {}}", why);
    refused("{\"a/b\": {}}", why);
    refused("{\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\": {}}", why); /* 33 */
    struct tier_table t;
    char err[400];
    assert_int_equal(
        parse("{\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\": {\"rate_limit\": 0}, \"tier_2-b\": "
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
    refused("", "tiers: invalid JSON at line");
    refused("{\"free\": ", "tiers: invalid JSON at line 1");
    refused("{\"free\": {}} {}", "tiers: invalid JSON");
    refused("{\"free\": {},}", "tiers: invalid JSON");
    refused("{\"free\": {}, \"free\": {}}", "duplicate object key");
    refused("{\"free\": {\"workers\": 1, \"workers\": 2}}", "duplicate object key");
    refused("{}", "tiers: must be a non-empty object");
    refused("[]", "tiers: must be a non-empty object");
    refused("[{\"free\": {}}]", "tiers: must be a non-empty object");
    refused("{\"free\": 5}", "tiers.free: must be an object of settings");
    refused("{\"free\": []}", "tiers.free: must be an object of settings");
    refused("{\"free\": {}, \"pro\": null}", "tiers.pro: must be an object of settings");
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
    refused("{\"t\": {\"rate_limit\": 0, \"breaker_window_ms\": 10, \"breaker_buckets\": 11}}",
            "tiers.t.breaker_buckets: more buckets than milliseconds in breaker_window_ms");
    struct tier_table t;
    char err[400];
    assert_int_equal(parse("{\"t\": {\"rate_limit\": 0, \"breaker_window_ms\": 10, "
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
    assert_int_equal(parse(json, &t, err, sizeof(err)), 0);
    assert_int_equal(t.count, TIERS_MAX);
    for (size_t i = 0; i < TIERS_MAX; i++)
        assert_int_equal(t.tiers[i].workers, (int64_t)i + 1);
    n_tiers(json, sizeof(json), TIERS_MAX + 1);
    refused(json, "tiers: at most 16 tiers");
}

static void a_fourth_tier_is_just_data(void **state)
{
    (void)state;
    char *path = NULL;
    char tmpl[] = "/tmp/test_tiers_XXXXXX";
    int fd = mkstemp(tmpl);
    assert_true(fd >= 0);
    path = tmpl;
    static const char json[] = "{\"free\": {\"workers\": 2, \"db_max\": 1, \"rate_limit\": 5},\n"
                               " \"pro\": {}, \"enterprise\": {},\n"
                               " \"gold\": {\"workers\": 99, \"db_max\": 80, \"rate_limit\": 0,"
                               " \"tenant_share_pct\": 25}}\n";
    assert_int_equal(write(fd, json, sizeof(json) - 1), (ssize_t)(sizeof(json) - 1));
    close(fd);
    struct tier_table t;
    char err[400];
    assert_int_equal(tiers_load_file(path, &t, err, sizeof(err)), 0);
    unlink(path);
    assert_int_equal(t.count, 4);
    int gold = tiers_find(&t, "gold");
    assert_int_equal(gold, 3);
    assert_int_equal(t.tiers[gold].workers, 99);
    assert_int_equal(t.tiers[gold].db_max, 80);
    assert_int_equal(tiers_tenant_worker_cap(&t.tiers[gold]), 24);
    assert_int_equal(tiers_tenant_conn_cap(&t.tiers[gold]), 20);
    assert_int_equal(t.tiers[0].workers, 2);
    char names[100];
    tiers_names(&t, names, sizeof(names));
    assert_string_equal(names, "free, pro, enterprise, gold");
}

static void load_file_errors_name_the_file(void **state)
{
    (void)state;
    struct tier_table t;
    char err[400];
    assert_int_equal(tiers_load_file("/nonexistent/tiers.json", &t, err, sizeof(err)), -ENOENT);
    assert_string_equal(err, "TIERS_FILE /nonexistent/tiers.json: No such file or directory");
    assert_int_equal(tiers_load_file("/tmp", &t, err, sizeof(err)), -EISDIR);
    assert_string_equal(err, "TIERS_FILE /tmp: Is a directory");
    char tmpl[] = "/tmp/test_tiers_XXXXXX";
    int fd = mkstemp(tmpl);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "{\"free\": {\"db_max\": 0}}", 23), 23);
    close(fd);
    assert_int_equal(tiers_load_file(tmpl, &t, err, sizeof(err)), -EINVAL);
    char want[400];
    snprintf(want, sizeof(want),
             "TIERS_FILE %s: tiers.free.db_max: must be an integer from 1 to 1000 (got 0)", tmpl);
    assert_string_equal(err, want);
    /* Larger than 1 MiB: refused before parsing. */
    FILE *f = fopen(tmpl, "w");
    assert_non_null(f);
    static char blank[4096];
    memset(blank, ' ', sizeof(blank));
    for (int i = 0; i < 260; i++)
        assert_int_equal(fwrite(blank, 1, sizeof(blank), f), sizeof(blank));
    fclose(f);
    assert_int_equal(tiers_load_file(tmpl, &t, err, sizeof(err)), -EFBIG);
    assert_non_null(strstr(err, "larger than 1 MiB"));
    unlink(tmpl);
}

static void tenant_caps_are_never_below_one(void **state)
{
    (void)state;
    struct tier_table t;
    char err[400];
    assert_int_equal(parse("{\"t\": {\"rate_limit\": 0}}", &t, err, sizeof(err)), 0);
    struct tier_cfg c = t.tiers[0];
    for (int64_t total = 1; total <= 120; total++) {
        for (int64_t pct = 1; pct <= 100; pct++) {
            c.workers = total;
            c.db_max = total;
            c.queue_max = total;
            c.tenant_share_pct = pct;
            c.tenant_queue_pct = pct;
            int64_t want = total * pct / 100 < 1 ? 1 : total * pct / 100;
            assert_int_equal(tiers_tenant_worker_cap(&c), want);
            assert_int_equal(tiers_tenant_conn_cap(&c), want);
            assert_int_equal(tiers_tenant_queue_cap(&c), want);
            assert_true(want >= 1 && want <= total);
        }
    }
    /* At the largest bounds the product does not overflow. */
    c.workers = 1024;
    c.db_max = 1000;
    c.queue_max = 100000;
    c.tenant_share_pct = 100;
    c.tenant_queue_pct = 100;
    assert_int_equal(tiers_tenant_worker_cap(&c), 1024);
    assert_int_equal(tiers_tenant_conn_cap(&c), 1000);
    assert_int_equal(tiers_tenant_queue_cap(&c), 100000);
    /* A tier without a queue lets no tenant queue. */
    c.queue_max = 0;
    assert_int_equal(tiers_tenant_queue_cap(&c), 0);
    /* The built-in free tier: 10 workers and 5 connections at 50%, 20 queue slots at 50%. */
    tiers_builtin(&t);
    assert_int_equal(tiers_tenant_worker_cap(&t.tiers[0]), 5);
    assert_int_equal(tiers_tenant_conn_cap(&t.tiers[0]), 2);
    assert_int_equal(tiers_tenant_queue_cap(&t.tiers[0]), 10);
}

static void names_are_cut_to_the_buffer(void **state)
{
    (void)state;
    struct tier_table t;
    tiers_builtin(&t);
    char small[9];
    memset(small, 'x', sizeof(small));
    tiers_names(&t, small, sizeof(small));
    assert_string_equal(small, "free, pr");
    struct tier_table empty = {.count = 0};
    tiers_names(&empty, small, sizeof(small));
    assert_string_equal(small, "");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(builtin_table_is_config_tiers_json),
        cmocka_unit_test(builtin_table_has_the_seed_numbers),
        cmocka_unit_test(a_new_tier_takes_the_documented_defaults_for_keys_left_out),
        cmocka_unit_test(a_tier_named_like_a_builtin_keeps_its_values_for_keys_left_out),
        cmocka_unit_test(a_tier_of_a_new_name_must_state_its_rate_limit),
        cmocka_unit_test(the_readme_example_gives_what_the_readme_says),
        cmocka_unit_test(bounds_are_inclusive_for_every_key),
        cmocka_unit_test(non_integer_values_are_refused_naming_the_key),
        cmocka_unit_test(unknown_keys_are_refused_naming_the_key),
        cmocka_unit_test(tier_names_are_lowercase_words_up_to_32),
        cmocka_unit_test(malformed_tables_are_refused),
        cmocka_unit_test(breaker_buckets_must_fit_the_window),
        cmocka_unit_test(at_most_16_tiers),
        cmocka_unit_test(a_fourth_tier_is_just_data),
        cmocka_unit_test(load_file_errors_name_the_file),
        cmocka_unit_test(tenant_caps_are_never_below_one),
        cmocka_unit_test(names_are_cut_to_the_buffer),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
