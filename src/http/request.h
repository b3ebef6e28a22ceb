/*
 * request: one HTTP request's life, from its head to the access-log line.
 *
 * A request is created by its connection's loop thread when the head is read (conn.c), owned
 * by that connection, and freed once the reply went out or the client left. It is answered in
 * one of two ways:
 *   - at once on the loop thread (health, metrics, every rejection): request_reply*;
 *   - later: the loop thread calls request_defer and hands the request on (datapath.c: its
 *     statement runs on an event thread's loop or on a worker thread); whoever runs it fills
 *     the reply and calls request_resume, after which it must not touch the request again.
 * Between request_defer and request_resume only the one running it (or the janitor, dropping
 * it from the queue) touches the request. The loop thread learns that it handed the request
 * on from its dispatch callback, never by reading the request.
 *
 * DESIGN: a request is one thread's at a time (above); the hand-offs are request_defer plus
 * the queue's or a loop's inbox mutex one way, and request_resume (state stored after the
 * reply) plus the connection's task posted to its loop (conn.h) the other. The hooks run on
 * the loop thread, or, for a request orphaned at shutdown, on the thread that resumes it (the
 * server's hooks take that: reqhooks.h). The head's strings (url, fields) live in the
 * connection's buffer, which stays with the request until it ends.
 */
#ifndef BULKHEAD_REQUEST_H
#define BULKHEAD_REQUEST_H

#include "evloop.h"
#include "metrics.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct conn;
struct h1;
struct request;

/* What the owner of the requests (the server) is told about them. Set before the first
 * request and read-only afterwards; every hook runs on the loop thread of the request. */
struct request_hooks {
    const char *instance_id;  /* prefixes the request ids made up here */
    void (*begin)(void *ctx); /* a request was created */
    /* It ended (status final, 499 if the client left): count it. Runs before its access line
     * is written, so whoever reads the line can already read the counters. */
    void (*done)(void *ctx, const struct request *r, int64_t total_us);
    void (*freed)(void *ctx); /* it is gone: nothing refers to it any more */
    void *ctx;
};

enum request_method { METHOD_GET, METHOD_HEAD, METHOD_POST, METHOD_OTHER };

enum request_state {
    REQUEST_NEW,      /* head read (and body); its handler runs on the loop thread */
    REQUEST_DEFERRED, /* handed on: owned by the tier's queue, a worker or another loop */
    REQUEST_READY,    /* reply set after a hand-off; the connection sends it */
    REQUEST_SENT,     /* the reply is going out (or went) */
    REQUEST_ORPHANED  /* still handed on when its loop stopped (conn_close_all): its socket
                         closed; request_resume finishes it (499) and frees its connection */
};

/* A query argument, decoded ('+' and %XX); value NULL for "?flag" with no '='. */
struct request_arg {
    const char *name, *value;
    bool nul; /* the value held %00, which no parser here would see */
};

#define REQUEST_ID_MAX      64
#define REQUEST_MAX_HEADERS 12

/* A handler's hooks on a request it took (request_set_handler). Both may be NULL. */
struct request_handler_ops {
    /* Each time a reply is set (request_reply*): add the handler's fields to it
     * (request_add_header), e.g. the verdicts of the limits it applied. */
    void (*reply_headers)(struct request *r, void *state);
    /* The request is freed (after its access line): free state. */
    void (*free)(void *state);
};

struct request {
    const struct request_hooks *hooks; /* not owned */
    struct conn *conn;                 /* the connection it came on (not owned) */
    struct evloop_thread *loop;        /* the loop thread that owns conn (evloop.h) */
    const struct h1 *head;             /* its head in conn's buffer, or NULL (refused unread) */
    const char *url;                   /* the path, %-decoded (in conn's buffer), or "-" */
    char *query;                       /* owned: the decoded arguments' text */
    struct request_arg *args;          /* owned (one block with query); nargs of them */
    unsigned nargs;
    const char *client_addr; /* the socket's peer, printed (conn's; not owned) */
    enum request_method method;
    const char *method_name;
    /* Atomic: a worker's request_resume stores READY after the reply (release). */
    _Atomic(enum request_state) state;

    char request_id[REQUEST_ID_MAX + 1];
    /* For its access line, set by its handler (not owned; they outlive the request): */
    const char *tier_name;    /* the tier serving it, or NULL */
    const char *tenant_label; /* the tenant id without the "id:"/"ip:" prefix, or NULL */
    /* The handler's own state (h2o's way: the request knows nothing of it), and its hooks. */
    const struct request_handler_ops *handler_ops;
    void *handler; /* owned through handler_ops->free */

    char *body; /* owned; request body as received (POST) */
    size_t body_len, body_cap;
    bool body_too_large; /* more than HTTP_MAX_BODY_BYTES arrived */

    int64_t retry_after_us; /* a refusal's Retry-After, set by the layer that refused */

    int64_t t_start_us; /* monotonic: its loop's turn that read it woke (evloop_turn_us) */
    int64_t queue_us;   /* time waited for a worker; -1 = never queued */
    int64_t query_us;   /* time in the database; -1 = no query */

