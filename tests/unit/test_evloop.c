/*
 * test_evloop: the HTTP event loops (evloop.h) on real threads and real descriptors.
 *
 * Each loop's source is an eventfd the test owns (written only where a test says so); the run
 * callback counts its calls per loop and checks the thread it runs on; the source has no
 * timeout unless a test sets one. Watches are on socketpairs: writing the far end makes one
 * ready. evloop_watch must be called on its loop's thread, so watches are armed from a function
 * that evloop_call runs there. Covered: start's refusals, evloop_call (once per loop, on its
 * thread, in order), evloop_wake, a readable source and the source's timeout, a watch firing
 * READY, TIMEOUT (and then not READY) and STOP, one-shot firing, re-arming (EPOLL_CTL_MOD, the
 * watched bitmask per loop, a descriptor number reused after close), the lag probe (a loop
 * kept busy shows up in its own lag histogram, an idle one keeps probing), and the deadline
 * heap: the order timers fire in (deadline, then arming; disarmed and re-armed ones), and what
 * many deadlines passing at once cost, counted in comparisons (evloop_deadline_compares), not
 * timed; and per-loop storage (each loop its own slot, kept between calls, disposed once as it
 * ends). Every wait is on the test's condition variable, bounded by WAIT_S; nothing sleeps.
 */
#include "evloop.h"
#include "compiler.h"
#include "mclock.h"

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

#define WAIT_S 30 /* generous bound for any wait; a healthy run needs milliseconds */
#define NLOOPS 3

/* What the loops' callbacks observed. The mutex guards every field; cv is broadcast on any
 * change. */
struct ctx {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct evloop *l;                       /* the loops under test; NULL once stopped */
    int sources[NLOOPS];                    /* eventfds, owned by the test */
    struct evloop_thread *self[NLOOPS];     /* evloop_current() on loop i (who_fn) */
    pthread_t tid[NLOOPS];                  /* loop i's thread (who_fn) */
    char name[NLOOPS][16];                  /* its thread name */
    int calls[NLOOPS];                      /* who_fn calls per loop */
    unsigned call_order[4 * NLOOPS], ncall; /* indexes in the order who_fn ran */
    int runs[NLOOPS];                       /* run callback calls per loop */
    struct evloop_thread *run_self[NLOOPS]; /* evloop_current() in loop i's first run */
    bool run_elsewhere;                     /* a run saw another loop's thread (or none) */
    int64_t timeout_us[NLOOPS];             /* what timeout_us says; a run resets it to -1 */
    int64_t run_at_us[NLOOPS];              /* time of loop i's last run */
    unsigned seq;                           /* orders runs and fires */
    unsigned run_seq[NLOOPS];               /* seq of loop i's last run */
    struct metrics_hist lag[NLOOPS];        /* the loops' lag (written by the loops) */
    int64_t turn_us[NLOOPS];                /* evloop_turn_us in loop i's last run */
};

/* One watch on one socketpair: fds[0] is watched, the test writes fds[1]. */
struct probe {
    struct evloop_watch w;
    struct ctx *c;
    int fds[2];
    uint64_t watched; /* fds[0]'s loops (evloop_watch's bitmask) */
    /* Under c->mu: */
    int fires;
    enum evloop_event ev;     /* the last one */
    struct evloop_thread *on; /* evloop_current() when it fired */
    bool disarmed;            /* w.loop was NULL when it fired */
    int64_t fired_at_us;
    unsigned fired_seq;
};

