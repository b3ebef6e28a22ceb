/*
 * test_ratelimit: GCRA exactness and the key table's bounds (ratelimit.h).
 *
 * Every check passes an explicit now_us, so the arithmetic is checked to the microsecond: a
 * fresh key's burst of exactly N, remaining/reset/retry_after as documented, one request per
 * emission interval T = window/N afterwards, the full burst again after the window. Then the
 * table: independent keys, limit 0, sweep, the key cap with its overflow buckets (one per
 * address: a client that fills the table exhausts its own, not another address's), and several
 * threads on one key.
 */
#include "ratelimit.h"

#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#define T0     1000000000000ll /* an arbitrary monotonic "now" far from 0 */
#define SEC    1000000ll
#define WINDOW 60 /* seconds, for every rate below */

/* The rates the burst tests run with: round ones and an odd one whose T is not exact. */
static const int64_t rates[] = {100, 1000, 7};

/* Emission interval as the limiter computes it: integer microseconds, truncated. */
static int64_t interval(int64_t n)
{
    return WINDOW * SEC / n;
}

#define ADDR "ip:192.0.2.1" /* the client every key below comes from, unless said otherwise */

/* One request for key from addr at now, with its own limit: as api.c asks, the overflow bucket
 * of its address when the table cannot track it. */
static void check_limit_from(struct ratelimit *rl, const char *key, const char *addr, int64_t limit,
                             int64_t now, struct ratelimit_result *r)
{
    if (ratelimit_check_limit(rl, key, limit, now, r) == -ENOSPC)
        ratelimit_check_overflow(rl, addr, limit, now, r);
}

static void check_limit(struct ratelimit *rl, const char *key, int64_t limit, int64_t now,
                        struct ratelimit_result *r)
{
    check_limit_from(rl, key, ADDR, limit, now, r);
}

/* The same at the tier's limit. */
static void check(struct ratelimit *rl, const char *key, int64_t now, struct ratelimit_result *r)
{
    if (ratelimit_check(rl, key, now, r) == -ENOSPC)
        ratelimit_check_overflow(rl, ADDR, 0, now, r);
}

/* Send n requests for key at now; return how many were allowed, and the last verdict. */
static int64_t fire(struct ratelimit *rl, const char *key, int64_t now, int64_t n,
                    struct ratelimit_result *last)
{
    int64_t allowed = 0;
    struct ratelimit_result r;
    for (int64_t i = 0; i < n; i++) {
        check(rl, key, now, &r);
        allowed += r.allowed;
    }
    if (last)
        *last = r;
    return allowed;
}

static void fresh_key_burst_admits_exactly_n(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(rates) / sizeof(rates[0]); i++) {
        int64_t n = rates[i], t = interval(n);
        struct ratelimit *rl = ratelimit_create(n, WINDOW, 1000);
        for (int64_t k = 1; k <= n + 10; k++) {
            struct ratelimit_result r;
            check(rl, "tenant", T0, &r);
            assert_int_equal(r.limit, n);
            if (k <= n) {
                /* The k-th of a burst: N-k left, the whole burst back after k intervals. */
                assert_true(r.allowed);
                assert_int_equal(r.remaining, n - k);
                assert_int_equal(r.reset_us, k * t);
                assert_int_equal(r.retry_after_us, 0);
            } else {
                /* Past the burst: the next admission is one interval away. */
                assert_false(r.allowed);
                assert_int_equal(r.remaining, 0);
                assert_int_equal(r.retry_after_us, t);
                assert_int_equal(r.reset_us, n * t);
            }
        }
        struct ratelimit_stats st;
        ratelimit_stats(rl, &st);
        assert_int_equal(st.allowed, n);
        assert_int_equal(st.rejected, 10);
        assert_int_equal(st.keys, 1);
        assert_int_equal(st.limit, n);
        assert_int_equal(st.window_s, WINDOW);
        ratelimit_destroy(rl);
    }
}

