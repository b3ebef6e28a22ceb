/*
 * http: libmicrohttpd glue (see http.h).
 *
 * libmicrohttpd calls http_access several times per request: once when the headers are in,
 * once per body chunk, and once more when the body is complete. Replies are queued on the last
 * of these calls (or after a resume), never on the first: a reply queued before the request
 * is read makes libmicrohttpd close a keep-alive connection. The exceptions are deliberate:
 * 411 for a chunked body, 413 for a declared oversized body and 503 during shutdown close the
 * connection on purpose. (libmicrohttpd cannot queue a reply while a body is arriving, which is
 * why a body must declare its size: only then can it be refused before it is read.)
 *
 * The head is judged first (reqhead.h): too large, no Host, or ambiguous, it is answered in
 * JSON and the connection closed. libmicrohttpd refuses some heads itself, with a short HTML
 * body this server cannot change (it has no hook for them): a head past the memory it was
 * given, an HTTP version other than 1.x, a malformed request line or Content-Length. It is
 * given twice HTTP_CONNECTION_MEMORY, so that a head just over the limit (a long cookie or
 * token) still reaches reqhead and gets the JSON 431 or 414; only one over twice the limit
 * meets libmicrohttpd's own.
 */
#include "http.h"
#include "apierr.h"
#include "cpus.h"
#include "evloop.h"
#include "log.h"
#include "reqhead.h"
#include "request.h"
#include "xalloc.h"

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define HTTP_BACKLOG 1024

struct http {
    struct http_opts opts; /* copied; what it points to is not owned */
    size_t max_body;       /* HTTP_MAX_BODY_BYTES */
    size_t max_head;       /* HTTP_CONNECTION_MEMORY: the largest head served */
    uint16_t port;
    int listen_fd;                /* owned until quiesced, then closed (-1) */
    struct evloop *loops;         /* owned: the HTTP threads */
    unsigned n;                   /* threads, one daemon each */
    bool *closed;                 /* owned; closed[i]: a connection of daemon i closed during
                                     its run (http_notify; loop i's alone) */
    struct MHD_Daemon *daemons[]; /* owned; daemon i is driven by loop i */
};

static void http_mhd_log(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    char msg[512];
    vsnprintf(msg, sizeof(msg), fmt, ap);
    size_t n = strlen(msg);
    while (n && msg[n - 1] == '\n')
        msg[--n] = '\0';
    log_debug("http", "libmicrohttpd: %s", msg);
}

/* A declared Content-Length above the limit is refused before any of the body is read. */
static bool http_declared_too_large(struct request *r, size_t max)
{
    const char *cl = request_header(r, MHD_HTTP_HEADER_CONTENT_LENGTH);
    if (!cl)
        return false;
    char *end = NULL;
    errno = 0;
    unsigned long long v = strtoull(cl, &end, 10);
    return errno == ERANGE || (end && *end == '\0' && v > max);
}

static enum MHD_Result http_head_field(void *cls, enum MHD_ValueKind kind, const char *key,
                                       size_t key_size, const char *value, size_t value_size)
{
    (void)kind;
    (void)key_size;
    (void)value_size;
    reqhead_field(cls, key, value ? value : "");
    return MHD_YES;
}

/* The request target's length, less what decoding shrank: path, then "?k=v&..." */
static enum MHD_Result http_target_arg(void *cls, enum MHD_ValueKind kind, const char *key,
                                       size_t key_size, const char *value, size_t value_size)
{
    (void)kind;
    (void)key;
    (void)value;
    *(size_t *)cls += key_size + value_size + 2;
    return MHD_YES;
}

/* Judge the head (reqhead.h). Returns false with r's reply set when it is refused. */
static bool http_head_ok(const struct http *h, struct request *r, const char *url,
                         const char *version)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(r->conn, MHD_CONNECTION_INFO_REQUEST_HEADER_SIZE);
    size_t target = strlen(url);
    MHD_get_connection_values_n(r->conn, MHD_GET_ARGUMENT_KIND, http_target_arg, &target);
    struct reqhead head;
    reqhead_init(&head, ci ? ci->header_size : 0, target, version);
    MHD_get_connection_values_n(r->conn, MHD_HEADER_KIND, http_head_field, &head);
    const char *why = NULL;
    enum apierr e = reqhead_verdict(&head, h->max_head, &why);
    if (e == APIERR_COUNT)
        return true;
    if (e == APIERR_HEADERS_TOO_LARGE || e == APIERR_URI_TOO_LONG)
        apierr_replyf(r, e, "%s: a request head is limited to %zu bytes", why, h->max_head);
    else
        apierr_replyf(r, e, "%s", why);
    /* The framing may be the very thing in doubt: nothing more is read from this client. */
    request_add_header(r, MHD_HTTP_HEADER_CONNECTION, "close");
    return false;
}

