/*
 * test_conn: a connection's end that the real binary reaches only through a bug elsewhere: a
 * request still handed on when the HTTP threads stop (http_stop; the server stops its workers
 * first). Its connection is closed (the client sees the end) but the request is orphaned, not
 * left pointing at a freed connection: resumed afterwards by its late owner, it ends as 499
 * through the hooks and frees what it held (ASan: no use after free, no leak). Before the fix
 * request_resume posted to the freed connection's loop.
 */
#include "http.h"
#include "request.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

/* What the hooks and the dispatcher saw (the loop thread writes, the test reads). */
static _Atomic(struct request *) handed; /* the request dispatch handed on */
static atomic_int done_status;           /* hooks.done's status (0: not yet) */
static atomic_int nbegun, nfreed;

static void hook_begin(void *ctx)
{
    (void)ctx;
    atomic_fetch_add(&nbegun, 1);
}

static void hook_done(void *ctx, const struct request *r, int64_t total_us)
{
    (void)ctx;
    (void)total_us;
    atomic_store(&done_status, (int)r->status);
}

static void hook_freed(void *ctx)
{
    (void)ctx;
    atomic_fetch_add(&nfreed, 1);
}

static const struct request_hooks hooks = {
    .instance_id = "t", .begin = hook_begin, .done = hook_done, .freed = hook_freed};

/* Loop thread: every request is handed on and kept (a late owner). */
static bool dispatch_keep(void *ctx, struct request *r)
{
    (void)ctx;
    request_defer(r);
    atomic_store(&handed, r);
    return true;
}

static bool request_handed(void)
{
    for (int i = 0; i < 10000; i++) { /* 10 s at most */
        if (atomic_load(&handed))
            return true;
        nanosleep(&(struct timespec){.tv_nsec = 1000000}, NULL);
    }
    return false;
}

static void a_request_handed_on_at_stop_is_orphaned_and_ends_as_499_when_resumed(void **state)
{
    (void)state;
    static const atomic_bool draining = false;
    struct http_opts o = {.set = {.bind = "127.0.0.1",
                                  .threads = 1,
                                  .max_conns = 16,
                                  .idle_timeout = 30,
                                  .head_timeout = 10000,
                                  .body_timeout = 30000,
                                  .conn_memory = 16384,
                                  .max_body = 65536,
                                  .trusted_proxies = "",
                                  .ipv6_prefix = 64},
                          .hooks = &hooks,
                          .draining = &draining,
                          .dispatch = dispatch_keep};
    struct http *h;
    assert_int_equal(http_start(&o, &h), 0);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(http_port(h))};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    static const char req[] = "GET /late?x=1 HTTP/1.1\r\nHost: x\r\nX-A: kept\r\n\r\n";
    assert_int_equal(write(fd, req, sizeof(req) - 1), (ssize_t)(sizeof(req) - 1));
    assert_true(request_handed());

    http_stop(h);
    /* The client sees the end, with no answer; the request has not ended yet. */
    char b;
    struct pollfd p = {.fd = fd, .events = POLLIN};
    assert_int_equal(poll(&p, 1, 10000), 1);
    assert_int_equal(read(fd, &b, 1), 0);
    assert_int_equal(atomic_load(&done_status), 0);
    assert_int_equal(atomic_load(&nfreed), 0);

    /* Its late owner still reads it (the head lives in the connection's buffer) and resumes. */
    struct request *r = atomic_load(&handed);
    assert_string_equal(r->url, "/late");
    assert_string_equal(request_header(r, "X-A"), "kept");
    request_reply_json(r, 200, OUTCOME_OK, "{}", 2);
    request_resume(r);
    assert_int_equal(atomic_load(&done_status), 499);
    assert_int_equal(atomic_load(&nfreed), 1);
    assert_int_equal(atomic_load(&nbegun), 1);
    close(fd);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(a_request_handed_on_at_stop_is_orphaned_and_ends_as_499_when_resumed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