static void one_more_request_after_exactly_one_interval(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(rates) / sizeof(rates[0]); i++) {
        int64_t n = rates[i], t = interval(n);
        struct ratelimit *rl = ratelimit_create(n, WINDOW, 1000);
        assert_int_equal(fire(rl, "k", T0, n, NULL), n);
        struct ratelimit_result r;
        check(rl, "k", T0 + t - 1, &r);
        assert_false(r.allowed);
        assert_int_equal(r.retry_after_us, 1);
        check(rl, "k", T0 + t, &r);
        assert_true(r.allowed);
        assert_int_equal(r.remaining, 0);
        assert_int_equal(r.reset_us, n * t);
        /* And only one: the next is again a full interval away. */
        check(rl, "k", T0 + t, &r);
        assert_false(r.allowed);
        assert_int_equal(r.retry_after_us, t);
        ratelimit_destroy(rl);
    }
}

static void partial_refill_reports_remaining(void **state)
{
    (void)state;
    const int64_t n = 100, t = interval(n);
    struct ratelimit *rl = ratelimit_create(n, WINDOW, 1000);
    assert_int_equal(fire(rl, "k", T0, n, NULL), n);
    /* Three intervals later, three requests are available. */
    for (int64_t k = 2; k >= 0; k--) {
        struct ratelimit_result r;
        check(rl, "k", T0 + 3 * t, &r);
        assert_true(r.allowed);
        assert_int_equal(r.remaining, k);
    }
    struct ratelimit_result r;
    check(rl, "k", T0 + 3 * t, &r);
    assert_false(r.allowed);
    ratelimit_destroy(rl);
}

static void full_burst_again_after_the_window(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(rates) / sizeof(rates[0]); i++) {
        int64_t n = rates[i];
        struct ratelimit *rl = ratelimit_create(n, WINDOW, 1000);
        /* W after the last admitted request, the whole burst is back. */
        assert_int_equal(fire(rl, "a", T0, n + 5, NULL), n);
        assert_int_equal(fire(rl, "a", T0 + WINDOW * SEC, n + 5, NULL), n);
        /* Already at reset_us, as the rejection announced (N * T: at most W, by rounding). */
        struct ratelimit_result last;
        assert_int_equal(fire(rl, "b", T0, n + 5, &last), n);
        assert_int_equal(last.reset_us, n * interval(n));
        assert_true(last.reset_us <= WINDOW * SEC);
        assert_int_equal(fire(rl, "b", T0 + last.reset_us, n + 5, NULL), n);
        /* One microsecond earlier, one request of the burst is still missing. */
        assert_int_equal(fire(rl, "c", T0, n, NULL), n);
        assert_int_equal(fire(rl, "c", T0 + last.reset_us - 1, n + 5, NULL), n - 1);
        ratelimit_destroy(rl);
    }
}

static void rejected_requests_cost_nothing(void **state)
{
    (void)state;
    const int64_t n = 10, t = interval(n);
    struct ratelimit *rl = ratelimit_create(n, WINDOW, 1000);
    assert_int_equal(fire(rl, "k", T0, n, NULL), n);
    /* A client hammering while limited does not push its next slot further away. */
    for (int64_t dt = 0; dt < t; dt += t / 50)
        assert_int_equal(fire(rl, "k", T0 + dt, 20, NULL), 0);
    assert_int_equal(fire(rl, "k", T0 + t, 5, NULL), 1);
    ratelimit_destroy(rl);
}

static void gcra_step_updates_tat_only_when_allowed(void **state)
{
    (void)state;
    const int64_t n = 4, t = interval(n);
    int64_t tat = 0;
    struct ratelimit_result r;
    ratelimit_gcra(n, WINDOW, &tat, T0, &r);
    assert_true(r.allowed);
    assert_int_equal(tat, T0 + t);
    for (int k = 0; k < 3; k++)
        ratelimit_gcra(n, WINDOW, &tat, T0, &r);
    assert_true(r.allowed);
    assert_int_equal(tat, T0 + 4 * t);
    ratelimit_gcra(n, WINDOW, &tat, T0, &r);
    assert_false(r.allowed);
    assert_int_equal(tat, T0 + 4 * t);
    /* A TAT in the past is the same as a fresh key. */
    tat = T0 - 5 * SEC;
    ratelimit_gcra(n, WINDOW, &tat, T0, &r);
    assert_true(r.allowed);
    assert_int_equal(r.remaining, n - 1);
    assert_int_equal(tat, T0 + t);
}

