/*
 * http: the listener, the loops and the connection limits (see http.h).
 *
 * Each loop has an epoll set of its own for its connections and the listening socket (the
 * loop's source in evloop.h terms); the loop's run drains it without waiting. A connection is
 * registered once, edge-triggered, and conn.c does the rest.
 */
#include "http.h"
#include "compiler.h"
#include "conn.h"
#include "cpus.h"
#include "evloop.h"
#include "h1.h"
#include "htable.h"
#include "log.h"
#include "mclock.h"
#include "params.h"
#include "request.h"
#include "xalloc.h"

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define HTTP_BACKLOG      1024
#define HTTP_ACCEPT_BATCH 64         /* connections one turn accepts at most */
#define HTTP_EVENTS       128        /* events one turn takes from a loop's set */
#define HTTP_EMFILE_RETRY 100000     /* us before accepting again when out of descriptors */
#define HTTP_PARSER_HEAD  (2u << 20) /* the parser's own head limit, above any buffer's */

/* One client, as every address-keyed limit names it (params_client_key: an IPv4 address, an
 * IPv6 client's network of CLIENT_IPV6_PREFIX bits): its connections, and when each refusal
 * was last logged for it. */
struct http_addr {
    struct htable_node node;
    char key[PARAMS_CLIENT_KEY_MAX];
    unsigned conns; /* connections counted against the cap */
    unsigned refs;  /* connections that point here (refused and exempt ones too) */
    int64_t logged_us[CONN_REFUSAL_COUNT];
};

struct http_loop {
    struct conn_loop cl; /* its connections (first: conn.c's callbacks get it) */
    struct http *h;
    unsigned index;
    int ep;                    /* owned: connections and the listening socket */
    bool listening;            /* the listening socket is in ep */
    bool quiesced;             /* never again */
    bool emfile;               /* accept ran out of descriptors: waiting for retry */
    struct evloop_watch retry; /* accept again after HTTP_EMFILE_RETRY */
};

struct http {
    struct http_opts opts; /* copied; what it points to is not owned */
    struct conn_env env;
    uint16_t port;
    int listen_fd;        /* owned until quiesced, then closed (-1) */
    struct evloop *loops; /* owned: the HTTP threads */
    unsigned n;
    struct params_cidr proxies[PARAMS_CIDRS_MAX]; /* TRUSTED_PROXIES: no per-address cap */
    size_t nproxies;
    unsigned max_per_addr; /* 0: no cap */
    unsigned max_conns;    /* HTTP_MAX_CONNECTIONS, for all the loops together */
    atomic_uint open;      /* _shared: connections open on all the loops (the cap's count) */
    unsigned ipv6_prefix;  /* CLIENT_IPV6_PREFIX: the bits of an IPv6 address keyed on */
    /* _shared: addr_mutex guards addrs and every entry's counts and log times. */
    pthread_mutex_t addr_mutex;
    struct htable addrs;            /* struct http_addr, owned */
    struct http_counters own;       /* the counters when the caller gives none */
    struct http_counters *counters; /* opts.counters or &own */
    struct http_loop loop[];        /* n of them */
};

static struct http_loop *http_loop_of(struct conn_loop *cl)
{
    return container_of(cl, struct http_loop, cl);
}

/* ---- listening on and off (loop thread) --------------------------------------------------- */

static void http_listen_on(struct http_loop *hl)
{
    if (hl->listening || hl->quiesced || hl->emfile || hl->h->listen_fd < 0)
        return;
    struct epoll_event ev = {.events = EPOLLIN | EPOLLEXCLUSIVE, .data.ptr = NULL};
    if (epoll_ctl(hl->ep, EPOLL_CTL_ADD, hl->h->listen_fd, &ev) == 0)
        hl->listening = true;
    else
        log_warn("http", "%s: cannot watch the listening socket: %s", hl->h->opts.name,
                 strerror(errno));
}

static void http_listen_off(struct http_loop *hl)
{
    if (!hl->listening)
        return;
    epoll_ctl(hl->ep, EPOLL_CTL_DEL, hl->h->listen_fd, NULL);
    hl->listening = false;
}

/* Whether the loop can take a connection now: the server below the cap, or the loop with a
 * lingering or idle keep-alive connection to close for it. */
