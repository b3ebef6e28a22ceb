/*
 * evloop: epoll loops for the HTTP threads and the statements they run (see evloop.h).
 *
 * Each iteration waits for the nearest of: the source's timeout, the earliest watch deadline,
 * an event. Ready watches fire in the order epoll reports them, passed deadlines after them,
 * then the source runs (the HTTP layer reads new requests and writes replies),
 * then the work deferred to the end of the turn (evloop_defer).
 * The armed watches are a binary min-heap in an array (heap[0] the earliest deadline, a
 * watch's heap_index its place, ties in arming order), so the wait's timeout reads the root and
 * each deadline that passes costs one pop: O(log n) comparisons. Before the heap the loop walked
 * every watch for the timeout and again after each watch it fired, O(k n) when k of n passed
 * at once (25,030,000 comparisons for 5,000 of 10,000 in test_evloop; 122,560 with the heap).
 * The wait's timeout is in microseconds (epoll_pwait2), so a deadline
 * and the lag probe are met to the timer's slack; where the kernel or a seccomp profile lacks
 * epoll_pwait2 the loop falls back to epoll_wait's milliseconds, rounded up, and a probe may
 * then read up to 1 ms late.
 */
#include "evloop.h"
#include "log.h"
#include "mclock.h"
#include "xalloc.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#define EVLOOP_BATCH 64
#define EVLOOP_STACK (512 * 1024) /* the HTTP layer and request handling run here */

struct evloop_thread {
    struct evloop *l;
    unsigned index;
    pthread_t tid;
    bool started;
    int ep;     /* epoll set; owned */
    int ctl;    /* eventfd: evloop_call and evloop_stop; owned */
    int source; /* not owned */
    /* The armed watches, a min-heap by (deadline_us, armed_seq); grown, never shrunk (loop
     * thread only). */
    struct evloop_watch **heap; /* owned (the array; the watches are their owners') */
    size_t nheap, heap_cap;
    uint64_t armed_seq; /* the next watch armed gets it */
    /* The events of the turn, batch_next the next to handle (loop thread only): a watch
     * disarmed meanwhile, maybe freed, is blanked out there (evloop_unlink). */
    struct epoll_event *batch;
    int batch_next, batch_n;
    bool again; /* run the source again before sleeping (loop thread only) */
    struct evloop_task *deferred, *deferred_tail; /* evloop_defer (loop thread only) */
    int64_t turn_us;      /* when this turn's wait returned (loop thread only) */
    int64_t probe_due_us; /* the lag probe's next moment (loop thread only) */
    uint64_t compares;    /* deadline comparisons made (loop thread only): for tests */
    /* _shared: inbox_mutex guards the inbox. */
    pthread_mutex_t inbox_mutex;
    struct evloop_task *inbox, *inbox_tail; /* posted, not yet run */
    /* evloop_storage's slots and how to free them (loop thread only). */
    void *slot[EVLOOP_SLOTS];
    void (*slot_dispose[EVLOOP_SLOTS])(void *);
};

struct evloop {
    struct evloop_ops ops;
    unsigned n;
    atomic_bool stopping;
    pthread_mutex_t call_lock; /* one evloop_call at a time */
    /* _shared: the mutex guards the call in progress. */
    pthread_mutex_t mutex;
    pthread_cond_t called;               /* signalled when the loop that was asked ran it */
    void (*call)(void *ctx, unsigned i); /* the function a loop is asked to run, or NULL */
    void *call_ctx;
    unsigned call_index; /* the loop asked */
    bool call_done;
    struct evloop_thread t[]; /* n of them */
};

/* The loop that runs on this thread: truly per thread (how a thread finds its loop); every
 * per-loop state hangs off the loop (evloop_storage). */
static _Thread_local struct evloop_thread *evloop_self;
/* Slot numbers given so far (evloop_storage). */
static atomic_size_t evloop_slots_given;
/* epoll_pwait2 failed with ENOSYS or EPERM once: every loop uses epoll_wait from then on. */
static atomic_bool evloop_ms_waits;

struct evloop_thread *evloop_current(void)
{
    return evloop_self;
}

int64_t evloop_turn_us(const struct evloop_thread *t)
{
    return t->turn_us;
}