#define WAIT_UNTIL(c, cond)                                                                        \
    do {                                                                                           \
        struct timespec dl_ = mclock_timespec(mclock_now_us() + WAIT_S * 1000000ll);               \
        pthread_mutex_lock(&(c)->mu);                                                              \
        bool ok_ = true;                                                                           \
        while (ok_ && !(cond))                                                                     \
            if (pthread_cond_timedwait(&(c)->cv, &(c)->mu, &dl_) == ETIMEDOUT)                     \
                ok_ = (cond);                                                                      \
        pthread_mutex_unlock(&(c)->mu);                                                            \
        if (!ok_)                                                                                  \
            fail_msg("timed out waiting for %s", #cond);                                           \
    } while (0)

#define CTX_READ(c, expr)                                                                          \
    ({                                                                                             \
        pthread_mutex_lock(&(c)->mu);                                                              \
        __typeof__(expr) v_ = (expr);                                                              \
        pthread_mutex_unlock(&(c)->mu);                                                            \
        v_;                                                                                        \
    })

/* Loop thread: drive the source (drain the eventfd, as libmicrohttpd reads its epoll set). */
static void run_cb(void *arg, unsigned i)
{
    struct ctx *c = arg;
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

static int64_t timeout_cb(void *arg, unsigned i)
{
    struct ctx *c = arg;
    pthread_mutex_lock(&c->mu);
    int64_t t = c->timeout_us[i];
    pthread_mutex_unlock(&c->mu);
    return t;
}

/* Loop thread: record which thread and loop this is. */
static void who_fn(void *arg, unsigned i)
{
    struct ctx *c = arg;
    pthread_mutex_lock(&c->mu);
    c->self[i] = evloop_current();
    c->tid[i] = pthread_self();
    pthread_getname_np(pthread_self(), c->name[i], sizeof(c->name[i]));
    c->calls[i]++;
    if (c->ncall < sizeof(c->call_order) / sizeof(c->call_order[0]))
        c->call_order[c->ncall++] = i;
    pthread_mutex_unlock(&c->mu);
}

static void noop_fn(void *arg, unsigned i)
{
    (void)arg;
    (void)i;
}

/* Start NLOOPS loops named "evt" on fresh eventfds, and learn their threads; with
 * lag_probe_us > 0 each loop probes its lag into c->lag. */
static void start_probing(struct ctx *c, int64_t lag_probe_us)
{
    memset(c, 0, sizeof(*c));
    pthread_mutex_init(&c->mu, NULL);
    mclock_cond_init(&c->cv);
    for (int i = 0; i < NLOOPS; i++) {
        c->sources[i] = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        assert_true(c->sources[i] >= 0);
        c->timeout_us[i] = -1;
    }
    struct evloop_ops ops = {.run = run_cb,
                             .timeout_us = timeout_cb,
                             .ctx = c,
                             .lag = lag_probe_us > 0 ? c->lag : NULL,
                             .lag_probe_us = lag_probe_us};
    assert_int_equal(evloop_start("evt", NLOOPS, c->sources, &ops, &c->l), 0);
    assert_non_null(c->l);
    evloop_call(c->l, who_fn, c);
}

static void start(struct ctx *c)
{
    start_probing(c, 0);
}

static void stop(struct ctx *c)
{
    evloop_stop(c->l);
    c->l = NULL;
    for (int i = 0; i < NLOOPS; i++)
        close(c->sources[i]);
    pthread_cond_destroy(&c->cv);
    pthread_mutex_destroy(&c->mu);
}

/* Loop thread: a watch fired. */
static void probe_fire(struct evloop_watch *w, enum evloop_event ev)
{
    struct probe *p = container_of(w, struct probe, w);
    struct ctx *c = p->c;
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

static void probe_init(struct probe *p, struct ctx *c)
{
    memset(p, 0, sizeof(*p));
    p->c = c;
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, p->fds), 0);
    p->w.fire = probe_fire;
    p->w.fd = p->fds[0];
}

static void probe_close(struct probe *p)
{
    close(p->fds[0]);
    close(p->fds[1]);
}

/* Make the watched end readable (one byte), or read that byte back. */
static void poke(struct probe *p)
{
    assert_int_equal(write(p->fds[1], "x", 1), 1);
}

static void drain(struct probe *p)
{
    char b;
    assert_int_equal(read(p->fds[0], &b, 1), 1);
}

struct arm_req {
    struct probe *p;
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
static int arm_with(struct ctx *c, struct probe *p, unsigned index, int64_t deadline_us,
                    uint64_t *watched)
{
    struct arm_req r = {
        .p = p, .watched = watched, .index = index, .deadline_us = deadline_us, .rc = 1};
    evloop_call(c->l, arm_fn, &r);
    return r.rc;
}

static int arm(struct ctx *c, struct probe *p, unsigned index, int64_t deadline_us)
{
    return arm_with(c, p, index, deadline_us, &p->watched);
}

static int64_t far_deadline(void)
{
    return mclock_now_us() + 3600 * 1000000ll;
}

/* Every loop goes once round its loop: whatever was ready before this is handled by now. */
static void round_trip(struct ctx *c)
{
    evloop_call(c->l, noop_fn, NULL);
}

/* ---- starting and calling ----------------------------------------------------------------- */

static void start_refuses_no_loops_too_many_and_a_bad_source(void **state)
{
    (void)state;
    int src[EVLOOP_MAX + 1];
    for (int i = 0; i <= EVLOOP_MAX; i++)
        src[i] = -1;
    struct evloop_ops ops = {.run = run_cb, .timeout_us = timeout_cb, .ctx = NULL};
    struct evloop *l = NULL;
    assert_int_equal(evloop_start("bad", 0, src, &ops, &l), -EINVAL);
    assert_int_equal(evloop_start("bad", EVLOOP_MAX + 1, src, &ops, &l), -EINVAL);
    assert_int_equal(evloop_start("bad", 2, src, &ops, &l), -EBADF);
    struct metrics_hist lag[2];
    struct evloop_ops no_interval = {
        .run = run_cb, .timeout_us = timeout_cb, .ctx = NULL, .lag = lag, .lag_probe_us = 0};
    assert_int_equal(evloop_start("bad", 2, src, &no_interval, &l), -EINVAL);
    /* A regular file cannot be in an epoll set: what was made for the first loop is undone. */
    int ok = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC), file = open("/dev/null", O_RDONLY);
    assert_true(ok >= 0 && file >= 0);
    int two[2] = {ok, file};
    assert_int_equal(evloop_start("bad", 2, two, &ops, &l), -EPERM);
    assert_null(l);
    close(ok);
    close(file);
}

static void call_runs_once_on_each_loop_thread_with_its_index(void **state)
{
    (void)state;
    struct ctx c;
    start(&c);
    assert_null(evloop_current()); /* not a loop thread */
    pthread_mutex_lock(&c.mu);
    for (unsigned i = 0; i < NLOOPS; i++) {
        assert_int_equal(c.calls[i], 1);
        assert_non_null(c.self[i]);
        assert_false(pthread_equal(c.tid[i], pthread_self()));
        char want[16];
        snprintf(want, sizeof(want), "evt-%u", i);
        assert_string_equal(c.name[i], want);
        assert_int_equal(c.call_order[i], i); /* one after the other, in index order */
        for (unsigned k = 0; k < i; k++) {
            assert_ptr_not_equal(c.self[k], c.self[i]);
            assert_false(pthread_equal(c.tid[k], c.tid[i]));
        }
        /* The call's wake-up ran the source first, on the same loop. */
        assert_true(c.runs[i] >= 1);
        assert_ptr_equal(c.run_self[i], c.self[i]);
    }
    assert_false(c.run_elsewhere);
    struct evloop_thread *before[NLOOPS];
    memcpy(before, c.self, sizeof(before));
    pthread_mutex_unlock(&c.mu);

    evloop_call(c.l, who_fn, &c);
    pthread_mutex_lock(&c.mu);
    assert_int_equal(c.ncall, 2 * NLOOPS);
    for (unsigned i = 0; i < NLOOPS; i++) {
        assert_int_equal(c.calls[i], 2);
        assert_ptr_equal(c.self[i], before[i]);
        assert_int_equal(c.call_order[NLOOPS + i], i);
    }
    pthread_mutex_unlock(&c.mu);
    stop(&c);
}

static void wake_from_another_thread_makes_that_loop_run_its_source(void **state)
{
    (void)state;
    struct ctx c;
    start(&c);
    /* After evloop_call, every loop waits with nothing to do: the counts stand still. */
    int before[NLOOPS];
    pthread_mutex_lock(&c.mu);
    memcpy(before, c.runs, sizeof(before));
    pthread_mutex_unlock(&c.mu);
    evloop_wake(c.self[1]);
    WAIT_UNTIL(&c, c.runs[1] > before[1]);
    assert_int_equal(CTX_READ(&c, c.runs[0]), before[0]);
    assert_int_equal(CTX_READ(&c, c.runs[2]), before[2]);
    assert_false(CTX_READ(&c, c.run_elsewhere));
    stop(&c);
}

static void a_readable_source_makes_its_loop_run(void **state)
{
    (void)state;
    struct ctx c;
    start(&c);
    int before[NLOOPS];
    pthread_mutex_lock(&c.mu);
    memcpy(before, c.runs, sizeof(before));
    pthread_mutex_unlock(&c.mu);
    uint64_t one = 1;
    assert_int_equal(write(c.sources[2], &one, sizeof(one)), sizeof(one));
    WAIT_UNTIL(&c, c.runs[2] > before[2]);
    assert_int_equal(CTX_READ(&c, c.runs[0]), before[0]);
    assert_int_equal(CTX_READ(&c, c.runs[1]), before[1]);
    assert_false(CTX_READ(&c, c.run_elsewhere));
    stop(&c);
}

struct timeout_req {
    struct ctx *c;
    unsigned index;
    int64_t timeout_us;
    int64_t set_at_us;
    int runs_before; /* loop index's runs when the timeout was set */
};

static void set_timeout_fn(void *arg, unsigned i)
{
    struct timeout_req *r = arg;
    if (i != r->index)
        return;
    pthread_mutex_lock(&r->c->mu);
    r->c->timeout_us[i] = r->timeout_us;
    r->set_at_us = mclock_now_us();
    r->runs_before = r->c->runs[i];
    pthread_mutex_unlock(&r->c->mu);
}

/* The source's own timeout (libmicrohttpd's connection timeouts) wakes the loop: its run is
 * called without any event, and not before the timeout. */
static void the_sources_timeout_makes_its_loop_run_without_an_event(void **state)
{
    (void)state;
    struct ctx c;
    start(&c);
    struct timeout_req r = {.c = &c, .index = 0, .timeout_us = 20000};
    evloop_call(c.l, set_timeout_fn, &r);
    /* Loops 1 and 2 are idle now; loop 0 is waiting for its timeout (or ran already). */
    int before[NLOOPS];
    pthread_mutex_lock(&c.mu);
    memcpy(before, c.runs, sizeof(before));
    pthread_mutex_unlock(&c.mu);
    WAIT_UNTIL(&c, c.runs[0] > r.runs_before);
    assert_true(CTX_READ(&c, c.run_at_us[0]) - r.set_at_us >= 19000);
    assert_int_equal(CTX_READ(&c, c.runs[1]), before[1]);
    assert_int_equal(CTX_READ(&c, c.runs[2]), before[2]);
    stop(&c);
}

/* ---- watches ------------------------------------------------------------------------------- */

static void a_watch_fires_ready_on_its_loop_once_the_peer_writes(void **state)
{
    (void)state;
    struct ctx c;
    start(&c);
    struct probe p;
    probe_init(&p, &c);
    int64_t deadline = far_deadline();
    assert_int_equal(arm(&c, &p, 1, deadline), 0);
    assert_int_equal(p.watched, 1u << 1);
    assert_ptr_equal(p.w.loop, c.self[1]);
    assert_int_equal(p.w.deadline_us, deadline);
    round_trip(&c);
    assert_int_equal(CTX_READ(&c, p.fires), 0); /* nothing to read yet */

    poke(&p);
    WAIT_UNTIL(&c, p.fires == 1);
    pthread_mutex_lock(&c.mu);
    assert_int_equal(p.ev, EVLOOP_READY);
    assert_ptr_equal(p.on, c.self[1]);
    assert_true(p.disarmed);
    assert_true(p.fired_at_us < deadline);
    pthread_mutex_unlock(&c.mu);

    /* One-shot: still readable, but not armed again, it does not fire again. */
    round_trip(&c);
    poke(&p);
    round_trip(&c);
    assert_int_equal(CTX_READ(&c, p.fires), 1);
    stop(&c);
    assert_int_equal(p.fires, 1); /* not armed: stopping does not fire it either */
    probe_close(&p);
}

static void a_watch_whose_deadline_passes_fires_timeout_and_not_ready(void **state)
{
    (void)state;
    struct ctx c;
    start(&c);
    struct probe p;
    probe_init(&p, &c);
    int64_t deadline = mclock_now_us() + 30000;
    assert_int_equal(arm(&c, &p, 0, deadline), 0);
    WAIT_UNTIL(&c, p.fires == 1);
    pthread_mutex_lock(&c.mu);
    assert_int_equal(p.ev, EVLOOP_TIMEOUT);
    assert_ptr_equal(p.on, c.self[0]);
    assert_true(p.disarmed);
    assert_true(p.fired_at_us >= deadline);
    pthread_mutex_unlock(&c.mu);

    /* Disarmed: the socket turning readable afterwards fires nothing. */
    poke(&p);
    round_trip(&c);
    assert_int_equal(CTX_READ(&c, p.fires), 1);
    assert_int_equal(CTX_READ(&c, p.ev), EVLOOP_TIMEOUT);
    stop(&c);
    assert_int_equal(p.fires, 1);
    probe_close(&p);
}

/* A fired watch's socket stays in its loop's epoll set: arming it there again modifies the
 * registration (adding it again would fail, as a cleared bitmask shows), and each loop that
 * holds the socket has its own bit. */
static void rearming_a_socket_on_its_loop_modifies_its_registration(void **state)
{
    (void)state;
    struct ctx c;
    start(&c);
    struct probe p;
    probe_init(&p, &c);
    assert_int_equal(arm(&c, &p, 2, far_deadline()), 0);
    poke(&p);
    WAIT_UNTIL(&c, p.fires == 1);
    drain(&p);

    assert_int_equal(arm(&c, &p, 2, far_deadline()), 0);
    assert_int_equal(p.watched, 1u << 2);
    round_trip(&c);
    assert_int_equal(CTX_READ(&c, p.fires), 1); /* re-armed, and only ready when written */
    poke(&p);
    WAIT_UNTIL(&c, p.fires == 2);
    assert_int_equal(CTX_READ(&c, p.ev), EVLOOP_READY);
    assert_ptr_equal(CTX_READ(&c, p.on), c.self[2]);
    drain(&p);

    uint64_t cleared = 0;
    assert_int_equal(arm_with(&c, &p, 2, far_deadline(), &cleared), -EEXIST);
    assert_int_equal(cleared, 0);
    assert_null(p.w.loop); /* refused: not armed */

    /* The same socket on another loop: added there, a second bit. */
    assert_int_equal(arm(&c, &p, 0, far_deadline()), 0);
    assert_int_equal(p.watched, (1u << 2) | (1u << 0));
    poke(&p);
    WAIT_UNTIL(&c, p.fires == 3);
    assert_ptr_equal(CTX_READ(&c, p.on), c.self[0]);
    assert_int_equal(CTX_READ(&c, p.ev), EVLOOP_READY);
    stop(&c);
    probe_close(&p);
}

/* libpq drops a broken connection's socket, and a new connection may get its number: the
 * bitmask says "in the set" but the kernel forgot the closed file. Arming falls back to adding
 * it. */
static void a_closed_socket_whose_number_was_reused_is_added_again(void **state)
{
    (void)state;
    struct ctx c;
    start(&c);
    struct probe p;
    probe_init(&p, &c);
    assert_int_equal(arm(&c, &p, 1, far_deadline()), 0);
    poke(&p);
    WAIT_UNTIL(&c, p.fires == 1);
    int number = p.fds[0];
    probe_close(&p);

    /* A new socket under the old number (dup2 if the kernel picked another one). */
    int fresh[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fresh), 0);
    if (fresh[1] == number) {
        int t = fresh[0];
        fresh[0] = fresh[1];
        fresh[1] = t;
    } else if (fresh[0] != number) {
        assert_int_equal(dup2(fresh[0], number), number);
        close(fresh[0]);
        fresh[0] = number;
    }
    p.fds[0] = fresh[0];
    p.fds[1] = fresh[1];
    assert_int_equal(p.w.fd, number);
    assert_int_equal(p.watched, 1u << 1);

    assert_int_equal(arm(&c, &p, 1, far_deadline()), 0);
    assert_int_equal(p.watched, 1u << 1);
    poke(&p);
    WAIT_UNTIL(&c, p.fires == 2);
    assert_int_equal(CTX_READ(&c, p.ev), EVLOOP_READY);
    assert_ptr_equal(CTX_READ(&c, p.on), c.self[1]);
    stop(&c);
    probe_close(&p);
}

