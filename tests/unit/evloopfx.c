/*
 * evloopfx: the event-loop tests' fixture (see evloopfx.h).
 */
#include "evloopfx.h"
#include "compiler.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

/* Loop thread: drive the source (drain the eventfd, as libmicrohttpd reads its epoll set). */
void evfx_run_cb(void *arg, unsigned i)
{
    struct evfx *c = arg;
    uint64_t v;
    ssize_t n = read(c->sources[i], &v, sizeof(v)); /* nothing to read (EAGAIN) is usual */
    (void)n;
    struct evloop_thread *self = evloop_current();
    pthread_mutex_lock(&c->mu);
    c->runs[i]++;
    if (!c->run_self[i])
        c->run_self[i] = self;
    if (!self || self != c->run_self[i])
        c->run_elsewhere = true;
    c->timeout_us[i] = -1;
    c->run_at_us[i] = mclock_now_us();
    c->turn_us[i] = self ? evloop_turn_us(self) : 0;
    c->run_seq[i] = ++c->seq;
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
}

int64_t evfx_timeout_cb(void *arg, unsigned i)
{
    struct evfx *c = arg;
    pthread_mutex_lock(&c->mu);
    int64_t t = c->timeout_us[i];
    pthread_mutex_unlock(&c->mu);
    return t;
}

/* Loop thread: record which thread and loop this is. */
void evfx_who_fn(void *arg, unsigned i)
{
    struct evfx *c = arg;
    pthread_mutex_lock(&c->mu);
    c->self[i] = evloop_current();
    c->tid[i] = pthread_self();
    pthread_getname_np(pthread_self(), c->name[i], sizeof(c->name[i]));
    c->calls[i]++;
    if (c->ncall < sizeof(c->call_order) / sizeof(c->call_order[0]))
        c->call_order[c->ncall++] = i;
    pthread_mutex_unlock(&c->mu);
}

void evfx_noop_fn(void *arg, unsigned i)
{
    (void)arg;
    (void)i;
}

/* Start EVFX_NLOOPS loops named "evt" on fresh eventfds, and learn their threads; with
 * lag_probe_us > 0 each loop probes its lag into c->lag. */
void evfx_start_probing(struct evfx *c, int64_t lag_probe_us)
{
    memset(c, 0, sizeof(*c));
    pthread_mutex_init(&c->mu, NULL);
    mclock_cond_init(&c->cv);
    for (int i = 0; i < EVFX_NLOOPS; i++) {
        c->sources[i] = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        assert_true(c->sources[i] >= 0);
        c->timeout_us[i] = -1;
    }
    struct evloop_ops ops = {.run = evfx_run_cb,
                             .timeout_us = evfx_timeout_cb,
                             .ctx = c,
                             .lag = lag_probe_us > 0 ? c->lag : NULL,
                             .lag_probe_us = lag_probe_us};
    assert_int_equal(evloop_start("evt", EVFX_NLOOPS, c->sources, &ops, &c->l), 0);
    assert_non_null(c->l);
    evloop_call(c->l, evfx_who_fn, c);
}

void evfx_start(struct evfx *c)
{
    evfx_start_probing(c, 0);
}

void evfx_stop(struct evfx *c)
{
    evloop_stop(c->l);
    c->l = NULL;
    for (int i = 0; i < EVFX_NLOOPS; i++)
        close(c->sources[i]);
    pthread_cond_destroy(&c->cv);
    pthread_mutex_destroy(&c->mu);
}

/* Loop thread: a watch fired. */
void evfx_probe_fire(struct evloop_watch *w, enum evloop_event ev)
{
    struct evfx_probe *p = container_of(w, struct evfx_probe, w);
    struct evfx *c = p->c;
    struct evloop_thread *on = evloop_current();
    pthread_mutex_lock(&c->mu);
    p->fires++;
    p->ev = ev;
    p->on = on;
    p->disarmed = w->loop == NULL;
    p->fired_at_us = mclock_now_us();
    p->fired_seq = ++c->seq;
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
}

void evfx_probe_init(struct evfx_probe *p, struct evfx *c)
{
    memset(p, 0, sizeof(*p));
    p->c = c;
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, p->fds), 0);
    p->w.fire = evfx_probe_fire;
    p->w.fd = p->fds[0];
}

void evfx_probe_close(struct evfx_probe *p)
{
    close(p->fds[0]);
    close(p->fds[1]);
}

/* Make the watched end readable (one byte), or read that byte back. */
void evfx_poke(struct evfx_probe *p)
{
    assert_int_equal(write(p->fds[1], "x", 1), 1);
}

void evfx_drain(struct evfx_probe *p)
{
    char b;
    assert_int_equal(read(p->fds[0], &b, 1), 1);
}

struct arm_req {
    struct evfx_probe *p;
    uint64_t *watched;
    unsigned index;
    int64_t deadline_us;
    int rc;
};

/* Loop thread (evloop_call): arm the probe on the loop asked for. */
static void arm_fn(void *arg, unsigned i)
{
    struct arm_req *r = arg;
    if (i == r->index)
        r->rc = evloop_watch(evloop_current(), &r->p->w, r->watched, r->deadline_us);
}

/* Arm p on loop index with its own bitmask (or another one), from that loop's thread. */
int evfx_arm_with(struct evfx *c, struct evfx_probe *p, unsigned index, int64_t deadline_us,
                  uint64_t *watched)
{
    struct arm_req r = {
        .p = p, .watched = watched, .index = index, .deadline_us = deadline_us, .rc = 1};
    evloop_call(c->l, arm_fn, &r);
    return r.rc;
}

int evfx_arm(struct evfx *c, struct evfx_probe *p, unsigned index, int64_t deadline_us)
{
    return evfx_arm_with(c, p, index, deadline_us, &p->watched);
}

int64_t evfx_far_deadline(void)
{
    return mclock_now_us() + 3600 * 1000000ll;
}

/* Every loop goes once round its loop: whatever was ready before this is handled by now. */
void evfx_round_trip(struct evfx *c)
{
    evloop_call(c->l, evfx_noop_fn, NULL);
}
