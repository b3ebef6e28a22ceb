/*
 * dbconn: libpq's asynchronous API under poll() deadlines (see dbconn.h).
 *
 * Connections are opened with PQconnectStartParams/PQconnectPoll, statements sent with
 * PQsendQueryPrepared (or PQsendQueryParams) and read with PQconsumeInput/PQgetResult, so no
 * libpq call can block past a deadline except DNS resolution at open (and a send that finds the
 * kernel's send buffer full: statements are far smaller). TCP keepalives and tcp_user_timeout
 * make a dead peer visible to the kernel even when nobody is waiting on the socket.
 *
 * DESIGN: a connection is its holder's alone. A cancel request runs PQcancel on a detached
 * sender thread that owns a copy of the cancel handle; the sender and the waiting holder share
 * one small record (a mutex, a condition variable, a reference count of two), freed by the
 * last to let go, so a holder that stops waiting at its deadline leaves nothing the sender
 * needs. dbconn_senders (process-wide, atomic) counts the senders alive.
 */
#include "dbconn.h"
#include "mclock.h"
#include "xalloc.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DBCONN_SQLSTATE_CANCELED "57014" /* query_canceled: statement_timeout or cancel */

#define DBCONN_SENDER_STACK (256 * 1024) /* PQcancel: a socket, a connect, 16 bytes each way */

/* Cancel senders alive in the process (dbconn_send_cancel); at most DBCONN_CANCEL_SENDERS. */
static atomic_int dbconn_senders;

/* Wait until c's socket is ready for events, deadline_us passes (-ETIMEDOUT) or stop_fd
 * (-1: none) is readable (-ECANCELED). */
static int dbconn_wait(PGconn *pg, int stop_fd, short events, int64_t deadline_us)
{
    struct pollfd pfd[2] = {{.fd = PQsocket(pg), .events = events},
                            {.fd = stop_fd, .events = POLLIN}};
    if (pfd[0].fd < 0)
        return -ECONNRESET;
    for (;;) {
        int64_t left = deadline_us - mclock_now_us();
        if (left <= 0)
            return -ETIMEDOUT;
        int r = poll(pfd, 2, (int)((left + 999) / 1000));
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return -errno;
        if (pfd[1].revents)
            return -ECANCELED; /* before a ready socket: a stop ends every wait */
        if (r > 0)
            return 0;
    }
}

static void dbconn_msg(char *err, size_t errlen, const char *what, const char *detail)
{
    if (!err || !errlen)
        return;
    snprintf(err, errlen, "%s%s%s", what, detail && *detail ? ": " : "", detail ? detail : "");
    /* libpq messages end with a newline; one-line logs do not want it. */
    size_t n = strlen(err);
    while (n && (err[n - 1] == '\n' || err[n - 1] == ' '))
        err[--n] = '\0';
}

/*
 * Take every result that has arrived: -EINPROGRESS while the statement still runs (wait for
 * the socket, PQconsumeInput, call again), else its outcome. The first successful result is
 * kept in *res; an error anywhere in the sequence (a failed COMMIT after a good INSERT, say)
 * fails the whole.
 */
static int dbconn_drain(struct dbconn *c, struct dbconn_acc *a, PGresult **res, char *err,
                        size_t errlen)
{
    for (;;) {
        if (PQisBusy(c->pg))
            return -EINPROGRESS;
        PGresult *r = PQgetResult(c->pg);
        if (!r)
            break;
        ExecStatusType st = PQresultStatus(r);
        if (st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK) {
            if (!a->keep && a->rc == 0)
                a->keep = r;
            else
                PQclear(r);
            continue;
        }
        if (a->rc == 0) {
            const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
            dbconn_msg(a->msg, sizeof(a->msg), "query failed", PQresultErrorMessage(r));
            a->rc = (state && !strcmp(state, DBCONN_SQLSTATE_CANCELED)) ? -ETIMEDOUT : -EIO;
        }
        PQclear(r);
    }
    PGresult *keep = a->keep;
    a->keep = NULL;
    if (PQstatus(c->pg) == CONNECTION_BAD) {
        PQclear(keep);
        dbconn_msg(err, errlen, "connection lost", PQerrorMessage(c->pg));
        return -ECONNRESET;
    }
    if (a->rc) {
        PQclear(keep);
        if (err && errlen)
            snprintf(err, errlen, "%s", a->msg);
        return a->rc;
    }
    if (res)
        *res = keep;
    else
        PQclear(keep);
    return 0;
}

