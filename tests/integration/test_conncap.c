/*
 * test_conncap: what HTTP_MAX_CONNECTIONS does to the connection past the cap, as the README
 * says. The cap is not a refusal: at the cap, with no idle keep-alive connection to close for
 * it (these connections have not finished a request yet), the server stops accepting, the next
 * client completes its TCP handshake and waits in the kernel's listen backlog (`ss` shows it
 * in the listening socket's accept queue, Recv-Q), and it is accepted and answered as soon as a
 * served connection closes. Never a reset, never an error status. (At the cap with idle
 * keep-alive connections, the oldest is closed instead: test_slowclients.)
 */
#include "harness.h"

#include <arpa/inet.h>
#include <errno.h>
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

static char db_url[300];

static int setup(void **state)
{
    (void)state;
    return h_db_create("conncap", db_url, sizeof(db_url));
}

static int raw_connect(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    return fd;
}

/* The accept queue of the listening socket on port (ss's Recv-Q), or -1. */
static int accept_queue(int port)
{
    char cmd[200];
    snprintf(cmd, sizeof(cmd), "ss -Hltn 'sport = :%d' 2>/dev/null", port);
    FILE *p = popen(cmd, "r");
    if (!p)
        return -1;
    char state[32];
    int q = -1;
    if (fscanf(p, "%31s %d", state, &q) != 2)
        q = -1;
    pclose(p);
    return q;
}

struct queue_wait {
    int port, want;
};

static bool queue_is(void *arg)
{
    struct queue_wait *w = arg;
    return accept_queue(w->port) == w->want;
}

static void send_health(int fd)
{
    static const char req[] = "GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    assert_int_equal(write(fd, req, sizeof(req) - 1), (ssize_t)(sizeof(req) - 1));
}

/* Read until the peer closes or 30 s pass; the bytes read (NUL-terminated in buf). */
static size_t read_answer(int fd, char *buf, size_t len)
{
    size_t n = 0;
    int64_t end = h_now_ms() + 30000;
    while (n + 1 < len && h_now_ms() < end) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, 100) <= 0)
            continue;
        ssize_t r = read(fd, buf + n, len - n - 1);
        if (r <= 0)
            break;
        n += (size_t)r;
    }
    buf[n] = '\0';
    return n;
}

static void a_client_past_the_cap_waits_in_the_backlog_and_is_served_when_one_closes(void **state)
{
    (void)state;
    /* One event thread holds the whole cap (with several, each takes an equal share). */
    const char *e[] = {"HTTP_THREADS=1", "HTTP_MAX_CONNECTIONS=2", "ACCESS_LOG=false", NULL};
    struct h_server s;
    assert_int_equal(h_server_start(&s, db_url, e), 0);
    struct queue_wait none = {s.port, 0}, one = {s.port, 1};
    assert_true(h_wait_until(queue_is, &none, 10000));

    /* Two clients take the two connections (accepted: the queue empties again). */
    int held[2];
    for (int i = 0; i < 2; i++) {
        held[i] = raw_connect(s.port);
        assert_true(held[i] >= 0);
    }
    assert_true(h_wait_until(queue_is, &none, 10000));

    /* The third connects (the kernel completes the handshake) and sends its request; it sits in
     * the listen backlog, not accepted and not refused. */
    int third = raw_connect(s.port);
    assert_true(third >= 0);
    send_health(third);
    assert_true(h_wait_until(queue_is, &one, 10000));
    struct pollfd p = {.fd = third, .events = POLLIN};
    assert_int_equal(poll(&p, 1, 0), 0); /* no answer, no reset */
    printf("# HTTP_MAX_CONNECTIONS=2 with 2 connections held: a third waits in the listen "
           "backlog (accept queue %d)\n",
           accept_queue(s.port));

    /* One of the two goes: the third is accepted and served. */
    close(held[0]);
    char buf[1024];
    read_answer(third, buf, sizeof(buf));
    assert_true(h_wait_until(queue_is, &none, 10000));
    printf("# after one closed: \"%.*s\"\n", (int)strcspn(buf, "\r\n"), buf);
    assert_int_equal(strncmp(buf, "HTTP/1.1 200", 12), 0);
    assert_non_null(strstr(buf, "{\"status\":\"healthy\"}"));
    close(third);
    close(held[1]);
    assert_int_equal(h_server_stop(&s, SIGTERM, 20000), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(a_client_past_the_cap_waits_in_the_backlog_and_is_served_when_one_closes),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