uint64_t evloop_deadline_compares(const struct evloop_thread *t)
{
    return t->compares;
}

/* Whether a's deadline comes before b's (the heap's order). */
static bool evloop_before(struct evloop_thread *t, const struct evloop_watch *a,
                          const struct evloop_watch *b)
{
    t->compares++;
    return a->deadline_us < b->deadline_us ||
           (a->deadline_us == b->deadline_us && a->armed_seq < b->armed_seq);
}

static void evloop_heap_set(struct evloop_thread *t, size_t i, struct evloop_watch *w)
{
    t->heap[i] = w;
    w->heap_index = i;
}

static void evloop_sift_up(struct evloop_thread *t, size_t i)
{
    struct evloop_watch *w = t->heap[i];
    while (i > 0 && evloop_before(t, w, t->heap[(i - 1) / 2])) {
        evloop_heap_set(t, i, t->heap[(i - 1) / 2]);
        i = (i - 1) / 2;
    }
    evloop_heap_set(t, i, w);
}

static void evloop_sift_down(struct evloop_thread *t, size_t i)
{
    struct evloop_watch *w = t->heap[i];
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= t->nheap)
            break;
        if (c + 1 < t->nheap && evloop_before(t, t->heap[c + 1], t->heap[c]))
            c++;
        if (!evloop_before(t, t->heap[c], w))
            break;
        evloop_heap_set(t, i, t->heap[c]);
        i = c;
    }
    evloop_heap_set(t, i, w);
}

/* Put the watch at i where its deadline belongs (it moved, or another took its place). */
static void evloop_heap_fix(struct evloop_thread *t, size_t i)
{
    if (i > 0 && evloop_before(t, t->heap[i], t->heap[(i - 1) / 2]))
        evloop_sift_up(t, i);
    else
        evloop_sift_down(t, i);
}

void **evloop_storage(struct evloop_thread *t, atomic_size_t *key, void (*dispose)(void *))
{
    size_t k = atomic_load_explicit(key, memory_order_acquire);
    if (!k) {
        size_t fresh = atomic_fetch_add_explicit(&evloop_slots_given, 1, memory_order_relaxed) + 1;
        if (fresh > EVLOOP_SLOTS) {
            fprintf(stderr, "bulkhead: more than %d users of evloop_storage\n", EVLOOP_SLOTS);
            abort();
        }
        /* Two loops may ask at once: the first number stored is everybody's. */
        k = atomic_compare_exchange_strong_explicit(key, &k, fresh, memory_order_acq_rel,
                                                    memory_order_acquire)
                ? fresh
                : k;
    }
    t->slot_dispose[k - 1] = dispose;
    return &t->slot[k - 1];
}

/* The loop ends: free what its users keep in its slots. */
static void evloop_dispose_slots(struct evloop_thread *t)
{
    for (size_t i = 0; i < EVLOOP_SLOTS; i++) {
        if (t->slot[i] && t->slot_dispose[i])
            t->slot_dispose[i](t->slot[i]);
        t->slot[i] = NULL;
    }
}

static void evloop_unlink(struct evloop_watch *w)
{
    struct evloop_thread *t = w->loop;
    for (int i = t->batch_next; i < t->batch_n; i++)
        if (t->batch[i].data.ptr == w)
            t->batch[i].data.ptr = NULL;
    size_t i = w->heap_index;
    struct evloop_watch *last = t->heap[--t->nheap];
    if (i < t->nheap) {
        evloop_heap_set(t, i, last);
        evloop_heap_fix(t, i);
    }
    w->loop = NULL;
}

