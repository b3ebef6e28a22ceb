/*
 * test_tenants: per-tenant accounting, database-time budgets and shadow mode through the real
 * binary (tenantstat.h, dbbudget.h, tenantview.h).
 *
 * An expensive tenant (delay_ms: its statement holds a connection that long) and a cheap one
 * at the same request rate: the expensive one heads /metrics/tenants within two seconds, with
 * its figures, in the Prometheus top tenants and the "other" series, and in its admin usage.
 * With a budget, the expensive one is refused 429 db_time_exhausted with a truthful
 * Retry-After and its RateLimit policy while the cheap one is untouched; in shadow mode the
 * same traffic is refused nothing and counted the same. Bad by=/limit=/tier= are 400 JSON.
 */
#include "harness.h"
#include "../promtext.h"

#include <math.h>

#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#define TOKEN  "admin-secret-for-tests-0123456789"
#define BEARER "Authorization: Bearer " TOKEN

/* "acct": accounting only; "budget": 300 ms of database time per minute per tenant;
 * "shadow": the same budget and a rate limit of 3 per hour, both in shadow mode. The tarpit
 * and the capacity controller are off: refusals are answered at once, nothing is shed. */
static struct h_suite suite = {
    .name = "tenants",
    .tiers_json = "{\"acct\": {\"rate_limit\": 0},"
                  " \"budget\": {\"rate_limit\": 0, \"db_time_ms_per_min\": 300},"
                  " \"shadow\": {\"rate_limit\": 3, \"rate_window_s\": 3600,"
                  " \"rate_limit_shadow\": 1, \"db_time_ms_per_min\": 300, \"db_time_shadow\": 1}}",
    .env = {"TARPIT=false", "CAPACITY_CONTROL=false", "ADMIN_TOKEN=" TOKEN, NULL}};

static int setup(void **state)
{
    (void)state;
    return h_suite_start(&suite);
}

static int teardown(void **state)
{
    (void)state;
    h_suite_stop(&suite);
    return 0;
}

/* One GET /api/data of tenant on tier (delay_ms > 0: its statement holds a connection that
 * long); the response in out. */
static void call(const char *tier, const char *tenant, int delay_ms, struct h_resp *out)
{
    char th[64], tn[96], path[96];
    snprintf(th, sizeof(th), "X-Tenant-Tier: %s", tier);
    snprintf(tn, sizeof(tn), "X-Tenant-Id: %s", tenant);
    snprintf(path, sizeof(path), "/api/data?limit=1&delay_ms=%d", delay_ms);
    const char *h[] = {th, tn, NULL};
    assert_int_equal(h_get(h_url(&suite.srv, path), h, out), 0);
}

static long status_of(const char *tier, const char *tenant, int delay_ms)
{
    struct h_resp r;
    call(tier, tenant, delay_ms, &r);
    long s = r.status;
    h_resp_free(&r);
    return s;
}

/* tier's object in /metrics/tenants?<query> (caller decrefs the document in *doc). */
static json_t *tenants_of(const char *tier, const char *query, json_t **doc)
{
    char path[160];
    snprintf(path, sizeof(path), "/metrics/tenants?tier=%s%s", tier, query);
    *doc = h_get_json(h_url(&suite.srv, path));
    return json_object_get(json_object_get(*doc, "tiers"), tier);
}

/* The tenant's row in tier's top (NULL when absent); *doc as above. */
static json_t *row_of(const char *tier, const char *tenant, json_t **doc)
{
    json_t *list = json_object_get(tenants_of(tier, "&limit=100", doc), "tenants");
    size_t i;
    json_t *row;
    json_array_foreach(list, i, row)
    {
        if (!strcmp(json_string_value(json_object_get(row, "tenant")), tenant))
            return row;
    }
    return NULL;
}

/* The value of name{tier="tier",tenant="tenant"} in /metrics, which must parse as a whole;
 * NAN when absent. */
static double prom_tenant(const char *name, const char *tier, const char *tenant)
{
    struct h_resp r;
    assert_int_equal(h_get(h_url(&suite.srv, "/metrics"), NULL, &r), 0);
    struct prom_doc d;
    char err[200];
    if (prom_parse(r.body, &d, err, sizeof(err)) != 0)
        fail_msg("/metrics does not parse: %s", err);
    double v = NAN;
    for (size_t i = 0; i < d.ns; i++) {
        const struct prom_sample *s = &d.s[i];
        if (!strcmp(s->name, name) && s->nlabels == 2 && !strcmp(s->lname[0], "tier") &&
            !strcmp(s->lval[0], tier) && !strcmp(s->lname[1], "tenant") &&
            !strcmp(s->lval[1], tenant))
            v = s->value;
    }
    prom_free(&d);
    h_resp_free(&r);
    return v;
}

