/*
 * test_config: the settings table. Every row of the table (read back from the --help Markdown,
 * which is generated from it; configfx) has a default that parses and bounds that are
 * inclusive; every refused value names the variable and the reason; an empty value counts as
 * unset; the first bad value stops the load; --help lists every variable. The .env reader,
 * .env.example and `config --effective` are in test_config_env.
 */
#include "configfx.h"
#include "config.h"
#include "dotenv.h"

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

/* ---- an environment for config_load_from: up to 8 NAME=VALUE pairs ---- */

struct fake_env {
    const char *names[8];
    const char *values[8];
    size_t n;
};

static const char *fake_get(const char *name, void *ctx)
{
    const struct fake_env *e = ctx;
    for (size_t i = 0; i < e->n; i++)
        if (!strcmp(e->names[i], name))
            return e->values[i];
    return NULL;
}

/* Load with one variable set; returns the result, cfg is filled on 0. */
static int load_one(struct config *cfg, const char *name, const char *value, char *err,
                    size_t errlen)
{
    struct fake_env e = {.names = {name}, .values = {value}, .n = 1};
    err[0] = '\0';
    return config_load_from(cfg, fake_get, &e, err, errlen);
}

static void defaults_all_parse_to_the_documented_values(void **state)
{
    (void)state;
    struct fake_env none = {.n = 0};
    struct config c;
    char err[256] = "";
    assert_int_equal(config_load_from(&c, fake_get, &none, err, sizeof(err)), 0);
    assert_string_equal(err, "");
    assert_string_equal(c.database_url, "");
    assert_int_equal(c.api_port, 8080);
    assert_string_equal(c.api_bind, "0.0.0.0");
    assert_string_equal(c.tiers_file, "");
    assert_int_equal(c.http_threads, 0);
    assert_int_equal(c.http_max_conns, 65536);
    assert_int_equal(c.http_max_per_addr, 0);
    assert_int_equal(c.http_idle_timeout, 30);
    assert_int_equal(c.http_head_timeout, 10000);
    assert_int_equal(c.http_body_timeout, 30000);
    assert_int_equal(c.http_conn_memory, 16384);
    assert_int_equal(c.http_max_body, 65536);
    assert_int_equal(c.shutdown_timeout, 10000);
    assert_int_equal(c.health_interval, 1000);
    assert_int_equal(c.rl_backend, CONFIG_BACKEND_MEMORY);
    assert_string_equal(c.redis_url, "redis://127.0.0.1:6379");
    assert_int_equal(c.redis_timeout, 50);
    assert_int_equal(c.rl_lease_pct, 10);
    assert_int_equal(c.rl_sync_ms, 20);
    assert_int_equal(c.rl_max_keys, 100000);
    assert_int_equal(c.auth_mode, CONFIG_AUTH_HEADER);
    assert_int_equal(c.test_params, CONFIG_TEST_PARAMS_AUTO);
    assert_int_equal(c.client_ipv6_prefix, 64);
    assert_int_equal(c.auth_cache_ttl, 5000);
    assert_string_equal(c.admin_token, "");
    assert_int_equal(c.log_format, LOG_FORMAT_JSON);
    assert_int_equal(c.log_level, LOG_LEVEL_INFO);
    assert_true(c.access_log);
    assert_true(c.access_log_sample == 1.0);
    assert_int_equal(c.access_log_slow_ms, 100);
    assert_int_equal(c.retry_reads, 2);
    assert_int_equal(c.pipeline_depth, 8);
    assert_int_equal(c.pipeline_join_ms, 2);
    config_free(&c);
    assert_null(c.database_url);
    assert_null(c.redis_url);
}

static void every_row_accepts_its_default_written_explicitly(void **state)
{
    (void)state;
    struct cfgfx_row rows[64];
    size_t n = cfgfx_table_rows(rows, 64);
    assert_int_equal(n, 45); /* every field of struct config has a row */
    for (size_t i = 0; i < n; i++) {
        struct config c;
        char err[256];
        if (load_one(&c, rows[i].name, rows[i].def, err, sizeof(err)) != 0)
            fail_msg("%s=%s refused: %s", rows[i].name, rows[i].def, err);
        config_free(&c);
    }
}

