/*
 * test_admin: the admin API for tenants (/admin/tenants, /admin/audit) through two instances
 * of the real binary on one database and one Redis (fixture: adminfx).
 * Proves: the token is required; a tenant created on one instance calls the other, and no read
 * ever shows a key or its hash; an override of 5 admits exactly 5 in a burst, shared by both
 * instances through Redis and alone on a memory-backed one; a tier change and an override's
 * removal take effect on both; rotation and revocation refuse the old key on both; a change
 * made without a notification still reaches both within AUTH_CACHE_TTL_MS; every bad request
 * gets its 4xx and changes nothing; every action, by the API or the CLI, is an audit row (read
 * back through GET /admin/audit, page by page) and an event line; the list is paged; the
 * metrics count the tenants with overrides. The schema's upgrade, the limit on failed
 * authentications and revocations under an hour-long cache are test_admin_auth's.
 */
#include "adminfx.h"
#include "../redisproc.h"
#include "harness.h"

#include <math.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include <cmocka.h>

static long call(int i, const char *key)
{
    return adfx_call_on(&adfx_inst[i], key, NULL);
}

/* Whether instance i admits key under RateLimit-Limit want (-1: none, unlimited). */
static bool limit_is(int i, const char *key, long want)
{
    long limit;
    return adfx_call_on(&adfx_inst[i], key, &limit) == 200 && limit == want;
}

/* free.rateLimiter.tenantOverrides of server s. */
static int64_t overrides_on(const struct h_server *s, const char *tier)
{
    return h_metric(s->base, tier, "rateLimiter", "tenantOverrides");
}

/* Everything an admin change can touch, in one number: the tenants' rows and the audit's. */
static int64_t db_fingerprint(void)
{
    return h_sql_int(adfx_db_url, "SELECT hashtext(coalesce((SELECT string_agg(t::text, ',' ORDER "
                                  "BY id) FROM tenants t), '') || (SELECT count(*) FROM "
                                  "tenant_audit)::text)");
}

/* Run the tenant CLI against the suite's database; its exit status, stdout into out. */
static int cli(char *out, size_t outlen, const char *args)
{
    char cmd[1200];
    snprintf(cmd, sizeof(cmd), "cd %s && DATABASE_URL='%s' %s %s 2>/dev/null",
             getenv("BH_TEST_WORK"), adfx_db_url, h_bin(), args);
    FILE *p = popen(cmd, "r");
    size_t n = fread(out, 1, outlen - 1, p);
    out[n] = '\0';
    char sink[4096];
    while (fread(sink, 1, sizeof(sink), p) > 0)
        ; /* read to the end: a closed pipe would kill the command with SIGPIPE */
    return WEXITSTATUS(pclose(p));
}

/* ---- tests -------------------------------------------------------------------------------- */

static void admin_requests_need_the_token(void **state)
{
    (void)state;
    int64_t before = db_fingerprint();
    static const char *const wrong[] = {"X-Nothing: 1", "Authorization: Bearer wrong",
                                        "Authorization: Bearer " ADFX_TOKEN "x",
                                        "Authorization: Basic " ADFX_TOKEN,
                                        "Authorization: Bearer admin-secret-for-tests-012345678"};
    const char *from = "192.0.2.1"; /* a stranger: its failures limit nobody else */
    for (size_t k = 0; k < sizeof(wrong) / sizeof(wrong[0]); k++) {
        struct h_resp r;
        char code[64];
        assert_int_equal(adfx_admin_from(&adfx_inst[0], from, "POST", "/admin/tenants",
                                         "{\"name\":\"intruder\",\"tier\":\"enterprise\"}",
                                         wrong[k], &r),
                         401);
        assert_string_equal(adfx_error_code(&r, code, sizeof(code)), "unauthorized");
        h_resp_free(&r);
        assert_int_equal(
            adfx_admin_from(&adfx_inst[1], from, "GET", "/admin/tenants", NULL, wrong[k], NULL),
            401);
        assert_int_equal(
            adfx_admin_from(&adfx_inst[1], from, "GET", "/admin/audit", NULL, wrong[k], NULL), 401);
    }
    assert_int_equal(db_fingerprint(), before);
}