static bool heavy_heads_acct(void)
{
    json_t *doc;
    json_t *first = json_array_get(json_object_get(tenants_of("acct", "", &doc), "tenants"), 0);
    bool ok = first && !strcmp(json_string_value(json_object_get(first, "tenant")), "heavy") &&
              json_integer_value(json_object_get(first, "requests")) == 5;
    json_decref(doc);
    return ok;
}

static void the_expensive_tenant_heads_metrics_tenants_within_two_seconds(void **state)
{
    (void)state;
    int64_t t0 = h_now_ms();
    for (int i = 0; i < 5; i++) { /* the same rate: one each, turn by turn */
        assert_int_equal(status_of("acct", "heavy", 100), 200);
        assert_int_equal(status_of("acct", "cheap", 0), 200);
    }
    assert_true(H_WAIT(heavy_heads_acct(), 2000 - (int)(h_now_ms() - t0)));
    json_t *doc;
    json_t *heavy = row_of("acct", "heavy", &doc);
    assert_non_null(heavy);
    assert_true(json_real_value(json_object_get(heavy, "db_time_ms")) >= 500.0);
    assert_true(json_is_true(json_object_get(heavy, "exact")));
    json_t *doc2;
    json_t *cheap = row_of("acct", "cheap", &doc2);
    assert_non_null(cheap);
    assert_int_equal(json_integer_value(json_object_get(cheap, "requests")), 5);
    assert_true(json_real_value(json_object_get(cheap, "db_time_ms")) < 250.0);
    json_t *total =
        json_object_get(json_object_get(json_object_get(doc, "tiers"), "acct"), "total");
    assert_int_equal(json_integer_value(json_object_get(total, "requests")), 10);
    json_decref(doc2);
    json_decref(doc);
    /* Prometheus: the top tenants by name, the rest as "other" (none here). */
    assert_true(prom_tenant("bulkhead_tenant_db_time_seconds", "acct", "heavy") >= 0.5);
    assert_true(prom_tenant("bulkhead_tenant_requests", "acct", "cheap") == 5.0);
    assert_true(prom_tenant("bulkhead_tenant_requests", "acct", "other") == 0.0);
    /* limit=1: only the heaviest, the other summed. */
    json_t *t = tenants_of("acct", "&limit=1", &doc);
    assert_int_equal(json_array_size(json_object_get(t, "tenants")), 1);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(t, "other"), "requests")),
                     5);
    json_decref(doc);
    /* The admin's view of one tenant. */
    const char *h[] = {BEARER, NULL};
    struct h_resp r;
    assert_int_equal(h_get(h_url(&suite.srv, "/admin/tenants/heavy/usage"), h, &r), 0);
    assert_int_equal(r.status, 200);
    json_t *u = h_json(&r);
    json_t *first = json_array_get(json_object_get(u, "tiers"), 0);
    assert_string_equal(json_string_value(json_object_get(first, "tier")), "acct");
    assert_int_equal(json_integer_value(json_object_get(first, "requests")), 5);
    json_decref(u);
    h_resp_free(&r);
}

static void bad_arguments_are_400_and_change_nothing(void **state)
{
    (void)state;
    const char *bad[] = {"/metrics/tenants?by=cpu",    "/metrics/tenants?limit=0",
                         "/metrics/tenants?limit=101", "/metrics/tenants?limit=x",
                         "/metrics/tenants?tier=nope", NULL};
    for (int i = 0; bad[i]; i++) {
        struct h_resp r;
        assert_int_equal(h_get(h_url(&suite.srv, bad[i]), NULL, &r), 0);
        assert_int_equal(r.status, 400);
        json_t *o = h_json(&r);
        assert_non_null(json_object_get(o, "error"));
        json_decref(o);
        h_resp_free(&r);
    }
    const char *h[] = {BEARER, NULL};
    struct h_resp r;
    assert_int_equal(h_get(h_url(&suite.srv, "/admin/tenants/bad%20name/usage"), h, &r), 0);
    assert_int_equal(r.status, 400);
    h_resp_free(&r);
    assert_int_equal(h_request("POST", h_url(&suite.srv, "/admin/tenants/x/usage"), h, NULL, &r),
                     0);
    assert_int_equal(r.status, 405);
    h_resp_free(&r);
    assert_int_equal(h_get(h_url(&suite.srv, "/admin/tenants/x/usage"), NULL, &r), 0);
    assert_int_equal(r.status, 401);
    h_resp_free(&r);
}

