/*
 * ratelimit: GCRA over a sharded, capped hash table (see ratelimit.h for the semantics).
 *
 * The arithmetic is integer microseconds: emission interval T = window / limit, burst tolerance
 * tau = (limit - 1) * T, so exactly `limit` requests pass at once whatever the rounding of T.
 */
#include "ratelimit.h"
#include "mclock.h"
#include "xalloc.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#define RL_SHARDS       64
#define RL_SWEEP_GAP_US 100000 /* a full shard re-sweeps itself at most every 100 ms */

struct rl_entry {
    struct rl_entry *next; /* hash chain */
    uint64_t hash;
    int64_t tat; /* theoretical arrival time, monotonic us */
    char key[];  /* NUL-terminated */
};

struct rl_shard {
    pthread_mutex_t mutex; /* guards the fields below */
    struct rl_entry **buckets;
    size_t nbuckets; /* power of two */
    size_t count;    /* entries in this shard */
    int64_t last_sweep_us;
    char pad[64]; /* keep neighbouring shards' mutexes off one cache line */
};

struct ratelimit {
    _Atomic int64_t limit, window_s; /* read per request; written by ratelimit_set */
    uint64_t seed;
    size_t max_keys; /* bound on `keys`, over all shards */
    struct rl_shard shards[RL_SHARDS];
    pthread_mutex_t overflow_mutex; /* guards overflow_tat */
    int64_t overflow_tat;
    atomic_uint_least64_t allowed, rejected, overflow;
    atomic_size_t keys; /* entries in all shards; a new entry reserves its place here first */
};

void ratelimit_gcra(int64_t limit, int64_t window_s, int64_t *tat, int64_t now_us,
                    struct ratelimit_result *out)
{
    int64_t T = window_s * 1000000 / limit;
    if (T < 1)
        T = 1;
    int64_t tau = (limit - 1) * T;
    int64_t cur = *tat > now_us ? *tat : now_us;
    out->limit = limit;
    if (now_us < cur - tau) {
        out->allowed = false;
        out->remaining = 0;
        out->retry_after_us = cur - tau - now_us;
        out->reset_us = cur - now_us;
        return;
    }
    int64_t next = cur + T;
    *tat = next;
    int64_t diff = now_us + tau - next;
    out->allowed = true;
    out->remaining = diff < 0 ? 0 : diff / T + 1;
    out->retry_after_us = 0;
    out->reset_us = next - now_us;
}

struct ratelimit *ratelimit_create(int64_t limit, int64_t window_s, size_t max_keys)
{
    struct ratelimit *rl = xcalloc(1, sizeof(*rl));
    atomic_store(&rl->limit, limit);
    atomic_store(&rl->window_s, window_s);
    if (getrandom(&rl->seed, sizeof(rl->seed), 0) != sizeof(rl->seed))
        rl->seed = (uint64_t)mclock_wall_us();
    rl->max_keys = max_keys;
    size_t per = (max_keys + RL_SHARDS - 1) / RL_SHARDS; /* expected entries per shard */
    size_t nb = 16;
    while (nb < per)
        nb *= 2;
    for (int i = 0; i < RL_SHARDS; i++) {
        struct rl_shard *s = &rl->shards[i];
        pthread_mutex_init(&s->mutex, NULL);
        s->nbuckets = nb;
        /* Buckets are allocated on first use: an unlimited or idle tier costs nothing. */
        s->buckets = NULL;
    }
    pthread_mutex_init(&rl->overflow_mutex, NULL);
    return rl;
}

void ratelimit_destroy(struct ratelimit *rl)
{
    if (!rl)
        return;
    for (int i = 0; i < RL_SHARDS; i++) {
        struct rl_shard *s = &rl->shards[i];
        for (size_t b = 0; s->buckets && b < s->nbuckets; b++) {
            struct rl_entry *e = s->buckets[b];
            while (e) {
                struct rl_entry *next = e->next;
                free(e);
                e = next;
            }
        }
        free(s->buckets);
        pthread_mutex_destroy(&s->mutex);
    }
    pthread_mutex_destroy(&rl->overflow_mutex);
    free(rl);
}

void ratelimit_set(struct ratelimit *rl, int64_t limit, int64_t window_s)
{
    atomic_store(&rl->limit, limit);
    atomic_store(&rl->window_s, window_s);
}

static uint64_t rl_hash(uint64_t seed, const char *key)
{
    uint64_t h = 1469598103934665603ull ^ seed;
    for (const unsigned char *p = (const unsigned char *)key; *p; p++) {
        h ^= *p;
        h *= 1099511628211ull;
    }
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ull;
    h ^= h >> 33;
    return h;
}

