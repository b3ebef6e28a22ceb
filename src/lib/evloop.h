/*
 * evloop: the HTTP event threads, each an epoll loop that also waits on PostgreSQL sockets.
 *
 * N threads, each with its own epoll set holding one "source" descriptor given at start (the
 * thread's epoll set of client connections, see http.c), a control eventfd, and the sockets
 * of the statements this thread has in flight (watches). After every batch of events the
 * owner's run callback drives the source (http.c reads and writes its connections), so a
 * request answered by a watch on this thread goes out without changing thread.
 *
 * A loop keeps its armed watches in a binary min-heap by deadline (as libuv keeps its timers),
 * so the next deadline is read in O(1) and k deadlines passing at once cost O(k log n).
 *
 * DESIGN: everything a loop holds (its armed watches, the source) is touched only by its own
 * thread; other threads reach a loop through evloop_call and evloop_stop, which post to its
 * eventfd and wait. A watch is one-shot: it fires once (ready, deadline passed, or loop
 * stopping) and is then disarmed; the callback may arm it again. Its socket stays in the epoll
 * set (EPOLLONESHOT, disarmed), so arming it again on the same loop costs one epoll_ctl; the
 * loops holding a socket are a bitmask kept with the socket by the caller.
 *
 * Lag: a loop that is busy, or waiting for a CPU, handles what became ready late, and a client
 * sees that time although no request has been read yet. Each loop measures it the way Node's
 * monitorEventLoopDelay does: a probe falls due every lag_probe_us, and how late the loop gets
 * to it (a turn that ran past it, the thread woken late) is added to the loop's histogram,
 * which its owner reads from any thread (relaxed atomics). evloop_turn_us is the moment the
 * current turn's wait returned: the nearest the loop knows to when what it handles became ready.
 */
#ifndef BULKHEAD_EVLOOP_H
#define BULKHEAD_EVLOOP_H

#include "metrics.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define EVLOOP_MAX 64 /* loops at most (the watched bitmask) */

struct evloop;        /* all the loops */
struct evloop_thread; /* one loop */

struct evloop_ops {
    void (*run)(void *ctx, unsigned index);           /* drive loop index's source (its thread) */
    int64_t (*timeout_us)(void *ctx, unsigned index); /* the source's next timeout, -1 = none */
    void *ctx;
    /* Loop i adds its lag to lag[i] every lag_probe_us (both 0/NULL: no probe). The caller owns
     * the n histograms; they must outlive the loops. */
    struct metrics_hist *lag;
    int64_t lag_probe_us;
};

enum evloop_event {
    EVLOOP_READY,   /* the socket is readable */
    EVLOOP_TIMEOUT, /* the deadline passed first */
    EVLOOP_STOP     /* the loop is stopping (evloop_stop): give up */
};

/* A wait for one socket, embedded in its owner (a request). Loop thread only. */
struct evloop_watch {
    void (*fire)(struct evloop_watch *w, enum evloop_event ev); /* set by the owner */
    int fd;                                                     /* the socket watched */
    int64_t deadline_us;                                        /* monotonic */
    struct evloop_thread *loop;                                 /* armed on, or NULL */
    size_t heap_index;  /* its place in the loop's deadline heap while armed */
    uint64_t armed_seq; /* when it was armed, in the loop's order: equal deadlines fire in it */
};

/* A function to run on a given loop, embedded in its owner (evloop_post). */
struct evloop_task {
    void (*fn)(struct evloop_task *task); /* runs on the loop's thread */
    struct evloop_task *next;             /* the loop's inbox (its mutex), or deferred list */
};

/* Start n loops (n <= EVLOOP_MAX) named "<name>-<i>", loop i waiting on sources[i]. */
int evloop_start(const char *name, unsigned n, const int *sources, const struct evloop_ops *ops,
                 struct evloop **out) __attribute__((warn_unused_result));

/* Run fn(ctx, index) on every loop's thread, one after the other, and return when all ran. */
void evloop_call(struct evloop *l, void (*fn)(void *ctx, unsigned index), void *ctx);

/* End every loop: armed watches fire EVLOOP_STOP, the run callback is called a last time,
 * and the threads are joined. Then free. */
void evloop_stop(struct evloop *l);

/* The loop running on the calling thread, or NULL on any other thread. */
struct evloop_thread *evloop_current(void);

/* Loop thread: when the current turn's wait returned (monotonic us). */
int64_t evloop_turn_us(const struct evloop_thread *t);

/* Loop thread: how many times the loop has compared a deadline, with another or with the
 * clock: what its timers cost, for tests (test_evloop proves k deadlines passing cost
 * O(k log n) of them with n armed). */
uint64_t evloop_deadline_compares(const struct evloop_thread *t);

/* Any thread: make loop t run its source soon. */
void evloop_wake(struct evloop_thread *t);

/* Any thread: run task->fn on loop t soon, in the order posted. A loop that stops runs what
 * was posted before it fires EVLOOP_STOP, and what those posted. */
void evloop_post(struct evloop_thread *t, struct evloop_task *task);

/* Loop thread: run task->fn at the end of this turn, after the source's run, before the loop
 * waits again (work that gathers what the turn produced, e.g. one write for several
 * statements); what it defers runs then too. When the loop stops, deferred work runs after the
 * source's last run, and watches it arms fire EVLOOP_STOP. A task must not be deferred again
 * before it ran (the caller keeps a flag). */
void evloop_defer(struct evloop_thread *t, struct evloop_task *task);

/* Loop thread: wait for w->fd to be readable until deadline_us, then call w->fire once.
 * *watched is the fd's bitmask of loops holding it (0 for a new socket). With w->fd -1 it is
 * a timer alone (watched unused, may be NULL). A watch armed on t already is armed again: its
 * new deadline replaces the old one. O(log n) with n watches armed on t. 0 or -errno. */
int evloop_watch(struct evloop_thread *t, struct evloop_watch *w, uint64_t *watched,
                 int64_t deadline_us) __attribute__((warn_unused_result));

/* Loop thread: disarm an armed watch without firing it (its socket goes elsewhere). O(log n). */
void evloop_unwatch(struct evloop_watch *w);

/*
 * Per-loop storage (h2o's context storage), for a module that keeps state per loop instead of
 * in _Thread_local variables: the slot of loop t that *key names. *key is the module's static,
 * 0 until the first call gives it a number, the same on every loop; at most EVLOOP_SLOTS
 * modules. The slot starts NULL; dispose, given with the slot's first use on a loop, runs on
 * that loop's thread as it ends (after its last work) when the slot is not NULL. Loop thread.
 */
#define EVLOOP_SLOTS 8
void **evloop_storage(struct evloop_thread *t, atomic_size_t *key, void (*dispose)(void *));

#endif