/* The message of a wait that ended with w. */
static void dbconn_wait_msg(struct dbconn *c, int w, char *err, size_t errlen)
{
    if (w == -ETIMEDOUT)
        dbconn_msg(err, errlen, "query timed out", NULL);
    else if (w == -ECANCELED)
        dbconn_msg(err, errlen, "query abandoned", "stopping");
    else
        dbconn_msg(err, errlen, "connection lost",
                   w == -ECONNRESET ? PQerrorMessage(c->pg) : strerror(-w));
}

/* Read the statement in flight to its end, waiting at most until deadline_us. */
static int dbconn_collect(struct dbconn *c, int64_t deadline_us, PGresult **res, char *err,
                          size_t errlen)
{
    struct dbconn_acc a = {.keep = NULL, .rc = 0};
    for (;;) {
        int rc = dbconn_drain(c, &a, res, err, errlen);
        if (rc != -EINPROGRESS)
            return rc;
        int w = dbconn_wait(c->pg, c->stop_fd, POLLIN, deadline_us);
        if (!w && !PQconsumeInput(c->pg))
            w = -ECONNRESET;
        if (w) {
            PQclear(a.keep);
            dbconn_wait_msg(c, w, err, errlen);
            return w;
        }
    }
}

static int dbconn_simple(struct dbconn *c, const char *sql, int64_t deadline_us, char *err,
                         size_t errlen)
{
    if (!PQsendQuery(c->pg, sql)) {
        dbconn_msg(err, errlen, "send failed", PQerrorMessage(c->pg));
        return -ECONNRESET;
    }
    return dbconn_collect(c, deadline_us, NULL, err, errlen);
}

static int dbconn_setup(struct dbconn *c, const struct dbconn_params *p, int64_t deadline_us,
                        char *err, size_t errlen)
{
    char sql[160];
    if (p->statement_timeout_ms > 0) {
        snprintf(sql, sizeof(sql), "SET statement_timeout = %lld",
                 (long long)p->statement_timeout_ms);
        int rc = dbconn_simple(c, sql, deadline_us, err, errlen);
        if (rc)
            return rc;
    }
    /* PostgreSQL 14+: end a query whose client went away (say, a timed-out worker that
     * closed the connection) within a second instead of letting it run on. */
    if (PQserverVersion(c->pg) >= 140000) {
        int rc = dbconn_simple(c, "SET client_connection_check_interval = 1000", deadline_us, err,
                               errlen);
        if (rc)
            return rc;
    }
    if (p->setup_sql) {
        int rc = dbconn_simple(c, p->setup_sql, deadline_us, err, errlen);
        if (rc)
            return rc;
    }
    for (size_t i = 0; i < p->nstmts; i++) {
        if (!PQsendPrepare(c->pg, p->stmts[i].name, p->stmts[i].sql, 0, NULL)) {
            dbconn_msg(err, errlen, "send failed", PQerrorMessage(c->pg));
            return -ECONNRESET;
        }
        char why[300];
        int rc = dbconn_collect(c, deadline_us, NULL, why, sizeof(why));
        if (rc) {
            snprintf(err, errlen, "prepare %s: %s", p->stmts[i].name, why);
            return rc;
        }
    }
    return 0;
}

int dbconn_open(const struct dbconn_params *p, int64_t deadline_us, struct dbconn **out, char *err,
                size_t errlen)
{
    /* Later keywords override what the URL in dbname says. */
    const char *keys[] = {"dbname",
                          "application_name",
                          "keepalives",
                          "keepalives_idle",
                          "keepalives_interval",
                          "keepalives_count",
                          "tcp_user_timeout",
                          NULL};
    const char *vals[] = {p->conninfo, p->appname, "1", "10", "5", "3", "10000", NULL};
    PGconn *pg = PQconnectStartParams(keys, vals, 1);
    if (!pg) {
        dbconn_msg(err, errlen, "connect", "out of memory");
        return -ENOMEM;
    }
    struct dbconn *c = xcalloc(1, sizeof(*c));
    c->pg = pg;
    c->stop_fd = p->stop_fd ? *p->stop_fd : -1;
    c->statement_timeout_ms = p->statement_timeout_ms;
    int rc = 0;
    if (PQstatus(pg) == CONNECTION_BAD) {
        dbconn_msg(err, errlen, "connect failed", PQerrorMessage(pg));
        rc = -ECONNRESET;
        goto fail;
    }
    PostgresPollingStatusType st = PGRES_POLLING_WRITING;
    while (st != PGRES_POLLING_OK) {
        if (st == PGRES_POLLING_FAILED) {
            dbconn_msg(err, errlen, "connect failed", PQerrorMessage(pg));
            rc = -ECONNRESET;
            goto fail;
        }
        int w = dbconn_wait(pg, c->stop_fd, st == PGRES_POLLING_READING ? POLLIN : POLLOUT,
                            deadline_us);
        if (w) {
            dbconn_msg(err, errlen, "connect failed",
                       w == -ETIMEDOUT   ? "timed out"
                       : w == -ECANCELED ? "stopping"
                                         : strerror(-w));
            rc = w == -ETIMEDOUT || w == -ECANCELED ? w : -ECONNRESET;
            goto fail;
        }
        st = PQconnectPoll(pg);
    }
    rc = dbconn_setup(c, p, deadline_us, err, errlen);
    if (rc == -ECONNRESET)
        rc = -EPIPE; /* the server accepted it, then ended it (its backend was killed) */
    if (rc)
        goto fail;
    c->opened_us = mclock_now_us();
    *out = c;
    return 0;
fail:
    dbconn_close(c);
    return rc;
}