/* evloop_stop: every armed watch fires STOP on its own loop's thread, then the source runs a
 * last time, and the threads are joined before it returns. A watch that fired already is not
 * fired again. */
/* Two watches whose events come in one turn, the first to fire disarming the other (say, a
 * request ending a connection that another one waits on, then freeing it). */
struct rival {
    struct probe p; /* first: the watch's container */
    struct rival *other;
};

static void rival_fire(struct evloop_watch *w, enum evloop_event ev)
{
    struct rival *r = container_of(container_of(w, struct probe, w), struct rival, p);
    if (ev == EVLOOP_READY && r->other->p.w.loop)
        evloop_unwatch(&r->other->p.w);
    probe_fire(w, ev);
}

/* Loop thread (evloop_call): make both readable while the loop is busy here, so that its next
 * epoll_wait reports them together. */
static void poke_both_fn(void *arg, unsigned i)
{
    struct rival *r = arg;
    if (i == 1) {
        poke(&r[0].p);
        poke(&r[1].p);
    }
}

static void a_watch_disarmed_by_another_in_the_same_turn_does_not_fire(void **state)
{
    (void)state;
    struct ctx c;
    start(&c);
    struct rival r[2];
    for (int i = 0; i < 2; i++) {
        probe_init(&r[i].p, &c);
        r[i].p.w.fire = rival_fire;
        r[i].other = &r[1 - i];
        assert_int_equal(arm(&c, &r[i].p, 1, far_deadline()), 0);
    }
    evloop_call(c.l, poke_both_fn, r);
    WAIT_UNTIL(&c, r[0].p.fires + r[1].p.fires >= 1);
    round_trip(&c);
    round_trip(&c);
    pthread_mutex_lock(&c.mu);
    assert_int_equal(r[0].p.fires + r[1].p.fires, 1);
    pthread_mutex_unlock(&c.mu);
    stop(&c);
    assert_int_equal(r[0].p.fires + r[1].p.fires, 1); /* neither was armed at the stop */
    probe_close(&r[0].p);
    probe_close(&r[1].p);
}

