/*
 * rlredis: hits to Redis in batches (see rlredis.h).
 *
 * The Lua script adds n hits of interval T to one TAT per key, the way ratelimit_gcra admits
 * them (a passed TAT counts from now), in integer microseconds of Redis's clock, and sets the
 * key to expire when its TAT passes, so Redis holds no state for idle tenants. It returns, per
 * key, the TAT minus Redis's now: a duration, which means the same on every instance's clock.
 */
#include "rlredis.h"
#include "log.h"
#include "xalloc.h"

#include <errno.h>
#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char rlredis_script[] =
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000000 + tonumber(t[2])\n"
    "local out = {}\n"
    "for i = 1, #KEYS do\n"
    "  local tat = tonumber(redis.call('GET', KEYS[i])) or now\n"
    "  if tat < now then tat = now end\n"
    "  tat = tat + tonumber(ARGV[2 * i]) * tonumber(ARGV[2 * i - 1])\n"
    "  redis.call('SET', KEYS[i], string.format('%.0f', tat), 'PX',"
    " math.max(1, math.ceil((tat - now) / 1000)))\n"
    "  out[i] = tat - now\n"
    "end\n"
    "return out\n";

struct rlredis {
    struct rlredis_url url; /* where, and the credentials for AUTH */
    struct timeval timeout;
    redisContext *ctx; /* owned; NULL when not connected */
    char sha[41];      /* the script's SHA1 on this server */
};

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
        char *masked = log_mask_conn(url); /* the message must not show a password */
        snprintf(err, errlen, "REDIS_URL: \"%s\" is not redis://[[user]:password@]host[:port][/db]",
                 masked);
        free(masked);
        free(r);
        return -EINVAL;
    }
    r->timeout.tv_sec = (time_t)(timeout_ms / 1000);
    r->timeout.tv_usec = (suseconds_t)((timeout_ms % 1000) * 1000);
    *out = r;
    return 0;
}

static void rlredis_drop(struct rlredis *r)
{
    if (r->ctx)
        redisFree(r->ctx);
    r->ctx = NULL;
    r->sha[0] = '\0';
}

void rlredis_destroy(struct rlredis *r)
{
    if (!r)
        return;
    rlredis_drop(r);
    explicit_bzero(&r->url, sizeof(r->url));
    free(r);
}

/* Redis's error text, or the connection's. */
static const char *rlredis_why(const struct rlredis *r, const redisReply *rep)
{
    if (rep && rep->type == REDIS_REPLY_ERROR)
        return rep->str;
    return r->ctx && r->ctx->errstr[0] ? r->ctx->errstr : "unexpected reply";
}

/* AUTH [user] password, when the URL has a password. 0 or -EIO with Redis's reason in err (a
 * reply such as WRONGPASS or NOAUTH never repeats the password). */
static int rlredis_auth(struct rlredis *r, char *err, size_t errlen)
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
    redisReply *rep = redisCommandArgv(r->ctx, argc, argv, lens);
    bool ok = rep && rep->type == REDIS_REPLY_STATUS;
    if (!ok)
        snprintf(err, errlen, "AUTH%s%.64s refused: %.160s", r->url.user[0] ? " as " : "",
                 r->url.user, rlredis_why(r, rep));
    freeReplyObject(rep);
    return ok ? 0 : -EIO;
}

/* SCRIPT LOAD on the current connection. 0 or -EIO with err. */
static int rlredis_load(struct rlredis *r, char *err, size_t errlen)
{
    redisReply *rep = redisCommand(r->ctx, "SCRIPT LOAD %s", rlredis_script);
    bool ok = rep && rep->type == REDIS_REPLY_STRING && rep->len == 40;
    if (ok) {
        memcpy(r->sha, rep->str, 40);
        r->sha[40] = '\0';
    } else {
        snprintf(err, errlen, "SCRIPT LOAD failed: %.200s", rlredis_why(r, rep));
    }
    freeReplyObject(rep);
    return ok ? 0 : -EIO;
}

/* Connect, authenticate, select the database and load the script. 0 or -EIO with err. */
static int rlredis_connect(struct rlredis *r, char *err, size_t errlen)
{
    r->ctx = redisConnectWithTimeout(r->url.host, r->url.port, r->timeout);
    if (!r->ctx || r->ctx->err) {
        snprintf(err, errlen, "connect %.100s:%d: %.120s", r->url.host, r->url.port,
                 r->ctx ? r->ctx->errstr : "out of memory");
        rlredis_drop(r);
        return -EIO;
    }
    redisSetTimeout(r->ctx, r->timeout);
    if (rlredis_auth(r, err, errlen))
        goto fail;
    if (r->url.db) {
        redisReply *rep = redisCommand(r->ctx, "SELECT %d", r->url.db);
        bool ok = rep && rep->type == REDIS_REPLY_STATUS;
        if (!ok)
            snprintf(err, errlen, "SELECT %d failed: %.160s", r->url.db, rlredis_why(r, rep));
        freeReplyObject(rep);
        if (!ok)
            goto fail;
    }
    if (rlredis_load(r, err, errlen))
        goto fail;
    return 0;
fail:
    rlredis_drop(r);
    return -EIO;
}

int rlredis_ping(struct rlredis *r, char *err, size_t errlen)
{
    for (int attempt = 0; attempt < 2; attempt++) {
        bool reused = r->ctx != NULL;
        if (!r->ctx && rlredis_connect(r, err, errlen))
            return -EIO;
        redisReply *rep = redisCommand(r->ctx, "PING");
        bool ok = rep && rep->type == REDIS_REPLY_STATUS;
        if (!ok)
            snprintf(err, errlen, "PING failed: %.200s", rlredis_why(r, rep));
        freeReplyObject(rep);
        if (ok)
            return 0;
        rlredis_drop(r);
        if (!reused)
            break;
    }
    return -EIO;
}

