/*
 * test_ratelimit: layer 1 through the real binary with the in-memory backend: exactly N per
 * tenant per window, tenants independent, enterprise untouched, truthful headers, refill, and
 * the bounded key table. (The Redis backend has its own test, test_redis.)
 */
#include "harness.h"

#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

/* The built-in tiers, and "metered": 10 requests per hour, so nothing refills while a test
 * counts (one request comes back every 360 s). Layer 1 alone: the tarpit (test_storms) would
 * hold refusals sent back to back and so change how long a burst takes, hence how much the
 * limiter refills meanwhile; the capacity controller (test_capacity) may shed free for a
 * second after enterprise's bursts. */
static struct h_suite suite = {.name = "ratelimit",
                               .tiers_json = "{\"free\": {}, \"pro\": {}, \"enterprise\": {},"
                                             " \"metered\": {\"rate_limit\": 10,"
                                             " \"rate_window_s\": 3600}}",
                               .env = {"TARPIT=false", "CAPACITY_CONTROL=false", NULL}};

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

/*
 * n requests for tenant on tier, 8 in flight at a time: fewer than the tier's workers, so
 * every admitted request runs (no bulkhead_full muddies the count). Returns 200s and 429s.
 */
static void fire(const char *tier, const char *tenant, int n, int *ok, int *limited)
{
    char th[64], tn[96];
    snprintf(th, sizeof(th), "X-Tenant-Tier: %s", tier);
    snprintf(tn, sizeof(tn), "X-Tenant-Id: %s", tenant);
    const char *h[] = {th, tn, NULL};
    long *st = calloc((size_t)n, sizeof(long));
    assert_int_equal(h_burst("GET", h_url(&suite.srv, "/api/data?limit=1"), h, n, 8, st, NULL), 0);
    *ok = h_count(st, n, 200);
    *limited = h_count(st, n, 429);
    assert_int_equal(*ok + *limited, n);
    free(st);
}

static void free_tenant_gets_exactly_100_of_110(void **state)
{
    (void)state;
    int ok, limited;
    fire("free", "exact-free", 110, &ok, &limited);
    assert_int_equal(ok, 100);
    assert_int_equal(limited, 10);
}

static void pro_tenant_gets_1000_of_1010_plus_what_refilled(void **state)
{
    (void)state;
    int ok, limited;
    int64_t t0 = h_now_ms();
    fire("pro", "exact-pro", 1010, &ok, &limited);
    int64_t elapsed = h_now_ms() - t0;
    /* 1000 at once, then one more per 60 ms while the 1010 requests were being sent: GCRA is
     * exact, so the only slack is the refill during the burst itself. */
    assert_true(ok >= 1000);
    assert_true(ok <= 1000 + elapsed / 60 + 1);
    assert_int_equal(limited, 1010 - ok);
}

static void enterprise_is_never_limited(void **state)
{
    (void)state;
    int ok, limited;
    fire("enterprise", "big-customer", 1500, &ok, &limited);
    assert_int_equal(ok, 1500);
    assert_int_equal(limited, 0);
    /* No limiter work and no RateLimit headers for an unlimited tier. */
    const char *h[] = {"X-Tenant-Tier: enterprise", NULL};
    struct h_resp r;
    char v[32];
    assert_int_equal(h_get(h_url(&suite.srv, "/api/data?limit=1"), h, &r), 0);
    assert_null(h_header(&r, "RateLimit-Limit", v, sizeof(v)));
    h_resp_free(&r);
    json_t *rl = h_metric_section(suite.srv.base, "enterprise", "rateLimiter");
    assert_int_equal(json_integer_value(json_object_get(rl, "allowed")), 0);
    assert_true(json_is_null(json_object_get(rl, "limit")));
    json_decref(rl);
}

static void tenants_do_not_share_an_allowance(void **state)
{
    (void)state;
    int ok, limited;
    fire("free", "noisy", 130, &ok, &limited);
    assert_int_equal(ok, 100);
    fire("free", "quiet", 5, &ok, &limited);
    assert_int_equal(ok, 5);
    assert_int_equal(limited, 0);
}