static void int_bounds_are_inclusive_for_every_int_row(void **state)
{
    (void)state;
    struct cfgfx_row rows[64];
    size_t n = cfgfx_table_rows(rows, 64), ints = 0;
    for (size_t i = 0; i < n; i++) {
        int64_t lo, hi;
        if (sscanf(rows[i].allowed, "%" SCNd64 "..%" SCNd64, &lo, &hi) != 2)
            continue;
        ints++;
        int64_t ok[2] = {lo, hi}, bad[2] = {lo - 1, hi + 1};
        for (int k = 0; k < 2; k++) {
            char v[32], err[256], want[256];
            struct config c;
            snprintf(v, sizeof(v), "%" PRId64, ok[k]);
            if (load_one(&c, rows[i].name, v, err, sizeof(err)) != 0)
                fail_msg("%s=%s refused: %s", rows[i].name, v, err);
            config_free(&c);
            snprintf(v, sizeof(v), "%" PRId64, bad[k]);
            assert_int_equal(load_one(&c, rows[i].name, v, err, sizeof(err)), -EINVAL);
            snprintf(want, sizeof(want),
                     "%s: must be an integer from %" PRId64 " to %" PRId64 " (got \"%s\")",
                     rows[i].name, lo, hi, v);
            assert_string_equal(err, want);
        }
    }
    assert_int_equal(ints, 28);
}

static void an_auth_cache_shorter_than_a_second_is_refused(void **state)
{
    (void)state;
    /* 0 used to mean a reload of the whole key table every millisecond. */
    static const char *const bad[] = {"0", "1", "999"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct config c;
        char err[256], want[256];
        assert_int_equal(load_one(&c, "AUTH_CACHE_TTL_MS", bad[i], err, sizeof(err)), -EINVAL);
        snprintf(want, sizeof(want),
                 "AUTH_CACHE_TTL_MS: must be an integer from 1000 to 3600000 (got \"%s\")", bad[i]);
        assert_string_equal(err, want);
    }
    struct config c;
    char err[256];
    assert_int_equal(load_one(&c, "AUTH_CACHE_TTL_MS", "1000", err, sizeof(err)), 0);
    assert_int_equal(c.auth_cache_ttl, 1000);
    config_free(&c);
}

static void a_short_admin_token_is_refused_without_being_printed(void **state)
{
    (void)state;
    /* 31 characters: one short. */
    const char *shortish = "guessable-0123456789abcdefghijk";
    assert_int_equal(strlen(shortish), 31);
    struct config c;
    char err[256];
    assert_int_equal(load_one(&c, "ADMIN_TOKEN", shortish, err, sizeof(err)), -EINVAL);
    assert_string_equal(err, "ADMIN_TOKEN: must be empty or at least 32 characters long (got 31); "
                             "generate one with: openssl rand -hex 32");
    assert_null(strstr(err, "guessable"));
    assert_int_equal(load_one(&c, "ADMIN_TOKEN", "x", err, sizeof(err)), -EINVAL);
    /* 32 characters, and empty, are accepted. */
    const char *enough = "0123456789abcdef0123456789abcdef";
    assert_int_equal(load_one(&c, "ADMIN_TOKEN", enough, err, sizeof(err)), 0);
    assert_string_equal(c.admin_token, enough);
    config_free(&c);
    assert_int_equal(load_one(&c, "ADMIN_TOKEN", "", err, sizeof(err)), 0);
    assert_string_equal(c.admin_token, "");
    config_free(&c);
}

static void int_values_are_strict_decimal(void **state)
{
    (void)state;
    /* "" is not here: an empty value counts as unset (an_empty_value_counts_as_unset...). */
    static const char *const bad[] = {"abc",
                                      " 8080",
                                      "8080 ",
                                      "+8080",
                                      "0x1f90",
                                      "8e3",
                                      "80.0",
                                      "8080\n",
                                      "--1",
                                      "-",
                                      "99999999999999999999"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct config c;
        char err[256], want[256];
        assert_int_equal(load_one(&c, "API_PORT", bad[i], err, sizeof(err)), -EINVAL);
        snprintf(want, sizeof(want), "API_PORT: must be an integer from 1 to 65535 (got \"%s\")",
                 bad[i]);
        assert_string_equal(err, want);
    }
    struct config c;
    char err[256];
    assert_int_equal(load_one(&c, "API_PORT", "09090", err, sizeof(err)), 0);
    assert_int_equal(c.api_port, 9090);
    config_free(&c);
    /* A negative number parses, and is then judged by the bounds. */
    assert_int_equal(load_one(&c, "HTTP_THREADS", "-0", err, sizeof(err)), 0);
    assert_int_equal(c.http_threads, 0);
    config_free(&c);
    assert_int_equal(load_one(&c, "HTTP_THREADS", "-1", err, sizeof(err)), -EINVAL);
    assert_string_equal(err, "HTTP_THREADS: must be an integer from 0 to 64 (got \"-1\")");
}