/* A watch whose callback defers work to the end of the turn (as lanes gather the turn's
 * statements into one write). */
struct deferrer {
    struct probe p; /* first: the watch's container */
    struct evloop_task task[2];
    /* Under p.c->mu: */
    int ran[2];
    unsigned ran_seq[2];             /* c->seq when each ran */
    unsigned run_seq_seen[2];        /* the loop's last run then */
    struct evloop_thread *ran_on[2]; /* evloop_current() then */
};

static void deferred_record(struct deferrer *d, int k)
{
    struct ctx *c = d->p.c;
    pthread_mutex_lock(&c->mu);
    d->ran[k]++;
    d->ran_seq[k] = ++c->seq;
    d->run_seq_seen[k] = c->run_seq[1];
    d->ran_on[k] = evloop_current();
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
}

/* The second task: deferred by the first, in the same end of turn. */
static void deferred_second(struct evloop_task *task)
{
    deferred_record(container_of(task, struct deferrer, task[1]), 1);
}

static void deferred_first(struct evloop_task *task)
{
    struct deferrer *d = container_of(task, struct deferrer, task[0]);
    deferred_record(d, 0);
    evloop_defer(evloop_current(), &d->task[1]);
}

static void deferrer_fire(struct evloop_watch *w, enum evloop_event ev)
{
    struct deferrer *d = container_of(container_of(w, struct probe, w), struct deferrer, p);
    probe_fire(w, ev);
    evloop_defer(evloop_current(), &d->task[0]);
}

