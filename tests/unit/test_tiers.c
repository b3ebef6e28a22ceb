/*
 * test_tiers: the tier table. The built-in table is config/tiers.json and carries the seed's
 * numbers; a key left out of a tier named like a built-in one keeps the built-in value, in a tier
 * of a new name it takes its default, except rate_limit, which a new tier must state; the
 * README's example tier file gives exactly what the README says; a fourth tier is just data;
 * the tenant caps derived from the shares are never below 1. budget_scope, the one key of named
 * choices, is "instance" (the default) or "fleet", written as text; a fleet budget's least share
 * is budget_min_pct of the total, at least 1. What is refused is in test_tiers_refused.
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
    struct tsfx_key_row rows[32];
    size_t n = tsfx_help_rows(rows, 32);
    assert_int_equal(n, TIERKEYS_COUNT); /* the help and this test know the same keys */
    struct tier_table t;
    char err[400];
    assert_int_equal(tsfx_parse("{\"bare\": {\"rate_limit\": 0}}", &t, err, sizeof(err)), 0);
    assert_int_equal(t.count, 1);
    assert_string_equal(t.tiers[0].name, "bare");
    for (size_t i = 0; i < n; i++) {
        if (rows[i].required) {
            assert_string_equal(rows[i].name, "rate_limit"); /* the only key without default */
            continue;
        }
        if (tsfx_field(&t.tiers[0], rows[i].name) != rows[i].def)
            fail_msg("%s: default %" PRId64 ", parsed %" PRId64, rows[i].name, rows[i].def,
                     tsfx_field(&t.tiers[0], rows[i].name));
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
    assert_int_equal(
        tsfx_parse("{\"t\": {\"db_max\": 7, \"rate_limit\": 9}}", &t, err, sizeof(err)), 0);
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
    assert_int_equal(tsfx_parse("{\"free\": {\"workers\": 12}}", &t, err, sizeof(err)), 0);
    assert_int_equal(t.count, 1);
    struct tier_cfg want = builtin.tiers[tiers_find(&builtin, "free")];
    want.workers = 12;
    assert_memory_equal(&t.tiers[0], &want, sizeof(want));
    assert_int_equal(t.tiers[0].rate_limit, 100);
    assert_int_equal(t.tiers[0].tenant_queue_pct, 50);
    assert_int_equal(t.tiers[0].tenant_share_pct, 50);
    /* Each tier inherits from its own name, in any order; an empty object is the built-in tier. */
    assert_int_equal(tsfx_parse("{\"enterprise\": {}, \"pro\": {\"rate_limit\": 0}, \"free\": {}}",
                                &t, err, sizeof(err)),
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
    tsfx_refused("{\"pro\": {\"workers\": 0}}", "tiers.pro.workers: must be an integer from 1");
}

static void a_tier_of_a_new_name_must_state_its_rate_limit(void **state)
{
    (void)state;
    tsfx_refused("{\"gold\": {\"workers\": 4}}",
                 "tiers.gold.rate_limit: missing: a tier not named like a built-in one (free, pro, "
                 "enterprise) must state it");
    tsfx_refused("{\"free\": {}, \"gold\": {}}", "tiers.gold.rate_limit: missing");
    /* Names are exact: "Free" is not free (and not a valid name either), "free2" is new. */
    tsfx_refused("{\"free2\": {\"workers\": 4}}", "tiers.free2.rate_limit: missing");
    struct tier_table t;
    char err[400];
    assert_int_equal(tsfx_parse("{\"gold\": {\"rate_limit\": 0}}", &t, err, sizeof(err)), 0);
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
    if (tsfx_parse(json, &t, err, sizeof(err)) != 0)
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
    assert_int_equal(tsfx_parse("{\"gold\": {\"rate_limit\": 0}}", &bare, err, sizeof(err)), 0);
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
    assert_int_equal(tsfx_parse(without, &t, err, sizeof(err)), -EINVAL);
    char line[600];
    snprintf(line, sizeof(line), "bulkhead: configuration refused: TIERS_FILE tiers.json: %s\n",
             err);
    if (!strstr(readme, line))
        fail_msg("the README does not show the refusal as \"%s\"", line);
    free(json);
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
    assert_int_equal(tsfx_parse("{\"t\": {\"rate_limit\": 0}}", &t, err, sizeof(err)), 0);
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

static void budget_scope_is_instance_or_fleet_written_as_text(void **state)
{
    (void)state;
    struct tier_table t;
    char err[400];
    assert_int_equal(tsfx_parse("{\"t\": {\"rate_limit\": 0}}", &t, err, sizeof(err)), 0);
    assert_int_equal(t.tiers[0].budget_scope, TIERS_SCOPE_INSTANCE);
    assert_int_equal(t.tiers[0].budget_min_pct, 10);
    assert_int_equal(tsfx_parse("{\"pro\": {\"budget_scope\": \"fleet\", \"budget_min_pct\": 25}}",
                                &t, err, sizeof(err)),
                     0);
    assert_int_equal(t.tiers[0].budget_scope, TIERS_SCOPE_FLEET);
    assert_int_equal(t.tiers[0].budget_min_pct, 25);
    assert_int_equal(t.tiers[0].workers, 30); /* the rest is pro's */
    assert_int_equal(
        tsfx_parse("{\"pro\": {\"budget_scope\": \"instance\"}}", &t, err, sizeof(err)), 0);
    assert_int_equal(t.tiers[0].budget_scope, TIERS_SCOPE_INSTANCE);
    tsfx_refused("{\"pro\": {\"budget_scope\": 1}}",
                 "tiers.pro.budget_scope: must be \"instance\" or \"fleet\" (got 1)");
    tsfx_refused("{\"pro\": {\"budget_scope\": \"Fleet\"}}",
                 "tiers.pro.budget_scope: must be \"instance\" or \"fleet\" (got \"Fleet\")");
    tsfx_refused("{\"pro\": {\"budget_scope\": null}}", "tiers.pro.budget_scope: must be");
    /* the help names the choices and the default */
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    assert_non_null(f);
    tiers_print_help(f, true);
    fclose(f);
    assert_non_null(strstr(text, "| `budget_scope` | `instance` | `instance` or `fleet` |"));
    free(text);
    /* and the table in force prints the name */
    f = open_memstream(&text, &len);
    assert_int_equal(tsfx_parse("{\"pro\": {\"budget_scope\": \"fleet\"}}", &t, err, sizeof(err)),
                     0);
    tiers_print_table(f, &t, "");
    fclose(f);
    assert_non_null(strstr(text, " budget_scope=fleet "));
    free(text);
}

static void a_fleet_budgets_least_share_is_its_pct_at_least_one(void **state)
{
    (void)state;
    assert_int_equal(tiers_min_share(20, 10), 2);
    assert_int_equal(tiers_min_share(50, 25), 12);
    assert_int_equal(tiers_min_share(5, 10), 1); /* half a connection is one */
    assert_int_equal(tiers_min_share(1, 1), 1);
    assert_int_equal(tiers_min_share(7, 100), 7);
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
        cmocka_unit_test(a_fourth_tier_is_just_data),
        cmocka_unit_test(load_file_errors_name_the_file),
        cmocka_unit_test(tenant_caps_are_never_below_one),
        cmocka_unit_test(names_are_cut_to_the_buffer),
        cmocka_unit_test(budget_scope_is_instance_or_fleet_written_as_text),
        cmocka_unit_test(a_fleet_budgets_least_share_is_its_pct_at_least_one),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
