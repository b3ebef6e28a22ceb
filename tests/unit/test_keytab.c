/*
 * test_keytab: the bounded table of expiring keys (keytab.h), on explicit times.
 *
 * A key's deadline reads back until it passes and then reads as absent; storing a passed
 * deadline deletes the key; the bound is exact, also when threads race to add keys; a full table
 * makes room from its own expired keys; a sweep frees only what has expired.
 */
#include "keytab.h"

#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <cmocka.h>

#define S 1000000ll

static bool set_to(int64_t *value, void *ctx)
{
    *value = *(const int64_t *)ctx;
    return true;
}

static int put(struct keytab *kt, const char *key, int64_t now, int64_t deadline)
{
    return keytab_update(kt, key, now, set_to, &deadline);
}

static void a_deadline_reads_back_until_it_passes(void **state)
{
    (void)state;
    struct keytab *kt = keytab_create(8);
    assert_int_equal(put(kt, "a", 10 * S, 12 * S), 0);
    assert_int_equal(keytab_get(kt, "a", 10 * S), 12 * S);
    assert_int_equal(keytab_get(kt, "a", 12 * S - 1), 12 * S);
    assert_int_equal(keytab_get(kt, "a", 12 * S), 0); /* passed: no information */
    assert_int_equal(keytab_get(kt, "b", 10 * S), 0);
    /* Storing a deadline that has passed deletes the key. */
    assert_int_equal(put(kt, "a", 11 * S, 5 * S), 0);
    assert_int_equal(keytab_count(kt), 0);
    keytab_destroy(kt);
}

static void the_bound_is_exact_and_expired_keys_make_room(void **state)
{
    (void)state;
    struct keytab *kt = keytab_create(100);
    char key[32];
    for (int i = 0; i < 100; i++) {
        snprintf(key, sizeof(key), "k%d", i);
        assert_int_equal(put(kt, key, 1 * S, 2 * S), 0);
    }
    assert_int_equal(keytab_count(kt), 100);
    assert_int_equal(put(kt, "one-too-many", 1 * S, 2 * S), -ENOSPC);
    assert_int_equal(keytab_get(kt, "one-too-many", 1 * S), 0);
    /* Existing keys still update while full. */
    assert_int_equal(put(kt, "k7", 1 * S, 3 * S), 0);
    /* Once deadlines pass, a full shard sweeps itself before refusing: the new key fits. */
    assert_int_equal(put(kt, "late", 2 * S, 4 * S), 0);
    assert_int_equal(keytab_get(kt, "late", 2 * S), 4 * S);
    assert_int_equal(keytab_get(kt, "k7", 2 * S), 3 * S);
    keytab_destroy(kt);
}

static void a_sweep_frees_only_expired_keys(void **state)
{
    (void)state;
    struct keytab *kt = keytab_create(1000);
    char key[32];
    for (int i = 0; i < 300; i++) {
        snprintf(key, sizeof(key), "k%d", i);
        assert_int_equal(put(kt, key, 0, i < 200 ? 5 * S : 9 * S), 0);
    }
    assert_int_equal(keytab_sweep(kt, 5 * S - 1), 0);
    assert_int_equal(keytab_sweep(kt, 5 * S), 200);
    assert_int_equal(keytab_count(kt), 100);
    assert_int_equal(keytab_sweep(kt, 9 * S), 100);
    assert_int_equal(keytab_count(kt), 0);
    keytab_destroy(kt);
}

struct racer {
    struct keytab *kt;
    int id;
    int stored;
};

static void *racer_main(void *arg)
{
    struct racer *r = arg;
    char key[32];
    for (int i = 0; i < 2000; i++) {
        snprintf(key, sizeof(key), "t%d-%d", r->id, i);
        r->stored += put(r->kt, key, 1, 100 * S) == 0;
    }
    return NULL;
}

static void threads_racing_for_places_never_pass_the_bound(void **state)
{
    (void)state;
    struct keytab *kt = keytab_create(1500);
    struct racer r[4];
    pthread_t t[4];
    for (int i = 0; i < 4; i++) {
        r[i] = (struct racer){.kt = kt, .id = i};
        pthread_create(&t[i], NULL, racer_main, &r[i]);
    }
    int stored = 0;
    for (int i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
        stored += r[i].stored;
    }
    assert_int_equal(stored, 1500);
    assert_int_equal(keytab_count(kt), 1500);
    keytab_destroy(kt);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(a_deadline_reads_back_until_it_passes),
        cmocka_unit_test(the_bound_is_exact_and_expired_keys_make_room),
        cmocka_unit_test(a_sweep_frees_only_expired_keys),
        cmocka_unit_test(threads_racing_for_places_never_pass_the_bound),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
