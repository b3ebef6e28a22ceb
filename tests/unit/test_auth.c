/*
 * test_auth: API-key format and hashing, and the key table's refresher against PostgreSQL.
 *
 * A new key is "bh_" and 43 base64url characters that encode exactly 32 random bytes, never
 * repeated; the stored hash is the lowercase hex SHA-256 of the whole key, checked against the
 * FIPS 180-2 vectors.
 *
 * The refresher (scripts/test.sh's shared cluster, BH_TEST_PG_PORT; skipped without it) talks
 * to the database through a relay (pgproxy) that can hold back the end of a statement: a
 * notification that reaches it together with the end of a reload is not lost (a revocation
 * takes effect at once, not at the next AUTH_CACHE_TTL_MS), and auth_stop ends a refresher
 * whose reload the database never answers.
 */
#include "auth.h"
#include "mclock.h"
#include "pgproxy.h"
#include "unitdb.h"
#include "tenantdb.h"

#include <errno.h>
#include <libpq-fe.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#define SEC    1000000ll
#define WAIT_S 20 /* bound for any wait on the database or the refresher */

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

/* ---- the refresher ------------------------------------------------------------------------ */

static char url[300]; /* the shared cluster's "bulkhead" database */
static PGconn *admin; /* the test's own connection: makes the changes */

#define NEED_PG() UNITDB_NEED(admin)

static void admin_exec(const char *sql, const char *arg)
{
    PGresult *res = PQexecParams(admin, sql, arg ? 1 : 0, NULL, &arg, NULL, NULL, 0);
    ExecStatusType st = PQresultStatus(res);
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK)
        fail_msg("%s: %s", sql, PQresultErrorMessage(res));
    PQclear(res);
}

/* A live tenant of tier free named name; its new key into key. */
static void tenant_with_key(const char *name, char key[AUTH_KEY_LEN + 1])
{
    char hash[65], sql[400];
    assert_int_equal(auth_new_key(key), 0);
    auth_hash_key(key, hash);
    snprintf(sql, sizeof(sql),
             "INSERT INTO tenants (name, tier, key_hash) VALUES ($1, 'free', '%s') "
             "ON CONFLICT (name) DO UPDATE SET key_hash = excluded.key_hash, revoked_at = NULL",
             hash);
    admin_exec(sql, name);
}

/* Revoke name's key and notify, in one transaction, as tenantdb does. */
static void revoke(const char *name)
{
    admin_exec("WITH r AS (UPDATE tenants SET revoked_at = now() WHERE name = $1 RETURNING name) "
               "SELECT pg_notify('" AUTH_NOTIFY_CHANNEL "', name) FROM r",
               name);
}

static int identify(struct auth *a, const char *key)
{
    struct auth_identity id;
    return auth_identify(a, NULL, key, &id);
}

/* Wait, up to WAIT_S, until key is refused. */
static bool refused_soon(struct auth *a, const char *key)
{
    int64_t end = mclock_now_us() + WAIT_S * SEC;
    while (identify(a, key) != -EACCES && mclock_now_us() < end) {
        struct timespec ts = {0, 5000000};
        nanosleep(&ts, NULL); /* polling interval only */
    }
    return identify(a, key) == -EACCES;
}

/* A relay to the shared cluster, and the URL of the database through it. */
static struct pgproxy *relay(char *purl, size_t len)
{
    struct pgproxy *px = NULL;
    assert_int_equal(pgproxy_start(atoi(getenv("BH_TEST_PG_PORT")), &px), 0);
    snprintf(purl, len,
             "postgresql://postgres@127.0.0.1:%d/bulkhead?sslmode=disable&gssencmode=disable",
             pgproxy_port(px));
    return px;
}

