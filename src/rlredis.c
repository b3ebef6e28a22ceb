/*
 * rlredis: GCRA in Redis through hiredis (see rlredis.h).
 *
 * The Lua script mirrors ratelimit_gcra: integer microseconds, T = window / limit,
 * tau = (limit - 1) * T, a key's value is its TAT and it expires when the TAT passes, so Redis
 * holds no state for idle tenants. Connections are per HTTP thread (thread-local), created on
 * first use and registered here so rlredis_destroy can close them after the HTTP threads end.
 */
#include "rlredis.h"
#include "config.h"
#include "log.h"
#include "mclock.h"
#include "xalloc.h"

#include <errno.h>
#include <hiredis/hiredis.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RLREDIS_RETRY_US 1000000 /* how long Redis stays "down" before one thread retries */

static const char rlredis_script[] =
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000000 + tonumber(t[2])\n"
    "local T = tonumber(ARGV[1])\n"
    "local tau = (tonumber(ARGV[2]) - 1) * T\n"
    "local tat = tonumber(redis.call('GET', KEYS[1])) or now\n"
    "if tat < now then tat = now end\n"
    "if now < tat - tau then return {0, 0, tat - tau - now, tat - now} end\n"
    "local nxt = tat + T\n"
    "redis.call('SET', KEYS[1], string.format('%.0f', nxt), 'PX',"
    " math.max(1, math.ceil((nxt - now) / 1000)))\n"
    "local diff = now + tau - nxt\n"
    "local rem = 0\n"
    "if diff >= 0 then rem = math.floor(diff / T) + 1 end\n"
    "return {1, rem, 0, nxt - now}\n";

struct rlredis_conn {
    redisContext *ctx;         /* owned; NULL when not connected */
    char sha[41];              /* the script's SHA1 on this server */
    struct rlredis_conn *next; /* registry link, guarded by rlredis.mutex */
};

struct rlredis {
    struct rlredis_url url; /* where, and the credentials for AUTH */
    struct timeval timeout;
    uint64_t id; /* distinguishes instances in thread-local caches */

    pthread_mutex_t mutex;      /* guards conns */
    struct rlredis_conn *conns; /* every thread's connection, owned */

    atomic_int_least64_t retry_at_us; /* while now < this, Redis is considered down */
    atomic_bool up;
    atomic_uint_least64_t calls, errors, fallbacks;
};

static atomic_uint_least64_t rlredis_next_id = 1;

/* This thread's connection for the instance it last used. */
static _Thread_local struct {
    uint64_t owner_id;
    struct rlredis_conn *conn;
} rlredis_tls;

/* Percent-decode in[0..n) into out (size outlen, NUL-terminated). Refuses blanks and control
 * characters (they must be escaped), bad or NUL escapes, and results that do not fit. */
static int rlredis_decode(const char *in, size_t n, char *out, size_t outlen)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)in[i];
        if (ch == '%') {
            unsigned v = 0;
            for (int k = 1; k <= 2; k++) {
                char h = i + (size_t)k < n ? in[i + (size_t)k] : '\0';
                int d = h >= '0' && h <= '9'   ? h - '0'
                        : h >= 'a' && h <= 'f' ? h - 'a' + 10
                        : h >= 'A' && h <= 'F' ? h - 'A' + 10
                                               : -1;
                if (d < 0)
                    return -EINVAL;
                v = v * 16 + (unsigned)d;
            }
            if (v == 0)
                return -EINVAL;
            ch = (unsigned char)v;
            i += 2;
        } else if (ch <= ' ' || ch == 0x7f) {
            return -EINVAL;
        }
        if (o + 1 >= outlen)
            return -EINVAL;
        out[o++] = (char)ch;
    }
    out[o] = '\0';
    return 0;
}

