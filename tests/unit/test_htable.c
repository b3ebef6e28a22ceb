/*
 * test_htable: the one hash table (htable.h) and its keyed hash.
 *
 * Covered: insert, find, delete on a few keys (also keys of equal hash, told apart by the
 * owner); a million keys (100,000 under a sanitizer) inserted, found, half deleted, the rest found
 * and walked, the table grown from its smallest size; a walk that removes what it visits; and the
 * reason for the keyed hash: 4,096 tenant ids built to share the low 16 bits of FNV-1a (one bucket
 * of any table up to 65,536 buckets, the shape of a hash-flooding attack on the old tables) spread
 * over the buckets under htable_hash. The output also prints what one hash of a tenant key
 * costs (not asserted: timing belongs to make bench).
 */
#include "compiler.h"
#include "htable.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

/* An owner's entry: the node, its key inside it. */
struct ent {
    struct htable_node node;
    char key[56];
    int value;
};

static struct ent *find(const struct htable *t, const char *key)
{
    uint64_t h = htable_hash_str(key);
    for (struct htable_node *n = htable_first(t, h); n; n = htable_next(n, h)) {
        struct ent *e = container_of(n, struct ent, node);
        if (!strcmp(e->key, key))
            return e;
    }
    return NULL;
}

static void put(struct htable *t, struct ent *e, const char *key, int value)
{
    snprintf(e->key, sizeof(e->key), "%s", key);
    e->value = value;
    htable_insert(t, &e->node, htable_hash_str(key));
}

static void insert_find_and_delete_a_few_keys(void **state)
{
    (void)state;
    struct htable t;
    htable_init(&t, 0);
    assert_null(find(&t, "id:acme")); /* an empty table has no buckets yet */
    struct ent e[3] = {0};
    put(&t, &e[0], "id:acme", 1);
    put(&t, &e[1], "id:globex", 2);
    put(&t, &e[2], "ip:10.0.0.1", 3);
    assert_int_equal(t.count, 3);
    assert_ptr_equal(find(&t, "id:acme"), &e[0]);
    assert_ptr_equal(find(&t, "id:globex"), &e[1]);
    assert_int_equal(find(&t, "ip:10.0.0.1")->value, 3);
    assert_null(find(&t, "id:initech"));
    htable_remove(&t, &e[1].node);
    assert_int_equal(t.count, 2);
    assert_null(find(&t, "id:globex"));
    assert_ptr_equal(find(&t, "id:acme"), &e[0]);
    htable_remove(&t, &e[1].node); /* in no table: nothing happens */
    assert_int_equal(t.count, 2);
    htable_destroy(&t);
}

static void nodes_of_equal_hash_are_each_found_by_their_owners_key(void **state)
{
    (void)state;
    struct htable t;
    htable_init(&t, 0);
    struct ent a = {.key = "a"}, b = {.key = "b"}, c = {.key = "c"};
    htable_insert(&t, &a.node, 42);
    htable_insert(&t, &b.node, 42);
    htable_insert(&t, &c.node, 42 + 8); /* the same bucket, another hash */
    int seen = 0;
    for (struct htable_node *n = htable_first(&t, 42); n; n = htable_next(n, 42)) {
        struct ent *e = container_of(n, struct ent, node);
        assert_true(e == &a || e == &b);
        seen++;
    }
    assert_int_equal(seen, 2);
    assert_ptr_equal(htable_first(&t, 50), &c.node);
    assert_null(htable_next(&c.node, 50));
    htable_remove(&t, &a.node);
    assert_ptr_equal(htable_first(&t, 42), &b.node);
    assert_null(htable_next(&b.node, 42));
    htable_destroy(&t);
}

/* A million keys in the release pass; under a sanitizer 100,000 (its pass checks memory safety,
 * which the smaller table exercises the same way; the million took 48 s under ASan beside the
 * suite). */
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define HT_MANY 100000
#else
#define HT_MANY 1000000
#endif

