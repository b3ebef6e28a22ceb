/*
 * connrx: a connection's request coming in (conn.h): reads, the parse, the head's checks, the
 * body, and the hand-off to the dispatcher.
 *
 * Reads are edge-triggered: a connection reads until the socket is drained (a short read) or
 * until its request is complete; bytes that arrive while the request is with its handler are
 * left in the socket (may_read) and read once the reply has gone out, so a pipelined request
 * waits for the one before it. What cannot be a request (a malformed or oversized head, an
 * HTTP version other than 1.x) and what a head alone earns (reqhead: 400, 411, 413, 431, 503
 * while draining) are refused here through conntx. Loop thread only.
 */
#include "connrx.h"
#include "conn.h"
#include "conntx.h"
#include "mclock.h"
#include "reqhead.h"
#include "request.h"
#include "xalloc.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

/* The head cannot be read: a parse error, or too large for the buffer. */
static void connrx_refuse_head(struct conn *c)
{
    const struct conn_env *env = c->loop->env;
    char msg[160];
    conn_count(c, CONN_MALFORMED);
    switch (c->rx.error) {
    case H1_VERSION:
        conntx_refuse(c, APIERR_VERSION_NOT_SUPPORTED, NULL);
        return;
    case H1_AMBIGUOUS:
        /* reqhead's refusal, made by the parser before reqhead sees the fields. */
        conntx_refuse(c, APIERR_AMBIGUOUS_REQUEST,
                      c->rx.te_seen ? "both Content-Length and Transfer-Encoding"
                                    : "more than one Content-Length header");
        return;
    case H1_HEAD_TOO_LARGE:
        if (c->rx.too_many) {
            snprintf(msg, sizeof(msg), "a request head is limited to %d header fields",
                     H1_MAX_FIELDS);
            conntx_refuse(c, APIERR_HEADERS_TOO_LARGE, msg);
            return;
        }
        snprintf(msg, sizeof(msg), "%s: a request head is limited to %zu bytes",
                 h1_target_is_long(&c->rx) ? "the request target is too long"
                                           : "the request's header fields are too large",
                 env->max_head);
        conntx_refuse(c, h1_target_is_long(&c->rx) ? APIERR_URI_TOO_LONG : APIERR_HEADERS_TOO_LARGE,
                      msg);
        return;
    default:
        snprintf(msg, sizeof(msg), "not an HTTP/1.1 request: %s", h1_error_text(&c->rx));
        conntx_refuse(c, APIERR_BAD_REQUEST, msg);
        return;
    }
}

static void connrx_body(void *ctx, const char *at, size_t len)
{
    struct conn *c = ctx;
    if (c->req)
        request_body_append(c->req, at, len, c->loop->env->max_body);
}

/* A declared Content-Length above the limit is refused before any of the body is read. */
static bool connrx_head_ok(struct conn *c)
{
    const struct conn_env *env = c->loop->env;
    struct request *r = c->req;
    struct reqhead head;
    reqhead_init(&head, c->rx.head_len, c->rx.url_len,
                 h1_minor(&c->rx) == 0 ? "HTTP/1.0" : "HTTP/1.1");
    for (unsigned i = 0; i < c->rx.nfields; i++)
        reqhead_field(&head, h1_str(&c->rx, c->rx.fields[i].name),
                      h1_str(&c->rx, c->rx.fields[i].value));
    const char *why = NULL;
    enum apierr e = reqhead_verdict(&head, env->max_head, &why);
    if (e != APIERR_COUNT) {
        if (e == APIERR_HEADERS_TOO_LARGE || e == APIERR_URI_TOO_LONG)
            apierr_replyf(r, e, "%s: a request head is limited to %zu bytes", why, env->max_head);
        else
            apierr_replyf(r, e, "%s", why);
        /* The framing may be the very thing in doubt: nothing more is read from this client. */
        return false;
    }
    if (atomic_load_explicit(env->draining, memory_order_relaxed) &&
        !(env->drain_exempt && env->drain_exempt(r->url))) {
        apierr_reply(r, APIERR_SHUTTING_DOWN);
        return false;
    }
    int64_t body = h1_body_length(&c->rx);
    if (body < 0) {
        /* A body of unknown size could only be refused after reading all of it. */
        apierr_reply(r, APIERR_LENGTH_REQUIRED);
        return false;
    }
    if ((uint64_t)body > env->max_body) {
        r->body_too_large = true;
        apierr_replyf(r, APIERR_PAYLOAD_TOO_LARGE, "request bodies are limited to %zu bytes",
                      env->max_body);
        return false;
    }
    return true;
}

/* The head is in: make room for the body before anything points into the buffer, then the
 * request, its checks, and on to the body. False when it was refused (the reply is going). */
static bool connrx_head_done(struct conn *c)
{
    struct conn_loop *l = c->loop;
    int64_t body = h1_body_length(&c->rx);
    size_t room = c->rx.cap - c->rx.head_len;
    if (body > 0 && room < (size_t)body && room < CONN_BUF_SIZE / 2) {
        size_t cap = c->rx.head_len + ((size_t)body < CONN_BUF_SIZE ? (size_t)body : CONN_BUF_SIZE);
        h1_rebuffer(&c->rx, xrealloc(c->rx.buf, cap), cap);
    }
    /* Strings now: the head's own NULs were written by the parser glue. */
    c->req = request_new(l->env->hooks, c, &c->rx, c->addr.text);
    c->keep_alive = h1_keep_alive(&c->rx);
    if (!connrx_head_ok(c)) {
        c->keep_alive = false;
        conn_disarm(c);
        conntx_reply(c);
        return false;
    }
    const char *expect = request_header(c->req, "Expect");
    if (body > 0 && expect && !strcasecmp(expect, "100-continue") && h1_minor(&c->rx) >= 1) {
        static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
        /* Best effort: a client that cannot take 26 bytes now sends its body anyway. */
        (void)!send(c->fd, cont, sizeof(cont) - 1, MSG_NOSIGNAL);
    }
    c->rx.body = connrx_body;
    c->rx.body_ctx = c;
    h1_resume(&c->rx);
    c->state = CONN_BODY;
    if (body > 0) {
        int64_t now = mclock_now_us();
        c->stage_deadline_us = now + l->env->body_us;
        conn_arm_stage(c, now);
    }
    return true;
}