static void work_deferred_in_a_turn_runs_after_its_source_run_on_the_same_loop(void **state)
{
    (void)state;
    struct ctx c;
    start(&c);
    struct deferrer d;
    memset(&d, 0, sizeof(d));
    probe_init(&d.p, &c);
    d.p.w.fire = deferrer_fire;
    d.task[0].fn = deferred_first;
    d.task[1].fn = deferred_second;
    assert_int_equal(arm(&c, &d.p, 1, far_deadline()), 0);
    poke(&d.p);
    WAIT_UNTIL(&c, d.ran[1] == 1);
    round_trip(&c);
    pthread_mutex_lock(&c.mu);
    assert_int_equal(d.p.fires, 1);
    assert_int_equal(d.ran[0], 1);
    assert_int_equal(d.ran[1], 1);
    /* fire, then the source's run, then the deferred work, on loop 1's thread */
    assert_true(d.run_seq_seen[0] > d.p.fired_seq);
    assert_true(d.ran_seq[0] > d.run_seq_seen[0]);
    assert_ptr_equal(d.ran_on[0], c.self[1]);
    /* what deferred work defers runs in the same end of turn: no run in between */
    assert_true(d.ran_seq[1] > d.ran_seq[0]);
    assert_int_equal(d.run_seq_seen[1], d.run_seq_seen[0]);
    assert_ptr_equal(d.ran_on[1], c.self[1]);
    pthread_mutex_unlock(&c.mu);
    stop(&c);
    probe_close(&d.p);
}