static int64_t count_of(json_t *row, const char *section, const char *reason)
{
    return json_integer_value(json_object_get(json_object_get(row, section), reason));
}

static void
over_its_budget_the_expensive_tenant_is_refused_and_the_cheap_one_untouched(void **state)
{
    (void)state;
    /* 300 ms per minute: two statements of 200 ms run (the second into debt), then refused. Each
     * is charged as its statement ends, before its reply: the next request, sent on that reply,
     * knows the debt (no wait here: a charge made after the reply, as before, let the next one
     * in once beside the suite). */
    assert_int_equal(status_of("budget", "heavy", 200), 200);
    assert_int_equal(status_of("budget", "cheap", 0), 200);
    assert_int_equal(status_of("budget", "heavy", 200), 200);
    assert_int_equal(status_of("budget", "cheap", 0), 200);
    struct h_resp r;
    call("budget", "heavy", 200, &r);
    assert_int_equal(r.status, 429);
    json_t *o = h_json(&r);
    assert_string_equal(json_string_value(json_object_get(o, "error")), "db_time_exhausted");
    json_decref(o);
    /* At least 100 ms of debt (two statements of at least 200 ms) at 300 ms per minute: paid
     * back in 20 s or more; how much more depends on how long the statements really took on
     * this machine, so it is checked against the database time counted for the tenant below. */
    char v[128];
    assert_non_null(h_header(&r, "Retry-After", v, sizeof(v)));
    int retry = atoi(v);
    assert_true(retry >= 19);
    assert_non_null(h_header(&r, "RateLimit-Policy", v, sizeof(v)));
    assert_non_null(strstr(v, "\"budget_db_time\";q=300;w=60"));
    assert_non_null(h_header(&r, "RateLimit", v, sizeof(v)));
    assert_non_null(strstr(v, "\"budget_db_time\";r=0;t="));
    h_resp_free(&r);
    assert_int_equal(status_of("budget", "heavy", 200), 429);
    for (int i = 0; i < 5; i++)
        assert_int_equal(status_of("budget", "cheap", 0), 200);
    json_t *doc;
    json_t *heavy = row_of("budget", "heavy", &doc);
    assert_int_equal(count_of(heavy, "refused_by", "db_time_exhausted"), 2);
    /* The Retry-After is the debt's pay-back time: (used - 300 ms) at 5 ms per second. */
    double used_ms = json_number_value(json_object_get(heavy, "db_time_ms"));
    double expect_s = (used_ms - 300.0) * 60.0 / 300.0;
    assert_true(retry >= expect_s - 2 && retry <= expect_s + 2);
    json_t *doc2;
    json_t *cheap = row_of("budget", "cheap", &doc2);
    assert_int_equal(json_integer_value(json_object_get(cheap, "refused")), 0);
    json_decref(doc2);
    json_decref(doc);
    /* The admin sees the debt. */
    const char *h[] = {BEARER, NULL};
    assert_int_equal(h_get(h_url(&suite.srv, "/admin/tenants/heavy/usage"), h, &r), 0);
    json_t *u = h_json(&r);
    size_t i;
    json_t *t;
    bool seen = false;
    json_array_foreach(json_object_get(u, "tiers"), i, t)
    {
        if (strcmp(json_string_value(json_object_get(t, "tier")), "budget") != 0)
            continue;
        json_t *b = json_object_get(t, "db_time_budget");
        assert_true(json_is_true(json_object_get(b, "in_debt")));
        assert_int_equal(json_integer_value(json_object_get(b, "limit_ms_per_min")), 300);
        seen = true;
    }
    assert_true(seen);
    json_decref(u);
    h_resp_free(&r);
}

