/*
 * http: libmicrohttpd on the event threads (evloop.h): one daemon per thread in external epoll
 * mode, all accepting from one listening socket, each driven by its thread's loop.
 *
 * It turns libmicrohttpd's callbacks into the request life cycle of request.h: create on the
 * first call, read the body on the next ones (refusing oversized bodies with 413 before they are
 * buffered), hand the complete request to the dispatch callback (the api), queue the reply on a
 * later call (so keep-alive survives), and finish the request in the completion callback. The
 * HTTP layer's own limits (connections, idle timeout, header memory) are its settings (struct
 * http_settings: the server fills them from config); a head that is too large, lacks Host or is
 * ambiguous is refused before dispatch (reqhead.h).
 */
#ifndef BULKHEAD_HTTP_H
#define BULKHEAD_HTTP_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

struct http;
struct metrics_hist;
struct request;
struct request_hooks;

/* The HTTP layer's settings: API_BIND and HTTP_* (config.h). */
struct http_settings {
    const char *bind;     /* IPv4 or IPv6 literal to listen on; must outlive the daemon */
    int64_t threads;      /* event threads; 0 = one per usable CPU */
    int64_t max_conns;    /* concurrent client connections before refusing */
    int64_t idle_timeout; /* seconds before an idle or slow client is dropped */
    int64_t conn_memory;  /* largest request head; libmicrohttpd gets twice this */
    int64_t max_body;     /* largest request body accepted (413 above) */
};

struct http_opts {
    const char *name;                      /* logs and thread names: "ops", or NULL: "http" */
    struct http_settings set;              /* API_BIND, HTTP_* */
    int64_t port;                          /* API_PORT or OPS_PORT, on API_BIND (0: any free) */
    unsigned threads;                      /* event threads; 0: HTTP_THREADS (one per CPU) */
    const struct request_hooks *hooks;     /* given to every request; must outlive the daemon */
    const atomic_bool *draining;           /* while true, new requests get 503 shutting_down */
    bool (*drain_exempt)(const char *url); /* except these (the probes), or NULL: none */
    /* HTTP thread: a request is complete. Returns false with its reply set, or true when it
     * was suspended and handed on: whoever resumes it owns it until then. */
    bool (*dispatch)(void *ctx, struct request *r);
    void *ctx;
    /* Thread i adds its event loop's lag (evloop.h) to loop_lag[i], every HTTP_LAG_PROBE_US;
     * http_thread_count(&set) of them, owned by the caller, outliving the daemon. */
    struct metrics_hist *loop_lag;
};

#define HTTP_LAG_PROBE_US 10000 /* how often each HTTP thread measures its loop's lag */

/* How many HTTP threads http_start starts for set (HTTP_THREADS, or one per usable CPU). */
unsigned http_thread_count(const struct http_settings *set);

/* Start listening. Returns 0 or a negative errno (the reason is logged). */
int http_start(const struct http_opts *opts, struct http **out) __attribute__((warn_unused_result));

/* Stop accepting new connections (shutdown, step 1). */
void http_quiesce(struct http *h);

/* Close every connection and stop the threads (shutdown, last step). */
void http_stop(struct http *h);

/* The port actually bound. */
uint16_t http_port(const struct http *h);

#endif
