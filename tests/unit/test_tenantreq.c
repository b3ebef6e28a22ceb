/*
 * test_tenantreq: the checks of an operator's tenant request (tenantreq.h), shared by the admin
 * API's JSON bodies and the CLI's arguments. Covered: what a create and an update accept and
 * need; every refusal has its kind (body, name, tier, number) and a message saying what is
 * wrong; null removes an override; the CLI's text gives the same verdicts and messages as
 * JSON; the rate-limit bound is the tier key's.
 */
#include "tenantreq.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

static struct tier_table tiers;

static int setup(void **state)
{
    (void)state;
    tiers_builtin(&tiers);
    return 0;
}

static enum tenantreq_error parse(enum tenantreq_kind kind, const char *body, struct tenantreq *req,
                                  char *why, size_t whylen)
{
    why[0] = '\0';
    return tenantreq_parse_json(kind, body, strlen(body), &tiers, req, why, whylen);
}

static void a_create_takes_a_name_a_tier_and_an_optional_rate_limit(void **state)
{
    (void)state;
    struct tenantreq req;
    char why[300];
    assert_int_equal(parse(TENANTREQ_CREATE,
                           "{\"name\":\"acme\",\"tier\":\"free\",\"rate_limit\":5}", &req, why,
                           sizeof(why)),
                     TENANTREQ_OK);
    assert_string_equal(req.name, "acme");
    assert_string_equal(req.tier, "free");
    assert_int_equal(req.rate_limit_op, TENANTREQ_SET);
    assert_int_equal(req.rate_limit, 5);

    assert_int_equal(
        parse(TENANTREQ_CREATE, "{\"tier\":\"pro\",\"name\":\"a.b_c-9\"}", &req, why, sizeof(why)),
        TENANTREQ_OK);
    assert_int_equal(req.rate_limit_op, TENANTREQ_KEEP);
    assert_int_equal(parse(TENANTREQ_CREATE,
                           "{\"name\":\"x\",\"tier\":\"enterprise\",\"rate_limit\":null}", &req,
                           why, sizeof(why)),
                     TENANTREQ_OK);
    assert_int_equal(req.rate_limit_op, TENANTREQ_CLEAR); /* null on create: no override */
    /* 0 is a limit too: unlimited, as for a tier. */
    assert_int_equal(parse(TENANTREQ_CREATE, "{\"name\":\"x\",\"tier\":\"free\",\"rate_limit\":0}",
                           &req, why, sizeof(why)),
                     TENANTREQ_OK);
    assert_int_equal(req.rate_limit, 0);
}

static void a_create_without_name_or_tier_is_a_bad_body(void **state)
{
    (void)state;
    struct tenantreq req;
    char why[300];
    assert_int_equal(parse(TENANTREQ_CREATE, "{\"name\":\"acme\"}", &req, why, sizeof(why)),
                     TENANTREQ_BAD_BODY);
    assert_non_null(strstr(why, "name and a tier"));
    assert_int_equal(parse(TENANTREQ_CREATE, "{\"tier\":\"free\"}", &req, why, sizeof(why)),
                     TENANTREQ_BAD_BODY);
    assert_int_equal(parse(TENANTREQ_CREATE, "{}", &req, why, sizeof(why)), TENANTREQ_BAD_BODY);
}

static void an_update_changes_tier_and_overrides_but_never_the_name(void **state)
{
    (void)state;
    struct tenantreq req;
    char why[300];
    assert_int_equal(parse(TENANTREQ_UPDATE, "{\"tier\":\"enterprise\",\"rate_limit\":null}", &req,
                           why, sizeof(why)),
                     TENANTREQ_OK);
    assert_string_equal(req.tier, "enterprise");
    assert_int_equal(req.rate_limit_op, TENANTREQ_CLEAR);
    assert_string_equal(req.name, "");
    assert_int_equal(parse(TENANTREQ_UPDATE, "{\"rate_limit\":5000}", &req, why, sizeof(why)),
                     TENANTREQ_OK);
    assert_string_equal(req.tier, "");
    assert_int_equal(req.rate_limit, 5000);

    assert_int_equal(parse(TENANTREQ_UPDATE, "{}", &req, why, sizeof(why)), TENANTREQ_BAD_BODY);
    assert_non_null(strstr(why, "nothing to change"));
    assert_int_equal(parse(TENANTREQ_UPDATE, "{\"name\":\"other\"}", &req, why, sizeof(why)),
                     TENANTREQ_BAD_BODY);
    assert_non_null(strstr(why, "cannot be changed"));
}

