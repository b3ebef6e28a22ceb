/*
 * idleconns: the connection-holding client of bench/conns.sh (issue 32). wrk and hey cannot
 * hold idle connections, so this one does.
 *
 *   idleconns [-s SECONDS] [-p PATH] HOST PORT N
 *
 * Idle mode (default): opens N connections to HOST:PORT one after another, sends one
 * "GET PATH HTTP/1.1" on each and reads its whole reply (Content-Length), then holds them all,
 * idle, until SIGINT or SIGTERM. It prints "ready opened=O replied=R failed=F" once every
 * connection has been tried, and at exit "closed_by_server=C still_open=S".
 *
 * Slow mode (-s SECONDS): opens N connections, sends on each the start of a request head
 * ("GET PATH HTTP/1.1", Host, and the name of one more header) and then one byte of that
 * header's value every SECONDS seconds, so the head never ends (slowloris). A connection the
 * server closes is opened again on the next tick, as such a client would. It prints
 * "ready opened=O failed=F" once every connection has been tried, and at exit
 * "closed_by_server=C reopened=R still_open=S".
 *
 * SIGUSR1 prints "open=S closed_by_server=C" at any time. RLIMIT_NOFILE is raised to its hard
 * limit. Connecting gives up after 1 s (a server at its cap may leave a SYN unanswered), and a
 * reply after 5 s (the connection is counted as failed but kept). After 3 connects in a row
 * fail, opening stops: the rest count as failed.
 *
 * Single-threaded, blocking connects one at a time: loopback only, the order of a few seconds
 * for 10,000 connections.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define CONNECT_TIMEOUT_MS 1000
#define GIVE_UP_AFTER      3 /* consecutive connect failures while opening */
#define REPLY_TIMEOUT_MS   5000

static volatile sig_atomic_t idle_stop;
static volatile sig_atomic_t idle_report;

static void idle_on_stop(int sig)
{
    (void)sig;
    idle_stop = 1;
}

static void idle_on_usr1(int sig)
{
    (void)sig;
    idle_report = 1;
}

static int64_t idle_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* A connected non-blocking socket, or -1 (refused, or not accepted within the timeout). */
static int idle_connect(const struct sockaddr_in *sa)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (connect(fd, (const struct sockaddr *)sa, sizeof(*sa)) == 0)
        return fd;
    if (errno != EINPROGRESS) {
        close(fd);
        return -1;
    }
    struct pollfd p = {.fd = fd, .events = POLLOUT};
    int err = 0;
    socklen_t len = sizeof(err);
    if (poll(&p, 1, CONNECT_TIMEOUT_MS) != 1 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) ||
        err) {
        close(fd);
        return -1;
    }
    return fd;
}