static void headers_and_retry_after_are_truthful(void **state)
{
    (void)state;
    const char *h[] = {"X-Tenant-Tier: free", "X-Tenant-Id: headers", NULL};
    char v[32];
    struct h_resp r;
    for (int i = 1; i <= 100; i++) {
        assert_int_equal(h_get(h_url(&suite.srv, "/api/data?limit=1"), h, &r), 0);
        assert_int_equal(r.status, 200);
        assert_string_equal(h_header(&r, "RateLimit-Limit", v, sizeof(v)), "100");
        /* Remaining counts down exactly; a little refill (one per 0.6 s) may add one. */
        long rem = atol(h_header(&r, "RateLimit-Remaining", v, sizeof(v)));
        assert_true(rem >= 100 - i && rem <= 100 - i + 2);
        long reset = atol(h_header(&r, "RateLimit-Reset", v, sizeof(v)));
        assert_true(reset >= 1 && reset <= 60);
        h_resp_free(&r);
    }
    /* Drain whatever refilled meanwhile, then the 429. */
    do {
        assert_int_equal(h_get(h_url(&suite.srv, "/api/data?limit=1"), h, &r), 0);
        if (r.status == 200)
            h_resp_free(&r);
    } while (r.status == 200);
    assert_int_equal(r.status, 429);
    json_t *j = h_json(&r);
    assert_string_equal(json_string_value(json_object_get(j, "error")), "rate_limited");
    json_decref(j);
    assert_string_equal(h_header(&r, "RateLimit-Remaining", v, sizeof(v)), "0");
    long retry = atol(h_header(&r, "Retry-After", v, sizeof(v)));
    assert_int_equal(retry, 1); /* one request per 0.6 s: whole seconds, at least 1 */
    long reset = atol(h_header(&r, "RateLimit-Reset", v, sizeof(v)));
    assert_true(reset >= 55 && reset <= 61); /* the whole burst needs about a minute */
    h_resp_free(&r);
}

/*
 * draft-ietf-httpapi-ratelimit-headers (07 and later): RateLimit-Policy names the tier's quota
 * and window; RateLimit says what is left and for how long no more is: after N requests, r is
 * exactly limit - N; t is the time until one request comes back (at most the 360 s interval),
 * and on a 429 the Retry-After itself. The three older fields stay, with the same numbers.
 * Requests refused before the limiter (a 400) consumed nothing and carry none of them.
 */
static void ratelimit_fields_follow_the_draft(void **state)
{
    (void)state;
    const char *h[] = {"X-Tenant-Tier: metered", "X-Tenant-Id: draft", NULL};
    char v[96], want[96];
    struct h_resp r;
    for (int n = 1; n <= 10; n++) {
        assert_int_equal(h_get(h_url(&suite.srv, "/api/data?limit=1"), h, &r), 0);
        assert_int_equal(r.status, 200);
        assert_string_equal(h_header(&r, "RateLimit-Policy", v, sizeof(v)),
                            "\"metered\";q=10;w=3600");
        long rem = -1, t = -1;
        int end = 0;
        assert_non_null(h_header(&r, "RateLimit", v, sizeof(v)));
        assert_int_equal(sscanf(v, "\"metered\";r=%ld;t=%ld%n", &rem, &t, &end), 2);
        assert_int_equal((size_t)end, strlen(v));
        assert_int_equal(rem, 10 - n);
        assert_true(t >= 1 && t <= 360);
        snprintf(want, sizeof(want), "%d", 10 - n);
        assert_string_equal(h_header(&r, "RateLimit-Remaining", v, sizeof(v)), want);
        assert_string_equal(h_header(&r, "RateLimit-Limit", v, sizeof(v)), "10");
        long reset = atol(h_header(&r, "RateLimit-Reset", v, sizeof(v)));
        assert_true(reset > (n - 1) * 360 && reset <= n * 360); /* until all 10 are back */
        h_resp_free(&r);
    }
    assert_int_equal(h_get(h_url(&suite.srv, "/api/data?limit=1"), h, &r), 0);
    assert_int_equal(r.status, 429);
    char retry[16];
    assert_non_null(h_header(&r, "Retry-After", retry, sizeof(retry)));
    assert_true(atol(retry) >= 1 && atol(retry) <= 360);
    snprintf(want, sizeof(want), "\"metered\";r=0;t=%s", retry);
    assert_string_equal(h_header(&r, "RateLimit", v, sizeof(v)), want);
    assert_string_equal(h_header(&r, "RateLimit-Remaining", v, sizeof(v)), "0");
    h_resp_free(&r);
    /* Refused before the limiter: no RateLimit fields at all. */
    assert_int_equal(h_get(h_url(&suite.srv, "/api/data?limit=zero"), h, &r), 0);
    assert_int_equal(r.status, 400);
    assert_null(h_header(&r, "RateLimit", v, sizeof(v)));
    assert_null(h_header(&r, "RateLimit-Policy", v, sizeof(v)));
    assert_null(h_header(&r, "RateLimit-Limit", v, sizeof(v)));
    h_resp_free(&r);
}

struct refill_ctx {
    const char *const *h;
    int rejected;
};

