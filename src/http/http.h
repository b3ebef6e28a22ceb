/*
 * http: bulkhead's HTTP/1.1 server on the event threads (evloop.h): the listening socket, the
 * loops, accepting, and the limits on connections (the whole server's, per loop; per client
 * address). One connection's life is conn.h's; parsing is h1.h's; a request's is request.h's.
 *
 * Every loop accepts from one shared listening socket (EPOLLEXCLUSIVE: one loop is woken per
 * connection) and owns the connections it accepted. HTTP_MAX_CONNECTIONS counts the
 * connections of all the loops together: below it a loop accepts however many it holds itself;
 * at it, the accepting loop closes its oldest idle keep-alive connection for a new client, and
 * with none idle it stops accepting until one of its own closes or goes idle (the client waits
 * in the kernel's backlog: never a reset; a loop that closes one listens again, so a place freed
 * anywhere is taken). A client address holds at most
 * HTTP_MAX_CONNECTIONS_PER_ADDRESS (TRUSTED_PROXIES exempt; an IPv6 client is its network of
 * CLIENT_IPV6_PREFIX bits, as for every address-keyed limit): the next one is answered 429
 * too_many_connections and closed. Every refusal is counted (http_stats) and logged once per
 * address and HTTP_LOG_PERIOD_US.
 *
 * DESIGN: a loop's connections and its listening state are its thread's alone; the cap's count
 * is one atomic shared by the loops (a place is taken by compare-and-swap); the per-address table
 * is shared by the loops under its mutex (taken once per accept and once per close); counters are
 * relaxed atomics. Quiesce and stop reach the loops through evloop_call.
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

/* The HTTP layer's settings: API_BIND, HTTP_* and TRUSTED_PROXIES (config.h). */
struct http_settings {
    const char *bind;     /* IPv4 or IPv6 literal to listen on; must outlive the server */
    int64_t threads;      /* event threads; 0 = one per usable CPU */
    int64_t max_conns;    /* client connections at once (the loops share them) */
    int64_t idle_timeout; /* seconds an idle keep-alive connection (or a stalled write) lasts */
    int64_t head_timeout; /* ms for a whole request head, from its first byte */
    int64_t body_timeout; /* ms for a whole request body, from the head's end */
    int64_t max_per_addr; /* connections one client address may hold (0: no cap) */
    int64_t conn_memory;  /* largest request head (431/414 above) */
    int64_t max_body;     /* largest request body accepted (413 above) */
    const char *trusted_proxies; /* addresses exempt from max_per_addr ("" none) */
    int64_t ipv6_prefix; /* CLIENT_IPV6_PREFIX: an IPv6 client is its network of these bits */
};

struct http_opts {
    const char *name;                      /* logs and thread names: "ops", or NULL: "http" */
    struct http_settings set;              /* API_BIND, HTTP_* */
    int64_t port;                          /* API_PORT or OPS_PORT, on API_BIND (0: any free) */
    unsigned threads;                      /* event threads; 0: HTTP_THREADS (one per CPU) */
    const struct request_hooks *hooks;     /* given to every request; must outlive the server */
    const atomic_bool *draining;           /* while true, new requests get 503 shutting_down */
    bool (*drain_exempt)(const char *url); /* except these (the probes), or NULL: none */
    /* Loop thread: a request is complete. Returns false with its reply set, or true when it
     * was handed on (request_defer): whoever resumes it owns it until then. */
    bool (*dispatch)(void *ctx, struct request *r);
    void *ctx;
    /* Thread i adds its event loop's lag (evloop.h) to loop_lag[i], every HTTP_LAG_PROBE_US;
     * http_thread_count(&set) of them, owned by the caller, outliving the server. */
    struct metrics_hist *loop_lag;
    /* Where the connections are counted (owned by the caller, outliving the server), or NULL:
     * in the server's own (http_counters_of). */
    struct http_counters *counters;
};

#define HTTP_LAG_PROBE_US  10000    /* how often each HTTP thread measures its loop's lag */
#define HTTP_LOG_PERIOD_US 60000000 /* a refusal is logged once per address and this */

/* What the connections met: relaxed atomics, written by the loops, read by anyone. The caller
 * may own them (http_opts.counters: they outlive the server, so a reader never meets freed
 * memory); open is a gauge, the rest count up. */
struct http_counters {
    atomic_uint_least64_t open;          /* connections open now */
    atomic_uint_least64_t accepted;      /* connections accepted since start */
    atomic_uint_least64_t head_timeouts; /* heads not complete in time (408) */
    atomic_uint_least64_t body_timeouts; /* bodies not complete in time (408) */
    atomic_uint_least64_t malformed;     /* not HTTP/1.x, or a head too large (400/414/431/505) */
    atomic_uint_least64_t addr_refused;  /* over HTTP_MAX_CONNECTIONS_PER_ADDRESS (429) */
    atomic_uint_least64_t evicted;       /* idle keep-alive closed for a new client */
};

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

/* The counters h writes to. */
const struct http_counters *http_counters_of(const struct http *h);

#endif