static void a_tenant_created_on_one_instance_calls_the_other(void **state)
{
    (void)state;
    struct h_resp r;
    assert_int_equal(
        adfx_admin(0, "POST", "/admin/tenants", "{\"name\":\"acme\",\"tier\":\"free\"}", &r), 201);
    json_t *t = h_json(&r);
    const char *key = json_string_value(json_object_get(t, "api_key"));
    assert_non_null(key);
    assert_memory_equal(key, "bh_", 3);
    assert_string_equal(json_string_value(json_object_get(t, "name")), "acme");
    assert_string_equal(json_string_value(json_object_get(t, "tier")), "free");
    assert_int_equal(json_object_size(json_object_get(t, "overrides")), 0);
    assert_non_null(json_string_value(json_object_get(t, "created")));
    assert_true(json_is_null(json_object_get(t, "revoked")));
    char k[80], sql[300];
    snprintf(k, sizeof(k), "%s", key);
    json_decref(t);
    h_resp_free(&r);
    /* Stored hashed: the hash is there, the key nowhere. */
    snprintf(sql, sizeof(sql),
             "SELECT count(*) FROM tenants WHERE name = 'acme' AND key_hash = "
             "encode(sha256('%s'), 'hex')",
             k);
    assert_int_equal(h_sql_int(adfx_db_url, sql), 1);
    snprintf(sql, sizeof(sql),
             "SELECT (SELECT count(*) FROM tenants t WHERE position('%s' in t::text) > 0) + "
             "(SELECT count(*) FROM tenant_audit a WHERE position('%s' in a::text) > 0)",
             k + 3, k + 3);
    assert_int_equal(h_sql_int(adfx_db_url, sql), 0);

    /* The other instance knows the key within the cache lifetime. */
    assert_true(H_WAIT(call(1, k) == 200, ADFX_SEEN_WITHIN_MS));
    assert_int_equal(call(0, k), 200);

    /* Reads show the tenant, never a key or its hash. */
    char hash_sql[200];
    snprintf(hash_sql, sizeof(hash_sql), "SELECT key_hash FROM tenants WHERE name = 'acme'");
    for (int i = 0; i < 2; i++) {
        assert_int_equal(adfx_admin(i, "GET", "/admin/tenants/acme", NULL, &r), 200);
        t = h_json(&r);
        assert_string_equal(json_string_value(json_object_get(t, "tier")), "free");
        assert_null(json_object_get(t, "api_key"));
        assert_null(strstr(r.body, "bh_"));
        assert_null(strstr(r.body, "key"));
        assert_null(strstr(r.body, "hash"));
        json_decref(t);
        h_resp_free(&r);
    }
    /* The same name again, on either instance: 409, and no second tenant. */
    char code[64];
    assert_int_equal(
        adfx_admin(1, "POST", "/admin/tenants", "{\"name\":\"acme\",\"tier\":\"pro\"}", &r), 409);
    assert_string_equal(adfx_error_code(&r, code, sizeof(code)), "tenant_exists");
    h_resp_free(&r);
    assert_int_equal(h_sql_int(adfx_db_url, "SELECT count(*) FROM tenants WHERE name = 'acme'"), 1);
}

