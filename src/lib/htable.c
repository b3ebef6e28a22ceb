/*
 * htable: an intrusive chained hash table with a keyed hash (see htable.h).
 *
 * A bucket is the low bits of the hash, a chain is doubly linked through pprev (the Linux
 * hlist shape), so removal needs no walk. Growth rehashes every node into twice the buckets at
 * once: an owner's table is small (a shard of keytab, a tier's active tenants), and one
 * rehash of n nodes every n inserts keeps inserts O(1) amortised.
 */
#include "htable.h"
#include "xalloc.h"

#include <pthread.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>

#define HTABLE_MIN_BUCKETS 8

static unsigned char htable_key[crypto_shorthash_KEYBYTES];
static pthread_once_t htable_key_once = PTHREAD_ONCE_INIT;

static void htable_key_init(void)
{
    if (sodium_init() < 0) {
        fprintf(stderr, "htable: libsodium failed to initialise\n");
        abort(); /* no random key: no hash fit for client-chosen keys */
    }
    randombytes_buf(htable_key, sizeof(htable_key));
}

uint64_t htable_hash(const void *key, size_t len)
{
    pthread_once(&htable_key_once, htable_key_init);
    unsigned char out[crypto_shorthash_BYTES];
    crypto_shorthash(out, key, len, htable_key);
    uint64_t h;
    memcpy(&h, out, sizeof(h));
    return h;
}

void htable_init(struct htable *t, size_t min_buckets)
{
    size_t nb = HTABLE_MIN_BUCKETS;
    while (nb < min_buckets)
        nb *= 2;
    *t = (struct htable){.nbuckets = nb};
}

void htable_destroy(struct htable *t)
{
    free(t->buckets);
    t->buckets = NULL;
    t->count = 0;
}

static void htable_link(struct htable_node **head, struct htable_node *n)
{
    n->next = *head;
    if (n->next)
        n->next->pprev = &n->next;
    n->pprev = head;
    *head = n;
}

static void htable_grow(struct htable *t)
{
    size_t nb = t->nbuckets * 2;
    struct htable_node **b = xcalloc(nb, sizeof(*b));
    for (size_t i = 0; i < t->nbuckets; i++) {
        struct htable_node *n = t->buckets[i];
        while (n) {
            struct htable_node *next = n->next;
            htable_link(&b[n->hash & (nb - 1)], n);
            n = next;
        }
    }
    free(t->buckets);
    t->buckets = b;
    t->nbuckets = nb;
}

void htable_insert(struct htable *t, struct htable_node *n, uint64_t hash)
{
    if (!t->buckets)
        t->buckets = xcalloc(t->nbuckets, sizeof(*t->buckets));
    else if (t->count >= t->nbuckets)
        htable_grow(t);
    n->hash = hash;
    htable_link(&t->buckets[hash & (t->nbuckets - 1)], n);
    t->count++;
}

void htable_remove(struct htable *t, struct htable_node *n)
{
    if (!n->pprev)
        return;
    *n->pprev = n->next;
    if (n->next)
        n->next->pprev = n->pprev;
    n->next = NULL;
    n->pprev = NULL;
    t->count--;
}

struct htable_node *htable_first(const struct htable *t, uint64_t hash)
{
    if (!t->buckets)
        return NULL;
    struct htable_node *n = t->buckets[hash & (t->nbuckets - 1)];
    while (n && n->hash != hash)
        n = n->next;
    return n;
}

struct htable_node *htable_next(const struct htable_node *n, uint64_t hash)
{
    struct htable_node *m = n->next;
    while (m && m->hash != hash)
        m = m->next;
    return m;
}

void htable_iter_init(struct htable_iter *it, const struct htable *t)
{
    *it = (struct htable_iter){.t = t};
}

struct htable_node *htable_iter_next(struct htable_iter *it)
{
    const struct htable *t = it->t;
    while (!it->next && t->buckets && it->bucket < t->nbuckets)
        it->next = t->buckets[it->bucket++];
    struct htable_node *n = it->next;
    if (n)
        it->next = n->next;
    return n;
}

size_t htable_longest_chain(const struct htable *t)
{
    size_t longest = 0;
    for (size_t i = 0; t->buckets && i < t->nbuckets; i++) {
        size_t len = 0;
        for (const struct htable_node *n = t->buckets[i]; n; n = n->next)
            len++;
        if (len > longest)
            longest = len;
    }
    return longest;
}
