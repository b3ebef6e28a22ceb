/*
 * test_redis: two server instances sharing one rate limit through a real redis-server
 * (RATE_LIMIT_BACKEND=redis), talked to directly. Proves: 110 requests of one tenant spread
 * over both instances admit exactly 100; with Redis stopped every request is still served
 * (in-memory fallback), each instance logs redis_down once and its metrics show the errors and
 * the fallback; after Redis restarts the limit is shared again.
 *
 * The tier table is the built-in one except free's window: 100 per hour instead of per minute,
 * so "exactly 100" does not depend on how fast 110 requests go through (at 100/min one more
 * request is admitted every 0.6 s).
 */
#include "harness.h"

#include "../redisproc.h"

#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

static char db_url[300];
static struct redisproc redis;
static struct h_server inst[2];

static int setup(void **state)
{
    (void)state;
    if (h_db_create("redis_shared", db_url, sizeof(db_url)))
        return -1;
    if (redisproc_start(&redis))
        return -1;
    static char tiers_env[400], redis_env[120];
    if (h_tiers_env("tiers-redis.json", H_TIERS_HOURLY, tiers_env, sizeof(tiers_env)))
        return -1;
    snprintf(redis_env, sizeof(redis_env), "REDIS_URL=%s", redis.url);
    /* Four HTTP threads: four Redis connections per instance, all of which die on a restart. */
    static const char *env[] = {"RATE_LIMIT_BACKEND=redis", redis_env, tiers_env, "HTTP_THREADS=4",
                                "REDIS_TIMEOUT_MS=1000",    NULL};
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

static long get_free(int i, const char *tenant, struct h_resp *r)
{
    char u[200], ten[120];
    snprintf(u, sizeof(u), "%s/api/data?limit=1", inst[i].base);
    snprintf(ten, sizeof(ten), "X-Tenant-Id: %s", tenant);
    const char *h[] = {"X-Tenant-Tier: free", ten, NULL};
    h_get(u, h, r);
    return r->status;
}

/* free.rateLimiter of instance i (caller json_decref's it). */
static json_t *rate_limiter(int i)
{
    json_t *rl = h_metric_section(inst[i].base, "free", "rateLimiter");
    assert_non_null(rl);
    return rl;
}

static const char *backend_of(int i, char *buf, size_t len)
{
    return h_metric_text(inst[i].base, "free", "rateLimiter", "backend", buf, len);
}

static long long backend_errors(int i)
{
    return h_metric(inst[i].base, "free", "rateLimiter", "backendErrors");
}

struct spread {
    int inst;
    const char *tenant;
    int n;
    long status[64];
};

static void *spread_run(void *arg)
{
    struct spread *s = arg;
    char u[200], ten[120];
    snprintf(u, sizeof(u), "%s/api/data?limit=1", inst[s->inst].base);
    snprintf(ten, sizeof(ten), "X-Tenant-Id: %s", s->tenant);
    const char *h[] = {"X-Tenant-Tier: free", ten, NULL};
    h_burst("GET", u, h, s->n, 4, s->status, NULL);
    return NULL;
}

/* 110 requests of one tenant, 55 to each instance at the same time. Returns the 200s. */
static int spread_110(const char *tenant, int *rejected)
{
    struct spread s[2] = {{.inst = 0, .tenant = tenant, .n = 55},
                          {.inst = 1, .tenant = tenant, .n = 55}};
    pthread_t th[2];
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_create(&th[i], NULL, spread_run, &s[i]), 0);
    for (int i = 0; i < 2; i++)
        pthread_join(th[i], NULL);
    int ok = h_count(s[0].status, 55, 200) + h_count(s[1].status, 55, 200);
    *rejected = h_count(s[0].status, 55, 429) + h_count(s[1].status, 55, 429);
    printf("# tenant %s: instance A %d/%d admitted, instance B %d/%d admitted; %d rejected\n",
           tenant, h_count(s[0].status, 55, 200), 55, h_count(s[1].status, 55, 200), 55, *rejected);
    return ok;
}

static void one_tenant_over_two_instances_gets_exactly_100(void **state)
{
    (void)state;
    char b[64];
    assert_string_equal(backend_of(0, b, sizeof(b)), "redis");
    assert_string_equal(backend_of(1, b, sizeof(b)), "redis");
    int rejected;
    int ok = spread_110("shared-1", &rejected);
    assert_int_equal(ok, 100);
    assert_int_equal(rejected, 10);

    /* Either instance now refuses it, with the shared counter's headers. */
    for (int i = 0; i < 2; i++) {
        struct h_resp r;
        assert_int_equal(get_free(i, "shared-1", &r), 429);
        char v[32];
        assert_string_equal(h_header(&r, "RateLimit-Limit", v, sizeof(v)), "100");
        assert_string_equal(h_header(&r, "RateLimit-Remaining", v, sizeof(v)), "0");
        assert_non_null(h_header(&r, "Retry-After", v, sizeof(v)));
        assert_true(atoi(v) >= 1 && atoi(v) <= 36);
        /* The draft's fields from Redis's verdict: nothing left until the Retry-After. */
        char policy[64], field[64], want[64];
        assert_string_equal(h_header(&r, "RateLimit-Policy", policy, sizeof(policy)),
                            "\"free\";q=100;w=3600");
        snprintf(want, sizeof(want), "\"free\";r=0;t=%s", v);
        assert_string_equal(h_header(&r, "RateLimit", field, sizeof(field)), want);
        h_resp_free(&r);
    }
    /* Another tenant of the same tier is untouched: its first request sees 99 left. */
    struct h_resp r;
    assert_int_equal(get_free(1, "shared-2", &r), 200);
    char v[32];
    assert_string_equal(h_header(&r, "RateLimit-Remaining", v, sizeof(v)), "99");
    h_resp_free(&r);

    /* Both instances counted their own share of the 100 and no backend error. */
    long long allowed = 0;
    for (int i = 0; i < 2; i++) {
        json_t *rl = rate_limiter(i);
        allowed += json_integer_value(json_object_get(rl, "allowed"));
        assert_int_equal(json_integer_value(json_object_get(rl, "backendErrors")), 0);
        json_decref(rl);
    }
    assert_int_equal(allowed, 101); /* 100 of shared-1, 1 of shared-2 */
}

