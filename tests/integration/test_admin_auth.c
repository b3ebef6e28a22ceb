/*
 * test_admin_auth: around the admin API's keys and token, through two instances of the real
 * binary on one database and one Redis (fixture: adminfx): an older database gains the schema
 * at start; failed admin authentications are limited per client address (a correct token from a
 * limited address is refused too, without being compared; another address is not affected, and
 * the limit lifts by itself); an instance with an hour-long key cache still refuses two keys
 * revoked back to back, the second while the first one's reload runs, within seconds (the test
 * allows 30: a 50,000-key reload under ThreadSanitizer takes a few).
 */
#include "adminfx.h"
#include "../redisproc.h"
#include "harness.h"

#include <math.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include <cmocka.h>

/* adminfx's suite on a database of its own. */
static int setup(void **state)
{
    adfx_db = "admin_auth";
    return adfx_setup(state);
}

static void an_older_database_gains_the_tenants_schema_at_start(void **state)
{
    (void)state;
    char url[300];
    assert_int_equal(h_db_create("admin_old", url, sizeof(url)), 0);
    assert_int_equal(h_sql_exec(url, "DROP TABLE tenant_audit; ALTER TABLE tenants DROP COLUMN "
                                     "rate_limit"),
                     0);
    struct h_server s;
    const char *env[] = {"AUTH_MODE=apikey", "ADMIN_TOKEN=" ADFX_TOKEN, NULL};
    assert_int_equal(h_server_start(&s, url, env), 0);
    assert_int_equal(h_sql_int(url, "SELECT count(*) FROM information_schema.columns WHERE "
                                    "(table_name, column_name) IN (('tenants', 'rate_limit'), "
                                    "('tenant_audit', 'before'))"),
                     2);
    assert_int_equal(adfx_admin_on(&s, "POST", "/admin/tenants",
                                   "{\"name\":\"late\",\"tier\":\"free\",\"rate_limit\":3}", NULL,
                                   NULL),
                     201);
    assert_int_equal(h_server_stop(&s, SIGTERM, 20000), 0);
}

/* bulkhead_admin_auth_total{result} on server s. */
static double admin_auth(const struct h_server *s, const char *result)
{
    char label[40];
    snprintf(label, sizeof(label), "result=\"%s\"", result);
    return h_prom(s->base, "bulkhead_admin_auth_total", label);
}

static void failed_admin_logins_are_limited_per_address(void **state)
{
    (void)state;
    const struct h_server *s = &adfx_inst[0];
    const char *guesser = "198.51.100.7", *other = "198.51.100.8";
    const char *bad = "Authorization: Bearer not-the-admin-token-0123456789abcdef";
    double refused0 = admin_auth(s, "refused"), limited0 = admin_auth(s, "limited");
    /* Ten wrong tokens are compared and refused, 401 each. */
    for (int i = 0; i < 10; i++)
        assert_int_equal(adfx_admin_from(s, guesser, "GET", "/admin/tenants", NULL, bad, NULL),
                         401);
    /* The eleventh is not compared: 429, with the time until one more attempt is allowed. */
    struct h_resp r;
    char code[64], v[16];
    assert_int_equal(adfx_admin_from(s, guesser, "GET", "/admin/tenants", NULL, bad, &r), 429);
    assert_string_equal(adfx_error_code(&r, code, sizeof(code)), "too_many_auth_failures");
    assert_non_null(h_header(&r, "Retry-After", v, sizeof(v)));
    long retry = strtol(v, NULL, 10);
    assert_true(retry >= 1 && retry <= 60);
    h_resp_free(&r);
    /* Nor is the right one, from that address, until then: a guess that happened to be right
     * would otherwise still be told so. */
    assert_int_equal(adfx_admin_from(s, guesser, "GET", "/admin/tenants", NULL, NULL, &r), 429);
    assert_string_equal(adfx_error_code(&r, code, sizeof(code)), "too_many_auth_failures");
    h_resp_free(&r);
    /* Another address is not affected, either way. */
    assert_int_equal(adfx_admin_from(s, other, "GET", "/admin/tenants", NULL, NULL, NULL), 200);
    assert_int_equal(adfx_admin_from(s, other, "GET", "/admin/tenants", NULL, bad, NULL), 401);
    /* Nor is the same address on the other instance (each instance keeps its own count). */
    assert_int_equal(
        adfx_admin_from(&adfx_inst[1], guesser, "GET", "/admin/tenants", NULL, NULL, NULL), 200);
    assert_true(admin_auth(s, "refused") == refused0 + 11);
    assert_true(admin_auth(s, "limited") == limited0 + 2);
    printf("# 10 failures from one address, then 429 with Retry-After: %ld s\n", retry);
    /* The limit lifts by itself: the right token is accepted again after Retry-After. */
    int64_t t0 = h_now_ms();
    assert_true(H_WAIT(
        adfx_admin_from(s, guesser, "GET", "/admin/tenants", NULL, NULL, NULL) == 200, 70000));
    printf("# the limited address was served again after %.1f s\n",
           (double)(h_now_ms() - t0) / 1000.0);
}