int dbconn_send(struct dbconn *c, const char *stmt, int nparams, const char *const *values,
                char *err, size_t errlen)
{
    PQclear(c->acc.keep);
    c->acc.keep = NULL;
    c->acc.rc = 0;
    if (!PQsendQueryPrepared(c->pg, stmt, nparams, values, NULL, NULL, 0)) {
        dbconn_msg(err, errlen, "send failed", PQerrorMessage(c->pg));
        return -ECONNRESET;
    }
    return 0;
}

int dbconn_exec(struct dbconn *c, const char *stmt, int nparams, const char *const *values,
                int64_t deadline_us, PGresult **res, char *err, size_t errlen)
{
    *res = NULL;
    int rc = dbconn_send(c, stmt, nparams, values, err, errlen);
    return rc ? rc : dbconn_collect(c, deadline_us, res, err, errlen);
}

int dbconn_query(struct dbconn *c, const char *sql, int nparams, const char *const *values,
                 int64_t deadline_us, PGresult **res, char *err, size_t errlen)
{
    *res = NULL;
    int sent = nparams ? PQsendQueryParams(c->pg, sql, nparams, NULL, values, NULL, NULL, 0)
                       : PQsendQuery(c->pg, sql);
    if (!sent) {
        dbconn_msg(err, errlen, "send failed", PQerrorMessage(c->pg));
        return -ECONNRESET;
    }
    /* As PQexec: the last result, unless one failed (the server runs nothing after it). */
    PGresult *keep = NULL;
    for (;;) {
        while (!PQisBusy(c->pg)) {
            PGresult *r = PQgetResult(c->pg);
            if (!r) {
                if (!keep) {
                    dbconn_msg(err, errlen, "connection lost", PQerrorMessage(c->pg));
                    return -ECONNRESET;
                }
                *res = keep;
                return 0;
            }
            ExecStatusType st = PQresultStatus(r);
            bool failed = keep && PQresultStatus(keep) == PGRES_FATAL_ERROR;
            if (failed || st == PGRES_COPY_IN || st == PGRES_COPY_OUT) {
                PQclear(r); /* no COPY here: only a statement of ours */
                continue;
            }
            PQclear(keep);
            keep = r;
        }
        int w = dbconn_wait(c->pg, c->stop_fd, POLLIN, deadline_us);
        if (!w && !PQconsumeInput(c->pg))
            w = -ECONNRESET;
        if (w) {
            PQclear(keep);
            dbconn_wait_msg(c, w, err, errlen);
            return w;
        }
    }
}

int dbconn_read(struct dbconn *c, PGresult **res, char *err, size_t errlen)
{
    *res = NULL;
    if (!PQconsumeInput(c->pg)) {
        dbconn_msg(err, errlen, "connection lost", PQerrorMessage(c->pg));
        return -ECONNRESET;
    }
    return dbconn_drain(c, &c->acc, res, err, errlen);
}

int dbconn_pipe_enter(struct dbconn *c)
{
    if (!PQenterPipelineMode(c->pg))
        return -ECONNRESET;
    c->pipe_pending = c->pipe_unsynced = c->pipe_syncs = 0;
    c->pipe_started = false;
    PQclear(c->acc.keep);
    c->acc = (struct dbconn_acc){.keep = NULL, .rc = 0};
    return 0;
}

int dbconn_pipe_send(struct dbconn *c, const char *stmt, int nparams, const char *const *values,
                     char *err, size_t errlen)
{
    /* In pipeline mode libpq writes only past 64 kB queued: this one leaves with the Sync. */
    if (!PQsendQueryPrepared(c->pg, stmt, nparams, values, NULL, NULL, 0)) {
        dbconn_msg(err, errlen, "send failed", PQerrorMessage(c->pg));
        return -ECONNRESET;
    }
    c->pipe_pending++;
    c->pipe_unsynced++;
    return 0;
}