static bool http_has_room(struct http_loop *hl)
{
    return atomic_load_explicit(&hl->h->open, memory_order_relaxed) < hl->h->max_conns ||
           hl->cl.linger.n > 0 || hl->cl.idle.n > 0;
}

/* Take a place under the cap for a new connection; false when all are taken. */
static bool http_place(struct http *h)
{
    unsigned n = atomic_load_explicit(&h->open, memory_order_relaxed);
    while (n < h->max_conns)
        if (atomic_compare_exchange_weak_explicit(&h->open, &n, n + 1, memory_order_relaxed,
                                                  memory_order_relaxed))
            return true;
    return false;
}

static void http_retry_accept(struct evloop_watch *w, enum evloop_event ev)
{
    struct http_loop *hl = container_of(w, struct http_loop, retry);
    hl->emfile = false;
    if (ev != EVLOOP_STOP && http_has_room(hl))
        http_listen_on(hl);
}

/* ---- client addresses --------------------------------------------------------------------- */

static void http_addr_of(const struct sockaddr_storage *ss, struct conn_addr *a)
{
    memset(a, 0, sizeof(*a));
    a->family = ss->ss_family;
    if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)(const void *)ss;
        memcpy(a->bytes, &s6->sin6_addr, 16);
        inet_ntop(AF_INET6, &s6->sin6_addr, a->text, sizeof(a->text));
    } else if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *s4 = (const struct sockaddr_in *)(const void *)ss;
        memcpy(a->bytes, &s4->sin_addr, 4);
        inet_ntop(AF_INET, &s4->sin_addr, a->text, sizeof(a->text));
    } else {
        snprintf(a->text, sizeof(a->text), "unknown");
    }
}

/* The client's entry (keyed as the rate limiter and the tarpit key it), made on first use,
 * with one more reference. The connection counts against the cap (*counted) unless it comes
 * from a trusted proxy (exempt: decided by its own address, not its network's) or the cap is
 * reached (*refused). */
static struct http_addr *http_addr_take(struct http *h, const struct conn_addr *a, bool *refused,
                                        bool *counted)
{
    char key[PARAMS_CLIENT_KEY_MAX];
    params_client_key(a->text, h->ipv6_prefix, key, sizeof(key));
    bool exempt = h->nproxies && params_cidr_contains(h->proxies, h->nproxies, a->text);
    uint64_t hash = htable_hash_str(key);
    pthread_mutex_lock(&h->addr_mutex);
    struct http_addr *e = NULL;
    for (struct htable_node *n = htable_first(&h->addrs, hash); n; n = htable_next(n, hash)) {
        struct http_addr *x = container_of(n, struct http_addr, node);
        if (!strcmp(x->key, key)) {
            e = x;
            break;
        }
    }
    if (!e) {
        e = xcalloc(1, sizeof(*e));
        memcpy(e->key, key, sizeof(key));
        htable_insert(&h->addrs, &e->node, hash);
    }
    e->refs++;
    *refused = h->max_per_addr && !exempt && e->conns >= h->max_per_addr;
    *counted = h->max_per_addr && !exempt && !*refused;
    if (*counted)
        e->conns++;
    pthread_mutex_unlock(&h->addr_mutex);
    return e;
}

static void http_addr_drop(struct http *h, struct http_addr *e, bool counted)
{
    pthread_mutex_lock(&h->addr_mutex);
    if (counted)
        e->conns--;
    if (--e->refs == 0) {
        htable_remove(&h->addrs, &e->node);
        free(e);
    }
    pthread_mutex_unlock(&h->addr_mutex);
}

/* ---- conn.c's callbacks (loop thread) ----------------------------------------------------- */

static void http_closed(struct conn_loop *cl, struct conn *c)
{
    struct http_loop *hl = http_loop_of(cl);
    atomic_fetch_sub_explicit(&hl->h->open, 1, memory_order_relaxed);
    http_addr_drop(hl->h, c->addr_entry, c->addr_counted);
    if (hl->emfile && !hl->cl.stopping) {
        /* A descriptor is free again: accept now rather than at the retry. */
        evloop_unwatch(&hl->retry);
        hl->emfile = false;
    }
    if (http_has_room(hl))
        http_listen_on(hl);
}