static void enum_spellings_map_to_their_values(void **state)
{
    (void)state;
    static const struct {
        const char *name, *value;
        size_t offset;
        int want;
    } ok[] = {
        {"RATE_LIMIT_BACKEND", "memory", offsetof(struct config, rl_backend),
         CONFIG_BACKEND_MEMORY},
        {"RATE_LIMIT_BACKEND", "redis", offsetof(struct config, rl_backend), CONFIG_BACKEND_REDIS},
        {"AUTH_MODE", "header", offsetof(struct config, auth_mode), CONFIG_AUTH_HEADER},
        {"AUTH_MODE", "apikey", offsetof(struct config, auth_mode), CONFIG_AUTH_APIKEY},
        {"TEST_PARAMS", "auto", offsetof(struct config, test_params), CONFIG_TEST_PARAMS_AUTO},
        {"TEST_PARAMS", "on", offsetof(struct config, test_params), CONFIG_TEST_PARAMS_ON},
        {"TEST_PARAMS", "off", offsetof(struct config, test_params), CONFIG_TEST_PARAMS_OFF},
        {"LOG_FORMAT", "json", offsetof(struct config, log_format), LOG_FORMAT_JSON},
        {"LOG_FORMAT", "text", offsetof(struct config, log_format), LOG_FORMAT_TEXT},
        {"LOG_LEVEL", "debug", offsetof(struct config, log_level), LOG_LEVEL_DEBUG},
        {"LOG_LEVEL", "info", offsetof(struct config, log_level), LOG_LEVEL_INFO},
        {"LOG_LEVEL", "warn", offsetof(struct config, log_level), LOG_LEVEL_WARN},
        {"LOG_LEVEL", "error", offsetof(struct config, log_level), LOG_LEVEL_ERROR},
    };
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        struct config c;
        char err[256];
        assert_int_equal(load_one(&c, ok[i].name, ok[i].value, err, sizeof(err)), 0);
        int got;
        memcpy(&got, (char *)&c + ok[i].offset, sizeof(got));
        assert_int_equal(got, ok[i].want);
        config_free(&c);
    }
}

static void enum_refuses_other_spellings_listing_the_choices(void **state)
{
    (void)state;
    static const char *const bad[] = {"Redis",  "REDIS",        "redis ", " redis",  "redi",
                                      "rediss", "memory|redis", "|",      "memory|", "memoryredis"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct config c;
        char err[256], want[256];
        assert_int_equal(load_one(&c, "RATE_LIMIT_BACKEND", bad[i], err, sizeof(err)), -EINVAL);
        snprintf(want, sizeof(want), "RATE_LIMIT_BACKEND: must be one of memory|redis (got \"%s\")",
                 bad[i]);
        assert_string_equal(err, want);
    }
    struct config c;
    char err[256];
    assert_int_equal(load_one(&c, "LOG_LEVEL", "warning", err, sizeof(err)), -EINVAL);
    assert_string_equal(err, "LOG_LEVEL: must be one of debug|info|warn|error (got \"warning\")");
}

static void bool_spellings(void **state)
{
    (void)state;
    static const char *const yes[] = {"true", "1", "yes", "on"};
    static const char *const no[] = {"false", "0", "no", "off"};
    for (size_t i = 0; i < 4; i++) {
        struct config c;
        char err[256];
        assert_int_equal(load_one(&c, "ACCESS_LOG", no[i], err, sizeof(err)), 0);
        assert_false(c.access_log);
        config_free(&c);
        assert_int_equal(load_one(&c, "ACCESS_LOG", yes[i], err, sizeof(err)), 0);
        assert_true(c.access_log);
        config_free(&c);
    }
    static const char *const bad[] = {"TRUE", "False", "Yes",   "y",    "n",
                                      "2",    "01",    " true", "true "};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct config c;
        char err[256], want[256];
        assert_int_equal(load_one(&c, "ACCESS_LOG", bad[i], err, sizeof(err)), -EINVAL);
        snprintf(want, sizeof(want), "ACCESS_LOG: must be true or false (got \"%s\")", bad[i]);
        assert_string_equal(err, want);
    }
}

