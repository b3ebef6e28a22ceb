/*
 * test_admin: the admin API for tenants (/admin/tenants, /admin/audit) through two instances
 * of the real binary on one database and one Redis (AUTH_MODE=apikey, ADMIN_TOKEN set).
 * Proves: the token is required; a tenant created on one instance calls the other, and no read
 * ever shows a key or its hash; an override of 5 admits exactly 5 in a burst, shared by both
 * instances through Redis and alone on a memory-backed one; a tier change and an override's
 * removal take effect on both; rotation and revocation refuse the old key on both; a change
 * made without a notification still reaches both within AUTH_CACHE_TTL_MS; every bad request
 * gets its 4xx and changes nothing; every action, by the API or the CLI, is an audit row (read
 * back through GET /admin/audit, page by page) and an event line; the list is paged; the
 * metrics count the tenants with overrides; an older database gains the schema at start.
 * Failed admin authentications are limited per client address (a correct token from a limited
 * address is refused too, without being compared; another address is not affected, and the
 * limit lifts by itself); an instance with an hour-long key cache still refuses two keys
 * revoked back to back, the second while the first one's reload runs, within seconds (the
 * test allows 30: a 50,000-key reload under ThreadSanitizer takes a few).
 */
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

#define TOKEN  "admin-secret-for-tests-0123456789"
#define TTL_MS 2000
/* How long a change may take to reach an instance: the cache lifetime, plus room for a reload
 * that starts just before the change and a slow (sanitizer) build. A notified change is seen
 * far sooner; the bound is only there so that a broken path fails rather than hangs. */
#define SEEN_WITHIN_MS (3 * TTL_MS)

static char db_url[300];
static struct redisproc redis;
static struct h_server inst[2];
static char tiers_env[400];

/* The seed's tiers with free's 100 per hour: no refill while a test counts. */
/* Behind a "load balancer" at 127.0.0.1: a test names the client in X-Forwarded-For, so that
 * the failed authentications of one test do not limit the next one's requests. */
static const char *const base_env[] = {"AUTH_MODE=apikey",
                                       "ADMIN_TOKEN=" TOKEN,
                                       "AUTH_CACHE_TTL_MS=2000",
                                       "TARPIT=false",
                                       "CAPACITY_CONTROL=false",
                                       "TRUSTED_PROXIES=127.0.0.1",
                                       NULL};

static int setup(void **state)
{
    (void)state;
    if (h_db_create("admin", db_url, sizeof(db_url)) || redisproc_start(&redis) ||
        h_tiers_env("tiers-admin.json", H_TIERS_HOURLY, tiers_env, sizeof(tiers_env)))
        return -1;
    static char redis_env[120];
    snprintf(redis_env, sizeof(redis_env), "REDIS_URL=%s", redis.url);
    const char *env[12];
    size_t n = 0;
    for (; base_env[n]; n++)
        env[n] = base_env[n];
    env[n++] = tiers_env;
    env[n++] = "RATE_LIMIT_BACKEND=redis";
    env[n++] = redis_env;
    /* Exact counts across instances need every decision made in Redis: no fallback to the
     * local limiter because a loaded (sanitizer) run answered late. */
    env[n++] = "REDIS_TIMEOUT_MS=2000";
    env[n] = NULL;
    for (int i = 0; i < 2; i++)
        if (h_server_start(&inst[i], db_url, env))
            return -1;
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    for (int i = 0; i < 2; i++)
        h_server_stop(&inst[i], SIGTERM, 20000);
    redisproc_stop(&redis);
    return 0;
}

/* ---- helpers ------------------------------------------------------------------------------ */

/* An admin request to server s with the token (or `auth` instead when not NULL), from client
 * address `from` (X-Forwarded-For; NULL: 127.0.0.1 itself); the reply in *out when out is not
 * NULL. Returns the status. */
