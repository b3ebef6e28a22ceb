/*
 * test_rlredis: the shared limiter's wire to a real redis-server (started here on a free
 * loopback port). A batch adds each tenant's hits to its TAT in Redis and reports how far ahead
 * of Redis's now it stands; batches past one call's keys are pipelined in one round trip; keys
 * expire with their TAT; a flushed script is loaded again and a restarted Redis is reached on a
 * new connection, both without an error; a stopped or hung Redis fails within the timeout; AUTH
 * with the URL's credentials (password only, or an ACL user), and Redis's reason when it refuses
 * them. Runs in the release, ASan and TSan passes.
 */
#include "rlredis.h"

#include "../redisproc.h"

#include <errno.h>
#include <hiredis/hiredis.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#define S 1000000LL /* us */

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

static struct rlredis *make(const char *url, int64_t timeout_ms)
{
    struct rlredis *r = NULL;
    char err[200];
    assert_int_equal(rlredis_create(url, timeout_ms, &r, err, sizeof(err)), 0);
    return r;
}

/* One key's hits; 0 or the error, with ahead_us in *ahead. */
static int charge1(struct rlredis *r, const char *key, int64_t interval_us, int64_t hits,
                   int64_t *ahead, char *err, size_t errlen)
{
    struct rlredis_charge c = {.key = key, .interval_us = interval_us, .hits = hits};
    int rc = rlredis_charge(r, &c, 1, err, errlen);
    *ahead = c.ahead_us;
    return rc;
}

/* "ahead" for n hits of T on a fresh key, charged a moment ago: n*T less the time since. */
static void assert_ahead(int64_t ahead, int64_t want)
{
    if (ahead > want || ahead < want - 2 * S)
        fail_msg("ahead %lld us, expected %lld us (less the time since)", (long long)ahead,
                 (long long)want);
}

static void a_batch_adds_each_tenants_hits_and_says_how_far_ahead(void **state)
{
    (void)state;
    struct rlredis *r = make(redis.url, 1000);
    struct rlredis_charge c[2] = {{.key = "free:id:a", .interval_us = 36 * S, .hits = 3},
                                  {.key = "pro:id:a", .interval_us = 4 * S, .hits = 1}};
    char err[200] = "";
    assert_int_equal(rlredis_charge(r, c, 2, err, sizeof(err)), 0);
    assert_ahead(c[0].ahead_us, 3 * 36 * S);
    assert_ahead(c[1].ahead_us, 4 * S);
    /* More hits stack on the TAT; another key is its own. */
    int64_t ahead;
    assert_int_equal(charge1(r, "free:id:a", 36 * S, 2, &ahead, err, sizeof(err)), 0);
    assert_ahead(ahead, 5 * 36 * S);
    /* The seed's key, expiring when the TAT passes: no state for idle tenants. */
    long long ttl = redisproc_int(redis.port, "PTTL bulkhead:rl:free:id:a");
    assert_true(ttl > (5 * 36 - 2) * 1000LL && ttl <= 5 * 36 * 1000LL);
    rlredis_destroy(r);
}

static void a_passed_tat_counts_from_now(void **state)
{
    (void)state;
    struct rlredis *r = make(redis.url, 1000);
    /* A TAT in the past (the seed's script stored absolute us of Redis's clock). */
    assert_int_equal(redisproc_int(redis.port, "SET bulkhead:rl:free:id:old 1000"), 0);
    int64_t ahead;
    char err[200];
    assert_int_equal(charge1(r, "free:id:old", 10 * S, 1, &ahead, err, sizeof(err)), 0);
    assert_ahead(ahead, 10 * S);
    rlredis_destroy(r);
}

static long long evalsha_calls(void)
{
    struct timeval tv = {.tv_sec = 2, .tv_usec = 0};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", redis.port, tv);
    assert_non_null(c);
    redisReply *rep = redisCommand(c, "INFO commandstats");
    assert_non_null(rep);
    long long calls = 0;
    const char *p = strstr(rep->str, "cmdstat_evalsha:calls=");
    if (p)
        calls = atoll(p + strlen("cmdstat_evalsha:calls="));
    freeReplyObject(rep);
    redisFree(c);
    return calls;
}

static void many_tenants_go_in_one_pipelined_round_trip(void **state)
{
    (void)state;
    struct rlredis *r = make(redis.url, 1000);
    enum { N = 2 * RLREDIS_KEYS_PER_CALL + 44 };
    static char keys[N][32];
    struct rlredis_charge c[N];
    for (int i = 0; i < N; i++) {
        snprintf(keys[i], sizeof(keys[i]), "free:id:many-%d", i);
        c[i] = (struct rlredis_charge){.key = keys[i], .interval_us = S, .hits = 1 + i % 3};
    }
    char err[200];
    long long before = evalsha_calls();
    assert_int_equal(rlredis_charge(r, c, N, err, sizeof(err)), 0);
    long long calls = evalsha_calls() - before;
    printf("# %d tenants: %lld EVALSHA calls\n", N, calls);
    assert_int_equal(calls, 3); /* 128 + 128 + 44 */
    for (int i = 0; i < N; i++)
        assert_ahead(c[i].ahead_us, (1 + i % 3) * S);
    rlredis_destroy(r);
}