static void bad_names_are_refused_as_names(void **state)
{
    (void)state;
    static const char *bodies[] = {
        "{\"name\":\"\",\"tier\":\"free\"}",
        "{\"name\":\"bad name\",\"tier\":\"free\"}",
        "{\"name\":\"a/b\",\"tier\":\"free\"}",
        "{\"name\":\"\\u00e9t\\u00e9\",\"tier\":\"free\"}",
        "{\"name\":42,\"tier\":\"free\"}",
        "{\"name\":null,\"tier\":\"free\"}",
        "{\"name\":\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\","
        "\"tier\":\"free\"}", /* 65 */
    };
    for (size_t i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++) {
        struct tenantreq req;
        char why[300];
        if (parse(TENANTREQ_CREATE, bodies[i], &req, why, sizeof(why)) != TENANTREQ_BAD_NAME)
            fail_msg("%s: not refused as a name (%s)", bodies[i], why);
        assert_non_null(strstr(why, "1 to 64 characters"));
    }
    char name64[80] = "{\"name\":\"", body[160];
    memset(name64 + strlen(name64), 'a', 64);
    name64[9 + 64] = '\0';
    snprintf(body, sizeof(body), "%s\",\"tier\":\"free\"}", name64);
    struct tenantreq req;
    char why[300];
    assert_int_equal(parse(TENANTREQ_CREATE, body, &req, why, sizeof(why)), TENANTREQ_OK);
    assert_int_equal(strlen(req.name), 64);
}

static void unknown_tiers_are_refused_with_the_list(void **state)
{
    (void)state;
    struct tenantreq req;
    char why[300];
    assert_int_equal(parse(TENANTREQ_UPDATE, "{\"tier\":\"gold\"}", &req, why, sizeof(why)),
                     TENANTREQ_BAD_TIER);
    assert_string_equal(why, "unknown tier (got \"gold\"); tiers: free, pro, enterprise");
    assert_int_equal(parse(TENANTREQ_UPDATE, "{\"tier\":\"FREE\"}", &req, why, sizeof(why)),
                     TENANTREQ_BAD_TIER);
    assert_int_equal(parse(TENANTREQ_UPDATE, "{\"tier\":[\"free\"]}", &req, why, sizeof(why)),
                     TENANTREQ_BAD_TIER);
    assert_non_null(strstr(why, "a JSON array"));
}

static void bad_numbers_are_refused_as_numbers(void **state)
{
    (void)state;
    static const char *values[] = {"-1",   "1000000001", "1.5", "5.0",           "\"5\"",
                                   "true", "[5]",        "{}",  "99999999999999"};
    for (size_t i = 0; i < sizeof(values) / sizeof(values[0]); i++) {
        char body[100], why[300];
        snprintf(body, sizeof(body), "{\"rate_limit\":%s}", values[i]);
        struct tenantreq req;
        if (parse(TENANTREQ_UPDATE, body, &req, why, sizeof(why)) != TENANTREQ_BAD_NUMBER)
            fail_msg("%s: not refused as a number (%s)", body, why);
        assert_non_null(strstr(why, "rate_limit must be an integer from 0 to 1000000000"));
    }
    struct tenantreq req;
    char why[300];
    assert_int_equal(parse(TENANTREQ_UPDATE, "{\"rate_limit\":1000000000}", &req, why, sizeof(why)),
                     TENANTREQ_OK);
}

static void what_is_not_a_json_object_of_known_fields_is_a_bad_body(void **state)
{
    (void)state;
    static const char *bodies[] = {
        "",
        "not json",
        "[]",
        "\"acme\"",
        "{\"tier\":\"free\"} trailing",
        "{\"tier\":\"free\",\"tier\":\"pro\"}", /* repeated */
        "{\"tier\":\"free\",\"burst\":5}",      /* unknown */
        "{\"tier\":\"fr\\u0000ee\"}",           /* a NUL inside */
    };
    for (size_t i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++) {
        struct tenantreq req;
        char why[300];
        if (parse(TENANTREQ_UPDATE, bodies[i], &req, why, sizeof(why)) != TENANTREQ_BAD_BODY)
            fail_msg("%s: not refused as a body (%s)", bodies[i], why);
        assert_true(why[0] != '\0');
    }
}

static void the_cli_text_gets_the_same_verdicts_and_messages(void **state)
{
    (void)state;
    struct {
        const char *field, *text, *json;
        enum tenantreq_error want;
    } cases[] = {
        {"name", "bad name", "{\"name\":\"bad name\",\"tier\":\"free\"}", TENANTREQ_BAD_NAME},
        {"tier", "platinum", "{\"name\":\"a\",\"tier\":\"platinum\"}", TENANTREQ_BAD_TIER},
        {"rate_limit", "1000000001", "{\"name\":\"a\",\"tier\":\"free\",\"rate_limit\":1000000001}",
         TENANTREQ_BAD_NUMBER},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct tenantreq a, b;
        char why_text[300], why_json[300];
        tenantreq_init(&a);
        assert_int_equal(tenantreq_set_text(&a, cases[i].field, cases[i].text, &tiers, why_text,
                                            sizeof(why_text)),
                         cases[i].want);
        assert_int_equal(parse(TENANTREQ_CREATE, cases[i].json, &b, why_json, sizeof(why_json)),
                         cases[i].want);
        assert_string_equal(why_text, why_json);
    }
    struct tenantreq req;
    char why[300];
    tenantreq_init(&req);
    assert_int_equal(tenantreq_set_text(&req, "rate_limit", "7", &tiers, why, sizeof(why)),
                     TENANTREQ_OK);
    assert_int_equal(req.rate_limit, 7);
    assert_int_equal(tenantreq_set_text(&req, "rate_limit", "none", &tiers, why, sizeof(why)),
                     TENANTREQ_OK);
    assert_int_equal(req.rate_limit_op, TENANTREQ_CLEAR);
    assert_int_equal(tenantreq_set_text(&req, "rate_limit", "5x", &tiers, why, sizeof(why)),
                     TENANTREQ_BAD_NUMBER);
    assert_int_equal(tenantreq_set_text(&req, "burst", "5", &tiers, why, sizeof(why)),
                     TENANTREQ_BAD_BODY);
}