static void an_override_of_5_admits_exactly_5_in_a_burst(void **state)
{
    (void)state;
    char k[80], auth[120];
    int64_t o0 = overrides_on(&adfx_inst[0], "free");
    adfx_create(0, "burst5", "free", 5, k, sizeof(k));
    /* Both instances have loaded it when their metrics count its override (no request spent). */
    assert_true(H_WAIT(overrides_on(&adfx_inst[0], "free") == o0 + 1 &&
                           overrides_on(&adfx_inst[1], "free") == o0 + 1,
                       ADFX_SEEN_WITHIN_MS));
    assert_true(h_prom(adfx_inst[1].base, "bulkhead_ratelimit_tenant_overrides", "tier=\"free\"") ==
                (double)(o0 + 1));
    snprintf(auth, sizeof(auth), "Authorization: Bearer %s", k);
    const char *h[] = {auth, NULL};
    long st[12];
    assert_int_equal(h_burst("GET", h_url(&adfx_inst[0], "/api/data?limit=1"), h, 12, 12, st, NULL),
                     0);
    assert_int_equal(h_count(st, 12, 200), 5); /* its own 5, not free's 100 */
    assert_int_equal(h_count(st, 12, 429), 7);
    /* The allowance is the tenant's across instances (Redis): the other instance admits at most
     * its lease before Redis's count reaches it (one request: 10 % of 5, at least 1; README,
     * "a tenant's admissions over N instances"), then refuses. */
    assert_int_equal(h_burst("GET", h_url(&adfx_inst[1], "/api/data?limit=1"), h, 6, 6, st, NULL),
                     0);
    assert_true(h_count(st, 6, 200) <= 1);
    assert_true(h_count(st, 6, 429) >= 5);
    struct h_resp r;
    h_get(h_url(&adfx_inst[1], "/api/data?limit=1"), h, &r);
    char v[32];
    assert_string_equal(h_header(&r, "RateLimit-Limit", v, sizeof(v)), "5");
    assert_string_equal(h_header(&r, "RateLimit-Policy", v, sizeof(v)), "\"free\";q=5;w=3600");
    assert_non_null(strstr(r.body, "tenant burst5 is allowed 5 requests per 3600 s"));
    h_resp_free(&r);

    /* The same with the in-memory limiter, on an instance of its own. */
    struct h_server m;
    const char *env[8];
    size_t n = adfx_env(env, 8);
    env[n] = NULL;
    assert_int_equal(h_server_start(&m, adfx_db_url, env), 0);
    adfx_create(0, "burst5m", "free", 5, k, sizeof(k));
    assert_true(H_WAIT(overrides_on(&m, "free") == o0 + 2, ADFX_SEEN_WITHIN_MS));
    snprintf(auth, sizeof(auth), "Authorization: Bearer %s", k);
    assert_int_equal(h_burst("GET", h_url(&m, "/api/data?limit=1"), h, 12, 12, st, NULL), 0);
    assert_int_equal(h_count(st, 12, 200), 5);
    assert_int_equal(h_count(st, 12, 429), 7);
    assert_int_equal(h_server_stop(&m, SIGTERM, 20000), 0);
}

static void a_tier_change_and_an_override_removal_take_effect_on_both(void **state)
{
    (void)state;
    char k[80];
    adfx_create(1, "mover", "free", 7, k, sizeof(k));
    for (int i = 0; i < 2; i++)
        assert_true(H_WAIT(limit_is(i, k, 7), ADFX_SEEN_WITHIN_MS));

    /* pro: the override still wins over pro's 1000. */
    struct h_resp r;
    assert_int_equal(adfx_admin(0, "PATCH", "/admin/tenants/mover", "{\"tier\":\"pro\"}", &r), 200);
    json_t *t = h_json(&r);
    assert_string_equal(json_string_value(json_object_get(t, "tier")), "pro");
    assert_int_equal(
        json_integer_value(json_object_get(json_object_get(t, "overrides"), "rate_limit")), 7);
    json_decref(t);
    h_resp_free(&r);
    for (int i = 0; i < 2; i++)
        assert_true(
            H_WAIT(h_metric(adfx_inst[i].base, "pro", "rateLimiter", "tenantOverrides") == 1 &&
                       limit_is(i, k, 7),
                   ADFX_SEEN_WITHIN_MS));

    /* null removes the override: pro's own limit applies, on both. */
    assert_int_equal(adfx_admin(1, "PATCH", "/admin/tenants/mover", "{\"rate_limit\":null}", &r),
                     200);
    t = h_json(&r);
    assert_int_equal(json_object_size(json_object_get(t, "overrides")), 0);
    json_decref(t);
    h_resp_free(&r);
    for (int i = 0; i < 2; i++)
        assert_true(H_WAIT(limit_is(i, k, 1000), ADFX_SEEN_WITHIN_MS));

    /* enterprise, tier and override in one request: 0 is an override too (unlimited). */
    assert_int_equal(adfx_admin(0, "PATCH", "/admin/tenants/mover",
                                "{\"tier\":\"enterprise\",\"rate_limit\":0}", NULL),
                     200);
    for (int i = 0; i < 2; i++)
        assert_true(H_WAIT(
            limit_is(i, k, -1) &&
                h_metric(adfx_inst[i].base, "enterprise", "rateLimiter", "tenantOverrides") == 1 &&
                h_metric(adfx_inst[i].base, "pro", "rateLimiter", "tenantOverrides") == 0,
            ADFX_SEEN_WITHIN_MS));
    /* An override below the tier's limit in an unlimited tier limits the tenant. */
    assert_int_equal(adfx_admin(1, "PATCH", "/admin/tenants/mover", "{\"rate_limit\":50}", NULL),
                     200);
    for (int i = 0; i < 2; i++)
        assert_true(H_WAIT(limit_is(i, k, 50), ADFX_SEEN_WITHIN_MS));
}

