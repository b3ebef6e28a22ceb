/*
 * test_scaleout: scale-out without Docker. A real redis-server, two server instances with
 * RATE_LIMIT_BACKEND=redis, and a real nginx running the shipped deploy/nginx.conf and
 * deploy/proxy.conf (only addresses and paths rewritten for loopback) balancing round-robin
 * over both (tests/integration/nginxproc). Proves: 112 requests of one free tenant through nginx
 * admit between 100 and 110 (limit + (N-1) x lease, with RATE_LIMIT_LEASE_PCT=10: each instance
 * may admit 10 that Redis has not counted yet), both instances serving, with RateLimit
 * headers; another tenant and the other tiers are unaffected; clients without X-Tenant-Id are
 * limited by their own address (X-Forwarded-For from the trusted balancer), within the same
 * bound, not all together as nginx's; the public port refuses /admin, /metrics and /dashboard
 * in JSON however they are spelled, the operators' port serves them; after one instance is
 * SIGKILLed every tier is still served through nginx, and the shared limit holds.
 *
 * As in test_redis, free's window is an hour (100 per 3600 s) so the counts do not depend on
 * how fast the requests go.
 */
#include "harness.h"

#include "../redisproc.h"
#include "nginxproc.h"

#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

static char db_url[300];
static struct redisproc redis;
static struct h_server inst[2];
static struct nginxproc nginx;

static int setup(void **state)
{
    (void)state;
    if (h_db_create("scaleout", db_url, sizeof(db_url)))
        return -1;
    if (redisproc_start(&redis))
        return -1;
    static char tiers_env[400], redis_env[120];
    if (h_tiers_env("tiers-scaleout.json", H_TIERS_HOURLY, tiers_env, sizeof(tiers_env)))
        return -1;
    snprintf(redis_env, sizeof(redis_env), "REDIS_URL=%s", redis.url);
    /* nginx is on loopback here; in compose it is BALANCER_IP. */
    /* REDIS_TIMEOUT_MS: a sanitizer build beside other tests can answer slower than the 50 ms
     * default, and a fallback would make the instances count apart. */
    static const char *env[] = {"RATE_LIMIT_BACKEND=redis",
                                redis_env,
                                tiers_env,
                                "TRUSTED_PROXIES=127.0.0.1",
                                "REDIS_TIMEOUT_MS=2000",
                                "RATE_LIMIT_LEASE_PCT=10",
                                NULL};
    for (int i = 0; i < 2; i++)
        if (h_server_start(&inst[i], db_url, env))
            return -1;
    return nginxproc_start(&nginx, inst[0].port, inst[1].port);
}

static int teardown(void **state)
{
    (void)state;
    nginxproc_stop(&nginx);
    for (int i = 0; i < 2; i++)
        if (inst[i].pid > 0)
            h_server_stop(&inst[i], SIGTERM, 20000);
    redisproc_stop(&redis);
    return 0;
}

static long via_nginx(const char *tier, const char *tenant, struct h_resp *r)
{
    char u[200], tr[64], ten[120];
    snprintf(u, sizeof(u), "%s/api/data?limit=1", nginx.base);
    snprintf(tr, sizeof(tr), "X-Tenant-Tier: %s", tier);
    snprintf(ten, sizeof(ten), "X-Tenant-Id: %s", tenant);
    const char *h[] = {tr, ten, NULL};
    h_get(u, h, r);
    return r->status;
}

static long long free_allowed(int i)
{
    return h_metric(inst[i].base, "free", "rateLimiter", "allowed");
}

/* Requests of tenant straight to instance i until one is refused (at most 11: its lease and
 * one): those admitted. */
static int until_refused(int i, const char *tenant)
{
    char u[200], ten[120];
    snprintf(u, sizeof(u), "%s/api/data?limit=1", inst[i].base);
    snprintf(ten, sizeof(ten), "X-Tenant-Id: %s", tenant);
    const char *h[] = {"X-Tenant-Tier: free", ten, NULL};
    for (int k = 0; k <= 11; k++) {
        struct h_resp r;
        long st = h_get(u, h, &r) == 0 ? r.status : 0;
        h_resp_free(&r);
        if (st == 429)
            return k;
        assert_int_equal(st, 200);
    }
    fail_msg("instance %d kept admitting %s", i, tenant);
    return -1;
}

