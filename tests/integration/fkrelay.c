/*
 * fkrelay: a relay in front of PostgreSQL that can go silent (see fkrelay.h).
 */
#include "fkrelay.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#define FK_RELAY_CONNS 256

struct fk_relay_conn {
    int client, server;    /* -1 once closed */
    char app[64];          /* application_name from the startup packet, or "" */
    unsigned char hd[512]; /* the client's first bytes, until the name is found */
    size_t hdlen;
};

struct fk_relay {
    pthread_t tid;
    int listen_fd, port, upstream_port;
    int wake; /* eventfd: cut changed, or stop */
    /* _shared: mu guards everything below. */
    pthread_mutex_t mu;
    bool cut, stopping;
    struct fk_relay_conn conns[FK_RELAY_CONNS];
    size_t nconns;
};

/* Find "application_name\0<name>\0" in the client's first bytes. */
static void fk_relay_note_app(struct fk_relay_conn *c, const unsigned char *p, size_t n)
{
    if (c->app[0] || c->hdlen == sizeof(c->hd))
        return;
    size_t take = n < sizeof(c->hd) - c->hdlen ? n : sizeof(c->hd) - c->hdlen;
    memcpy(c->hd + c->hdlen, p, take);
    c->hdlen += take;
    static const char key[] = "application_name";
    for (size_t i = 0; i + sizeof(key) < c->hdlen; i++) {
        if (memcmp(c->hd + i, key, sizeof(key)) != 0) /* with its NUL */
            continue;
        size_t s = i + sizeof(key), e = s;
        while (e < c->hdlen && c->hd[e])
            e++;
        if (e < c->hdlen && e - s < sizeof(c->app)) {
            memcpy(c->app, c->hd + s, e - s);
            c->app[e - s] = '\0';
        }
        return;
    }
}

static int fk_relay_write_all(int fd, const unsigned char *p, size_t n)
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

static void fk_relay_close(struct fk_relay_conn *c)
{
    if (c->client >= 0)
        close(c->client);
    if (c->server >= 0)
        close(c->server);
    c->client = c->server = -1;
}

