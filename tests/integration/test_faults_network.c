/*
 * test_faults_network: the network to PostgreSQL goes silent while threads that leave the
 * event loop wait on the database. A relay between the server and PostgreSQL (faultkit's
 * fk_relay) stops forwarding: nothing gets through either way, no connection is closed, and
 * no TCP keepalive or timeout ever fires (the relay's kernel answers them), so only the
 * server's own deadlines and stop signals can end a wait.
 *
 * - An admin request on a silent database is answered 503 within its statement deadline, and
 *   the admin worker serves the next request once the database answers again.
 * - An admin request and a reload of the API keys are both in flight on a silent database, and
 *   SIGTERM still ends the server within SHUTDOWN_TIMEOUT_MS plus the margin the README states
 *   (1 s); the admin request is answered 503 shutting_down before the server exits.
 * Times are printed as TAP comments.
 */
#include "faultkit.h"
#include "harness.h"

#include <curl/curl.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdatomic.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#define TOKEN           "network-faults-token-0123456789abcdef"
#define SHUTDOWN_MS     2000
#define SHUTDOWN_MARGIN 1000  /* the README's stated margin past SHUTDOWN_TIMEOUT_MS */
#define ADMIN_ANSWER_MS 20000 /* bound on the admin worker's 503 (its deadline is about 7 s) */

static char db_url[300];
static struct fk_relay *relay;
static char relay_url[300]; /* db_url's database, through the relay */
static struct h_server srv;

static int setup(void **state)
{
    (void)state;
    const char *port = getenv("BH_TEST_PG_PORT");
    if (!port || h_db_create("faults_network", db_url, sizeof(db_url)) ||
        fk_relay_start(atoi(port), &relay))
        return -1;
    /* The same database (its name as h_db_create made it), through the relay's port. */
    snprintf(relay_url, sizeof(relay_url), "postgresql://postgres@127.0.0.1:%d%s",
             fk_relay_port(relay), strrchr(db_url, '/'));
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    fk_relay_stop(relay);
    return 0;
}

/* After each test: the relay forwards again, and a server left running (a failed test) is
 * killed. */
static int restore(void **state)
{
    (void)state;
    fk_relay_cut(relay, false);
    if (srv.pid > 0)
        h_server_stop(&srv, SIGKILL, 5000);
    return 0;
}

static int start_server(void)
{
    const char *env[] = {"AUTH_MODE=apikey",         "ADMIN_TOKEN=" TOKEN,
                         "AUTH_CACHE_TTL_MS=1000",   "HEALTH_INTERVAL_MS=200",
                         "SHUTDOWN_TIMEOUT_MS=2000", NULL};
    return h_server_start(&srv, relay_url, env);
}

/* An admin request run on a thread of its own (it may wait long). */
struct call {
    const char *method, *path, *body;
    pthread_t thread;
    atomic_long status; /* -1 until answered (0: no answer at all) */
    char code[64];      /* the error's "error", or ""; read after the join */
};

static void *call_main(void *arg)
{
    struct call *c = arg;
    const char *h[] = {"Authorization: Bearer " TOKEN, "Content-Type: application/json", NULL};
    struct h_resp r;
    h_request(c->method, h_url(&srv, c->path), h, c->body, &r);
    json_t *j = h_json(&r);
    snprintf(c->code, sizeof(c->code), "%s",
             j ? json_string_value(json_object_get(j, "error")) ?: "" : "");
    json_decref(j);
    atomic_store(&c->status, r.status);
    h_resp_free(&r);
    return NULL;
}

static void call_start(struct call *c, const char *method, const char *path, const char *body)
{
    *c = (struct call){.method = method, .path = path, .body = body};
    atomic_init(&c->status, -1);
    assert_int_equal(pthread_create(&c->thread, NULL, call_main, c), 0);
}

static long admin_now(const char *method, const char *path, const char *body)
{
    struct call c;
    call_start(&c, method, path, body);
    pthread_join(c.thread, NULL);
    return atomic_load(&c.status);
}

static void an_admin_request_on_a_silent_database_is_answered_and_the_worker_recovers(void **state)
{
    (void)state;
    assert_int_equal(start_server(), 0);
    /* The admin worker's connection is open and in use. */
    assert_int_equal(admin_now("POST", "/admin/tenants", "{\"name\":\"early\",\"tier\":\"free\"}"),
                     201);
    fk_relay_cut(relay, true);
    struct call c;
    int64_t t0 = h_now_ms();
    call_start(&c, "GET", "/admin/tenants/early", NULL);
    assert_true(H_WAIT(fk_relay_waiting(relay, "bulkhead-admin"), 10000));
    /* The worker gives up on the statement at its deadline rather than waiting for TCP. */
    assert_true(H_WAIT(atomic_load(&c.status) != -1, ADMIN_ANSWER_MS));
    pthread_join(c.thread, NULL);
    int64_t took = h_now_ms() - t0;
    long status = atomic_load(&c.status);
    printf("# admin request on a silent database: %ld %s after %.2f s\n", status, c.code,
           (double)took / 1000.0);
    assert_int_equal(status, 503);
    assert_string_equal(c.code, "database_unavailable");

    /* The network is back: the worker opens a new connection and serves. */
    fk_relay_cut(relay, false);
    assert_int_equal(admin_now("GET", "/admin/tenants/early", NULL), 200);
    assert_int_equal(h_server_stop(&srv, SIGTERM, 20000), 0);
}

static void
sigterm_ends_the_server_in_time_while_its_threads_wait_on_a_silent_database(void **state)
{
    (void)state;
    assert_int_equal(start_server(), 0);
    assert_int_equal(admin_now("POST", "/admin/tenants", "{\"name\":\"first\",\"tier\":\"free\"}"),
                     201);
    fk_relay_cut(relay, true);
    struct call c;
    call_start(&c, "POST", "/admin/tenants", "{\"name\":\"second\",\"tier\":\"free\"}");
    /* The admin worker waits on its statement, and the key refresher on its periodic reload
     * (AUTH_CACHE_TTL_MS=1000): both have sent what the relay now holds. */
    assert_true(H_WAIT(fk_relay_waiting(relay, "bulkhead-admin") &&
                           fk_relay_waiting(relay, "bulkhead-auth"),
                       10000));
    int64_t t0 = h_now_ms();
    int rc = h_server_stop(&srv, SIGTERM, SHUTDOWN_MS + SHUTDOWN_MARGIN);
    int64_t took = h_now_ms() - t0;
    pthread_join(c.thread, NULL);
    printf("# SIGTERM with an admin request and a key reload waiting on a silent database: "
           "exit %d after %lld ms (SHUTDOWN_TIMEOUT_MS=%d); the admin request: %ld %s\n",
           rc, (long long)took, SHUTDOWN_MS, atomic_load(&c.status), c.code);
    assert_int_equal(rc, 0);
    assert_int_equal(atomic_load(&c.status), 503);
    assert_string_equal(c.code, "shutting_down");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(
            an_admin_request_on_a_silent_database_is_answered_and_the_worker_recovers, restore),
        cmocka_unit_test_teardown(
            sigterm_ends_the_server_in_time_while_its_threads_wait_on_a_silent_database, restore),
    };
    curl_global_init(CURL_GLOBAL_ALL);
    int rc = cmocka_run_group_tests(tests, setup, teardown);
    curl_global_cleanup();
    return rc;
}