static void http_evictable(struct conn_loop *cl)
{
    http_listen_on(http_loop_of(cl)); /* an idle or lingering connection can make room */
}

static const char *const http_refusal_what[CONN_REFUSAL_COUNT] = {
    [CONN_HEAD_TIMEOUT] = "request heads not complete within HTTP_HEAD_TIMEOUT_MS (408)",
    [CONN_BODY_TIMEOUT] = "request bodies not complete within HTTP_BODY_TIMEOUT_MS (408)",
    [CONN_MALFORMED] = "requests that are not HTTP/1.x or have too large a head",
    [CONN_ADDR_CAP] = "connections over HTTP_MAX_CONNECTIONS_PER_ADDRESS refused (429)",
    [CONN_EVICTED] = "idle keep-alive connections closed for new clients at HTTP_MAX_CONNECTIONS",
};

/* Logged once per address and HTTP_LOG_PERIOD_US (a flood must not flood the log). */
static void http_refused(struct conn_loop *cl, struct conn *c, enum conn_refusal why)
{
    struct http *h = http_loop_of(cl)->h;
    struct http_addr *e = c->addr_entry;
    int64_t now = mclock_now_us();
    pthread_mutex_lock(&h->addr_mutex);
    bool log = !e->logged_us[why] || now - e->logged_us[why] >= HTTP_LOG_PERIOD_US;
    if (log)
        e->logged_us[why] = now;
    pthread_mutex_unlock(&h->addr_mutex);
    if (log)
        log_warn("http",
                 "%s: client %s (%s): %s (logged once a minute per client; counted in "
                 "bulkhead_http_refusals_total)",
                 h->opts.name, c->addr.text, e->key, http_refusal_what[why]);
}

/* ---- the loop's turn ---------------------------------------------------------------------- */

static void http_accept(struct http_loop *hl)
{
    struct http *h = hl->h;
    for (int k = 0; k < HTTP_ACCEPT_BATCH; k++) {
        if (!http_has_room(hl)) {
            http_listen_off(hl); /* back when a connection closes or goes idle */
            return;
        }
        struct sockaddr_storage ss;
        socklen_t sl = sizeof(ss);
        int fd = accept4(h->listen_fd, (struct sockaddr *)&ss, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                /* Out of descriptors: the client waits in the backlog; try again soon, or when
                 * one of ours closes. */
                http_listen_off(hl);
                hl->emfile = true;
                if (evloop_watch(hl->cl.t, &hl->retry, NULL, mclock_now_us() + HTTP_EMFILE_RETRY))
                    hl->emfile = false;
            }
            return;
        }
        struct conn_addr a;
        http_addr_of(&ss, &a);
        bool refused, counted;
        struct http_addr *e = http_addr_take(h, &a, &refused, &counted);
        /* The cap counts the connections of all the loops: below it, nothing is closed for a
         * newcomer, however many this loop holds. At it, room is made from this loop's
         * lingering connection (answered already), else, only for a connection that will be
         * served, from its oldest idle one: one refused for its address must not cost another
         * client its idle connection. A refused one that nothing was closed for is answered and
         * closed at once: the cap holds. The place freed is taken at once; should another loop
         * take it first, this connection is one over the cap until one closes. */
        bool over = false;
        if (!http_place(h)) {
            over = !conn_evict_oldest(&hl->cl, !refused) || !http_place(h);
            if (over)
                atomic_fetch_add_explicit(&h->open, 1, memory_order_relaxed);
        }
        struct conn *c = conn_open(&hl->cl, fd, e, &a);
        c->addr_counted = counted;
        struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET,
                                 .data.ptr = c};
        if (epoll_ctl(hl->ep, EPOLL_CTL_ADD, fd, &ev)) {
            log_warn("http", "cannot watch a connection: %s", strerror(errno));
            conn_refuse(c, APIERR_SHUTTING_DOWN, NULL, false);
            continue;
        }
        if (refused) {
            conn_counter_add(h->counters, CONN_ADDR_CAP);
            http_refused(&hl->cl, c, CONN_ADDR_CAP);
            char msg[120];
            snprintf(msg, sizeof(msg), "this address holds %u connections already",
                     h->max_per_addr);
            conn_refuse(c, APIERR_TOO_MANY_CONNECTIONS, msg, !over);
        }
    }
}