    /* The reply. */
    unsigned status;
    enum metrics_outcome outcome;
    int error;                /* apierr row + 1 of an error reply (apierr.c), 0 for others */
    int64_t reply_retry_s;    /* the Retry-After the reply carries, 0 = none */
    bool has_reply;           /* a request_reply* call set the reply below */
    bool close;               /* the reply says Connection: close */
    const char *content_type; /* static */
    char *fields;             /* owned: "Name: value\r\n" lines added to the reply */
    size_t fields_len, fields_cap;
    const char *out_body; /* the reply's body (out_len bytes), freed by out_free(out_cls) */
    size_t out_len;
    void (*out_free)(void *);
    void *out_cls;
    char *wire; /* owned: the status line and fields as sent (request_wire) */
    size_t wire_len;
};

/* Loop thread: a new request on conn with the head just read (its strings NUL-terminated), or
 * with head NULL for a refusal of bytes that are not a request (url "-"). */
struct request *request_new(const struct request_hooks *hooks, struct conn *conn,
                            const struct h1 *head, const char *client_addr);

/* Append body bytes; false once the body passed max (the bytes are dropped). */
bool request_body_append(struct request *r, const char *data, size_t len, size_t max);

/* Request header value or NULL (loop thread, or a worker while deferred); the first of its
 * name. */
const char *request_header(const struct request *r, const char *name);
/* Every field called name, in order, joined by ", " as one list (RFC 9110 5.3), or NULL when
 * there is none; the caller frees it. */
char *request_header_list(const struct request *r, const char *name);
/* Query-string argument: 0 with *value set, -ENOENT when absent, -EINVAL when the decoded
 * value contains a NUL byte (%00), which no parser here would see. */
int request_arg(const struct request *r, const char *name, const char **value);

/* Reply with a JSON text body (copied). */
void request_reply_json(struct request *r, unsigned status, enum metrics_outcome outcome,
                        const char *json, size_t len);
/* Reply with a body that outlives the response (a static string): no copy. */
void request_reply_static(struct request *r, unsigned status, enum metrics_outcome outcome,
                          const char *content_type, const char *body, size_t len);
/* Reply with a body owned by cls: free_cb(cls) runs when the reply is done with it. */
void request_reply_owned(struct request *r, unsigned status, enum metrics_outcome outcome,
                         const char *body, size_t len, void (*free_cb)(void *), void *cls);
/* {"error": code, "message": msg[, members], "request_id": ...}; retry_after_s > 0 adds
 * Retry-After. The builder under apierr_reply (use that: it keeps status, outcome and code
 * in agreement); members are trusted JSON ("\"k\":v,..."), or NULL. */
void request_reply_error(struct request *r, unsigned status, enum metrics_outcome outcome,
                         const char *code, const char *message, const char *members,
                         int64_t retry_after_s);
/* Add a header to the reply set by the last request_reply* call ("Connection: close" marks
 * the connection to close after it). */
void request_add_header(struct request *r, const char *name, const char *value);
/* Replace the reply's Content-Type (a static string). */
void request_set_content_type(struct request *r, const char *content_type);

/* Loop thread: the handler that took r keeps state on it, with hooks (request_handler_ops). */
void request_set_handler(struct request *r, const struct request_handler_ops *ops, void *state);

/* Builders' helpers (no printf on the refusal path): append the literal s to buf[*len..cap),
 * NUL-terminated, cut short (never overrun) at cap; "%" PRId64 of v into buf (at least 21
 * bytes), returning where it starts. */
void request_put(char *buf, size_t cap, size_t *len, const char *s);
const char *request_i64(char *buf, size_t cap, int64_t v);

/* Loop thread: mark r handed on, before handing it to a worker (or another loop). */
void request_defer(struct request *r);
/* Any thread, after request_defer: the reply is set, let the loop thread send it. */
void request_resume(struct request *r);

/* r's loop thread (r->loop) only, r handed on and owned by the caller: whether r's client has
 * left (its connection saw the client's end with nothing before it: conn.h's client_left).
 * Its reply will be dropped (499), so an owner may finish r at once rather than do its work.
 * The connection sets this on the same thread, as it learns of the end; a worker or another
 * loop must not ask (it would race with that write). Once true, it stays true. */
bool request_client_left(const struct request *r);

/* Loop thread (conn.c): the reply's status line and fields, Date and Content-Length included,
 * in r->wire; a HEAD request's body is left out (*body_len 0). */
void request_wire(struct request *r, bool keep_alive, bool http10_keep_alive, const char *date,
                  size_t *body_len);

/* Loop thread (conn.c): the request ended; sent says whether its reply went out whole (if not,
 * and none was being sent, the client left: 499). Count (hooks->done), log, free
 * (hooks->freed). */
void request_finish(struct request *r, bool sent);

/* Whole seconds for Retry-After: at least 1, rounded up. */
int64_t request_retry_seconds(int64_t us);

#endif