static void stop_fires_stop_on_armed_watches_and_joins(void **state)
{
    (void)state;
    struct ctx c;
    start(&c);
    struct probe armed[2], done;
    for (unsigned i = 0; i < 2; i++) {
        probe_init(&armed[i], &c);
        assert_int_equal(arm(&c, &armed[i], i, far_deadline()), 0);
    }
    probe_init(&done, &c);
    assert_int_equal(arm(&c, &done, 2, far_deadline()), 0);
    poke(&done);
    WAIT_UNTIL(&c, done.fires == 1);
    struct evloop_thread *self[NLOOPS];
    int before[NLOOPS];
    pthread_mutex_lock(&c.mu);
    memcpy(self, c.self, sizeof(self));
    memcpy(before, c.runs, sizeof(before));
    pthread_mutex_unlock(&c.mu);

    evloop_stop(c.l);
    c.l = NULL;
    /* Joined: the loops wrote everything below before evloop_stop returned. */
    for (unsigned i = 0; i < 2; i++) {
        assert_int_equal(armed[i].fires, 1);
        assert_int_equal(armed[i].ev, EVLOOP_STOP);
        assert_ptr_equal(armed[i].on, self[i]);
        assert_true(armed[i].disarmed);
        assert_true(armed[i].fired_seq < c.run_seq[i]); /* the last run comes after */
    }
    assert_int_equal(done.fires, 1);
    assert_int_equal(done.ev, EVLOOP_READY);
    for (unsigned i = 0; i < NLOOPS; i++)
        assert_true(c.runs[i] > before[i]);
    assert_false(c.run_elsewhere);
    for (int i = 0; i < NLOOPS; i++)
        close(c.sources[i]);
    pthread_cond_destroy(&c.cv);
    pthread_mutex_destroy(&c.mu);
    probe_close(&armed[0]);
    probe_close(&armed[1]);
    probe_close(&done);
}

#define LAG_PROBE_US 1000  /* the lag test's probe interval */
#define BUSY_US      60000 /* how long it keeps loop 1 from waiting */

/* Loop thread: loop 1 computes for BUSY_US without waiting (a turn that serves too much); the
 * others return at once. */
static void busy_fn(void *arg, unsigned i)
{
    (void)arg;
    if (i != 1)
        return;
    int64_t until = mclock_now_us() + BUSY_US;
    while (mclock_now_us() < until)
        ;
}

/* Observations of h above bound_us, one of metrics_hist_bounds_us. */
static uint64_t lag_above(struct metrics_hist *h, int64_t bound_us)
{
    uint64_t n = 0;
    for (int b = 1; b <= METRICS_HIST_BUCKETS; b++)
        if (metrics_hist_bounds_us[b - 1] >= bound_us)
            n += atomic_load(&h->counts[b]);
    return n;
}

static void a_loop_kept_busy_shows_its_lag_and_an_idle_one_keeps_probing(void **state)
{
    (void)state;
    struct ctx c;
    memset(&c, 0, sizeof(c));
    start_probing(&c, LAG_PROBE_US);
    /* Idle loops wake for their probe: samples arrive with nothing else happening. */
    WAIT_UNTIL(&c, atomic_load(&c.lag[0].count) >= 3 && atomic_load(&c.lag[2].count) >= 3);
    /* ... and, idle, they read them in time (some of them at least: this machine is shared). */
    assert_true(atomic_load(&c.lag[0].count) > lag_above(&c.lag[0], 10000));
    /* Loop 1 is kept busy for 60 ms: the probe that fell due meanwhile is read that late. */
    evloop_call(c.l, busy_fn, NULL);
    WAIT_UNTIL(&c, lag_above(&c.lag[1], 50000) >= 1);
    /* A turn's time is when its wait returned: after the busy call, not before it. */
    int64_t after = mclock_now_us();
    WAIT_UNTIL(&c, c.turn_us[1] >= after);
    stop(&c);
}

/* ---- the deadline heap --------------------------------------------------------------------- */

struct timerset;

/* A timer alone (a watch with fd -1). */
struct timer {
    struct evloop_watch w;
    struct timerset *set;
    uint64_t armed_seq; /* the order the test armed it in (a re-arm counts anew) */
    /* Under set->c->mu: */
    unsigned order; /* 1 for the first of the set to fire, ...; 0: has not fired */
    enum evloop_event ev;
};

struct timerset {
    struct ctx *c;
    struct timer *t;
    size_t n;
    uint64_t next_seq;    /* armed_seq of the next timer armed */
    int arm_failed;       /* evloop_watch calls that did not return 0 */
    uint64_t compares[3]; /* evloop_deadline_compares: before arming, after, after firing */
    unsigned fired;       /* under c->mu */
};

