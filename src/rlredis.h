/*
 * rlredis: the rate limiter's shared backend, so several instances enforce one limit.
 *
 * The same GCRA as ratelimit.c runs inside Redis as a Lua script (one round trip per request,
 * Redis's clock for every instance). Every HTTP thread has its own hiredis connection, so no
 * lock is taken per request. Any error or timeout (REDIS_TIMEOUT_MS) makes the caller fall back
 * to its in-memory limiter at once; the backend then stays "down" for a second before one
 * thread tries Redis again, so a dead Redis costs one timeout per second, not one per request.
 * Transitions are logged once and counted.
 */
#ifndef BULKHEAD_RLREDIS_H
#define BULKHEAD_RLREDIS_H

#include "ratelimit.h"

#include <stdbool.h>
#include <stdint.h>

struct rlredis;

struct rlredis_stats {
    bool up;            /* the last call reached Redis */
    uint64_t calls;     /* verdicts from Redis */
    uint64_t errors;    /* failed calls (each one fell back) */
    uint64_t fallbacks; /* verdicts made locally because Redis was down */
};

/* url: redis://host:port[/db]. Fails only for a malformed URL; an unreachable Redis is a
 * runtime condition (fallback), not a start-up error. */
int rlredis_create(const char *url, int64_t timeout_ms, struct rlredis **out, char *err,
                   size_t errlen) __attribute__((warn_unused_result));
void rlredis_destroy(struct rlredis *r);

/* HTTP thread. 0: out holds Redis's verdict. Negative: use the local limiter. */
int rlredis_check(struct rlredis *r, const char *tier, int64_t limit, int64_t window_s,
                  const char *key, struct ratelimit_result *out);

void rlredis_stats(struct rlredis *r, struct rlredis_stats *out);

/* Parse redis://host:port[/db] (exposed for tests and fuzzing). */
int rlredis_parse_url(const char *url, char *host, size_t hostlen, int *port, int *db)
    __attribute__((warn_unused_result));

#endif
