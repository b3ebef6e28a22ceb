/*
 * test_rlsync: the shared rate limit decided locally, against a real redis-server (started here
 * on a free loopback port). Instances are rlsync objects in manual mode: the test runs their
 * syncer rounds (rlsync_sync) and injects the clock, so every interleaving is chosen, not timed.
 *
 * Covered: one instance admits exactly its limit, parking requests past its lease until Redis's
 * answer; fresh tenants are admitted at once and sent in one batch; refusals cost Redis
 * nothing; three instances stay within limit + 2 x lease in the worst interleaving and in
 * random ones, and the excess is Redis's debt; Redis down: local verdicts, the failed batch's
 * hits counted as dropped, parked requests decided, a retry per second, shared again once it
 * answers; stop decides parked requests; a full table leaves the verdict to the caller; views
 * expire with their TAT. With the syncer thread (the TSan pass): threads of one instance admit
 * exactly the limit, two instances within the bound.
 */
#include "mclock.h"
#include "ratelimit.h"
#include "rlsync.h"

#include "../redisproc.h"

#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#define S     1000000LL /* us */
#define LIMIT 100
#define HOUR  3600

static struct redisproc redis;
static int64_t clock_us; /* the injected clock of manual instances */

static int setup(void **state)
{
    (void)state;
    clock_us = 1000 * S;
    return redisproc_start(&redis);
}

static int teardown(void **state)
{
    (void)state;
    redisproc_stop(&redis);
    return 0;
}

static struct rlsync *make(int64_t lease_pct, size_t max_keys, bool manual)
{
    struct rlsync_cfg cfg = {.redis_url = redis.url,
                             .timeout_ms = 1000,
                             .lease_pct = lease_pct,
                             .sync_us = 2000,
                             .max_keys = max_keys,
                             .manual = manual};
    struct rlsync *s = NULL;
    char err[200];
    assert_int_equal(rlsync_create(&cfg, &s, err, sizeof(err)), 0);
    return s;
}

/* The verdicts one instance gave, immediate or after waiting. */
struct tally {
    atomic_int allowed, refused, parked, decided;
};

static void on_decided(void *ctx, const struct ratelimit_result *v)
{
    struct tally *t = ctx;
    atomic_fetch_add(v->allowed ? &t->allowed : &t->refused, 1);
    atomic_fetch_add(&t->decided, 1);
}

/* One request of `key` (free tier, LIMIT per hour) at the injected clock. */
static int check(struct rlsync *s, const char *key, struct tally *t, struct ratelimit_result *out)
{
    struct ratelimit_result r;
    if (!out)
        out = &r;
    int rc = rlsync_check(s, "free", key, LIMIT, HOUR, clock_us, out, on_decided, t);
    if (rc == 0)
        atomic_fetch_add(out->allowed ? &t->allowed : &t->refused, 1);
    else if (rc == 1)
        atomic_fetch_add(&t->parked, 1);
    return rc;
}

/* Rounds until nothing is parked (bounded), then one to send what the last admitted. */
static void settle(struct rlsync *s, struct tally *t)
{
    for (int i = 0; i < 1000 && atomic_load(&t->decided) < atomic_load(&t->parked); i++)
        rlsync_sync(s, clock_us);
    assert_int_equal(atomic_load(&t->decided), atomic_load(&t->parked));
    rlsync_sync(s, clock_us);
}

static struct rlsync_stats stats(struct rlsync *s)
{
    struct rlsync_stats st;
    rlsync_stats(s, &st);
    return st;
}

static long long pttl(const char *key)
{
    char cmd[200];
    snprintf(cmd, sizeof(cmd), "PTTL bulkhead:rl:free:%s", key);
    return redisproc_int(redis.port, cmd);
}

/* Redis's count of key: its TAT's lead over now, in hits of T = 36 s (rounded up). */
static long long redis_hits(const char *key)
{
    long long ms = pttl(key);
    return ms <= 0 ? 0 : (ms + 36 * 1000 - 1) / (36 * 1000);
}

static void one_instance_admits_exactly_the_limit_waiting_past_its_lease(void **state)
{
    (void)state;
    struct rlsync *s = make(10, 1000, true);
    assert_int_equal(rlsync_lease(s, LIMIT), 10);
    struct tally t = {0};
    /* 110 at once: the first is admitted before Redis knows the tenant (lease 1 then), the
     * rest wait for the answers, ten per batch once the tenant is known. */
    for (int i = 0; i < 110; i++)
        check(s, "one", &t, NULL);
    assert_int_equal(atomic_load(&t.allowed), 1);
    assert_int_equal(atomic_load(&t.parked), 109);
    settle(s, &t);
    struct rlsync_stats st = stats(s);
    printf("# one instance, 110 at once: %d admitted, %d refused, %llu waited, %llu batches\n",
           t.allowed, t.refused, (unsigned long long)st.waits, (unsigned long long)st.batches);
    assert_int_equal(atomic_load(&t.allowed), 100);
    assert_int_equal(atomic_load(&t.refused), 10);
    assert_int_equal(st.hits_sent, 100);
    assert_int_equal(st.batches, 11); /* 1, then 10 x 10 (the last one's answer refuses) */
    assert_int_equal(redis_hits("one"), 100);
    /* The next one is refused from the view, with the truth's headers. */
    struct ratelimit_result r;
    assert_int_equal(check(s, "one", &t, &r), 0);
    assert_false(r.allowed);
    assert_int_equal(r.remaining, 0);
    assert_true(r.retry_after_us > 30 * S && r.retry_after_us <= 36 * S);
    rlsync_destroy(s);
}