/* Queue one EVALSHA for charges c[0..n) (n <= RLREDIS_KEYS_PER_CALL) on the connection. */
static int rlredis_append(struct rlredis *r, const struct rlredis_charge *c, size_t n)
{
    enum { MAXARG = 3 + 3 * RLREDIS_KEYS_PER_CALL };
    const char *argv[MAXARG];
    size_t lens[MAXARG];
    char keys[RLREDIS_KEYS_PER_CALL][16 + RLREDIS_KEY_MAX], nums[2 * RLREDIS_KEYS_PER_CALL][24],
        nkeys[16];
    size_t argc = 0;
    snprintf(nkeys, sizeof(nkeys), "%zu", n);
    argv[argc++] = "EVALSHA";
    argv[argc++] = r->sha;
    argv[argc++] = nkeys;
    for (size_t i = 0; i < n; i++) {
        snprintf(keys[i], sizeof(keys[i]), "bulkhead:rl:%s", c[i].key);
        argv[argc++] = keys[i];
    }
    for (size_t i = 0; i < n; i++) {
        snprintf(nums[2 * i], sizeof(nums[0]), "%lld", (long long)c[i].interval_us);
        snprintf(nums[2 * i + 1], sizeof(nums[0]), "%lld", (long long)c[i].hits);
        argv[argc++] = nums[2 * i];
        argv[argc++] = nums[2 * i + 1];
    }
    for (size_t i = 0; i < argc; i++)
        lens[i] = strlen(argv[i]);
    return redisAppendCommandArgv(r->ctx, (int)argc, argv, lens) == REDIS_OK ? 0 : -EIO;
}

/* The reply to one EVALSHA for c[0..n): ahead_us filled. 1: NOSCRIPT (nothing ran). */
static int rlredis_take(const redisReply *rep, struct rlredis_charge *c, size_t n, char *err,
                        size_t errlen)
{
    if (rep->type == REDIS_REPLY_ERROR && !strncmp(rep->str, "NOSCRIPT", 8))
        return 1;
    bool ok = rep->type == REDIS_REPLY_ARRAY && rep->elements == n;
    for (size_t i = 0; ok && i < n; i++)
        ok = rep->element[i]->type == REDIS_REPLY_INTEGER;
    if (!ok) {
        snprintf(err, errlen, "unexpected reply: %.200s",
                 rep->type == REDIS_REPLY_ERROR ? rep->str : "not one integer per key");
        return -EIO;
    }
    for (size_t i = 0; i < n; i++)
        c[i].ahead_us = rep->element[i]->integer;
    return 0;
}

/* Send every chunk in `todo` (a bitmask over chunks of RLREDIS_KEYS_PER_CALL) and read their
 * replies; a chunk answered NOSCRIPT stays in *todo. 0 or -EIO with err (connection dropped). */
static int rlredis_round(struct rlredis *r, struct rlredis_charge *c, size_t n, bool *todo,
                         size_t chunks, char *err, size_t errlen)
{
    for (size_t k = 0; k < chunks; k++) {
        size_t at = k * RLREDIS_KEYS_PER_CALL, m = n - at;
        if (todo[k] &&
            rlredis_append(r, c + at, m < RLREDIS_KEYS_PER_CALL ? m : RLREDIS_KEYS_PER_CALL))
            goto lost;
    }
    for (size_t k = 0; k < chunks; k++) {
        if (!todo[k])
            continue;
        size_t at = k * RLREDIS_KEYS_PER_CALL, m = n - at;
        void *v = NULL;
        if (redisGetReply(r->ctx, &v) != REDIS_OK || !v)
            goto lost;
        int rc = rlredis_take(v, c + at, m < RLREDIS_KEYS_PER_CALL ? m : RLREDIS_KEYS_PER_CALL, err,
                              errlen);
        freeReplyObject(v);
        if (rc < 0) {
            rlredis_drop(r);
            return rc;
        }
        todo[k] = rc == 1;
    }
    return 0;
lost:
    snprintf(err, errlen, "call failed: %.200s", r->ctx->errstr);
    rlredis_drop(r);
    return -EIO;
}

int rlredis_charge(struct rlredis *r, struct rlredis_charge *c, size_t n, char *err, size_t errlen)
{
    size_t chunks = (n + RLREDIS_KEYS_PER_CALL - 1) / RLREDIS_KEYS_PER_CALL;
    if (chunks == 0)
        return 0;
    bool *todo = xmalloc(chunks * sizeof(*todo));
    int rc = -EIO;
    /* Three rounds at most: a dead connection replaced, then a script loaded again. */
    for (int attempt = 0; attempt < 3; attempt++) {
        bool reused = r->ctx != NULL;
        if (!r->ctx && rlredis_connect(r, err, errlen))
            break;
        bool fresh = attempt == 0 || !reused;
        if (fresh)
            for (size_t k = 0; k < chunks; k++)
                todo[k] = true;
        if (rlredis_round(r, c, n, todo, chunks, err, errlen)) {
            if (reused && attempt == 0)
                continue; /* a connection that died with an old server */
            break;
        }
        size_t left = 0;
        for (size_t k = 0; k < chunks; k++)
            left += todo[k];
        if (left == 0) {
            rc = 0;
            break;
        }
        /* Redis forgot the script (SCRIPT FLUSH, a restart behind a proxy): load it again and
         * send what it refused; nothing of those chunks ran. */
        if (rlredis_load(r, err, errlen)) {
            rlredis_drop(r);
            break;
        }
        snprintf(err, errlen, "script could not be loaded");
    }
    free(todo);
    return rc;
}
