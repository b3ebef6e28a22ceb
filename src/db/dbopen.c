/*
 * dbopen: a pool's connector and canceller threads (see dbopen.h).
 *
 * Threads get a small stack (libpq's connect and the session's setup need little) and are
 * detached: nobody joins them, the pool waits for their count instead, so a connect that runs
 * into its timeout at shutdown costs the shutdown that timeout and no more.
 */
#include "dbopen.h"
#include "dbcancel.h"
#include "xalloc.h"

#include <stdlib.h>

#define DBOPEN_STACK (256 * 1024) /* libpq's connect and the session's setup */

struct dbopen_task {
    struct dbopen *o;
    struct dbconn_params prm; /* a connector's */
    struct dbconn *c;         /* a canceller's */
    int64_t deadline_us;
};

void dbopen_init(struct dbopen *o, pthread_mutex_t *mutex, void *ctx,
                 void (*opened)(void *ctx, struct dbconn *c, int rc, const char *err),
                 void (*cancelled)(void *ctx, struct dbconn *c, bool broken))
{
    *o = (struct dbopen){.mutex = mutex, .ctx = ctx, .opened = opened, .cancelled = cancelled};
    pthread_cond_init(&o->done, NULL);
}

/* Start a detached thread running fn(t); 0 or pthread_create's error. The caller counted it. */
static int dbopen_start(void *(*fn)(void *), struct dbopen_task *t)
{
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, DBOPEN_STACK);
    pthread_t tid;
    int rc = pthread_create(&tid, &attr, fn, t);
    pthread_attr_destroy(&attr);
    return rc;
}

/* A thread's last act (or its start's failure, unlocked): the pool may be freed as soon as the
 * count dbopen_wait waits for is seen at 0. */
static void dbopen_finished(struct dbopen *o)
{
    pthread_mutex_t *mutex = o->mutex;
    pthread_mutex_lock(mutex);
    if (--o->threads == 0)
        pthread_cond_broadcast(&o->done);
    pthread_mutex_unlock(mutex);
}

/* Connector thread: open one connection, then hand the outcome to the pool. */
static void *dbopen_connector_main(void *arg)
{
    struct dbopen_task *t = arg;
    struct dbopen *o = t->o;
    struct dbconn *c = NULL;
    char err[256] = "";
    int rc = dbconn_open(&t->prm, t->deadline_us, &c, err, sizeof(err));
    o->opened(o->ctx, c, rc, err);
    free(t);
    dbopen_finished(o); /* last */
    return NULL;
}

int dbopen_connect(struct dbopen *o, const struct dbconn_params *prm, int64_t deadline_us)
{
    struct dbopen_task *t = xcalloc(1, sizeof(*t));
    *t = (struct dbopen_task){.o = o, .prm = *prm, .deadline_us = deadline_us};
    o->threads++;
    int rc = dbopen_start(dbopen_connector_main, t);
    if (rc) {
        o->threads--;
        free(t);
    }
    return rc;
}

/* Canceller thread: end the statement, then give the connection back (closed if unclean). */
static void *dbopen_canceller_main(void *arg)
{
    struct dbopen_task *t = arg;
    struct dbopen *o = t->o;
    o->cancelled(o->ctx, t->c, dbcancel_run(t->c, t->deadline_us) != 0);
    free(t);
    dbopen_finished(o); /* last */
    return NULL;
}

void dbopen_cancel(struct dbopen *o, struct dbconn *c, int64_t deadline_us)
{
    struct dbopen_task *t = xcalloc(1, sizeof(*t));
    *t = (struct dbopen_task){.o = o, .c = c, .deadline_us = deadline_us};
    pthread_mutex_lock(o->mutex);
    o->threads++;
    pthread_mutex_unlock(o->mutex);
    if (dbopen_start(dbopen_canceller_main, t)) {
        /* No thread: the statement is ended by closing its connection. */
        free(t);
        o->cancelled(o->ctx, c, true);
        dbopen_finished(o);
    }
}

void dbopen_wait(struct dbopen *o)
{
    while (o->threads)
        pthread_cond_wait(&o->done, o->mutex);
}

void dbopen_destroy(struct dbopen *o)
{
    pthread_cond_destroy(&o->done);
}
