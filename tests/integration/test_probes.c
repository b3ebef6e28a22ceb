/*
 * test_probes: /livez, /readyz and /health answer the three questions an orchestrator asks
 * (issue 18). /livez is 200 whenever the process serves, database or not; /readyz is 200 only
 * while the database answers and no shutdown has begun, and otherwise 503 with a JSON body
 * saying why; /health keeps the seed's contract ({"status":"healthy"}, the database alone).
 * The database is a private PostgreSQL that the test stops and starts; the shutdown case asks
 * the probes on a keep-alive connection opened before SIGTERM, while a request whose body is
 * still arriving holds the drain open.
 */
#include "harness.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

static struct h_pg pg;

static int setup(void **state)
{
    (void)state;
    return h_pg_start(&pg);
}

static int teardown(void **state)
{
    (void)state;
    h_pg_destroy(&pg);
    return 0;
}

/* GET path: its status, and its body parsed into *body (caller json_decref). */
static long probe(const struct h_server *s, const char *path, json_t **body)
{
    struct h_resp r;
    if (h_get(h_url(s, path), NULL, &r))
        return 0;
    long status = r.status;
    *body = h_json(&r);
    h_resp_free(&r);
    return status;
}

static const char *str(json_t *o, const char *key)
{
    const char *v = json_string_value(json_object_get(o, key));
    return v ? v : "";
}

static void expect(const struct h_server *s, const char *path, long status, const char *field,
                   const char *value)
{
    json_t *b = NULL;
    assert_int_equal(probe(s, path, &b), status);
    assert_non_null(b);
    assert_string_equal(str(b, field), value);
    json_decref(b);
}

static bool readyz_is(const struct h_server *s, long status)
{
    json_t *b = NULL;
    long got = probe(s, "/readyz", &b);
    json_decref(b);
    return got == status;
}

static void the_probes_follow_the_database_and_livez_ignores_it(void **state)
{
    (void)state;
    struct h_server s;
    const char *e[] = {"HEALTH_INTERVAL_MS=100", NULL};
    assert_int_equal(h_server_start(&s, pg.url, e), 0);
    expect(&s, "/livez", 200, "status", "live");
    expect(&s, "/readyz", 200, "status", "ready");
    expect(&s, "/health", 200, "status", "healthy");

    assert_int_equal(h_pg_stop(&pg), 0);
    assert_true(H_WAIT(readyz_is(&s, 503), 30000));
    json_t *b = NULL;
    assert_int_equal(probe(&s, "/readyz", &b), 503);
    assert_string_equal(str(b, "status"), "not_ready");
    assert_non_null(strstr(str(b, "reason"), "database: "));
    json_t *checks = json_object_get(b, "checks");
    assert_string_equal(str(checks, "database"), "unreachable");
    assert_true(json_is_false(json_object_get(checks, "draining")));
    assert_true(str(b, "request_id")[0] != '\0');
    json_decref(b);
    expect(&s, "/health", 503, "status", "unhealthy");
    /* The process is as alive as ever: an orchestrator must not restart it. */
    expect(&s, "/livez", 200, "status", "live");

    assert_int_equal(h_pg_resume(&pg), 0);
    assert_true(H_WAIT(readyz_is(&s, 200), 30000));
    expect(&s, "/health", 200, "status", "healthy");
    assert_int_equal(h_server_stop(&s, SIGTERM, 20000), 0);
}

static int raw_connect(const struct h_server *s)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)s->port)};
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa))) {
        close(fd);
        return -1;
    }
    return fd;
}

/* Send one request on fd and read its whole reply (headers and Content-Length bytes). */
static int raw_ask(int fd, const char *req, char *reply, size_t cap)
{
    if (write(fd, req, strlen(req)) != (ssize_t)strlen(req))
        return -1;
    size_t got = 0;
    int64_t end = h_now_ms() + 10000;
    while (got + 1 < cap && h_now_ms() < end) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, (int)(end - h_now_ms())) <= 0)
            break;
        ssize_t n = read(fd, reply + got, cap - 1 - got);
        if (n <= 0)
            break;
        got += (size_t)n;
        reply[got] = '\0';
        const char *hdr_end = strstr(reply, "\r\n\r\n");
        const char *cl = strcasestr(reply, "Content-Length:");
        if (hdr_end && cl && got >= (size_t)(hdr_end + 4 - reply) + (size_t)atol(cl + 15))
            break;
    }
    reply[got] = '\0';
    int code = 0;
    sscanf(reply, "HTTP/1.%*d %d", &code);
    return code;
}

static void while_draining_readyz_says_so_and_livez_stays_up(void **state)
{
    (void)state;
    struct h_server s;
    const char *e[] = {"SHUTDOWN_TIMEOUT_MS=60000", NULL};
    assert_int_equal(h_server_start(&s, pg.url, e), 0);
    char reply[4096];
    /* A keep-alive connection, used once before the shutdown. */
    int ka = raw_connect(&s);
    assert_true(ka >= 0);
    assert_int_equal(raw_ask(ka, "GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n", reply, sizeof(reply)),
                     200);
    /* A request whose body is still arriving keeps the drain going until the test ends it. */
    int slow = raw_connect(&s);
    const char *req = "POST /api/data HTTP/1.1\r\nHost: x\r\nX-Tenant-Tier: enterprise\r\n"
                      "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"pay";
    assert_true(write(slow, req, strlen(req)) == (ssize_t)strlen(req));
    /* It, and the scrape that asks. */
    assert_true(H_WAIT(h_prom(s.base, "bulkhead_requests_in_flight", NULL) >= 2, 10000));
    kill(s.pid, SIGTERM);
    assert_true(H_WAIT(h_server_log_has(&s, "SIGTERM received"), 10000));

    assert_int_equal(raw_ask(ka, "GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n", reply, sizeof(reply)),
                     503);
    json_error_t err;
    json_t *b = json_loads(strstr(reply, "\r\n\r\n") + 4, 0, &err);
    assert_non_null(b);
    assert_string_equal(str(b, "status"), "not_ready");
    assert_non_null(strstr(str(b, "reason"), "shutting down"));
    assert_true(json_is_true(json_object_get(json_object_get(b, "checks"), "draining")));
    assert_string_equal(str(json_object_get(b, "checks"), "database"), "ok");
    json_decref(b);
    assert_int_equal(raw_ask(ka, "GET /livez HTTP/1.1\r\nHost: x\r\n\r\n", reply, sizeof(reply)),
                     200);
    /* Anything else is refused as before. */
    assert_int_equal(raw_ask(ka, "GET /health HTTP/1.1\r\nHost: x\r\n\r\n", reply, sizeof(reply)),
                     503);
    assert_non_null(strstr(reply, "\"error\":\"shutting_down\""));
    close(ka);

    /* The last request in flight goes (its client leaves): the server exits by itself. */
    close(slow);
    assert_int_equal(h_server_stop(&s, SIGTERM, 20000), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(the_probes_follow_the_database_and_livez_ignores_it),
        cmocka_unit_test(while_draining_readyz_says_so_and_livez_stays_up),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
