/*
 * datapath: /api/data's statement (see datapath.h): take a connection of the tier's pool, run
 * the request's prepared statement(s) with the call timeout as deadline, and end the attempt
 * (datastmt_settle: the connection back, the breaker's verdict, the reply); then resume the
 * request. Two ways, one set of rules: on its event thread without blocking (the loop's
 * watches and timer; a read may join its tenant's lane), or on a worker thread of its tier,
 * blocking (datapath_run), for what must block.
 *
 * Lanes: a lane is a dbpipe (dbpipe.h) on a connection of the tier's pool, held by one event
 * loop for one tenant: a read of that tenant on that loop joins it, its statement sent behind
 * the ones in flight, instead of taking a connection of its own. PostgreSQL then runs a batch
 * per wake-up on one backend instead of one statement per backend (measured: see
 * bench/optimisations.md). A lane is joined only by its own tenant, so no tenant ever waits
 * behind another's statement. The statements of a batch share an implicit transaction (reads
 * only: each still sees its own snapshot); when one fails, the rest of its batch is not run and
 * takes a connection again (datapath_lane_done), so every request still gets its own
 * statement's outcome. A forced error never joins a lane. Limits: DB_PIPELINE_DEPTH statements
 * in flight (1: no lanes), and a lane whose oldest statement was sent longer than
 * DB_PIPELINE_JOIN_MS ago is not joined (a slow statement of the tenant does not hold its quick
 * ones back for long). When a statement passes its deadline its request is answered 504, the
 * lane ends, its connection is cancelled on a pool thread, and the lane's other requests take
 * a connection again, within their own deadlines. A lost connection fails every statement of
 * the lane: each read is retried as any other (DB_READ_RETRIES).
 */
#include "datapath.h"
#include "apierr.h"
#include "breaker.h"
#include "datastmt.h"
#include "dbpipe.h"
#include "dbpool.h"
#include "evloop.h"
#include "log.h"
#include "mclock.h"
#include "request.h"
#include "tierset.h"

#include <errno.h>
#include <inttypes.h>
#include <libpq-fe.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A write whose payload is larger than this is sent by a worker thread: libpq sends a statement
 * whole before it returns, and a large one could wait on a full socket buffer. */
#define DATAPATH_LOOP_BODY_MAX (64 * 1024)

/* When a lane's statement cannot be run again (its batch failed, or another's deadline ended
 * the lane), its request is answered 504 if its deadline is this close: a new connection could
 * not serve it in time. */
#define DATAPATH_LANE_EXPIRE_US 5000

#define DATAPATH_OF(ptr, field)                                                                    \
    ((struct request *)(void *)((char *)(ptr)-offsetof(struct request, field)))

/* ---- the worker-thread way ------------------------------------------------------------- */

/* Run the request's statement(s) on conn (worker thread). On 0, *res holds the row to send. */
static int datapath_exec(struct request *r, struct dbconn *conn, int64_t deadline, PGresult **res,
                         char *err, size_t errlen)
{
    if (r->args.delay_ms > 0) {
        char b[32];
        snprintf(b, sizeof(b), "%" PRId64, r->args.delay_ms);
        const char *v[] = {b};
        int rc = dbconn_exec(conn, DATASTMT_SLEEP, 1, v, deadline, res, err, errlen);
        PQclear(*res);
        *res = NULL;
        if (rc)
            return rc;
    }
    struct datastmt st;
    datastmt_pick(r, &st);
    return dbconn_exec(conn, st.name, st.n, st.v, deadline, res, err, errlen);
}

/* Worker thread: settle, resume, then cancel a timed-out statement (it may block). */
static void datapath_leave(struct request *r, struct dbconn *conn, PGresult *res,
                           struct datastmt_end end, const char *err)
{
    struct dbpool *db = r->tier->db;
    datastmt_settle(r, conn, res, end, err);
    request_resume(r);
    if (end.conn == DATASTMT_CONN_CANCEL)
        dbpool_release(db, conn, dbconn_cancel(conn, mclock_now_us() + DATASTMT_CANCEL_GRACE_US));
}