int evloop_watch(struct evloop_thread *t, struct evloop_watch *w, uint64_t *watched,
                 int64_t deadline_us)
{
    if (w->fd < 0)
        goto arm;
    uint64_t bit = 1ull << t->index;
    struct epoll_event ev = {.events = EPOLLIN | EPOLLONESHOT, .data.ptr = w};
    int rc = -1;
    if (*watched & bit) {
        rc = epoll_ctl(t->ep, EPOLL_CTL_MOD, w->fd, &ev);
        /* The descriptor was closed and its number reused since (libpq drops a broken
         * connection's socket): it is a new file to this set. */
        if (rc && errno == ENOENT)
            *watched &= ~bit;
    }
    if (!(*watched & bit)) {
        rc = epoll_ctl(t->ep, EPOLL_CTL_ADD, w->fd, &ev);
        if (rc == 0)
            *watched |= bit;
    }
    if (rc)
        return -errno;
arm:
    w->deadline_us = deadline_us;
    w->armed_seq = t->armed_seq++;
    if (w->loop == t) { /* armed already: it moves to its new place */
        evloop_heap_fix(t, w->heap_index);
        return 0;
    }
    if (t->nheap == t->heap_cap) {
        t->heap_cap = t->heap_cap ? 2 * t->heap_cap : 64;
        t->heap = xrealloc(t->heap, t->heap_cap * sizeof(*t->heap));
    }
    w->loop = t;
    evloop_heap_set(t, t->nheap++, w);
    evloop_sift_up(t, t->nheap - 1);
    return 0;
}

void evloop_unwatch(struct evloop_watch *w)
{
    struct evloop_thread *t = w->loop;
    if (!t)
        return;
    /* Disarmed but kept: a one-shot registration with no events never reports. */
    struct epoll_event ev = {.events = EPOLLONESHOT, .data.ptr = NULL};
    if (w->fd >= 0)
        epoll_ctl(t->ep, EPOLL_CTL_MOD, w->fd, &ev);
    evloop_unlink(w);
}

static void evloop_fire(struct evloop_watch *w, enum evloop_event ev)
{
    if (ev != EVLOOP_READY)
        evloop_unwatch(w);
    else
        evloop_unlink(w); /* the one-shot registration disarmed itself */
    w->fire(w, ev);
}

/* Microseconds until the nearest deadline (the source's, a watch's, the lag probe's), at most
 * one second; -1 = none. */
static int64_t evloop_timeout_us(struct evloop_thread *t, int64_t now)
{
    int64_t next = t->l->ops.timeout_us(t->l->ops.ctx, t->index);
    if (t->l->ops.lag) {
        int64_t left = t->probe_due_us - now;
        if (next < 0 || left < next)
            next = left < 0 ? 0 : left;
    }
    if (t->nheap) {
        t->compares++;
        int64_t left = t->heap[0]->deadline_us - now;
        if (left < 0)
            left = 0;
        if (next < 0 || left < next)
            next = left;
    }
    if (next > 1000000)
        next = 1000000;
    return next;
}

/* Wait for events until timeout_us (-1: none) has passed. */
static int evloop_wait(struct evloop_thread *t, struct epoll_event *evs, int64_t timeout_us)
{
    if (!atomic_load_explicit(&evloop_ms_waits, memory_order_relaxed)) {
        struct timespec ts = {.tv_sec = (time_t)(timeout_us / 1000000),
                              .tv_nsec = (long)(timeout_us % 1000000) * 1000};
        int n = epoll_pwait2(t->ep, evs, EVLOOP_BATCH, timeout_us < 0 ? NULL : &ts, NULL);
        if (n >= 0 || (errno != ENOSYS && errno != EPERM))
            return n;
        atomic_store_explicit(&evloop_ms_waits, true, memory_order_relaxed);
    }
    return epoll_wait(t->ep, evs, EVLOOP_BATCH,
                      timeout_us < 0 ? -1 : (int)((timeout_us + 999) / 1000));
}

/* The turn begins: how late the loop is to its lag probe, if it fell due (its histogram). */
static void evloop_probe(struct evloop_thread *t)
{
    struct metrics_hist *lag = t->l->ops.lag;
    if (!lag || t->turn_us < t->probe_due_us)
        return;
    metrics_hist_add(&lag[t->index], t->turn_us - t->probe_due_us);
    t->probe_due_us = t->turn_us + t->l->ops.lag_probe_us;
}

/* Fire the watches whose deadline has passed, earliest first (a callback may arm or disarm
 * others: the root is read again after each). */
static bool evloop_root_passed(struct evloop_thread *t, int64_t now)
{
    if (!t->nheap)
        return false;
    t->compares++;
    return t->heap[0]->deadline_us <= now;
}

static void evloop_expire(struct evloop_thread *t)
{
    int64_t now = mclock_now_us();
    while (evloop_root_passed(t, now))
        evloop_fire(t->heap[0], EVLOOP_TIMEOUT);
}

