/*
 * htable: the one hash table of the server (the rate limiter's and the tarpit's keytab, the fair
 * queue's tenants), and the keyed hash every table of client-chosen keys uses.
 *
 * Chained and intrusive: an entry embeds a struct htable_node, found back with container_of.
 * The table owns only its bucket array; entries, and the keys inside them, belong to the
 * owner, who allocates, inserts, removes and frees them (htable_destroy frees the buckets
 * alone). Chaining, not open addressing, because owners keep pointers to their entries (a
 * queued item points at its tenant) that must not move when the table grows, and because a
 * node unlinks itself in O(1) with no tombstones, also while the table is walked. The buckets
 * double when entries outnumber them (load factor at most 1) and never shrink: every owner
 * bounds its entries. Not thread-safe: the owner's lock guards the table.
 *
 * htable_hash is SipHash-2-4 (libsodium's crypto_shorthash) under a key drawn once per process
 * from randombytes_buf: a client that names tenants cannot make their ids collide in a bucket
 * without knowing the key, which FNV-1a (unkeyed, or merely seeded) does not prevent.
 */
#ifndef BULKHEAD_HTABLE_H
#define BULKHEAD_HTABLE_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

struct htable_node {
    struct htable_node *next;   /* the bucket's chain */
    struct htable_node **pprev; /* what points at this node: O(1) removal; NULL: not in a table */
    uint64_t hash;              /* htable_hash of the owner's key */
};

struct htable {
    struct htable_node **buckets; /* owned; NULL until the first insert */
    size_t nbuckets;              /* power of two */
    size_t count;                 /* nodes linked */
};

/* An empty table that will start with about min_buckets buckets (allocated on first insert). */
void htable_init(struct htable *t, size_t min_buckets);
/* Free the buckets. The nodes are the owner's: remove or free them before or after. */
void htable_destroy(struct htable *t);

/* The keyed hash of len bytes (thread-safe; the process key is drawn on first use). */
uint64_t htable_hash(const void *key, size_t len);
static inline uint64_t htable_hash_str(const char *s)
{
    return htable_hash(s, strlen(s));
}

/* Link n with hash (grows the table when needed). n must not be in a table. */
void htable_insert(struct htable *t, struct htable_node *n, uint64_t hash);
/* Unlink n from the table it is in (O(1)); a node in no table is left alone. */
void htable_remove(struct htable *t, struct htable_node *n);

/* The first node whose hash is hash, then the next after n with it, or NULL: the owner compares
 * keys (for (n = htable_first(t, h); n; n = htable_next(n, h)) if (key of n equals) ...). */
struct htable_node *htable_first(const struct htable *t, uint64_t hash);
struct htable_node *htable_next(const struct htable_node *n, uint64_t hash);

/* Every node once, in no given order. The node just returned may be removed (and freed) before
 * the next call; inserting while walking is not allowed (it may grow the table). */
struct htable_iter {
    const struct htable *t;
    size_t bucket;            /* the next bucket to start */
    struct htable_node *next; /* the next node to return, or NULL: start the next bucket */
};
void htable_iter_init(struct htable_iter *it, const struct htable *t);
struct htable_node *htable_iter_next(struct htable_iter *it);

/* The longest chain (a linear walk: for tests and diagnostics). */
size_t htable_longest_chain(const struct htable *t);

#endif
