/*
 * dbpipe: statements pipelined on one PostgreSQL connection, driven by an event loop.
 *
 * A pipe holds one connection in libpq's pipeline mode for its owner: statements pushed on it
 * are sent behind the ones in flight, and those a loop turn pushes leave together at the
 * turn's end (one write, one Sync, one reply from PostgreSQL). Each statement completes once,
 * through its done callback, in the order sent. The pipe knows nothing of requests, tiers or
 * pools: the owner hands it a connection and gets it back through ops.release with what is to
 * become of it. PgBouncer's sbuf.c in spirit: mechanism here, the policy (who may join a pipe,
 * what a failed statement's request does next) with the owner (datapath.c).
 *
 * DESIGN: a pipe, its statements and its loop's list of pipes are that loop's alone (the list
 * lives in the loop's storage, evloop_storage); every function runs on the pipe's loop thread.
 */
#ifndef BULKHEAD_DBPIPE_H
#define BULKHEAD_DBPIPE_H

#include "dbconn.h"
#include "evloop.h"

#include <libpq-fe.h>
#include <stddef.h>
#include <stdint.h>

struct dbpipe;

/*
 * How a statement completed (its done callback's rc), exactly once per statement pushed:
 *   0            its result (res, the callee's to PQclear);
 *   -EIO         it failed in PostgreSQL (err has the message); the pipe goes on;
 *   -EAGAIN      it was not run: an earlier statement of its batch failed (its batch shares an
 *                implicit transaction); it may be sent again;
 *   -ETIMEDOUT   its deadline passed: the pipe ends and its connection is cancelled;
 *   -ECANCELED   another statement's deadline ended the pipe before its outcome was read
 *                (reads only: it may be sent again);
 *   -ECONNRESET  the connection was lost (or out of step); every statement in flight ends so,
 *                oldest first;
 *   -ESHUTDOWN   the loop stops.
 * Once the pipe ended (every rc from -ETIMEDOUT on), the connection was handed back
 * (ops.release) before the first of those callbacks runs. A callback may push on the same pipe
 * (dbpipe_find) or open another; it must not touch s again after its own done.
 */
struct dbpipe_stmt {
    /* Set by the owner before dbpipe_push. */
    void (*done)(struct dbpipe_stmt *s, PGresult *res, int rc, const char *err);
    int64_t deadline_us; /* monotonic; its timer is the loop's */
    /* The pipe's while pushed. */
    struct dbpipe *pipe;
    struct dbpipe_stmt *next; /* the next one in flight */
    int64_t sent_us;          /* when it was pushed */
    struct evloop_watch timer;
};

/* What becomes of a pipe's connection as the pipe ends (ops.release). */
enum dbpipe_end {
    DBPIPE_END_KEEP,   /* every statement and Sync read, pipeline mode left: reusable */
    DBPIPE_END_CLOSE,  /* unusable (a batch's end never came, cannot leave pipeline mode) */
    DBPIPE_END_LOST,   /* the connection broke under its statements (the server ended it?) */
    DBPIPE_END_CANCEL, /* a deadline passed: cancel what runs and read it all to its end */
    DBPIPE_END_STOP,   /* the loop stops: close it */
};

struct dbpipe_ops {
    /* The pipe ended: conn is the owner's again. Called once per pipe, on its loop. */
    void (*release)(void *ctx, struct dbconn *conn, enum dbpipe_end how);
};

/*
 * Loop thread: put conn (idle, the owner's) in pipeline mode as a pipe of loop `loop`. ctx goes
 * to ops->release; key says who may join it (dbpipe_find; not owned, compared only); label
 * names it in logs (copied, cut at 47 bytes). 0 with *out, or -errno with conn untouched and still
 * the caller's (nothing was sent).
 */
int dbpipe_open(struct evloop_thread *loop, struct dbconn *conn, const struct dbpipe_ops *ops,
                void *ctx, const void *key, const char *label, struct dbpipe **out)
    __attribute__((warn_unused_result));

/* Loop thread: send statement `name` with text parameters behind those in flight; s->done runs
 * once it completed (never from inside this call: a failed send fails the pipe at the turn's
 * end). */
void dbpipe_push(struct dbpipe *p, struct dbpipe_stmt *s, const char *name, int nparams,
                 const char *const *values);

/* Loop thread: a pipe of this loop with ctx and key that a statement may join: one with a
 * statement in flight, fewer than max_depth of them, the oldest sent less than max_age_us
 * before now, and no failed send. NULL when there is none. */
struct dbpipe *dbpipe_find(struct evloop_thread *loop, const void *ctx, const void *key,
                           size_t max_depth, int64_t max_age_us, int64_t now);

/* Statements in flight on p. */
size_t dbpipe_depth(const struct dbpipe *p);

#endif
