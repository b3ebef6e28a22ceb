/*
 * dbpool: one tier's PostgreSQL connections (the database bulkhead).
 *
 * At most `max` connections, opened lazily on demand, kept open, replaced when broken. Who may
 * take a connection is share.h's rule, the same as for workers: a tenant holding none may take
 * any free one; any other leaves the last `reserve` free for newcomers and, while other tenants
 * of the tier are active, holds at most its share (one more if its requests are brief), so one
 * tenant's slow queries cannot hold every connection of its tier. A worker that may not take one
 * now waits, bounded by its deadline, in a FIFO of waiters; a released connection is handed
 * straight to the first waiter allowed to take it, and waiters that are not allowed are passed
 * over, never waited behind.
 *
 * DESIGN: one mutex guards the idle list, the busy and opening lists, the counts and the
 * waiter list. Connecting, closing and queries happen with no lock held; connects run on
 * short-lived connector threads (at most DBPOOL_MAX_OPENING), so a worker waits for whichever
 * comes first, a released connection or a new one. Each waiter sleeps on its own condition
 * variable and is woken only when it has been given a connection or its answer (a failed
 * connect when nothing else can serve it, or stop). An event thread waits without blocking
 * (dbpool_acquire_async): its wait sits in the same FIFO, and its answer is a callback run by
 * whichever thread gave it, after that thread released the mutex. others_active and brief are read
 * without the pool's mutex (the worker pool's lock-free state), so a change of them reaches waiters
 * through dbpool_kick. The janitor's dbpool_reap_idle closes idle connections the server killed
 * (or that idled too long) without waiting for a request to find them: it polls every idle
 * socket at once with no lock held, and closes only those still idle as they were polled.
 * The waiter FIFO (dbwaitq.h), the idle list and its reaper (dbidle.h) and the connector and
 * canceller threads (dbopen.h) are modules of their own, guarded by this same mutex.
 */
#ifndef BULKHEAD_DBPOOL_H
#define BULKHEAD_DBPOOL_H

#include "dbconn.h"
#include "share.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct dbpool;

/* Connections being opened at once in one pool, at most. */
#define DBPOOL_MAX_OPENING 4

/* An idle connection released this recently was alive then; see dbpool_wait.trust_recent. */
#define DBPOOL_TRUST_RECENT_US 1000000

struct dbpool_opts {
    struct dbconn_params conn; /* copied; its strings and statements must outlive the pool */
    size_t max;                /* connections at most */
    struct share_policy share; /* who may take a connection (share.h); share.size is max */
    /* Whether tenants other than the caller are active in the tier (lock-free, may be NULL). */
    bool (*others_active)(const void *ctx);
    const void *others_ctx;
    /* Whether owner's requests are brief now (share.h; lock-free, while owner has a request in
     * flight; may be NULL: nobody is). */
    bool (*brief)(const void *owner);
    /* The least time a connect is given, whatever the waiter's deadline (0: its deadline). A
     * connection opened past the waiter's deadline is kept in the pool (the waiter got
     * -ETIMEDOUT, or a released connection): under load, a connect started for a waiter with
     * little time left would otherwise time out, be thrown away and started again. */
    int64_t connect_timeout_us;
};

/* An acquire that does not block its thread (dbpool_acquire_async), embedded in its owner. */
struct dbpool_wait {
    /* Set by the caller before dbpool_acquire_async. */
    const void *owner;   /* tenant asking */
    int64_t deadline_us; /* when it gives up (moved later by dbpool_abandon, see there) */
    /* The caller retries a statement that meets a dead connection (a read): an idle connection
     * released less than DBPOOL_TRUST_RECENT_US ago is given without the liveness check, a
     * system call per statement under load. */
    bool trust_recent;
    /* The answer, run once on the thread that gave it, with no lock of the pool held: c granted
     * (rc 0), or c NULL and rc -ECONNRESET (a connect failed and nothing else could serve it;
     * err says why) or -ESHUTDOWN. NULL for the pool's own blocking waits. */
    void (*done)(struct dbpool_wait *w, struct dbconn *c, int rc, const char *err);
    /* The pool's, under its mutex. */
    struct dbpool_wait *next, *prev; /* the FIFO of waiters, then the list of answers to run */
    struct dbconn *granted;          /* a connection handed over, or NULL */
    int rc;                          /* a failure given as its answer, or 0 */
    char err[256];                   /* its reason */
    bool answered;                   /* granted or failed: out of the FIFO */
    bool extended;                   /* its deadline was moved once already */
    int64_t start_us;                /* when it began to wait */
};

