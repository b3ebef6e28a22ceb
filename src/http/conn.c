/*
 * conn: a connection's reads, parse, hand-off, writes and deadlines (see conn.h).
 *
 * Reads are edge-triggered: a connection reads until the socket is drained (a short read) or
 * until its request is complete; bytes that arrive while the request is with its handler are
 * left in the socket (may_read) and read once the reply has gone out, so a pipelined request
 * waits for the one before it. Every refusal made here (a malformed or oversized head, an HTTP
 * version other than 1.x, a deadline passed) is a request of its own with a JSON body from
 * apierr's table, written before the connection closes; the close lingers (write side shut,
 * input dropped) so that the client reads the answer rather than a reset.
 */
#include "conn.h"
#include "compiler.h"
#include "log.h"
#include "mclock.h"
#include "reqhead.h"
#include "request.h"
#include "xalloc.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

static void conn_close(struct conn *c);
static void conn_read(struct conn *c);
static void conn_reply(struct conn *c);

/* ---- lists and buffers ------------------------------------------------------------------- */

static void conn_list_add(struct conn *c, struct conn_list *list)
{
    struct conn_loop *l = c->loop;
    c->on = list;
    c->lprev = list->tail;
    c->lnext = NULL;
    if (list->tail)
        list->tail->lnext = c;
    else
        list->head = c;
    list->tail = c;
    list->n++;
    if (l->evictable)
        l->evictable(l);
}

static void conn_list_remove(struct conn *c)
{
    struct conn_list *list = c->on;
    if (!list)
        return;
    if (c->lprev)
        c->lprev->lnext = c->lnext;
    else
        list->head = c->lnext;
    if (c->lnext)
        c->lnext->lprev = c->lprev;
    else
        list->tail = c->lprev;
    c->lprev = c->lnext = NULL;
    c->on = NULL;
    list->n--;
}

static char *conn_buf_take(struct conn_loop *l)
{
    return l->nfree ? l->free_bufs[--l->nfree] : xmalloc(CONN_BUF_SIZE);
}

/* The request's buffer goes back (to the free list when it is of the usual size). */
static void conn_buf_give(struct conn *c)
{
    struct conn_loop *l = c->loop;
    if (!c->rx.buf)
        return;
    if (c->rx.cap == CONN_BUF_SIZE && l->nfree < CONN_FREE_BUFS)
        l->free_bufs[l->nfree++] = c->rx.buf;
    else
        free(c->rx.buf);
    h1_free(&c->rx);
    c->rx.buf = NULL;
    c->rx.len = c->rx.cap = 0;
}

void conn_loop_free(struct conn_loop *l)
{
    while (l->nfree)
        free(l->free_bufs[--l->nfree]);
}

/* ---- deadlines --------------------------------------------------------------------------- */

static void conn_arm_at(struct conn *c, int64_t at_us)
{
    if (c->loop->stopping)
        return;
    if (evloop_watch(c->loop->t, &c->timer, NULL, at_us))
        log_warn("http", "cannot arm a connection deadline");
}

static void conn_arm(struct conn *c, int64_t after_us)
{
    conn_arm_at(c, mclock_now_us() + after_us);
}

/* A head or a body in progress: its stage's deadline, or HTTP_IDLE_TIMEOUT_S with no byte,
 * whichever comes first (the inactivity timeout keeps its meaning inside a request). */
static void conn_arm_stage(struct conn *c, int64_t now)
{
    int64_t quiet = now + c->loop->env->idle_us;
    conn_arm_at(c, quiet < c->stage_deadline_us ? quiet : c->stage_deadline_us);
}

static void conn_disarm(struct conn *c)
{
    evloop_unwatch(&c->timer);
}

void conn_counter_add(struct http_counters *k, enum conn_refusal why)
{
    atomic_uint_least64_t *n = why == CONN_HEAD_TIMEOUT   ? &k->head_timeouts
                               : why == CONN_BODY_TIMEOUT ? &k->body_timeouts
                               : why == CONN_MALFORMED    ? &k->malformed
                               : why == CONN_ADDR_CAP     ? &k->addr_refused
                                                          : &k->evicted;
    atomic_fetch_add_explicit(n, 1, memory_order_relaxed);
}