static long admin_from(const struct h_server *s, const char *from, const char *method,
                       const char *path, const char *body, const char *auth, struct h_resp *out)
{
    char xff[80];
    snprintf(xff, sizeof(xff), "X-Forwarded-For: %s", from ? from : "127.0.0.1");
    const char *h[] = {auth ? auth : "Authorization: Bearer " TOKEN,
                       "Content-Type: application/json", from ? xff : NULL, NULL};
    struct h_resp r;
    h_request(method, h_url(s, path), h, body, &r);
    long st = r.status;
    if (out)
        *out = r;
    else
        h_resp_free(&r);
    return st;
}

static long admin_on(const struct h_server *s, const char *method, const char *path,
                     const char *body, const char *auth, struct h_resp *out)
{
    return admin_from(s, NULL, method, path, body, auth, out);
}

static long admin(int i, const char *method, const char *path, const char *body, struct h_resp *out)
{
    return admin_on(&inst[i], method, path, body, NULL, out);
}

/* The "error" of a JSON error reply into buf ("" when there is none). */
static const char *error_code(const struct h_resp *r, char *buf, size_t len)
{
    json_t *j = h_json(r);
    snprintf(buf, len, "%s", j ? json_string_value(json_object_get(j, "error")) ?: "" : "");
    json_decref(j);
    return buf;
}

/* Create tenant name of tier (with rate_limit >= 0 as its override) on instance i; its key
 * into key. */
static void create(int i, const char *name, const char *tier, long rate_limit, char *key,
                   size_t keylen)
{
    char body[200];
    if (rate_limit >= 0)
        snprintf(body, sizeof(body), "{\"name\":\"%s\",\"tier\":\"%s\",\"rate_limit\":%ld}", name,
                 tier, rate_limit);
    else
        snprintf(body, sizeof(body), "{\"name\":\"%s\",\"tier\":\"%s\"}", name, tier);
    struct h_resp r;
    if (admin(i, "POST", "/admin/tenants", body, &r) != 201)
        fail_msg("create %s: %ld %s", name, r.status, r.body);
    json_t *j = h_json(&r);
    snprintf(key, keylen, "%s", json_string_value(json_object_get(j, "api_key")) ?: "");
    json_decref(j);
    h_resp_free(&r);
    assert_int_equal(strlen(key), 46);
}

/* GET /api/data on server s with key: the status, and RateLimit-Limit into *limit (-1 when
 * the reply has none). */
static long call_on(const struct h_server *s, const char *key, long *limit)
{
    char auth[120], v[32];
    snprintf(auth, sizeof(auth), "Authorization: Bearer %s", key);
    const char *h[] = {auth, NULL};
    struct h_resp r;
    h_get(h_url(s, "/api/data?limit=1"), h, &r);
    long st = r.status;
    if (limit)
        *limit = h_header(&r, "RateLimit-Limit", v, sizeof(v)) ? strtol(v, NULL, 10) : -1;
    h_resp_free(&r);
    return st;
}

static long call(int i, const char *key)
{
    return call_on(&inst[i], key, NULL);
}

/* Whether instance i admits key under RateLimit-Limit want (-1: none, unlimited). */
static bool limit_is(int i, const char *key, long want)
{
    long limit;
    return call_on(&inst[i], key, &limit) == 200 && limit == want;
}

/* free.rateLimiter.tenantOverrides of server s. */
static int64_t overrides_on(const struct h_server *s, const char *tier)
{
    return h_metric(s->base, tier, "rateLimiter", "tenantOverrides");
}

/* Everything an admin change can touch, in one number: the tenants' rows and the audit's. */
static int64_t db_fingerprint(void)
{
    return h_sql_int(db_url, "SELECT hashtext(coalesce((SELECT string_agg(t::text, ',' ORDER "
                             "BY id) FROM tenants t), '') || (SELECT count(*) FROM "
                             "tenant_audit)::text)");
}

