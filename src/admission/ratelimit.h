/*
 * ratelimit: per-tenant rate limiting with GCRA, in this process (layer 1).
 *
 * Semantics of "N per W seconds" (the generic cell rate algorithm, equivalent to a token bucket
 * of capacity N refilled continuously at N/W): a fresh tenant may send N requests at once; after
 * that one more request is admitted every W/N seconds (free: 100/min, so one every 0.6 s), and
 * the full burst of N is available again W seconds after the last admitted request. A rejected
 * request costs nothing.
 *
 * State is one 64-bit "theoretical arrival time" (TAT) per key. A key whose TAT has passed holds
 * no information and is deleted, so idle keys expire by themselves. At most max_keys keys are
 * tracked; when the table is full, a new key is not tracked and is decided on one of
 * RATELIMIT_OVERFLOW_BUCKETS overflow buckets at the tier's limit, the one its client's
 * address hashes to (a keyed hash): cycling through fresh tenant ids buys a client no more
 * than one tier allowance, and a client that filled the table exhausts its own bucket, not the
 * new tenants' of every other address. Memory stays bounded: the buckets are a fixed array.
 *
 * DESIGN: the TATs live in a keytab (64 shards, each with its own mutex: HTTP threads contend
 * only when two requests hash to the same shard at the same moment); an overflow bucket is an
 * atomic TAT updated by compare-and-swap. Counters are atomics.
 */
#ifndef BULKHEAD_RATELIMIT_H
#define BULKHEAD_RATELIMIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define RATELIMIT_OVERFLOW_BUCKETS 1024 /* per limiter: 8 KiB */

struct ratelimit;

/* The verdict for one request, with what the RateLimit headers need. */
struct ratelimit_result {
    bool allowed;
    int64_t limit;          /* N */
    int64_t window_s;       /* W */
    int64_t remaining;      /* requests that would be admitted right now, after this one */
    int64_t reset_us;       /* until the full burst is available again */
    int64_t retry_after_us; /* when rejected: until the next request would be admitted */
};

struct ratelimit_stats {
    int64_t limit, window_s;
    uint64_t allowed, rejected, overflow;
    size_t keys;
};

/* limit requests per window_s per key; limit 0 means unlimited (no state at all). */
struct ratelimit *ratelimit_create(int64_t limit, int64_t window_s, size_t max_keys);
void ratelimit_destroy(struct ratelimit *rl);

/* Change the rate live (config reload); existing keys keep their TAT. */
void ratelimit_set(struct ratelimit *rl, int64_t limit, int64_t window_s);

/* HTTP thread. Decide for key at now_us (monotonic), at the tier's limit. Returns 0, or
 * -ENOSPC when the table is full and key is not tracked: nothing was decided or counted, and
 * ratelimit_check_overflow decides by the client's address. */
int ratelimit_check(struct ratelimit *rl, const char *key, int64_t now_us,
                    struct ratelimit_result *out) __attribute__((warn_unused_result));

/* The same with the key's own limit per the tier's window (a tenant's override, which wins
 * over the tier's limit); 0 = unlimited (always 0: no state at all). */
int ratelimit_check_limit(struct ratelimit *rl, const char *key, int64_t limit, int64_t now_us,
                          struct ratelimit_result *out) __attribute__((warn_unused_result));

/* HTTP thread: a key the table could not track, from the client at address addr (its
 * address key, as api.c names it): decided on addr's overflow bucket at the tier's limit
 * (limit, the key's own, only when the tier is unlimited), and counted as overflow. */
void ratelimit_check_overflow(struct ratelimit *rl, const char *addr, int64_t limit, int64_t now_us,
                              struct ratelimit_result *out);

/* The overflow bucket addr's untracked keys share, 0..RATELIMIT_OVERFLOW_BUCKETS-1 (tests). */
size_t ratelimit_overflow_bucket(const char *addr);

/* The time one request takes from a limit of limit per window_s: W/N in us, at least 1. */
int64_t ratelimit_interval_us(int64_t limit, int64_t window_s);

/*
 * The GCRA step on one TAT, shared with the Redis backend's tests: given the stored tat
 * (0 = fresh) decide, update *tat when allowed, and fill out.
 */
void ratelimit_gcra(int64_t limit, int64_t window_s, int64_t *tat, int64_t now_us,
                    struct ratelimit_result *out);

/* Until `remaining` next grows by one (the RateLimit field's effective window: until then the
 * client can use no more than `remaining`); for a rejection, its retry_after_us. Derived from
 * the verdict alone, so it holds for the Redis backend's verdicts too. */
int64_t ratelimit_next_us(const struct ratelimit_result *r);

/* Janitor thread: delete keys whose TAT has passed. Returns how many. */
size_t ratelimit_sweep(struct ratelimit *rl, int64_t now_us);

/* Count a verdict reached elsewhere (the Redis backend) in this limiter's counters. */
void ratelimit_count(struct ratelimit *rl, bool allowed);

void ratelimit_stats(struct ratelimit *rl, struct ratelimit_stats *out);

#endif
