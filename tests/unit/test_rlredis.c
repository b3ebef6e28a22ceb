/*
 * test_rlredis: the shared Redis rate limiter against a real redis-server (started here on a
 * free loopback port): exact limits from many threads and from two instances, script reloads,
 * fallback while Redis is down or hung, and recovery without a second outage when every
 * thread's old connection died with the old server; AUTH with the URL's credentials (password
 * only, or an ACL user), and fallback when Redis refuses them. Runs in the release, ASan and TSan
 * passes.
 */
#include "ratelimit.h"
#include "rlredis.h"

#include "../redisproc.h"

#include <errno.h>
#include <hiredis/hiredis.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

static struct redisproc redis;

static int setup(void **state)
{
    (void)state;
    return redisproc_start(&redis);
}

static int teardown(void **state)
{
    (void)state;
    redisproc_stop(&redis);
    return 0;
}

static struct rlredis *make(int64_t timeout_ms)
{
    struct rlredis *r = NULL;
    char err[200];
    assert_int_equal(rlredis_create(redis.url, timeout_ms, &r, err, sizeof(err)), 0);
    return r;
}

/* A Redis that requires a password (requirepass) and knows an ACL user "bh". */
static void auth_uses_the_url_credentials_and_falls_back_when_refused(void **state)
{
    (void)state;
    struct redisproc locked = {.pid = 0};
    snprintf(locked.password, sizeof(locked.password), "req-pass");
    assert_int_equal(redisproc_start(&locked), 0);
    assert_int_equal(redisproc_cmd(&locked, "ACL SETUSER bh on >acl-pass ~bulkhead:* +@all"), 0);
    /* A limit of 2 for one key: the three that authenticate share Redis's count. */
    static const struct {
        const char *creds;
        bool ok, allowed;
        int64_t remaining;
    } cases[] = {
        {":req-pass@", true, true, 1},   /* AUTH password: the default user */
        {"bh:acl-pass@", true, true, 0}, /* AUTH user password */
        {"default:req-pass@", true, false, 0}, {"", false, false, 0}, /* no AUTH: NOAUTH */
        {":wrong@", false, false, 0},          {"bh:req-pass@", false, false, 0},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char url[200], err[200];
        snprintf(url, sizeof(url), "redis://%s127.0.0.1:%d/1", cases[i].creds, locked.port);
        struct rlredis *r = NULL;
        assert_int_equal(rlredis_create(url, 1000, &r, err, sizeof(err)), 0);
        struct ratelimit_result res;
        int rc = rlredis_check(r, "free", 2, 3600, "id:auth", &res);
        struct rlredis_stats st;
        rlredis_stats(r, &st);
        if (cases[i].ok != (rc == 0))
            fail_msg("%s: rlredis_check returned %d", cases[i].creds, rc);
        assert_int_equal(st.up, cases[i].ok);
        assert_int_equal(st.errors, cases[i].ok ? 0 : 1);
        if (rc == 0) {
            assert_int_equal(res.allowed, cases[i].allowed);
            assert_int_equal(res.remaining, cases[i].remaining);
        }
        rlredis_destroy(r);
    }
    redisproc_stop(&locked);
}

static void limit_passes_then_rejects_with_headers_counting_down(void **state)
{
    (void)state;
    struct rlredis *r = make(1000);
    struct ratelimit_result res;
    for (int i = 0; i < 10; i++) {
        assert_int_equal(rlredis_check(r, "free", 10, 3600, "id:countdown", &res), 0);
        assert_true(res.allowed);
        assert_int_equal(res.limit, 10);
        assert_int_equal(res.remaining, 9 - i);
        assert_int_equal(res.retry_after_us, 0);
        assert_true(res.reset_us > 0);
    }
    assert_int_equal(rlredis_check(r, "free", 10, 3600, "id:countdown", &res), 0);
    assert_false(res.allowed);
    assert_int_equal(res.remaining, 0);
    /* T = 360 s: the next request is about 360 s away, the full burst about an hour. */
    assert_true(res.retry_after_us > 300 * 1000000LL && res.retry_after_us <= 360 * 1000000LL);
    assert_true(res.reset_us > 3000 * 1000000LL && res.reset_us <= 3600 * 1000000LL);
    /* Another tenant and the same tenant in another tier have their own counters. */
    assert_int_equal(rlredis_check(r, "free", 10, 3600, "id:other", &res), 0);
    assert_true(res.allowed);
    assert_int_equal(rlredis_check(r, "pro", 10, 3600, "id:countdown", &res), 0);
    assert_true(res.allowed);
    /* The key expires with its TAT: Redis keeps no state for idle tenants forever. */
    long long ttl = redisproc_int(redis.port, "PTTL bulkhead:rl:free:id:countdown");
    assert_true(ttl > 3000 * 1000LL && ttl <= 3600 * 1000LL);
    struct rlredis_stats st;
    rlredis_stats(r, &st);
    assert_true(st.up);
    assert_int_equal(st.calls, 13);
    assert_int_equal(st.errors, 0);
    assert_int_equal(st.fallbacks, 0);
    rlredis_destroy(r);
}

