/*
 * test_redis_auth: the real binary against a real redis-server that requires a password
 * (--requirepass) and knows an ACL user. With REDIS_URL=redis://:password@... or
 * redis://user:password@... the shared limiter works (110 requests of one tenant admit exactly
 * 100, the counts live in Redis, rateLimiter.backend is "redis"; a second instance that never
 * saw the tenant admits one request, then learns from Redis that it is spent); with a wrong
 * password every request is still served by the in-memory fallback, the refusal is logged once with
 * Redis's reason, and neither password ever appears in a log.
 *
 * As in test_redis, free's window is an hour so "exactly 100" does not depend on speed.
 */
#include "harness.h"

#include "../redisproc.h"

#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#define REQUIREPASS "req-pass-7Hq2"
#define ACL_PASS    "acl-pass-9Xw4"
#define WRONG_PASS  "wrong-pass-3Zk8"

static char db_url[300];
static char tiers_env[400];
static struct redisproc redis;

static int setup(void **state)
{
    (void)state;
    if (h_db_create("redis_auth", db_url, sizeof(db_url)))
        return -1;
    snprintf(redis.password, sizeof(redis.password), "%s", REQUIREPASS);
    if (redisproc_start(&redis))
        return -1;
    if (redisproc_cmd(&redis, "ACL SETUSER bulkhead on >" ACL_PASS " ~bulkhead:* +@all") != 0)
        return -1;
    return h_tiers_env("tiers-redis-auth.json", H_TIERS_HOURLY, tiers_env, sizeof(tiers_env));
}

static int teardown(void **state)
{
    (void)state;
    redisproc_stop(&redis);
    return 0;
}

/* A server whose REDIS_URL carries creds ("user:pass@" or ":pass@"). */
static void start(struct h_server *s, const char *creds)
{
    static char redis_env[200];
    snprintf(redis_env, sizeof(redis_env), "REDIS_URL=redis://%s127.0.0.1:%d", creds, redis.port);
    /* No tarpit: the burst's refusals answered at once (held, they cost 5 s each round). */
    const char *env[] = {"RATE_LIMIT_BACKEND=redis", redis_env,      tiers_env,
                         "REDIS_TIMEOUT_MS=500",     "TARPIT=false", NULL};
    assert_int_equal(h_server_start(s, db_url, env), 0);
}

static json_t *free_limiter(const struct h_server *s, json_t **root)
{
    *root = h_get_json(h_url(s, "/metrics/bulkheads"));
    assert_non_null(*root);
    json_t *rl = json_object_get(json_object_get(*root, "free"), "rateLimiter");
    assert_non_null(rl);
    return rl;
}

static void assert_backend(const struct h_server *s, const char *want, bool errors)
{
    json_t *root;
    json_t *rl = free_limiter(s, &root);
    assert_string_equal(json_string_value(json_object_get(rl, "backend")), want);
    json_int_t e = json_integer_value(json_object_get(rl, "backendErrors"));
    assert_true(errors ? e > 0 : e == 0);
    json_decref(root);
}

/* n requests of one free tenant, 4 at a time; the count of 200s (rejected in *limited). */
static int burst(const struct h_server *s, const char *tenant, int n, int *limited)
{
    char ten[100];
    snprintf(ten, sizeof(ten), "X-Tenant-Id: %s", tenant);
    const char *h[] = {"X-Tenant-Tier: free", ten, NULL};
    long st[128];
    assert_true(n <= 128);
    assert_int_equal(h_burst("GET", h_url(s, "/api/data?limit=1"), h, n, 4, st, NULL), 0);
    *limited = h_count(st, n, 429);
    return h_count(st, n, 200);
}

static void no_password_in_the_log(const struct h_server *s)
{
    assert_false(h_server_log_has(s, REQUIREPASS));
    assert_false(h_server_log_has(s, ACL_PASS));
    assert_false(h_server_log_has(s, WRONG_PASS));
}

static void the_requirepass_password_shares_the_limit_through_redis(void **state)
{
    (void)state;
    struct h_server s;
    start(&s, ":" REQUIREPASS "@");
    long long keys_before = redisproc_cmd(&redis, "DBSIZE");
    int limited = 0;
    int ok = burst(&s, "auth-a", 110, &limited);
    printf("# REDIS_URL redis://:****@...: 110 requests, %d admitted, %d rejected\n", ok, limited);
    assert_int_equal(ok, 100);
    assert_int_equal(limited, 10);
    assert_backend(&s, "redis", false);
    /* The tenant's count is a key in Redis. */
    assert_true(redisproc_cmd(&redis, "DBSIZE") > keys_before);
    assert_false(h_server_log_has(&s, "redis_down"));
    assert_int_equal(h_server_stop(&s, SIGTERM, 20000), 0);
    no_password_in_the_log(&s);
}

static void an_acl_user_shares_the_limit_through_redis(void **state)
{
    (void)state;
    struct h_server s;
    start(&s, "bulkhead:" ACL_PASS "@");
    int limited = 0;
    assert_int_equal(burst(&s, "auth-b", 110, &limited), 100);
    assert_int_equal(limited, 10);
    assert_backend(&s, "redis", false);
    /* A second instance with the other credentials sees the same count: it admits one request
     * before Redis has answered for a tenant it never saw (its lease then), and refuses the
     * rest once Redis's count arrives. */
    struct h_server s2;
    start(&s2, ":" REQUIREPASS "@");
    assert_int_equal(burst(&s2, "auth-b", 5, &limited), 1);
    assert_int_equal(limited, 4);
    assert_int_equal(h_server_stop(&s2, SIGTERM, 20000), 0);
    assert_int_equal(h_server_stop(&s, SIGTERM, 20000), 0);
    no_password_in_the_log(&s);
    no_password_in_the_log(&s2);
}

struct logwait {
    const struct h_server *s;
    const char *needle;
};

static bool log_has(void *arg)
{
    struct logwait *w = arg;
    return h_server_log_has(w->s, w->needle);
}

static void a_wrong_password_falls_back_logged_once_without_the_password(void **state)
{
    (void)state;
    struct h_server s;
    start(&s, ":" WRONG_PASS "@");
    int limited = 0;
    /* Every request served; each instance then limits on its own (100 of 110 here). */
    int ok = burst(&s, "auth-c", 110, &limited);
    assert_int_equal(ok + limited, 110);
    assert_int_equal(ok, 100);
    struct logwait w = {&s, "WRONGPASS"};
    assert_true(h_wait_until(log_has, &w, 30000));
    assert_int_equal(h_server_log_count(&s, "\"redis_down\""), 1);
    assert_backend(&s, "memory (redis fallback)", true);
    assert_int_equal(h_server_stop(&s, SIGTERM, 20000), 0);
    char *log = h_read_file(s.log);
    assert_non_null(log);
    const char *line = strstr(log, "\"redis_down\"");
    assert_non_null(line);
    printf("# wrong password: %.*s\n", (int)strcspn(line, "\n"), line);
    free(log);
    no_password_in_the_log(&s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(the_requirepass_password_shares_the_limit_through_redis),
        cmocka_unit_test(an_acl_user_shares_the_limit_through_redis),
        cmocka_unit_test(a_wrong_password_falls_back_logged_once_without_the_password),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
