/*
 * conntx: a connection's reply going out (conn.h): the head put on the wire, the writes (a
 * stall of HTTP_IDLE_TIMEOUT_S ends them), then keep-alive (the next pipelined request, or
 * idle) or the close.
 *
 * Every refusal is a request of its own with a JSON body from apierr's table, written before
 * the connection closes; the close lingers (write side shut, input read and dropped, on the
 * loop's linger list) so that the client reads the answer rather than a reset. Loop thread only.
 */
#include "conntx.h"
#include "conn.h"
#include "connrx.h"
#include "mclock.h"
#include "request.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>

/* The turn's Date field, printed once a second. */
static const char *conntx_date(struct conn_loop *l)
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

/* Keep-alive after the reply: the next request, pipelined bytes first; or the idle state. The
 * next request is parsed at the end of the turn (conn_task), not from inside this one's reply:
 * a client pipelining without end must not deepen the stack. */
static void conntx_next(struct conn *c)
{
    struct conn_loop *l = c->loop;
    size_t left = c->rx.len - c->rx.fed;
    c->served = true;
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
        conn_idle(c);
    }
}

/* The reply is out: the request ends; keep the connection or linger and close. */
static void conntx_written(struct conn *c)
{
    struct request *r = c->req;
    c->req = NULL;
    request_finish(r, true);
    if (c->keep_alive) {
        conntx_next(c);
        return;
    }
    conn_buf_give(c);
    shutdown(c->fd, SHUT_WR);
    c->state = CONN_LINGER;
    conn_list_add(c, &c->loop->linger);
    conn_arm(c, CONN_LINGER_US);
    connrx_read(c);
}

/* Write what is left of the reply: all of it (then keep-alive or the linger), or until the
 * socket is full (a stall deadline), or the socket failed (closed). */
void conntx_write(struct conn *c)
{
    struct request *r = c->req;
    for (;;) {
        size_t body = r->method == METHOD_HEAD || r->status == 204 ? 0 : r->out_len;
        size_t total = r->wire_len + body;
        if (c->out_off >= total) {
            conntx_written(c);
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
void conntx_reply(struct conn *c)
{
    struct conn_loop *l = c->loop;
    struct request *r = c->req;
    if (c->client_left) {
        /* It left while its request was handed on: nobody reads this (a first write into a
         * closed socket would still succeed and count as sent); the client's loss, 499. */
        conn_close(c);
        return;
    }
    if (r->close)
        c->keep_alive = false;
    bool http10_ka = c->keep_alive && c->rx.buf && h1_minor(&c->rx) == 0;
    size_t body;
    request_wire(r, c->keep_alive, http10_ka, conntx_date(l), &body);
    atomic_store_explicit(&r->state, REQUEST_SENT, memory_order_relaxed);
    c->state = CONN_WRITE;
    c->out_off = 0;
    conntx_write(c);
}

/* Answer what is not a request (head NULL) or a request in progress with error e, and close
 * after it. */
void conntx_refuse(struct conn *c, enum apierr e, const char *message)
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
    conntx_reply(c);
}