void evloop_wake(struct evloop_thread *t)
{
    if (t == evloop_self) {
        /* From the loop itself, maybe inside the source's run: the next turn does not sleep. */
        t->again = true;
        return;
    }
    uint64_t one = 1;
    if (write(t->ctl, &one, sizeof(one)) < 0 && errno != EAGAIN)
        log_warn("evloop", "control write: %s", strerror(errno));
}

/* The control eventfd was written: reset it before anything posted is looked at (a write
 * that lands after this read is seen by the next epoll_wait, none is lost). */
static void evloop_drain_control(struct evloop_thread *t)
{
    uint64_t v;
    if (read(t->ctl, &v, sizeof(v)) < 0 && errno != EAGAIN)
        log_warn("evloop", "control read: %s", strerror(errno));
}

/* Run the call asked of this loop, if any. */
static void evloop_control(struct evloop_thread *t)
{
    struct evloop *l = t->l;
    pthread_mutex_lock(&l->mutex);
    if (l->call && !l->call_done && l->call_index == t->index) {
        l->call(l->call_ctx, t->index);
        l->call_done = true;
        pthread_cond_broadcast(&l->called);
    }
    pthread_mutex_unlock(&l->mutex);
}

void evloop_post(struct evloop_thread *t, struct evloop_task *task)
{
    task->next = NULL;
    pthread_mutex_lock(&t->inbox_mutex);
    bool first = !t->inbox;
    if (t->inbox_tail)
        t->inbox_tail->next = task;
    else
        t->inbox = task;
    t->inbox_tail = task;
    pthread_mutex_unlock(&t->inbox_mutex);
    if (first)
        evloop_wake(t);
}

/* Run what was posted, and what that posts. */
static void evloop_run_inbox(struct evloop_thread *t)
{
    for (;;) {
        pthread_mutex_lock(&t->inbox_mutex);
        struct evloop_task *list = t->inbox;
        t->inbox = t->inbox_tail = NULL;
        pthread_mutex_unlock(&t->inbox_mutex);
        if (!list)
            return;
        while (list) {
            struct evloop_task *task = list;
            list = task->next;
            task->next = NULL;
            task->fn(task);
        }
    }
}

void evloop_defer(struct evloop_thread *t, struct evloop_task *task)
{
    task->next = NULL;
    if (t->deferred_tail)
        t->deferred_tail->next = task;
    else
        t->deferred = task;
    t->deferred_tail = task;
}

/* The end of a turn: run what was deferred to it, and what that defers. */
static void evloop_run_deferred(struct evloop_thread *t)
{
    while (t->deferred) {
        struct evloop_task *task = t->deferred;
        t->deferred = task->next;
        if (!t->deferred)
            t->deferred_tail = NULL;
        task->next = NULL;
        task->fn(task);
    }
}

static void *evloop_main(void *arg)
{
    struct evloop_thread *t = arg;
    struct evloop *l = t->l;
    evloop_self = t;
    struct epoll_event evs[EVLOOP_BATCH];
    t->probe_due_us = mclock_now_us() + l->ops.lag_probe_us;
    while (!atomic_load_explicit(&l->stopping, memory_order_acquire)) {
        int64_t timeout = t->again ? 0 : evloop_timeout_us(t, mclock_now_us());
        t->again = false;
        int n = evloop_wait(t, evs, timeout);
        if (n < 0 && errno != EINTR) {
            log_error("evloop", "epoll_wait: %s", strerror(errno));
            break;
        }
        t->turn_us = mclock_now_us();
        evloop_probe(t);
        bool control = false;
        t->batch = evs;
        t->batch_n = n;
        for (t->batch_next = 0; t->batch_next < n;) {
            void *p = evs[t->batch_next++].data.ptr;
            if (p == &t->source)
                continue;
            if (p == &t->ctl) {
                control = true;
                evloop_drain_control(t);
            } else if (p)
                evloop_fire(p, EVLOOP_READY);
        }
        t->batch_n = 0;
        evloop_run_inbox(t);
        evloop_expire(t);
        l->ops.run(l->ops.ctx, t->index);
        if (control)
            evloop_control(t);
        evloop_run_deferred(t);
    }
    t->turn_us = mclock_now_us();
    evloop_run_inbox(t);
    /* The source's last runs may start work (a request read as the loop stopped) that arms
     * watches, directly or from deferred work: those fire EVLOOP_STOP too, until none is. */
    do {
        while (t->nheap) {
            evloop_fire(t->heap[0], EVLOOP_STOP);
            evloop_run_inbox(t);
        }
        l->ops.run(l->ops.ctx, t->index);
        evloop_run_deferred(t);
        evloop_run_inbox(t);
    } while (t->nheap);
    evloop_dispose_slots(t);
    evloop_self = NULL;
    return NULL;
}