static void rotation_and_revocation_refuse_the_old_key_on_both(void **state)
{
    (void)state;
    char k1[80], k2[80];
    adfx_create(0, "rotor", "pro", -1, k1, sizeof(k1));
    for (int i = 0; i < 2; i++)
        assert_true(H_WAIT(call(i, k1) == 200, ADFX_SEEN_WITHIN_MS));

    struct h_resp r;
    assert_int_equal(adfx_admin(1, "POST", "/admin/tenants/rotor/keys", NULL, &r), 201);
    json_t *t = h_json(&r);
    snprintf(k2, sizeof(k2), "%s", json_string_value(json_object_get(t, "api_key")) ?: "");
    assert_string_equal(json_string_value(json_object_get(t, "tier")), "pro");
    json_decref(t);
    h_resp_free(&r);
    assert_int_equal(strlen(k2), 46);
    assert_string_not_equal(k1, k2);
    for (int i = 0; i < 2; i++) {
        assert_true(H_WAIT(call(i, k1) == 401, ADFX_SEEN_WITHIN_MS));
        assert_true(H_WAIT(call(i, k2) == 200, ADFX_SEEN_WITHIN_MS));
    }

    assert_int_equal(adfx_admin(0, "DELETE", "/admin/tenants/rotor", NULL, &r), 204);
    assert_int_equal(r.len, 0);
    h_resp_free(&r);
    for (int i = 0; i < 2; i++)
        assert_true(H_WAIT(call(i, k2) == 401, ADFX_SEEN_WITHIN_MS));
    assert_int_equal(adfx_admin(1, "GET", "/admin/tenants/rotor", NULL, &r), 200);
    t = h_json(&r);
    assert_non_null(json_string_value(json_object_get(t, "revoked")));
    json_decref(t);
    h_resp_free(&r);
    /* Revoking again changes nothing and still answers 204. */
    int64_t revoked_at =
        h_sql_int(adfx_db_url, "SELECT extract(epoch from revoked_at)::bigint * 1000000 + "
                               "extract(microseconds from revoked_at)::bigint % 1000000 FROM "
                               "tenants WHERE name = 'rotor'");
    assert_int_equal(adfx_admin(1, "DELETE", "/admin/tenants/rotor", NULL, NULL), 204);
    assert_int_equal(h_sql_int(adfx_db_url,
                               "SELECT extract(epoch from revoked_at)::bigint * 1000000 + "
                               "extract(microseconds from revoked_at)::bigint % 1000000 "
                               "FROM tenants WHERE name = 'rotor'"),
                     revoked_at);
    assert_int_equal(call(0, k1), 401);
    assert_int_equal(call(1, k1), 401);
}

static void a_change_without_notification_reaches_both_within_the_cache_lifetime(void **state)
{
    (void)state;
    char k[80];
    adfx_create(0, "quiet", "free", -1, k, sizeof(k));
    for (int i = 0; i < 2; i++)
        assert_true(H_WAIT(call(i, k) == 200, ADFX_SEEN_WITHIN_MS));
    /* Straight in the table, as a missed notification would leave it: only the periodic
     * reload (AUTH_CACHE_TTL_MS) can bring it to the instances. */
    assert_int_equal(h_sql_exec(adfx_db_url, "UPDATE tenants SET revoked_at = now() WHERE name = "
                                             "'quiet'"),
                     0);
    for (int i = 0; i < 2; i++)
        assert_true(H_WAIT(call(i, k) == 401, ADFX_SEEN_WITHIN_MS));
}