static void conn_count(struct conn *c, enum conn_refusal why)
{
    conn_counter_add(c->loop->counters, why);
    if (c->loop->refused)
        c->loop->refused(c->loop, c, why);
}

/* ---- refusals ---------------------------------------------------------------------------- */

/* Answer what is not a request (head NULL) or a request in progress with error e, and close
 * after it. */
static void conn_refuse_now(struct conn *c, enum apierr e, const char *message)
{
    const struct conn_env *env = c->loop->env;
    conn_disarm(c);
    if (!c->req)
        c->req = request_new(env->hooks, c, NULL, c->addr.text);
    if (message)
        apierr_replyf(c->req, e, "%s", message);
    else
        apierr_reply(c->req, e);
    c->keep_alive = false;
    conn_reply(c);
}

void conn_refuse(struct conn *c, enum apierr e, const char *message, bool linger)
{
    conn_refuse_now(c, e, message);
    if (!linger)
        conn_close(c);
}

/* The head cannot be read: a parse error, or too large for the buffer. */
static void conn_refuse_head(struct conn *c)
{
    const struct conn_env *env = c->loop->env;
    char msg[160];
    conn_count(c, CONN_MALFORMED);
    switch (c->rx.error) {
    case H1_VERSION:
        conn_refuse_now(c, APIERR_VERSION_NOT_SUPPORTED, NULL);
        return;
    case H1_AMBIGUOUS:
        /* reqhead's refusal, made by the parser before reqhead sees the fields. */
        conn_refuse_now(c, APIERR_AMBIGUOUS_REQUEST,
                        c->rx.te_seen ? "both Content-Length and Transfer-Encoding"
                                      : "more than one Content-Length header");
        return;
    case H1_HEAD_TOO_LARGE:
        snprintf(msg, sizeof(msg), "%s: a request head is limited to %zu bytes",
                 h1_target_is_long(&c->rx) ? "the request target is too long"
                                           : "the request's header fields are too large",
                 env->max_head);
        conn_refuse_now(
            c, h1_target_is_long(&c->rx) ? APIERR_URI_TOO_LONG : APIERR_HEADERS_TOO_LARGE, msg);
        return;
    default:
        snprintf(msg, sizeof(msg), "not an HTTP/1.1 request: %s", h1_error_text(&c->rx));
        conn_refuse_now(c, APIERR_BAD_REQUEST, msg);
        return;
    }
}

/* ---- the request ------------------------------------------------------------------------- */

static void conn_body(void *ctx, const char *at, size_t len)
{
    struct conn *c = ctx;
    if (c->req)
        request_body_append(c->req, at, len, c->loop->env->max_body);
}

/* A declared Content-Length above the limit is refused before any of the body is read. */
static bool conn_head_ok(struct conn *c)
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
static bool conn_head_done(struct conn *c)
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
    if (!conn_head_ok(c)) {
        c->keep_alive = false;
        conn_disarm(c);
        conn_reply(c);
        return false;
    }
    const char *expect = request_header(c->req, "Expect");
    if (body > 0 && expect && !strcasecmp(expect, "100-continue") && h1_minor(&c->rx) >= 1) {
        static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
        /* Best effort: a client that cannot take 26 bytes now sends its body anyway. */
        (void)!send(c->fd, cont, sizeof(cont) - 1, MSG_NOSIGNAL);
    }
    c->rx.body = conn_body;
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
static void conn_dispatch(struct conn *c)
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
        conn_reply(c);
}

/* Parse what was read; go as far as the bytes allow. */
static void conn_parse(struct conn *c)
{
    c->parse_pending = false; /* whoever parses first takes the bytes */
    for (;;) {
        enum h1_result res = h1_parse(&c->rx);
        if (c->state == CONN_BODY)
            h1_compact(&c->rx);
        switch (res) {
        case H1_MORE:
            return;
        case H1_ERROR:
            if (c->req) { /* a body the parser cannot frame */
                c->keep_alive = false;
                conn_count(c, CONN_MALFORMED);
                apierr_replyf(c->req, APIERR_BAD_REQUEST, "not an HTTP/1.1 request: %s",
                              h1_error_text(&c->rx));
                conn_disarm(c);
                conn_reply(c);
            } else {
                conn_refuse_head(c);
            }
            return;
        case H1_HEAD:
            conn_disarm(c);
            if (!conn_head_done(c))
                return;
            continue;
        case H1_DONE:
            conn_dispatch(c);
            return;
        }
    }
}