/* "[user]:password" (the text before the last '@'). */
static int rlredis_parse_userinfo(const char *info, size_t n, struct rlredis_url *u)
{
    const char *colon = memchr(info, ':', n);
    if (!colon || colon + 1 == info + n)
        return -EINVAL; /* AUTH needs a password */
    size_t ulen = (size_t)(colon - info);
    if (memchr(info, '/', ulen))
        return -EINVAL;
    if (rlredis_decode(info, ulen, u->user, sizeof(u->user)) ||
        rlredis_decode(colon + 1, n - ulen - 1, u->password, sizeof(u->password)))
        return -EINVAL;
    return 0;
}

int rlredis_parse_url(const char *url, struct rlredis_url *out)
{
    struct rlredis_url u = {.port = 6379, .db = 0};
    const char *p = url;
    if (strncmp(p, "redis://", 8) != 0)
        return -EINVAL;
    p += 8;
    const char *at = strrchr(p, '@');
    if (at) {
        if (rlredis_parse_userinfo(p, (size_t)(at - p), &u))
            return -EINVAL;
        p = at + 1;
    }
    /* A host name or IPv4 address. Anything else (?options, #fragments, blanks, IPv6 brackets)
     * is refused rather than misparsed into the host name. */
    size_t n = strspn(p, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_");
    if (n == 0 || n >= sizeof(u.host) || (p[n] != '\0' && p[n] != ':' && p[n] != '/'))
        return -EINVAL;
    memcpy(u.host, p, n);
    u.host[n] = '\0';
    p += n;
    if (*p == ':') {
        p++;
        long v = 0;
        size_t digits = 0;
        while (*p >= '0' && *p <= '9' && digits < 6) {
            v = v * 10 + (*p++ - '0');
            digits++;
        }
        if (digits == 0 || v < 1 || v > 65535)
            return -EINVAL;
        u.port = (int)v;
    }
    if (*p == '/') {
        p++;
        long v = 0;
        size_t digits = 0;
        while (*p >= '0' && *p <= '9' && digits < 3) {
            v = v * 10 + (*p++ - '0');
            digits++;
        }
        if (digits > 0)
            u.db = (int)v;
        else if (*p)
            return -EINVAL;
    }
    if (*p != '\0')
        return -EINVAL;
    *out = u;
    return 0;
}

int rlredis_create(const char *url, int64_t timeout_ms, struct rlredis **out, char *err,
                   size_t errlen)
{
    struct rlredis *r = xcalloc(1, sizeof(*r));
    if (rlredis_parse_url(url, &r->url)) {
        char *masked = config_mask_conn(url); /* the message must not show a password */
        snprintf(err, errlen, "REDIS_URL: \"%s\" is not redis://[[user]:password@]host[:port][/db]",
                 masked);
        free(masked);
        free(r);
        return -EINVAL;
    }
    r->timeout.tv_sec = (time_t)(timeout_ms / 1000);
    r->timeout.tv_usec = (suseconds_t)((timeout_ms % 1000) * 1000);
    r->id = atomic_fetch_add(&rlredis_next_id, 1);
    pthread_mutex_init(&r->mutex, NULL);
    atomic_store(&r->up, true); /* so the first failure is logged as a transition */
    *out = r;
    return 0;
}

void rlredis_destroy(struct rlredis *r)
{
    if (!r)
        return;
    for (struct rlredis_conn *c = r->conns; c;) {
        struct rlredis_conn *next = c->next;
        if (c->ctx)
            redisFree(c->ctx);
        free(c);
        c = next;
    }
    pthread_mutex_destroy(&r->mutex);
    explicit_bzero(&r->url, sizeof(r->url));
    free(r);
}

static struct rlredis_conn *rlredis_thread_conn(struct rlredis *r)
{
    if (rlredis_tls.owner_id == r->id)
        return rlredis_tls.conn;
    struct rlredis_conn *c = xcalloc(1, sizeof(*c));
    pthread_mutex_lock(&r->mutex);
    c->next = r->conns;
    r->conns = c;
    pthread_mutex_unlock(&r->mutex);
    rlredis_tls.owner_id = r->id;
    rlredis_tls.conn = c;
    return c;
}

static void rlredis_drop(struct rlredis_conn *c)
{
    if (c->ctx)
        redisFree(c->ctx);
    c->ctx = NULL;
    c->sha[0] = '\0';
}

/* AUTH [user] password, when the URL has a password. 0 or -EIO with Redis's reason in err (a
 * reply such as WRONGPASS or NOAUTH never repeats the password). */
static int rlredis_auth(struct rlredis *r, struct rlredis_conn *c, char *err, size_t errlen)
{
    if (!r->url.password[0])
        return 0;
    const char *argv[3] = {"AUTH", r->url.user, r->url.password};
    size_t lens[3] = {4, strlen(r->url.user), strlen(r->url.password)};
    int argc = r->url.user[0] ? 3 : 2;
    if (argc == 2) {
        argv[1] = r->url.password;
        lens[1] = lens[2];
    }
    redisReply *rep = redisCommandArgv(c->ctx, argc, argv, lens);
    bool ok = rep && rep->type == REDIS_REPLY_STATUS;
    if (!ok)
        snprintf(err, errlen, "AUTH%s%.64s refused: %.160s", r->url.user[0] ? " as " : "",
                 r->url.user, rep && rep->type == REDIS_REPLY_ERROR ? rep->str : c->ctx->errstr);
    freeReplyObject(rep);
    return ok ? 0 : -EIO;
}

/* Connect, authenticate, select the database and load the script. 0 or -EIO with err. */
static int rlredis_connect(struct rlredis *r, struct rlredis_conn *c, char *err, size_t errlen)
{
    c->ctx = redisConnectWithTimeout(r->url.host, r->url.port, r->timeout);
    if (!c->ctx || c->ctx->err) {
        snprintf(err, errlen, "connect %.100s:%d: %.120s", r->url.host, r->url.port,
                 c->ctx ? c->ctx->errstr : "out of memory");
        rlredis_drop(c);
        return -EIO;
    }
    redisSetTimeout(c->ctx, r->timeout);
    if (rlredis_auth(r, c, err, errlen)) {
        rlredis_drop(c);
        return -EIO;
    }
    redisReply *rep;
    if (r->url.db) {
        rep = redisCommand(c->ctx, "SELECT %d", r->url.db);
        bool ok = rep && rep->type == REDIS_REPLY_STATUS;
        if (!ok)
            snprintf(err, errlen, "SELECT %d failed: %.160s", r->url.db,
                     rep && rep->type == REDIS_REPLY_ERROR ? rep->str : c->ctx->errstr);
        freeReplyObject(rep);
        if (!ok) {
            rlredis_drop(c);
            return -EIO;
        }
    }
    rep = redisCommand(c->ctx, "SCRIPT LOAD %s", rlredis_script);
    if (!rep || rep->type != REDIS_REPLY_STRING || rep->len != 40) {
        snprintf(err, errlen, "SCRIPT LOAD failed: %s",
                 rep && rep->type == REDIS_REPLY_ERROR ? rep->str : c->ctx->errstr);
        freeReplyObject(rep);
        rlredis_drop(c);
        return -EIO;
    }
    memcpy(c->sha, rep->str, 40);
    c->sha[40] = '\0';
    freeReplyObject(rep);
    return 0;
}

static bool rlredis_reply_ok(const redisReply *rep)
{
    if (rep->type != REDIS_REPLY_ARRAY || rep->elements != 4)
        return false;
    for (size_t i = 0; i < 4; i++)
        if (rep->element[i]->type != REDIS_REPLY_INTEGER)
            return false;
    return true;
}

/*
 * One EVALSHA. It is tried a second time on a fresh connection when Redis lost the script, or
 * when a connection that had worked before fails: after a Redis restart every idle thread's
 * connection is dead, and that is no reason to declare the new server down.
 */
static int rlredis_eval(struct rlredis *r, struct rlredis_conn *c, const char *key, int64_t T,
                        int64_t limit, struct ratelimit_result *out, char *err, size_t errlen)
{
    for (int attempt = 0; attempt < 2; attempt++) {
        bool reused = c->ctx != NULL;
        if (!c->ctx && rlredis_connect(r, c, err, errlen))
            return -EIO;
        redisReply *rep = redisCommand(c->ctx, "EVALSHA %s 1 %s %lld %lld", c->sha, key,
                                       (long long)T, (long long)limit);
        if (!rep) {
            snprintf(err, errlen, "call failed: %s", c->ctx->errstr);
            rlredis_drop(c);
            if (reused && attempt == 0)
                continue;
            return -EIO;
        }
        if (rep->type == REDIS_REPLY_ERROR && !strncmp(rep->str, "NOSCRIPT", 8) && attempt == 0) {
            freeReplyObject(rep);
            rlredis_drop(c);
            continue;
        }
        if (!rlredis_reply_ok(rep)) {
            snprintf(err, errlen, "unexpected reply: %s",
                     rep->type == REDIS_REPLY_ERROR ? rep->str : "not 4 integers");
            freeReplyObject(rep);
            rlredis_drop(c);
            return -EIO;
        }
        out->allowed = rep->element[0]->integer == 1;
        out->limit = limit;
        out->remaining = rep->element[1]->integer;
        out->retry_after_us = rep->element[2]->integer;
        out->reset_us = rep->element[3]->integer;
        freeReplyObject(rep);
        return 0;
    }
    snprintf(err, errlen, "script could not be loaded");
    return -EIO;
}

int rlredis_check(struct rlredis *r, const char *tier, int64_t limit, int64_t window_s,
                  const char *key, struct ratelimit_result *out)
{
    int64_t now = mclock_now_us();
    int64_t retry_at = atomic_load_explicit(&r->retry_at_us, memory_order_relaxed);
    if (now < retry_at) {
        atomic_fetch_add_explicit(&r->fallbacks, 1, memory_order_relaxed);
        return -EAGAIN;
    }
    /* While down, exactly one thread claims the next try; the others keep falling back. */
    if (!atomic_load_explicit(&r->up, memory_order_relaxed) &&
        !atomic_compare_exchange_strong(&r->retry_at_us, &retry_at, now + RLREDIS_RETRY_US)) {
        atomic_fetch_add_explicit(&r->fallbacks, 1, memory_order_relaxed);
        return -EAGAIN;
    }
    struct rlredis_conn *c = rlredis_thread_conn(r);
    char rkey[160];
    snprintf(rkey, sizeof(rkey), "bulkhead:rl:%s:%s", tier, key);
    int64_t T = window_s * 1000000 / limit;
    if (T < 1)
        T = 1;
    char err[256] = "";
    int rc = rlredis_eval(r, c, rkey, T, limit, out, err, sizeof(err));
    if (rc) {
        atomic_fetch_add_explicit(&r->errors, 1, memory_order_relaxed);
        atomic_fetch_add_explicit(&r->fallbacks, 1, memory_order_relaxed);
        atomic_store(&r->retry_at_us, mclock_now_us() + RLREDIS_RETRY_US);
        if (atomic_exchange(&r->up, false))
            log_error("redis_down",
                      "rate-limit backend Redis unavailable (%s); using the in-memory limiter "
                      "until it answers again",
                      err);
        return rc;
    }
    out->window_s = window_s;
    atomic_fetch_add_explicit(&r->calls, 1, memory_order_relaxed);
    if (!atomic_exchange(&r->up, true)) {
        /* Clear the retry claim this thread took, or every other thread would keep deciding
         * locally for up to a second after Redis is back. */
        atomic_store(&r->retry_at_us, 0);
        log_info("redis_up", "rate-limit backend Redis answering again; limits are shared");
    }
    return 0;
}

void rlredis_stats(struct rlredis *r, struct rlredis_stats *out)
{
    out->up = atomic_load(&r->up) && mclock_now_us() >= atomic_load(&r->retry_at_us);
    out->calls = atomic_load(&r->calls);
    out->errors = atomic_load(&r->errors);
    out->fallbacks = atomic_load(&r->fallbacks);
}