static void datapath_run(struct fairq_item *item, void *ctx)
{
    const struct datapath_cfg *cfg = ctx;
    struct request *r = DATAPATH_OF(item, item);
    struct tier_rt *t = r->tier;
    const struct tier_cfg *c = tierset_cfg(t);
    int64_t start = item->begun_us; /* an item begun on an event thread held its slot since */
    r->queue_us = start - item->enqueued_us;
    int64_t deadline = start + c->breaker_timeout_ms * 1000;
    int64_t acquire_deadline = start + c->db_acquire_timeout_ms * 1000;
    if (acquire_deadline > deadline)
        acquire_deadline = deadline;
    int retries = r->method == METHOD_POST ? 0 : (int)(cfg->retry_reads - r->db_retries);

    char err[300] = "";
    struct dbconn *conn = NULL;
    PGresult *res = NULL;
    int rc;
    for (;;) {
        rc = dbpool_acquire(t->db, item->tenant, acquire_deadline, &conn, err, sizeof(err));
        if (rc)
            break;
        int64_t q0 = mclock_now_us();
        r->sent_us = q0; /* what it waited for the connection shows in the accounting */
        rc = datapath_exec(r, conn, deadline, &res, err, sizeof(err));
        r->query_us = mclock_now_us() - q0;
        /* A read that met a dead connection is retried once on a fresh one. */
        if (rc == -ECONNRESET && retries-- > 0) {
            datastmt_drop_dead(t->db, conn);
            conn = NULL;
            log_warn("db_retry", "tier %s: %s; retrying the read on a new connection", c->name,
                     err);
            continue;
        }
        break;
    }
    datapath_leave(r, conn, res, datastmt_classify(rc, conn != NULL), err);
}

/* Janitor (expired) or shutdown: the request never ran. */
static void datapath_drop(struct fairq_item *item, enum workpool_drop_reason why, void *ctx)
{
    (void)ctx;
    struct request *r = DATAPATH_OF(item, item);
    breaker_release(r->tier->breaker, r->permit);
    r->queue_us = mclock_now_us() - item->enqueued_us;
    if (why == WORKPOOL_EXPIRED)
        apierr_replyf(r, APIERR_QUEUE_TIMEOUT, "waited %" PRId64 " ms for a worker of tier %s",
                      r->queue_us / 1000, tierset_cfg(r->tier)->name);
    else
        apierr_reply(r, APIERR_SHUTTING_DOWN);
    request_resume(r);
}

/* ---- the event-thread way ------------------------------------------------------------ */

static void datapath_start(const struct datapath_cfg *cfg, struct request *r,
                           struct evloop_thread *loop);
static void datapath_acquire(struct request *r);

/* Work loop: a queued request that a freed slot let in (datapath_end_here). */
static void datapath_start_posted(struct evloop_task *task)
{
    struct request *r = DATAPATH_OF(task, task);
    datapath_start(r->work_ctx, r, evloop_current());
}

/* Event thread: r's attempt ended. Settle it, give its slot back (starting the request that
 * slot lets in), resume it, and cancel a timed-out statement on the pool's thread. */
static void datapath_end_here(struct request *r, PGresult *res, struct datastmt_end end,
                              const char *err)
{
    const struct datapath_cfg *cfg = r->work_ctx;
    struct tier_rt *t = r->tier;
    struct dbconn *conn = r->db;
    struct fairq_tenant *tenant = r->item.tenant;
    int64_t begun = r->item.begun_us;
    r->db = NULL;
    datastmt_settle(r, conn, res, end, err);
    request_resume(r); /* r is the HTTP thread's from here on */
    if (end.conn == DATASTMT_CONN_CANCEL)
        dbpool_cancel_release(t->db, conn, mclock_now_us() + DATASTMT_CANCEL_GRACE_US);
    struct evloop_thread *loop = evloop_current();
    struct fairq_item *next = workpool_end(t->pool, tenant, begun, loop != NULL);
    if (next) {
        /* Started from the loop's inbox, not from here: a request that ends at once (the
         * database refusing connects) would start the next one from inside its own end, and
         * a long queue would go as deep as it is long. */
        struct request *n = DATAPATH_OF(next, item);
        n->work_ctx = cfg;
        n->task.fn = datapath_start_posted;
        evloop_post(loop, &n->task);
    }
}

/* Whether r may be run again on a new connection when its connection turns out dead: a read
 * with retries left (DB_READ_RETRIES). */
static bool datapath_may_retry(const struct request *r)
{
    const struct datapath_cfg *cfg = r->work_ctx;
    return r->method != METHOD_POST && r->db_retries < cfg->retry_reads;
}

/* Work loop: a read met a dead connection (err); take a new one. */
static void datapath_retry(struct request *r, const char *err)
{
    log_warn("db_retry", "tier %s: %s; retrying the read on a new connection",
             tierset_cfg(r->tier)->name, err);
    r->db_retries++;
    datapath_acquire(r);
}

