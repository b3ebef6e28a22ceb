/*
 * conn: a connection's life on its loop (see conn.h): open and close, the socket's events, the
 * stage deadlines, the tasks that carry its work past the turn (the next pipelined request, a
 * handed-on request's reply, its free), and the loop's bookkeeping (the idle and linger lists
 * eviction takes from, the read buffers kept for reuse, the refusal counters). The request
 * coming in is connrx's, the reply going out conntx's.
 */
#include "conn.h"
#include "compiler.h"
#include "connrx.h"
#include "conntx.h"
#include "log.h"
#include "mclock.h"
#include "request.h"
#include "xalloc.h"

#include <errno.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

/* ---- lists and buffers ------------------------------------------------------------------- */

void conn_list_add(struct conn *c, struct conn_list *list)
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

void conn_list_remove(struct conn *c)
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

char *conn_buf_take(struct conn_loop *l)
{
    return l->nfree ? l->free_bufs[--l->nfree] : xmalloc(CONN_BUF_SIZE);
}

/* The request's buffer goes back (to the free list when it is of the usual size). */
void conn_buf_give(struct conn *c)
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

void conn_arm(struct conn *c, int64_t after_us)
{
    conn_arm_at(c, mclock_now_us() + after_us);
}

/* A head or a body in progress: its stage's deadline, or HTTP_IDLE_TIMEOUT_S with no byte,
 * whichever comes first (the inactivity timeout keeps its meaning inside a request). */
void conn_arm_stage(struct conn *c, int64_t now)
{
    int64_t quiet = now + c->loop->env->idle_us;
    conn_arm_at(c, quiet < c->stage_deadline_us ? quiet : c->stage_deadline_us);
}

void conn_disarm(struct conn *c)
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

void conn_count(struct conn *c, enum conn_refusal why)
{
    conn_counter_add(c->loop->counters, why);
    if (c->loop->refused)
        c->loop->refused(c->loop, c, why);
}

/* ---- refusals ---------------------------------------------------------------------------- */

void conn_refuse(struct conn *c, enum apierr e, const char *message, bool linger)
{
    conntx_refuse(c, e, message);
    if (!linger)
        conn_close(c);
}

void conn_idle(struct conn *c)
{
    conn_buf_give(c);
    c->state = CONN_IDLE;
    c->served = true;
    conn_list_add(c, &c->loop->idle);
    conn_arm(c, c->loop->env->idle_us);
    if (c->may_read)
        conn_later(c);
}

/* ---- tasks --------------------------------------------------------------------------------- */

void conn_later(struct conn *c)
{
    if (c->task_queued)
        return;
    c->task_queued = true;
    evloop_defer(c->loop->t, &c->task);
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
            connrx_parse(c);
        if (c->may_read && c->state == CONN_HEAD)
            connrx_read(c);
        return;
    case CONN_IDLE:
        if (c->may_read)
            connrx_read(c);
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
    conntx_reply(c);
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

/* The client's end arrived while its request is with a handler: gone, unless bytes come before
 * the end (a pipelined request: known only once they are read). A half-close is an end too, as
 * nginx takes it: nothing tells it from a client that left. */
static void conn_note_end(struct conn *c)
{
    char b;
    ssize_t n = recv(c->fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR))
        c->client_left = true;
}

void conn_event(struct conn *c, uint32_t events)
{
    if (c->state == CONN_CLOSED)
        return;
    bool readable = events & (EPOLLIN | EPOLLRDHUP | EPOLLERR | EPOLLHUP);
    if (events & (EPOLLRDHUP | EPOLLERR | EPOLLHUP))
        c->end_seen = true; /* reported once (edge-triggered): connrx reads on to it */
    if (c->state == CONN_WRITE && (events & (EPOLLOUT | EPOLLERR | EPOLLHUP))) {
        /* Edge-triggered: a read reported with the room to write is not reported again. It
         * follows the reply (conn_next). */
        if (readable)
            c->may_read = true;
        conntx_write(c);
        return;
    }
    if (!readable)
        return;
    if (c->state == CONN_BUSY || c->state == CONN_WRITE)
        c->may_read = true;
    else
        connrx_read(c); /* may hand a request on (BUSY) and leave the end unread */
    /* Edge-triggered, the end is reported once: now, before the reply comes back. */
    if (c->state == CONN_BUSY && (events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)))
        conn_note_end(c);
}

static void conn_deadline(struct evloop_watch *w, enum evloop_event ev)
{
    struct conn *c = container_of(w, struct conn, timer);
    if (ev == EVLOOP_STOP)
        return; /* http_stop closes it */
    switch (c->state) {
    case CONN_HEAD:
        conn_count(c, CONN_HEAD_TIMEOUT);
        conntx_refuse(c, APIERR_REQUEST_TIMEOUT,
                      mclock_now_us() >= c->stage_deadline_us
                          ? "the request head was not complete within HTTP_HEAD_TIMEOUT_MS"
                          : "no byte of the request head for HTTP_IDLE_TIMEOUT_S");
        return;
    case CONN_BODY:
        conn_count(c, CONN_BODY_TIMEOUT);
        conntx_refuse(c, APIERR_REQUEST_TIMEOUT,
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

/* Take c off its loop: its deadline, its lists, its socket, its counts. */
static void conn_detach(struct conn *c)
{
    struct conn_loop *l = c->loop;
    conn_disarm(c);
    conn_list_remove(c);
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
}

void conn_close(struct conn *c)
{
    struct conn_loop *l = c->loop;
    if (c->state == CONN_CLOSED)
        return;
    if (c->req) {
        struct request *r = c->req;
        c->req = NULL;
        request_finish(r, false);
    }
    conn_buf_give(c);
    conn_detach(c);
    if (l->final) {
        free(c);
        return;
    }
    conn_later(c); /* its task frees it (a task queued already, when it runs) */
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

void conn_close_all(struct conn_loop *l)
{
    l->final = true;
    while (l->all) {
        struct conn *c = l->all;
        enum request_state handed = REQUEST_DEFERRED;
        if (c->state == CONN_BUSY && c->req &&
            atomic_compare_exchange_strong_explicit(&c->req->state, &handed, REQUEST_ORPHANED,
                                                    memory_order_acq_rel, memory_order_acquire)) {
            /* Handed on and not back (the server stops its workers first: a late owner). The
             * owner may still read the request, whose head is in this buffer, and will resume
             * it: the memory stays with it (request_resume frees both), the socket closes. A
             * request resumed already (READY, its task never run) is closed below: 499. */
            log_warn("http", "a request was still handed on at shutdown: its client gets no "
                             "answer (499 when it comes back)");
            c->req = NULL;
            conn_detach(c);
            c->loop = NULL; /* the loop's memory goes with http_stop */
            continue;
        }
        conn_close(c);
    }
}

void conn_orphan_free(struct conn *c)
{
    h1_free(&c->rx);
    free(c->rx.buf);
    free(c);
}
