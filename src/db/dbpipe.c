/*
 * dbpipe: statements pipelined on one connection (see dbpipe.h).
 *
 * A pipe reads its socket whenever it is readable, and completes the oldest statement with
 * each outcome it reads (dbconn_pipe_next). When its last statement and its batch's end are
 * read (together, nearly always) the connection goes back, before that last statement's
 * callback runs: the owner's next statement may want it. A pipe with nothing in flight that
 * still waits for its batch's end waits DBPIPE_END_GRACE_US at most, then is closed.
 *
 * Deadlines: each statement keeps its own, on the loop's timer. When one passes, the pipe ends:
 * its connection goes back to be cancelled (every statement of the pipe is read to its end
 * there), the statement completes -ETIMEDOUT and the others -ECANCELED, oldest first. A lost
 * connection completes every statement -ECONNRESET, oldest first.
 */
#include "dbpipe.h"
#include "compiler.h"
#include "log.h"
#include "mclock.h"
#include "xalloc.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DBPIPE_END_GRACE_US 1000000 /* a batch's end read after its last statement's, at most */

struct dbpipe {
    struct dbconn *conn; /* the owner's, held until ops->release */
    const struct dbpipe_ops *ops;
    void *ctx;                       /* ops' */
    const void *key;                 /* who may join (dbpipe_find) */
    char label[48];                  /* for logs (a copy) */
    struct evloop_thread *loop;      /* the loop it is on */
    struct dbpipe_stmt *head, *tail; /* statements in flight, oldest first */
    size_t depth;
    bool broken;                /* a send failed: the pipe fails at the turn's end */
    struct evloop_watch watch;  /* the connection's socket */
    struct dbpipe *next, *prev; /* the loop's pipes */
};

/* A loop's pipes, and the end of the turn's flush (in the loop's storage). */
struct dbpipe_loop {
    struct dbpipe *pipes;
    struct evloop_task flush; /* dbpipe_flush */
    bool flush_due;
    struct evloop_thread *loop;
};

static atomic_size_t dbpipe_slot;

static struct dbpipe_loop *dbpipe_loop_of(struct evloop_thread *loop)
{
    void **slot = evloop_storage(loop, &dbpipe_slot, free);
    if (!*slot) {
        struct dbpipe_loop *pl = xcalloc(1, sizeof(*pl));
        pl->loop = loop;
        *slot = pl;
    }
    return *slot;
}

/* Take p off its loop: nothing joins it, its socket is not watched. Its statements stay. */
static void dbpipe_unlink(struct dbpipe *p)
{
    struct dbpipe_loop *pl = dbpipe_loop_of(p->loop);
    evloop_unwatch(&p->watch);
    if (p->prev)
        p->prev->next = p->next;
    else
        pl->pipes = p->next;
    if (p->next)
        p->next->prev = p->prev;
    p->next = p->prev = NULL;
}

/* p's statements, taken off it (their timers disarmed), oldest first. */
static struct dbpipe_stmt *dbpipe_take_all(struct dbpipe *p)
{
    struct dbpipe_stmt *list = p->head;
    for (struct dbpipe_stmt *s = list; s; s = s->next) {
        evloop_unwatch(&s->timer);
        s->pipe = NULL;
    }
    p->head = p->tail = NULL;
    p->depth = 0;
    return list;
}

/* End p: off its loop, its connection back to the owner, freed. Its statements (taken off it
 * by the caller) are not completed here. */
static void dbpipe_end(struct dbpipe *p, enum dbpipe_end how)
{
    dbpipe_unlink(p);
    p->ops->release(p->ctx, p->conn, how);
    free(p);
}

/* Complete every statement of list with rc, oldest first (first, if given, with its own). */
static void dbpipe_complete_all(struct dbpipe_stmt *list, int rc, const char *err,
                                const struct dbpipe_stmt *first, int first_rc,
                                const char *first_err)
{
    while (list) {
        struct dbpipe_stmt *next = list->next;
        list->next = NULL;
        if (list == first)
            list->done(list, NULL, first_rc, first_err);
        else
            list->done(list, NULL, rc, err);
        list = next;
    }
}

