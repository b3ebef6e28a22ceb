/*
 * dbconn: one libpq connection, driven with deadlines.
 *
 * Every network wait (connect, prepare, query, cancel) is bounded by the caller's deadline, so
 * a stalled or dead database costs its caller (a worker thread, a pool's connector thread, the
 * admin worker, the key refresher, the health prober) at most its deadline. An event thread
 * drives a connection without blocking instead (dbpipe.h), through its PGconn (pg) and socket. A
 * query past its deadline returns -ETIMEDOUT at once; dbcancel_run then cancels it in PostgreSQL
 * and tells whether the connection can be reused. Statements are prepared once per connection, at
 * open. A connection may also be given a stop pipe: once it is readable every wait ends at once
 * with -ECANCELED (the threads that must end at shutdown whatever the database does: the key
 * refresher, the admin worker, the health prober). dbconn_query runs SQL that is not prepared, for
 * them.
 *
 * A statement past its deadline is cancelled by dbcancel (dbcancel.h).
 *
 * A dbconn is used by one thread at a time (whoever holds it from its pool: a worker, or an
 * event thread's lane).
 */
#ifndef BULKHEAD_DBCONN_H
#define BULKHEAD_DBCONN_H

#include <libpq-fe.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A statement prepared on every connection of a pool. */
struct dbconn_stmt {
    const char *name;
    const char *sql;
};

struct dbconn_params {
    const char *conninfo;            /* DATABASE_URL */
    const char *appname;             /* application_name, e.g. "bulkhead-free" */
    int64_t statement_timeout_ms;    /* server-side backstop; 0 = leave as configured */
    const char *setup_sql;           /* run once after connecting (SET ...), or NULL */
    const struct dbconn_stmt *stmts; /* prepared at open; not owned */
    size_t nstmts;
    const int *stop_fd; /* NULL, or a descriptor (a stop pipe's read end, not owned) whose
                           readability ends every wait of the connection with -ECANCELED */
};

/* The results of a statement read so far: dbconn_read may see them arrive in parts. */
struct dbconn_acc {
    PGresult *keep; /* the first successful result; owned */
    int rc;         /* the first failure, or 0 */
    char msg[256];  /* its message */
};

struct dbconn {
    PGconn *pg;                   /* owned */
    int stop_fd;                  /* the params' *stop_fd, or -1 */
    uint64_t cancels;             /* cancel requests sent for it (the holder's thread) */
    int64_t opened_us;            /* monotonic time of open */
    int64_t released_us;          /* when it last went back idle; guarded by the pool's mutex */
    int64_t statement_timeout_ms; /* the params' statement_timeout_ms it was opened with */
    const void *owner;            /* tenant holding it; guarded by the owning pool's mutex */
    struct dbconn *next;          /* pool's idle list link; guarded by the pool's mutex */
    struct dbconn_acc acc;        /* dbconn_read's results so far (holder's thread) */
    uint64_t watched;             /* bit i: the socket is in event loop i's epoll set (http.h;
                                     the holder's thread) */
    /* Pipeline mode (holder's thread): statements sent whose outcome is not yet read, those
     * of them not yet followed by a Sync, Syncs sent and not yet read, and whether results of
     * the oldest statement have been read. */
    unsigned pipe_pending, pipe_unsynced, pipe_syncs;
    bool pipe_started;
};

/* Result codes besides 0: -ETIMEDOUT, -ECONNRESET (connection lost or refused), -EIO (the
 * statement failed in PostgreSQL; err has its message), -ENOMEM, -ECANCELED (the stop pipe is
 * readable: the connection is mid-statement, close it); in pipeline mode also -EAGAIN
 * (not run: its batch failed before it), -ENODATA (nothing in flight) and -EPROTO (a result
 * that no statement sent explains: close the connection). */

/* Open and set up a connection; besides the codes above, -EPIPE: the server accepted it and
 * ended it during the set-up (its backend was terminated): another attempt may well succeed. */
int dbconn_open(const struct dbconn_params *p, int64_t deadline_us, struct dbconn **out, char *err,
                size_t errlen) __attribute__((warn_unused_result));

