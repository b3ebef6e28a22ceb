/*
 * test_redis: three server instances sharing one rate limit through a real redis-server
 * (RATE_LIMIT_BACKEND=redis), talked to directly. Proves: one instance alone admits exactly 100
 * of 110 requests of a tenant, 16 at a time (those past its lease wait for Redis's answer);
 * 123 requests of one tenant spread over three instances admit between 100 and 100 + 2 x 10
 * (limit + (N-1) x lease, RATE_LIMIT_LEASE_PCT=10), every admission reaches Redis (counted,
 * none dropped, Redis's count equals the admissions) and each instance then refuses it; with
 * Redis stopped every request is still served (each instance limits on its own), each instance
 * logs redis_down once and its metrics show the errors and the fallback; after Redis restarts
 * the limit is shared again, within the same bound.
 *
 * The tier table is the built-in one except free's window: 100 per hour instead of per minute,
 * so the counts do not depend on how fast the requests go through (at 100/min one more
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

#define NINST 3
#define LEASE 10 /* RATE_LIMIT_LEASE_PCT=10 of free's 100 */

static char db_url[300];
static struct redisproc redis;
static struct h_server inst[NINST];

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
    /* REDIS_TIMEOUT_MS: a sanitizer build beside other tests can answer slowly, and a fallback
     * would make the instances count apart. TARPIT=false: each refusal is answered at once
     * rather than held up to 5 s (what is counted here is admissions; test_tarpit holds). */
    static const char *env[] = {"RATE_LIMIT_BACKEND=redis",
                                redis_env,
                                tiers_env,
                                "HTTP_THREADS=4",
                                "REDIS_TIMEOUT_MS=1000",
                                "RATE_LIMIT_LEASE_PCT=10",
                                "TARPIT=false",
                                NULL};
    for (int i = 0; i < NINST; i++)
        if (h_server_start(&inst[i], db_url, env))
            return -1;
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    for (int i = 0; i < NINST; i++)
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

static const char *backend_of(int i, char *buf, size_t len)
{
    return h_metric_text(inst[i].base, "free", "rateLimiter", "backend", buf, len);
}

static long long backend_errors(int i)
{
    return h_metric(inst[i].base, "free", "rateLimiter", "backendErrors");
}

static double prom(int i, const char *name, const char *label)
{
    return h_prom(inst[i].base, name, label);
}

struct spread {
    int inst;
    const char *tenant;
    int n, parallel;
    long status[128];
};

static void *spread_run(void *arg)
{
    struct spread *s = arg;
    char u[200], ten[120];
    snprintf(u, sizeof(u), "%s/api/data?limit=1", inst[s->inst].base);
    snprintf(ten, sizeof(ten), "X-Tenant-Id: %s", s->tenant);
    const char *h[] = {"X-Tenant-Tier: free", ten, NULL};
    h_burst("GET", u, h, s->n, s->parallel, s->status, NULL);
    return NULL;
}

/* n requests of one tenant to each of the first `ninst` instances at the same time; the 200s
 * (the 429s in *rejected). */
static int spread(const char *tenant, int ninst, int n, int *rejected)
{
    struct spread s[NINST];
    pthread_t th[NINST];
    for (int i = 0; i < ninst; i++) {
        s[i] = (struct spread){.inst = i, .tenant = tenant, .n = n, .parallel = 4};
        assert_int_equal(pthread_create(&th[i], NULL, spread_run, &s[i]), 0);
    }
    int ok = 0;
    *rejected = 0;
    for (int i = 0; i < ninst; i++) {
        pthread_join(th[i], NULL);
        ok += h_count(s[i].status, n, 200);
        *rejected += h_count(s[i].status, n, 429);
        printf("# tenant %s: instance %c admitted %d of %d\n", tenant, 'A' + i,
               h_count(s[i].status, n, 200), n);
    }
    return ok;
}

/* Requests of tenant to instance i until one is refused (at most LEASE + 1): those admitted,
 * the 429 in *r. */
static int until_refused(int i, const char *tenant, struct h_resp *r)
{
    for (int k = 0; k <= LEASE + 1; k++) {
        if (get_free(i, tenant, r) == 429)
            return k;
        assert_int_equal(r->status, 200);
        h_resp_free(r);
    }
    fail_msg("instance %c kept admitting %s", 'A' + i, tenant);
    return -1;
}

/* Every instance's batches have been answered: the hits Redis counted are every admission of
 * the free tier so far (this test's and the one before's; a batch may still be on its way when
 * this test starts, so the count is not taken from a starting figure). */
static bool all_counted(void *arg)
{
    (void)arg;
    double counted = 0;
    long long admitted = 0;
    for (int i = 0; i < NINST; i++) {
        counted += prom(i, "bulkhead_ratelimit_backend_hits_total", "result=\"counted\"");
        admitted += h_metric(inst[i].base, "free", "rateLimiter", "allowed");
    }
    return (long long)counted == admitted;
}