/* p's connection is lost (or the loop stops): every statement ends with rc, oldest first. */
static void dbpipe_fail(struct dbpipe *p, int rc, const char *err)
{
    struct dbpipe_stmt *list = dbpipe_take_all(p);
    dbpipe_end(p, rc == -ESHUTDOWN ? DBPIPE_END_STOP : DBPIPE_END_LOST);
    dbpipe_complete_all(list, rc, err, NULL, 0, NULL);
}

/* Every statement and Sync of p is read: its connection goes back. */
static void dbpipe_close(struct dbpipe *p)
{
    dbpipe_end(p, dbconn_pipe_exit(p->conn) ? DBPIPE_END_CLOSE : DBPIPE_END_KEEP);
}

/* The oldest statement's outcome was read: take it off p. */
static struct dbpipe_stmt *dbpipe_pop(struct dbpipe *p)
{
    struct dbpipe_stmt *s = p->head;
    p->head = s->next;
    if (!p->head)
        p->tail = NULL;
    p->depth--;
    s->next = NULL;
    s->pipe = NULL;
    evloop_unwatch(&s->timer);
    return s;
}

/* The last statement's outcome was read: read its batch's end too if it is there (the
 * connection then goes back before the statement completes). Whether p lives on. */
static bool dbpipe_last(struct dbpipe *p)
{
    PGresult *none = NULL;
    char why[300] = "";
    int end = dbconn_pipe_next(p->conn, &none, why, sizeof(why));
    PQclear(none);
    if (end == -ENODATA)
        dbpipe_close(p);
    else if (end != -EINPROGRESS)
        dbpipe_fail(p, -ECONNRESET, end == -ECONNRESET ? why : "out of step");
    return end == -EINPROGRESS;
}

/* Read what arrived: complete the statements it ends. Whether p lives on. */
static bool dbpipe_read(struct dbpipe *p)
{
    char err[300] = "";
    if (dbconn_pipe_consume(p->conn, err, sizeof(err))) {
        dbpipe_fail(p, -ECONNRESET, err);
        return false;
    }
    for (;;) {
        PGresult *res = NULL;
        err[0] = '\0';
        int rc = dbconn_pipe_next(p->conn, &res, err, sizeof(err));
        if (rc == -EINPROGRESS)
            return true;
        if (rc == -ENODATA && !p->head) {
            dbpipe_close(p);
            return false;
        }
        if (rc == -ECONNRESET || rc == -ENODATA || rc == -EPROTO || !p->head) {
            PQclear(res);
            dbpipe_fail(p, -ECONNRESET, rc == -ECONNRESET ? err : "out of step");
            return false;
        }
        struct dbpipe_stmt *s = dbpipe_pop(p);
        bool lives = p->head || dbpipe_last(p);
        s->done(s, res, rc, err); /* may push on p, when it lives */
        if (!lives)
            return false;
    }
}

/* Loop: p's socket is readable, its batch's end did not come in time, or the loop stops. */
static void dbpipe_fire(struct evloop_watch *w, enum evloop_event ev)
{
    struct dbpipe *p = container_of(w, struct dbpipe, watch);
    if (ev == EVLOOP_TIMEOUT) {
        /* Only a pipe with nothing in flight has a deadline (armed below): nobody waits. */
        log_warn("db_pipeline", "%s: the end of a batch did not arrive; closing its connection",
                 p->label);
        dbpipe_end(p, DBPIPE_END_CLOSE);
        return;
    }
    if (ev != EVLOOP_READY) {
        dbpipe_fail(p, -ESHUTDOWN, "shutting down");
        return;
    }
    if (!dbpipe_read(p))
        return;
    /* Statements in flight wait as long as they may (each has its own timer); a batch's end
     * alone waits DBPIPE_END_GRACE_US at most. */
    int64_t until = p->head ? INT64_MAX : mclock_now_us() + DBPIPE_END_GRACE_US;
    int wr = evloop_watch(p->loop, &p->watch, &p->conn->watched, until);
    if (wr) {
        char err[300];
        snprintf(err, sizeof(err), "cannot watch the connection: %s", strerror(-wr));
        dbpipe_fail(p, -ECONNRESET, err);
    }
}