/* Delete entries whose TAT has passed. Shard mutex held. */
static size_t rl_shard_sweep(struct ratelimit *rl, struct rl_shard *s, int64_t now_us)
{
    size_t freed = 0;
    s->last_sweep_us = now_us;
    for (size_t b = 0; s->buckets && b < s->nbuckets; b++) {
        struct rl_entry **pp = &s->buckets[b];
        while (*pp) {
            struct rl_entry *e = *pp;
            if (e->tat <= now_us) {
                *pp = e->next;
                free(e);
                freed++;
            } else {
                pp = &e->next;
            }
        }
    }
    s->count -= freed;
    atomic_fetch_sub_explicit(&rl->keys, freed, memory_order_relaxed);
    return freed;
}

/* Take one of the max_keys places for a new entry; false when the table is full. The bound is
 * global and exact: shards fill unevenly, so a per-shard quota would round it up or down. */
static bool rl_reserve_key(struct ratelimit *rl)
{
    size_t n = atomic_load_explicit(&rl->keys, memory_order_relaxed);
    while (n < rl->max_keys)
        if (atomic_compare_exchange_weak_explicit(&rl->keys, &n, n + 1, memory_order_relaxed,
                                                  memory_order_relaxed))
            return true;
    return false;
}

void ratelimit_check(struct ratelimit *rl, const char *key, int64_t now_us,
                     struct ratelimit_result *out)
{
    int64_t limit = atomic_load_explicit(&rl->limit, memory_order_relaxed);
    int64_t window_s = atomic_load_explicit(&rl->window_s, memory_order_relaxed);
    if (limit <= 0) {
        memset(out, 0, sizeof(*out));
        out->allowed = true;
        return;
    }
    uint64_t h = rl_hash(rl->seed, key);
    struct rl_shard *s = &rl->shards[h % RL_SHARDS];
    pthread_mutex_lock(&s->mutex);
    if (!s->buckets)
        s->buckets = xcalloc(s->nbuckets, sizeof(*s->buckets));
    size_t b = (h / RL_SHARDS) & (s->nbuckets - 1);
    struct rl_entry *e = s->buckets[b];
    while (e && (e->hash != h || strcmp(e->key, key) != 0))
        e = e->next;
    if (!e && atomic_load_explicit(&rl->keys, memory_order_relaxed) >= rl->max_keys &&
        now_us - s->last_sweep_us >= RL_SWEEP_GAP_US)
        rl_shard_sweep(rl, s, now_us);
    if (!e && rl_reserve_key(rl)) {
        size_t klen = strlen(key);
        e = xmalloc(sizeof(*e) + klen + 1);
        memcpy(e->key, key, klen + 1);
        e->hash = h;
        e->tat = 0;
        e->next = s->buckets[b];
        s->buckets[b] = e;
        s->count++;
    }
    if (e) {
        ratelimit_gcra(limit, window_s, &e->tat, now_us, out);
        pthread_mutex_unlock(&s->mutex);
    } else {
        /* Table full: this key shares the overflow bucket with every other untracked key. */
        pthread_mutex_unlock(&s->mutex);
        atomic_fetch_add_explicit(&rl->overflow, 1, memory_order_relaxed);
        pthread_mutex_lock(&rl->overflow_mutex);
        ratelimit_gcra(limit, window_s, &rl->overflow_tat, now_us, out);
        pthread_mutex_unlock(&rl->overflow_mutex);
    }
    ratelimit_count(rl, out->allowed);
}

void ratelimit_count(struct ratelimit *rl, bool allowed)
{
    atomic_fetch_add_explicit(allowed ? &rl->allowed : &rl->rejected, 1, memory_order_relaxed);
}

size_t ratelimit_sweep(struct ratelimit *rl, int64_t now_us)
{
    size_t freed = 0;
    for (int i = 0; i < RL_SHARDS; i++) {
        struct rl_shard *s = &rl->shards[i];
        pthread_mutex_lock(&s->mutex);
        if (s->count)
            freed += rl_shard_sweep(rl, s, now_us);
        pthread_mutex_unlock(&s->mutex);
    }
    return freed;
}

void ratelimit_stats(struct ratelimit *rl, struct ratelimit_stats *out)
{
    out->limit = atomic_load(&rl->limit);
    out->window_s = atomic_load(&rl->window_s);
    out->allowed = atomic_load_explicit(&rl->allowed, memory_order_relaxed);
    out->rejected = atomic_load_explicit(&rl->rejected, memory_order_relaxed);
    out->overflow = atomic_load_explicit(&rl->overflow, memory_order_relaxed);
    out->keys = atomic_load_explicit(&rl->keys, memory_order_relaxed);
}