/* Run the tenant CLI against the suite's database; its exit status, stdout into out. */
static int cli(char *out, size_t outlen, const char *args)
{
    char cmd[1200];
    snprintf(cmd, sizeof(cmd), "cd %s && DATABASE_URL='%s' %s %s 2>/dev/null",
             getenv("BH_TEST_WORK"), db_url, h_bin(), args);
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
    static const char *const wrong[] = {
        "X-Nothing: 1", "Authorization: Bearer wrong", "Authorization: Bearer " TOKEN "x",
        "Authorization: Basic " TOKEN, "Authorization: Bearer admin-secret-for-tests-012345678"};
    const char *from = "192.0.2.1"; /* a stranger: its failures limit nobody else */
    for (size_t k = 0; k < sizeof(wrong) / sizeof(wrong[0]); k++) {
        struct h_resp r;
        char code[64];
        assert_int_equal(admin_from(&inst[0], from, "POST", "/admin/tenants",
                                    "{\"name\":\"intruder\",\"tier\":\"enterprise\"}", wrong[k],
                                    &r),
                         401);
        assert_string_equal(error_code(&r, code, sizeof(code)), "unauthorized");
        h_resp_free(&r);
        assert_int_equal(admin_from(&inst[1], from, "GET", "/admin/tenants", NULL, wrong[k], NULL),
                         401);
        assert_int_equal(admin_from(&inst[1], from, "GET", "/admin/audit", NULL, wrong[k], NULL),
                         401);
    }
    assert_int_equal(db_fingerprint(), before);
}