int dbconn_pipe_sync(struct dbconn *c, char *err, size_t errlen)
{
    /* PQpipelineSync queues the Sync and flushes (libpq 15): one write for the batch. */
    if (!PQpipelineSync(c->pg)) {
        dbconn_msg(err, errlen, "send failed", PQerrorMessage(c->pg));
        return -ECONNRESET;
    }
    c->pipe_unsynced = 0;
    c->pipe_syncs++;
    return 0;
}

int dbconn_pipe_consume(struct dbconn *c, char *err, size_t errlen)
{
    if (!PQconsumeInput(c->pg)) {
        dbconn_msg(err, errlen, "connection lost", PQerrorMessage(c->pg));
        return -ECONNRESET;
    }
    return 0;
}

int dbconn_pipe_next(struct dbconn *c, PGresult **res, char *err, size_t errlen)
{
    struct dbconn_acc *a = &c->acc;
    *res = NULL;
    bool after_null = false;
    while (c->pipe_pending || c->pipe_syncs) {
        if (PQstatus(c->pg) == CONNECTION_BAD) {
            dbconn_msg(err, errlen, "connection lost", PQerrorMessage(c->pg));
            return -ECONNRESET;
        }
        if (PQisBusy(c->pg))
            return -EINPROGRESS;
        PGresult *r = PQgetResult(c->pg);
        if (!r) {
            if (c->pipe_started) {
                /* The end of the oldest statement's results: its outcome. */
                c->pipe_started = false;
                c->pipe_pending--;
                int rc = a->rc;
                if (rc) {
                    PQclear(a->keep);
                    if (err && errlen)
                        snprintf(err, errlen, "%s", a->msg);
                } else {
                    *res = a->keep;
                }
                *a = (struct dbconn_acc){.keep = NULL, .rc = 0};
                return rc;
            }
            /* Between a Sync and what follows it. Twice in a row: nothing more has arrived. */
            if (after_null)
                return -EINPROGRESS;
            after_null = true;
            continue;
        }
        after_null = false;
        ExecStatusType st = PQresultStatus(r);
        if (st == PGRES_PIPELINE_SYNC) {
            PQclear(r);
            if (c->pipe_started || !c->pipe_syncs)
                return -EPROTO;
            c->pipe_syncs--;
            continue;
        }
        if (!c->pipe_pending) {
            PQclear(r);
            return -EPROTO; /* a result of no statement sent */
        }
        c->pipe_started = true;
        const char *sev = PQresultErrorField(r, PG_DIAG_SEVERITY_NONLOCALIZED);
        if (sev && (!strcmp(sev, "FATAL") || !strcmp(sev, "PANIC"))) {
            /* The server ends the session (the next read meets its end): everything in flight
             * is lost, as when the connection drops. */
            dbconn_msg(err, errlen, "connection lost", PQresultErrorMessage(r));
            PQclear(r);
            return -ECONNRESET;
        }
        if ((st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK) && !a->keep && a->rc == 0) {
            a->keep = r;
            continue;
        }
        if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK && a->rc == 0) {
            const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
            if (st == PGRES_PIPELINE_ABORTED) {
                dbconn_msg(a->msg, sizeof(a->msg), "query not run",
                           "aborted: an earlier statement of its batch failed");
                a->rc = -EAGAIN;
            } else {
                dbconn_msg(a->msg, sizeof(a->msg), "query failed", PQresultErrorMessage(r));
                a->rc = (state && !strcmp(state, DBCONN_SQLSTATE_CANCELED)) ? -ETIMEDOUT : -EIO;
            }
        }
        PQclear(r);
    }
    return -ENODATA;
}

int dbconn_pipe_exit(struct dbconn *c)
{
    return c->pipe_pending == 0 && c->pipe_syncs == 0 && PQexitPipelineMode(c->pg) ? 0 : -EBUSY;
}

/* ---- cancel ------------------------------------------------------------------------------ */

/* One cancel request, shared by its sender thread and the holder waiting for it. */
struct dbconn_sender {
    PGcancel *cancel;   /* owned: this request's own copy of the handle */
    pthread_mutex_t mu; /* guards done, sent, refs */
    pthread_cond_t cv;  /* signalled when done */
    bool done, sent;    /* PQcancel returned; and whether the server took the request */
    int refs;           /* the sender and the holder; the last to let go frees */
};

