/*
 * test_evloop: the HTTP event loops (evloop.h) on real threads and real descriptors (the
 * fixture: evloopfx.h).
 *
 * Covered: start's refusals, evloop_call (once per loop, on its thread, in order), evloop_wake,
 * a readable source and the source's timeout, a watch firing READY, TIMEOUT (and then not READY)
 * and STOP, one-shot firing, re-arming (EPOLL_CTL_MOD, the watched bitmask per loop, a
 * descriptor number reused after close), work deferred in a turn, and per-loop storage (each
 * loop its own slot, kept between calls, disposed once as it ends). The lag probe and the
 * deadline heap are test_evloop_timers.c's. Every wait is bounded by EVFX_WAIT_S; nothing
 * sleeps.
 */
#include "evloop.h"
#include "compiler.h"
#include "evloopfx.h"
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

/* ---- starting and calling ----------------------------------------------------------------- */

static void start_refuses_no_loops_too_many_and_a_bad_source(void **state)
{
    (void)state;
    int src[EVLOOP_MAX + 1];
    for (int i = 0; i <= EVLOOP_MAX; i++)
        src[i] = -1;
    struct evloop_ops ops = {.run = evfx_run_cb, .timeout_us = evfx_timeout_cb, .ctx = NULL};
    struct evloop *l = NULL;
    assert_int_equal(evloop_start("bad", 0, src, &ops, &l), -EINVAL);
    assert_int_equal(evloop_start("bad", EVLOOP_MAX + 1, src, &ops, &l), -EINVAL);
    assert_int_equal(evloop_start("bad", 2, src, &ops, &l), -EBADF);
    struct metrics_hist lag[2];
    struct evloop_ops no_interval = {.run = evfx_run_cb,
                                     .timeout_us = evfx_timeout_cb,
                                     .ctx = NULL,
                                     .lag = lag,
                                     .lag_probe_us = 0};
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
    struct evfx c;
    evfx_start(&c);
    assert_null(evloop_current()); /* not a loop thread */
    pthread_mutex_lock(&c.mu);
    for (unsigned i = 0; i < EVFX_NLOOPS; i++) {
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
    struct evloop_thread *before[EVFX_NLOOPS];
    memcpy(before, c.self, sizeof(before));
    pthread_mutex_unlock(&c.mu);

    evloop_call(c.l, evfx_who_fn, &c);
    pthread_mutex_lock(&c.mu);
    assert_int_equal(c.ncall, 2 * EVFX_NLOOPS);
    for (unsigned i = 0; i < EVFX_NLOOPS; i++) {
        assert_int_equal(c.calls[i], 2);
        assert_ptr_equal(c.self[i], before[i]);
        assert_int_equal(c.call_order[EVFX_NLOOPS + i], i);
    }
    pthread_mutex_unlock(&c.mu);
    evfx_stop(&c);
}

static void wake_from_another_thread_makes_that_loop_run_its_source(void **state)
{
    (void)state;
    struct evfx c;
    evfx_start(&c);
    /* After evloop_call, every loop waits with nothing to do: the counts stand still. */
    int before[EVFX_NLOOPS];
    pthread_mutex_lock(&c.mu);
    memcpy(before, c.runs, sizeof(before));
    pthread_mutex_unlock(&c.mu);
    evloop_wake(c.self[1]);
    EVFX_WAIT_UNTIL(&c, c.runs[1] > before[1]);
    assert_int_equal(EVFX_READ(&c, c.runs[0]), before[0]);
    assert_int_equal(EVFX_READ(&c, c.runs[2]), before[2]);
    assert_false(EVFX_READ(&c, c.run_elsewhere));
    evfx_stop(&c);
}

static void a_readable_source_makes_its_loop_run(void **state)
{
    (void)state;
    struct evfx c;
    evfx_start(&c);
    int before[EVFX_NLOOPS];
    pthread_mutex_lock(&c.mu);
    memcpy(before, c.runs, sizeof(before));
    pthread_mutex_unlock(&c.mu);
    uint64_t one = 1;
    assert_int_equal(write(c.sources[2], &one, sizeof(one)), sizeof(one));
    EVFX_WAIT_UNTIL(&c, c.runs[2] > before[2]);
    assert_int_equal(EVFX_READ(&c, c.runs[0]), before[0]);
    assert_int_equal(EVFX_READ(&c, c.runs[1]), before[1]);
    assert_false(EVFX_READ(&c, c.run_elsewhere));
    evfx_stop(&c);
}

struct timeout_req {
    struct evfx *c;
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
    struct evfx c;
    evfx_start(&c);
    struct timeout_req r = {.c = &c, .index = 0, .timeout_us = 20000};
    evloop_call(c.l, set_timeout_fn, &r);
    /* Loops 1 and 2 are idle now; loop 0 is waiting for its timeout (or ran already). */
    int before[EVFX_NLOOPS];
    pthread_mutex_lock(&c.mu);
    memcpy(before, c.runs, sizeof(before));
    pthread_mutex_unlock(&c.mu);
    EVFX_WAIT_UNTIL(&c, c.runs[0] > r.runs_before);
    assert_true(EVFX_READ(&c, c.run_at_us[0]) - r.set_at_us >= 19000);
    assert_int_equal(EVFX_READ(&c, c.runs[1]), before[1]);
    assert_int_equal(EVFX_READ(&c, c.runs[2]), before[2]);
    evfx_stop(&c);
}

/* ---- watches ------------------------------------------------------------------------------- */

static void a_watch_fires_ready_on_its_loop_once_the_peer_writes(void **state)
{
    (void)state;
    struct evfx c;
    evfx_start(&c);
    struct evfx_probe p;
    evfx_probe_init(&p, &c);
    int64_t deadline = evfx_far_deadline();
    assert_int_equal(evfx_arm(&c, &p, 1, deadline), 0);
    assert_int_equal(p.watched, 1u << 1);
    assert_ptr_equal(p.w.loop, c.self[1]);
    assert_int_equal(p.w.deadline_us, deadline);
    evfx_round_trip(&c);
    assert_int_equal(EVFX_READ(&c, p.fires), 0); /* nothing to read yet */

    evfx_poke(&p);
    EVFX_WAIT_UNTIL(&c, p.fires == 1);
    pthread_mutex_lock(&c.mu);
    assert_int_equal(p.ev, EVLOOP_READY);
    assert_ptr_equal(p.on, c.self[1]);
    assert_true(p.disarmed);
    assert_true(p.fired_at_us < deadline);
    pthread_mutex_unlock(&c.mu);

    /* One-shot: still readable, but not armed again, it does not fire again. */
    evfx_round_trip(&c);
    evfx_poke(&p);
    evfx_round_trip(&c);
    assert_int_equal(EVFX_READ(&c, p.fires), 1);
    evfx_stop(&c);
    assert_int_equal(p.fires, 1); /* not armed: stopping does not fire it either */
    evfx_probe_close(&p);
}

static void a_watch_whose_deadline_passes_fires_timeout_and_not_ready(void **state)
{
    (void)state;
    struct evfx c;
    evfx_start(&c);
    struct evfx_probe p;
    evfx_probe_init(&p, &c);
    int64_t deadline = mclock_now_us() + 30000;
    assert_int_equal(evfx_arm(&c, &p, 0, deadline), 0);
    EVFX_WAIT_UNTIL(&c, p.fires == 1);
    pthread_mutex_lock(&c.mu);
    assert_int_equal(p.ev, EVLOOP_TIMEOUT);
    assert_ptr_equal(p.on, c.self[0]);
    assert_true(p.disarmed);
    assert_true(p.fired_at_us >= deadline);
    pthread_mutex_unlock(&c.mu);

    /* Disarmed: the socket turning readable afterwards fires nothing. */
    evfx_poke(&p);
    evfx_round_trip(&c);
    assert_int_equal(EVFX_READ(&c, p.fires), 1);
    assert_int_equal(EVFX_READ(&c, p.ev), EVLOOP_TIMEOUT);
    evfx_stop(&c);
    assert_int_equal(p.fires, 1);
    evfx_probe_close(&p);
}

/* A fired watch's socket stays in its loop's epoll set: arming it there again modifies the
 * registration (adding it again would fail, as a cleared bitmask shows), and each loop that
 * holds the socket has its own bit. */
static void rearming_a_socket_on_its_loop_modifies_its_registration(void **state)
{
    (void)state;
    struct evfx c;
    evfx_start(&c);
    struct evfx_probe p;
    evfx_probe_init(&p, &c);
    assert_int_equal(evfx_arm(&c, &p, 2, evfx_far_deadline()), 0);
    evfx_poke(&p);
    EVFX_WAIT_UNTIL(&c, p.fires == 1);
    evfx_drain(&p);

    assert_int_equal(evfx_arm(&c, &p, 2, evfx_far_deadline()), 0);
    assert_int_equal(p.watched, 1u << 2);
    evfx_round_trip(&c);
    assert_int_equal(EVFX_READ(&c, p.fires), 1); /* re-armed, and only ready when written */
    evfx_poke(&p);
    EVFX_WAIT_UNTIL(&c, p.fires == 2);
    assert_int_equal(EVFX_READ(&c, p.ev), EVLOOP_READY);
    assert_ptr_equal(EVFX_READ(&c, p.on), c.self[2]);
    evfx_drain(&p);

    uint64_t cleared = 0;
    assert_int_equal(evfx_arm_with(&c, &p, 2, evfx_far_deadline(), &cleared), -EEXIST);
    assert_int_equal(cleared, 0);
    assert_null(p.w.loop); /* refused: not armed */

    /* The same socket on another loop: added there, a second bit. */
    assert_int_equal(evfx_arm(&c, &p, 0, evfx_far_deadline()), 0);
    assert_int_equal(p.watched, (1u << 2) | (1u << 0));
    evfx_poke(&p);
    EVFX_WAIT_UNTIL(&c, p.fires == 3);
    assert_ptr_equal(EVFX_READ(&c, p.on), c.self[0]);
    assert_int_equal(EVFX_READ(&c, p.ev), EVLOOP_READY);
    evfx_stop(&c);
    evfx_probe_close(&p);
}

/* libpq drops a broken connection's socket, and a new connection may get its number: the
 * bitmask says "in the set" but the kernel forgot the closed file. Arming falls back to adding
 * it. */
static void a_closed_socket_whose_number_was_reused_is_added_again(void **state)
{
    (void)state;
    struct evfx c;
    evfx_start(&c);
    struct evfx_probe p;
    evfx_probe_init(&p, &c);
    assert_int_equal(evfx_arm(&c, &p, 1, evfx_far_deadline()), 0);
    evfx_poke(&p);
    EVFX_WAIT_UNTIL(&c, p.fires == 1);
    int number = p.fds[0];
    evfx_probe_close(&p);

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

    assert_int_equal(evfx_arm(&c, &p, 1, evfx_far_deadline()), 0);
    assert_int_equal(p.watched, 1u << 1);
    evfx_poke(&p);
    EVFX_WAIT_UNTIL(&c, p.fires == 2);
    assert_int_equal(EVFX_READ(&c, p.ev), EVLOOP_READY);
    assert_ptr_equal(EVFX_READ(&c, p.on), c.self[1]);
    evfx_stop(&c);
    evfx_probe_close(&p);
}

/* evloop_stop: every armed watch fires STOP on its own loop's thread, then the source runs a
 * last time, and the threads are joined before it returns. A watch that fired already is not
 * fired again. */
/* Two watches whose events come in one turn, the first to fire disarming the other (say, a
 * request ending a connection that another one waits on, then freeing it). */
struct rival {
    struct evfx_probe p; /* first: the watch's container */
    struct rival *other;
};

static void rival_fire(struct evloop_watch *w, enum evloop_event ev)
{
    struct rival *r = container_of(container_of(w, struct evfx_probe, w), struct rival, p);
    if (ev == EVLOOP_READY && r->other->p.w.loop)
        evloop_unwatch(&r->other->p.w);
    evfx_probe_fire(w, ev);
}

/* Loop thread (evloop_call): make both readable while the loop is busy here, so that its next
 * epoll_wait reports them together. */
static void poke_both_fn(void *arg, unsigned i)
{
    struct rival *r = arg;
    if (i == 1) {
        evfx_poke(&r[0].p);
        evfx_poke(&r[1].p);
    }
}

static void a_watch_disarmed_by_another_in_the_same_turn_does_not_fire(void **state)
{
    (void)state;
    struct evfx c;
    evfx_start(&c);
    struct rival r[2];
    for (int i = 0; i < 2; i++) {
        evfx_probe_init(&r[i].p, &c);
        r[i].p.w.fire = rival_fire;
        r[i].other = &r[1 - i];
        assert_int_equal(evfx_arm(&c, &r[i].p, 1, evfx_far_deadline()), 0);
    }
    evloop_call(c.l, poke_both_fn, r);
    EVFX_WAIT_UNTIL(&c, r[0].p.fires + r[1].p.fires >= 1);
    evfx_round_trip(&c);
    evfx_round_trip(&c);
    pthread_mutex_lock(&c.mu);
    assert_int_equal(r[0].p.fires + r[1].p.fires, 1);
    pthread_mutex_unlock(&c.mu);
    evfx_stop(&c);
    assert_int_equal(r[0].p.fires + r[1].p.fires, 1); /* neither was armed at the stop */
    evfx_probe_close(&r[0].p);
    evfx_probe_close(&r[1].p);
}

/* A watch whose callback defers work to the end of the turn (as lanes gather the turn's
 * statements into one write). */
struct deferrer {
    struct evfx_probe p; /* first: the watch's container */
    struct evloop_task task[2];
    /* Under p.c->mu: */
    int ran[2];
    unsigned ran_seq[2];             /* c->seq when each ran */
    unsigned run_seq_seen[2];        /* the loop's last run then */
    struct evloop_thread *ran_on[2]; /* evloop_current() then */
};

static void deferred_record(struct deferrer *d, int k)
{
    struct evfx *c = d->p.c;
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
    struct deferrer *d = container_of(container_of(w, struct evfx_probe, w), struct deferrer, p);
    evfx_probe_fire(w, ev);
    evloop_defer(evloop_current(), &d->task[0]);
}

static void work_deferred_in_a_turn_runs_after_its_source_run_on_the_same_loop(void **state)
{
    (void)state;
    struct evfx c;
    evfx_start(&c);
    struct deferrer d;
    memset(&d, 0, sizeof(d));
    evfx_probe_init(&d.p, &c);
    d.p.w.fire = deferrer_fire;
    d.task[0].fn = deferred_first;
    d.task[1].fn = deferred_second;
    assert_int_equal(evfx_arm(&c, &d.p, 1, evfx_far_deadline()), 0);
    evfx_poke(&d.p);
    EVFX_WAIT_UNTIL(&c, d.ran[1] == 1);
    evfx_round_trip(&c);
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
    evfx_stop(&c);
    evfx_probe_close(&d.p);
}

static void stop_fires_stop_on_armed_watches_and_joins(void **state)
{
    (void)state;
    struct evfx c;
    evfx_start(&c);
    struct evfx_probe armed[2], done;
    for (unsigned i = 0; i < 2; i++) {
        evfx_probe_init(&armed[i], &c);
        assert_int_equal(evfx_arm(&c, &armed[i], i, evfx_far_deadline()), 0);
    }
    evfx_probe_init(&done, &c);
    assert_int_equal(evfx_arm(&c, &done, 2, evfx_far_deadline()), 0);
    evfx_poke(&done);
    EVFX_WAIT_UNTIL(&c, done.fires == 1);
    struct evloop_thread *self[EVFX_NLOOPS];
    int before[EVFX_NLOOPS];
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
    for (unsigned i = 0; i < EVFX_NLOOPS; i++)
        assert_true(c.runs[i] > before[i]);
    assert_false(c.run_elsewhere);
    for (int i = 0; i < EVFX_NLOOPS; i++)
        close(c.sources[i]);
    pthread_cond_destroy(&c.cv);
    pthread_mutex_destroy(&c.mu);
    evfx_probe_close(&armed[0]);
    evfx_probe_close(&armed[1]);
    evfx_probe_close(&done);
}

/* ---- per-loop storage ---------------------------------------------------------------- */

/* Slot users: what each loop's slot held, and how often each loop's value was disposed.
 * Written on the loops' threads one at a time (evloop_call), read after it returned or after
 * the loops were joined. */
static atomic_size_t slot_key;
struct slot_value {
    unsigned index; /* the loop that made it */
};
static struct slot_value *slot_seen[EVFX_NLOOPS];
static int slot_disposed[EVFX_NLOOPS];

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
    struct evfx c;
    evfx_start(&c);
    evloop_call(c.l, slot_fn, NULL);
    struct slot_value *first[EVFX_NLOOPS];
    for (unsigned i = 0; i < EVFX_NLOOPS; i++) {
        assert_non_null(slot_seen[i]);
        assert_int_equal(slot_seen[i]->index, i); /* its own, not another loop's */
        first[i] = slot_seen[i];
    }
    evloop_call(c.l, slot_fn, NULL);
    for (unsigned i = 0; i < EVFX_NLOOPS; i++)
        assert_ptr_equal(slot_seen[i], first[i]); /* kept from one call to the next */
    assert_true(atomic_load(&slot_key) > 0);
    evfx_stop(&c);
    for (unsigned i = 0; i < EVFX_NLOOPS; i++)
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
        cmocka_unit_test(each_loop_keeps_its_own_storage_until_it_ends),
    };
    return cmocka_run_group_tests_name("evloop", tests, NULL, NULL);
}
