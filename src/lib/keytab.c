/*
 * keytab: a shard is an htable (htable.h) under its own mutex; the bound is global and exact
 * (see keytab.h). The shard is the hash's top bits, the bucket its low bits (htable's), so the
 * two choices do not correlate.
 */
#include "keytab.h"
#include "compiler.h"
#include "htable.h"
#include "xalloc.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

/* Allocated and freed here, with its key and data inside it. */
struct kt_entry {
    struct htable_node node; /* in its shard's table */
    int64_t value;           /* deadline, monotonic us */
    unsigned char tail[]; /* the table's data_size bytes of data, then the key (NUL-terminated) */
};

struct kt_shard {
    pthread_mutex_t mutex; /* guards the fields below */
    struct htable tab;     /* its entries; buckets allocated on first use: an idle table is free */
    int64_t last_sweep_us;
    char pad[64]; /* keep neighbouring shards' mutexes off one cache line */
};

struct keytab {
    size_t max_keys;  /* bound on `keys`, over all shards */
    size_t data_size; /* bytes of caller data per entry, a multiple of 8 */
    struct kt_shard shards[KEYTAB_SHARDS];
    atomic_size_t keys; /* entries in all shards; a new entry reserves its place here first */
    _Atomic int64_t last_full_sweep_us; /* the last sweep of every shard on a full table */
};

static const char *kt_key(const struct keytab *kt, const struct kt_entry *e)
{
    return (const char *)e->tail + kt->data_size;
}

struct keytab *keytab_create(size_t max_keys)
{
    return keytab_create_data(max_keys, 0);
}

struct keytab *keytab_create_data(size_t max_keys, size_t data_size)
{
    if (data_size > KEYTAB_DATA_MAX)
        abort(); /* a programming error: the update copies the data through the stack */
    struct keytab *kt = xcalloc(1, sizeof(*kt));
    kt->data_size = (data_size + 7) & ~(size_t)7;
    kt->max_keys = max_keys;
    for (int i = 0; i < KEYTAB_SHARDS; i++) {
        pthread_mutex_init(&kt->shards[i].mutex, NULL);
        htable_init(&kt->shards[i].tab, 16);
    }
    return kt;
}

void keytab_destroy(struct keytab *kt)
{
    if (!kt)
        return;
    for (int i = 0; i < KEYTAB_SHARDS; i++) {
        struct kt_shard *s = &kt->shards[i];
        struct htable_iter it;
        htable_iter_init(&it, &s->tab);
        for (struct htable_node *n; (n = htable_iter_next(&it)) != NULL;)
            free(container_of(n, struct kt_entry, node));
        htable_destroy(&s->tab);
        pthread_mutex_destroy(&s->mutex);
    }
    free(kt);
}

static struct kt_shard *kt_shard_of(struct keytab *kt, uint64_t h)
{
    return &kt->shards[(h >> 32) % KEYTAB_SHARDS];
}

/* Delete entries whose deadline has passed. Shard mutex held. */
static size_t kt_shard_sweep(struct keytab *kt, struct kt_shard *s, int64_t now_us)
{
    size_t freed = 0;
    s->last_sweep_us = now_us;
    struct htable_iter it;
    htable_iter_init(&it, &s->tab);
    for (struct htable_node *n; (n = htable_iter_next(&it)) != NULL;) {
        struct kt_entry *e = container_of(n, struct kt_entry, node);
        if (e->value <= now_us) {
            htable_remove(&s->tab, n);
            free(e);
            freed++;
        }
    }
    atomic_fetch_sub_explicit(&kt->keys, freed, memory_order_relaxed);
    return freed;
}

/* Take one of the max_keys places for a new entry; false when the table is full. The bound is
 * global and exact: shards fill unevenly, so a per-shard quota would round it up or down. */
static bool kt_reserve(struct keytab *kt)
{
    size_t n = atomic_load_explicit(&kt->keys, memory_order_relaxed);
    while (n < kt->max_keys)
        if (atomic_compare_exchange_weak_explicit(&kt->keys, &n, n + 1, memory_order_relaxed,
                                                  memory_order_relaxed))
            return true;
    return false;
}

/* The entry of key in s, or NULL. Shard mutex held. */
static struct kt_entry *kt_find(const struct keytab *kt, struct kt_shard *s, uint64_t h,
                                const char *key)
{
    for (struct htable_node *n = htable_first(&s->tab, h); n; n = htable_next(n, h)) {
        struct kt_entry *e = container_of(n, struct kt_entry, node);
        if (!strcmp(kt_key(kt, e), key))
            return e;
    }
    return NULL;
}