static void many_keys_are_inserted_found_deleted_and_walked(void **state)
{
    (void)state;
    enum { N = HT_MANY };
    struct ent *e = calloc(N, sizeof(*e));
    assert_non_null(e);
    struct htable t;
    htable_init(&t, 0);
    size_t first_buckets = t.nbuckets;
    char key[32];
    for (int i = 0; i < N; i++) {
        snprintf(key, sizeof(key), "id:tenant-%d", i);
        put(&t, &e[i], key, i);
    }
    assert_int_equal(t.count, N);
    assert_true(t.nbuckets >= N); /* grown: the load stays at most 1 */
    assert_true(t.nbuckets > first_buckets);
    assert_true(htable_longest_chain(&t) <= 16); /* 1e6 keys, 2^20 buckets: about 9 expected */
    /* Each looked up by a copy of its key (the entry's own would do, but a copy proves the
     * comparison is by content). */
    for (int i = 0; i < N; i++) {
        memcpy(key, e[i].key, sizeof(key));
        struct ent *f = find(&t, key);
        if (f != &e[i])
            fail_msg("%s not found", key);
    }
    for (int i = 0; i < N; i += 2)
        htable_remove(&t, &e[i].node);
    assert_int_equal(t.count, N / 2);
    for (int i = 0; i < N; i++) {
        memcpy(key, e[i].key, sizeof(key));
        if (find(&t, key) != (i % 2 ? &e[i] : NULL))
            fail_msg("%s: found %s", key, i % 2 ? "nothing" : "a deleted key");
    }
    /* The walk visits each remaining node once. */
    unsigned char *seen = calloc(N, 1);
    assert_non_null(seen);
    struct htable_iter it;
    htable_iter_init(&it, &t);
    size_t walked = 0;
    for (struct htable_node *n; (n = htable_iter_next(&it)) != NULL; walked++) {
        int v = container_of(n, struct ent, node)->value;
        if (v % 2 == 0 || seen[v])
            fail_msg("walked %d: deleted, or twice", v);
        seen[v] = 1;
    }
    assert_int_equal(walked, N / 2);
    free(seen);
    htable_destroy(&t);
    free(e);
}

static void a_walk_may_remove_and_free_each_node_it_visits(void **state)
{
    (void)state;
    enum { N = 1000 };
    struct htable t;
    htable_init(&t, 0);
    char key[32];
    for (int i = 0; i < N; i++) {
        struct ent *e = calloc(1, sizeof(*e));
        assert_non_null(e);
        snprintf(key, sizeof(key), "k%d", i);
        put(&t, e, key, i);
    }
    struct htable_iter it;
    htable_iter_init(&it, &t);
    int removed = 0, kept = 0;
    for (struct htable_node *n; (n = htable_iter_next(&it)) != NULL;) {
        struct ent *e = container_of(n, struct ent, node);
        if (e->value % 3 == 0) {
            htable_remove(&t, n);
            free(e); /* the owner frees: the walk has already moved on */
            removed++;
        } else {
            kept++;
        }
    }
    assert_int_equal(removed, (N + 2) / 3);
    assert_int_equal(t.count, (size_t)kept);
    for (int i = 0; i < N; i++) {
        snprintf(key, sizeof(key), "k%d", i);
        struct ent *e = find(&t, key);
        assert_true(i % 3 == 0 ? e == NULL : e != NULL);
    }
    htable_iter_init(&it, &t);
    for (struct htable_node *n; (n = htable_iter_next(&it)) != NULL;) {
        htable_remove(&t, n);
        free(container_of(n, struct ent, node));
    }
    assert_int_equal(t.count, 0);
    htable_destroy(&t);
}

/* 64-bit FNV-1a from the offset basis: what the old tables hashed tenant ids with. */
static uint64_t fnv1a_step(uint64_t h, const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)p[i];
        h *= 1099511628211ull;
    }
    return h;
}

/* Two 4-character blocks that bring FNV-1a's low 16 bits from *low to the same value (a
 * birthday search: xor and multiplication carry only upward, so the low 16 bits of the state
 * depend on the low 16 bits before and nothing else). Advances *low past the pair. */
