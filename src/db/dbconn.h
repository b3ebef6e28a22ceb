/*
 * dbconn: one libpq connection, driven with deadlines.
 *
 * Every network wait (connect, prepare, query, cancel) is bounded by the caller's deadline, so
 * a stalled or dead database costs its caller (a worker thread, a pool's connector thread, the
 * admin worker, the key refresher, the health prober) at most its deadline. An event thread
 * drives a connection without blocking instead (dbpipe.h), through its PGconn (pg) and socket. A
 * query past its deadline returns -ETIMEDOUT at once; dbconn_cancel then cancels it in PostgreSQL
 * and tells whether the connection can be reused. Statements are prepared once per connection, at
 * open. A connection may also be given a stop pipe: once it is readable every wait ends at once
 * with -ECANCELED (the threads that must end at shutdown whatever the database does: the key
 * refresher, the admin worker, the health prober). dbconn_query runs SQL that is not prepared, for
 * them.
 *
 * A cancel is a new connection to the server, and libpq 15's PQcancel blocks with no deadline
 * of its own: it sets the connection's keepalives and tcp_user_timeout on its socket (TCP only),
 * which bound a wait for a server that stopped answering after the connect (tcp_user_timeout,
 * 10 s here), but not a connect() whose SYNs go unanswered (the kernel's SYN retries, about
 * 2 min on Linux's defaults) nor a peer that accepts and never answers (a hung postmaster, a
 * proxy). So dbconn sends it from a short-lived thread of its own and waits for it until the
 * caller's deadline at most; past that the sender is left to end by itself. At most
 * DBCONN_CANCEL_SENDERS are in flight in the process: past that no cancel is sent and the
 * connection is reported unusable (closing it ends the statement too:
 * client_connection_check_interval, and the statement_timeout backstop).
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
 * ended, then as dbconn_exec. A statement dropped half-read is ended by dbconn_cancel. */
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
 * connection). dbconn_cancel handles a
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

/* After -ETIMEDOUT: cancel the running statement and read its end, until deadline_us at most
 * (the cancel's own connection included). Returns 0 when the connection is clean and reusable,
 * negative when it must be closed. In pipeline mode the statements still in flight are read to
 * their end: one cancel for the statement running, none for those its batch will not run, and
 * a statement still running DBCONN_RECANCEL_FIRST_MS after its cancel (which may have reached
 * the backend between two statements and been lost) gets another, then again after twice as
 * long each time. c->cancels counts them. */
#define DBCONN_RECANCEL_FIRST_MS 250
#define DBCONN_CANCEL_SENDERS    16 /* cancel requests in flight at once, in the process */
int dbconn_cancel(struct dbconn *c, int64_t deadline_us);

/* An idle connection that has anything to read was closed or killed by the server. */
bool dbconn_is_dead(struct dbconn *c);

/* The SQLSTATE of the last failed statement ("" if none). */
const char *dbconn_sqlstate(const PGresult *res);

void dbconn_close(struct dbconn *c);

#endif