/* One attempt of keytab_update_data, with its shard's own sweep when the table is full. */
static int kt_update_once(struct keytab *kt, const char *key, uint64_t h, int64_t now_us,
                          bool (*fn)(int64_t *value, void *data, void *ctx), void *ctx)
{
    struct kt_shard *s = kt_shard_of(kt, h);
    _Alignas(8) unsigned char data[KEYTAB_DATA_MAX];
    pthread_mutex_lock(&s->mutex);
    struct kt_entry *e = kt_find(kt, s, h, key);
    bool live = e && e->value > now_us;
    int64_t v = live ? e->value : 0;
    if (live)
        memcpy(data, e->tail, kt->data_size);
    else
        memset(data, 0, kt->data_size);
    int rc = 0;
    if (!fn(&v, data, ctx)) {
        /* nothing to store */
    } else if (e && v > now_us) {
        e->value = v;
        memcpy(e->tail, data, kt->data_size);
    } else if (e) {
        htable_remove(&s->tab, &e->node); /* no information left: delete */
        free(e);
        atomic_fetch_sub_explicit(&kt->keys, 1, memory_order_relaxed);
    } else if (v > now_us) {
        bool placed = kt_reserve(kt);
        if (!placed && now_us - s->last_sweep_us >= KEYTAB_SWEEP_GAP_US) {
            kt_shard_sweep(kt, s, now_us);
            placed = kt_reserve(kt);
        }
        if (placed) {
            size_t klen = strlen(key);
            e = xmalloc(sizeof(*e) + kt->data_size + klen + 1);
            memcpy(e->tail, data, kt->data_size);
            memcpy(e->tail + kt->data_size, key, klen + 1);
            e->value = v;
            htable_insert(&s->tab, &e->node, h);
        } else {
            rc = -ENOSPC;
        }
    }
    pthread_mutex_unlock(&s->mutex);
    return rc;
}

/* Whether this caller may sweep every shard now (one caller per KEYTAB_SWEEP_GAP_US). */
static bool kt_claim_full_sweep(struct keytab *kt, int64_t now_us)
{
    int64_t last = atomic_load_explicit(&kt->last_full_sweep_us, memory_order_relaxed);
    return now_us - last >= KEYTAB_SWEEP_GAP_US &&
           atomic_compare_exchange_strong_explicit(&kt->last_full_sweep_us, &last, now_us,
                                                   memory_order_relaxed, memory_order_relaxed);
}

int keytab_update_data(struct keytab *kt, const char *key, int64_t now_us,
                       bool (*fn)(int64_t *value, void *data, void *ctx), void *ctx)
{
    uint64_t h = htable_hash_str(key);
    int rc = kt_update_once(kt, key, h, now_us, fn, ctx);
    /* Full, and this key's shard had nothing to give back: the dead keys may sit in other
     * shards. Sweep them all (no shard lock held, so no lock order to keep) and try again. */
    if (rc == -ENOSPC && kt_claim_full_sweep(kt, now_us) && keytab_sweep(kt, now_us) > 0)
        rc = kt_update_once(kt, key, h, now_us, fn, ctx);
    return rc;
}

/* keytab_update's function, called through keytab_update_data. */
struct kt_plain {
    bool (*fn)(int64_t *value, void *ctx);
    void *ctx;
};

static bool kt_plain_step(int64_t *value, void *data, void *ctx)
{
    (void)data;
    struct kt_plain *p = ctx;
    return p->fn(value, p->ctx);
}

int keytab_update(struct keytab *kt, const char *key, int64_t now_us,
                  bool (*fn)(int64_t *value, void *ctx), void *ctx)
{
    struct kt_plain p = {fn, ctx};
    return keytab_update_data(kt, key, now_us, kt_plain_step, &p);
}

static bool kt_keep(int64_t *value, void *ctx)
{
    *(int64_t *)ctx = *value;
    return false;
}

int64_t keytab_get(struct keytab *kt, const char *key, int64_t now_us)
{
    int64_t v = 0;
    if (keytab_update(kt, key, now_us, kt_keep, &v))
        return 0;
    return v;
}

size_t keytab_sweep(struct keytab *kt, int64_t now_us)
{
    size_t freed = 0;
    for (int i = 0; i < KEYTAB_SHARDS; i++) {
        struct kt_shard *s = &kt->shards[i];
        pthread_mutex_lock(&s->mutex);
        if (s->tab.count)
            freed += kt_shard_sweep(kt, s, now_us);
        pthread_mutex_unlock(&s->mutex);
    }
    return freed;
}

size_t keytab_count(const struct keytab *kt)
{
    return atomic_load_explicit(&kt->keys, memory_order_relaxed);
}
