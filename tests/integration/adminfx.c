/*
 * adminfx: the admin API tests' fixture (see adminfx.h).
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

char adfx_db_url[300];

static struct redisproc redis;

struct h_server adfx_inst[2];

char adfx_tiers_env[400];

/* The seed's tiers with free's 100 per hour: no refill while a test counts. */
/* Behind a "load balancer" at 127.0.0.1: a test names the client in X-Forwarded-For, so that
 * the failed authentications of one test do not limit the next one's requests. */
const char *const adfx_base_env[] = {"AUTH_MODE=apikey",
                                     "ADMIN_TOKEN=" ADFX_TOKEN,
                                     "AUTH_CACHE_TTL_MS=2000",
                                     "TARPIT=false",
                                     "CAPACITY_CONTROL=false",
                                     "TRUSTED_PROXIES=127.0.0.1",
                                     NULL};

const char *adfx_db = "admin";

size_t adfx_env(const char **env, size_t cap)
{
    size_t n = 0;
    for (; adfx_base_env[n]; n++) {
        assert_true(n + 2 < cap);
        env[n] = adfx_base_env[n];
    }
    env[n++] = adfx_tiers_env;
    return n;
}

int adfx_setup(void **state)
{
    (void)state;
    if (h_db_create(adfx_db, adfx_db_url, sizeof(adfx_db_url)) || redisproc_start(&redis) ||
        h_tiers_env("tiers-admin.json", H_TIERS_HOURLY, adfx_tiers_env, sizeof(adfx_tiers_env)))
        return -1;
    static char redis_env[120];
    snprintf(redis_env, sizeof(redis_env), "REDIS_URL=%s", redis.url);
    const char *env[12];
    size_t n = adfx_env(env, 12);
    env[n++] = "RATE_LIMIT_BACKEND=redis";
    env[n++] = redis_env;
    /* Exact counts across instances need every decision made in Redis: no fallback to the
     * local limiter because a loaded (sanitizer) run answered late. */
    env[n++] = "REDIS_TIMEOUT_MS=2000";
    env[n] = NULL;
    for (int i = 0; i < 2; i++)
        if (h_server_start(&adfx_inst[i], adfx_db_url, env))
            return -1;
    return 0;
}

int adfx_teardown(void **state)
{
    (void)state;
    for (int i = 0; i < 2; i++)
        h_server_stop(&adfx_inst[i], SIGTERM, 20000);
    redisproc_stop(&redis);
    return 0;
}

/* ---- helpers ------------------------------------------------------------------------------ */

/* An admin request to server s with the token (or `auth` instead when not NULL), from client
 * address `from` (X-Forwarded-For; NULL: 127.0.0.1 itself); the reply in *out when out is not
 * NULL. Returns the status. */
long adfx_admin_from(const struct h_server *s, const char *from, const char *method,
                     const char *path, const char *body, const char *auth, struct h_resp *out)
{
    char xff[80];
    snprintf(xff, sizeof(xff), "X-Forwarded-For: %s", from ? from : "127.0.0.1");
    const char *h[] = {auth ? auth : "Authorization: Bearer " ADFX_TOKEN,
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

long adfx_admin_on(const struct h_server *s, const char *method, const char *path, const char *body,
                   const char *auth, struct h_resp *out)
{
    return adfx_admin_from(s, NULL, method, path, body, auth, out);
}

long adfx_admin(int i, const char *method, const char *path, const char *body, struct h_resp *out)
{
    return adfx_admin_on(&adfx_inst[i], method, path, body, NULL, out);
}

/* The "error" of a JSON error reply into buf ("" when there is none). */
const char *adfx_error_code(const struct h_resp *r, char *buf, size_t len)
{
    json_t *j = h_json(r);
    snprintf(buf, len, "%s", j ? json_string_value(json_object_get(j, "error")) ?: "" : "");
    json_decref(j);
    return buf;
}

/* Create tenant name of tier (with rate_limit >= 0 as its override) on instance i; its key
 * into key. */
void adfx_create(int i, const char *name, const char *tier, long rate_limit, char *key,
                 size_t keylen)
{
    char body[200];
    if (rate_limit >= 0)
        snprintf(body, sizeof(body), "{\"name\":\"%s\",\"tier\":\"%s\",\"rate_limit\":%ld}", name,
                 tier, rate_limit);
    else
        snprintf(body, sizeof(body), "{\"name\":\"%s\",\"tier\":\"%s\"}", name, tier);
    struct h_resp r;
    if (adfx_admin(i, "POST", "/admin/tenants", body, &r) != 201)
        fail_msg("create %s: %ld %s", name, r.status, r.body);
    json_t *j = h_json(&r);
    snprintf(key, keylen, "%s", json_string_value(json_object_get(j, "api_key")) ?: "");
    json_decref(j);
    h_resp_free(&r);
    assert_int_equal(strlen(key), 46);
}

/* GET /api/data on server s with key: the status, and RateLimit-Limit into *limit (-1 when
 * the reply has none). */
long adfx_call_on(const struct h_server *s, const char *key, long *limit)
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
