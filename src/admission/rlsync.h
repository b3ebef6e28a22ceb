/*
 * rlsync: the rate limit shared by every instance through Redis (RATE_LIMIT_BACKEND=redis),
 * decided here, on the HTTP thread, without a round trip to Redis.
 *
 * Each instance keeps a view of every active tenant: the GCRA arrival time (TAT) Redis last
 * reported for it, plus this instance's own admissions since. A request is admitted or refused
 * by ratelimit_gcra against that view, at once. Admitted hits are sent to Redis by the syncer
 * thread in batches (rlredis_charge: one pipelined call every RATE_LIMIT_SYNC_MS, for every
 * tenant hit since), and Redis's answer, the TAT after everyone's hits, becomes the new view.
 * A tenant over its limit is refused from the view alone: a storm of refusals costs Redis
 * nothing.
 *
 * The lease bounds what the views can miss. An instance admits at most `lease` hits of a
 * tenant that Redis has not yet counted: lease = RATE_LIMIT_LEASE_PCT % of the tenant's limit
 * (at least 1), and 1 before Redis has answered for the tenant at all. A request past its
 * lease waits (parked, not blocking the HTTP thread) for the batch's answer, which the syncer
 * sends at once. So every admission is decided from Redis's count as of some answer plus at most
 * `lease` hits of the deciding instance, and at most `lease` hits of each other instance are
 * missing from that count: across N instances a tenant is admitted at most
 *   limit + (N - 1) x lease    in a burst (GCRA: at any moment, beyond its conforming hits),
 * and exactly `limit` on one instance. What is admitted past the limit is counted in Redis like
 * any hit, a debt the tenant waits off. (The proof is in the README, "Several instances".)
 *
 * Redis unavailable (a failed or timed-out batch, a refused AUTH): every verdict is local, from
 * the views as they stand (the in-memory limiter's behaviour, per instance), hits are no longer
 * queued, the batch's hits are counted as dropped, `redis_down` is logged once; the syncer
 * tries Redis again every second and `redis_up` is logged when it answers.
 *
 * DESIGN: the views live in a keytab (64 shards, one mutex each; a verdict holds only its
 * tenant's shard). s->mutex guards the queue of tenants with hits to send, the parked requests
 * and the syncer's wake-up; it is never held while a shard mutex is taken, nor during I/O. The
 * syncer thread alone talks to Redis (one connection); the HTTP threads only read the atomic
 * `down`. A parked request's callback runs on the syncer thread (or rlsync_stop's caller),
 * with no lock held.
 */
#ifndef BULKHEAD_RLSYNC_H
#define BULKHEAD_RLSYNC_H

#include "ratelimit.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define RLSYNC_RETRY_US 1000000 /* while Redis is unavailable, how often it is tried again */

struct rlsync;

struct rlsync_cfg {
    const char *redis_url; /* REDIS_URL */
    int64_t timeout_ms;    /* REDIS_TIMEOUT_MS: every Redis connect and call */
    int64_t lease_pct;     /* RATE_LIMIT_LEASE_PCT: 0..100 */
    int64_t sync_us;       /* RATE_LIMIT_SYNC_MS in us: the longest a hit waits to be sent */
    size_t max_keys;       /* tenants tracked at most; past it, -ENOSPC (the local limiter) */
    bool manual;           /* tests: no syncer thread; rlsync_sync runs one round */
};

struct rlsync_stats {
    bool up;               /* Redis answered the last call */
    uint64_t errors;       /* failed Redis calls (batches and retries) */
    uint64_t fallbacks;    /* verdicts made from the views alone while Redis was unavailable */
    uint64_t batches;      /* batches Redis counted */
    uint64_t hits_sent;    /* admitted hits Redis counted */
    uint64_t hits_dropped; /* admitted hits Redis never counted: their batch failed */
    uint64_t waits;        /* requests that waited for Redis's answer (their lease used up) */
    uint64_t waiting;      /* requests waiting now */
    uint64_t untracked;    /* verdicts left to the caller: the table was full */
    size_t keys;           /* tenants with a view now */
};

/* Fails only for a malformed REDIS_URL (err names it, password masked) or a thread that cannot
 * start; Redis itself is first contacted by the first batch. */
int rlsync_create(const struct rlsync_cfg *cfg, struct rlsync **out, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* After rlsync_stop (or with the syncer never started). */
void rlsync_destroy(struct rlsync *s);

/*
 * HTTP thread. The verdict for one request of tenant `key` of `tier` at its limit per window_s
 * (limit >= 1), at now_us (monotonic):
 *   0        decided: *out filled (and the hit queued for Redis when admitted);
 *   1        parked: decided(ctx, verdict) will be called once, on another thread;
 *   -ENOSPC  the table is full: decide with the in-memory limiter (not shared).
 */
int rlsync_check(struct rlsync *s, const char *tier, const char *key, int64_t limit,
                 int64_t window_s, int64_t now_us, struct ratelimit_result *out,
                 void (*decided)(void *ctx, const struct ratelimit_result *verdict), void *ctx);

/* Tests (cfg.manual): one round of the syncer at now_us: the queued hits to Redis, the answers
 * into the views, parked requests decided where they can be; while Redis is unavailable, a
 * retry when one is due. Returns the tenants sent, or -EIO when Redis did not answer. */
int rlsync_sync(struct rlsync *s, int64_t now_us);

/* Stop the syncer (hits not sent yet are dropped and counted); parked requests are decided
 * from the views before this returns, and later verdicts are all local. Idempotent. */
void rlsync_stop(struct rlsync *s);

void rlsync_stats(struct rlsync *s, struct rlsync_stats *out);

/* The lease of a tenant whose limit is `limit`: hits it may be admitted here that Redis has
 * not counted yet (after Redis's first answer for it; 1 before). */
int64_t rlsync_lease(const struct rlsync *s, int64_t limit);

#endif
