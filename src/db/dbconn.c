/*
 * dbconn: libpq's asynchronous API under poll() deadlines (see dbconn.h).
 *
 * Connections are opened with PQconnectStartParams/PQconnectPoll, statements sent with
 * PQsendQueryPrepared (or PQsendQueryParams) and read with PQconsumeInput/PQgetResult, so no
 * libpq call can block past a deadline except DNS resolution at open (and a send that finds the
 * kernel's send buffer full: statements are far smaller). TCP keepalives and tcp_user_timeout
 * make a dead peer visible to the kernel even when nobody is waiting on the socket.
 *
 * DESIGN: a connection is its holder's alone. Cancelling a statement is dbcancel.c's.
 */
#include "dbconn.h"
#include "mclock.h"
#include "xalloc.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DBCONN_SQLSTATE_CANCELED "57014" /* query_canceled: statement_timeout or cancel */

/* Wait until c's socket is ready for events, deadline_us passes (-ETIMEDOUT) or stop_fd
 * (-1: none) is readable (-ECANCELED). */
int dbconn_wait(PGconn *pg, int stop_fd, short events, int64_t deadline_us)
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
int dbconn_collect(struct dbconn *c, int64_t deadline_us, PGresult **res, char *err, size_t errlen)
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