/* Requests admitted at once at time now from a key at tat (tat itself is not changed). */
static int64_t available_at(int64_t n, int64_t tat, int64_t now)
{
    struct ratelimit_result r;
    int64_t k = 0;
    do {
        ratelimit_gcra(n, WINDOW, &tat, now, &r);
        k += r.allowed;
    } while (r.allowed && k <= n);
    return k;
}

/* The RateLimit field's t: until then no more than `remaining` can be used, and at that moment
 * one more can. For a rejection it is the Retry-After. Checked after every count of requests
 * sent at once, and part-way through a refill, for round and odd rates. */
static void next_is_exactly_when_one_more_request_fits(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(rates) / sizeof(rates[0]); i++) {
        const int64_t n = rates[i];
        int64_t tat = 0;
        struct ratelimit_result r;
        for (int64_t k = 1; k <= n + 2; k++) {
            int64_t now = T0 + (k > n ? interval(n) / 3 : 0); /* the last ones part-way */
            ratelimit_gcra(n, WINDOW, &tat, now, &r);
            int64_t next = ratelimit_next_us(&r);
            int64_t have = r.allowed ? r.remaining : 0;
            assert_true(next >= 1);
            assert_int_equal(r.window_s, WINDOW);
            assert_int_equal(available_at(n, tat, now + next - 1), have);
            assert_int_equal(available_at(n, tat, now + next), have + 1);
            if (!r.allowed)
                assert_int_equal(next, r.retry_after_us);
        }
    }
}

static void keys_are_independent(void **state)
{
    (void)state;
    const int64_t n = 50;
    struct ratelimit *rl = ratelimit_create(n, WINDOW, 1000);
    assert_int_equal(fire(rl, "id:alice", T0, n + 3, NULL), n);
    assert_int_equal(fire(rl, "id:bob", T0, n + 3, NULL), n);
    assert_int_equal(fire(rl, "ip:10.0.0.1", T0, n + 3, NULL), n);
    assert_int_equal(fire(rl, "id:alice", T0, 1, NULL), 0);
    struct ratelimit_stats st;
    ratelimit_stats(rl, &st);
    assert_int_equal(st.keys, 3);
    assert_int_equal(st.overflow, 0);
    ratelimit_destroy(rl);
}

static void limit_zero_is_unlimited_and_stores_nothing(void **state)
{
    (void)state;
    struct ratelimit *rl = ratelimit_create(0, WINDOW, 1000);
#if !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__)
    /* Sanitizers replace malloc, so the heap is only measured in the plain build. */
    struct mallinfo2 before = mallinfo2();
#endif
    int64_t allowed = 0;
    for (int i = 0; i < 20000; i++) {
        char key[32];
        snprintf(key, sizeof(key), "k%d", i % 100);
        struct ratelimit_result r;
        check(rl, key, T0, &r);
        allowed += r.allowed;
    }
#if !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__)
    struct mallinfo2 after = mallinfo2();
    assert_int_equal(after.uordblks, before.uordblks);
#endif
    assert_int_equal(allowed, 20000);
    struct ratelimit_stats st;
    ratelimit_stats(rl, &st);
    assert_int_equal(st.keys, 0);
    assert_int_equal(st.overflow, 0);
    assert_int_equal(st.rejected, 0);
    assert_int_equal(ratelimit_sweep(rl, T0), 0);
    ratelimit_destroy(rl);
}

