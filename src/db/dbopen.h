/*
 * dbopen: a pool's own threads (dbpool.h): connectors that open a connection, cancellers that
 * end a statement past its deadline, and their count, which the pool's destroy waits to see 0.
 *
 * DESIGN: each is a short-lived detached thread that does its slow part (dbconn_open,
 * dbcancel_run) with no lock held, then calls the pool back with the outcome (with no lock
 * held either) and, as its last act, counts itself finished under the pool's mutex: the pool
 * may be freed as soon as the count is seen at 0. The count is guarded by the pool's mutex
 * (given to dbopen_init); the pool decides when a connect starts and what its outcome does.
 */
#ifndef BULKHEAD_DBOPEN_H
#define BULKHEAD_DBOPEN_H

#include "dbconn.h"

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct dbopen {
    pthread_mutex_t *mutex; /* the pool's; guards threads; not owned */
    size_t threads;         /* connector and canceller threads not yet finished */
    pthread_cond_t done;    /* signalled when threads drops to 0 (dbopen_wait) */
    void *ctx;              /* given to the callbacks (the pool) */
    /* Connector thread, no lock held: c opened (rc 0), or rc and err (dbconn_open's). */
    void (*opened)(void *ctx, struct dbconn *c, int rc, const char *err);
    /* Canceller thread, or dbopen_cancel's caller when no thread could start (then broken),
     * no lock held: c's statement is over; broken: it did not end cleanly, close c. */
    void (*cancelled)(void *ctx, struct dbconn *c, bool broken);
};

void dbopen_init(struct dbopen *o, pthread_mutex_t *mutex, void *ctx,
                 void (*opened)(void *ctx, struct dbconn *c, int rc, const char *err),
                 void (*cancelled)(void *ctx, struct dbconn *c, bool broken));

/* The caller holds the mutex. Start a connector thread opening a connection with prm (copied;
 * its strings must outlive the pool) until deadline_us; its outcome goes to opened. 0, or
 * pthread_create's error: no thread, nothing counted, opened is not called. */
int dbopen_connect(struct dbopen *o, const struct dbconn_params *prm, int64_t deadline_us)
    __attribute__((warn_unused_result));

/* No lock held. Start a canceller thread ending c's statement (dbcancel_run, until deadline_us)
 * and handing c to cancelled; with no thread, cancelled(c, broken) runs here. */
void dbopen_cancel(struct dbopen *o, struct dbconn *c, int64_t deadline_us);

/* The caller holds the mutex: wait until every thread has finished. */
void dbopen_wait(struct dbopen *o);

void dbopen_destroy(struct dbopen *o); /* after dbopen_wait */

#endif