static void http_run(void *ctx, unsigned i)
{
    struct http *h = ctx;
    struct http_loop *hl = &h->loop[i];
    if (hl->cl.stopping)
        return;
    struct epoll_event evs[HTTP_EVENTS];
    int n = epoll_wait(hl->ep, evs, HTTP_EVENTS, 0);
    for (int k = 0; k < n; k++) {
        if (!evs[k].data.ptr)
            http_accept(hl);
        else
            conn_event(evs[k].data.ptr, evs[k].events);
    }
}

static int64_t http_timeout_us(void *ctx, unsigned i)
{
    (void)ctx;
    (void)i;
    return -1; /* every deadline is a watch in the loop's own heap */
}

/* ---- start and stop ----------------------------------------------------------------------- */

unsigned http_thread_count(const struct http_settings *set)
{
    unsigned n = set->threads > 0 ? (unsigned)set->threads : cpus_usable();
    return n > EVLOOP_MAX ? EVLOOP_MAX : n;
}

static unsigned http_threads(const struct http_opts *opts)
{
    unsigned n = opts->threads ? opts->threads : http_thread_count(&opts->set);
    return n > EVLOOP_MAX ? EVLOOP_MAX : n;
}

/* The listening socket the loops share. */
static int http_listen(const struct http_settings *set, int64_t port, int *out)
{
    struct sockaddr_in sin = {0};
    struct sockaddr_in6 sin6 = {0};
    struct sockaddr *sa;
    socklen_t salen;
    bool v6 = false;
    if (inet_pton(AF_INET, set->bind, &sin.sin_addr) == 1) {
        sin.sin_family = AF_INET;
        sin.sin_port = htons((uint16_t)port);
        sa = (struct sockaddr *)&sin;
        salen = sizeof(sin);
    } else if (inet_pton(AF_INET6, set->bind, &sin6.sin6_addr) == 1) {
        sin6.sin6_family = AF_INET6;
        sin6.sin6_port = htons((uint16_t)port);
        sa = (struct sockaddr *)&sin6;
        salen = sizeof(sin6);
        v6 = true;
    } else {
        log_error("config", "API_BIND: \"%s\" is not an IPv4 or IPv6 address", set->bind);
        return -EINVAL;
    }
    int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (v6)
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
    if (bind(fd, sa, salen) || listen(fd, HTTP_BACKLOG)) {
        int rc = -errno;
        close(fd);
        return rc;
    }
    *out = fd;
    return 0;
}

/* Loop thread, before its first turn's work: the loop's own pointer. */
static void http_bind_loop(void *ctx, unsigned i)
{
    struct http *h = ctx;
    h->loop[i].cl.t = evloop_current();
    http_listen_on(&h->loop[i]);
}