static void sweep_deletes_only_keys_whose_tat_passed(void **state)
{
    (void)state;
    const int64_t n = 10, t = interval(n);
    struct ratelimit *rl = ratelimit_create(n, WINDOW, 1000);
    assert_int_equal(fire(rl, "one", T0, 1, NULL), 1);   /* TAT T0 + t */
    assert_int_equal(fire(rl, "three", T0, 3, NULL), 3); /* TAT T0 + 3t */
    assert_int_equal(ratelimit_sweep(rl, T0 + t - 1), 0);
    assert_int_equal(ratelimit_sweep(rl, T0 + t), 1);
    struct ratelimit_stats st;
    ratelimit_stats(rl, &st);
    assert_int_equal(st.keys, 1);
    /* "three" kept its state: two more requests are not a fresh burst. */
    struct ratelimit_result r;
    check(rl, "three", T0 + t, &r);
    assert_true(r.allowed);
    assert_int_equal(r.remaining, n - 3);
    assert_int_equal(ratelimit_sweep(rl, T0 + 4 * t - 1), 0);
    assert_int_equal(ratelimit_sweep(rl, T0 + 4 * t), 1);
    ratelimit_stats(rl, &st);
    assert_int_equal(st.keys, 0);
    /* A swept key starts fresh, as it would have anyway: its TAT had passed. */
    assert_int_equal(fire(rl, "one", T0 + 4 * t, n + 1, NULL), n);
    ratelimit_destroy(rl);
}

static void full_table_sends_a_clients_new_keys_to_its_addresss_bucket(void **state)
{
    (void)state;
    const int64_t n = 100;
    const size_t max_keys = 1000; /* not a multiple of the shard count */
    const int64_t distinct = 1000000;
    struct ratelimit *rl = ratelimit_create(n, WINDOW, max_keys);
    /* A client cycling through a million fresh keys from one address, one request each, all at
     * once. */
    int64_t allowed = 0;
    for (int64_t i = 0; i < distinct; i++) {
        char key[32];
        snprintf(key, sizeof(key), "cycle-%lld", (long long)i);
        struct ratelimit_result r;
        check(rl, key, T0, &r);
        allowed += r.allowed;
    }
    struct ratelimit_stats st;
    ratelimit_stats(rl, &st);
    /* Memory is bounded: never more keys than max_keys, and the table does fill up. */
    assert_true(st.keys <= max_keys);
    assert_true(st.keys >= max_keys * 9 / 10);
    assert_int_equal(st.overflow, distinct - (int64_t)st.keys);
    /* Tracked keys got their first request; all the others shared one burst of N. */
    assert_int_equal(allowed, (int64_t)st.keys + n);
    struct ratelimit_result r;
    check(rl, "yet-another-key", T0, &r);
    assert_false(r.allowed);
    /* A tracked key keeps its own full limit. */
    assert_int_equal(fire(rl, "cycle-0", T0, n, NULL), n - 1);
    ratelimit_destroy(rl);
}

/* An address whose untracked keys share another bucket than addr's. */
static void other_bucket(const char *addr, char *out, size_t len)
{
    size_t mine = ratelimit_overflow_bucket(addr);
    for (int i = 2; i < 100000; i++) {
        snprintf(out, len, "ip:198.51.100.%d", i);
        if (ratelimit_overflow_bucket(out) != mine)
            return;
    }
    fail_msg("every address hashes to one bucket");
}

static void a_client_that_filled_the_table_exhausts_only_its_own_overflow_bucket(void **state)
{
    (void)state;
    const int64_t n = 5;
    struct ratelimit *rl = ratelimit_create(n, WINDOW, 16);
    /* One client fills the table, then spends its address's overflow bucket on fresh ids. */
    int64_t allowed = 0;
    for (int i = 0; i < 200; i++) {
        char key[32];
        snprintf(key, sizeof(key), "flood-%d", i);
        struct ratelimit_result r;
        check_limit_from(rl, key, ADDR, n, T0, &r);
        allowed += r.allowed;
    }
    assert_int_equal(allowed, 16 + n);
    struct ratelimit_result r;
    check_limit_from(rl, "flood-new", ADDR, n, T0, &r);
    assert_false(r.allowed);
    /* A new tenant from another address is not tracked either, but its bucket is untouched: its
     * whole burst is there. */
    char other[64];
    other_bucket(ADDR, other, sizeof(other));
    int64_t theirs = 0;
    for (int i = 0; i < (int)n + 2; i++) {
        check_limit_from(rl, "newcomer", other, n, T0, &r);
        theirs += r.allowed;
    }
    assert_int_equal(theirs, n);
    /* The split is by address, not by key: the flooder's next fresh key still lands in its own
     * (spent) bucket, and the buckets are a fixed array whatever the addresses. */
    check_limit_from(rl, "flood-again", ADDR, n, T0, &r);
    assert_false(r.allowed);
    assert_true(ratelimit_overflow_bucket(other) < RATELIMIT_OVERFLOW_BUCKETS);
    struct ratelimit_stats st;
    ratelimit_stats(rl, &st);
    assert_int_equal(st.keys, 16);
    ratelimit_destroy(rl);
}

