/*
 * dbcancel: a running statement cancelled within a deadline (see dbcancel.h).
 *
 * DESIGN: a cancel request runs PQcancel on a detached sender thread that owns a copy of the
 * cancel handle; the sender and the waiting holder share one small record (a mutex, a
 * condition variable, a reference count of two), freed by the last to let go, so a holder that
 * stops waiting at its deadline leaves nothing the sender needs. dbcancel_senders
 * (process-wide, atomic) counts the senders alive. The connection itself is its holder's
 * alone, as everywhere in dbconn.
 */
#include "dbcancel.h"
#include "mclock.h"
#include "xalloc.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>

#define DBCANCEL_SENDER_STACK (256 * 1024) /* PQcancel: a socket, a connect, 16 bytes each way */

/* Cancel senders alive in the process (dbcancel_send); at most DBCANCEL_SENDERS. */
static atomic_int dbcancel_senders;

/* One cancel request, shared by its sender thread and the holder waiting for it. */
struct dbcancel_sender {
    PGcancel *cancel;   /* owned: this request's own copy of the handle */
    pthread_mutex_t mu; /* guards done, sent, refs */
    pthread_cond_t cv;  /* signalled when done */
    bool done, sent;    /* PQcancel returned; and whether the server took the request */
    int refs;           /* the sender and the holder; the last to let go frees */
};

static void dbcancel_sender_unref(struct dbcancel_sender *s)
{
    pthread_mutex_lock(&s->mu);
    bool last = --s->refs == 0;
    pthread_mutex_unlock(&s->mu);
    if (!last)
        return;
    PQfreeCancel(s->cancel);
    pthread_cond_destroy(&s->cv);
    pthread_mutex_destroy(&s->mu);
    free(s);
}

/* Sender thread: PQcancel, however long it takes. */
static void *dbcancel_sender_main(void *arg)
{
    struct dbcancel_sender *s = arg;
    char buf[256];
    bool sent = PQcancel(s->cancel, buf, (int)sizeof(buf)) == 1;
    pthread_mutex_lock(&s->mu);
    s->done = true;
    s->sent = sent;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
    dbcancel_sender_unref(s);
    atomic_fetch_sub(&dbcancel_senders, 1); /* last */
    return NULL;
}

/* Ask the server to cancel c's running statement; wait for the request to be delivered until
 * deadline_us at most. 0 when it was, -ECONNRESET when it could not be, -ETIMEDOUT when it was
 * not done in time, -EAGAIN when DBCANCEL_SENDERS are in flight already. */
static int dbcancel_send(struct dbconn *c, int64_t deadline_us)
{
    if (atomic_fetch_add(&dbcancel_senders, 1) >= DBCANCEL_SENDERS) {
        atomic_fetch_sub(&dbcancel_senders, 1);
        return -EAGAIN;
    }
    struct dbcancel_sender *s = xcalloc(1, sizeof(*s));
    s->cancel = PQgetCancel(c->pg);
    s->refs = 2;
    pthread_mutex_init(&s->mu, NULL);
    mclock_cond_init(&s->cv);
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, DBCANCEL_SENDER_STACK);
    pthread_t tid;
    int started = s->cancel ? pthread_create(&tid, &attr, dbcancel_sender_main, s) : EINVAL;
    pthread_attr_destroy(&attr);
    if (started != 0) {
        atomic_fetch_sub(&dbcancel_senders, 1);
        s->refs = 1;
        dbcancel_sender_unref(s);
        return -ECONNRESET;
    }
    c->cancels++;
    struct timespec until = mclock_timespec(deadline_us);
    pthread_mutex_lock(&s->mu);
    while (!s->done && pthread_cond_timedwait(&s->cv, &s->mu, &until) != ETIMEDOUT)
        ;
    int rc = !s->done ? -ETIMEDOUT : s->sent ? 0 : -ECONNRESET;
    pthread_mutex_unlock(&s->mu);
    dbcancel_sender_unref(s);
    return rc;
}

/* dbcancel_run's end in pipeline mode: read every statement in flight to its end. The oldest
 * statement still pending runs when its outcome is not there to read; it gets one cancel,
 * unless an earlier statement of its batch failed (then the server runs nothing more of that
 * batch: its statements end "aborted" without one), and another each time it is still
 * running after a wait that doubles from DBCANCEL_RECANCEL_FIRST_MS (a cancel that reached the
 * backend between two statements was lost). */
static int dbcancel_pipe_drain(struct dbconn *c, int64_t deadline_us)
{
    unsigned cancelled = c->pipe_pending; /* the statement the last cancel was for, by the
                                             count of statements pending when it was sent */
    int64_t backoff = DBCANCEL_RECANCEL_FIRST_MS * 1000, again = mclock_now_us() + backoff;
    bool batch_failed = false; /* a statement of the oldest batch failed: the rest do not run */
    while (c->pipe_pending || c->pipe_syncs) {
        unsigned syncs = c->pipe_syncs;
        PGresult *res = NULL;
        int rc = dbconn_pipe_next(c, &res, NULL, 0);
        PQclear(res);
        if (rc == -ECONNRESET || rc == -EPROTO)
            return -ECONNRESET;
        if (c->pipe_syncs < syncs)
            batch_failed = false; /* a batch ended: the next one runs */
        if (rc != -EINPROGRESS && rc != -ENODATA) {
            if (rc != 0)
                batch_failed = true;
            continue;
        }
        if (rc == -ENODATA)
            break;
        int64_t now = mclock_now_us();
        if (c->pipe_pending && !batch_failed && (c->pipe_pending != cancelled || now >= again)) {
            if (c->pipe_pending != cancelled)
                backoff = DBCANCEL_RECANCEL_FIRST_MS * 1000;
            else
                backoff *= 2;
            cancelled = c->pipe_pending;
            again = now + backoff;
            if (dbcancel_send(c, deadline_us))
                return -ECONNRESET;
        }
        int64_t until =
            c->pipe_pending && !batch_failed && again < deadline_us ? again : deadline_us;
        int w = dbconn_wait(c->pg, c->stop_fd, POLLIN, until);
        if (w == -ETIMEDOUT && until < deadline_us)
            continue; /* still running: cancel again */
        if (w || !PQconsumeInput(c->pg))
            return -ECONNRESET;
    }
    return dbconn_pipe_exit(c) ? -ECONNRESET : 0;
}

int dbcancel_run(struct dbconn *c, int64_t deadline_us)
{
    /* Statements queued and not yet written go out first (with a Sync): the cancel then finds
     * the first of the lane's statements running, and the re-cancels the rest. */
    if (PQpipelineStatus(c->pg) != PQ_PIPELINE_OFF && c->pipe_unsynced &&
        dbconn_pipe_sync(c, NULL, 0))
        return -ECONNRESET;
    if (dbcancel_send(c, deadline_us))
        return -ECONNRESET;
    if (PQpipelineStatus(c->pg) != PQ_PIPELINE_OFF) {
        if (dbcancel_pipe_drain(c, deadline_us))
            return -ECONNRESET;
        return !PQisBusy(c->pg) && PQtransactionStatus(c->pg) == PQTRANS_IDLE ? 0 : -ECONNRESET;
    }
    /* The statement now ends with query_canceled; read up to the end so the protocol is in
     * sync again. Any outcome but a clean end means the connection is closed by the caller. */
    int rc = dbconn_collect(c, deadline_us, NULL, NULL, 0);
    return (rc == 0 || rc == -ETIMEDOUT) && !PQisBusy(c->pg) &&
                   PQtransactionStatus(c->pg) == PQTRANS_IDLE
               ? 0
               : -ECONNRESET;
}