static void a_tenant_created_on_one_instance_calls_the_other(void **state)
{
    (void)state;
    struct h_resp r;
    assert_int_equal(
        admin(0, "POST", "/admin/tenants", "{\"name\":\"acme\",\"tier\":\"free\"}", &r), 201);
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
    assert_int_equal(h_sql_int(db_url, sql), 1);
    snprintf(sql, sizeof(sql),
             "SELECT (SELECT count(*) FROM tenants t WHERE position('%s' in t::text) > 0) + "
             "(SELECT count(*) FROM tenant_audit a WHERE position('%s' in a::text) > 0)",
             k + 3, k + 3);
    assert_int_equal(h_sql_int(db_url, sql), 0);

    /* The other instance knows the key within the cache lifetime. */
    assert_true(H_WAIT(call(1, k) == 200, SEEN_WITHIN_MS));
    assert_int_equal(call(0, k), 200);

    /* Reads show the tenant, never a key or its hash. */
    char hash_sql[200];
    snprintf(hash_sql, sizeof(hash_sql), "SELECT key_hash FROM tenants WHERE name = 'acme'");
    for (int i = 0; i < 2; i++) {
        assert_int_equal(admin(i, "GET", "/admin/tenants/acme", NULL, &r), 200);
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
    assert_int_equal(admin(1, "POST", "/admin/tenants", "{\"name\":\"acme\",\"tier\":\"pro\"}", &r),
                     409);
    assert_string_equal(error_code(&r, code, sizeof(code)), "tenant_exists");
    h_resp_free(&r);
    assert_int_equal(h_sql_int(db_url, "SELECT count(*) FROM tenants WHERE name = 'acme'"), 1);
}

static void an_override_of_5_admits_exactly_5_in_a_burst(void **state)
{
    (void)state;
    char k[80], auth[120];
    int64_t o0 = overrides_on(&inst[0], "free");
    create(0, "burst5", "free", 5, k, sizeof(k));
    /* Both instances have loaded it when their metrics count its override (no request spent). */
    assert_true(
        H_WAIT(overrides_on(&inst[0], "free") == o0 + 1 && overrides_on(&inst[1], "free") == o0 + 1,
               SEEN_WITHIN_MS));
    assert_true(h_prom(inst[1].base, "bulkhead_ratelimit_tenant_overrides", "tier=\"free\"") ==
                (double)(o0 + 1));
    snprintf(auth, sizeof(auth), "Authorization: Bearer %s", k);
    const char *h[] = {auth, NULL};
    long st[12];
    assert_int_equal(h_burst("GET", h_url(&inst[0], "/api/data?limit=1"), h, 12, 12, st, NULL), 0);
    assert_int_equal(h_count(st, 12, 200), 5); /* its own 5, not free's 100 */
    assert_int_equal(h_count(st, 12, 429), 7);
    /* The allowance is the tenant's across instances (Redis): the other instance admits at most
     * its lease before Redis's count reaches it (one request: 10 % of 5, at least 1; README,
     * "a tenant's admissions over N instances"), then refuses. */
    assert_int_equal(h_burst("GET", h_url(&inst[1], "/api/data?limit=1"), h, 6, 6, st, NULL), 0);
    assert_true(h_count(st, 6, 200) <= 1);
    assert_true(h_count(st, 6, 429) >= 5);
    struct h_resp r;
    h_get(h_url(&inst[1], "/api/data?limit=1"), h, &r);
    char v[32];
    assert_string_equal(h_header(&r, "RateLimit-Limit", v, sizeof(v)), "5");
    assert_string_equal(h_header(&r, "RateLimit-Policy", v, sizeof(v)), "\"free\";q=5;w=3600");
    assert_non_null(strstr(r.body, "tenant burst5 is allowed 5 requests per 3600 s"));
    h_resp_free(&r);

    /* The same with the in-memory limiter, on an instance of its own. */
    struct h_server m;
    const char *env[8];
    size_t n = 0;
    for (; base_env[n]; n++)
        env[n] = base_env[n];
    env[n++] = tiers_env;
    env[n] = NULL;
    assert_int_equal(h_server_start(&m, db_url, env), 0);
    create(0, "burst5m", "free", 5, k, sizeof(k));
    assert_true(H_WAIT(overrides_on(&m, "free") == o0 + 2, SEEN_WITHIN_MS));
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
    create(1, "mover", "free", 7, k, sizeof(k));
    for (int i = 0; i < 2; i++)
        assert_true(H_WAIT(limit_is(i, k, 7), SEEN_WITHIN_MS));

    /* pro: the override still wins over pro's 1000. */
    struct h_resp r;
    assert_int_equal(admin(0, "PATCH", "/admin/tenants/mover", "{\"tier\":\"pro\"}", &r), 200);
    json_t *t = h_json(&r);
    assert_string_equal(json_string_value(json_object_get(t, "tier")), "pro");
    assert_int_equal(
        json_integer_value(json_object_get(json_object_get(t, "overrides"), "rate_limit")), 7);
    json_decref(t);
    h_resp_free(&r);
    for (int i = 0; i < 2; i++)
        assert_true(H_WAIT(h_metric(inst[i].base, "pro", "rateLimiter", "tenantOverrides") == 1 &&
                               limit_is(i, k, 7),
                           SEEN_WITHIN_MS));

    /* null removes the override: pro's own limit applies, on both. */
    assert_int_equal(admin(1, "PATCH", "/admin/tenants/mover", "{\"rate_limit\":null}", &r), 200);
    t = h_json(&r);
    assert_int_equal(json_object_size(json_object_get(t, "overrides")), 0);
    json_decref(t);
    h_resp_free(&r);
    for (int i = 0; i < 2; i++)
        assert_true(H_WAIT(limit_is(i, k, 1000), SEEN_WITHIN_MS));

    /* enterprise, tier and override in one request: 0 is an override too (unlimited). */
    assert_int_equal(admin(0, "PATCH", "/admin/tenants/mover",
                           "{\"tier\":\"enterprise\",\"rate_limit\":0}", NULL),
                     200);
    for (int i = 0; i < 2; i++)
        assert_true(H_WAIT(
            limit_is(i, k, -1) &&
                h_metric(inst[i].base, "enterprise", "rateLimiter", "tenantOverrides") == 1 &&
                h_metric(inst[i].base, "pro", "rateLimiter", "tenantOverrides") == 0,
            SEEN_WITHIN_MS));
    /* An override below the tier's limit in an unlimited tier limits the tenant. */
    assert_int_equal(admin(1, "PATCH", "/admin/tenants/mover", "{\"rate_limit\":50}", NULL), 200);
    for (int i = 0; i < 2; i++)
        assert_true(H_WAIT(limit_is(i, k, 50), SEEN_WITHIN_MS));
}

static void rotation_and_revocation_refuse_the_old_key_on_both(void **state)
{
    (void)state;
    char k1[80], k2[80];
    create(0, "rotor", "pro", -1, k1, sizeof(k1));
    for (int i = 0; i < 2; i++)
        assert_true(H_WAIT(call(i, k1) == 200, SEEN_WITHIN_MS));

    struct h_resp r;
    assert_int_equal(admin(1, "POST", "/admin/tenants/rotor/keys", NULL, &r), 201);
    json_t *t = h_json(&r);
    snprintf(k2, sizeof(k2), "%s", json_string_value(json_object_get(t, "api_key")) ?: "");
    assert_string_equal(json_string_value(json_object_get(t, "tier")), "pro");
    json_decref(t);
    h_resp_free(&r);
    assert_int_equal(strlen(k2), 46);
    assert_string_not_equal(k1, k2);
    for (int i = 0; i < 2; i++) {
        assert_true(H_WAIT(call(i, k1) == 401, SEEN_WITHIN_MS));
        assert_true(H_WAIT(call(i, k2) == 200, SEEN_WITHIN_MS));
    }

    assert_int_equal(admin(0, "DELETE", "/admin/tenants/rotor", NULL, &r), 204);
    assert_int_equal(r.len, 0);
    h_resp_free(&r);
    for (int i = 0; i < 2; i++)
        assert_true(H_WAIT(call(i, k2) == 401, SEEN_WITHIN_MS));
    assert_int_equal(admin(1, "GET", "/admin/tenants/rotor", NULL, &r), 200);
    t = h_json(&r);
    assert_non_null(json_string_value(json_object_get(t, "revoked")));
    json_decref(t);
    h_resp_free(&r);
    /* Revoking again changes nothing and still answers 204. */
    int64_t revoked_at =
        h_sql_int(db_url, "SELECT extract(epoch from revoked_at)::bigint * 1000000 + "
                          "extract(microseconds from revoked_at)::bigint % 1000000 FROM "
                          "tenants WHERE name = 'rotor'");
    assert_int_equal(admin(1, "DELETE", "/admin/tenants/rotor", NULL, NULL), 204);
    assert_int_equal(h_sql_int(db_url, "SELECT extract(epoch from revoked_at)::bigint * 1000000 + "
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
    create(0, "quiet", "free", -1, k, sizeof(k));
    for (int i = 0; i < 2; i++)
        assert_true(H_WAIT(call(i, k) == 200, SEEN_WITHIN_MS));
    /* Straight in the table, as a missed notification would leave it: only the periodic
     * reload (AUTH_CACHE_TTL_MS) can bring it to the instances. */
    assert_int_equal(h_sql_exec(db_url, "UPDATE tenants SET revoked_at = now() WHERE name = "
                                        "'quiet'"),
                     0);
    for (int i = 0; i < 2; i++)
        assert_true(H_WAIT(call(i, k) == 401, SEEN_WITHIN_MS));
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
        long st = admin((int)(k % 2), cases[k].method, cases[k].path, cases[k].body, &r);
        json_t *j = h_json(&r);
        if (st != cases[k].status || strcmp(error_code(&r, code, sizeof(code)), cases[k].code) ||
            !json_string_value(json_object_get(j, "message")))
            fail_msg("%s %s %s: %ld %s", cases[k].method, cases[k].path,
                     cases[k].body ? cases[k].body : "", st, r.body);
        if (!strcmp(code, "invalid_tier"))
            assert_int_equal(json_array_size(json_object_get(j, "valid_tiers")), 3);
        json_decref(j);
        h_resp_free(&r);
    }
    /* A body that is not JSON by its type. */
    const char *h[] = {"Authorization: Bearer " TOKEN, "Content-Type: text/plain", NULL};
    struct h_resp r;
    h_request("POST", h_url(&inst[0], "/admin/tenants"), h, "{\"name\":\"new1\",\"tier\":\"free\"}",
              &r);
    assert_int_equal(r.status, 415);
    h_resp_free(&r);
    assert_int_equal(db_fingerprint(), before);
}

static void every_action_is_an_audit_row_and_an_event_line(void **state)
{
    (void)state;
    char k[80], out[4000];
    create(0, "audited", "free", 9, k, sizeof(k));
    assert_int_equal(admin(1, "PATCH", "/admin/tenants/audited", "{\"tier\":\"pro\"}", NULL), 200);
    assert_int_equal(admin(0, "POST", "/admin/tenants/audited/keys", NULL, NULL), 201);
    assert_int_equal(admin(1, "DELETE", "/admin/tenants/audited", NULL, NULL), 204);
    /* Reads and refusals leave no row. */
    assert_int_equal(admin(0, "GET", "/admin/tenants/audited", NULL, NULL), 200);
    assert_int_equal(admin(0, "PATCH", "/admin/tenants/audited", "{\"tier\":\"x\"}", NULL), 400);
    /* The CLI is the same implementation: its change is audited too, by its user, locally. */
    assert_int_equal(cli(out, sizeof(out), "tenant set audited --rate-limit none"), 0);

    struct h_resp r;
    assert_int_equal(admin(1, "GET", "/admin/audit?tenant=audited", NULL, &r), 200);
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
    assert_int_equal(admin(0, "GET", "/admin/audit?tenant=audited&limit=2", NULL, &r), 200);
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
    assert_int_equal(admin(0, "GET", path, NULL, &r), 200);
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
    assert_int_equal(h_sql_int(db_url, "SELECT count(*) FROM tenant_audit WHERE tenant = "
                                       "'audited'"),
                     5);
    assert_int_equal(h_sql_int(db_url, "SELECT count(*) FROM tenant_audit a, tenants t WHERE "
                                       "position(t.key_hash in a::text) > 0 OR "
                                       "position('bh_' in a::text) > 0"),
                     0);
    /* The unfiltered log holds every tenant's changes, newest first. */
    assert_int_equal(admin(1, "GET", "/admin/audit?limit=1", NULL, &r), 200);
    page = h_json(&r);
    h_resp_free(&r);
    assert_int_equal(json_integer_value(
                         json_object_get(json_array_get(json_object_get(page, "events"), 0), "id")),
                     newest);
    json_decref(page);
    /* Each instance logged the changes it made. */
    assert_true(h_server_log_has(&inst[0], "tenant_change"));
    assert_true(h_server_log_has(&inst[0], "rotate audited by token:"));
    assert_true(h_server_log_has(&inst[1], "revoke audited by token:"));
    assert_false(h_server_log_has(&inst[0], k)); /* the key is never logged */
}

static void the_list_is_paged_by_name_and_shows_no_keys(void **state)
{
    (void)state;
    int64_t total = h_sql_int(db_url, "SELECT count(*) FROM tenants");
    assert_true(total >= 5);
    char after[80] = "", prev[80] = "";
    int64_t seen = 0;
    for (int pages = 0; pages < 100; pages++) {
        char path[160];
        snprintf(path, sizeof(path), "/admin/tenants?limit=2%s%s", after[0] ? "&after=" : "",
                 after);
        struct h_resp r;
        assert_int_equal(admin(pages % 2, "GET", path, NULL, &r), 200);
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

static void an_older_database_gains_the_tenants_schema_at_start(void **state)
{
    (void)state;
    char url[300];
    assert_int_equal(h_db_create("admin_old", url, sizeof(url)), 0);
    assert_int_equal(h_sql_exec(url, "DROP TABLE tenant_audit; ALTER TABLE tenants DROP COLUMN "
                                     "rate_limit"),
                     0);
    struct h_server s;
    const char *env[] = {"AUTH_MODE=apikey", "ADMIN_TOKEN=" TOKEN, NULL};
    assert_int_equal(h_server_start(&s, url, env), 0);
    assert_int_equal(h_sql_int(url, "SELECT count(*) FROM information_schema.columns WHERE "
                                    "(table_name, column_name) IN (('tenants', 'rate_limit'), "
                                    "('tenant_audit', 'before'))"),
                     2);
    assert_int_equal(admin_on(&s, "POST", "/admin/tenants",
                              "{\"name\":\"late\",\"tier\":\"free\",\"rate_limit\":3}", NULL, NULL),
                     201);
    assert_int_equal(h_server_stop(&s, SIGTERM, 20000), 0);
}

/* bulkhead_admin_auth_total{result} on server s. */
static double admin_auth(const struct h_server *s, const char *result)
{
    char label[40];
    snprintf(label, sizeof(label), "result=\"%s\"", result);
    return h_prom(s->base, "bulkhead_admin_auth_total", label);
}

static void failed_admin_logins_are_limited_per_address(void **state)
{
    (void)state;
    const struct h_server *s = &inst[0];
    const char *guesser = "198.51.100.7", *other = "198.51.100.8";
    const char *bad = "Authorization: Bearer not-the-admin-token-0123456789abcdef";
    double refused0 = admin_auth(s, "refused"), limited0 = admin_auth(s, "limited");
    /* Ten wrong tokens are compared and refused, 401 each. */
    for (int i = 0; i < 10; i++)
        assert_int_equal(admin_from(s, guesser, "GET", "/admin/tenants", NULL, bad, NULL), 401);
    /* The eleventh is not compared: 429, with the time until one more attempt is allowed. */
    struct h_resp r;
    char code[64], v[16];
    assert_int_equal(admin_from(s, guesser, "GET", "/admin/tenants", NULL, bad, &r), 429);
    assert_string_equal(error_code(&r, code, sizeof(code)), "too_many_auth_failures");
    assert_non_null(h_header(&r, "Retry-After", v, sizeof(v)));
    long retry = strtol(v, NULL, 10);
    assert_true(retry >= 1 && retry <= 60);
    h_resp_free(&r);
    /* Nor is the right one, from that address, until then: a guess that happened to be right
     * would otherwise still be told so. */
    assert_int_equal(admin_from(s, guesser, "GET", "/admin/tenants", NULL, NULL, &r), 429);
    assert_string_equal(error_code(&r, code, sizeof(code)), "too_many_auth_failures");
    h_resp_free(&r);
    /* Another address is not affected, either way. */
    assert_int_equal(admin_from(s, other, "GET", "/admin/tenants", NULL, NULL, NULL), 200);
    assert_int_equal(admin_from(s, other, "GET", "/admin/tenants", NULL, bad, NULL), 401);
    /* Nor is the same address on the other instance (each instance keeps its own count). */
    assert_int_equal(admin_from(&inst[1], guesser, "GET", "/admin/tenants", NULL, NULL, NULL), 200);
    assert_true(admin_auth(s, "refused") == refused0 + 11);
    assert_true(admin_auth(s, "limited") == limited0 + 2);
    printf("# 10 failures from one address, then 429 with Retry-After: %ld s\n", retry);
    /* The limit lifts by itself: the right token is accepted again after Retry-After. */
    int64_t t0 = h_now_ms();
    assert_true(
        H_WAIT(admin_from(s, guesser, "GET", "/admin/tenants", NULL, NULL, NULL) == 200, 70000));
    printf("# the limited address was served again after %.1f s\n",
           (double)(h_now_ms() - t0) / 1000.0);
}

/* Waiting for a condition on the database, through one connection (cheaper than h_sql_int's
 * connection per call, so that the wait notices a short state). */
static bool backend_active(PGconn *pg, const char *pid)
{
    const char *v[] = {pid};
    PGresult *res = PQexecParams(pg,
                                 "SELECT count(*) FROM pg_stat_activity WHERE pid = $1::int AND "
                                 "state = 'active'",
                                 1, NULL, v, NULL, NULL, 0);
    bool active = PQresultStatus(res) == PGRES_TUPLES_OK && !strcmp(PQgetvalue(res, 0, 0), "1");
    PQclear(res);
    return active;
}

static void back_to_back_revocations_reach_an_instance_with_an_hour_long_cache(void **state)
{
    (void)state;
    char kx[80], ky[80], sql[300];
    create(0, "first-out", "free", -1, kx, sizeof(kx));
    create(0, "second-out", "free", -1, ky, sizeof(ky));
    /* The key refreshers of the suite's instances, then the new instance's own: the newest. */
    int64_t before = h_sql_int(db_url, "SELECT count(*) FROM pg_stat_activity WHERE "
                                       "datname = current_database() AND "
                                       "application_name = 'bulkhead-auth'");
    struct h_server m;
    const char *env[10];
    size_t n = 0;
    for (; base_env[n]; n++)
        env[n] = base_env[n];
    env[n++] = tiers_env;
    env[n++] = "AUTH_CACHE_TTL_MS=3600000"; /* the last one wins */
    env[n] = NULL;
    assert_int_equal(h_server_start(&m, db_url, env), 0);
    assert_true(H_WAIT(call_on(&m, kx, NULL) == 200 && call_on(&m, ky, NULL) == 200, 5000));
    assert_true(H_WAIT(h_sql_int(db_url, "SELECT count(*) FROM pg_stat_activity WHERE "
                                         "datname = current_database() AND "
                                         "application_name = 'bulkhead-auth'") == before + 1,
                       10000));
    snprintf(sql, sizeof(sql),
             "SELECT max(pid) FROM pg_stat_activity WHERE datname = current_database() AND "
             "application_name = 'bulkhead-auth' AND backend_start = (SELECT max(backend_start) "
             "FROM pg_stat_activity WHERE datname = current_database() AND "
             "application_name = 'bulkhead-auth')");
    char pid[24];
    snprintf(pid, sizeof(pid), "%lld", (long long)h_sql_int(db_url, sql));

    /* A key table large enough that a reload takes a while. */
    assert_int_equal(h_sql_exec(db_url, "INSERT INTO tenants (name, tier, key_hash) SELECT "
                                        "'filler-' || i, 'free', encode(sha256(('filler' || "
                                        "i)::bytea), 'hex') FROM generate_series(1, 50000) i"),
                     0);
    PGconn *pg = PQconnectdb(db_url);
    assert_int_equal(PQstatus(pg), CONNECTION_OK);
    /* The first revocation, through the admin API, starts a reload on every instance; the
     * second commits while the new instance's reload runs. */
    assert_int_equal(admin(0, "DELETE", "/admin/tenants/first-out", NULL, NULL), 204);
    bool seen = H_WAIT(backend_active(pg, pid), 5000);
    PGresult *res = PQexec(pg, "WITH r AS (UPDATE tenants SET revoked_at = now() WHERE name = "
                               "'second-out' RETURNING name) SELECT pg_notify('bulkhead_tenants', "
                               "name) FROM r");
    assert_int_equal(PQresultStatus(res), PGRES_TUPLES_OK);
    PQclear(res);
    printf("# the second revocation committed %s the first one's reload\n",
           seen ? "during" : "after");
    /* Both refused within seconds: far below the hour the cache could otherwise last. */
    int64_t t0 = h_now_ms();
    bool both = H_WAIT(call_on(&m, kx, NULL) == 401 && call_on(&m, ky, NULL) == 401, 30000);
    printf("# both keys refused after %lld ms (AUTH_CACHE_TTL_MS=3600000)\n",
           (long long)(h_now_ms() - t0));
    PQfinish(pg);
    assert_int_equal(h_sql_exec(db_url, "DELETE FROM tenants WHERE name LIKE 'filler-%'"), 0);
    assert_int_equal(h_server_stop(&m, SIGTERM, 20000), 0);
    assert_true(both);
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
        cmocka_unit_test(an_older_database_gains_the_tenants_schema_at_start),
        cmocka_unit_test(failed_admin_logins_are_limited_per_address),
        cmocka_unit_test(back_to_back_revocations_reach_an_instance_with_an_hour_long_cache),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