/* ---- reading ----------------------------------------------------------------------------- */

/* Room to read into: the buffer taken at a request's first byte, grown while a head is
 * arriving up to HTTP_CONNECTION_MEMORY. False when the head has filled it (refused). */
static bool conn_room(struct conn *c)
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
        conn_refuse_head(c);
        return false;
    }
    /* A body's room was made at the head's end and is emptied after each parse. */
    return c->rx.len < c->rx.cap;
}

/* The client closed or the socket failed while reading. */
static void conn_read_end(struct conn *c)
{
    conn_close(c);
}

static void conn_read(struct conn *c)
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
        if (!conn_room(c))
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
        if (n <= 0) {
            conn_read_end(c);
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
        conn_parse(c);
        if ((size_t)n < want)
            return; /* drained: the next bytes bring a new edge */
    }
}

/* ---- writing ----------------------------------------------------------------------------- */

/* The turn's Date field, printed once a second. */
static const char *conn_date(struct conn_loop *l)
{
    time_t now = time(NULL);
    if (now != l->date_s) {
        struct tm tm;
        gmtime_r(&now, &tm);
        strftime(l->date, sizeof(l->date), "Date: %a, %d %b %Y %H:%M:%S GMT\r\n", &tm);
        l->date_s = now;
    }
    return l->date;
}

/* Free a closed connection at the end of the turn, unless its task is queued already (which
 * frees it, seeing CONN_CLOSED). */
static void conn_later_free(struct conn *c);

static void conn_later(struct conn *c)
{
    if (c->task_queued)
        return;
    c->task_queued = true;
    evloop_defer(c->loop->t, &c->task);
}

/* Keep-alive after the reply: the next request, pipelined bytes first; or the idle state. The
 * next request is parsed at the end of the turn (conn_task), not from inside this one's reply:
 * a client pipelining without end must not deepen the stack. */
static void conn_next(struct conn *c)
{
    struct conn_loop *l = c->loop;
    size_t left = c->rx.len - c->rx.fed;
    if (left) {
        /* A pipelined request: its bytes move to the front of the same buffer. */
        char *buf = c->rx.buf;
        size_t cap = c->rx.cap;
        memmove(buf, buf + c->rx.fed, left);
        h1_free(&c->rx);
        h1_init(&c->rx, buf, left, cap);
        c->state = CONN_HEAD;
        int64_t now = mclock_now_us();
        c->stage_deadline_us = now + l->env->head_us;
        conn_arm_stage(c, now);
        c->parse_pending = true;
        conn_later(c);
    } else {
        conn_buf_give(c);
        c->state = CONN_IDLE;
        c->served = true;
        conn_list_add(c, &l->idle);
        conn_arm(c, l->env->idle_us);
        if (c->may_read)
            conn_later(c);
    }
}

/* The reply is out: the request ends; keep the connection or linger and close. */
static void conn_written(struct conn *c)
{
    struct request *r = c->req;
    c->req = NULL;
    request_finish(r, true);
    if (c->keep_alive) {
        conn_next(c);
        return;
    }
    conn_buf_give(c);
    shutdown(c->fd, SHUT_WR);
    c->state = CONN_LINGER;
    conn_list_add(c, &c->loop->linger);
    conn_arm(c, CONN_LINGER_US);
    conn_read(c);
}