static void fresh_tenants_are_admitted_at_once_and_sent_in_one_batch(void **state)
{
    (void)state;
    struct rlsync *s = make(10, 10000, true);
    struct tally t = {0};
    for (int i = 0; i < 500; i++) {
        char key[32];
        snprintf(key, sizeof(key), "fresh-%d", i);
        struct ratelimit_result r;
        assert_int_equal(check(s, key, &t, &r), 0);
        assert_true(r.allowed);
        assert_int_equal(r.remaining, 99);
    }
    assert_int_equal(rlsync_sync(s, clock_us), 500);
    struct rlsync_stats st = stats(s);
    assert_int_equal(st.waits, 0);
    assert_int_equal(st.batches, 1);
    assert_int_equal(st.hits_sent, 500);
    assert_int_equal(st.keys, 500);
    assert_int_equal(redis_hits("fresh-0"), 1);
    assert_int_equal(redis_hits("fresh-499"), 1);
    rlsync_destroy(s);
}

static void refusals_cost_redis_nothing(void **state)
{
    (void)state;
    struct rlsync *s = make(10, 1000, true);
    struct tally t = {0};
    for (int i = 0; i < 100; i++)
        check(s, "spent", &t, NULL);
    settle(s, &t);
    assert_int_equal(atomic_load(&t.allowed), 100);
    uint64_t batches = stats(s).batches;
    for (int i = 0; i < 1000; i++)
        assert_int_equal(check(s, "spent", &t, NULL), 0);
    assert_int_equal(atomic_load(&t.refused), 1000);
    assert_int_equal(rlsync_sync(s, clock_us), 0); /* nothing to send */
    assert_int_equal(stats(s).batches, batches);
    rlsync_destroy(s);
}

/* Requests of key on instance s until it refuses or parks; returns those admitted. */
static int admit_until_stopped(struct rlsync *s, const char *key, struct tally *t)
{
    int n = 0, rc;
    struct ratelimit_result r;
    while ((rc = check(s, key, t, &r)) == 0 && r.allowed)
        n++;
    return n;
}

static void three_instances_stay_within_limit_plus_two_leases_at_worst(void **state)
{
    (void)state;
    struct rlsync *a = make(10, 1000, true), *b = make(10, 1000, true), *c = make(10, 1000, true);
    struct tally ta = {0}, tb = {0}, tc = {0};
    /* B and C learn of the tenant (one request each), then hear nothing more. */
    check(b, "worst", &tb, NULL);
    check(c, "worst", &tc, NULL);
    rlsync_sync(b, clock_us);
    rlsync_sync(c, clock_us);
    /* A spends all it sees left: 98. */
    while (atomic_load(&ta.refused) == 0) {
        admit_until_stopped(a, "worst", &ta);
        rlsync_sync(a, clock_us);
    }
    settle(a, &ta);
    assert_int_equal(atomic_load(&ta.allowed), 98);
    /* B and C, on what they knew (1 and 2 spent), admit their leases; then they wait. */
    assert_int_equal(admit_until_stopped(b, "worst", &tb), 10);
    assert_int_equal(admit_until_stopped(c, "worst", &tc), 10);
    settle(b, &tb);
    settle(c, &tc);
    int total = ta.allowed + tb.allowed + tc.allowed;
    printf("# worst case, three instances, lease 10: A %d, B %d, C %d = %d admitted\n", ta.allowed,
           tb.allowed, tc.allowed, total);
    assert_int_equal(total, LIMIT + 2 * 10);
    /* The excess is Redis's debt: every instance now refuses. */
    assert_int_equal(redis_hits("worst"), 120);
    struct tally after = {0};
    struct rlsync *all[3] = {a, b, c};
    for (int i = 0; i < 3; i++) {
        check(all[i], "worst", &after, NULL);
        settle(all[i], &after);
    }
    assert_int_equal(atomic_load(&after.allowed), 0);
    for (int i = 0; i < 3; i++)
        rlsync_destroy(all[i]);
}