int http_start(const struct http_opts *opts, struct http **out)
{
    const struct http_settings *set = &opts->set;
    unsigned n = http_threads(opts);
    struct http *h = xcalloc(1, sizeof(*h) + n * sizeof(h->loop[0]));
    h->opts = *opts;
    if (!h->opts.name)
        h->opts.name = "http";
    opts = &h->opts;
    h->n = n;
    h->listen_fd = -1;
    pthread_mutex_init(&h->addr_mutex, NULL);
    htable_init(&h->addrs, 64);
    h->env = (struct conn_env){.hooks = opts->hooks,
                               .draining = opts->draining,
                               .drain_exempt = opts->drain_exempt,
                               .dispatch = opts->dispatch,
                               .ctx = opts->ctx,
                               .max_head = (size_t)set->conn_memory,
                               .max_body = (size_t)set->max_body,
                               .idle_us = set->idle_timeout * 1000000,
                               .head_us = set->head_timeout * 1000,
                               .body_us = set->body_timeout * 1000};
    h->max_per_addr = set->max_per_addr > 0 ? (unsigned)set->max_per_addr : 0;
    h->max_conns = (unsigned)set->max_conns;
    h->ipv6_prefix = (unsigned)set->ipv6_prefix;
    h->counters = opts->counters ? opts->counters : &h->own;
    h1_global_init(HTTP_PARSER_HEAD);
    for (unsigned i = 0; i < n; i++) {
        struct http_loop *hl = &h->loop[i];
        hl->h = h;
        hl->index = i;
        hl->ep = -1;
        hl->retry.fd = -1;
        hl->retry.fire = http_retry_accept;
        hl->cl.env = &h->env;
        hl->cl.counters = h->counters;
        hl->cl.closed = http_closed;
        hl->cl.refused = http_refused;
        hl->cl.evictable = http_evictable;
    }
    char why[200];
    if (set->trusted_proxies &&
        params_parse_cidrs(set->trusted_proxies, h->proxies, PARAMS_CIDRS_MAX, &h->nproxies, why,
                           sizeof(why))) {
        log_error("config", "TRUSTED_PROXIES: %s", why);
        http_stop(h);
        return -EINVAL;
    }
    int rc = http_listen(set, opts->port, &h->listen_fd);
    if (rc) {
        if (rc != -EINVAL)
            log_error("http_start",
                      "%s: cannot listen on %s:%" PRId64 " (port in use, or no permission): %s",
                      opts->name, set->bind, opts->port, strerror(-rc));
        http_stop(h);
        return rc == -EINVAL ? rc : -EADDRINUSE;
    }
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    if (getsockname(h->listen_fd, (struct sockaddr *)&ss, &sl) == 0)
        h->port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                                 : ((struct sockaddr_in *)&ss)->sin_port);
    int sources[EVLOOP_MAX];
    for (unsigned i = 0; i < n; i++) {
        h->loop[i].ep = epoll_create1(EPOLL_CLOEXEC);
        if (h->loop[i].ep < 0) {
            rc = -errno;
            log_error("http_start", "epoll_create1: %s", strerror(-rc));
            http_stop(h);
            return rc;
        }
        sources[i] = h->loop[i].ep;
    }
    struct evloop_ops ops = {.run = http_run,
                             .timeout_us = http_timeout_us,
                             .ctx = h,
                             .lag = opts->loop_lag,
                             .lag_probe_us = opts->loop_lag ? HTTP_LAG_PROBE_US : 0};
    rc = evloop_start(opts->name, n, sources, &ops, &h->loops);
    if (rc) {
        log_error("http_start", "cannot start the HTTP threads: %s", strerror(-rc));
        http_stop(h);
        return rc;
    }
    evloop_call(h->loops, http_bind_loop, h);
    log_info("http_start", "%s: listening on %s:%u with %u HTTP threads", opts->name, set->bind,
             h->port, n);
    *out = h;
    return 0;
}

/* Loop thread: this loop stops accepting (the socket is closed once all have). */
static void http_quiesce_one(void *ctx, unsigned i)
{
    struct http *h = ctx;
    http_listen_off(&h->loop[i]);
    h->loop[i].quiesced = true;
}

void http_quiesce(struct http *h)
{
    if (!h || h->listen_fd < 0)
        return;
    if (h->loops)
        evloop_call(h->loops, http_quiesce_one, h);
    close(h->listen_fd);
    h->listen_fd = -1;
}

/* Loop thread: no deadline is armed from here on (the loop's last turns fire the armed ones
 * EVLOOP_STOP and must find none armed again). */
static void http_stopping_one(void *ctx, unsigned i)
{
    struct http *h = ctx;
    h->loop[i].cl.stopping = true;
}

void http_stop(struct http *h)
{
    if (!h)
        return;
    http_quiesce(h);
    if (h->loops)
        evloop_call(h->loops, http_stopping_one, h);
    evloop_stop(h->loops);
    /* The loops have ended: what is left closes here (a request not answered yet is the
     * client's loss: 499 in its access line). */
    for (unsigned i = 0; i < h->n; i++) {
        conn_close_all(&h->loop[i].cl);
        conn_loop_free(&h->loop[i].cl);
        if (h->loop[i].ep >= 0)
            close(h->loop[i].ep);
    }
    htable_destroy(&h->addrs);
    pthread_mutex_destroy(&h->addr_mutex);
    free(h);
}

uint16_t http_port(const struct http *h)
{
    return h->port;
}

const struct http_counters *http_counters_of(const struct http *h)
{
    return h->counters;
}
