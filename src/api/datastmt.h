/*
 * datastmt: what /api/data runs in the database, and how an attempt at it ends: the prepared
 * statements and session settings of every tier connection, the one statement that answers a
 * request, and the one way out of an attempt (the connection back, the breaker's verdict, the
 * reply) shared by the data path's two ways (datapath.c: on an event thread, or on a worker).
 *
 * PostgreSQL builds the JSON; the server passes the text through without parsing it.
 */
#ifndef BULKHEAD_DATASTMT_H
#define BULKHEAD_DATASTMT_H

#include "apierr.h"
#include "dbconn.h"

#include <libpq-fe.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct dbpool;
struct datareq;

#define DATASTMT_CANCEL_GRACE_US 1000000 /* time for a cancelled statement to end cleanly */

/* The statements every tier connection prepares, and its session settings. */
extern const struct dbconn_stmt datastmt_statements[];
extern const size_t datastmt_statement_count;
extern const char datastmt_session_sql[];

#define DATASTMT_SLEEP "sleep" /* the statement of delay_ms: pg_sleep($1 ms) */

/* The one statement that answers r (besides a delay): its name and text parameters. */
struct datastmt {
    const char *name;
    int n;
    const char *v[3];
    char b1[32], b2[32]; /* the numbers among v */
};

void datastmt_pick(const struct datareq *q, struct datastmt *s);

/* What becomes of an attempt's connection once it is over. */
enum datastmt_conn {
    DATASTMT_CONN_NONE,   /* it never got one (or a pipeline keeps it) */
    DATASTMT_CONN_KEEP,   /* back to the pool, reusable */
    DATASTMT_CONN_CLOSE,  /* back to the pool, closed: it broke */
    DATASTMT_CONN_CANCEL, /* its statement is still running: cancel it, then back (or closed) */
};

#define DATASTMT_NO_VERDICT (-1) /* the breaker hears nothing: its permit is released */

/* How an attempt ended: what the breaker hears and which apierr row answers. */
struct datastmt_end {
    enum apierr err;         /* APIERR_COUNT: the statement's row is the reply */
    int verdict;             /* enum breaker_outcome, or DATASTMT_NO_VERDICT */
    enum datastmt_conn conn; /* what happens to the connection */
    const char *log_event;   /* logged with the error text, or NULL */
};

/* An attempt's result code (dbpool_acquire's, dbconn_exec's), as a verdict and a row. */
struct datastmt_end datastmt_classify(int rc, bool have_conn);

/*
 * The one way out of an attempt, in this order:
 *   1. the connection goes back to the pool: the client's next request may need it, and a
 *      client that was answered must find it there (tests count idle connections);
 *   2. the breaker hears the verdict (or the permit is released): a client that saw a failure
 *      and asks again must meet the breaker that counted it;
 *   3. the reply is set (then the caller resumes the request, last: after request_resume the
 *      HTTP thread owns r and may already have freed it).
 * A timed-out statement is the exception to 1 (DATASTMT_CONN_CANCEL: the caller cancels it
 * after the resume, as a cancel may take up to DATASTMT_CANCEL_GRACE_US and the client must not
 * wait for it). res (the result, with end.err APIERR_COUNT) becomes the reply's body.
 */
void datastmt_settle(struct datareq *q, struct dbconn *conn, PGresult *res, struct datastmt_end end,
                     const char *err);

/* A connection was found dead under a statement: close it, and the pool's idle ones. */
void datastmt_drop_dead(struct dbpool *db, struct dbconn *conn);

#endif