static uint64_t lcg(uint64_t *x)
{
    *x = *x * 6364136223846793005ull + 1442695040888963407ull;
    return *x >> 33;
}

static void random_interleavings_of_three_instances_stay_within_the_bound(void **state)
{
    (void)state;
    struct rlsync *in[3] = {make(10, 1000, true), make(10, 1000, true), make(10, 1000, true)};
    int lo = 1000, hi = 0;
    for (uint64_t seed = 1; seed <= 60; seed++) {
        char key[32];
        snprintf(key, sizeof(key), "random-%llu", (unsigned long long)seed);
        struct tally t[3] = {0};
        uint64_t x = seed;
        /* 400 steps: a request (3 in 4) or a syncer round on a random instance. */
        for (int step = 0; step < 400; step++) {
            int i = (int)(lcg(&x) % 3);
            if (lcg(&x) % 4)
                check(in[i], key, &t[i], NULL);
            else
                rlsync_sync(in[i], clock_us);
        }
        for (int i = 0; i < 3; i++)
            settle(in[i], &t[i]);
        int total = t[0].allowed + t[1].allowed + t[2].allowed;
        lo = total < lo ? total : lo;
        hi = total > hi ? total : hi;
        if (total > LIMIT + 2 * 10 || total < LIMIT)
            fail_msg("seed %llu: %d admitted", (unsigned long long)seed, total);
    }
    printf("# 60 random interleavings of three instances: %d to %d admitted (bound 100..120)\n", lo,
           hi);
    for (int i = 0; i < 3; i++)
        rlsync_destroy(in[i]);
}

static void redis_down_decides_locally_counts_drops_and_comes_back(void **state)
{
    (void)state;
    struct rlsync *s = make(10, 1000, true);
    struct tally t = {0};
    check(s, "down", &t, NULL);
    rlsync_sync(s, clock_us); /* known: lease 10 */
    for (int i = 0; i < 15; i++)
        check(s, "down", &t, NULL); /* 10 admitted and queued, 5 parked */
    assert_int_equal(atomic_load(&t.parked), 5);
    redisproc_stop(&redis);
    assert_int_equal(rlsync_sync(s, clock_us), -EIO);
    struct rlsync_stats st = stats(s);
    assert_false(st.up);
    assert_int_equal(st.errors, 1);
    assert_int_equal(st.hits_dropped, 10);
    /* The parked ones were decided from the view, and so is everything now: no waiting. */
    assert_int_equal(atomic_load(&t.decided), 5);
    assert_int_equal(atomic_load(&t.allowed), 16);
    for (int i = 0; i < 100; i++)
        assert_int_equal(check(s, "down", &t, NULL), 0);
    assert_int_equal(atomic_load(&t.allowed), 100); /* the view still limits */
    st = stats(s);
    assert_int_equal(st.fallbacks, 100);
    assert_int_equal(st.waits, 5);
    /* Within the second, no retry; after it, one (failing: one more error). */
    assert_int_equal(rlsync_sync(s, clock_us + S / 2), -EIO);
    assert_int_equal(stats(s).errors, 1);
    assert_int_equal(rlsync_sync(s, clock_us + S), -EIO);
    assert_int_equal(stats(s).errors, 2);
    /* Back: the next retry finds it, and hits are shared again. */
    assert_int_equal(redisproc_start(&redis), 0);
    clock_us += 2 * S;
    assert_int_equal(rlsync_sync(s, clock_us), 0);
    assert_true(stats(s).up);
    struct tally t2 = {0};
    check(s, "after", &t2, NULL);
    assert_int_equal(rlsync_sync(s, clock_us), 1);
    assert_int_equal(redis_hits("after"), 1);
    rlsync_destroy(s);
}

static void stop_decides_parked_requests_and_later_ones_locally(void **state)
{
    (void)state;
    struct rlsync *s = make(10, 1000, true);
    struct tally t = {0};
    for (int i = 0; i < 4; i++)
        check(s, "stop", &t, NULL); /* 1 admitted, 3 parked */
    rlsync_stop(s);
    assert_int_equal(atomic_load(&t.decided), 3);
    assert_int_equal(atomic_load(&t.allowed), 4);
    assert_int_equal(stats(s).hits_dropped, 1);
    assert_int_equal(check(s, "stop", &t, NULL), 0);
    assert_int_equal(stats(s).fallbacks, 1);
    rlsync_destroy(s);
}

static void a_full_table_leaves_the_verdict_to_the_caller(void **state)
{
    (void)state;
    struct rlsync *s = make(10, 16, true);
    struct tally t = {0};
    for (int i = 0; i < 16; i++) {
        char key[32];
        snprintf(key, sizeof(key), "full-%d", i);
        assert_int_equal(check(s, key, &t, NULL), 0);
    }
    assert_int_equal(check(s, "full-16", &t, NULL), -ENOSPC);
    assert_int_equal(stats(s).untracked, 1);
    rlsync_destroy(s);
}