static void shadow_mode_refuses_nothing_and_counts_the_same(void **state)
{
    (void)state;
    /* The budget test's sequence: there, two refusals. */
    for (int i = 0; i < 4; i++) {
        struct h_resp r;
        call("shadow", "heavy", 200, &r);
        assert_int_equal(r.status, 200);
        char v[128];
        assert_null(h_header(&r, "RateLimit-Policy", v, sizeof(v))); /* nothing shown */
        h_resp_free(&r);
        assert_int_equal(status_of("shadow", "cheap", 0), 200);
    }
    json_t *doc;
    json_t *heavy = row_of("shadow", "heavy", &doc);
    assert_int_equal(json_integer_value(json_object_get(heavy, "refused")), 0);
    assert_int_equal(count_of(heavy, "shadow_refused_by", "db_time_exhausted"), 2);
    assert_int_equal(count_of(heavy, "shadow_refused_by", "rate_limited"), 1); /* 4 of 3 */
    json_t *doc2;
    json_t *cheap = row_of("shadow", "cheap", &doc2);
    assert_int_equal(count_of(cheap, "shadow_refused_by", "db_time_exhausted"), 0);
    assert_int_equal(count_of(cheap, "shadow_refused_by", "rate_limited"), 1);
    json_decref(doc2);
    json_decref(doc);
    assert_true(h_server_log_has(&suite.srv, "\"event\":\"shadow_refusal\""));
}

/* A tenant's own budget through the admin API (AUTH_MODE=apikey) wins over its tier's: a
 * second server on the suite's database and tier file, TEST_PARAMS on for delay_ms. */
static void a_tenants_own_budget_set_through_the_admin_api_wins_over_its_tiers(void **state)
{
    (void)state;
    char tiers_env[450];
    snprintf(tiers_env, sizeof(tiers_env), "TIERS_FILE=%s", suite.tiers_path);
    const char *env[] = {"AUTH_MODE=apikey",
                         "TEST_PARAMS=on",
                         "ADMIN_TOKEN=" TOKEN,
                         "TARPIT=false",
                         "CAPACITY_CONTROL=false",
                         tiers_env,
                         NULL};
    struct h_server srv;
    assert_int_equal(h_server_start(&srv, suite.db_url, env), 0);
    const char *ah[] = {BEARER, "Content-Type: application/json", NULL};
    struct h_resp r;
    assert_int_equal(h_request("POST", h_url(&srv, "/admin/tenants"), ah,
                               "{\"name\":\"own-budget\",\"tier\":\"acct\","
                               "\"db_time_ms_per_min\":300}",
                               &r),
                     0);
    assert_int_equal(r.status, 201);
    json_t *t = h_json(&r);
    char key[80], auth[120];
    snprintf(key, sizeof(key), "%s", json_string_value(json_object_get(t, "api_key")));
    assert_int_equal(
        json_integer_value(json_object_get(json_object_get(t, "overrides"), "db_time_ms_per_min")),
        300);
    json_decref(t);
    h_resp_free(&r);
    snprintf(auth, sizeof(auth), "Authorization: Bearer %s", key);
    const char *kh[] = {auth, NULL};
    const char *url = h_url(&srv, "/api/data?limit=1&delay_ms=200");
    /* The key is usable once the key table reloaded (a notification). */
    assert_true(
        H_WAIT(h_get(url, kh, &r) == 0 && r.status != 401 ? true : (h_resp_free(&r), false), 5000));
    assert_int_equal(r.status, 200); /* acct has no budget: its own does */
    h_resp_free(&r);
    assert_int_equal(h_get(url, kh, &r), 0);
    assert_int_equal(r.status, 200);
    h_resp_free(&r);
    assert_int_equal(h_get(url, kh, &r), 0);
    assert_int_equal(r.status, 429);
    assert_non_null(strstr(r.body, "db_time_exhausted"));
    assert_non_null(strstr(r.body, "its own budget"));
    h_resp_free(&r);
    /* null removes it: the tier's (none) applies again once the table reloaded. */
    assert_int_equal(h_request("PATCH", h_url(&srv, "/admin/tenants/own-budget"), ah,
                               "{\"db_time_ms_per_min\":null}", &r),
                     0);
    assert_int_equal(r.status, 200);
    h_resp_free(&r);
    assert_true(H_WAIT(h_get(h_url(&srv, "/api/data?limit=1"), kh, &r) == 0 && r.status == 200
                           ? true
                           : (h_resp_free(&r), false),
                       5000));
    h_resp_free(&r);
    assert_int_equal(h_server_stop(&srv, SIGTERM, 30000), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(the_expensive_tenant_heads_metrics_tenants_within_two_seconds),
        cmocka_unit_test(bad_arguments_are_400_and_change_nothing),
        cmocka_unit_test(
            over_its_budget_the_expensive_tenant_is_refused_and_the_cheap_one_untouched),
        cmocka_unit_test(shadow_mode_refuses_nothing_and_counts_the_same),
        cmocka_unit_test(a_tenants_own_budget_set_through_the_admin_api_wins_over_its_tiers),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