static void one_instance_alone_admits_exactly_100_of_110(void **state)
{
    (void)state;
    char b[64];
    assert_string_equal(backend_of(0, b, sizeof(b)), "redis");
    struct spread s = {.inst = 0, .tenant = "alone", .n = 110, .parallel = 16};
    spread_run(&s);
    int ok = h_count(s.status, 110, 200), refused = h_count(s.status, 110, 429);
    printf("# one instance, 110 requests 16 at a time: %d admitted, %d refused, %.0f waited "
           "for Redis's answer\n",
           ok, refused, prom(0, "bulkhead_ratelimit_backend_waits_total", NULL));
    assert_int_equal(ok, 100);
    assert_int_equal(refused, 10);
}

static void three_instances_admit_a_tenant_within_limit_plus_two_leases(void **state)
{
    (void)state;
    for (int i = 0; i < NINST; i++) {
        char b[64];
        assert_string_equal(backend_of(i, b, sizeof(b)), "redis");
    }
    int rejected;
    int ok = spread("shared-1", NINST, 41, &rejected);
    printf("# 123 requests of one tenant over three instances: %d admitted, %d rejected "
           "(bound 100..%d)\n",
           ok, rejected, 100 + (NINST - 1) * LEASE);
    assert_true(ok >= 100 && ok <= 100 + (NINST - 1) * LEASE);
    assert_int_equal(ok + rejected, 123);

    /* Each instance, asked again, refuses (after what its lease still allows), with the
     * headers of what it knows: nothing left until the Retry-After. */
    int more = 0, retry_s[NINST];
    for (int i = 0; i < NINST; i++) {
        struct h_resp r;
        more += until_refused(i, "shared-1", &r);
        char v[32], policy[64], field[64], want[64];
        assert_string_equal(h_header(&r, "RateLimit-Limit", v, sizeof(v)), "100");
        assert_string_equal(h_header(&r, "RateLimit-Remaining", v, sizeof(v)), "0");
        assert_non_null(h_header(&r, "Retry-After", v, sizeof(v)));
        retry_s[i] = atoi(v);
        assert_string_equal(h_header(&r, "RateLimit-Policy", policy, sizeof(policy)),
                            "\"free\";q=100;w=3600");
        snprintf(want, sizeof(want), "\"free\";r=0;t=%s", v);
        assert_string_equal(h_header(&r, "RateLimit", field, sizeof(field)), want);
        h_resp_free(&r);
    }
    printf("# asked again until each refused: %d more admitted\n", more);
    assert_true(ok + more <= 100 + (NINST - 1) * LEASE);
    /* Retry-After is the debt of what was admitted past the limit: one interval (36 s) per
     * request over 99, at most. */
    for (int i = 0; i < NINST; i++)
        assert_true(retry_s[i] >= 1 && retry_s[i] <= 36 * (ok + more - 99));

    /* Every admission reached Redis, none was dropped, and Redis's count is theirs: the TAT is
     * admitted x 36 s ahead (less the seconds the test took). */
    assert_true(h_wait_until(all_counted, NULL, 10000));
    for (int i = 0; i < NINST; i++)
        assert_int_equal(prom(i, "bulkhead_ratelimit_backend_hits_total", "result=\"dropped\""), 0);
    long long ttl = redisproc_int(redis.port, "PTTL bulkhead:rl:free:id:shared-1");
    printf("# Redis: TAT %lld ms ahead, %d admissions x 36 s = %d ms\n", ttl, ok + more,
           (ok + more) * 36000);
    assert_true(ttl <= (ok + more) * 36000LL && ttl > (ok + more - 1) * 36000LL);

    /* Another tenant of the same tier is untouched: its first request sees 99 left. */
    struct h_resp r;
    assert_int_equal(get_free(1, "shared-2", &r), 200);
    char v[32];
    assert_string_equal(h_header(&r, "RateLimit-Remaining", v, sizeof(v)), "99");
    h_resp_free(&r);

    /* The instances counted their admissions and no backend error. */
    for (int i = 0; i < NINST; i++)
        assert_int_equal(backend_errors(i), 0);
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
    for (int i = 0; i < NINST; i++) {
        struct up_ctx c = {.inst = i};
        assert_true(h_wait_until(back_on_redis, &c, 15000));
    }
    long long errors[NINST];
    for (int i = 0; i < NINST; i++)
        errors[i] = backend_errors(i);
    int rejected;
    int ok = spread("after-restart", 2, 56, &rejected);
    printf("# after the restart, 112 requests over two instances: %d admitted (bound 100..%d)\n",
           ok, 100 + LEASE);
    assert_true(ok >= 100 && ok <= 100 + LEASE);
    assert_int_equal(ok + rejected, 112);
    for (int i = 0; i < 2; i++) {
        /* No second outage from the connection that died with the old server. */
        assert_int_equal(backend_errors(i), errors[i]);
        assert_int_equal(h_server_log_count(&inst[i], "\"event\":\"redis_down\""), 1);
        assert_int_equal(h_server_log_count(&inst[i], "\"event\":\"redis_up\""), 1);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(one_instance_alone_admits_exactly_100_of_110),
        cmocka_unit_test(three_instances_admit_a_tenant_within_limit_plus_two_leases),
        cmocka_unit_test(redis_down_requests_still_served_logged_once),
        cmocka_unit_test(redis_restarted_limit_is_shared_again),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