static void the_rate_limit_bound_is_the_tier_keys(void **state)
{
    (void)state;
    char json[200], err[300];
    struct tier_table t;
    snprintf(json, sizeof(json), "{\"free\": {\"rate_limit\": %d}}", TENANTREQ_RATE_LIMIT_MAX);
    assert_int_equal(tiers_parse(json, strlen(json), &t, err, sizeof(err)), 0);
    snprintf(json, sizeof(json), "{\"free\": {\"rate_limit\": %d}}", TENANTREQ_RATE_LIMIT_MAX + 1);
    assert_int_not_equal(tiers_parse(json, strlen(json), &t, err, sizeof(err)), 0);
}

static void the_database_time_budget_is_an_override_like_the_rate_limit(void **state)
{
    (void)state;
    struct tenantreq req;
    char why[300], json[200], err[300];
    assert_int_equal(parse(TENANTREQ_CREATE,
                           "{\"name\":\"a\",\"tier\":\"free\",\"db_time_ms_per_min\":600}", &req,
                           why, sizeof(why)),
                     TENANTREQ_OK);
    assert_int_equal(req.db_time_op, TENANTREQ_SET);
    assert_int_equal(req.db_time, 600);
    assert_int_equal(req.rate_limit_op, TENANTREQ_KEEP);
    /* An update of it alone is something to change; null removes it. */
    assert_int_equal(
        parse(TENANTREQ_UPDATE, "{\"db_time_ms_per_min\":null}", &req, why, sizeof(why)),
        TENANTREQ_OK);
    assert_int_equal(req.db_time_op, TENANTREQ_CLEAR);
    assert_int_equal(parse(TENANTREQ_UPDATE, "{\"db_time_ms_per_min\":-1}", &req, why, sizeof(why)),
                     TENANTREQ_BAD_NUMBER);
    assert_non_null(strstr(why, "db_time_ms_per_min must be an integer from 0 to 100000000"));
    assert_int_equal(
        parse(TENANTREQ_UPDATE, "{\"db_time_ms_per_min\":\"5\"}", &req, why, sizeof(why)),
        TENANTREQ_BAD_NUMBER);
    /* The CLI's text: the same verdicts. */
    tenantreq_init(&req);
    assert_int_equal(
        tenantreq_set_text(&req, "db_time_ms_per_min", "250", &tiers, why, sizeof(why)),
        TENANTREQ_OK);
    assert_int_equal(req.db_time, 250);
    assert_int_equal(
        tenantreq_set_text(&req, "db_time_ms_per_min", "none", &tiers, why, sizeof(why)),
        TENANTREQ_OK);
    assert_int_equal(req.db_time_op, TENANTREQ_CLEAR);
    assert_int_equal(
        tenantreq_set_text(&req, "db_time_ms_per_min", "100000001", &tiers, why, sizeof(why)),
        TENANTREQ_BAD_NUMBER);
    /* Its bound is the tier key's. */
    struct tier_table t;
    snprintf(json, sizeof(json), "{\"free\": {\"db_time_ms_per_min\": %d}}", TENANTREQ_DB_TIME_MAX);
    assert_int_equal(tiers_parse(json, strlen(json), &t, err, sizeof(err)), 0);
    snprintf(json, sizeof(json), "{\"free\": {\"db_time_ms_per_min\": %d}}",
             TENANTREQ_DB_TIME_MAX + 1);
    assert_int_not_equal(tiers_parse(json, strlen(json), &t, err, sizeof(err)), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(a_create_takes_a_name_a_tier_and_an_optional_rate_limit),
        cmocka_unit_test(a_create_without_name_or_tier_is_a_bad_body),
        cmocka_unit_test(an_update_changes_tier_and_overrides_but_never_the_name),
        cmocka_unit_test(bad_names_are_refused_as_names),
        cmocka_unit_test(unknown_tiers_are_refused_with_the_list),
        cmocka_unit_test(bad_numbers_are_refused_as_numbers),
        cmocka_unit_test(what_is_not_a_json_object_of_known_fields_is_a_bad_body),
        cmocka_unit_test(the_cli_text_gets_the_same_verdicts_and_messages),
        cmocka_unit_test(the_rate_limit_bound_is_the_tier_keys),
        cmocka_unit_test(the_database_time_budget_is_an_override_like_the_rate_limit),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