static int evloop_init_thread(struct evloop_thread *t, int source)
{
    t->source = source;
    t->ep = epoll_create1(EPOLL_CLOEXEC);
    t->ctl = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (t->ep < 0 || t->ctl < 0)
        return -errno;
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &t->source};
    if (epoll_ctl(t->ep, EPOLL_CTL_ADD, source, &ev))
        return -errno;
    ev.data.ptr = &t->ctl;
    if (epoll_ctl(t->ep, EPOLL_CTL_ADD, t->ctl, &ev))
        return -errno;
    return 0;
}

int evloop_start(const char *name, unsigned n, const int *sources, const struct evloop_ops *ops,
                 struct evloop **out)
{
    if (n == 0 || n > EVLOOP_MAX || (ops->lag && ops->lag_probe_us <= 0))
        return -EINVAL;
    struct evloop *l = xcalloc(1, sizeof(*l) + n * sizeof(l->t[0]));
    l->ops = *ops;
    l->n = n;
    pthread_mutex_init(&l->mutex, NULL);
    pthread_mutex_init(&l->call_lock, NULL);
    mclock_cond_init(&l->called);
    int rc = 0;
    for (unsigned i = 0; i < n; i++) {
        l->t[i] = (struct evloop_thread){.l = l, .index = i, .ep = -1, .ctl = -1};
        pthread_mutex_init(&l->t[i].inbox_mutex, NULL);
        if (!rc)
            rc = evloop_init_thread(&l->t[i], sources[i]);
    }
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, EVLOOP_STACK);
    for (unsigned i = 0; i < n && !rc; i++) {
        rc = -pthread_create(&l->t[i].tid, &attr, evloop_main, &l->t[i]);
        if (rc)
            break;
        l->t[i].started = true;
        char tname[16];
        snprintf(tname, sizeof(tname), "%.10s-%u", name, i);
        pthread_setname_np(l->t[i].tid, tname);
    }
    pthread_attr_destroy(&attr);
    if (rc) {
        evloop_stop(l);
        return rc;
    }
    *out = l;
    return 0;
}

void evloop_call(struct evloop *l, void (*fn)(void *ctx, unsigned index), void *ctx)
{
    pthread_mutex_lock(&l->call_lock);
    for (unsigned i = 0; i < l->n; i++) {
        pthread_mutex_lock(&l->mutex);
        l->call = fn;
        l->call_ctx = ctx;
        l->call_done = false;
        l->call_index = i;
        evloop_wake(&l->t[i]);
        while (!l->call_done)
            pthread_cond_wait(&l->called, &l->mutex);
        l->call = NULL;
        pthread_mutex_unlock(&l->mutex);
    }
    pthread_mutex_unlock(&l->call_lock);
}

void evloop_stop(struct evloop *l)
{
    if (!l)
        return;
    atomic_store_explicit(&l->stopping, true, memory_order_release);
    for (unsigned i = 0; i < l->n; i++)
        if (l->t[i].started)
            evloop_wake(&l->t[i]);
    /* All joined before any descriptor closes: a loop's last turn may still wake another. */
    for (unsigned i = 0; i < l->n; i++)
        if (l->t[i].started)
            pthread_join(l->t[i].tid, NULL);
    for (unsigned i = 0; i < l->n; i++) {
        struct evloop_thread *t = &l->t[i];
        if (t->ep >= 0)
            close(t->ep);
        if (t->ctl >= 0)
            close(t->ctl);
        free(t->heap);
        pthread_mutex_destroy(&t->inbox_mutex);
    }
    pthread_cond_destroy(&l->called);
    pthread_mutex_destroy(&l->mutex);
    pthread_mutex_destroy(&l->call_lock);
    free(l);
}