static enum MHD_Result http_access(void *cls, struct MHD_Connection *conn, const char *url,
                                   const char *method, const char *version, const char *upload_data,
                                   size_t *upload_size, void **con_cls)
{
    struct http *h = cls;
    struct request *r = *con_cls;
    size_t max_body = h->max_body;

    if (!r) {
        r = request_new(h->opts.hooks, conn, url, method);
        *con_cls = r;
        if (!http_head_ok(h, r, url, version))
            return request_send(r);
        if (atomic_load_explicit(h->opts.draining, memory_order_relaxed) &&
            !(h->opts.drain_exempt && h->opts.drain_exempt(url))) {
            apierr_reply(r, APIERR_SHUTTING_DOWN);
            request_add_header(r, MHD_HTTP_HEADER_CONNECTION, "close");
            return request_send(r);
        }
        if (request_header(r, MHD_HTTP_HEADER_TRANSFER_ENCODING)) {
            /* libmicrohttpd cannot answer in the middle of a body, so a body of unknown size
             * could only be refused after reading all of it: require its size up front. */
            apierr_reply(r, APIERR_LENGTH_REQUIRED);
            return request_send(r);
        }
        if (http_declared_too_large(r, max_body)) {
            r->body_too_large = true;
            apierr_replyf(r, APIERR_PAYLOAD_TOO_LARGE, "request bodies are limited to %zu bytes",
                          max_body);
            return request_send(r);
        }
        return MHD_YES;
    }
    if (r->state == REQUEST_SENT) {
        /* A reply went out early (413); swallow whatever body still arrives. */
        *upload_size = 0;
        return MHD_YES;
    }
    if (*upload_size) {
        /* The declared length was checked on the first call, so this cannot overflow unless
         * the client sends more than it declared, which libmicrohttpd does not pass on. */
        if (!request_body_append(r, upload_data, *upload_size, max_body))
            return MHD_NO;
        *upload_size = 0;
        return MHD_YES;
    }
    /* Once dispatch has handed r on, a worker may be writing it: its answer says so, and the
     * worker's resume makes libmicrohttpd call again with the reply set. Until then only the
     * atomic state may be read (libmicrohttpd does make spurious calls while suspended). */
    if (r->state == REQUEST_NEW && h->opts.dispatch(h->opts.ctx, r))
        return MHD_YES;
    if (r->state == REQUEST_DEFERRED)
        return MHD_YES; /* a spurious call while suspended */
    return request_send(r);
}

static void http_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                           enum MHD_RequestTerminationCode toe)
{
    (void)cls;
    (void)conn;
    struct request *r = *con_cls;
    if (!r)
        return;
    *con_cls = NULL;
    request_finish(r, toe);
}

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

/* The listening socket the daemons share (each accepts from it on its own thread). */
static int http_listen(const struct http_settings *set, int64_t port, bool *v6, int *out)
{
    struct sockaddr_in sin = {0};
    struct sockaddr_in6 sin6 = {0};
    struct sockaddr *sa;
    socklen_t salen;
    if (inet_pton(AF_INET, set->bind, &sin.sin_addr) == 1) {
        sin.sin_family = AF_INET;
        sin.sin_port = htons((uint16_t)port);
        sa = (struct sockaddr *)&sin;
        salen = sizeof(sin);
        *v6 = false;
    } else if (inet_pton(AF_INET6, set->bind, &sin6.sin6_addr) == 1) {
        sin6.sin6_family = AF_INET6;
        sin6.sin6_port = htons((uint16_t)port);
        sa = (struct sockaddr *)&sin6;
        salen = sizeof(sin6);
        *v6 = true;
    } else {
        log_error("config", "API_BIND: \"%s\" is not an IPv4 or IPv6 address", set->bind);
        return -EINVAL;
    }
    int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (*v6)
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
    if (bind(fd, sa, salen) || listen(fd, HTTP_BACKLOG)) {
        int rc = -errno;
        close(fd);
        return rc;
    }
    *out = fd;
    return 0;
}

static void http_notify(void *cls, struct MHD_Connection *conn, void **socket_context,
                        enum MHD_ConnectionNotificationCode toe)
{
    (void)conn;
    (void)socket_context;
    bool *closed = cls; /* the daemon's flag: it runs on its loop's thread alone */
    if (toe == MHD_CONNECTION_NOTIFY_CLOSED)
        *closed = true;
}

static void http_run(void *ctx, unsigned i)
{
    struct http *h = ctx;
    h->closed[i] = false;
    MHD_run(h->daemons[i]);
    /* A daemon at its connection cap takes the listening socket out of its epoll set, and puts
     * it back only at the start of a run: after a close, run once more so that a client
     * waiting in the backlog is accepted now, not at the next event. */
    if (h->closed[i])
        MHD_run(h->daemons[i]);
}