/* Write what is left of the reply; false when the connection was closed. */
static void conn_write(struct conn *c)
{
    struct request *r = c->req;
    for (;;) {
        size_t body = r->method == METHOD_HEAD || r->status == 204 ? 0 : r->out_len;
        size_t total = r->wire_len + body;
        if (c->out_off >= total) {
            conn_written(c);
            return;
        }
        struct iovec iov[2];
        int n = 0;
        if (c->out_off < r->wire_len)
            iov[n++] = (struct iovec){r->wire + c->out_off, r->wire_len - c->out_off};
        size_t boff = c->out_off > r->wire_len ? c->out_off - r->wire_len : 0;
        if (body > boff)
            iov[n++] = (struct iovec){(char *)r->out_body + boff, body - boff};
        struct msghdr m = {.msg_iov = iov, .msg_iovlen = (size_t)n};
        ssize_t w = sendmsg(c->fd, &m, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && errno == EAGAIN) {
            /* The client reads slowly: a stall of the idle timeout ends it. */
            conn_arm(c, c->loop->env->idle_us);
            return;
        }
        if (w < 0) {
            conn_close(c);
            return;
        }
        c->out_off += (size_t)w;
    }
}

/* The request's reply is set: put it on the wire. */
static void conn_reply(struct conn *c)
{
    struct conn_loop *l = c->loop;
    struct request *r = c->req;
    if (r->close)
        c->keep_alive = false;
    bool http10_ka = c->keep_alive && c->rx.buf && h1_minor(&c->rx) == 0;
    size_t body;
    request_wire(r, c->keep_alive, http10_ka, conn_date(l), &body);
    atomic_store_explicit(&r->state, REQUEST_SENT, memory_order_relaxed);
    c->state = CONN_WRITE;
    c->out_off = 0;
    conn_write(c);
}

/* The connection's work for later (see struct conn's task). */
static void conn_task(struct evloop_task *task)
{
    struct conn *c = container_of(task, struct conn, task);
    c->task_queued = false;
    switch (c->state) {
    case CONN_CLOSED:
        free(c);
        return;
    case CONN_HEAD:
        if (c->parse_pending)
            conn_parse(c);
        if (c->may_read && c->state == CONN_HEAD)
            conn_read(c);
        return;
    case CONN_IDLE:
        if (c->may_read)
            conn_read(c);
        return;
    default:
        return;
    }
}

/* A handed-on request came back (conn_resume): its reply goes out. Only a request whose
 * reply is set: the task belongs to the request handed on, never to local work. */
static void conn_resume_task(struct evloop_task *task)
{
    struct conn *c = container_of(task, struct conn, resume);
    struct request *r = c->req;
    if (c->state != CONN_BUSY || !r ||
        atomic_load_explicit(&r->state, memory_order_acquire) != REQUEST_READY) {
        log_warn("http", "a resumed request found its connection in another state");
        return;
    }
    conn_reply(c);
}

void conn_resume(struct conn *c)
{
    struct evloop_thread *t = c->loop->t;
    if (evloop_current() == t) {
        if (c->in_dispatch)
            c->resumed_inline = true;
        else
            evloop_defer(t, &c->resume);
        return;
    }
    evloop_post(t, &c->resume);
}

/* ---- events, deadlines, open and close ---------------------------------------------------- */

void conn_event(struct conn *c, uint32_t events)
{
    if (c->state == CONN_CLOSED)
        return;
    bool readable = events & (EPOLLIN | EPOLLRDHUP | EPOLLERR | EPOLLHUP);
    if (c->state == CONN_WRITE && (events & (EPOLLOUT | EPOLLERR | EPOLLHUP))) {
        /* Edge-triggered: a read reported with the room to write is not reported again. It
         * follows the reply (conn_next). */
        if (readable)
            c->may_read = true;
        conn_write(c);
        return;
    }
    if (readable) {
        if (c->state == CONN_BUSY || c->state == CONN_WRITE)
            c->may_read = true;
        else
            conn_read(c);
    }
}