/* Run a prepared statement (text parameters). On 0, *res is the result (caller PQclears). */
int dbconn_exec(struct dbconn *c, const char *stmt, int nparams, const char *const *values,
                int64_t deadline_us, PGresult **res, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* Run sql (not prepared) with text parameters, as PQexecParams would (nparams 0: the simple
 * protocol, where sql may hold several statements), bounded by deadline_us and the stop pipe.
 * 0 with *res the statement's result whatever its status, for the caller to read (the first
 * error's, or the last one's; the caller PQclears); or -ETIMEDOUT, -ECANCELED, -ECONNRESET with
 * *res NULL and err set, the connection then mid-statement (close it). */
int dbconn_query(struct dbconn *c, const char *sql, int nparams, const char *const *values,
                 int64_t deadline_us, PGresult **res, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* The same in two steps, for an event loop: send the statement (0 or -ECONNRESET), then call
 * dbconn_read each time the socket (PQsocket) is readable: -EINPROGRESS until the statement
 * ended, then as dbconn_exec. A statement dropped half-read is ended by dbcancel_run. */
int dbconn_send(struct dbconn *c, const char *stmt, int nparams, const char *const *values,
                char *err, size_t errlen) __attribute__((warn_unused_result));
int dbconn_read(struct dbconn *c, PGresult **res, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* Pipeline mode (libpq's), for an event loop: several statements in flight on one connection.
 * dbconn_pipe_enter on an idle connection; dbconn_pipe_send queues a statement (libpq writes
 * nothing below 64 kB queued);
 * dbconn_pipe_sync ends a batch with a Sync and writes what is queued, in one write (0 or
 * -ECONNRESET). The statements of one batch share an implicit transaction: when one fails,
 * those after it in the batch are not run, and end -EAGAIN ("aborted": they may be sent
 * again); a batch of one fails alone. When the socket is readable, PQconsumeInput
 * (dbconn_pipe_consume), then dbconn_pipe_next until -EINPROGRESS: each call is the outcome of
 * the oldest statement in flight, as dbconn_exec's, or -EAGAIN, or -ECONNRESET for all of them
 * (the connection is lost), or -ENODATA once nothing is in flight (every statement and Sync
 * read), or -EPROTO (out of step). dbconn_pipe_exit then (0, or -EBUSY: close the
 * connection). dbcancel_run handles a
 * connection in pipeline mode too: every statement is read to its end. */
int dbconn_pipe_enter(struct dbconn *c) __attribute__((warn_unused_result));
int dbconn_pipe_send(struct dbconn *c, const char *stmt, int nparams, const char *const *values,
                     char *err, size_t errlen) __attribute__((warn_unused_result));
int dbconn_pipe_sync(struct dbconn *c, char *err, size_t errlen)
    __attribute__((warn_unused_result));
int dbconn_pipe_consume(struct dbconn *c, char *err, size_t errlen)
    __attribute__((warn_unused_result));
int dbconn_pipe_next(struct dbconn *c, PGresult **res, char *err, size_t errlen)
    __attribute__((warn_unused_result));
int dbconn_pipe_exit(struct dbconn *c) __attribute__((warn_unused_result));

/* Wait until pg's socket is ready for events, deadline_us passes (-ETIMEDOUT) or stop_fd (-1:
 * none) is readable (-ECANCELED); -ECONNRESET without a socket. */
int dbconn_wait(PGconn *pg, int stop_fd, short events, int64_t deadline_us);

/* Read the statement in flight to its end, waiting at most until deadline_us: 0 (and *res, if
 * res, the caller clears it), or a negative errno with the reason in err. */
int dbconn_collect(struct dbconn *c, int64_t deadline_us, PGresult **res, char *err, size_t errlen);

/* An idle connection that has anything to read was closed or killed by the server. */
bool dbconn_is_dead(struct dbconn *c);

/* The SQLSTATE of the last failed statement ("" if none). */
const char *dbconn_sqlstate(const PGresult *res);

void dbconn_close(struct dbconn *c);

#endif