static void a_flushed_script_is_loaded_again(void **state)
{
    (void)state;
    struct rlredis *r = make(redis.url, 1000);
    int64_t ahead;
    char err[200];
    assert_int_equal(charge1(r, "free:id:flush", S, 1, &ahead, err, sizeof(err)), 0);
    assert_int_equal(redisproc_int(redis.port, "SCRIPT FLUSH"), 0);
    assert_int_equal(charge1(r, "free:id:flush", S, 1, &ahead, err, sizeof(err)), 0);
    assert_ahead(ahead, 2 * S); /* counted once, not twice */
    rlredis_destroy(r);
}

static void a_database_number_in_the_url_is_used(void **state)
{
    (void)state;
    char url[80];
    snprintf(url, sizeof(url), "%s/3", redis.url);
    struct rlredis *r = make(url, 1000);
    int64_t ahead;
    char err[200];
    assert_int_equal(charge1(r, "free:id:db3", S, 1, &ahead, err, sizeof(err)), 0);
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

/* A Redis that requires a password (requirepass) and knows an ACL user "bh". */
static void auth_uses_the_url_credentials_and_reports_a_refusal(void **state)
{
    (void)state;
    struct redisproc locked = {.pid = 0};
    snprintf(locked.password, sizeof(locked.password), "req-pass");
    assert_int_equal(redisproc_start(&locked), 0);
    assert_int_equal(redisproc_cmd(&locked, "ACL SETUSER bh on >acl-pass ~bulkhead:* +@all"), 0);
    static const struct {
        const char *creds;
        bool ok;
        const char *why; /* in the error when refused */
    } cases[] = {
        {":req-pass@", true, NULL},   /* AUTH password: the default user */
        {"bh:acl-pass@", true, NULL}, /* AUTH user password */
        {"default:req-pass@", true, NULL}, {"", false, "NOAUTH"}, /* no AUTH */
        {":wrong@", false, "WRONGPASS"},   {"bh:req-pass@", false, "WRONGPASS"},
    };
    int counted = 0;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char url[200], err[300] = "";
        snprintf(url, sizeof(url), "redis://%s127.0.0.1:%d/1", cases[i].creds, locked.port);
        struct rlredis *r = make(url, 1000);
        int64_t ahead = 0;
        int rc = charge1(r, "free:id:auth", 100 * S, 1, &ahead, err, sizeof(err));
        if (cases[i].ok != (rc == 0))
            fail_msg("%s: rlredis_charge returned %d (%s)", cases[i].creds, rc, err);
        if (rc == 0) {
            assert_ahead(ahead, ++counted * 100 * S); /* the three share one count */
        } else {
            assert_int_equal(rc, -EIO);
            assert_non_null(strstr(err, cases[i].why));
            assert_null(strstr(err, "req-pass"));
            assert_null(strstr(err, "acl-pass"));
            assert_int_equal(rlredis_ping(r, err, sizeof(err)), -EIO);
        }
        rlredis_destroy(r);
    }
    redisproc_stop(&locked);
}

static void a_restarted_redis_is_reached_on_a_new_connection(void **state)
{
    (void)state;
    struct rlredis *r = make(redis.url, 500);
    int64_t ahead;
    char err[200];
    assert_int_equal(charge1(r, "free:id:restart", S, 1, &ahead, err, sizeof(err)), 0);
    redisproc_stop(&redis);
    assert_int_equal(charge1(r, "free:id:restart", S, 1, &ahead, err, sizeof(err)), -EIO);
    assert_int_equal(rlredis_ping(r, err, sizeof(err)), -EIO);
    printf("# Redis stopped: %s\n", err);
    assert_int_equal(redisproc_start(&redis), 0);
    assert_int_equal(rlredis_ping(r, err, sizeof(err)), 0);
    /* Restart again: the connection that worked is dead; the call goes through a new one. */
    redisproc_stop(&redis);
    assert_int_equal(redisproc_start(&redis), 0);
    assert_int_equal(charge1(r, "free:id:restart", S, 1, &ahead, err, sizeof(err)), 0);
    assert_ahead(ahead, S); /* a fresh Redis: this one hit */
    rlredis_destroy(r);
}

static void a_hung_redis_fails_within_the_timeout(void **state)
{
    (void)state;
    struct rlredis *r = make(redis.url, 100);
    int64_t ahead;
    char err[200];
    assert_int_equal(charge1(r, "free:id:hung", S, 1, &ahead, err, sizeof(err)), 0);
    kill(redis.pid, SIGSTOP);
    long long t0 = redisproc_now_ms();
    int rc = charge1(r, "free:id:hung", S, 1, &ahead, err, sizeof(err));
    long long took = redisproc_now_ms() - t0;
    kill(redis.pid, SIGCONT);
    printf("# Redis hung (SIGSTOP), timeout 100 ms: failed after %lld ms (%s)\n", took, err);
    assert_int_equal(rc, -EIO);
    /* Generous: the call, then one reconnect (connect, script load) of 100 ms each. */
    assert_true(took < 900);
    rlredis_destroy(r);
}

int main(void)
{
    /* As in the server (main.c): a write to a connection Redis closed must not kill us. */
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(a_batch_adds_each_tenants_hits_and_says_how_far_ahead),
        cmocka_unit_test(a_passed_tat_counts_from_now),
        cmocka_unit_test(many_tenants_go_in_one_pipelined_round_trip),
        cmocka_unit_test(a_flushed_script_is_loaded_again),
        cmocka_unit_test(a_database_number_in_the_url_is_used),
        cmocka_unit_test(auth_uses_the_url_credentials_and_reports_a_refusal),
        cmocka_unit_test(a_restarted_redis_is_reached_on_a_new_connection),
        cmocka_unit_test(a_hung_redis_fails_within_the_timeout),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