/* Accept one client and connect it upstream. Under mu. */
static void fk_relay_accept(struct fk_relay *r)
{
    int cl = accept4(r->listen_fd, NULL, NULL, SOCK_CLOEXEC);
    if (cl < 0)
        return;
    struct sockaddr_in sa = {.sin_family = AF_INET,
                             .sin_port = htons((uint16_t)r->upstream_port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int sv = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (sv < 0 || connect(sv, (struct sockaddr *)&sa, sizeof(sa)) || r->nconns == FK_RELAY_CONNS) {
        if (sv >= 0)
            close(sv);
        close(cl);
        return;
    }
    struct fk_relay_conn *c = &r->conns[r->nconns++];
    memset(c, 0, sizeof(*c));
    c->client = cl;
    c->server = sv;
}

static void *fk_relay_main(void *arg)
{
    struct fk_relay *r = arg;
    unsigned char buf[16384];
    struct pollfd pf[2 + 2 * FK_RELAY_CONNS];
    pthread_mutex_lock(&r->mu);
    while (!r->stopping) {
        /* Drop closed connections. */
        size_t k = 0;
        for (size_t i = 0; i < r->nconns; i++)
            if (r->conns[i].client >= 0)
                r->conns[k++] = r->conns[i];
        r->nconns = k;
        nfds_t n = 0;
        pf[n++] = (struct pollfd){.fd = r->wake, .events = POLLIN};
        /* Cut: nothing is read, so everything stays where it is (the backlog included). */
        pf[n++] = (struct pollfd){.fd = r->cut ? -1 : r->listen_fd, .events = POLLIN};
        for (size_t i = 0; i < r->nconns; i++) {
            pf[n++] = (struct pollfd){.fd = r->cut ? -1 : r->conns[i].client, .events = POLLIN};
            pf[n++] = (struct pollfd){.fd = r->cut ? -1 : r->conns[i].server, .events = POLLIN};
        }
        pthread_mutex_unlock(&r->mu);
        int ready = poll(pf, n, -1);
        pthread_mutex_lock(&r->mu);
        if (ready < 0)
            continue;
        if (pf[0].revents) {
            uint64_t v;
            if (read(r->wake, &v, sizeof(v)) < 0 && errno != EAGAIN)
                break;
        }
        if (r->cut)
            continue; /* what poll saw before the cut stays unread */
        for (size_t i = 0; i < r->nconns; i++) {
            struct fk_relay_conn *c = &r->conns[i];
            for (int side = 0; side < 2 && c->client >= 0; side++) {
                if (!pf[2 + 2 * i + (size_t)side].revents)
                    continue;
                int from = side ? c->server : c->client, to = side ? c->client : c->server;
                ssize_t got = read(from, buf, sizeof(buf));
                if (got <= 0 || fk_relay_write_all(to, buf, (size_t)got)) {
                    fk_relay_close(c);
                    break;
                }
                if (!side)
                    fk_relay_note_app(c, buf, (size_t)got);
            }
        }
        if (pf[1].revents & POLLIN)
            fk_relay_accept(r);
    }
    pthread_mutex_unlock(&r->mu);
    return NULL;
}

int fk_relay_start(int upstream_port, struct fk_relay **out)
{
    struct fk_relay *r = calloc(1, sizeof(*r));
    if (!r)
        return -1;
    r->upstream_port = upstream_port;
    pthread_mutex_init(&r->mu, NULL);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t salen = sizeof(sa);
    r->listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    r->wake = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (r->listen_fd < 0 || r->wake < 0 || bind(r->listen_fd, (struct sockaddr *)&sa, sizeof(sa)) ||
        getsockname(r->listen_fd, (struct sockaddr *)&sa, &salen) || listen(r->listen_fd, 128) ||
        pthread_create(&r->tid, NULL, fk_relay_main, r)) {
        if (r->listen_fd >= 0)
            close(r->listen_fd);
        if (r->wake >= 0)
            close(r->wake);
        pthread_mutex_destroy(&r->mu);
        free(r);
        return -1;
    }
    r->port = ntohs(sa.sin_port);
    *out = r;
    return 0;
}

int fk_relay_port(const struct fk_relay *r)
{
    return r->port;
}

static void fk_relay_poke(struct fk_relay *r)
{
    uint64_t one = 1;
    if (write(r->wake, &one, sizeof(one)) < 0 && errno != EAGAIN)
        abort();
}

void fk_relay_cut(struct fk_relay *r, bool cut)
{
    pthread_mutex_lock(&r->mu);
    r->cut = cut;
    pthread_mutex_unlock(&r->mu);
    fk_relay_poke(r);
}

bool fk_relay_waiting(struct fk_relay *r, const char *appname)
{
    bool waiting = false;
    pthread_mutex_lock(&r->mu);
    for (size_t i = 0; r->cut && i < r->nconns && !waiting; i++) {
        const struct fk_relay_conn *c = &r->conns[i];
        if (c->client < 0 || strcmp(c->app, appname) != 0)
            continue;
        /* Its request held back, or the database's answer to a request sent before the cut. */
        int to_db = 0, from_db = 0;
        waiting = (ioctl(c->client, FIONREAD, &to_db) == 0 && to_db > 0) ||
                  (c->server >= 0 && ioctl(c->server, FIONREAD, &from_db) == 0 && from_db > 0);
    }
    pthread_mutex_unlock(&r->mu);
    return waiting;
}

void fk_relay_stop(struct fk_relay *r)
{
    pthread_mutex_lock(&r->mu);
    r->stopping = true;
    pthread_mutex_unlock(&r->mu);
    fk_relay_poke(r);
    pthread_join(r->tid, NULL);
    for (size_t i = 0; i < r->nconns; i++)
        fk_relay_close(&r->conns[i]);
    close(r->listen_fd);
    close(r->wake);
    pthread_mutex_destroy(&r->mu);
    free(r);
}
