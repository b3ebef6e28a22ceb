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
#include "config.h"
#include "cpus.h"
#include "log.h"
#include "reqhead.h"
#include "request.h"
#include "xalloc.h"

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct http {
    struct MHD_Daemon *daemon; /* owned */
    struct http_opts opts;     /* copied; what it points to is not owned */
    size_t max_body;           /* HTTP_MAX_BODY_BYTES */
    size_t max_head;           /* HTTP_CONNECTION_MEMORY: the largest head served */
    uint16_t port;
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

static unsigned http_threads(const struct config *cfg)
{
    if (cfg->http_threads > 0)
        return (unsigned)cfg->http_threads;
    return cpus_usable();
}

int http_start(const struct http_opts *opts, struct http **out)
{
    const struct config *cfg = opts->cfg;
    struct http *h = xcalloc(1, sizeof(*h));
    h->opts = *opts;
    h->max_body = (size_t)cfg->http_max_body;
    h->max_head = (size_t)cfg->http_conn_memory;

    struct sockaddr_in sin = {0};
    struct sockaddr_in6 sin6 = {0};
    struct sockaddr *sa;
    unsigned flags =
        MHD_USE_EPOLL_INTERNAL_THREAD | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ITC | MHD_USE_ERROR_LOG;
    if (inet_pton(AF_INET, cfg->api_bind, &sin.sin_addr) == 1) {
        sin.sin_family = AF_INET;
        sin.sin_port = htons((uint16_t)cfg->api_port);
        sa = (struct sockaddr *)&sin;
    } else if (inet_pton(AF_INET6, cfg->api_bind, &sin6.sin6_addr) == 1) {
        sin6.sin6_family = AF_INET6;
        sin6.sin6_port = htons((uint16_t)cfg->api_port);
        sa = (struct sockaddr *)&sin6;
        flags |= MHD_USE_IPv6;
    } else {
        log_error("config", "API_BIND: \"%s\" is not an IPv4 or IPv6 address", cfg->api_bind);
        free(h);
        return -EINVAL;
    }

    unsigned threads = http_threads(cfg);
    struct MHD_OptionItem mhd_opts[] = {
        {MHD_OPTION_SOCK_ADDR, 0, sa},
        {MHD_OPTION_NOTIFY_COMPLETED, (intptr_t)http_completed, h},
        {MHD_OPTION_CONNECTION_LIMIT, (intptr_t)cfg->http_max_conns, NULL},
        {MHD_OPTION_CONNECTION_TIMEOUT, (intptr_t)cfg->http_idle_timeout, NULL},
        /* Room for a head over the limit to reach http_head_ok (see the top of this file). */
        {MHD_OPTION_CONNECTION_MEMORY_LIMIT, (intptr_t)(2 * cfg->http_conn_memory), NULL},
        {MHD_OPTION_LISTEN_BACKLOG_SIZE, 1024, NULL},
        {MHD_OPTION_LISTENING_ADDRESS_REUSE, 1, NULL},
        {threads > 1 ? MHD_OPTION_THREAD_POOL_SIZE : MHD_OPTION_END, threads, NULL},
        {MHD_OPTION_END, 0, NULL},
    };
    /* The logger goes first so that libmicrohttpd's start-up messages reach it too. */
    h->daemon = MHD_start_daemon(flags, 0, NULL, NULL, http_access, h, MHD_OPTION_EXTERNAL_LOGGER,
                                 http_mhd_log, h, MHD_OPTION_ARRAY, mhd_opts, MHD_OPTION_END);
    if (!h->daemon) {
        log_error("http_start", "cannot listen on %s:%" PRId64 " (port in use, or no permission)",
                  cfg->api_bind, cfg->api_port);
        free(h);
        return -EADDRINUSE;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(h->daemon, MHD_DAEMON_INFO_BIND_PORT);
    h->port = info ? info->port : (uint16_t)cfg->api_port;
    log_info("http_start", "listening on %s:%u with %u HTTP threads", cfg->api_bind, h->port,
             threads);
    *out = h;
    return 0;
}

void http_quiesce(struct http *h)
{
    if (h && h->daemon) {
        MHD_socket s = MHD_quiesce_daemon(h->daemon);
        if (s != MHD_INVALID_SOCKET)
            close(s);
    }
}

void http_stop(struct http *h)
{
    if (!h)
        return;
    if (h->daemon)
        MHD_stop_daemon(h->daemon);
    free(h);
}

uint16_t http_port(const struct http *h)
{
    return h->port;
}