static void through_nginx_a_tenant_is_admitted_within_its_limit_plus_one_lease(void **state)
{
    (void)state;
    char v[32];
    /* The first one, alone: a full bucket. */
    struct h_resp r;
    assert_int_equal(via_nginx("free", "lb-1", &r), 200);
    assert_string_equal(h_header(&r, "RateLimit-Limit", v, sizeof(v)), "100");
    assert_string_equal(h_header(&r, "RateLimit-Remaining", v, sizeof(v)), "99");
    assert_non_null(h_header(&r, "RateLimit-Reset", v, sizeof(v)));
    h_resp_free(&r);

    /* 110 more, four at a time, round-robin over both instances: at least two past the bound. */
    char u[200];
    snprintf(u, sizeof(u), "%s/api/data?limit=1", nginx.base);
    const char *h[] = {"X-Tenant-Tier: free", "X-Tenant-Id: lb-1", NULL};
    long st[110];
    assert_int_equal(h_burst("GET", u, h, 110, 4, st, NULL), 0);
    int ok = h_count(st, 110, 200), limited = h_count(st, 110, 429);

    /* The 112th: refused, with the headers that say when to come back. */
    assert_int_equal(via_nginx("free", "lb-1", &r), 429);
    assert_string_equal(h_header(&r, "RateLimit-Limit", v, sizeof(v)), "100");
    assert_string_equal(h_header(&r, "RateLimit-Remaining", v, sizeof(v)), "0");
    assert_non_null(h_header(&r, "RateLimit-Reset", v, sizeof(v)));
    assert_non_null(h_header(&r, "Retry-After", v, sizeof(v)));
    json_t *j = h_json(&r);
    assert_string_equal(json_string_value(json_object_get(j, "error")), "rate_limited");
    json_decref(j);
    h_resp_free(&r);

    long long a = free_allowed(0), b = free_allowed(1);
    printf("# 112 requests through nginx: %d admitted, %d rejected; instance A admitted %lld, "
           "instance B %lld (bound 100..110)\n",
           1 + ok, limited + 1, a, b);
    assert_true(1 + ok >= 100 && 1 + ok <= 110);
    assert_int_equal(1 + ok + limited + 1, 112);
    assert_int_equal(a + b, 1 + ok);
    assert_true(a > 0 && b > 0); /* both instances served: the limit really was shared */

    /* Each instance, asked directly, refuses too (after what its lease still allows), and the
     * total stays within the bound. */
    int more = until_refused(0, "lb-1") + until_refused(1, "lb-1");
    assert_true(1 + ok + more <= 110);
}

static void another_tenant_and_other_tiers_are_unaffected(void **state)
{
    (void)state;
    char v[32];
    struct h_resp r;
    assert_int_equal(via_nginx("free", "lb-2", &r), 200);
    assert_string_equal(h_header(&r, "RateLimit-Remaining", v, sizeof(v)), "99");
    h_resp_free(&r);
    assert_int_equal(via_nginx("pro", "lb-1", &r), 200);
    assert_string_equal(h_header(&r, "RateLimit-Limit", v, sizeof(v)), "1000");
    h_resp_free(&r);
    assert_int_equal(via_nginx("enterprise", "lb-1", &r), 200);
    assert_null(h_header(&r, "RateLimit-Limit", v, sizeof(v))); /* unlimited */
    h_resp_free(&r);
}

static void clients_without_a_tenant_id_are_limited_by_their_own_address(void **state)
{
    (void)state;
    /* As if an outer proxy had said who the client is; nginx appends its own peer (127.0.0.1),
     * which the instances trust, so the rightmost untrusted address is the client's. */
    char u[200];
    snprintf(u, sizeof(u), "%s/api/data?limit=1", nginx.base);
    const char *a[] = {"X-Tenant-Tier: free", "X-Forwarded-For: 198.51.100.7", NULL};
    long st[112];
    assert_int_equal(h_burst("GET", u, a, 112, 4, st, NULL), 0);
    int admitted = h_count(st, 112, 200);
    assert_true(admitted >= 100 && admitted <= 110);
    assert_int_equal(admitted + h_count(st, 112, 429), 112);
    const char *b[] = {"X-Tenant-Tier: free", "X-Forwarded-For: 198.51.100.8", NULL};
    struct h_resp r;
    h_get(u, b, &r);
    char v[32];
    printf("# through nginx: client 198.51.100.7 got %d of 112, client 198.51.100.8 then %ld "
           "(remaining %s)\n",
           admitted, r.status, h_header(&r, "RateLimit-Remaining", v, sizeof(v)));
    assert_int_equal(r.status, 200);
    assert_string_equal(h_header(&r, "RateLimit-Remaining", v, sizeof(v)), "99");
    h_resp_free(&r);
}