/* When r's call times out (the tier's call timeout from when it took its slot). */
static int64_t datapath_deadline(const struct request *r)
{
    return r->item.begun_us + tierset_cfg(r->tier)->breaker_timeout_ms * 1000;
}

/* Event thread: r's statement socket is readable, its deadline passed, or the loop stops. */
static void datapath_fire(struct evloop_watch *w, enum evloop_event ev)
{
    struct request *r = DATAPATH_OF(w, watch);
    struct tier_rt *t = r->tier;
    char err[300] = "";
    PGresult *res = NULL;
    int rc;
    if (ev == EVLOOP_READY) {
        rc = dbconn_read(r->db, &res, err, sizeof(err));
        if (rc == -EINPROGRESS) {
            rc = evloop_watch(evloop_current(), w, &r->db->watched, w->deadline_us);
            if (rc == 0)
                return;
            snprintf(err, sizeof(err), "connection lost: %s", strerror(-rc));
            rc = -ECONNRESET;
        }
    } else if (ev == EVLOOP_TIMEOUT) {
        rc = -ETIMEDOUT;
        snprintf(err, sizeof(err), "query timed out");
    } else {
        /* The HTTP threads stop: the statement ends with its connection. */
        r->query_us = mclock_now_us() - r->sent_us;
        struct datastmt_end end = datastmt_classify(-ESHUTDOWN, true);
        end.conn = DATASTMT_CONN_CLOSE;
        datapath_end_here(r, NULL, end, "shutting down");
        return;
    }
    r->query_us = mclock_now_us() - r->sent_us;
    /* A read that met a dead connection is retried on a fresh one. */
    if (rc == -ECONNRESET && datapath_may_retry(r)) {
        datastmt_drop_dead(t->db, r->db);
        r->db = NULL;
        datapath_retry(r, err);
        return;
    }
    datapath_end_here(r, res, datastmt_classify(rc, r->db != NULL), err);
}

/* ---- lanes: a tenant's reads pipelined on one connection (event threads) ------------------- */

/* Whether r's statement may go on a lane: a read (a write is never sent twice, and the lane's
 * failure retries its reads). */
static bool datapath_lane_fits(const struct request *r)
{
    const struct datapath_cfg *cfg = r->work_ctx;
    return r->method != METHOD_POST && !r->args.force_error && cfg->lane_depth > 1;
}

/* Work loop: a lane ended; its connection goes back to the tier's pool (ctx). */
static void datapath_lane_release(void *ctx, struct dbconn *conn, enum dbpipe_end how)
{
    struct tier_rt *t = ctx;
    switch (how) {
    case DBPIPE_END_KEEP:
        dbpool_release(t->db, conn, false);
        break;
    case DBPIPE_END_LOST:
        datastmt_drop_dead(t->db, conn);
        break;
    case DBPIPE_END_CANCEL:
        /* Cancelled on a pool thread: every statement of the lane is read to its end there. */
        dbpool_cancel_release(t->db, conn, mclock_now_us() + DATASTMT_CANCEL_GRACE_US);
        break;
    case DBPIPE_END_CLOSE:
    case DBPIPE_END_STOP:
        dbpool_release(t->db, conn, true);
        break;
    }
}

static const struct dbpipe_ops datapath_lane_ops = {.release = datapath_lane_release};

/* End request m of a lane with outcome rc; the lane keeps (or gave back) the connection. */
static void datapath_lane_answer(struct request *m, PGresult *res, int rc, const char *err)
{
    struct datastmt_end end = datastmt_classify(rc, true);
    end.conn = DATASTMT_CONN_NONE;
    m->query_us = mclock_now_us() - m->sent_us;
    datapath_end_here(m, res, end, err);
}

/* Work loop: the statement of m, a request on a lane, completed (dbpipe.h's outcomes). One that
 * was not run, or not read to its end, is sent again within its deadline; a read that met a
 * lost connection is retried as any other. */
static void datapath_lane_done(struct dbpipe_stmt *s, PGresult *res, int rc, const char *err)
{
    struct request *m = DATAPATH_OF(s, pipe_stmt);
    if (rc == -EAGAIN || rc == -ECANCELED) {
        if (datapath_deadline(m) <= mclock_now_us() + DATAPATH_LANE_EXPIRE_US)
            datapath_lane_answer(m, NULL, -ETIMEDOUT, "query timed out"); /* no time left */
        else
            datapath_acquire(m); /* a lane of its tenant, maybe the same, or a connection */
    } else if (rc == -ECONNRESET && datapath_may_retry(m)) {
        datapath_retry(m, err);
    } else {
        datapath_lane_answer(m, res, rc, err);
    }
}