static void timer_fire(struct evloop_watch *w, enum evloop_event ev)
{
    struct timer *tm = container_of(w, struct timer, w);
    struct ctx *c = tm->set->c;
    pthread_mutex_lock(&c->mu);
    tm->order = ++tm->set->fired;
    tm->ev = ev;
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
}

/* Loop thread: arm (or re-arm) timer k of s at deadline_us. */
static void timer_arm(struct timerset *s, size_t k, int64_t deadline_us)
{
    struct timer *tm = &s->t[k];
    tm->set = s;
    tm->w.fd = -1;
    tm->w.fire = timer_fire;
    tm->armed_seq = s->next_seq++;
    if (evloop_watch(evloop_current(), &tm->w, NULL, deadline_us) != 0)
        s->arm_failed++;
}

/* Loop thread: read the count of comparisons into compares[slot], disarm what is armed. */
static void timers_read_and_disarm(struct timerset *s, int slot)
{
    s->compares[slot] = evloop_deadline_compares(evloop_current());
    for (size_t k = 0; k < s->n; k++)
        if (s->t[k].w.loop)
            evloop_unwatch(&s->t[k].w);
}

enum { MANY_PASSED = 5000, MANY_FAR = 5000, MANY = MANY_PASSED + MANY_FAR };

/* Loop 0: MANY_PASSED timers whose deadlines have passed, in a scrambled order, then MANY_FAR
 * an hour away; all in one call, so none fires before the last is armed. */
static void arm_many_fn(void *arg, unsigned i)
{
    struct timerset *s = arg;
    if (i != 0)
        return;
    s->compares[0] = evloop_deadline_compares(evloop_current());
    int64_t now = mclock_now_us();
    for (size_t k = 0; k < MANY; k++) {
        /* 7919 is prime to MANY_PASSED: every deadline of now-MANY_PASSED..now-1 once. */
        int64_t late = 1 + (int64_t)((k * 7919) % MANY_PASSED);
        timer_arm(s, k, k < MANY_PASSED ? now - late : now + 3600 * 1000000ll);
    }
    s->compares[1] = evloop_deadline_compares(evloop_current());
}

static void read_many_fn(void *arg, unsigned i)
{
    if (i == 0)
        timers_read_and_disarm(arg, 2);
}

static uint64_t ceil_log2(uint64_t n)
{
    uint64_t k = 0;
    while ((1ull << k) < n)
        k++;
    return k;
}

/* With n = 10,000 watches armed, k = 5,000 deadlines passing at once cost O(k log n)
 * comparisons (a heap's pops), not O(k n) (a walk of every watch for each that fires), and
 * arming costs O(log n) each. Counted by the loop (evloop_deadline_compares), not timed. */
static void many_deadlines_passing_at_once_cost_k_log_n_comparisons(void **state)
{
    (void)state;
    struct ctx c;
    start(&c);
    struct timerset s = {.c = &c, .n = MANY, .t = calloc(MANY, sizeof(struct timer))};
    assert_non_null(s.t);
    evloop_call(c.l, arm_many_fn, &s);
    assert_int_equal(s.arm_failed, 0);
    WAIT_UNTIL(&c, s.fired == MANY_PASSED);
    evloop_call(c.l, read_many_fn, &s);
    for (size_t k = 0; k < MANY; k++) {
        if (k < MANY_PASSED) {
            assert_int_not_equal(s.t[k].order, 0);
            assert_int_equal(s.t[k].ev, EVLOOP_TIMEOUT);
        } else {
            assert_int_equal(s.t[k].order, 0); /* an hour away */
        }
    }
    uint64_t lg = ceil_log2(MANY), arming = s.compares[1] - s.compares[0],
             expiring = s.compares[2] - s.compares[1];
    printf("# %d armed: %" PRIu64 " comparisons to arm (bound %" PRIu64 "), %" PRIu64
           " for %d to pass (bound %" PRIu64 ")\n",
           MANY, arming, MANY * lg, expiring, MANY_PASSED, 3 * MANY_PASSED * lg);
    assert_true(arming <= MANY * lg);
    /* Each pop: a sift down of two comparisons a level, and the root against the clock. */
    assert_true(expiring <= 3 * MANY_PASSED * lg);
    free(s.t);
    stop(&c);
}

enum { ORDERED = 64 };

/* Loop 1: ORDERED timers whose deadlines passed, two to a deadline, scrambled; then timer 5
 * and 17 disarmed, timer 9 re-armed before all of them and timer 10 after all of them. */
static void arm_ordered_fn(void *arg, unsigned i)
{
    struct timerset *s = arg;
    if (i != 1)
        return;
    int64_t now = mclock_now_us();
    for (size_t k = 0; k < ORDERED; k++)
        timer_arm(s, k, now - 1000 + (int64_t)((k * 37) % ORDERED) / 2);
    evloop_unwatch(&s->t[5].w);
    evloop_unwatch(&s->t[17].w);
    timer_arm(s, 9, now - 2000);
    timer_arm(s, 10, now - 1000 + ORDERED);
}