static void the_public_port_refuses_operator_endpoints_in_json(void **state)
{
    (void)state;
    static const struct {
        const char *method, *path;
    } refused[] = {
        {"GET", "/metrics"},
        {"GET", "/metrics/bulkheads"},
        {"GET", "/dashboard"},
        {"GET", "/dashboard/data?since=0"},
        {"POST", "/admin/breaker/free/open"},
        /* what nginx normalises before matching, and bulkhead (libmicrohttpd) decodes too */
        {"GET", "//metrics"},
        {"GET", "/%6Detrics"},
        {"GET", "/metrics%2Fbulkheads"},
        {"POST", "//admin/breaker/free/open"},
        {"POST", "/%61dmin/breaker/free/open"},
        {"GET", "/metrics?format=prometheus"},
    };
    for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++) {
        char u[300], ct[80];
        snprintf(u, sizeof(u), "%s%s", nginx.base, refused[i].path);
        struct h_resp r;
        h_request(refused[i].method, u, NULL, refused[i].method[0] == 'P' ? "" : NULL, &r);
        if (r.status != 404)
            fail_msg("%s %s on the public port: %ld", refused[i].method, refused[i].path, r.status);
        assert_non_null(h_header(&r, "Content-Type", ct, sizeof(ct)));
        assert_string_equal(ct, "application/json");
        json_t *j = h_json(&r);
        assert_non_null(j);
        assert_string_equal(json_string_value(json_object_get(j, "error")), "not_found");
        assert_true(strlen(json_string_value(json_object_get(j, "request_id"))) > 0);
        json_decref(j);
        h_resp_free(&r);
    }
    /* The API and /health are what the public port is for. */
    struct h_resp r;
    char u[300];
    snprintf(u, sizeof(u), "%s/health", nginx.base);
    h_get(u, NULL, &r);
    assert_int_equal(r.status, 200);
    h_resp_free(&r);
    /* The operators' port serves the same paths from the instances. */
    static const struct {
        const char *method, *path;
        long status;
    } served[] = {
        {"GET", "/metrics", 200},
        {"GET", "/metrics/bulkheads", 200},
        {"GET", "/dashboard", 200},
        {"GET", "/dashboard/data?since=0", 200},
        {"POST", "/admin/breaker/free/reset", 404}, /* bulkhead's own: no ADMIN_TOKEN here */
    };
    for (size_t i = 0; i < sizeof(served) / sizeof(served[0]); i++) {
        snprintf(u, sizeof(u), "%s%s", nginx.ops_base, served[i].path);
        h_request(served[i].method, u, NULL, served[i].method[0] == 'P' ? "" : NULL, &r);
        char rid[100];
        if (r.status != served[i].status)
            fail_msg("%s %s on the operators' port: %ld", served[i].method, served[i].path,
                     r.status);
        assert_non_null(h_header(&r, "X-Request-Id", rid, sizeof(rid))); /* bulkhead answered */
        h_resp_free(&r);
    }
    printf("# public port: %zu operator paths refused with JSON 404; operators' port serves "
           "them\n",
           sizeof(refused) / sizeof(refused[0]));
}

static void a_killed_instance_costs_no_request_in_any_tier(void **state)
{
    (void)state;
    char needle[64];
    snprintf(needle, sizeof(needle), "127.0.0.1:%d", inst[1].port);
    assert_int_equal(h_server_stop(&inst[1], SIGKILL, 10000), 128 + SIGKILL);

    const char *tiers[] = {"free", "pro", "enterprise"};
    int served[3] = {0};
    for (int t = 0; t < 3; t++) {
        for (int k = 0; k < 12; k++) {
            char tenant[32];
            snprintf(tenant, sizeof(tenant), "after-kill-%d", k % 3);
            struct h_resp r;
            served[t] += via_nginx(tiers[t], tenant, &r) == 200;
            h_resp_free(&r);
        }
    }
    /* And a concurrent burst, which opens fresh upstream connections. */
    char u[200];
    snprintf(u, sizeof(u), "%s/api/data?limit=1", nginx.base);
    const char *h[] = {"X-Tenant-Tier: enterprise", "X-Tenant-Id: after-kill-burst", NULL};
    long st[30];
    assert_int_equal(h_burst("GET", u, h, 30, 6, st, NULL), 0);
    printf("# instance B killed: through nginx free %d/12, pro %d/12, enterprise %d/12 and "
           "%d/30 in a burst answered 200\n",
           served[0], served[1], served[2], h_count(st, 30, 200));
    for (int t = 0; t < 3; t++)
        assert_int_equal(served[t], 12);
    assert_int_equal(h_count(st, 30, 200), 30);

    /* nginx did meet the dead instance and moved on (proxy_next_upstream). */
    char *log = h_read_file(nginx.errlog);
    assert_non_null(log);
    assert_non_null(strstr(log, needle));
    free(log);

    /* The surviving instance refuses the tenant that spent its 100: Redis has its count. If it
     * has forgotten the tenant meanwhile (its local entry swept: a slow run under ASan), it
     * admits one request on a fresh lease before Redis's count arrives, as for any tenant it
     * never saw, and no more. */
    long last = 0;
    int admitted = 0;
    for (int i = 0; i < 20 && last != 429; i++) {
        struct h_resp r;
        last = via_nginx("free", "lb-1", &r);
        admitted += last == 200;
        h_resp_free(&r);
    }
    printf("# the spent tenant after the kill: %d admitted before the refusal\n", admitted);
    assert_int_equal(last, 429);
    assert_true(admitted <= 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(through_nginx_a_tenant_is_admitted_within_its_limit_plus_one_lease),
        cmocka_unit_test(another_tenant_and_other_tiers_are_unaffected),
        cmocka_unit_test(clients_without_a_tenant_id_are_limited_by_their_own_address),
        cmocka_unit_test(the_public_port_refuses_operator_endpoints_in_json),
        cmocka_unit_test(a_killed_instance_costs_no_request_in_any_tier),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