struct hammer {
    struct rlredis *r;
    const char *key;
    int calls;
    int allowed; /* out */
    int failed;  /* out: calls that did not reach Redis */
};

static void *hammer_run(void *arg)
{
    struct hammer *h = arg;
    for (int i = 0; i < h->calls; i++) {
        struct ratelimit_result res;
        if (rlredis_check(h->r, "free", 100, 3600, h->key, &res))
            h->failed++;
        else if (res.allowed)
            h->allowed++;
    }
    return NULL;
}

static void threads_sharing_a_tenant_admit_exactly_the_limit(void **state)
{
    (void)state;
    struct rlredis *r = make(2000);
    enum { N = 6 };
    pthread_t th[N];
    struct hammer h[N];
    for (int i = 0; i < N; i++) {
        h[i] = (struct hammer){.r = r, .key = "id:threads", .calls = 40};
        assert_int_equal(pthread_create(&th[i], NULL, hammer_run, &h[i]), 0);
    }
    int allowed = 0, failed = 0;
    for (int i = 0; i < N; i++) {
        pthread_join(th[i], NULL);
        allowed += h[i].allowed;
        failed += h[i].failed;
    }
    printf("# %d threads x 40 calls, limit 100: %d admitted, %d failed\n", N, allowed, failed);
    assert_int_equal(failed, 0);
    assert_int_equal(allowed, 100);
    struct rlredis_stats st;
    rlredis_stats(r, &st);
    assert_int_equal(st.calls, N * 40);
    assert_int_equal(st.errors, 0);
    rlredis_destroy(r);
}

static void two_instances_share_one_counter(void **state)
{
    (void)state;
    /* Two limiters are two servers: each thread uses its own, both hit one key. */
    struct rlredis *a = make(2000), *b = make(2000);
    pthread_t ta, tb;
    struct hammer ha = {.r = a, .key = "id:instances", .calls = 60};
    struct hammer hb = {.r = b, .key = "id:instances", .calls = 60};
    assert_int_equal(pthread_create(&ta, NULL, hammer_run, &ha), 0);
    assert_int_equal(pthread_create(&tb, NULL, hammer_run, &hb), 0);
    pthread_join(ta, NULL);
    pthread_join(tb, NULL);
    printf("# two instances x 60 calls, limit 100: %d + %d admitted\n", ha.allowed, hb.allowed);
    assert_int_equal(ha.failed + hb.failed, 0);
    assert_int_equal(ha.allowed + hb.allowed, 100);
    assert_true(ha.allowed > 0 && hb.allowed > 0);
    rlredis_destroy(a);
    rlredis_destroy(b);
}

static void a_flushed_script_is_loaded_again(void **state)
{
    (void)state;
    struct rlredis *r = make(1000);
    struct ratelimit_result res;
    assert_int_equal(rlredis_check(r, "free", 5, 60, "id:flush", &res), 0);
    assert_int_equal(redisproc_int(redis.port, "SCRIPT FLUSH"), 0);
    assert_int_equal(rlredis_check(r, "free", 5, 60, "id:flush", &res), 0);
    assert_true(res.allowed);
    assert_int_equal(res.remaining, 3);
    struct rlredis_stats st;
    rlredis_stats(r, &st);
    assert_int_equal(st.errors, 0);
    rlredis_destroy(r);
}

static void a_database_number_in_the_url_is_used(void **state)
{
    (void)state;
    char url[80];
    snprintf(url, sizeof(url), "%s/3", redis.url);
    struct rlredis *r = NULL;
    char err[200];
    assert_int_equal(rlredis_create(url, 1000, &r, err, sizeof(err)), 0);
    struct ratelimit_result res;
    assert_int_equal(rlredis_check(r, "free", 5, 60, "id:db3", &res), 0);
    assert_int_equal(redisproc_int(redis.port, "EXISTS bulkhead:rl:free:id:db3"), 0);
    struct timeval tv = {.tv_sec = 2, .tv_usec = 0};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", redis.port, tv);
    assert_non_null(c);
    redisReply *rep = redisCommand(c, "SELECT 3");
    freeReplyObject(rep);
    rep = redisCommand(c, "EXISTS bulkhead:rl:free:id:db3");
    assert_non_null(rep);
    assert_int_equal(rep->integer, 1);
    freeReplyObject(rep);
    redisFree(c);
    rlredis_destroy(r);
}

/* Worker threads that keep their connection between phases, driven by a barrier. */
struct phased {
    struct rlredis *r;
    pthread_barrier_t *bar;
    int rc1, rc2; /* rlredis_check's return in phase 1 and phase 2 */
};