static void read_ordered_fn(void *arg, unsigned i)
{
    if (i == 1)
        timers_read_and_disarm(arg, 2);
}

/* Deadlines fire earliest first, equal ones in the order armed; a disarmed watch does not
 * fire, and one armed again while armed fires once, at its new deadline. */
static void timers_fire_by_deadline_then_arming_order(void **state)
{
    (void)state;
    struct ctx c;
    start(&c);
    struct timer t[ORDERED];
    memset(t, 0, sizeof(t));
    struct timerset s = {.c = &c, .n = ORDERED, .t = t};
    evloop_call(c.l, arm_ordered_fn, &s);
    assert_int_equal(s.arm_failed, 0);
    WAIT_UNTIL(&c, s.fired == ORDERED - 2);
    round_trip(&c);
    evloop_call(c.l, read_ordered_fn, &s);
    assert_int_equal(CTX_READ(&c, s.fired), ORDERED - 2);
    assert_int_equal(t[5].order, 0);
    assert_int_equal(t[17].order, 0);
    assert_int_equal(t[9].order, 1);
    assert_int_equal(t[10].order, ORDERED - 2);
    struct timer *by_order[ORDERED + 1] = {0};
    for (size_t k = 0; k < ORDERED; k++)
        if (t[k].order)
            by_order[t[k].order] = &t[k];
    for (unsigned o = 2; o <= ORDERED - 2; o++) {
        const struct timer *a = by_order[o - 1], *b = by_order[o];
        assert_non_null(a);
        assert_non_null(b);
        assert_true(a->w.deadline_us < b->w.deadline_us ||
                    (a->w.deadline_us == b->w.deadline_us && a->armed_seq < b->armed_seq));
    }
    stop(&c);
}

/* ---- per-loop storage ---------------------------------------------------------------- */

/* Slot users: what each loop's slot held, and how often each loop's value was disposed.
 * Written on the loops' threads one at a time (evloop_call), read after it returned or after
 * the loops were joined. */
static atomic_size_t slot_key;
struct slot_value {
    unsigned index; /* the loop that made it */
};
static struct slot_value *slot_seen[NLOOPS];
static int slot_disposed[NLOOPS];

static void slot_dispose(void *v)
{
    struct slot_value *sv = v;
    slot_disposed[sv->index]++;
    free(sv);
}

static void slot_fn(void *arg, unsigned i)
{
    (void)arg;
    void **slot = evloop_storage(evloop_current(), &slot_key, slot_dispose);
    if (!*slot) {
        struct slot_value *sv = malloc(sizeof(*sv));
        assert_non_null(sv);
        sv->index = i;
        *slot = sv;
    }
    slot_seen[i] = *slot;
}

static void each_loop_keeps_its_own_storage_until_it_ends(void **state)
{
    (void)state;
    struct ctx c;
    start(&c);
    evloop_call(c.l, slot_fn, NULL);
    struct slot_value *first[NLOOPS];
    for (unsigned i = 0; i < NLOOPS; i++) {
        assert_non_null(slot_seen[i]);
        assert_int_equal(slot_seen[i]->index, i); /* its own, not another loop's */
        first[i] = slot_seen[i];
    }
    evloop_call(c.l, slot_fn, NULL);
    for (unsigned i = 0; i < NLOOPS; i++)
        assert_ptr_equal(slot_seen[i], first[i]); /* kept from one call to the next */
    assert_true(atomic_load(&slot_key) > 0);
    stop(&c);
    for (unsigned i = 0; i < NLOOPS; i++)
        assert_int_equal(slot_disposed[i], 1); /* freed once, as its loop ended */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(start_refuses_no_loops_too_many_and_a_bad_source),
        cmocka_unit_test(call_runs_once_on_each_loop_thread_with_its_index),
        cmocka_unit_test(wake_from_another_thread_makes_that_loop_run_its_source),
        cmocka_unit_test(a_readable_source_makes_its_loop_run),
        cmocka_unit_test(the_sources_timeout_makes_its_loop_run_without_an_event),
        cmocka_unit_test(a_watch_fires_ready_on_its_loop_once_the_peer_writes),
        cmocka_unit_test(a_watch_whose_deadline_passes_fires_timeout_and_not_ready),
        cmocka_unit_test(rearming_a_socket_on_its_loop_modifies_its_registration),
        cmocka_unit_test(a_closed_socket_whose_number_was_reused_is_added_again),
        cmocka_unit_test(a_watch_disarmed_by_another_in_the_same_turn_does_not_fire),
        cmocka_unit_test(work_deferred_in_a_turn_runs_after_its_source_run_on_the_same_loop),
        cmocka_unit_test(stop_fires_stop_on_armed_watches_and_joins),
        cmocka_unit_test(a_loop_kept_busy_shows_its_lag_and_an_idle_one_keeps_probing),
        cmocka_unit_test(many_deadlines_passing_at_once_cost_k_log_n_comparisons),
        cmocka_unit_test(timers_fire_by_deadline_then_arming_order),
        cmocka_unit_test(each_loop_keeps_its_own_storage_until_it_ends),
    };
    return cmocka_run_group_tests_name("evloop", tests, NULL, NULL);
}