/* Sends all of buf (small: it fits the socket buffer of a fresh connection). */
static bool idle_send(int fd, const char *buf, size_t len)
{
    while (len) {
        ssize_t n = send(fd, buf, len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return false;
        buf += n;
        len -= (size_t)n;
    }
    return true;
}

/* Reads one reply (head and Content-Length body); true when its status is 2xx. */
static bool idle_read_reply(int fd)
{
    char buf[8192];
    size_t have = 0;
    int64_t deadline = idle_now_ms() + REPLY_TIMEOUT_MS;
    for (;;) {
        char *end = memmem(buf, have, "\r\n\r\n", 4);
        if (end) {
            size_t head = (size_t)(end + 4 - buf);
            size_t body = 0;
            for (char *p = buf; p < end; p++)
                if ((p == buf || p[-1] == '\n') && !strncasecmp(p, "content-length:", 15)) {
                    body = strtoul(p + 15, NULL, 10);
                    break;
                }
            if (have >= head + body)
                return have > 9 && buf[9] == '2';
        }
        if (have == sizeof(buf))
            return false;
        int64_t left = deadline - idle_now_ms();
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (left <= 0 || poll(&p, 1, (int)left) != 1)
            return false;
        ssize_t n = recv(fd, buf + have, sizeof(buf) - have, 0);
        if (n < 0 && (errno == EINTR || errno == EAGAIN))
            continue;
        if (n <= 0)
            return false;
        have += (size_t)n;
    }
}

static void idle_usage(void)
{
    fprintf(stderr, "usage: idleconns [-s SECONDS] [-p PATH] HOST PORT N\n");
    exit(2);
}

int main(int argc, char **argv)
{
    int slow_s = 0;
    const char *path = "/health";
    int opt;
    while ((opt = getopt(argc, argv, "s:p:")) != -1) {
        if (opt == 's')
            slow_s = atoi(optarg);
        else if (opt == 'p')
            path = optarg;
        else
            idle_usage();
    }
    if (argc - optind != 3)
        idle_usage();
    struct sockaddr_in sa = {.sin_family = AF_INET,
                             .sin_port = htons((uint16_t)atoi(argv[optind + 1]))};
    if (inet_pton(AF_INET, argv[optind], &sa.sin_addr) != 1)
        idle_usage();
    long n = atol(argv[optind + 2]);
    if (n <= 0)
        idle_usage();

    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < (rlim_t)n + 16)
        fprintf(stderr, "idleconns: RLIMIT_NOFILE %lu is below %ld connections\n",
                (unsigned long)rl.rlim_cur, n);
    struct sigaction act = {.sa_handler = idle_on_stop};
    sigaction(SIGINT, &act, NULL);
    sigaction(SIGTERM, &act, NULL);
    act.sa_handler = idle_on_usr1;
    sigaction(SIGUSR1, &act, NULL);
    signal(SIGPIPE, SIG_IGN);

    char req[512];
    int reqlen =
        slow_s ? snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: bench\r\nX-Slow: ", path)
               : snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: bench\r\n\r\n", path);
    int *fds = calloc((size_t)n, sizeof(*fds));
    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (!fds || ep < 0)
        return 1;
    long opened = 0, replied = 0, failed = 0, closed = 0, reopened = 0, in_row = 0;
    for (long i = 0; i < n; i++)
        fds[i] = -1;
    for (long i = 0; i < n && !idle_stop; i++) {
        if (in_row >= GIVE_UP_AFTER) {
            failed += n - i;
            break;
        }
        fds[i] = idle_connect(&sa);
        if (fds[i] < 0 || !idle_send(fds[i], req, (size_t)reqlen)) {
            if (fds[i] >= 0)
                close(fds[i]);
            fds[i] = -1;
            failed++;
            in_row++;
            continue;
        }
        in_row = 0;
        opened++;
        if (!slow_s) {
            if (idle_read_reply(fds[i]))
                replied++;
            else
                failed++;
        }
        struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP, .data.u64 = (uint64_t)i};
        epoll_ctl(ep, EPOLL_CTL_ADD, fds[i], &ev);
    }
    if (slow_s)
        printf("ready opened=%ld failed=%ld\n", opened, failed);
    else
        printf("ready opened=%ld replied=%ld failed=%ld\n", opened, replied, failed);
    fflush(stdout);

    /* Hold: notice what the server closes; in slow mode, trickle and reopen. */
    int64_t next_tick = idle_now_ms() + slow_s * 1000;
    struct epoll_event evs[256];
    while (!idle_stop) {
        int64_t wait = slow_s ? next_tick - idle_now_ms() : 1000;
        int k = epoll_wait(ep, evs, 256, wait < 0 ? 0 : (int)wait);
        for (int j = 0; j < k; j++) {
            long i = (long)evs[j].data.u64;
            char drain[4096];
            ssize_t r = recv(fds[i], drain, sizeof(drain), MSG_DONTWAIT);
            if (r > 0 && !(evs[j].events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)))
                continue; /* an answer (a 4xx to a slow head): the close follows */
            if (r < 0 && errno == EAGAIN)
                continue;
            epoll_ctl(ep, EPOLL_CTL_DEL, fds[i], NULL);
            close(fds[i]);
            fds[i] = -1;
            closed++;
        }
        if (idle_report) {
            idle_report = 0;
            printf("open=%ld closed_by_server=%ld\n", opened - closed + reopened, closed);
            fflush(stdout);
        }
        if (!slow_s || idle_now_ms() < next_tick)
            continue;
        next_tick += slow_s * 1000;
        bool connect_ok = true;
        for (long i = 0; i < n && !idle_stop; i++) {
            if (fds[i] >= 0) {
                if (!idle_send(fds[i], "a", 1)) {
                    epoll_ctl(ep, EPOLL_CTL_DEL, fds[i], NULL);
                    close(fds[i]);
                    fds[i] = -1;
                    closed++;
                }
                continue;
            }
            /* Reopen what the server closed; stop for this tick at the first refusal. */
            if (!connect_ok)
                continue;
            fds[i] = idle_connect(&sa);
            if (fds[i] < 0 || !idle_send(fds[i], req, (size_t)reqlen)) {
                if (fds[i] >= 0)
                    close(fds[i]);
                fds[i] = -1;
                connect_ok = false;
                continue;
            }
            reopened++;
            struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP, .data.u64 = (uint64_t)i};
            epoll_ctl(ep, EPOLL_CTL_ADD, fds[i], &ev);
        }
    }
    long still = 0;
    for (long i = 0; i < n; i++)
        if (fds[i] >= 0) {
            still++;
            close(fds[i]);
        }
    if (slow_s)
        printf("closed_by_server=%ld reopened=%ld still_open=%ld\n", closed, reopened, still);
    else
        printf("closed_by_server=%ld still_open=%ld\n", closed, still);
    fflush(stdout);
    free(fds);
    close(ep);
    return 0;
}