static void fractions_are_plain_decimals_from_0_to_1(void **state)
{
    (void)state;
    static const char *const ok[] = {"0", "1", "0.01", ".5", "1.0", "0.000001"};
    static const double want_v[] = {0, 1, 0.01, 0.5, 1, 0.000001};
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        struct config c;
        char err[256];
        assert_int_equal(load_one(&c, "ACCESS_LOG_SAMPLE", ok[i], err, sizeof(err)), 0);
        assert_true(c.access_log_sample == want_v[i]);
        config_free(&c);
    }
    static const char *const bad[] = {"-0.1", "1.01", "2",    "1e-2", "0x1", "nan",
                                      "inf",  ".",    "0.5.", " 0.5", "5%"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct config c;
        char err[256], want[256];
        assert_int_equal(load_one(&c, "ACCESS_LOG_SAMPLE", bad[i], err, sizeof(err)), -EINVAL);
        snprintf(want, sizeof(want),
                 "ACCESS_LOG_SAMPLE: must be a decimal from 0 to 1 (got \"%s\")", bad[i]);
        assert_string_equal(err, want);
    }
}

static void strings_are_kept_verbatim(void **state)
{
    (void)state;
    struct fake_env e = {.names = {"DATABASE_URL", "API_BIND", "ADMIN_TOKEN", "REDIS_URL"},
                         .values = {"host=/tmp dbname=x", "::1",
                                    " spaced # token, long enough to pass ", "redis://r"},
                         .n = 4};
    struct config c;
    char err[256];
    assert_int_equal(config_load_from(&c, fake_get, &e, err, sizeof(err)), 0);
    assert_string_equal(c.database_url, "host=/tmp dbname=x");
    assert_string_equal(c.api_bind, "::1");
    assert_string_equal(c.admin_token, " spaced # token, long enough to pass ");
    assert_string_equal(c.redis_url, "redis://r");
    config_free(&c);
}

static void an_empty_value_counts_as_unset_for_every_row(void **state)
{
    (void)state;
    struct cfgfx_row rows[64];
    size_t n = cfgfx_table_rows(rows, 64);
    struct fake_env none = {.n = 0};
    struct config def;
    char err[256];
    assert_int_equal(config_load_from(&def, fake_get, &none, err, sizeof(err)), 0);
    for (size_t i = 0; i < n; i++) {
        struct config c;
        /* API_PORT= used to be refused as "not an integer", REDIS_URL= used to be "". */
        if (load_one(&c, rows[i].name, "", err, sizeof(err)) != 0)
            fail_msg("%s= refused: %s", rows[i].name, err);
        assert_int_equal(c.api_port, def.api_port);
        assert_string_equal(c.redis_url, def.redis_url);
        assert_string_equal(c.api_bind, def.api_bind);
        assert_int_equal(c.log_level, def.log_level);
        assert_true(c.access_log);
        config_free(&c);
    }
    config_free(&def);
}

/* OPS_PORT: off by default (one port, as the reference design); on, it cannot be API_PORT. */
static void ops_port_is_off_by_default_and_cannot_be_the_api_port(void **state)
{
    (void)state;
    struct config c;
    char err[256];
    assert_int_equal(load_one(&c, "LOG_LEVEL", "info", err, sizeof(err)), 0);
    assert_int_equal(c.ops_port, 0);
    config_free(&c);
    assert_int_equal(load_one(&c, "OPS_PORT", "9090", err, sizeof(err)), 0);
    assert_int_equal(c.ops_port, 9090);
    config_free(&c);
    assert_int_equal(load_one(&c, "OPS_PORT", "8080", err, sizeof(err)), -EINVAL);
    assert_string_equal(err, "OPS_PORT: must differ from API_PORT (both 8080)");
    assert_null(c.api_bind); /* freed */
    struct fake_env e = {.names = {"API_PORT", "OPS_PORT"}, .values = {"9191", "9191"}, .n = 2};
    assert_int_equal(config_load_from(&c, fake_get, &e, err, sizeof(err)), -EINVAL);
    assert_string_equal(err, "OPS_PORT: must differ from API_PORT (both 9191)");
}