static void views_expire_when_their_tat_passes(void **state)
{
    (void)state;
    struct rlsync *s = make(10, 1000, true);
    struct tally t = {0};
    check(s, "expire-a", &t, NULL);
    check(s, "expire-b", &t, NULL);
    rlsync_sync(s, clock_us);
    assert_int_equal(stats(s).keys, 2);
    clock_us += 40 * S; /* one hit of T = 36 s has passed */
    rlsync_sync(s, clock_us);
    assert_int_equal(stats(s).keys, 0);
    rlsync_destroy(s);
}

/* ---- with the syncer thread --------------------------------------------------------------- */

struct hammer {
    struct rlsync *s;
    const char *key;
    int calls;
    struct tally *t;
};

static void *hammer_run(void *arg)
{
    struct hammer *h = arg;
    for (int i = 0; i < h->calls; i++) {
        struct ratelimit_result r;
        int rc =
            rlsync_check(h->s, "free", h->key, LIMIT, HOUR, mclock_now_us(), &r, on_decided, h->t);
        if (rc == 0)
            atomic_fetch_add(r.allowed ? &h->t->allowed : &h->t->refused, 1);
        else if (rc == 1)
            atomic_fetch_add(&h->t->parked, 1);
        else
            fail_msg("rlsync_check: %d", rc);
    }
    return NULL;
}

/* Wait (bounded) until every parked request of t was decided. */
static void wait_decided(struct tally *t, int total)
{
    long long end = redisproc_now_ms() + 20000;
    while (
        (atomic_load(&t->decided) < atomic_load(&t->parked) || t->allowed + t->refused < total) &&
        redisproc_now_ms() < end) {
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    assert_int_equal(atomic_load(&t->allowed) + atomic_load(&t->refused), total);
}

static void threads_of_one_instance_admit_exactly_the_limit(void **state)
{
    (void)state;
    struct rlsync *s = make(10, 1000, false);
    enum { N = 6, CALLS = 40 };
    pthread_t th[N];
    struct tally t = {0};
    struct hammer h[N];
    for (int i = 0; i < N; i++) {
        h[i] = (struct hammer){.s = s, .key = "threads", .calls = CALLS, .t = &t};
        assert_int_equal(pthread_create(&th[i], NULL, hammer_run, &h[i]), 0);
    }
    for (int i = 0; i < N; i++)
        pthread_join(th[i], NULL);
    wait_decided(&t, N * CALLS);
    printf("# %d threads x %d, one instance: %d admitted, %d refused, %d waited\n", N, CALLS,
           t.allowed, t.refused, t.parked);
    assert_int_equal(atomic_load(&t.allowed), 100);
    rlsync_destroy(s);
}

static void two_instances_with_syncer_threads_stay_within_the_bound(void **state)
{
    (void)state;
    struct rlsync *a = make(10, 1000, false), *b = make(10, 1000, false);
    struct tally ta = {0}, tb = {0};
    struct hammer ha = {.s = a, .key = "pair", .calls = 90, .t = &ta};
    struct hammer hb = {.s = b, .key = "pair", .calls = 90, .t = &tb};
    pthread_t th[2];
    assert_int_equal(pthread_create(&th[0], NULL, hammer_run, &ha), 0);
    assert_int_equal(pthread_create(&th[1], NULL, hammer_run, &hb), 0);
    pthread_join(th[0], NULL);
    pthread_join(th[1], NULL);
    wait_decided(&ta, 90);
    wait_decided(&tb, 90);
    int total = ta.allowed + tb.allowed;
    printf("# two instances x 90: %d + %d = %d admitted (bound 100..110)\n", ta.allowed, tb.allowed,
           total);
    assert_true(total >= LIMIT && total <= LIMIT + 10);
    rlsync_destroy(a);
    rlsync_destroy(b);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(one_instance_admits_exactly_the_limit_waiting_past_its_lease),
        cmocka_unit_test(fresh_tenants_are_admitted_at_once_and_sent_in_one_batch),
        cmocka_unit_test(refusals_cost_redis_nothing),
        cmocka_unit_test(three_instances_stay_within_limit_plus_two_leases_at_worst),
        cmocka_unit_test(random_interleavings_of_three_instances_stay_within_the_bound),
        cmocka_unit_test(redis_down_decides_locally_counts_drops_and_comes_back),
        cmocka_unit_test(stop_decides_parked_requests_and_later_ones_locally),
        cmocka_unit_test(a_full_table_leaves_the_verdict_to_the_caller),
        cmocka_unit_test(views_expire_when_their_tat_passes),
        cmocka_unit_test(threads_of_one_instance_admit_exactly_the_limit),
        cmocka_unit_test(two_instances_with_syncer_threads_stay_within_the_bound),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
