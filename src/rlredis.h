/*
 * rlredis: the rate limiter's shared backend, so several instances enforce one limit.
 *
 * The same GCRA as ratelimit.c runs inside Redis as a Lua script (one round trip per request,
 * Redis's clock for every instance). Every HTTP thread has its own hiredis connection, so no
 * lock is taken per request. Any error or timeout (REDIS_TIMEOUT_MS) makes the caller fall back
 * to its in-memory limiter at once; the backend then stays "down" for a second before one
 * thread tries Redis again, so a dead Redis costs one timeout per second, not one per request.
 * Transitions are logged once and counted.
 *
 * REDIS_URL may carry credentials (managed Redis with ACLs): redis://user:password@host sends
 * AUTH user password on every new connection, redis://:password@host AUTH password (the
 * default user, requirepass). A refused AUTH is an unavailable Redis like any other: fallback,
 * logged once with Redis's reason. The password is never logged.
 */
#ifndef BULKHEAD_RLREDIS_H
#define BULKHEAD_RLREDIS_H

#include "ratelimit.h"

#include <stdbool.h>
#include <stdint.h>

struct rlredis;

/* A parsed REDIS_URL: redis://[[user]:password@]host[:port][/db]. */
struct rlredis_url {
    char host[256];     /* a host name or IPv4 address */
    int port;           /* 1..65535, default 6379 */
    int db;             /* 0..999, default 0 */
    char user[128];     /* ACL user, percent-decoded; "" = the default user */
    char password[256]; /* percent-decoded; "" = no AUTH */
};

struct rlredis_stats {
    bool up;            /* the last call reached Redis */
    uint64_t calls;     /* verdicts from Redis */
    uint64_t errors;    /* failed calls (each one fell back) */
    uint64_t fallbacks; /* verdicts made locally because Redis was down */
};

/* url: see struct rlredis_url. Fails only for a malformed URL (err names REDIS_URL, with the
 * password masked); an unreachable Redis or a refused AUTH is a runtime condition (fallback),
 * not a start-up error. */
int rlredis_create(const char *url, int64_t timeout_ms, struct rlredis **out, char *err,
                   size_t errlen) __attribute__((warn_unused_result));
void rlredis_destroy(struct rlredis *r);

/* HTTP thread. 0: out holds Redis's verdict. Negative: use the local limiter. */
int rlredis_check(struct rlredis *r, const char *tier, int64_t limit, int64_t window_s,
                  const char *key, struct ratelimit_result *out);

void rlredis_stats(struct rlredis *r, struct rlredis_stats *out);

/*
 * Parse redis://[[user]:password@]host[:port][/db] (exposed for tests and fuzzing). The
 * userinfo ends at the last '@'; a password, when given, is not empty; user and password may
 * use %XX escapes (for '@', ':', '/', blanks), which are decoded (never to a NUL). Anything else
 * (query strings, fragments, IPv6 brackets, blanks, a user without a password, a field too long
 * for its buffer) is -EINVAL: refused rather than misread. out is filled only on 0.
 */
int rlredis_parse_url(const char *url, struct rlredis_url *out) __attribute__((warn_unused_result));

#endif
