/*
 * test_fairness: inside one tier, a noisy tenant hurts only itself. Tenant A floods free with
 * slow queries (within its rate limit) while tenant B keeps sending ordinary requests: every
 * one of B's requests succeeds and B's median latency stays near its unloaded value, because A
 * is held to its share of free's workers, connections and queue. A slow tenant that holds
 * every worker and connection but the newcomers' reserve does not delay a quiet tenant's first
 * request, drains to its share while that tenant is active, and gets the pool back after the
 * linger; alone, a tenant uses everything but the reserve, and a tenant whose cheap reads made it
 * brief still leaves the reserve to a newcomer when it bursts slow requests. With
 * fair_queue_cost, a tenant that used more database time is served after one that used less,
 * where round-robin serves it first. States, counts and order, no timings.
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

/* The built-in tiers, but pro's requests may take 20 s and wait 20 s for a worker or a
 * connection (its burst below holds them 4 s, and the ones beyond the connections wait). */
static struct h_suite suite = {
    .name = "fairness",
    .tiers_json = "{\"free\": {}, \"pro\": {\"breaker_timeout_ms\": 20000,"
                  " \"queue_timeout_ms\": 20000, \"db_acquire_timeout_ms\": 20000},"
                  " \"enterprise\": {}}"};

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
        h_get(h_url(&suite.srv, "/api/data?limit=5"), h, &r);
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
        h_burst("GET", h_url(&suite.srv, "/api/data?delay_ms=800"), h, 30, 30, a->status + 30 * w,
                NULL);
    return NULL;
}

/* What /metrics/bulkheads shows of one tenant of a tier (zeros when it is not among the
 * busiest). */
struct held {
    int64_t in_flight, queued, conns;
};

static struct held tenant_held(const struct h_server *s, const char *tier, const char *tenant)
{
    struct held v = {0, 0, 0};
    json_t *m = h_get_json(h_url(s, "/metrics/bulkheads"));
    json_t *list =
        json_object_get(json_object_get(json_object_get(m, tier), "fairness"), "busiest");
    size_t i;
    json_t *it;
    json_array_foreach(list, i, it)
    {
        if (!strcmp(json_string_value(json_object_get(it, "tenant")), tenant)) {
            v.in_flight = json_integer_value(json_object_get(it, "inFlight"));
            v.queued = json_integer_value(json_object_get(it, "queued"));
            v.conns = json_integer_value(json_object_get(it, "connections"));
        }
    }
    json_decref(m);
    return v;
}

struct held_want {
    const struct h_server *srv;
    const char *tier, *tenant;
    int64_t in_flight, conns;
};

static bool holds_exactly(void *arg)
{
    struct held_want *w = arg;
    struct held v = tenant_held(w->srv, w->tier, w->tenant);
    return v.in_flight == w->in_flight && v.conns == w->conns;
}

/* All the workers wanted, and never more connections than wanted (how many are open at that
 * moment depends on how fast PostgreSQL accepts connections beside the rest of the suite). */
static bool holds_workers_within_conns(void *arg)
{
    struct held_want *w = arg;
    struct held v = tenant_held(w->srv, w->tier, w->tenant);
    return v.in_flight == w->in_flight && v.conns >= 1 && v.conns <= w->conns;
}

