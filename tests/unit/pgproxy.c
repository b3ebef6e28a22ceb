/*
 * pgproxy: a relay thread that frames the server's messages (see pgproxy.h).
 *
 * The server's bytes collect in a buffer; the whole messages in it are written to the client
 * (in one write) up to one of the held type, where relaying stops until the release. The client's
 * bytes go to the server as they come. Either side closing ends the relay.
 */
#include "pgproxy.h"
#include "mclock.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

struct pgproxy {
    pthread_t tid;
    int listen_fd, port, server_port;
    int wake; /* eventfd: the test changed something */
    /* The relay thread's own: */
    int client, server;
    unsigned char *buf; /* server bytes not relayed yet; owned */
    size_t len, cap;
    /* _shared: the mutex guards the fields below. */
    pthread_mutex_t mu;
    pthread_cond_t cv; /* broadcast when the relay stops at a held message */
    char hold;         /* the type to stop in front of, or 0 */
    bool holding;      /* stopped in front of one */
    bool released;     /* the test let it go */
    bool stopping;
    unsigned relayed[256]; /* server messages relayed, by type */
    unsigned queued[256];  /* whole server messages waiting behind the held one, by type */
};

static int pgproxy_write_all(int fd, const unsigned char *p, size_t n)
{
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Count the whole messages after the held one at off (the test may wait for one). Under mu. */
static void pgproxy_count_queued(struct pgproxy *px, size_t off)
{
    memset(px->queued, 0, sizeof(px->queued));
    while (px->len - off >= 5) {
        uint32_t mlen;
        memcpy(&mlen, px->buf + off + 1, 4);
        size_t total = 1 + (size_t)ntohl(mlen);
        if (px->len - off < total)
            break;
        px->queued[px->buf[off]]++;
        off += total;
    }
}

/* Relay the whole messages in the buffer, up to a held one, in one write: what the server sent
 * behind a released message reaches the client with it, as one read. -1 when the client is
 * gone. */
static int pgproxy_flush(struct pgproxy *px)
{
    size_t off = 0;
    pthread_mutex_lock(&px->mu);
    while (px->len - off >= 5) {
        unsigned char type = px->buf[off];
        uint32_t mlen;
        memcpy(&mlen, px->buf + off + 1, 4);
        size_t total = 1 + (size_t)ntohl(mlen);
        if (px->len - off < total)
            break;
        if (px->hold == (char)type && !px->released) {
            px->holding = true;
            pgproxy_count_queued(px, off + total);
            pthread_cond_broadcast(&px->cv);
            break;
        }
        if (px->hold == (char)type) { /* released: this one goes, the hold ends */
            px->hold = 0;
            px->holding = px->released = false;
            memset(px->queued, 0, sizeof(px->queued));
        }
        px->relayed[type]++;
        off += total;
    }
    pthread_mutex_unlock(&px->mu);
    int rc = off ? pgproxy_write_all(px->client, px->buf, off) : 0;
    memmove(px->buf, px->buf + off, px->len - off);
    px->len -= off;
    return rc;
}

/* Read what the server sent into the buffer (grown to hold a long message). */
static int pgproxy_fill(struct pgproxy *px)
{
    if (px->cap - px->len < 4096) {
        px->cap *= 2;
        unsigned char *b = realloc(px->buf, px->cap);
        if (!b)
            return -1;
        px->buf = b;
    }
    ssize_t n = read(px->server, px->buf + px->len, px->cap - px->len);
    if (n <= 0)
        return -1;
    px->len += (size_t)n;
    return 0;
}

static bool pgproxy_stopping(struct pgproxy *px)
{
    pthread_mutex_lock(&px->mu);
    bool s = px->stopping;
    pthread_mutex_unlock(&px->mu);
    return s;
}

static int pgproxy_accept(struct pgproxy *px)
{
    struct pollfd pf[2] = {{.fd = px->listen_fd, .events = POLLIN},
                           {.fd = px->wake, .events = POLLIN}};
    while (!pgproxy_stopping(px)) {
        if (poll(pf, 2, -1) < 0 && errno != EINTR)
            return -1;
        if (pf[1].revents) {
            uint64_t v;
            if (read(px->wake, &v, sizeof(v)) < 0 && errno != EAGAIN)
                return -1;
        }
        if (pf[0].revents & POLLIN) {
            px->client = accept4(px->listen_fd, NULL, NULL, SOCK_CLOEXEC);
            if (px->client < 0)
                return -1;
            struct sockaddr_in sa = {.sin_family = AF_INET,
                                     .sin_port = htons((uint16_t)px->server_port),
                                     .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
            px->server = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
            if (px->server < 0 || connect(px->server, (struct sockaddr *)&sa, sizeof(sa)))
                return -1;
            int one = 1;
            setsockopt(px->client, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
            setsockopt(px->server, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
            return 0;
        }
    }
    return -1;
}

static void *pgproxy_main(void *arg)
{
    struct pgproxy *px = arg;
    if (pgproxy_accept(px))
        return NULL;
    unsigned char cbuf[8192];
    struct pollfd pf[3] = {{.fd = px->client, .events = POLLIN},
                           {.fd = px->server, .events = POLLIN},
                           {.fd = px->wake, .events = POLLIN}};
    while (!pgproxy_stopping(px)) {
        if (poll(pf, 3, -1) < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        if (pf[2].revents) {
            uint64_t v;
            if (read(px->wake, &v, sizeof(v)) < 0 && errno != EAGAIN)
                break;
        }
        if (pf[0].revents) {
            ssize_t n = read(px->client, cbuf, sizeof(cbuf));
            if (n <= 0 || pgproxy_write_all(px->server, cbuf, (size_t)n))
                break;
        }
        if (pf[1].revents && pgproxy_fill(px))
            break;
        if (pgproxy_flush(px))
            break;
    }
    /* Either side gone (or stop): so is the other. */
    shutdown(px->client, SHUT_RDWR);
    shutdown(px->server, SHUT_RDWR);
    return NULL;
}

int pgproxy_start(int server_port, struct pgproxy **out)
{
    struct pgproxy *px = calloc(1, sizeof(*px));
    if (!px)
        return -ENOMEM;
    px->server_port = server_port;
    px->client = px->server = -1;
    px->cap = 16384;
    px->buf = malloc(px->cap);
    pthread_mutex_init(&px->mu, NULL);
    mclock_cond_init(&px->cv);
    int rc = 0;
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t salen = sizeof(sa);
    px->listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    px->wake = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (!px->buf || px->listen_fd < 0 || px->wake < 0 ||
        bind(px->listen_fd, (struct sockaddr *)&sa, sizeof(sa)) ||
        getsockname(px->listen_fd, (struct sockaddr *)&sa, &salen) || listen(px->listen_fd, 1))
        rc = errno ? -errno : -ENOMEM;
    if (!rc) {
        px->port = ntohs(sa.sin_port);
        rc = -pthread_create(&px->tid, NULL, pgproxy_main, px);
    }
    if (rc) {
        if (px->listen_fd >= 0)
            close(px->listen_fd);
        if (px->wake >= 0)
            close(px->wake);
        pthread_cond_destroy(&px->cv);
        pthread_mutex_destroy(&px->mu);
        free(px->buf);
        free(px);
        return rc;
    }
    *out = px;
    return 0;
}

int pgproxy_port(const struct pgproxy *px)
{
    return px->port;
}

static void pgproxy_poke(struct pgproxy *px)
{
    uint64_t one = 1;
    if (write(px->wake, &one, sizeof(one)) < 0 && errno != EAGAIN)
        abort(); /* an eventfd write fails only on overflow (EAGAIN) */
}

void pgproxy_hold(struct pgproxy *px, char type)
{
    pthread_mutex_lock(&px->mu);
    px->hold = type;
    px->holding = px->released = false;
    pthread_mutex_unlock(&px->mu);
}

bool pgproxy_wait_held(struct pgproxy *px, int64_t deadline_us)
{
    struct timespec ts = mclock_timespec(deadline_us);
    pthread_mutex_lock(&px->mu);
    while (!px->holding && pthread_cond_timedwait(&px->cv, &px->mu, &ts) != ETIMEDOUT)
        ;
    bool held = px->holding;
    pthread_mutex_unlock(&px->mu);
    return held;
}

void pgproxy_release(struct pgproxy *px)
{
    pthread_mutex_lock(&px->mu);
    px->released = true;
    pthread_mutex_unlock(&px->mu);
    pgproxy_poke(px);
}

bool pgproxy_wait_queued(struct pgproxy *px, char type, int64_t deadline_us)
{
    struct timespec ts = mclock_timespec(deadline_us);
    pthread_mutex_lock(&px->mu);
    while (!(px->holding && px->queued[(unsigned char)type]) &&
           pthread_cond_timedwait(&px->cv, &px->mu, &ts) != ETIMEDOUT)
        ;
    bool queued = px->holding && px->queued[(unsigned char)type];
    pthread_mutex_unlock(&px->mu);
    return queued;
}

unsigned pgproxy_relayed(struct pgproxy *px, char type)
{
    pthread_mutex_lock(&px->mu);
    unsigned n = px->relayed[(unsigned char)type];
    pthread_mutex_unlock(&px->mu);
    return n;
}

void pgproxy_stop(struct pgproxy *px)
{
    pthread_mutex_lock(&px->mu);
    px->stopping = true;
    pthread_mutex_unlock(&px->mu);
    pgproxy_poke(px);
    pthread_join(px->tid, NULL);
    if (px->client >= 0)
        close(px->client);
    if (px->server >= 0)
        close(px->server);
    close(px->listen_fd);
    close(px->wake);
    pthread_cond_destroy(&px->cv);
    pthread_mutex_destroy(&px->mu);
    free(px->buf);
    free(px);
}