/* Waiting for a condition on the database, through one connection (cheaper than h_sql_int's
 * connection per call, so that the wait notices a short state). */
static bool backend_active(PGconn *pg, const char *pid)
{
    const char *v[] = {pid};
    PGresult *res = PQexecParams(pg,
                                 "SELECT count(*) FROM pg_stat_activity WHERE pid = $1::int AND "
                                 "state = 'active'",
                                 1, NULL, v, NULL, NULL, 0);
    bool active = PQresultStatus(res) == PGRES_TUPLES_OK && !strcmp(PQgetvalue(res, 0, 0), "1");
    PQclear(res);
    return active;
}

static void back_to_back_revocations_reach_an_instance_with_an_hour_long_cache(void **state)
{
    (void)state;
    char kx[80], ky[80], sql[300];
    adfx_create(0, "first-out", "free", -1, kx, sizeof(kx));
    adfx_create(0, "second-out", "free", -1, ky, sizeof(ky));
    /* The key refreshers of the suite's instances, then the new instance's own: the newest. */
    int64_t before = h_sql_int(adfx_db_url, "SELECT count(*) FROM pg_stat_activity WHERE "
                                            "datname = current_database() AND "
                                            "application_name = 'bulkhead-auth'");
    struct h_server m;
    const char *env[10];
    size_t n = adfx_env(env, 10);
    env[n++] = "AUTH_CACHE_TTL_MS=3600000"; /* the last one wins */
    env[n] = NULL;
    assert_int_equal(h_server_start(&m, adfx_db_url, env), 0);
    assert_true(
        H_WAIT(adfx_call_on(&m, kx, NULL) == 200 && adfx_call_on(&m, ky, NULL) == 200, 5000));
    assert_true(H_WAIT(h_sql_int(adfx_db_url, "SELECT count(*) FROM pg_stat_activity WHERE "
                                              "datname = current_database() AND "
                                              "application_name = 'bulkhead-auth'") == before + 1,
                       10000));
    snprintf(sql, sizeof(sql),
             "SELECT max(pid) FROM pg_stat_activity WHERE datname = current_database() AND "
             "application_name = 'bulkhead-auth' AND backend_start = (SELECT max(backend_start) "
             "FROM pg_stat_activity WHERE datname = current_database() AND "
             "application_name = 'bulkhead-auth')");
    char pid[24];
    snprintf(pid, sizeof(pid), "%lld", (long long)h_sql_int(adfx_db_url, sql));

    /* A key table large enough that a reload takes a while. */
    assert_int_equal(h_sql_exec(adfx_db_url, "INSERT INTO tenants (name, tier, key_hash) SELECT "
                                             "'filler-' || i, 'free', encode(sha256(('filler' || "
                                             "i)::bytea), 'hex') FROM generate_series(1, 50000) i"),
                     0);
    PGconn *pg = PQconnectdb(adfx_db_url);
    assert_int_equal(PQstatus(pg), CONNECTION_OK);
    /* The first revocation, through the admin API, starts a reload on every instance; the
     * second commits while the new instance's reload runs. */
    assert_int_equal(adfx_admin(0, "DELETE", "/admin/tenants/first-out", NULL, NULL), 204);
    bool seen = H_WAIT(backend_active(pg, pid), 5000);
    PGresult *res = PQexec(pg, "WITH r AS (UPDATE tenants SET revoked_at = now() WHERE name = "
                               "'second-out' RETURNING name) SELECT pg_notify('bulkhead_tenants', "
                               "name) FROM r");
    assert_int_equal(PQresultStatus(res), PGRES_TUPLES_OK);
    PQclear(res);
    printf("# the second revocation committed %s the first one's reload\n",
           seen ? "during" : "after");
    /* Both refused within seconds: far below the hour the cache could otherwise last. */
    int64_t t0 = h_now_ms();
    bool both =
        H_WAIT(adfx_call_on(&m, kx, NULL) == 401 && adfx_call_on(&m, ky, NULL) == 401, 30000);
    printf("# both keys refused after %lld ms (AUTH_CACHE_TTL_MS=3600000)\n",
           (long long)(h_now_ms() - t0));
    PQfinish(pg);
    assert_int_equal(h_sql_exec(adfx_db_url, "DELETE FROM tenants WHERE name LIKE 'filler-%'"), 0);
    assert_int_equal(h_server_stop(&m, SIGTERM, 20000), 0);
    assert_true(both);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(an_older_database_gains_the_tenants_schema_at_start),
        cmocka_unit_test(failed_admin_logins_are_limited_per_address),
        cmocka_unit_test(back_to_back_revocations_reach_an_instance_with_an_hour_long_cache),
    };
    return cmocka_run_group_tests(tests, setup, adfx_teardown);
}