static int64_t http_timeout_us(void *ctx, unsigned i)
{
    struct http *h = ctx;
    MHD_UNSIGNED_LONG_LONG ms;
    if (MHD_get_timeout(h->daemons[i], &ms) != MHD_YES)
        return -1;
    return ms > 1000 ? 1000000 : (int64_t)ms * 1000;
}

/* Loop i's daemon: libmicrohttpd in external epoll mode, accepting from the shared socket. */
static struct MHD_Daemon *http_daemon(struct http *h, unsigned i, bool v6)
{
    const struct http_settings *set = &h->opts.set;
    unsigned flags = MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ITC | MHD_USE_ERROR_LOG;
    if (v6)
        flags |= MHD_USE_IPv6;
    /* Each daemon takes its part of the connection cap, as libmicrohttpd's own pool does. */
    unsigned limit = (unsigned)set->max_conns / h->n + (i < (unsigned)set->max_conns % h->n);
    if (limit == 0)
        limit = 1;
    struct MHD_OptionItem mhd_opts[] = {
        {MHD_OPTION_LISTEN_SOCKET, h->listen_fd, NULL},
        {MHD_OPTION_NOTIFY_COMPLETED, (intptr_t)http_completed, h},
        {MHD_OPTION_NOTIFY_CONNECTION, (intptr_t)http_notify, &h->closed[i]},
        {MHD_OPTION_CONNECTION_LIMIT, (intptr_t)limit, NULL},
        {MHD_OPTION_CONNECTION_TIMEOUT, (intptr_t)set->idle_timeout, NULL},
        /* Room for a head over the limit to reach http_head_ok (see the top of this file). */
        {MHD_OPTION_CONNECTION_MEMORY_LIMIT, (intptr_t)(2 * set->conn_memory), NULL},
        {MHD_OPTION_END, 0, NULL},
    };
    /* The logger goes first so that libmicrohttpd's start-up messages reach it too. */
    return MHD_start_daemon(flags, 0, NULL, NULL, http_access, h, MHD_OPTION_EXTERNAL_LOGGER,
                            http_mhd_log, h, MHD_OPTION_ARRAY, mhd_opts, MHD_OPTION_END);
}

int http_start(const struct http_opts *opts, struct http **out)
{
    const struct http_settings *set = &opts->set;
    unsigned n = http_threads(opts);
    struct http *h = xcalloc(1, sizeof(*h) + n * sizeof(h->daemons[0]));
    h->closed = xcalloc(n, sizeof(h->closed[0]));
    h->opts = *opts;
    if (!h->opts.name)
        h->opts.name = "http";
    opts = &h->opts;
    h->max_body = (size_t)set->max_body;
    h->max_head = (size_t)set->conn_memory;
    h->n = n;
    h->listen_fd = -1;
    bool v6 = false;
    int rc = http_listen(set, opts->port, &v6, &h->listen_fd);
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
        h->daemons[i] = http_daemon(h, i, v6);
        const union MHD_DaemonInfo *info =
            h->daemons[i] ? MHD_get_daemon_info(h->daemons[i], MHD_DAEMON_INFO_EPOLL_FD) : NULL;
        if (!info) {
            log_error("http_start", "libmicrohttpd did not start (see its log above)");
            http_stop(h);
            return -ENOMEM;
        }
        sources[i] = info->epoll_fd;
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
    log_info("http_start", "%s: listening on %s:%u with %u HTTP threads", opts->name, set->bind,
             h->port, n);
    *out = h;
    return 0;
}

/* Loop thread: this daemon stops accepting (the socket is closed once all have). */
static void http_quiesce_one(void *ctx, unsigned i)
{
    struct http *h = ctx;
    MHD_quiesce_daemon(h->daemons[i]);
}

void http_quiesce(struct http *h)
{
    if (!h || h->listen_fd < 0)
        return;
    if (h->loops) {
        evloop_call(h->loops, http_quiesce_one, h);
    } else {
        for (unsigned i = 0; i < h->n; i++)
            if (h->daemons[i])
                MHD_quiesce_daemon(h->daemons[i]);
    }
    close(h->listen_fd);
    h->listen_fd = -1;
}

void http_stop(struct http *h)
{
    if (!h)
        return;
    /* Every daemon lets go of the shared socket before any stops (a daemon that stops while
     * it still listens closes the socket under the others). */
    http_quiesce(h);
    evloop_stop(h->loops);
    for (unsigned i = 0; i < h->n; i++)
        if (h->daemons[i])
            MHD_stop_daemon(h->daemons[i]);
    free(h->closed);
    free(h);
}

uint16_t http_port(const struct http *h)
{
    return h->port;
}
