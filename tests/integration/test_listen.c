/*
 * test_listen: the API port (issue 33). A second server started on a port the first one holds
 * is refused, and the first keeps serving; many connections opened at once are all served.
 * (Issue 33 tried a listening socket per HTTP thread with SO_REUSEPORT, which would let a
 * second server in unless the port is claimed first: this is the guard against that, and
 * bench/optimisations.md says why the shared socket stayed.)
 */
#include "harness.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include <cmocka.h>

static struct h_suite suite = {.name = "listen", .env = {"HTTP_THREADS=2", NULL}};

static int setup(void **state)
{
    (void)state;
    return h_suite_start(&suite);
}

static int teardown(void **state)
{
    (void)state;
    h_suite_stop(&suite);
    return 0;
}

static void a_second_server_on_the_same_port_is_refused_at_start(void **state)
{
    (void)state;
    char cmd[1200];
    snprintf(cmd, sizeof(cmd),
             "cd '%s' && DATABASE_URL='%s' API_PORT=%d API_BIND=127.0.0.1 HTTP_THREADS=2 "
             "timeout 20 '%s' 2>&1",
             getenv("BH_TEST_WORK") ? getenv("BH_TEST_WORK") : "/tmp", suite.db_url, suite.srv.port,
             h_bin());
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    char out[8000] = "";
    size_t n = fread(out, 1, sizeof(out) - 1, p);
    out[n] = '\0';
    int rc = pclose(p);
    assert_true(WIFEXITED(rc) && WEXITSTATUS(rc) != 0 && WEXITSTATUS(rc) != 124);
    if (!strstr(out, "cannot listen on 127.0.0.1:"))
        fail_msg("no 'cannot listen' in: %s", out);
    /* The first server still answers everything. */
    struct h_resp r;
    assert_int_equal(h_get(h_url(&suite.srv, "/health"), NULL, &r), 0);
    assert_int_equal(r.status, 200);
    h_resp_free(&r);
}

static void connections_opened_at_once_are_all_served(void **state)
{
    (void)state;
    static const char *const ent[] = {"X-Tenant-Tier: enterprise", "X-Tenant-Id: listen", NULL};
    long statuses[64];
    double latency[64];
    assert_int_equal(
        h_burst("GET", h_url(&suite.srv, "/api/data?limit=1"), ent, 64, 64, statuses, latency), 0);
    assert_int_equal(h_count(statuses, 64, 200), 64);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(a_second_server_on_the_same_port_is_refused_at_start),
        cmocka_unit_test(connections_opened_at_once_are_all_served),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