struct down_ctx {
    int inst;
    int served, failed;
};

/* One request (must be served), then: has this instance retried Redis and failed again? */
static bool retried_while_down(void *arg)
{
    struct down_ctx *c = arg;
    struct h_resp r;
    if (get_free(c->inst, "while-down", &r) == 200)
        c->served++;
    else
        c->failed++;
    h_resp_free(&r);
    return backend_errors(c->inst) >= 2;
}

static void redis_down_requests_still_served_logged_once(void **state)
{
    (void)state;
    redisproc_stop(&redis);
    /* A fresh tenant, alternating instances: all served, none refused for Redis's sake. */
    int ok = 0;
    for (int k = 0; k < 20; k++) {
        struct h_resp r;
        ok += get_free(k % 2, "down-1", &r) == 200;
        h_resp_free(&r);
    }
    assert_int_equal(ok, 20);
    /* Keep serving past the one-second retry: the retry fails too, and is not logged again. */
    for (int i = 0; i < 2; i++) {
        struct down_ctx c = {.inst = i};
        assert_true(h_wait_until(retried_while_down, &c, 15000));
        assert_int_equal(c.failed, 0);
        printf("# instance %c: %d requests served while Redis was down, %lld backend errors\n",
               'A' + i, c.served, backend_errors(i));
        assert_int_equal(h_server_log_count(&inst[i], "\"event\":\"redis_down\""), 1);
        char b[64];
        assert_string_equal(backend_of(i, b, sizeof(b)), "memory (redis fallback)");

        char u[200];
        snprintf(u, sizeof(u), "%s/metrics", inst[i].base);
        struct h_resp r;
        assert_int_equal(h_get(u, NULL, &r), 0);
        assert_non_null(strstr(r.body, "\nbulkhead_ratelimit_backend_up 0\n"));
        const char *fb = strstr(r.body, "\nbulkhead_ratelimit_backend_fallbacks_total ");
        assert_non_null(fb);
        assert_true(atoll(fb + strlen("\nbulkhead_ratelimit_backend_fallbacks_total ")) >= 10);
        h_resp_free(&r);
    }
    /* The fallback still limits: one instance alone admits 100 of a fresh tenant. */
    int admitted = 0, refused = 0;
    for (int k = 0; k < 103; k++) {
        struct h_resp r;
        long st = get_free(0, "down-2", &r);
        admitted += st == 200;
        refused += st == 429;
        h_resp_free(&r);
    }
    printf("# fallback on instance A: %d admitted, %d rejected of 103\n", admitted, refused);
    assert_int_equal(admitted, 100);
    assert_int_equal(refused, 3);
}

struct up_ctx {
    int inst;
};

static bool back_on_redis(void *arg)
{
    struct up_ctx *c = arg;
    struct h_resp r;
    get_free(c->inst, "probe", &r);
    h_resp_free(&r);
    char b[64];
    return !strcmp(backend_of(c->inst, b, sizeof(b)), "redis");
}

static void redis_restarted_limit_is_shared_again(void **state)
{
    (void)state;
    assert_int_equal(redisproc_start(&redis), 0);
    for (int i = 0; i < 2; i++) {
        struct up_ctx c = {.inst = i};
        assert_true(h_wait_until(back_on_redis, &c, 15000));
    }
    long long errors[2] = {backend_errors(0), backend_errors(1)};
    int rejected;
    int ok = spread_110("after-restart", &rejected);
    assert_int_equal(ok, 100);
    assert_int_equal(rejected, 10);
    for (int i = 0; i < 2; i++) {
        /* No second outage from the connections that died with the old server. */
        assert_int_equal(backend_errors(i), errors[i]);
        assert_int_equal(h_server_log_count(&inst[i], "\"event\":\"redis_down\""), 1);
        assert_int_equal(h_server_log_count(&inst[i], "\"event\":\"redis_up\""), 1);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(one_tenant_over_two_instances_gets_exactly_100),
        cmocka_unit_test(redis_down_requests_still_served_logged_once),
        cmocka_unit_test(redis_restarted_limit_is_shared_again),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