/* Work loop: queue r's statement on lane p; r stays on it until its outcome is read. */
static void datapath_lane_push(struct dbpipe *p, struct request *r)
{
    struct datastmt st;
    datastmt_pick(r, &st);
    r->sent_us = mclock_now_us();
    r->pipe_stmt.done = datapath_lane_done;
    r->pipe_stmt.deadline_us = datapath_deadline(r);
    dbpipe_push(p, &r->pipe_stmt, st.name, st.n, st.v);
}

/* Work loop: open a lane on c, just taken for r, and send r's statement on it. */
static void datapath_lane_open(struct request *r, struct dbconn *c)
{
    struct tier_rt *t = r->tier;
    char label[48];
    snprintf(label, sizeof(label), "tier %s", t->name);
    struct dbpipe *p = NULL;
    int rc = dbpipe_open(r->work_loop, c, &datapath_lane_ops, t, r->item.tenant, label, &p);
    if (rc) {
        /* Nothing sent: this connection is closed (not the pool's others), r tries again. */
        char err[300];
        snprintf(err, sizeof(err), "cannot use the connection: %s", strerror(-rc));
        dbpool_release(t->db, c, true);
        if (datapath_may_retry(r)) {
            r->db_retries++;
            datapath_acquire(r);
        } else {
            datapath_lane_answer(r, NULL, -ECONNRESET, err);
        }
        return;
    }
    datapath_lane_push(p, r);
}

/* ---- a connection for a request ------------------------------------------------------- */

/* Work loop: r has its connection (or the answer that it gets none): send its statement and
 * watch its socket from this loop. */
static void datapath_connected(struct request *r, struct dbconn *c, int rc, const char *why)
{
    struct tier_rt *t = r->tier;
    if (rc) {
        r->query_us = -1;
        datapath_end_here(r, NULL, datastmt_classify(rc, false), why);
        return;
    }
    if (datapath_lane_fits(r)) {
        datapath_lane_open(r, c);
        return;
    }
    r->db = c;
    struct datastmt st;
    datastmt_pick(r, &st);
    char err[300];
    r->sent_us = mclock_now_us();
    rc = dbconn_send(c, st.name, st.n, st.v, err, sizeof(err));
    if (rc == 0) {
        r->watch.fire = datapath_fire;
        r->watch.fd = PQsocket(c->pg);
        rc = evloop_watch(r->work_loop, &r->watch, &c->watched, datapath_deadline(r));
        if (rc == 0)
            return;
        /* Sent, but its answer cannot be awaited: it may run, so it is not run again. */
        snprintf(err, sizeof(err), "cannot watch the connection: %s", strerror(-rc));
        datapath_end_here(r, NULL, datastmt_classify(-ECONNRESET, true), err);
        return;
    }
    /* Nothing reached the database. A read retries here on a new connection (one given without
     * its liveness check may be dead: dbpool_wait.trust_recent); anything else makes its
     * first attempt on a worker, on a connection checked as it is taken. */
    if (datapath_may_retry(r)) {
        datastmt_drop_dead(t->db, c);
        r->db = NULL;
        datapath_retry(r, err);
        return;
    }
    dbpool_release(t->db, c, true);
    r->db = NULL;
    if (workpool_hand(t->pool, &r->item) == 0)
        return;
    datapath_end_here(r, NULL, datastmt_classify(-ESHUTDOWN, false), "shutting down");
}

/* Work loop: the pool's answer, posted there by whichever thread gave it. */
static void datapath_answered(struct evloop_task *task)
{
    struct request *r = DATAPATH_OF(task, task);
    evloop_unwatch(&r->watch); /* the acquire deadline's timer, unless it fired already */
    datapath_connected(r, r->dbwait.granted, r->dbwait.granted ? 0 : r->dbwait.rc, r->dbwait.err);
}

/* Any thread: the pool answered r's wait. */
static void datapath_pool_done(struct dbpool_wait *w, struct dbconn *c, int rc, const char *err)
{
    (void)c;
    (void)rc;
    (void)err; /* all kept in w, read by datapath_answered */
    struct request *r = DATAPATH_OF(w, dbwait);
    r->task.fn = datapath_answered;
    if (evloop_current() == r->work_loop)
        datapath_answered(&r->task);
    else
        evloop_post(r->work_loop, &r->task);
}