static void every_bad_request_gets_its_4xx_and_changes_nothing(void **state)
{
    (void)state;
    static const struct {
        const char *method, *path, *body;
        long status;
        const char *code;
    } cases[] = {
        {"POST", "/admin/tenants", "{\"name\":\"a b\",\"tier\":\"free\"}", 400, "invalid_tenant"},
        {"POST", "/admin/tenants", "{\"name\":\"x/y\",\"tier\":\"free\"}", 400, "invalid_tenant"},
        {"POST", "/admin/tenants", "{\"name\":\"new1\",\"tier\":\"gold\"}", 400, "invalid_tier"},
        {"POST", "/admin/tenants", "{\"name\":\"new1\",\"tier\":\"free\",\"rate_limit\":-1}", 400,
         "invalid_argument"},
        {"POST", "/admin/tenants", "{\"name\":\"new1\",\"tier\":\"free\",\"rate_limit\":1.5}", 400,
         "invalid_argument"},
        {"POST", "/admin/tenants",
         "{\"name\":\"new1\",\"tier\":\"free\",\"rate_limit\":1000000001}", 400,
         "invalid_argument"},
        {"POST", "/admin/tenants", "{\"name\":\"new1\",\"tier\":\"free\",\"burst\":1}", 400,
         "invalid_body"},
        {"POST", "/admin/tenants", "{\"name\":\"new1\"}", 400, "invalid_body"},
        {"POST", "/admin/tenants", "{\"name\":\"new1\",", 400, "invalid_body"},
        {"POST", "/admin/tenants", "", 400, "invalid_body"},
        {"POST", "/admin/tenants", "{\"name\":\"acme\",\"tier\":\"free\"}", 409, "tenant_exists"},
        {"PATCH", "/admin/tenants/acme", "{}", 400, "invalid_body"},
        {"PATCH", "/admin/tenants/acme", "{\"name\":\"other\"}", 400, "invalid_body"},
        {"PATCH", "/admin/tenants/acme", "{\"tier\":\"platinum\"}", 400, "invalid_tier"},
        {"PATCH", "/admin/tenants/acme", "{\"rate_limit\":\"5\"}", 400, "invalid_argument"},
        {"PATCH", "/admin/tenants/acme", "{\"tier\":\"pro\",\"rate_limit\":-2}", 400,
         "invalid_argument"},
        {"PATCH", "/admin/tenants/nobody", "{\"tier\":\"pro\"}", 404, "tenant_not_found"},
        {"PATCH", "/admin/tenants", "{\"tier\":\"pro\"}", 405, "method_not_allowed"},
        {"PUT", "/admin/tenants/acme", "{\"tier\":\"pro\"}", 405, "method_not_allowed"},
        {"DELETE", "/admin/tenants/nobody", NULL, 404, "tenant_not_found"},
        {"DELETE", "/admin/tenants/acme", "{}", 400, "invalid_body"},
        {"DELETE", "/admin/tenants/bad%20name", NULL, 400, "invalid_tenant"},
        {"POST", "/admin/tenants/nobody/keys", NULL, 404, "tenant_not_found"},
        {"POST", "/admin/tenants/acme/keys", "{\"x\":1}", 400, "invalid_body"},
        {"GET", "/admin/tenants/acme/keys", NULL, 405, "method_not_allowed"},
        {"GET", "/admin/tenants/nobody", NULL, 404, "tenant_not_found"},
        {"GET",
         "/admin/tenants/"
         "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
         NULL, 400, "invalid_tenant"},
        {"GET", "/admin/tenants?limit=0", NULL, 400, "invalid_argument"},
        {"GET", "/admin/tenants?limit=1001", NULL, 400, "invalid_argument"},
        {"GET", "/admin/tenants?after=bad%20name", NULL, 400, "invalid_tenant"},
        {"GET", "/admin/audit?before=-1", NULL, 400, "invalid_argument"},
        {"GET", "/admin/audit?tenant=a%2Fb", NULL, 400, "invalid_tenant"},
        {"POST", "/admin/audit", NULL, 405, "method_not_allowed"},
        {"GET", "/admin/tenantsx", NULL, 404, "not_found"},
        {"GET", "/admin/tenants/acme/other", NULL, 404, "not_found"},
    };
    int64_t before = db_fingerprint();
    assert_true(before != INT64_MIN);
    for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
        struct h_resp r;
        char code[64];
        long st = adfx_admin((int)(k % 2), cases[k].method, cases[k].path, cases[k].body, &r);
        json_t *j = h_json(&r);
        if (st != cases[k].status ||
            strcmp(adfx_error_code(&r, code, sizeof(code)), cases[k].code) ||
            !json_string_value(json_object_get(j, "message")))
            fail_msg("%s %s %s: %ld %s", cases[k].method, cases[k].path,
                     cases[k].body ? cases[k].body : "", st, r.body);
        if (!strcmp(code, "invalid_tier"))
            assert_int_equal(json_array_size(json_object_get(j, "valid_tiers")), 3);
        json_decref(j);
        h_resp_free(&r);
    }
    /* A body that is not JSON by its type. */
    const char *h[] = {"Authorization: Bearer " ADFX_TOKEN, "Content-Type: text/plain", NULL};
    struct h_resp r;
    h_request("POST", h_url(&adfx_inst[0], "/admin/tenants"), h,
              "{\"name\":\"new1\",\"tier\":\"free\"}", &r);
    assert_int_equal(r.status, 415);
    h_resp_free(&r);
    assert_int_equal(db_fingerprint(), before);
}

