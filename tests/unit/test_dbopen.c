/*
 * test_dbopen: a pool's connector threads (dbopen.h) alone: a connect's outcome reaches the
 * opened callback, once, with no lock held, and the count dbopen_wait waits for drops to 0 after
 * it. A refused connect needs no database; an opened one uses the shared cluster (skipped
 * without it). The cancellers are exercised through the pool (test_dbpool's cancel_release).
 */
#include "dbopen.h"
#include "mclock.h"
#include "unitdb.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#define SEC 1000000ll

static char url[300];
static PGconn *admin;

/* What the pool would be: the mutex, and what its callback saw. */
struct fakepool {
    pthread_mutex_t mutex;
    struct dbopen o;
    int calls;
    int rc;
    char err[256];
    bool locked; /* opened ran with the mutex held already */
    struct dbconn *c;
};

/* Connector thread: the pool's callback takes the pool's mutex, as dbpool_connected does (an
 * error-checking mutex: EDEADLK if this thread held it already). */
static void on_opened(void *ctx, struct dbconn *c, int rc, const char *err)
{
    struct fakepool *f = ctx;
    int lrc = pthread_mutex_lock(&f->mutex);
    f->locked = lrc != 0;
    f->calls++;
    f->rc = rc;
    f->c = c;
    snprintf(f->err, sizeof(f->err), "%s", err);
    if (lrc == 0)
        pthread_mutex_unlock(&f->mutex);
}

static void on_cancelled(void *ctx, struct dbconn *c, bool broken)
{
    (void)ctx, (void)c, (void)broken;
    fail_msg("no cancel was asked for");
}

/* Start one connect with conninfo and wait for every thread of o to finish. */
static void connect_and_wait(struct fakepool *f, const char *conninfo)
{
    pthread_mutexattr_t attr;
    pthread_mutexattr_init(&attr);
    pthread_mutexattr_settype(&attr, PTHREAD_MUTEX_ERRORCHECK);
    pthread_mutex_init(&f->mutex, &attr);
    pthread_mutexattr_destroy(&attr);
    dbopen_init(&f->o, &f->mutex, f, on_opened, on_cancelled);
    struct dbconn_params prm = {.conninfo = conninfo, .appname = "bulkhead-test-dbopen"};
    pthread_mutex_lock(&f->mutex);
    assert_int_equal(dbopen_connect(&f->o, &prm, mclock_now_us() + 10 * SEC), 0);
    assert_int_equal(f->o.threads, 1);
    dbopen_wait(&f->o);
    assert_int_equal(f->o.threads, 0);
    pthread_mutex_unlock(&f->mutex);
    dbopen_destroy(&f->o);
    pthread_mutex_destroy(&f->mutex);
}

static void a_refused_connect_reaches_opened_with_its_error_and_the_count_drops(void **state)
{
    (void)state;
    /* A port nobody listens on: bound, then closed. */
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(sa);
    assert_int_equal(bind(s, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(getsockname(s, (struct sockaddr *)&sa, &len), 0);
    close(s);
    char conninfo[128];
    snprintf(conninfo, sizeof(conninfo), "host=127.0.0.1 port=%d dbname=x user=x",
             ntohs(sa.sin_port));

    struct fakepool f = {0};
    connect_and_wait(&f, conninfo);
    assert_int_equal(f.calls, 1);
    assert_false(f.locked);
    assert_true(f.rc < 0);
    assert_null(f.c);
    assert_true(f.err[0] != '\0');
}

static void an_opened_connection_reaches_opened_with_the_given_settings(void **state)
{
    (void)state;
    UNITDB_NEED(admin);
    struct fakepool f = {0};
    connect_and_wait(&f, url);
    assert_int_equal(f.calls, 1);
    assert_false(f.locked);
    assert_int_equal(f.rc, 0);
    assert_non_null(f.c);
    assert_string_equal(PQparameterStatus(f.c->pg, "application_name"), "bulkhead-test-dbopen");
    dbconn_close(f.c);
}

static int setup(void **state)
{
    (void)state;
    return unitdb_open(url, sizeof(url), &admin);
}

static int teardown(void **state)
{
    (void)state;
    return unitdb_close(&admin);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(a_refused_connect_reaches_opened_with_its_error_and_the_count_drops),
        cmocka_unit_test(an_opened_connection_reaches_opened_with_the_given_settings),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