/* The message is complete: hand it to the dispatcher. */
static void connrx_dispatch(struct conn *c)
{
    const struct conn_env *env = c->loop->env;
    struct request *r = c->req;
    c->state = CONN_BUSY;
    conn_disarm(c);
    c->in_dispatch = true;
    c->resumed_inline = false;
    env->dispatch(env->ctx, r);
    c->in_dispatch = false;
    /* Answered at once, or handed on and resumed already on this thread: send it now. A request
     * resumed from another thread comes back through the task. */
    if (c->resumed_inline || atomic_load_explicit(&r->state, memory_order_relaxed) == REQUEST_NEW)
        conntx_reply(c);
}

/* Parse what was read; go as far as the bytes allow. */
void connrx_parse(struct conn *c)
{
    c->parse_pending = false; /* whoever parses first takes the bytes */
    for (;;) {
        enum h1_result res = h1_parse(&c->rx);
        if (c->state == CONN_BODY)
            h1_compact(&c->rx);
        switch (res) {
        case H1_MORE:
            if (c->state == CONN_HEAD && c->served && !c->rx.began && c->rx.fed == c->rx.len)
                /* Only empty lines, which a client may send after a request (RFC 9112 2.2): no
                 * request has begun, so the connection is idle again (evictable, its idle
                 * deadline), not waiting HTTP_HEAD_TIMEOUT_MS for a head to answer 408. */
                conn_idle(c);
            return;
        case H1_ERROR:
            if (c->req) { /* a body the parser cannot frame */
                c->keep_alive = false;
                conn_count(c, CONN_MALFORMED);
                apierr_replyf(c->req, APIERR_BAD_REQUEST, "not an HTTP/1.1 request: %s",
                              h1_error_text(&c->rx));
                conn_disarm(c);
                conntx_reply(c);
            } else {
                connrx_refuse_head(c);
            }
            return;
        case H1_HEAD:
            conn_disarm(c);
            if (!connrx_head_done(c))
                return;
            continue;
        case H1_DONE:
            connrx_dispatch(c);
            return;
        }
    }
}

/* Room to read into: the buffer taken at a request's first byte, grown while a head is
 * arriving up to HTTP_CONNECTION_MEMORY. False when the head has filled it (refused). */
static bool connrx_room(struct conn *c)
{
    struct conn_loop *l = c->loop;
    if (!c->rx.buf) {
        h1_init(&c->rx, conn_buf_take(l), 0, CONN_BUF_SIZE);
        return true;
    }
    if (c->rx.len < c->rx.cap)
        return true;
    if (c->state == CONN_HEAD && c->rx.cap < l->env->max_head) {
        size_t cap = c->rx.cap * 2 > l->env->max_head ? l->env->max_head : c->rx.cap * 2;
        h1_rebuffer(&c->rx, xrealloc(c->rx.buf, cap), cap);
        return true;
    }
    if (c->state == CONN_HEAD) {
        c->rx.error = H1_HEAD_TOO_LARGE;
        connrx_refuse_head(c);
        return false;
    }
    /* A body's room was made at the head's end and is emptied after each parse. */
    return c->rx.len < c->rx.cap;
}

void connrx_read(struct conn *c)
{
    struct conn_loop *l = c->loop;
    c->may_read = false;
    for (;;) {
        if (c->state == CONN_CLOSED)
            return;
        if (c->state == CONN_LINGER) {
            char sink[4096];
            ssize_t n = recv(c->fd, sink, sizeof(sink), 0);
            if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
                conn_close(c);
                return;
            }
            if (n < 0)
                return;
            continue;
        }
        if (c->state != CONN_IDLE && c->state != CONN_HEAD && c->state != CONN_BODY) {
            c->may_read = true; /* later, once its reply is out */
            return;
        }
        if (c->parse_pending) {
            /* A pipelined request waits in the buffer (conn's task parses it): it goes first,
             * and an end read now must not close the connection before it is answered. */
            c->may_read = true;
            return;
        }
        if (!connrx_room(c))
            return;
        size_t want = c->rx.cap - c->rx.len;
        ssize_t n = recv(c->fd, c->rx.buf + c->rx.len, want, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN) {
            if (c->state == CONN_IDLE && c->rx.len == 0)
                conn_buf_give(c); /* a wake-up with nothing to read: idle costs no buffer */
            return;
        }
        if (n <= 0) { /* the client closed, or the socket failed */
            conn_close(c);
            return;
        }
        int64_t now = mclock_now_us();
        if (c->state == CONN_IDLE) {
            /* A request's first byte: the head's deadline runs from here. */
            conn_list_remove(c);
            c->state = CONN_HEAD;
            c->stage_deadline_us = now + l->env->head_us;
        }
        conn_arm_stage(c, now);
        c->rx.len += (size_t)n;
        connrx_parse(c);
        /* Drained: the next bytes bring a new edge. Not the end, if it was reported with
         * these bytes: read on to it (the close), or the connection would idle. */
        if ((size_t)n < want && !c->end_seen)
            return;
    }
}