static void a_noisy_tenant_cannot_starve_its_tier_mates(void **state)
{
    (void)state;
    /* B alone: its unloaded latency. */
    struct steady *alone = calloc(1, sizeof(*alone));
    const char *hb[] = {"X-Tenant-Tier: free", "X-Tenant-Id: tenant-b", NULL};
    for (int i = 0; i < 5; i++) {
        struct h_resp r;
        h_get(h_url(&suite.srv, "/api/data?limit=5"), hb, &r);
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
        int64_t v = tenant_held(&suite.srv, "free", "id:tenant-a").in_flight;
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

    json_t *m = h_get_json(h_url(&suite.srv, "/metrics/bulkheads"));
    json_t *fair = json_object_get(json_object_get(m, "free"), "fairness");
    assert_true(json_integer_value(json_object_get(fair, "rejectedTenantShare")) > 0);
    assert_int_equal(json_integer_value(json_object_get(fair, "tenantWorkerShare")), 5);
    assert_int_equal(json_integer_value(json_object_get(fair, "tenantConnectionShare")), 2);
    json_decref(m);
    free(alone);
    free(a);
    free(b);
}

/* ---- the issue-13 scenario: a slow tenant holding its tier, a quiet one beside it ---------- */

/* free as built in (10 workers, 5 connections, share 50 %, reserve 10 %), with the rate limit
 * lifted so only the bulkheads act, and waits long enough that no slow request of the noisy
 * tenant ends by a timeout: every one it sends is served, late. The linger is 3 s (1 s built
 * in): on a machine busy with the rest of the suite under ASan, the quiet tenant's client was
 * once away between two reads for longer than 1 s, and the noisy tenant rightly took the tier
 * back (9 workers). */
#define FAIR_TIERS                                                                                 \
    "{\"free\": {\"workers\": 10, \"queue_max\": 20, \"db_max\": 5, \"rate_limit\": 1000000,"      \
    " \"tenant_share_pct\": 50, \"tenant_queue_pct\": 50, \"tenant_reserve_pct\": 10,"             \
    " \"tenant_linger_ms\": 3000, \"queue_timeout_ms\": 60000, \"db_acquire_timeout_ms\": 60000,"  \
    " \"breaker_timeout_ms\": 60000}, \"pro\": {}, \"enterprise\": {}}"

struct looper {
    const struct h_server *srv;
    const char *tenant;
    const char *first_path; /* the first request of each client */
    const char *path;       /* every later one */
    atomic_bool stop;
    atomic_int done, ok;
};

/* One client: requests back to back until stop. */
static void *looper_main(void *arg)
{
    struct looper *l = arg;
    char tenant_h[96];
    snprintf(tenant_h, sizeof(tenant_h), "X-Tenant-Id: %s", l->tenant);
    const char *h[] = {"X-Tenant-Tier: free", tenant_h, NULL};
    const char *path = l->first_path;
    while (!atomic_load(&l->stop)) {
        struct h_resp r;
        h_get(h_url(l->srv, path), h, &r);
        atomic_fetch_add(&l->ok, r.status == 200);
        atomic_fetch_add(&l->done, 1);
        h_resp_free(&r);
        path = l->path;
    }
    return NULL;
}

static bool looper_done(void *arg)
{
    struct looper *l = arg;
    return atomic_load(&l->done) >= 20;
}

/*
 * A noisy tenant's 12 clients send slow queries back to back; alone, it holds every worker and
 * connection of free but the reserve (9 and 4). A quiet tenant then sends cheap reads: they are
 * served while none of the noisy tenant's slow queries has ended (the newcomer takes the
 * reserve). While the quiet tenant stays active, the noisy one drains to its share and never
 * holds more than its share of workers (5) or connections (2) again. When the quiet tenant
 * stops, the noisy one gets all but the reserve back once the linger has passed.
 */
static void a_quiet_tenant_is_served_beside_a_slow_one_holding_the_tier(void **state)
{
    (void)state;
    char tiers_env[400];
    assert_int_equal(h_tiers_env("fair-issue13.json", FAIR_TIERS, tiers_env, sizeof(tiers_env)), 0);
    const char *env[] = {tiers_env, "ACCESS_LOG=false", NULL};
    /* Static, as the clients' threads would outlive a failed test's frame. */
    static struct h_server s2;
    assert_int_equal(h_server_start(&s2, suite.db_url, env), 0);

    /* The first query of each noisy client lasts 5 s, the rest 0.3 s. */
    static struct looper noisy, quiet;
    noisy = (struct looper){.srv = &s2,
                            .tenant = "noisy",
                            .first_path = "/api/data?delay_ms=5000",
                            .path = "/api/data?delay_ms=300"};
    pthread_t nt[12];
    for (int i = 0; i < 12; i++)
        pthread_create(&nt[i], NULL, looper_main, &noisy);
    struct held_want all_but_reserve = {&s2, "free", "id:noisy", 9, 4};
    assert_true(h_wait_until(holds_exactly, &all_but_reserve, 30000));
    assert_int_equal(atomic_load(&noisy.done), 0);

    /* The quiet tenant's reads are answered while every slow query is still running. */
    quiet = (struct looper){.srv = &s2,
                            .tenant = "quiet",
                            .first_path = "/api/data?limit=5",
                            .path = "/api/data?limit=5"};
    pthread_t qt;
    pthread_create(&qt, NULL, looper_main, &quiet);
    assert_true(h_wait_until(looper_done, &quiet, 30000));
    assert_int_equal(atomic_load(&noisy.done), 0);
    assert_int_equal(atomic_load(&quiet.ok), atomic_load(&quiet.done));

    /* While the quiet tenant is active the noisy one drains to its share and stays there. */
    int64_t max_after = 0, max_conns_after = 0;
    bool at_share = false;
    int samples = 0;
    while (atomic_load(&noisy.done) < 40) {
        struct held v = tenant_held(&s2, "free", "id:noisy");
        if (!at_share && v.in_flight <= 5 && v.conns <= 2)
            at_share = true;
        if (at_share) {
            samples++;
            if (v.in_flight > max_after)
                max_after = v.in_flight;
            if (v.conns > max_conns_after)
                max_conns_after = v.conns;
        }
        h_nap_ms(5);
    }
    atomic_store(&quiet.stop, true);
    pthread_join(qt, NULL);
    printf("# quiet: %d of %d served; noisy: %d done; after reaching its share: %d samples, "
           "max %lld workers, %lld connections\n",
           atomic_load(&quiet.ok), atomic_load(&quiet.done), atomic_load(&noisy.done), samples,
           (long long)max_after, (long long)max_conns_after);
    assert_true(at_share);
    assert_true(samples > 0);
    assert_true(max_after <= 5);
    assert_true(max_conns_after <= 2);
    assert_int_equal(atomic_load(&quiet.ok), atomic_load(&quiet.done));

    /* Alone again: after the quiet tenant's linger, the noisy one holds all but the reserve. */
    assert_true(h_wait_until(holds_exactly, &all_but_reserve, 30000));

    atomic_store(&noisy.stop, true);
    for (int i = 0; i < 12; i++)
        pthread_join(nt[i], NULL);
    assert_int_equal(atomic_load(&noisy.ok), atomic_load(&noisy.done));
    json_t *m = h_get_json(h_url(&s2, "/metrics/bulkheads"));
    json_t *fair = json_object_get(json_object_get(m, "free"), "fairness");
    assert_int_equal(json_integer_value(json_object_get(fair, "workerReserve")), 1);
    assert_int_equal(json_integer_value(json_object_get(fair, "connectionReserve")), 1);
    assert_int_equal(json_integer_value(json_object_get(fair, "lingerMs")), 3000);
    json_decref(m);
    h_server_stop(&s2, SIGTERM, 20000);
}

/* ---- the issue-26 scenario: a tenant turns brief, then bursts slow requests ---------------- */

/* free as built in (10 workers, 5 connections, share 50 %, reserve 10 %), the rate limit lifted
 * and the waits long, as above; brief_request_ms 200 so that cheap reads count as brief on any
 * machine, sanitizer builds included. */
#define BRIEF_TIERS                                                                                \
    "{\"free\": {\"workers\": 10, \"queue_max\": 20, \"db_max\": 5, \"rate_limit\": 1000000,"      \
    " \"tenant_share_pct\": 50, \"tenant_queue_pct\": 50, \"tenant_reserve_pct\": 10,"             \
    " \"tenant_linger_ms\": 1000, \"brief_request_ms\": 200, \"queue_timeout_ms\": 60000,"         \
    " \"db_acquire_timeout_ms\": 60000, \"breaker_timeout_ms\": 60000},"                           \
    " \"pro\": {}, \"enterprise\": {}}"

struct slow_burst {
    const struct h_server *srv;
    long st[10];
};

static void *slow_burst_main(void *arg)
{
    struct slow_burst *b = arg;
    const char *h[] = {"X-Tenant-Tier: free", "X-Tenant-Id: bursty", NULL};
    h_burst("GET", h_url(b->srv, "/api/data?delay_ms=5000"), h, 10, 10, b->st, NULL);
    return NULL;
}

/* Waits until the burst holds what it can, and records the most it ever held meanwhile. */
struct burst_watch {
    const struct h_server *srv;
    int64_t max_in_flight, max_conns;
};

static bool burst_settled(void *arg)
{
    struct burst_watch *w = arg;
    struct held v = tenant_held(w->srv, "free", "id:bursty");
    if (v.in_flight > w->max_in_flight)
        w->max_in_flight = v.in_flight;
    if (v.conns > w->max_conns)
        w->max_conns = v.conns;
    /* How many connections are open by then depends on how fast PostgreSQL accepts them
     * beside the rest of the suite (once, not all four before the first request ended): the
     * bound on them is checked on the maximum seen. */
    return v.in_flight == 9 && v.queued == 1 && v.conns >= 1;
}

/*
 * A tenant sends cheap reads (it is brief: they held a worker for a few milliseconds), then ten
 * 5 s requests at once. Being brief buys no more than one slot past its share beside others and
 * never the reserve: alone, the burst holds 9 of the 10 workers and 4 of the 5 connections (its
 * tenth request waits), and a newcomer's read is answered while none of the burst has ended.
 * Before issue 26 the burst took all 10 workers and all 5 connections, and the newcomer waited
 * 2 s for the first of them to end.
 */
static void a_tenant_turned_brief_cannot_burst_into_the_reserve(void **state)
{
    (void)state;
    char tiers_env[400];
    assert_int_equal(h_tiers_env("fair-brief.json", BRIEF_TIERS, tiers_env, sizeof(tiers_env)), 0);
    const char *env[] = {tiers_env, "ACCESS_LOG=false", NULL};
    static struct h_server s2; /* static, as the burst's thread may outlive a failed test */
    assert_int_equal(h_server_start(&s2, suite.db_url, env), 0);

    const char *hb[] = {"X-Tenant-Tier: free", "X-Tenant-Id: bursty", NULL};
    for (int i = 0; i < 6; i++) {
        struct h_resp r;
        h_get(h_url(&s2, "/api/data?limit=5"), hb, &r);
        assert_int_equal(r.status, 200);
        h_resp_free(&r);
    }
    /* A request is counted ended just after its answer is sent. */
    assert_true(H_WAIT(h_metric(s2.base, "free", "threadPool", "completed") == 6, 10000));
    int64_t ended = 6;

    static struct slow_burst burst;
    burst = (struct slow_burst){.srv = &s2};
    pthread_t bt;
    pthread_create(&bt, NULL, slow_burst_main, &burst);
    struct burst_watch w = {.srv = &s2};
    bool settled = h_wait_until(burst_settled, &w, 20000);
    printf("# burst alone: held at most %lld workers and %lld connections (bound 9 and 4)\n",
           (long long)w.max_in_flight, (long long)w.max_conns);
    assert_true(settled);
    struct held v = tenant_held(&s2, "free", "id:bursty");
    assert_int_equal(v.in_flight, 9);
    assert_int_equal(v.queued, 1);

    const char *hn[] = {"X-Tenant-Tier: free", "X-Tenant-Id: newbie", NULL};
    struct h_resp r;
    h_get(h_url(&s2, "/api/data?limit=5"), hn, &r);
    long newbie = r.status;
    double newbie_s = r.seconds;
    h_resp_free(&r);
    /* The newcomer's request is the only one that ended since the burst began. */
    assert_true(H_WAIT(h_metric(s2.base, "free", "threadPool", "completed") >= ended + 1, 10000));
    int64_t ended_after = h_metric(s2.base, "free", "threadPool", "completed");
    v = tenant_held(&s2, "free", "id:bursty");
    printf("# newcomer: %ld in %.0f ms; %lld of the burst ended meanwhile\n", newbie,
           newbie_s * 1000, (long long)(ended_after - ended - 1));
    assert_int_equal(newbie, 200);
    assert_int_equal(ended_after, ended + 1);
    assert_true(w.max_in_flight <= 9);
    assert_true(w.max_conns <= 4);

    pthread_join(bt, NULL);
    assert_int_equal(h_count(burst.st, 10, 200), 10);
    h_server_stop(&s2, SIGTERM, 20000);
}

/* pro has seen no other tenant in this server: solo is alone in it and holds every worker and
 * connection of pro but the newcomers' reserve (30 workers less 3, 20 connections less 2),
 * well past its share of 15 and 10, which binds only beside others. */
struct burst_arg {
    const char *const *headers;
    long st[30];
};

static void *pro_burst_main(void *arg)
{
    struct burst_arg *b = arg;
    /* 4 s each: the state is read while all of them run, and on a machine busy with the rest of
     * the suite opening 18 connections took longer than 2 s (the first ended first). */
    h_burst("GET", h_url(&suite.srv, "/api/data?delay_ms=4000"), b->headers, 30, 30, b->st, NULL);
    return NULL;
}

static void a_tenant_alone_uses_the_whole_pool_but_the_reserve(void **state)
{
    (void)state;
    static const char *const h[] = {"X-Tenant-Tier: pro", "X-Tenant-Id: solo", NULL};
    static struct burst_arg b; /* static: the burst's thread may outlive a failed test's frame */
    b = (struct burst_arg){.headers = h};
    pthread_t t;
    pthread_create(&t, NULL, pro_burst_main, &b);
    struct held_want want = {&suite.srv, "pro", "id:solo", 27, 18};
    bool held = h_wait_until(holds_workers_within_conns, &want, 30000);
    struct held v = tenant_held(&suite.srv, "pro", "id:solo");
    printf("# solo holds %lld workers (%lld queued) and %lld connections\n", (long long)v.in_flight,
           (long long)v.queued, (long long)v.conns);
    assert_true(held);
    pthread_join(t, NULL);
    /* The 18 with a connection are served; the 9 waiting for one and the 3 queued get theirs
     * as those end (pro waits 20 s here): every one is served. */
    assert_int_equal(h_count(b.st, 30, 200), 30);
}

/* ---- issue 29 item 4: the queue by cost -------------------------------------------------- */

/* Two tiers alike but for the order: one worker, one connection, no share or reserve (only the
 * order decides who is served next), tenants remembered a minute, waits long. */
#define COSTQ_TIER(cost)                                                                           \
    "{\"workers\": 1, \"db_max\": 1, \"queue_max\": 20, \"rate_limit\": 0,"                        \
    " \"tenant_share_pct\": 100, \"tenant_queue_pct\": 100, \"tenant_reserve_pct\": 0,"            \
    " \"tenant_linger_ms\": 60000, \"queue_timeout_ms\": 60000, \"db_acquire_timeout_ms\": 60000," \
    " \"breaker_timeout_ms\": 60000, \"fair_queue_cost\": " cost "}"
#define COSTQ_TIERS "{\"bycost\": " COSTQ_TIER("1") ", \"inturn\": " COSTQ_TIER("0") "}"

/* One request in its own thread; ended: the order in which it was answered among its peers. */
struct costq_call {
    const struct h_server *srv;
    const char *tier_h, *tenant_h, *path;
    atomic_int *seq;
    long status;
    int ended;
};

static void *costq_call_main(void *arg)
{
    struct costq_call *c = arg;
    const char *h[] = {c->tier_h, c->tenant_h, NULL};
    struct h_resp r;
    h_get(h_url(c->srv, c->path), h, &r);
    c->status = r.status;
    c->ended = atomic_fetch_add(c->seq, 1);
    h_resp_free(&r);
    return NULL;
}

/* In tier: "heavy" has used 200 ms of database time; with the only worker held by a third
 * tenant, heavy queues a request, then "light" (no database time yet) one. Both last 200 ms,
 * so the one served second is answered 200 ms after the other (with a cheap read second, the
 * two answers came a few ms apart, and the client threads saw them swapped under ASan).
 * Returns whether light's was answered before heavy's. */
static bool costq_light_first(const struct h_server *s, const char *tier)
{
    char tier_h[64];
    snprintf(tier_h, sizeof(tier_h), "X-Tenant-Tier: %s", tier);
    const char *hh[] = {tier_h, "X-Tenant-Id: heavy", NULL};
    struct h_resp r;
    h_get(h_url(s, "/api/data?delay_ms=200"), hh, &r);
    assert_int_equal(r.status, 200);
    h_resp_free(&r);

    atomic_int seq = 0;
    struct costq_call calls[3] = {
        {s, tier_h, "X-Tenant-Id: blocker", "/api/data?delay_ms=1000", &seq, 0, 0},
        {s, tier_h, "X-Tenant-Id: heavy", "/api/data?delay_ms=200", &seq, 0, 0},
        {s, tier_h, "X-Tenant-Id: light", "/api/data?delay_ms=200", &seq, 0, 0}};
    pthread_t th[3];
    pthread_create(&th[0], NULL, costq_call_main, &calls[0]);
    assert_true(H_WAIT(h_metric(s->base, tier, "threadPool", "active") == 1, 10000));
    pthread_create(&th[1], NULL, costq_call_main, &calls[1]);
    assert_true(H_WAIT(h_metric(s->base, tier, "threadPool", "queued") == 1, 10000));
    pthread_create(&th[2], NULL, costq_call_main, &calls[2]);
    assert_true(H_WAIT(h_metric(s->base, tier, "threadPool", "queued") == 2, 10000));
    for (int i = 0; i < 3; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(calls[i].status, 200);
    }
    assert_int_equal(calls[0].ended, 0); /* the blocker held the only worker throughout */
    printf("# %s: answered blocker %d, heavy %d, light %d\n", tier, calls[0].ended, calls[1].ended,
           calls[2].ended);
    return calls[2].ended < calls[1].ended;
}

/*
 * fair_queue_cost 1: a tenant whose statements held a connection 200 ms waits behind one that
 * used none, although it queued first; with 0 (round-robin) the same queue serves it first.
 */
static void a_tenant_that_used_more_database_time_is_served_after_one_that_used_less(void **state)
{
    (void)state;
    char tiers_env[1200];
    assert_int_equal(h_tiers_env("fair-costq.json", COSTQ_TIERS, tiers_env, sizeof(tiers_env)), 0);
    const char *env[] = {tiers_env, "ACCESS_LOG=false", NULL};
    struct h_server s2;
    assert_int_equal(h_server_start(&s2, suite.db_url, env), 0);
    assert_int_equal(h_metric(s2.base, "bycost", "fairness", "queueByCost"), 1);
    assert_int_equal(h_metric(s2.base, "inturn", "fairness", "queueByCost"), 0);
    assert_true(costq_light_first(&s2, "bycost"));
    assert_false(costq_light_first(&s2, "inturn"));
    h_server_stop(&s2, SIGTERM, 20000);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(a_noisy_tenant_cannot_starve_its_tier_mates),
        cmocka_unit_test(a_tenant_alone_uses_the_whole_pool_but_the_reserve),
        cmocka_unit_test(a_quiet_tenant_is_served_beside_a_slow_one_holding_the_tier),
        cmocka_unit_test(a_tenant_turned_brief_cannot_burst_into_the_reserve),
        cmocka_unit_test(a_tenant_that_used_more_database_time_is_served_after_one_that_used_less),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
