/*
 * test_conncap: what HTTP_MAX_CONNECTIONS does to the connection past the cap, as the README
 * says. The cap is not a refusal: at the cap, with no idle keep-alive connection to close for
 * it (these connections have not finished a request yet), the server stops accepting, the next
 * client completes its TCP handshake and waits in the kernel's listen backlog (`ss` shows it
 * in the listening socket's accept queue, Recv-Q), and it is accepted and answered as soon as a
 * served connection closes. Never a reset, never an error status. (At the cap with idle
 * keep-alive connections, the oldest is closed instead: test_slowclients.) Connections refused
 * for their address (429) and lingering after their answer do not hold the cap: a flood of them
 * from one address leaves room for another client at once.
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

/* A connection to the server from the local address from (host order: another loopback
 * address is another client). */
static int connect_from(int port, uint32_t from)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in me = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(from)};
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || bind(fd, (struct sockaddr *)&me, sizeof(me)) != 0 ||
        connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    return fd;
}

static int raw_connect(int port)
{
    return connect_from(port, INADDR_LOOPBACK);
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

/* Read until the peer closes or timeout_ms pass; the bytes read (NUL-terminated in buf). */
static size_t read_answer_within(int fd, char *buf, size_t len, int64_t timeout_ms)
{
    size_t n = 0;
    int64_t end = h_now_ms() + timeout_ms;
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

static size_t read_answer(int fd, char *buf, size_t len)
{
    return read_answer_within(fd, buf, len, 30000);
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

#define FLOOD      40         /* connections the flooding address opens and holds */
#define FLOOD_FROM 0x7f000002 /* 127.0.0.2 */
#define OTHER_FROM                                                                                 \
    0x7f000003 /* 127.0.0.3: not the harness's 127.0.0.1, whose last connection                    \
                  (the start's /health) may not be closed yet */

/* One address holds its one connection (silent: neither served nor evictable) and opens FLOOD
 * more, all held open and never read: each is refused 429 and lingers, waiting for the client
 * to close. Were they kept for their linger (CONN_LINGER_US, 2 s), the cap of 4 would let three
 * through every 2 s and a client from another address, queued behind the 40, would be answered
 * after some 26 s; the oldest lingering one is closed for each new connection instead, so it
 * is answered at once (10 s: the bound of a slow machine, far below the 26). Every flooding
 * connection still got its 429. */
static void a_flood_of_refused_connections_does_not_hold_the_cap(void **state)
{
    (void)state;
    const char *e[] = {"HTTP_THREADS=1",
                       "HTTP_MAX_CONNECTIONS=4",
                       "HTTP_MAX_CONNECTIONS_PER_ADDRESS=1",
                       "HTTP_HEAD_TIMEOUT_MS=600000",
                       "HTTP_IDLE_TIMEOUT_S=600",
                       "ACCESS_LOG=false",
                       NULL};
    struct h_server s;
    assert_int_equal(h_server_start(&s, db_url, e), 0);
    struct queue_wait none = {s.port, 0};
    int held = connect_from(s.port, FLOOD_FROM);
    assert_true(held >= 0);
    assert_true(h_wait_until(queue_is, &none, 10000));
    int flood[FLOOD];
    for (int i = 0; i < FLOOD; i++) {
        flood[i] = connect_from(s.port, FLOOD_FROM);
        assert_true(flood[i] >= 0);
    }
    int64_t t0 = h_now_ms();
    int other = connect_from(s.port, OTHER_FROM);
    assert_true(other >= 0);
    send_health(other);
    char buf[2048];
    read_answer_within(other, buf, sizeof(buf), 10000);
    printf("# %d refused connections held open by 127.0.0.2 (cap 4): 127.0.0.3 answered in "
           "%lld ms: \"%.*s\"\n",
           FLOOD, (long long)(h_now_ms() - t0), (int)strcspn(buf, "\r\n"), buf);
    assert_int_equal(strncmp(buf, "HTTP/1.1 200", 12), 0);
    close(other);
    int answered = 0;
    for (int i = 0; i < FLOOD; i++) {
        read_answer_within(flood[i], buf, sizeof(buf), 10000);
        answered += !strncmp(buf, "HTTP/1.1 429", 12) && strstr(buf, "too_many_connections");
        close(flood[i]);
    }
    assert_int_equal(answered, FLOOD);
    close(held);
    assert_true(h_prom(s.base, "bulkhead_http_refusals_total", "reason=\"per_address\"") == FLOOD);
    assert_int_equal(h_server_stop(&s, SIGTERM, 20000), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(a_client_past_the_cap_waits_in_the_backlog_and_is_served_when_one_closes),
        cmocka_unit_test(a_flood_of_refused_connections_does_not_hold_the_cap),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