static void every_action_is_an_audit_row_and_an_event_line(void **state)
{
    (void)state;
    char k[80], out[4000];
    adfx_create(0, "audited", "free", 9, k, sizeof(k));
    assert_int_equal(adfx_admin(1, "PATCH", "/admin/tenants/audited", "{\"tier\":\"pro\"}", NULL),
                     200);
    assert_int_equal(adfx_admin(0, "POST", "/admin/tenants/audited/keys", NULL, NULL), 201);
    assert_int_equal(adfx_admin(1, "DELETE", "/admin/tenants/audited", NULL, NULL), 204);
    /* Reads and refusals leave no row. */
    assert_int_equal(adfx_admin(0, "GET", "/admin/tenants/audited", NULL, NULL), 200);
    assert_int_equal(adfx_admin(0, "PATCH", "/admin/tenants/audited", "{\"tier\":\"x\"}", NULL),
                     400);
    /* The CLI is the same implementation: its change is audited too, by its user, locally. */
    assert_int_equal(cli(out, sizeof(out), "tenant set audited --rate-limit none"), 0);

    struct h_resp r;
    assert_int_equal(adfx_admin(1, "GET", "/admin/audit?tenant=audited", NULL, &r), 200);
    json_t *page = h_json(&r);
    h_resp_free(&r);
    json_t *ev = json_object_get(page, "events");
    static const char *const actions[] = {"update", "revoke", "rotate", "update", "create"};
    assert_int_equal(json_array_size(ev), 5);
    for (size_t i = 0; i < 5; i++) {
        json_t *e = json_array_get(ev, i);
        assert_string_equal(json_string_value(json_object_get(e, "action")), actions[i]);
        assert_string_equal(json_string_value(json_object_get(e, "tenant")), "audited");
        const char *actor = json_string_value(json_object_get(e, "actor"));
        const char *addr = json_string_value(json_object_get(e, "address"));
        if (i == 0) {
            assert_memory_equal(actor, "cli:", 4);
            assert_string_equal(addr, "local");
        } else {
            assert_memory_equal(actor, "token:", 6);
            assert_int_equal(strlen(actor), 14);
            assert_string_equal(addr, "127.0.0.1");
            assert_non_null(json_string_value(json_object_get(e, "request_id")));
        }
        assert_non_null(json_object_get(e, "after"));
        assert_true(i == 4 ? json_is_null(json_object_get(e, "before"))
                           : json_is_object(json_object_get(e, "before")));
    }
    /* Before and after say what changed. */
    json_t *upd = json_array_get(ev, 3);
    assert_string_equal(json_string_value(json_object_get(json_object_get(upd, "before"), "tier")),
                        "free");
    assert_string_equal(json_string_value(json_object_get(json_object_get(upd, "after"), "tier")),
                        "pro");
    json_t *cli_ev = json_array_get(ev, 0);
    assert_int_equal(
        json_integer_value(json_object_get(
            json_object_get(json_object_get(cli_ev, "before"), "overrides"), "rate_limit")),
        9);
    assert_int_equal(
        json_object_size(json_object_get(json_object_get(cli_ev, "after"), "overrides")), 0);
    /* Newest first, a page at a time: the next page starts below the last id. */
    int64_t newest = json_integer_value(json_object_get(json_array_get(ev, 0), "id"));
    json_decref(page);
    assert_int_equal(adfx_admin(0, "GET", "/admin/audit?tenant=audited&limit=2", NULL, &r), 200);
    page = h_json(&r);
    h_resp_free(&r);
    assert_int_equal(json_integer_value(
                         json_object_get(json_array_get(json_object_get(page, "events"), 0), "id")),
                     newest);
    int64_t next = json_integer_value(json_object_get(page, "next"));
    json_decref(page);
    char path[120];
    snprintf(path, sizeof(path), "/admin/audit?tenant=audited&limit=3&before=%lld",
             (long long)next);
    assert_int_equal(adfx_admin(0, "GET", path, NULL, &r), 200);
    page = h_json(&r);
    h_resp_free(&r);
    assert_int_equal(json_array_size(json_object_get(page, "events")), 3);
    assert_true(json_is_null(json_object_get(page, "next")) ||
                json_integer_value(json_object_get(page, "next")) > 0);
    assert_string_equal(json_string_value(json_object_get(
                            json_array_get(json_object_get(page, "events"), 2), "action")),
                        "create");
    json_decref(page);
    /* The table agrees, and holds no key or hash. */
    assert_int_equal(h_sql_int(adfx_db_url, "SELECT count(*) FROM tenant_audit WHERE tenant = "
                                            "'audited'"),
                     5);
    assert_int_equal(h_sql_int(adfx_db_url, "SELECT count(*) FROM tenant_audit a, tenants t WHERE "
                                            "position(t.key_hash in a::text) > 0 OR "
                                            "position('bh_' in a::text) > 0"),
                     0);
    /* The unfiltered log holds every tenant's changes, newest first. */
    assert_int_equal(adfx_admin(1, "GET", "/admin/audit?limit=1", NULL, &r), 200);
    page = h_json(&r);
    h_resp_free(&r);
    assert_int_equal(json_integer_value(
                         json_object_get(json_array_get(json_object_get(page, "events"), 0), "id")),
                     newest);
    json_decref(page);
    /* Each instance logged the changes it made. */
    assert_true(h_server_log_has(&adfx_inst[0], "tenant_change"));
    assert_true(h_server_log_has(&adfx_inst[0], "rotate audited by token:"));
    assert_true(h_server_log_has(&adfx_inst[1], "revoke audited by token:"));
    assert_false(h_server_log_has(&adfx_inst[0], k)); /* the key is never logged */
}