/* Work loop: r's wait for a connection passed its deadline, or the loop stops. */
static void datapath_wait_fire(struct evloop_watch *w, enum evloop_event ev)
{
    struct request *r = DATAPATH_OF(w, watch);
    struct tier_rt *t = r->tier;
    int rc;
    while ((rc = dbpool_abandon(t->db, &r->dbwait)) == -EINPROGRESS) {
        /* Only a running connect can serve it: its outcome is the answer. */
        if (ev == EVLOOP_TIMEOUT && evloop_watch(r->work_loop, w, NULL, r->dbwait.deadline_us) == 0)
            return;
    }
    if (rc == -EALREADY)
        return; /* the answer is on its way here (datapath_answered) */
    datapath_connected(r, NULL, ev == EVLOOP_STOP ? -ESHUTDOWN : -ETIMEDOUT,
                       ev == EVLOOP_STOP ? "shutting down"
                                         : "no connection free within the acquire timeout");
}

/*
 * Event thread: r holds a slot of its tier (workpool_begin, or popped by workpool_end). Take a
 * connection without blocking (waiting for one, bounded by the acquire timeout, on this loop's
 * timer), send its statement and watch the socket from this loop. A request that asked for a
 * delay (two statements, the first a sleep) or writes a large payload runs on a worker thread
 * with the slot it holds.
 */
static void datapath_start(const struct datapath_cfg *cfg, struct request *r,
                           struct evloop_thread *loop)
{
    struct tier_rt *t = r->tier;
    r->work_ctx = cfg;
    r->work_loop = loop;
    r->queue_us = r->item.begun_us - r->item.enqueued_us;
    if (r->args.delay_ms > 0 ||
        (r->args.payload && strlen(r->args.payload) > DATAPATH_LOOP_BODY_MAX)) {
        if (workpool_hand(t->pool, &r->item) == 0)
            return;
        datapath_end_here(r, NULL, datastmt_classify(-ESHUTDOWN, false), "shutting down");
        return;
    }
    datapath_acquire(r);
}

/* Work loop: take a connection for r, or wait for one on this loop's timer. */
static void datapath_acquire(struct request *r)
{
    const struct datapath_cfg *cfg = r->work_ctx;
    struct tier_rt *t = r->tier;
    const struct tier_cfg *c = tierset_cfg(t);
    /* From now: a read retried, or moved off a lane that timed out, late in its call has the
     * acquire timeout again, within its call's deadline. */
    int64_t deadline = datapath_deadline(r);
    int64_t now = mclock_now_us();
    int64_t acquire_deadline = now + c->db_acquire_timeout_ms * 1000;
    if (acquire_deadline > deadline)
        acquire_deadline = deadline;
    /* A retried read does not join a lane: that connection may have died with the other. */
    struct dbpipe *lane = datapath_lane_fits(r) && r->db_retries == 0
                              ? dbpipe_find(r->work_loop, t, r->item.tenant,
                                            (size_t)cfg->lane_depth, cfg->lane_join_us, now)
                              : NULL;
    if (lane) {
        dbpool_count_pipelined(t->db);
        datapath_lane_push(lane, r);
        return;
    }
    /* The timer first: the answer may come before dbpool_acquire_async returns. */
    r->watch.fire = datapath_wait_fire;
    r->watch.fd = -1;
    if (evloop_watch(r->work_loop, &r->watch, NULL, acquire_deadline) != 0)
        abort(); /* a timer alone makes no system call and cannot fail */
    r->dbwait.owner = r->item.tenant;
    r->dbwait.deadline_us = acquire_deadline;
    r->dbwait.trust_recent = datapath_may_retry(r);
    r->dbwait.done = datapath_pool_done;
    struct dbconn *conn = NULL;
    char err[256] = "";
    int rc = dbpool_acquire_async(t->db, &r->dbwait, &conn, err, sizeof(err));
    if (rc == -EINPROGRESS)
        return;
    evloop_unwatch(&r->watch);
    datapath_connected(r, conn, rc, err);
}

int datapath_submit(const struct datapath_cfg *cfg, struct request *r)
{
    struct workpool *wp = r->tier->pool;
    struct evloop_thread *loop = evloop_current();
    if (loop && r->args.delay_ms == 0) {
        int rc = workpool_begin(wp, r->tenant, &r->item);
        if (rc == 0) {
            datapath_start(cfg, r, loop);
            return 0;
        }
        if (rc != -EBUSY)
            return rc;
    }
    return workpool_submit(wp, r->tenant, &r->item);
}

const struct workpool_ops datapath_ops_template = {.run = datapath_run, .drop = datapath_drop};
