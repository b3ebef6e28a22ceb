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
 * A table made with keytab_create_data also keeps a few bytes of the caller's data per key (the
 * shared rate limiter's view of a tenant, rlsync.c); they live and die with the deadline: a key
 * whose deadline has passed is fresh again, its data zeroed.
 *
 * DESIGN: keys are spread over KEYTAB_SHARDS shards by a keyed hash (htable.h), each shard with its
 * own mutex; a caller's update function runs under its key's shard mutex, so read-modify-write of
 * one key is atomic and calls for different shards never contend. The key count is an atomic.
 */
#ifndef BULKHEAD_KEYTAB_H
#define BULKHEAD_KEYTAB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define KEYTAB_SHARDS       64
#define KEYTAB_SWEEP_GAP_US 100000 /* a full shard re-sweeps itself at most every 100 ms */
#define KEYTAB_DATA_MAX     64     /* bytes of caller data per key at most */

struct keytab;

struct keytab *keytab_create(size_t max_keys);
/* The same, each key with data_size (<= KEYTAB_DATA_MAX) bytes of data: see keytab_update_data. */
struct keytab *keytab_create_data(size_t max_keys, size_t data_size);
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

/* keytab_update for a table made by keytab_create_data: fn also gets a copy of the key's data
 * (8-byte aligned; all zero when the deadline is 0), stored back with the deadline when fn
 * returns true. The data is never looked at here: anything it refers to must outlive the key's
 * deadline, since a passed deadline deletes the key with its data. */
int keytab_update_data(struct keytab *kt, const char *key, int64_t now_us,
                       bool (*fn)(int64_t *value, void *data, void *ctx), void *ctx)
    __attribute__((warn_unused_result));

/* The key's deadline, or 0 when absent or passed. */
int64_t keytab_get(struct keytab *kt, const char *key, int64_t now_us);

/* Delete keys whose deadline has passed. Returns how many. */
size_t keytab_sweep(struct keytab *kt, int64_t now_us);

/* Keys held now (lock-free; may include keys that expired but were not swept yet). */
size_t keytab_count(const struct keytab *kt);

#endif