static void key_count_never_exceeds_max_keys(void **state)
{
    (void)state;
    /* Small and odd caps, including fewer keys than shards. */
    const size_t caps[] = {16, 100, 1000, 4097};
    for (size_t c = 0; c < sizeof(caps) / sizeof(caps[0]); c++) {
        struct ratelimit *rl = ratelimit_create(5, WINDOW, caps[c]);
        for (size_t i = 0; i < caps[c] * 20; i++) {
            char key[32];
            snprintf(key, sizeof(key), "key-%zu", i);
            struct ratelimit_result r;
            check(rl, key, T0, &r);
        }
        struct ratelimit_stats st;
        ratelimit_stats(rl, &st);
        assert_true(st.keys <= caps[c]);
        ratelimit_destroy(rl);
    }
}

static void passed_keys_make_room_in_a_full_table(void **state)
{
    (void)state;
    const int64_t n = 10, t = interval(n);
    struct ratelimit *rl = ratelimit_create(n, WINDOW, 64);
    for (int i = 0; i < 2000; i++) {
        char key[32];
        snprintf(key, sizeof(key), "old-%d", i);
        struct ratelimit_result r;
        check(rl, key, T0, &r);
    }
    struct ratelimit_stats st;
    ratelimit_stats(rl, &st);
    assert_int_equal(st.keys, 64);
    /* Once their TATs passed, new keys are tracked again (a full shard sweeps itself) and
     * the table stays within its bound. */
    for (int i = 0; i < 2000; i++) {
        char key[32];
        snprintf(key, sizeof(key), "new-%d", i);
        struct ratelimit_result r;
        check(rl, key, T0 + t + SEC, &r);
    }
    ratelimit_stats(rl, &st);
    assert_int_equal(st.keys, 64);
    assert_int_equal(ratelimit_sweep(rl, T0 + t + SEC), 0); /* all current keys are new */
    ratelimit_destroy(rl);
}

static void set_changes_the_rate_and_keeps_tats(void **state)
{
    (void)state;
    struct ratelimit *rl = ratelimit_create(10, WINDOW, 1000);
    assert_int_equal(fire(rl, "k", T0, 10, NULL), 10); /* TAT = T0 + 60 s */
    ratelimit_set(rl, 100, WINDOW);
    /* The new burst tolerance is 99 intervals of 0.6 s: k waits one new interval. */
    struct ratelimit_result r;
    check(rl, "k", T0, &r);
    assert_false(r.allowed);
    assert_int_equal(r.limit, 100);
    assert_int_equal(r.retry_after_us, interval(100));
    assert_int_equal(fire(rl, "fresh", T0, 150, NULL), 100);
    ratelimit_set(rl, 0, WINDOW);
    assert_int_equal(fire(rl, "k", T0, 1000, NULL), 1000);
    struct ratelimit_stats st;
    ratelimit_stats(rl, &st);
    assert_int_equal(st.limit, 0);
    ratelimit_destroy(rl);
}

/* Several threads on one key, started together. */
struct hammer {
    struct ratelimit *rl;
    pthread_barrier_t *go;
    int64_t per_thread, allowed;
    const char *key;
};

static void *hammer_main(void *arg)
{
    struct hammer *h = arg;
    pthread_barrier_wait(h->go);
    h->allowed = fire(h->rl, h->key, T0, h->per_thread, NULL);
    return NULL;
}

