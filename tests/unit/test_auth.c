/*
 * test_auth: API-key format and hashing (no database). A new key is "bh_" and 43 base64url
 * characters that encode exactly 32 random bytes, never repeated; the stored hash is the
 * lowercase hex SHA-256 of the whole key, checked against the FIPS 180-2 vectors.
 */
#include "auth.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

static const char b64url[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

static int b64_index(char c)
{
    const char *p = c ? strchr(b64url, c) : NULL;
    return p ? (int)(p - b64url) : -1;
}

static void new_key_is_bh_and_43_base64url_chars(void **state)
{
    (void)state;
    for (int round = 0; round < 200; round++) {
        char key[AUTH_KEY_LEN + 1];
        memset(key, '#', sizeof(key));
        assert_int_equal(auth_new_key(key), 0);
        assert_int_equal(strlen(key), AUTH_KEY_LEN);
        assert_int_equal(AUTH_KEY_LEN, 46);
        assert_memory_equal(key, "bh_", 3);
        for (size_t i = 3; i < AUTH_KEY_LEN; i++)
            assert_true(b64_index(key[i]) >= 0); /* no '+', '/', '=' */
        /* 43 characters carry 258 bits: the last one holds 4 bits of the 32nd byte and two
         * zero bits, as a canonical encoding of exactly 32 bytes must. */
        assert_int_equal(b64_index(key[AUTH_KEY_LEN - 1]) & 3, 0);
    }
}

static int cmp_key(const void *a, const void *b)
{
    return strcmp(a, b);
}

static void new_keys_are_distinct_and_use_the_whole_alphabet(void **state)
{
    (void)state;
    enum { N = 1000 };
    char(*keys)[AUTH_KEY_LEN + 1] = calloc(N, sizeof(*keys));
    assert_non_null(keys);
    unsigned seen[64] = {0};
    for (int i = 0; i < N; i++) {
        assert_int_equal(auth_new_key(keys[i]), 0);
        for (size_t j = 3; j < AUTH_KEY_LEN - 1; j++)
            seen[b64_index(keys[i][j])]++;
    }
    qsort(keys, N, sizeof(*keys), cmp_key);
    for (int i = 1; i < N; i++)
        assert_string_not_equal(keys[i - 1], keys[i]);
    /* 42 free characters x 1000 keys: each of the 64 symbols is expected ~656 times. A broken
     * generator (a constant, a narrow alphabet, a counter) misses some entirely. */
    for (int c = 0; c < 64; c++)
        if (seen[c] < 300)
            fail_msg("symbol '%c' seen only %u times", b64url[c], seen[c]);
    free(keys);
}

static void hash_matches_sha256_vectors(void **state)
{
    (void)state;
    static const struct {
        const char *in, *hex;
    } v[] = {
        {"", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
        {"abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
        {"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
         "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"},
        {"bh_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
         "c3f4a5e0f008019860df75f3b8e40d1f2be9393e355016800be393c1411a1f10"},
    };
    for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
        char out[65];
        memset(out, 'X', sizeof(out));
        auth_hash_key(v[i].in, out);
        assert_string_equal(out, v[i].hex);
    }
    /* One million 'a' (FIPS 180-2 long vector). */
    char *million = malloc(1000001);
    assert_non_null(million);
    memset(million, 'a', 1000000);
    million[1000000] = '\0';
    char out[65];
    auth_hash_key(million, out);
    assert_string_equal(out, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
    free(million);
}

static void hash_depends_on_every_byte_of_the_key(void **state)
{
    (void)state;
    char key[AUTH_KEY_LEN + 1], base[65], other[65];
    assert_int_equal(auth_new_key(key), 0);
    auth_hash_key(key, base);
    for (size_t i = 0; i < AUTH_KEY_LEN; i++) {
        char k2[AUTH_KEY_LEN + 1];
        memcpy(k2, key, sizeof(k2));
        k2[i] = k2[i] == 'A' ? 'B' : 'A';
        auth_hash_key(k2, other);
        assert_string_not_equal(base, other);
        for (size_t j = 0; j < 64; j++)
            assert_true((other[j] >= '0' && other[j] <= '9') ||
                        (other[j] >= 'a' && other[j] <= 'f'));
    }
    /* The same key always hashes the same. */
    auth_hash_key(key, other);
    assert_string_equal(base, other);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(new_key_is_bh_and_43_base64url_chars),
        cmocka_unit_test(new_keys_are_distinct_and_use_the_whole_alphabet),
        cmocka_unit_test(hash_matches_sha256_vectors),
        cmocka_unit_test(hash_depends_on_every_byte_of_the_key),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