/* Loop: statement s's deadline passed (or the loop stops). */
static void dbpipe_expired(struct evloop_watch *w, enum evloop_event ev)
{
    struct dbpipe_stmt *s = container_of(w, struct dbpipe_stmt, timer);
    struct dbpipe *p = s->pipe;
    if (ev != EVLOOP_TIMEOUT) {
        dbpipe_fail(p, -ESHUTDOWN, "shutting down");
        return;
    }
    struct dbpipe_stmt *list = dbpipe_take_all(p);
    dbpipe_end(p, DBPIPE_END_CANCEL);
    dbpipe_complete_all(list, -ECANCELED, "another statement of its pipeline timed out", s,
                        -ETIMEDOUT, "query timed out");
}

/* Loop, at the end of a turn: the statements pushed on each pipe leave as one batch. */
static void dbpipe_flush(struct evloop_task *task)
{
    struct dbpipe_loop *pl = container_of(task, struct dbpipe_loop, flush);
    pl->flush_due = false;
    for (struct dbpipe *p = pl->pipes, *next; p; p = next) {
        next = p->next;
        char err[300] = "send failed";
        if (p->broken || (p->conn->pipe_unsynced && dbconn_pipe_sync(p->conn, err, sizeof(err))))
            dbpipe_fail(p, -ECONNRESET, err);
    }
}

int dbpipe_open(struct evloop_thread *loop, struct dbconn *conn, const struct dbpipe_ops *ops,
                void *ctx, const void *key, const char *label, struct dbpipe **out)
{
    struct dbpipe *p = xcalloc(1, sizeof(*p));
    *p = (struct dbpipe){.conn = conn, .ops = ops, .ctx = ctx, .key = key, .loop = loop};
    snprintf(p->label, sizeof(p->label), "%s", label);
    p->watch.fire = dbpipe_fire;
    p->watch.fd = PQsocket(conn->pg);
    int rc = dbconn_pipe_enter(conn);
    if (rc == 0)
        rc = evloop_watch(loop, &p->watch, &conn->watched, INT64_MAX);
    if (rc) {
        free(p);
        return rc;
    }
    struct dbpipe_loop *pl = dbpipe_loop_of(loop);
    p->next = pl->pipes;
    if (pl->pipes)
        pl->pipes->prev = p;
    pl->pipes = p;
    *out = p;
    return 0;
}

void dbpipe_push(struct dbpipe *p, struct dbpipe_stmt *s, const char *name, int nparams,
                 const char *const *values)
{
    struct dbpipe_loop *pl = dbpipe_loop_of(p->loop);
    s->pipe = p;
    s->next = NULL;
    if (p->tail)
        p->tail->next = s;
    else
        p->head = s;
    p->tail = s;
    p->depth++;
    s->sent_us = mclock_now_us();
    s->timer.fire = dbpipe_expired;
    s->timer.fd = -1;
    if (evloop_watch(p->loop, &s->timer, NULL, s->deadline_us) != 0)
        abort(); /* a timer alone makes no system call and cannot fail */
    /* Queued: the turn's statements leave in one write at its end. A failed send fails the
     * pipe there too (here the caller may be reading the pipe). */
    if (!pl->flush_due) {
        pl->flush_due = true;
        pl->flush.fn = dbpipe_flush;
        evloop_defer(p->loop, &pl->flush);
    }
    char err[300] = "";
    if (dbconn_pipe_send(p->conn, name, nparams, values, err, sizeof(err))) {
        log_warn("db_pipeline", "%s: %s", p->label, err);
        p->broken = true;
    }
}

struct dbpipe *dbpipe_find(struct evloop_thread *loop, const void *ctx, const void *key,
                           size_t max_depth, int64_t max_age_us, int64_t now)
{
    for (struct dbpipe *p = dbpipe_loop_of(loop)->pipes; p; p = p->next)
        if (p->ctx == ctx && p->key == key && p->head && !p->broken && p->depth < max_depth &&
            now - p->head->sent_us < max_age_us)
            return p;
    return NULL;
}

size_t dbpipe_depth(const struct dbpipe *p)
{
    return p->depth;
}
