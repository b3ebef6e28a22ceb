/*
 * keytab: a bounded table of string keys, each with one 64-bit deadline (monotonic us) after
 * which it carries no information and is deleted. The rate limiter keeps a GCRA time per tenant
 * in it (ratelimit.c), the tarpit a "retry not before" time per client (tarpit.c).
 *
 * At most max_keys keys are held over all shards, exactly: a key that would be one too many is
 * refused (-ENOSPC) and the caller decides what that means (the rate limiter sends it to its
 * overflow bucket, the tarpit does not track it). A full table sweeps expired keys before it
 * refuses one (the key's shard, then, if that frees nothing, every shard; each at most every
 * KEYTAB_SWEEP_GAP_US), so a table full of dead keys makes room by itself.
 *
 * DESIGN: keys are spread over KEYTAB_SHARDS shards by a seeded hash, each shard with its own
 * mutex; a caller's update function runs under its key's shard mutex, so read-modify-write of
 * one key is atomic and calls for different shards never contend. The key count is an atomic.
 */
#ifndef BULKHEAD_KEYTAB_H
#define BULKHEAD_KEYTAB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define KEYTAB_SHARDS       64
#define KEYTAB_SWEEP_GAP_US 100000 /* a full shard re-sweeps itself at most every 100 ms */

struct keytab;

struct keytab *keytab_create(size_t max_keys);
void keytab_destroy(struct keytab *kt);

/*
 * Any thread. Call fn(&value, ctx) under the key's shard lock, with the key's deadline (0 when
 * the key is absent or its deadline has passed at now_us). When fn returns true the new value
 * is stored (a value <= now_us deletes the key). Returns 0, or -ENOSPC when the key is absent,
 * fn wants to store a live value and the table is full (nothing is stored). fn may run twice
 * (again after a sweep made room), each time from the key's stored value: keep it pure.
 */
int keytab_update(struct keytab *kt, const char *key, int64_t now_us,
                  bool (*fn)(int64_t *value, void *ctx), void *ctx)
    __attribute__((warn_unused_result));

/* The key's deadline, or 0 when absent or passed. */
int64_t keytab_get(struct keytab *kt, const char *key, int64_t now_us);

/* Delete keys whose deadline has passed. Returns how many. */
size_t keytab_sweep(struct keytab *kt, int64_t now_us);

/* The table's keyed hash of key (its seed is random per table): to spread what a client names
 * over buckets of one's own without the client choosing where it lands. */
uint64_t keytab_hash(const struct keytab *kt, const char *key);

/* Keys held now (lock-free; may include keys that expired but were not swept yet). */
size_t keytab_count(const struct keytab *kt);

#endif