static void first_bad_value_stops_the_load_and_frees_everything(void **state)
{
    (void)state;
    struct fake_env e = {.names = {"DATABASE_URL", "API_BIND", "LOG_LEVEL", "API_PORT"},
                         .values = {"postgres://x", "127.0.0.1", "loud", "0"},
                         .n = 4};
    struct config c;
    char err[256];
    assert_int_equal(config_load_from(&c, fake_get, &e, err, sizeof(err)), -EINVAL);
    /* API_PORT comes first in the table, so it is the one reported. */
    assert_string_equal(err, "API_PORT: must be an integer from 1 to 65535 (got \"0\")");
    assert_null(c.database_url);
    assert_null(c.api_bind);
    /* The message is cut to the buffer, never overflowing it. */
    char small[10];
    memset(small, 'x', sizeof(small));
    assert_int_equal(load_one(&c, "API_PORT", "0", small, sizeof(small)), -EINVAL);
    assert_string_equal(small, "API_PORT:");
}

static void config_load_reads_the_process_environment(void **state)
{
    (void)state;
    assert_int_equal(setenv("API_PORT", "9191", 1), 0);
    assert_int_equal(setenv("LOG_FORMAT", "text", 1), 0);
    struct config c;
    char err[256];
    assert_int_equal(config_load(&c, err, sizeof(err)), 0);
    assert_int_equal(c.api_port, 9191);
    assert_int_equal(c.log_format, LOG_FORMAT_TEXT);
    config_free(&c);
    assert_int_equal(setenv("API_PORT", "x", 1), 0);
    assert_int_equal(config_load(&c, err, sizeof(err)), -EINVAL);
    assert_string_equal(err, "API_PORT: must be an integer from 1 to 65535 (got \"x\")");
    unsetenv("API_PORT");
    unsetenv("LOG_FORMAT");
}

static void help_lists_every_variable_in_text_and_markdown(void **state)
{
    (void)state;
    struct cfgfx_row rows[64];
    size_t n = cfgfx_table_rows(rows, 64);
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    assert_non_null(f);
    config_print_help(f, false);
    fclose(f);
    for (size_t i = 0; i < n; i++)
        assert_non_null(strstr(text, rows[i].name));
    assert_non_null(strstr(text, "default: 8080; allowed: 1..65535"));
    assert_non_null(strstr(text, "allowed: memory|redis"));
    free(text);
    /* In Markdown a '|' would split a cell: every line has exactly four cells. */
    text = NULL;
    f = open_memstream(&text, &len);
    assert_non_null(f);
    config_print_help(f, true);
    fclose(f);
    size_t lines = 0;
    char *save = NULL;
    for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        size_t bars = 0;
        for (const char *p = line; *p; p++)
            bars += *p == '|';
        if (bars != 5)
            fail_msg("Markdown line with %zu '|': %s", bars, line);
        lines++;
    }
    assert_int_equal(lines, n + 2); /* header, separator, one per row */
    free(text);
    bool seen = false;
    for (size_t i = 0; i < n; i++) {
        if (!strcmp(rows[i].name, "RATE_LIMIT_BACKEND")) {
            assert_string_equal(rows[i].allowed, "memory/redis");
            assert_string_equal(rows[i].def, "memory");
            seen = true;
        }
        if (!strcmp(rows[i].name, "ACCESS_LOG")) {
            assert_string_equal(rows[i].allowed, "true/false");
        }
    }
    assert_true(seen);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(defaults_all_parse_to_the_documented_values),
        cmocka_unit_test(every_row_accepts_its_default_written_explicitly),
        cmocka_unit_test(int_bounds_are_inclusive_for_every_int_row),
        cmocka_unit_test(int_values_are_strict_decimal),
        cmocka_unit_test(an_auth_cache_shorter_than_a_second_is_refused),
        cmocka_unit_test(a_short_admin_token_is_refused_without_being_printed),
        cmocka_unit_test(enum_spellings_map_to_their_values),
        cmocka_unit_test(enum_refuses_other_spellings_listing_the_choices),
        cmocka_unit_test(bool_spellings),
        cmocka_unit_test(fractions_are_plain_decimals_from_0_to_1),
        cmocka_unit_test(strings_are_kept_verbatim),
        cmocka_unit_test(an_empty_value_counts_as_unset_for_every_row),
        cmocka_unit_test(first_bad_value_stops_the_load_and_frees_everything),
        cmocka_unit_test(config_load_reads_the_process_environment),
        cmocka_unit_test(help_lists_every_variable_in_text_and_markdown),
        cmocka_unit_test(ops_port_is_off_by_default_and_cannot_be_the_api_port),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