static bool admitted(void *arg)
{
    struct refill_ctx *c = arg;
    struct h_resp r;
    h_get(h_url(&suite.srv, "/api/data?limit=1"), c->h, &r);
    long st = r.status;
    h_resp_free(&r);
    if (st == 429)
        c->rejected++;
    return st == 200;
}

static void a_rejected_tenant_is_admitted_after_the_refill_time(void **state)
{
    (void)state;
    int ok, limited;
    fire("free", "refill", 105, &ok, &limited);
    assert_int_equal(ok, 100);
    const char *h[] = {"X-Tenant-Tier: free", "X-Tenant-Id: refill", NULL};
    struct refill_ctx c = {.h = h};
    int64_t t0 = h_now_ms();
    /* Rejections cost nothing, so polling does not delay the refill. */
    assert_true(h_wait_until(admitted, &c, 3000));
    int64_t waited = h_now_ms() - t0;
    assert_true(c.rejected >= 1);
    assert_true(waited >= 300); /* one request per 600 ms; generous lower bound */
    /* And only one: the next is refused again. */
    struct h_resp r;
    h_get(h_url(&suite.srv, "/api/data?limit=1"), h, &r);
    assert_int_equal(r.status, 429);
    h_resp_free(&r);
}

static void rejections_never_reach_a_worker(void **state)
{
    (void)state;
    json_t *before = h_metric_section(suite.srv.base, "free", "threadPool");
    int ok, limited;
    fire("free", "flood-check", 150, &ok, &limited);
    json_t *after = h_metric_section(suite.srv.base, "free", "threadPool");
    assert_int_equal(limited, 50);
    /* Only the admitted ones were queued for a worker. */
    assert_int_equal(json_integer_value(json_object_get(after, "submitted")) -
                         json_integer_value(json_object_get(before, "submitted")),
                     ok);
    json_decref(before);
    json_decref(after);
}

static void the_key_table_is_bounded_and_overflow_ids_share_one_bucket(void **state)
{
    (void)state;
    /* Hourly limits: a tracked key holds its slot for 36 s after one request, longer than this
     * loop takes even under a sanitizer, so slots do not free up while it runs. */
    char tiers[400];
    assert_int_equal(h_tiers_env("tiers-keycap.json", H_TIERS_HOURLY, tiers, sizeof(tiers)), 0);
    const char *e[] = {"RATE_LIMIT_MAX_KEYS=64", tiers, NULL};
    struct h_server s2;
    assert_int_equal(h_server_start(&s2, suite.db_url, e), 0);
    /* One request each for 600 distinct tenant ids. */
    int admitted_n = 0;
    int64_t t0 = h_now_ms();
    for (int i = 0; i < 600; i++) {
        char tn[64];
        snprintf(tn, sizeof(tn), "X-Tenant-Id: cycle-%d", i);
        const char *h[] = {"X-Tenant-Tier: free", tn, NULL};
        struct h_resp r;
        h_get(h_url(&s2, "/health"), NULL, &r); /* keep the connection warm; not limited */
        h_resp_free(&r);
        h_get(h_url(&s2, "/api/data?limit=1"), h, &r);
        admitted_n += r.status == 200;
        assert_true(r.status == 200 || r.status == 429);
        h_resp_free(&r);
    }
    double refills = (double)(h_now_ms() - t0) / 36000.0 + 1; /* one per 36 s */
    json_t *rl = h_metric_section(s2.base, "free", "rateLimiter");
    int64_t keys = json_integer_value(json_object_get(rl, "keysTracked"));
    int64_t overflow = json_integer_value(json_object_get(rl, "overflowed"));
    json_decref(rl);
    assert_int_equal(h_server_stop(&s2, SIGTERM, 20000), 0);
    assert_true(keys <= 64);
    assert_true(overflow >= 600 - 64);
    /* A tracked slot admits one request per refill interval (its key expires after that);
     * every untracked id shares the one overflow bucket of 100. Without the cap all 600 fresh
     * ids would have been admitted. */
    assert_true(admitted_n >= 64 + 100);
    assert_true(admitted_n <= (int)(64 * refills + 100 + refills));
    assert_true(admitted_n < 600);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(free_tenant_gets_exactly_100_of_110),
        cmocka_unit_test(pro_tenant_gets_1000_of_1010_plus_what_refilled),
        cmocka_unit_test(enterprise_is_never_limited),
        cmocka_unit_test(tenants_do_not_share_an_allowance),
        cmocka_unit_test(headers_and_retry_after_are_truthful),
        cmocka_unit_test(ratelimit_fields_follow_the_draft),
        cmocka_unit_test(a_rejected_tenant_is_admitted_after_the_refill_time),
        cmocka_unit_test(rejections_never_reach_a_worker),
        cmocka_unit_test(the_key_table_is_bounded_and_overflow_ids_share_one_bucket),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