static void conn_deadline(struct evloop_watch *w, enum evloop_event ev)
{
    struct conn *c = container_of(w, struct conn, timer);
    if (ev == EVLOOP_STOP)
        return; /* http_stop closes it */
    switch (c->state) {
    case CONN_HEAD:
        conn_count(c, CONN_HEAD_TIMEOUT);
        conn_refuse_now(c, APIERR_REQUEST_TIMEOUT,
                        mclock_now_us() >= c->stage_deadline_us
                            ? "the request head was not complete within HTTP_HEAD_TIMEOUT_MS"
                            : "no byte of the request head for HTTP_IDLE_TIMEOUT_S");
        return;
    case CONN_BODY:
        conn_count(c, CONN_BODY_TIMEOUT);
        conn_refuse_now(c, APIERR_REQUEST_TIMEOUT,
                        mclock_now_us() >= c->stage_deadline_us
                            ? "the request body was not complete within HTTP_BODY_TIMEOUT_MS"
                            : "no byte of the request body for HTTP_IDLE_TIMEOUT_S");
        return;
    case CONN_BUSY:
        return; /* not armed while busy */
    case CONN_IDLE:
    case CONN_WRITE:
    case CONN_LINGER:
        conn_close(c);
        return;
    case CONN_CLOSED:
        return;
    }
}

struct conn *conn_open(struct conn_loop *l, int fd, void *addr_entry, const struct conn_addr *a)
{
    struct conn *c = xcalloc(1, sizeof(*c));
    c->loop = l;
    c->fd = fd;
    c->state = CONN_IDLE;
    c->addr_entry = addr_entry;
    c->addr = *a;
    c->timer.fd = -1;
    c->timer.fire = conn_deadline;
    c->task.fn = conn_task;
    c->resume.fn = conn_resume_task;
    c->next = l->all;
    if (l->all)
        l->all->prev = c;
    l->all = c;
    l->nconns++;
    atomic_fetch_add_explicit(&l->counters->open, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&l->counters->accepted, 1, memory_order_relaxed);
    /* Until its first request a new connection is idle, but not evictable (served false), and
     * a client that connects and says nothing is closed at HTTP_HEAD_TIMEOUT_MS from the
     * accept (HAProxy's timeout http-request), or at HTTP_IDLE_TIMEOUT_S if that is sooner. */
    conn_arm(c, l->env->head_us < l->env->idle_us ? l->env->head_us : l->env->idle_us);
    return c;
}

/* Close now; the struct is freed at the end of the turn (its callers may still look at its
 * state), or at once when the loop has ended. */
static void conn_close(struct conn *c)
{
    struct conn_loop *l = c->loop;
    if (c->state == CONN_CLOSED)
        return;
    conn_disarm(c);
    conn_list_remove(c);
    if (c->req) {
        struct request *r = c->req;
        c->req = NULL;
        request_finish(r, false);
    }
    conn_buf_give(c);
    close(c->fd);
    if (c->prev)
        c->prev->next = c->next;
    else
        l->all = c->next;
    if (c->next)
        c->next->prev = c->prev;
    l->nconns--;
    atomic_fetch_sub_explicit(&l->counters->open, 1, memory_order_relaxed);
    if (l->closed)
        l->closed(l, c);
    c->state = CONN_CLOSED;
    if (l->final) {
        free(c);
        return;
    }
    conn_later_free(c); /* a task queued already frees it when it runs */
}

bool conn_evict_oldest(struct conn_loop *l, bool idle_too)
{
    /* A lingering connection has had its answer: closing it costs its client at most that
     * answer's tail (a reset), where an idle one costs a client its kept connection. */
    struct conn *c = l->linger.head;
    if (c) {
        conn_close(c);
        return true;
    }
    c = idle_too ? l->idle.head : NULL;
    if (!c)
        return false;
    conn_count(c, CONN_EVICTED);
    conn_close(c);
    return true;
}

static void conn_later_free(struct conn *c)
{
    conn_later(c);
}

void conn_close_all(struct conn_loop *l)
{
    l->final = true;
    while (l->all) {
        struct conn *c = l->all;
        if (c->state == CONN_BUSY && c->req &&
            atomic_load_explicit(&c->req->state, memory_order_acquire) == REQUEST_DEFERRED) {
            /* Handed on and never resumed (the server stops its workers first, so this is a
             * bug elsewhere): its owner may still write it; leave it, and its socket. */
            log_warn("http", "a request was still handed on at shutdown");
            c->req = NULL;
        }
        conn_close(c);
    }
}