struct dbpool_stats {
    size_t max, active, idle, pending, opening;
    size_t reserve; /* connections only a tenant holding none may take */
    uint64_t acquired, timeouts, connects, connect_failures, closed_broken;
    uint64_t closed_idle;  /* closed by dbpool_reap_idle after idling past its timeout */
    uint64_t pipelined;    /* statements sent behind another on a held connection */
    int64_t wait_us_total; /* summed time acquirers waited */
};

int dbpool_create(const struct dbpool_opts *opts, struct dbpool **out)
    __attribute__((warn_unused_result));

/*
 * Worker thread. Take a connection for owner (the tenant), waiting until deadline_us at most.
 * 0 and *out on success; -ETIMEDOUT (pool exhausted until the deadline); -ECONNRESET (could
 * not connect; err says why); -ESHUTDOWN.
 */
int dbpool_acquire(struct dbpool *p, const void *owner, int64_t deadline_us, struct dbconn **out,
                   char *err, size_t errlen) __attribute__((warn_unused_result));

/*
 * dbpool_acquire without blocking the thread (an event thread's): 0 and *out, -ESHUTDOWN or
 * -ECONNRESET (err) at once, or -EINPROGRESS: w waits in the same FIFO as blocking waiters and
 * w->done gives the answer, possibly before this returns (on this thread). Until then the
 * caller watches w->deadline_us and calls dbpool_abandon when it passes.
 */
int dbpool_acquire_async(struct dbpool *p, struct dbpool_wait *w, struct dbconn **out, char *err,
                         size_t errlen) __attribute__((warn_unused_result));

/* w's deadline passed. 0: it left the queue, timed out (no answer will come); -EINPROGRESS:
 * nothing is busy and a connect is running, whose outcome is its answer: wait on, until the new
 * w->deadline_us; -EALREADY: it was answered, its done runs (or ran). */
int dbpool_abandon(struct dbpool *p, struct dbpool_wait *w) __attribute__((warn_unused_result));

/* Any thread, never waiting: take an idle connection for owner if no one waits for one and
 * owner may take it now. 0 and *out, or -EAGAIN (use dbpool_acquire). */
int dbpool_try_acquire(struct dbpool *p, const void *owner, struct dbconn **out)
    __attribute__((warn_unused_result));

/* c's statement passed its deadline: cancel it on a thread of the pool's (a cancel is a new
 * connection to the server and a wait, up to deadline_us), then release c, closed if it did not
 * end cleanly. dbpool_destroy waits for it. */
void dbpool_cancel_release(struct dbpool *p, struct dbconn *c, int64_t deadline_us);

/* Give a connection back; broken ones are closed and their slot freed. */
void dbpool_release(struct dbpool *p, struct dbconn *c, bool broken);

/* Count a statement sent on a held connection behind another (pipelined; any thread). */
void dbpool_count_pipelined(struct dbpool *p);

/* Re-run hand-off after the set of active tenants changed (janitor thread). */
void dbpool_kick(struct dbpool *p);

/* Change limits (config reload, a fleet budget's share). A smaller max closes idle connections
 * above it, busy ones as they are released; connects started from now on get
 * connect_timeout_us (see dbpool_opts) and statement_timeout_ms (the session's backstop, see
 * dbconn_params): connections opened with another one are closed when next idle or released,
 * and replaced on demand. */
void dbpool_set_limits(struct dbpool *p, size_t max, struct share_policy share,
                       int64_t connect_timeout_us, int64_t statement_timeout_ms);

/* Connections owner holds now (metrics). */
size_t dbpool_held(struct dbpool *p, const void *owner);

/* Close every idle connection (say, after the database restarted). */
void dbpool_close_idle(struct dbpool *p);

/* Janitor thread: close the idle connections found dead (the server closed or killed them: their
 * socket is readable; counted in closed_broken) and, when idle_timeout_us > 0, those idle since
 * before now_us - idle_timeout_us (closed_idle). One poll() of every idle socket, the mutex
 * released meanwhile; a connection taken (or taken and given back) since is left alone. Returns
 * how many were found dead. */
size_t dbpool_reap_idle(struct dbpool *p, int64_t now_us, int64_t idle_timeout_us);

void dbpool_stats(struct dbpool *p, struct dbpool_stats *out);

/* Wake waiters with -ESHUTDOWN and close idle connections. Busy ones close on release. */
void dbpool_stop(struct dbpool *p);
void dbpool_destroy(struct dbpool *p); /* after every connection was released */

#endif