static void the_list_is_paged_by_name_and_shows_no_keys(void **state)
{
    (void)state;
    int64_t total = h_sql_int(adfx_db_url, "SELECT count(*) FROM tenants");
    assert_true(total >= 5);
    char after[80] = "", prev[80] = "";
    int64_t seen = 0;
    for (int pages = 0; pages < 100; pages++) {
        char path[160];
        snprintf(path, sizeof(path), "/admin/tenants?limit=2%s%s", after[0] ? "&after=" : "",
                 after);
        struct h_resp r;
        assert_int_equal(adfx_admin(pages % 2, "GET", path, NULL, &r), 200);
        assert_null(strstr(r.body, "bh_"));
        assert_null(strstr(r.body, "hash"));
        json_t *page = h_json(&r);
        h_resp_free(&r);
        size_t i;
        json_t *t;
        json_array_foreach(json_object_get(page, "tenants"), i, t)
        {
            const char *name = json_string_value(json_object_get(t, "name"));
            assert_true(strcmp(name, prev) > 0); /* by name, no repeats */
            snprintf(prev, sizeof(prev), "%s", name);
            seen++;
        }
        assert_true(json_array_size(json_object_get(page, "tenants")) <= 2);
        const char *next = json_string_value(json_object_get(page, "next"));
        snprintf(after, sizeof(after), "%s", next ? next : "");
        json_decref(page);
        if (!after[0])
            break;
    }
    assert_int_equal(seen, total);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(admin_requests_need_the_token),
        cmocka_unit_test(a_tenant_created_on_one_instance_calls_the_other),
        cmocka_unit_test(an_override_of_5_admits_exactly_5_in_a_burst),
        cmocka_unit_test(a_tier_change_and_an_override_removal_take_effect_on_both),
        cmocka_unit_test(rotation_and_revocation_refuse_the_old_key_on_both),
        cmocka_unit_test(a_change_without_notification_reaches_both_within_the_cache_lifetime),
        cmocka_unit_test(every_bad_request_gets_its_4xx_and_changes_nothing),
        cmocka_unit_test(every_action_is_an_audit_row_and_an_event_line),
        cmocka_unit_test(the_list_is_paged_by_name_and_shows_no_keys),
    };
    return cmocka_run_group_tests(tests, adfx_setup, adfx_teardown);
}