static void fnv1a_collide(uint16_t *low, char a[4], char b[4])
{
    static int32_t seen[65536];
    static const char alnum[] = "abcdefghijklmnopqrstuvwxyz0123456789";
    memset(seen, -1, sizeof(seen));
    for (int32_t i = 0;; i++) {
        char blk[4];
        int32_t v = i;
        for (int k = 0; k < 4; k++, v /= 36)
            blk[k] = alnum[v % 36];
        uint16_t out = (uint16_t)fnv1a_step(*low, blk, 4);
        if (seen[out] >= 0) {
            int32_t w = seen[out];
            for (int k = 0; k < 4; k++, w /= 36)
                a[k] = alnum[w % 36];
            memcpy(b, blk, 4);
            *low = out;
            return;
        }
        seen[out] = i;
    }
}

static void ids_that_collide_under_fnv1a_spread_under_the_keyed_hash(void **state)
{
    (void)state;
    enum { BLOCKS = 12, N = 1 << BLOCKS };
    /* Joux's multicollision: a pair per block, each from the state the last pair reached, so
     * each of the 2^12 choices of one block of every pair ends in the same low 16 bits. */
    char pair[BLOCKS][2][4];
    uint16_t low = (uint16_t)fnv1a_step(14695981039346656037ull, "id:", 3);
    for (int b = 0; b < BLOCKS; b++)
        fnv1a_collide(&low, pair[b][0], pair[b][1]);
    struct ent *e = calloc(N, sizeof(*e));
    assert_non_null(e);
    struct htable t;
    htable_init(&t, 0);
    for (int i = 0; i < N; i++) {
        char key[3 + 4 * BLOCKS + 1] = "id:";
        for (int b = 0; b < BLOCKS; b++)
            memcpy(key + 3 + 4 * b, pair[b][(i >> b) & 1], 4);
        key[sizeof(key) - 1] = '\0';
        uint64_t fnv = fnv1a_step(14695981039346656037ull, key, strlen(key));
        assert_int_equal(fnv & 0xffff, low); /* one bucket under FNV-1a */
        put(&t, &e[i], key, i);
    }
    assert_int_equal(t.count, N);
    for (int i = 1; i < N; i++)
        assert_string_not_equal(e[i].key, e[0].key);
    /* Under the keyed hash: N keys in N buckets, about 7 in the fullest one (16 would be a
     * chance below 1e-9); under FNV-1a all 4,096 would share one chain. */
    size_t used = 0;
    for (size_t b = 0; b < t.nbuckets; b++)
        used += t.buckets[b] != NULL;
    printf("# %d FNV-1a-colliding ids: %zu of %zu buckets used, longest chain %zu\n", N, used,
           t.nbuckets, htable_longest_chain(&t));
    assert_true(htable_longest_chain(&t) <= 16);
    assert_true(used >= t.nbuckets / 2); /* about 63 % expected */
    htable_destroy(&t);
    free(e);
}

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

/* Printed, not asserted: what one hash of a tenant key costs, against the old FNV-1a. */
static void the_cost_of_one_hash_is_printed(void **state)
{
    (void)state;
    enum { N = 200000 };
    const char *key = "id:tenant-000123";
    size_t len = strlen(key);
    volatile uint64_t sink = 0;
    double t0 = now_ns();
    for (int i = 0; i < N; i++)
        sink += htable_hash(key, len);
    double t1 = now_ns();
    for (int i = 0; i < N; i++)
        sink += fnv1a_step(14695981039346656037ull ^ (uint64_t)i, key, len);
    double t2 = now_ns();
    printf("# hash of \"%s\": SipHash-2-4 %.1f ns, FNV-1a %.1f ns\n", key, (t1 - t0) / N,
           (t2 - t1) / N);
    (void)sink;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(insert_find_and_delete_a_few_keys),
        cmocka_unit_test(nodes_of_equal_hash_are_each_found_by_their_owners_key),
        cmocka_unit_test(many_keys_are_inserted_found_deleted_and_walked),
        cmocka_unit_test(a_walk_may_remove_and_free_each_node_it_visits),
        cmocka_unit_test(ids_that_collide_under_fnv1a_spread_under_the_keyed_hash),
        cmocka_unit_test(the_cost_of_one_hash_is_printed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