static void concurrent_checks_on_one_key_admit_exactly_n(void **state)
{
    (void)state;
    enum { THREADS = 8 };
    const int64_t limits[] = {1000, 7};
    for (size_t l = 0; l < 2; l++) {
        int64_t n = limits[l];
        struct ratelimit *rl = ratelimit_create(n, WINDOW, 1000);
        pthread_barrier_t go;
        pthread_barrier_init(&go, NULL, THREADS);
        pthread_t tid[THREADS];
        struct hammer h[THREADS];
        for (int i = 0; i < THREADS; i++) {
            h[i] = (struct hammer){rl, &go, 500, 0, "shared"};
            assert_int_equal(pthread_create(&tid[i], NULL, hammer_main, &h[i]), 0);
        }
        int64_t total = 0;
        for (int i = 0; i < THREADS; i++) {
            pthread_join(tid[i], NULL);
            total += h[i].allowed;
        }
        assert_int_equal(total, n);
        struct ratelimit_stats st;
        ratelimit_stats(rl, &st);
        assert_int_equal(st.allowed, n);
        assert_int_equal(st.rejected, THREADS * 500 - n);
        pthread_barrier_destroy(&go);
        ratelimit_destroy(rl);
    }
}

static void a_keys_own_limit_wins_over_the_tiers(void **state)
{
    (void)state;
    struct ratelimit *rl = ratelimit_create(100, WINDOW, 1000);
    struct ratelimit_result r;
    int64_t allowed = 0;
    for (int i = 0; i < 8; i++) {
        check_limit(rl, "gold", 5, T0, &r);
        allowed += r.allowed;
    }
    assert_int_equal(allowed, 5); /* its own 5, not the tier's 100 */
    assert_int_equal(r.limit, 5);
    assert_int_equal(r.retry_after_us, interval(5)); /* one more after W/5 */
    /* Its neighbour keeps the tier's limit. */
    assert_int_equal(fire(rl, "plain", T0, 110, &r), 100);
    assert_int_equal(r.limit, 100);
    /* An override of 0 is unlimited: no state, every request admitted. */
    for (int i = 0; i < 1000; i++) {
        check_limit(rl, "vip", 0, T0, &r);
        assert_true(r.allowed);
    }
    struct ratelimit_stats st;
    ratelimit_stats(rl, &st);
    assert_int_equal(st.keys, 2);
    assert_int_equal(st.limit, 100); /* the tier's, as reported */
    /* A raised override counts what the key used already (its TAT is kept): 5 of 5 used were
     * a whole window's worth, so at 1000 per window the next one passes one interval later. */
    check_limit(rl, "gold", 1000, T0, &r);
    assert_false(r.allowed);
    check_limit(rl, "gold", 1000, T0 + interval(1000), &r);
    assert_true(r.allowed);
    ratelimit_destroy(rl);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(fresh_key_burst_admits_exactly_n),
        cmocka_unit_test(one_more_request_after_exactly_one_interval),
        cmocka_unit_test(partial_refill_reports_remaining),
        cmocka_unit_test(full_burst_again_after_the_window),
        cmocka_unit_test(rejected_requests_cost_nothing),
        cmocka_unit_test(gcra_step_updates_tat_only_when_allowed),
        cmocka_unit_test(next_is_exactly_when_one_more_request_fits),
        cmocka_unit_test(keys_are_independent),
        cmocka_unit_test(limit_zero_is_unlimited_and_stores_nothing),
        cmocka_unit_test(sweep_deletes_only_keys_whose_tat_passed),
        cmocka_unit_test(full_table_sends_a_clients_new_keys_to_its_addresss_bucket),
        cmocka_unit_test(a_client_that_filled_the_table_exhausts_only_its_own_overflow_bucket),
        cmocka_unit_test(key_count_never_exceeds_max_keys),
        cmocka_unit_test(passed_keys_make_room_in_a_full_table),
        cmocka_unit_test(set_changes_the_rate_and_keeps_tats),
        cmocka_unit_test(a_keys_own_limit_wins_over_the_tiers),
        cmocka_unit_test(concurrent_checks_on_one_key_admit_exactly_n),
    };
    return cmocka_run_group_tests_name("ratelimit", tests, NULL, NULL);
}