static void *phased_run(void *arg)
{
    struct phased *p = arg;
    struct ratelimit_result res;
    char key[32];
    snprintf(key, sizeof(key), "id:phase-%p", arg);
    p->rc1 = rlredis_check(p->r, "free", 100, 60, key, &res);
    pthread_barrier_wait(p->bar); /* phase 1 done */
    pthread_barrier_wait(p->bar); /* Redis restarted and answering again */
    p->rc2 = rlredis_check(p->r, "free", 100, 60, key, &res);
    return NULL;
}

static void down_falls_back_at_once_and_recovers_on_restart(void **state)
{
    (void)state;
    struct rlredis *r = make(200);
    enum { N = 4 };
    pthread_barrier_t bar;
    pthread_barrier_init(&bar, NULL, N + 1);
    pthread_t th[N];
    struct phased p[N];
    for (int i = 0; i < N; i++) {
        p[i] = (struct phased){.r = r, .bar = &bar};
        assert_int_equal(pthread_create(&th[i], NULL, phased_run, &p[i]), 0);
    }
    pthread_barrier_wait(&bar);
    for (int i = 0; i < N; i++)
        assert_int_equal(p[i].rc1, 0);

    redisproc_stop(&redis);
    struct ratelimit_result res;
    long long t0 = redisproc_now_ms();
    assert_true(rlredis_check(r, "free", 100, 60, "id:down", &res) < 0);
    long long first = redisproc_now_ms() - t0;
    /* Within the retry second every call falls back without touching the network. */
    for (int i = 0; i < 50; i++)
        assert_int_equal(rlredis_check(r, "free", 100, 60, "id:down", &res), -EAGAIN);
    long long all = redisproc_now_ms() - t0;
    printf("# Redis down: first failure in %lld ms, 51 calls in %lld ms\n", first, all);
    assert_true(all < 1000);
    struct rlredis_stats st;
    rlredis_stats(r, &st);
    assert_false(st.up);
    assert_int_equal(st.errors, 1);
    assert_int_equal(st.fallbacks, 51);

    assert_int_equal(redisproc_start(&redis), 0);
    /* One claimed retry per second: wait (bounded) until this thread reaches Redis again. */
    long long end = redisproc_now_ms() + 10000;
    int rc;
    while ((rc = rlredis_check(r, "free", 100, 60, "id:back", &res)) != 0 &&
           redisproc_now_ms() < end) {
        struct timespec ts = {0, 20 * 1000000L};
        nanosleep(&ts, NULL);
    }
    assert_int_equal(rc, 0);
    rlredis_stats(r, &st);
    assert_true(st.up);
    uint64_t errors = st.errors;

    /* The other threads' connections died with the old server; they reconnect silently and
     * do not declare a second outage. */
    pthread_barrier_wait(&bar);
    for (int i = 0; i < N; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(p[i].rc2, 0);
    }
    rlredis_stats(r, &st);
    assert_true(st.up);
    assert_int_equal(st.errors, errors);
    pthread_barrier_destroy(&bar);
    rlredis_destroy(r);
}

static void a_hung_redis_costs_one_timeout_then_falls_back(void **state)
{
    (void)state;
    struct rlredis *r = make(100);
    struct ratelimit_result res;
    assert_int_equal(rlredis_check(r, "free", 100, 60, "id:hung", &res), 0);
    kill(redis.pid, SIGSTOP);
    long long t0 = redisproc_now_ms();
    int rc = rlredis_check(r, "free", 100, 60, "id:hung", &res);
    long long took = redisproc_now_ms() - t0;
    for (int i = 0; i < 20; i++)
        assert_int_equal(rlredis_check(r, "free", 100, 60, "id:hung", &res), -EAGAIN);
    long long all = redisproc_now_ms() - t0;
    kill(redis.pid, SIGCONT);
    printf("# Redis hung (SIGSTOP), timeout 100 ms: first call failed after %lld ms, 21 calls "
           "in %lld ms\n",
           took, all);
    assert_true(rc < 0);
    /* Generous bound: the timeout is 100 ms per step (call, reconnect, script load). */
    assert_true(took < 900);
    assert_true(all < 1000);
    rlredis_destroy(r);
}

int main(void)
{
    /* As in the server (main.c): a write to a connection Redis closed must not kill us. */
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(auth_uses_the_url_credentials_and_falls_back_when_refused),
        cmocka_unit_test(limit_passes_then_rejects_with_headers_counting_down),
        cmocka_unit_test(threads_sharing_a_tenant_admit_exactly_the_limit),
        cmocka_unit_test(two_instances_share_one_counter),
        cmocka_unit_test(a_flushed_script_is_loaded_again),
        cmocka_unit_test(a_database_number_in_the_url_is_used),
        cmocka_unit_test(down_falls_back_at_once_and_recovers_on_restart),
        cmocka_unit_test(a_hung_redis_costs_one_timeout_then_falls_back),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
