/*
 * test_fairness: inside one tier, a noisy tenant hurts only itself. Tenant A floods free with
 * slow queries (within its rate limit) while tenant B keeps sending ordinary requests: every
 * one of B's requests succeeds and B's median latency stays near its unloaded value, because A
 * is held to its share of free's workers, connections and queue.
 */
#include "harness.h"

#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

static char db_url[300];
static struct h_server srv;

static const char *url(const char *path)
{
    return h_url(&srv, path);
}

static int setup(void **state)
{
    (void)state;
    if (h_db_create("fairness", db_url, sizeof(db_url)))
        return -1;
    return h_server_start(&srv, db_url, NULL);
}

static int teardown(void **state)
{
    (void)state;
    h_server_stop(&srv, SIGTERM, 20000);
    return 0;
}

/* B: one ordinary request at a time; records statuses and latencies. */
struct steady {
    atomic_bool stop;
    int n;
    long status[4000];
    double lat[4000];
};

static void *steady_main(void *arg)
{
    struct steady *b = arg;
    const char *h[] = {"X-Tenant-Tier: free", "X-Tenant-Id: tenant-b", NULL};
    /* B's rate limit is 100/min like everyone's: pace at about one request per 0.7 s. */
    while (!atomic_load(&b->stop) && b->n < 4000) {
        struct h_resp r;
        h_get(url("/api/data?limit=5"), h, &r);
        b->status[b->n] = r.status;
        b->lat[b->n] = r.seconds;
        b->n++;
        h_resp_free(&r);
        int64_t until = h_now_ms() + 650;
        while (!atomic_load(&b->stop) && h_now_ms() < until) {
            struct timespec ts = {0, 5000000};
            nanosleep(&ts, NULL); /* pacing a client, not synchronising with the server */
        }
    }
    return NULL;
}

/* A: 3 waves of 30 concurrent slow requests (delay 800 ms): 90 < its limit of 100/min. */
struct flood {
    long status[90];
};

static void *flood_main(void *arg)
{
    struct flood *a = arg;
    const char *h[] = {"X-Tenant-Tier: free", "X-Tenant-Id: tenant-a", NULL};
    for (int w = 0; w < 3; w++)
        h_burst("GET", url("/api/data?delay_ms=800"), h, 30, 30, a->status + 30 * w, NULL);
    return NULL;
}

static int64_t busiest_in_flight(const char *tenant)
{
    json_t *m = h_get_json(url("/metrics/bulkheads"));
    json_t *list =
        json_object_get(json_object_get(json_object_get(m, "free"), "fairness"), "busiest");
    int64_t v = 0;
    size_t i;
    json_t *it;
    json_array_foreach(list, i, it)
    {
        if (!strcmp(json_string_value(json_object_get(it, "tenant")), tenant))
            v = json_integer_value(json_object_get(it, "inFlight"));
    }
    json_decref(m);
    return v;
}

static void a_noisy_tenant_cannot_starve_its_tier_mates(void **state)
{
    (void)state;
    /* B alone: its unloaded latency. */
    struct steady *alone = calloc(1, sizeof(*alone));
    const char *hb[] = {"X-Tenant-Tier: free", "X-Tenant-Id: tenant-b", NULL};
    for (int i = 0; i < 5; i++) {
        struct h_resp r;
        h_get(url("/api/data?limit=5"), hb, &r);
        assert_int_equal(r.status, 200);
        alone->lat[alone->n++] = r.seconds;
        h_resp_free(&r);
    }
    double unloaded = h_median(alone->lat, alone->n);

    struct steady *b = calloc(1, sizeof(*b));
    struct flood *a = calloc(1, sizeof(*a));
    pthread_t tb, ta;
    pthread_create(&tb, NULL, steady_main, b);
    pthread_create(&ta, NULL, flood_main, a);
    /* While A floods, it never holds more than its share (5 of free's 10 workers). */
    int64_t max_a = 0;
    int samples = 0;
    int64_t until = h_now_ms() + 2000;
    while (h_now_ms() < until) {
        int64_t v = busiest_in_flight("id:tenant-a");
        if (v > max_a)
            max_a = v;
        samples++;
    }
    pthread_join(ta, NULL);
    atomic_store(&b->stop, true);
    pthread_join(tb, NULL);

    int a_ok = h_count(a->status, 90, 200), a_503 = h_count(a->status, 90, 503);
    printf("# A: %d ok, %d refused (503) of 90; max in flight %lld (share 5)\n", a_ok, a_503,
           (long long)max_a);
    double loaded = h_median(b->lat, b->n);
    printf("# B: %d requests, all %s; median %.1f ms unloaded, %.1f ms during the flood\n", b->n,
           h_count(b->status, b->n, 200) == b->n ? "200" : "NOT 200", unloaded * 1000,
           loaded * 1000);
    assert_true(samples > 5);
    assert_true(b->n >= 3);
    assert_int_equal(h_count(b->status, b->n, 200), b->n); /* every one of B's requests */
    assert_true(max_a <= 5);                               /* A held to its worker share */
    assert_true(a_503 > 0);                                /* A's excess was refused */
    assert_int_equal(a_ok + a_503, 90);
    /* Near its unloaded value: a generous bound, far below A's 800 ms queries. */
    assert_true(loaded < unloaded + 0.25);

    json_t *m = h_get_json(url("/metrics/bulkheads"));
    json_t *fair = json_object_get(json_object_get(m, "free"), "fairness");
    assert_true(json_integer_value(json_object_get(fair, "rejectedTenantShare")) > 0);
    assert_int_equal(json_integer_value(json_object_get(fair, "tenantWorkerShare")), 5);
    assert_int_equal(json_integer_value(json_object_get(fair, "tenantConnectionShare")), 2);
    json_decref(m);
    free(alone);
    free(a);
    free(b);
}

static void a_tenant_alone_can_use_the_whole_pool(void **state)
{
    (void)state;
    /* pro has seen no other tenant in this server: solo is alone in it. */
    const char *h[] = {"X-Tenant-Tier: pro", "X-Tenant-Id: solo", NULL};
    long st[20];
    double lat[20];
    /* pro: 30 workers, share 15 when others are active; alone, 20 run at once. */
    assert_int_equal(h_burst("GET", url("/api/data?delay_ms=500"), h, 20, 20, st, lat), 0);
    assert_int_equal(h_count(st, 20, 200), 20);
    /* All ran in parallel: none waited behind a cap (generous: one wave, not two). */
    double med = h_median(lat, 20);
    assert_true(med < 0.95);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(a_noisy_tenant_cannot_starve_its_tier_mates),
        cmocka_unit_test(a_tenant_alone_can_use_the_whole_pool),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