static void a_revocation_notified_during_a_reload_takes_effect_at_once(void **state)
{
    (void)state;
    NEED_PG();
    char ka[AUTH_KEY_LEN + 1], kb[AUTH_KEY_LEN + 1], purl[300], err[300] = "";
    tenant_with_key("authtest-a", ka);
    tenant_with_key("authtest-b", kb);
    struct pgproxy *px = relay(purl, sizeof(purl));
    struct auth *a = NULL;
    /* An hour-long cache: only a notification can bring a revocation within the test. */
    if (auth_start(purl, 3600000, &a, err, sizeof(err)))
        fail_msg("auth_start: %s", err);
    assert_int_equal(identify(a, ka), 0);
    assert_int_equal(identify(a, kb), 0);

    /* The first revocation's notification starts a reload; the reload's SELECT runs to its end
     * in the database, whose last message (ReadyForQuery) the relay holds back. */
    pgproxy_hold(px, 'Z');
    revoke("authtest-a");
    assert_true(pgproxy_wait_held(px, mclock_now_us() + WAIT_S * SEC));
    /* The second revocation commits after the reload's snapshot; its notification ('A') comes
     * behind the held end, and reaches the refresher in the same read as the reload's end. */
    revoke("authtest-b");
    assert_true(pgproxy_wait_queued(px, 'A', mclock_now_us() + WAIT_S * SEC));
    pgproxy_release(px);

    /* Both refused within seconds, not at the next reload an hour later. */
    assert_true(refused_soon(a, kb));
    assert_int_equal(identify(a, ka), -EACCES);
    struct auth_stats st;
    auth_stats(a, &st);
    assert_int_equal(st.reload_failures, 0);
    auth_stop(a);
    pgproxy_stop(px);
}

struct stopper {
    struct auth *a;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool done;
};

static void *stopper_main(void *arg)
{
    struct stopper *s = arg;
    auth_stop(s->a);
    pthread_mutex_lock(&s->mu);
    s->done = true;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

static void stop_ends_a_reload_the_database_never_answers(void **state)
{
    (void)state;
    NEED_PG();
    char key[AUTH_KEY_LEN + 1], purl[300], err[300] = "";
    tenant_with_key("authtest-c", key);
    struct pgproxy *px = relay(purl, sizeof(purl));
    struct auth *a = NULL;
    if (auth_start(purl, 3600000, &a, err, sizeof(err)))
        fail_msg("auth_start: %s", err);
    /* A reload that never ends: its end is held back for good. */
    pgproxy_hold(px, 'Z');
    revoke("authtest-c");
    assert_true(pgproxy_wait_held(px, mclock_now_us() + WAIT_S * SEC));

    /* auth_stop on a thread of its own, so that a refresher stuck in libpq fails the test
     * rather than hanging it. */
    struct stopper s = {.a = a, .done = false};
    pthread_mutex_init(&s.mu, NULL);
    mclock_cond_init(&s.cv);
    pthread_t t;
    int64_t t0 = mclock_now_us();
    assert_int_equal(pthread_create(&t, NULL, stopper_main, &s), 0);
    struct timespec until = mclock_timespec(t0 + WAIT_S * SEC);
    pthread_mutex_lock(&s.mu);
    while (!s.done && pthread_cond_timedwait(&s.cv, &s.mu, &until) != ETIMEDOUT)
        ;
    bool done = s.done;
    pthread_mutex_unlock(&s.mu);
    if (!done)
        fail_msg("auth_stop still waiting for the refresher after %d s", WAIT_S);
    pthread_join(t, NULL);
    print_message("# auth_stop took %.3f s with a reload in flight\n",
                  (double)(mclock_now_us() - t0) / 1e6);
    pthread_cond_destroy(&s.cv);
    pthread_mutex_destroy(&s.mu);
    pgproxy_stop(px);
}

static int group_setup(void **state)
{
    (void)state;
    if (unitdb_open(url, sizeof(url), &admin))
        return -1;
    if (!admin)
        return 0;                                                /* the refresher's tests skip */
    PQclear(PQexec(admin, "SET client_min_messages = warning")); /* no "already exists" */
    size_t len = 0;
    const char *schema = tenantdb_schema(&len);
    char *sql = strndup(schema, len);
    PGresult *res = PQexec(admin, sql);
    free(sql);
    bool ok = PQresultStatus(res) == PGRES_COMMAND_OK;
    PQclear(res);
    res = PQexec(admin, "DELETE FROM tenants WHERE name LIKE 'authtest-%'");
    ok = ok && PQresultStatus(res) == PGRES_COMMAND_OK;
    PQclear(res);
    return ok ? 0 : -1;
}

static int group_teardown(void **state)
{
    (void)state;
    return unitdb_close(&admin);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(new_key_is_bh_and_43_base64url_chars),
        cmocka_unit_test(new_keys_are_distinct_and_use_the_whole_alphabet),
        cmocka_unit_test(hash_matches_sha256_vectors),
        cmocka_unit_test(hash_depends_on_every_byte_of_the_key),
        cmocka_unit_test(a_revocation_notified_during_a_reload_takes_effect_at_once),
        cmocka_unit_test(stop_ends_a_reload_the_database_never_answers),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