static void dbconn_sender_unref(struct dbconn_sender *s)
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
static void *dbconn_sender_main(void *arg)
{
    struct dbconn_sender *s = arg;
    char buf[256];
    bool sent = PQcancel(s->cancel, buf, (int)sizeof(buf)) == 1;
    pthread_mutex_lock(&s->mu);
    s->done = true;
    s->sent = sent;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
    dbconn_sender_unref(s);
    atomic_fetch_sub(&dbconn_senders, 1); /* last */
    return NULL;
}

/* Ask the server to cancel c's running statement; wait for the request to be delivered until
 * deadline_us at most. 0 when it was, -ECONNRESET when it could not be, -ETIMEDOUT when it was
 * not done in time, -EAGAIN when DBCONN_CANCEL_SENDERS are in flight already. */
static int dbconn_send_cancel(struct dbconn *c, int64_t deadline_us)
{
    if (atomic_fetch_add(&dbconn_senders, 1) >= DBCONN_CANCEL_SENDERS) {
        atomic_fetch_sub(&dbconn_senders, 1);
        return -EAGAIN;
    }
    struct dbconn_sender *s = xcalloc(1, sizeof(*s));
    s->cancel = PQgetCancel(c->pg);
    s->refs = 2;
    pthread_mutex_init(&s->mu, NULL);
    mclock_cond_init(&s->cv);
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, DBCONN_SENDER_STACK);
    pthread_t tid;
    int started = s->cancel ? pthread_create(&tid, &attr, dbconn_sender_main, s) : EINVAL;
    pthread_attr_destroy(&attr);
    if (started != 0) {
        atomic_fetch_sub(&dbconn_senders, 1);
        s->refs = 1;
        dbconn_sender_unref(s);
        return -ECONNRESET;
    }
    c->cancels++;
    struct timespec until = mclock_timespec(deadline_us);
    pthread_mutex_lock(&s->mu);
    while (!s->done && pthread_cond_timedwait(&s->cv, &s->mu, &until) != ETIMEDOUT)
        ;
    int rc = !s->done ? -ETIMEDOUT : s->sent ? 0 : -ECONNRESET;
    pthread_mutex_unlock(&s->mu);
    dbconn_sender_unref(s);
    return rc;
}

/* dbconn_cancel's end in pipeline mode: read every statement in flight to its end. The oldest
 * statement still pending runs when its outcome is not there to read; it gets one cancel,
 * unless an earlier statement of its batch failed (then the server runs nothing more of that
 * batch: its statements end "aborted" without one), and another each time it is still
 * running after a wait that doubles from DBCONN_RECANCEL_FIRST_MS (a cancel that reached the
 * backend between two statements was lost). */
static int dbconn_pipe_drain(struct dbconn *c, int64_t deadline_us)
{
    unsigned cancelled = c->pipe_pending; /* the statement the last cancel was for, by the
                                             count of statements pending when it was sent */
    int64_t backoff = DBCONN_RECANCEL_FIRST_MS * 1000, again = mclock_now_us() + backoff;
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
                backoff = DBCONN_RECANCEL_FIRST_MS * 1000;
            else
                backoff *= 2;
            cancelled = c->pipe_pending;
            again = now + backoff;
            if (dbconn_send_cancel(c, deadline_us))
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

int dbconn_cancel(struct dbconn *c, int64_t deadline_us)
{
    /* Statements queued and not yet written go out first (with a Sync): the cancel then finds
     * the first of the lane's statements running, and the re-cancels the rest. */
    if (PQpipelineStatus(c->pg) != PQ_PIPELINE_OFF && c->pipe_unsynced &&
        dbconn_pipe_sync(c, NULL, 0))
        return -ECONNRESET;
    if (dbconn_send_cancel(c, deadline_us))
        return -ECONNRESET;
    if (PQpipelineStatus(c->pg) != PQ_PIPELINE_OFF) {
        if (dbconn_pipe_drain(c, deadline_us))
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

bool dbconn_is_dead(struct dbconn *c)
{
    if (PQstatus(c->pg) != CONNECTION_OK)
        return true;
    /* An idle connection has nothing to read unless the server closed or killed it. */
    struct pollfd pfd = {.fd = PQsocket(c->pg), .events = POLLIN};
    if (pfd.fd < 0)
        return true;
    return poll(&pfd, 1, 0) != 0;
}

const char *dbconn_sqlstate(const PGresult *res)
{
    const char *s = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    return s ? s : "";
}

void dbconn_close(struct dbconn *c)
{
    if (!c)
        return;
    PQclear(c->acc.keep);
    if (c->pg)
        PQfinish(c->pg);
    free(c);
}
