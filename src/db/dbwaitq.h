/*
 * dbwaitq: a pool's waiters (dbpool.h), first come first served, and the answers given to them.
 *
 * A waiter is a dbpool_wait embedded in its owner. A blocking one (done NULL) is the first member
 * of a dbwaitq_sync and sleeps on its condition variable; an asynchronous one (done set) is
 * answered by putting it on the answered list, whose callbacks the pool runs once it released
 * its mutex. The queue has no lock of its own: the caller holds the pool's lock for every call.
 */
#ifndef BULKHEAD_DBWAITQ_H
#define BULKHEAD_DBWAITQ_H

#include "dbpool.h"

#include <pthread.h>
#include <stddef.h>

/* A thread waiting in dbpool_acquire: its wait, and where it sleeps (w.done is NULL). */
struct dbwaitq_sync {
    struct dbpool_wait w; /* a wait with done NULL is one of these */
    pthread_cond_t cond;  /* signalled when w.answered is set */
};

/* The caller holds the pool's lock for every field. */
struct dbwaitq {
    struct dbpool_wait *head, *tail; /* waiting, oldest first (linked by next and prev) */
    struct dbpool_wait *answered;    /* asynchronous waits answered, callbacks not yet run */
    size_t n;                        /* waiting */
};

/* Queue w last. */
void dbwaitq_push(struct dbwaitq *q, struct dbpool_wait *w);

/* Take w out of the queue (it was in it). */
void dbwaitq_unlink(struct dbwaitq *q, struct dbpool_wait *w);

/* w's answer is set (granted, or rc and err): take it out of the queue and wake it. */
void dbwaitq_wake(struct dbwaitq *q, struct dbpool_wait *w);

/* Answer every waiter with rc and err (a failed connect, stop). */
void dbwaitq_fail_all(struct dbwaitq *q, int rc, const char *err);

/* The asynchronous waits answered since the last call (linked by next), for their callbacks. */
struct dbpool_wait *dbwaitq_take_answered(struct dbwaitq *q);

#endif
