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
#include "compiler.h"
#include "apierr.h"
#include "breaker.h"
#include "datareq.h"
#include "datastmt.h"
#include "dbcancel.h"
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

#define DATAPATH_OF(ptr, field) container_of(ptr, struct datareq, field) /* ptr's datareq */

/* ---- the worker-thread way ------------------------------------------------------------- */

/* Run the request's statement(s) on conn (worker thread). On 0, *res holds the row to send. */
static int datapath_exec(struct datareq *q, struct dbconn *conn, int64_t deadline, PGresult **res,
                         char *err, size_t errlen)
{
    if (q->args.delay_ms > 0) {
        char b[32];
        snprintf(b, sizeof(b), "%" PRId64, q->args.delay_ms);
        const char *v[] = {b};
        int rc = dbconn_exec(conn, DATASTMT_SLEEP, 1, v, deadline, res, err, errlen);
        PQclear(*res);
        *res = NULL;
        if (rc)
            return rc;
    }
    struct datastmt st;
    datastmt_pick(q, &st);
    return dbconn_exec(conn, st.name, st.n, st.v, deadline, res, err, errlen);
}

/* Worker thread: settle, resume, then cancel a timed-out statement (it may block). */
static void datapath_leave(struct datareq *q, struct dbconn *conn, PGresult *res,
                           struct datastmt_end end, const char *err)
{
    struct dbpool *db = q->tier->db;
    datastmt_settle(q, conn, res, end, err);
    request_resume(q->r);
    if (end.conn == DATASTMT_CONN_CANCEL)
        dbpool_release(db, conn, dbcancel_run(conn, mclock_now_us() + DATASTMT_CANCEL_GRACE_US));
}

static void datapath_run(struct fairq_item *item, void *ctx)
{
    const struct datapath_cfg *cfg = ctx;
    struct datareq *q = DATAPATH_OF(item, item);
    struct tier_rt *t = q->tier;
    const struct tier_cfg *c = tierset_cfg(t);
    int64_t start = item->begun_us; /* an item begun on an event thread held its slot since */
    q->r->queue_us = start - item->enqueued_us;
    int64_t deadline = start + c->breaker_timeout_ms * 1000;
    int64_t acquire_deadline = start + c->db_acquire_timeout_ms * 1000;
    if (acquire_deadline > deadline)
        acquire_deadline = deadline;
    int retries = q->r->method == METHOD_POST ? 0 : (int)(cfg->retry_reads - q->db_retries);

    char err[300] = "";
    struct dbconn *conn = NULL;
    PGresult *res = NULL;
    int rc;
    for (;;) {
        rc = dbpool_acquire(t->db, item->tenant, acquire_deadline, &conn, err, sizeof(err));
        if (rc)
            break;
        int64_t q0 = mclock_now_us();
        q->sent_us = q0; /* what it waited for the connection shows in the accounting */
        rc = datapath_exec(q, conn, deadline, &res, err, sizeof(err));
        q->r->query_us = mclock_now_us() - q0;
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
    datapath_leave(q, conn, res, datastmt_classify(rc, conn != NULL), err);
}

/* Janitor (expired) or shutdown: the request never ran. */
static void datapath_drop(struct fairq_item *item, enum workpool_drop_reason why, void *ctx)
{
    (void)ctx;
    struct datareq *q = DATAPATH_OF(item, item);
    breaker_release(q->tier->breaker, q->permit);
    q->r->queue_us = mclock_now_us() - item->enqueued_us;
    if (why == WORKPOOL_EXPIRED)
        apierr_replyf(q->r, APIERR_QUEUE_TIMEOUT, "waited %" PRId64 " ms for a worker of tier %s",
                      q->r->queue_us / 1000, tierset_cfg(q->tier)->name);
    else
        apierr_reply(q->r, APIERR_SHUTTING_DOWN);
    request_resume(q->r);
}

/* ---- the event-thread way ------------------------------------------------------------ */

static void datapath_start(const struct datapath_cfg *cfg, struct datareq *q,
                           struct evloop_thread *loop);
static void datapath_acquire(struct datareq *q);

/* Work loop: a queued request that a freed slot let in (datapath_end_here). */
static void datapath_start_posted(struct evloop_task *task)
{
    struct datareq *q = DATAPATH_OF(task, task);
    datapath_start(q->cfg, q, evloop_current());
}

/* Event thread: r's attempt ended. Settle it, give its slot back (starting the request that
 * slot lets in), resume it, and cancel a timed-out statement on the pool's thread. */
static void datapath_end_here(struct datareq *q, PGresult *res, struct datastmt_end end,
                              const char *err)
{
    const struct datapath_cfg *cfg = q->cfg;
    struct tier_rt *t = q->tier;
    struct dbconn *conn = q->db;
    struct fairq_tenant *tenant = q->item.tenant;
    int64_t begun = q->item.begun_us;
    q->db = NULL;
    datastmt_settle(q, conn, res, end, err);
    request_resume(q->r); /* r is the HTTP thread's from here on */
    if (end.conn == DATASTMT_CONN_CANCEL)
        dbpool_cancel_release(t->db, conn, mclock_now_us() + DATASTMT_CANCEL_GRACE_US);
    struct evloop_thread *loop = evloop_current();
    struct fairq_item *next = workpool_end(t->pool, tenant, begun, loop != NULL);
    if (next) {
        /* Started from its own HTTP thread's inbox: not from here, as a request that ends at
         * once (the database refusing connects) would start the next one from inside its own
         * end, and a long queue would go as deep as it is long; and not on this loop, as the
         * loop that ends requests would take on every queued one, its own and the other
         * threads' (in a queued tier, measured: one event thread at 26 % of the profile, the
         * other at 6 %), while on its own thread the request's reply needs no wake-up. */
        struct datareq *n = DATAPATH_OF(next, item);
        n->cfg = cfg;
        n->task.fn = datapath_start_posted;
        evloop_post(n->r->loop ? n->r->loop : loop, &n->task);
    }
}

/* Whether r may be run again on a new connection when its connection turns out dead: a read
 * with retries left (DB_READ_RETRIES). */
static bool datapath_may_retry(const struct datareq *q)
{
    const struct datapath_cfg *cfg = q->cfg;
    return q->r->method != METHOD_POST && q->db_retries < cfg->retry_reads;
}

/* Work loop: a read met a dead connection (err); take a new one. */
static void datapath_retry(struct datareq *q, const char *err)
{
    log_warn("db_retry", "tier %s: %s; retrying the read on a new connection",
             tierset_cfg(q->tier)->name, err);
    q->db_retries++;
    datapath_acquire(q);
}

/* When r's call times out (the tier's call timeout from when it took its slot). */
static int64_t datapath_deadline(const struct datareq *q)
{
    return q->item.begun_us + tierset_cfg(q->tier)->breaker_timeout_ms * 1000;
}

/* Event thread: r's statement socket is readable, its deadline passed, or the loop stops. */
static void datapath_fire(struct evloop_watch *w, enum evloop_event ev)
{
    struct datareq *q = DATAPATH_OF(w, watch);
    struct tier_rt *t = q->tier;
    char err[300] = "";
    PGresult *res = NULL;
    int rc;
    if (ev == EVLOOP_READY) {
        rc = dbconn_read(q->db, &res, err, sizeof(err));
        if (rc == -EINPROGRESS) {
            rc = evloop_watch(evloop_current(), w, &q->db->watched, w->deadline_us);
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
        q->r->query_us = mclock_now_us() - q->sent_us;
        struct datastmt_end end = datastmt_classify(-ESHUTDOWN, true);
        end.conn = DATASTMT_CONN_CLOSE;
        datapath_end_here(q, NULL, end, "shutting down");
        return;
    }
    q->r->query_us = mclock_now_us() - q->sent_us;
    /* A read that met a dead connection is retried on a fresh one. */
    if (rc == -ECONNRESET && datapath_may_retry(q)) {
        datastmt_drop_dead(t->db, q->db);
        q->db = NULL;
        datapath_retry(q, err);
        return;
    }
    datapath_end_here(q, res, datastmt_classify(rc, q->db != NULL), err);
}

/* ---- lanes: a tenant's reads pipelined on one connection (event threads) ------------------- */

/* Whether r's statement may go on a lane: a read (a write is never sent twice, and the lane's
 * failure retries its reads). */
static bool datapath_lane_fits(const struct datareq *q)
{
    const struct datapath_cfg *cfg = q->cfg;
    return q->r->method != METHOD_POST && !q->args.force_error && cfg->lane_depth > 1;
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
static void datapath_lane_answer(struct datareq *m, PGresult *res, int rc, const char *err)
{
    struct datastmt_end end = datastmt_classify(rc, true);
    end.conn = DATASTMT_CONN_NONE;
    m->r->query_us = mclock_now_us() - m->sent_us;
    datapath_end_here(m, res, end, err);
}

/* Work loop: the statement of m, a request on a lane, completed (dbpipe.h's outcomes). One that
 * was not run, or not read to its end, is sent again within its deadline; a read that met a
 * lost connection is retried as any other. */
static void datapath_lane_done(struct dbpipe_stmt *s, PGresult *res, int rc, const char *err)
{
    struct datareq *m = DATAPATH_OF(s, pipe_stmt);
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
static void datapath_lane_push(struct dbpipe *p, struct datareq *q)
{
    struct datastmt st;
    datastmt_pick(q, &st);
    q->sent_us = mclock_now_us();
    q->pipe_stmt.done = datapath_lane_done;
    q->pipe_stmt.deadline_us = datapath_deadline(q);
    dbpipe_push(p, &q->pipe_stmt, st.name, st.n, st.v);
}

/* Work loop: open a lane on c, just taken for r, and send r's statement on it. */
static void datapath_lane_open(struct datareq *q, struct dbconn *c)
{
    struct tier_rt *t = q->tier;
    char label[48];
    snprintf(label, sizeof(label), "tier %s", t->name);
    struct dbpipe *p = NULL;
    int rc = dbpipe_open(q->work_loop, c, &datapath_lane_ops, t, q->item.tenant, label, &p);
    if (rc) {
        /* Nothing sent: this connection is closed (not the pool's others), r tries again. */
        char err[300];
        snprintf(err, sizeof(err), "cannot use the connection: %s", strerror(-rc));
        dbpool_release(t->db, c, true);
        if (datapath_may_retry(q)) {
            q->db_retries++;
            datapath_acquire(q);
        } else {
            datapath_lane_answer(q, NULL, -ECONNRESET, err);
        }
        return;
    }
    datapath_lane_push(p, q);
}

/* ---- a connection for a request ------------------------------------------------------- */

/* Work loop: r has its connection (or the answer that it gets none): send its statement and
 * watch its socket from this loop. */
static void datapath_connected(struct datareq *q, struct dbconn *c, int rc, const char *why)
{
    struct tier_rt *t = q->tier;
    if (rc) {
        q->r->query_us = -1;
        datapath_end_here(q, NULL, datastmt_classify(rc, false), why);
        return;
    }
    if (datapath_lane_fits(q)) {
        datapath_lane_open(q, c);
        return;
    }
    q->db = c;
    struct datastmt st;
    datastmt_pick(q, &st);
    char err[300];
    q->sent_us = mclock_now_us();
    rc = dbconn_send(c, st.name, st.n, st.v, err, sizeof(err));
    if (rc == 0) {
        q->watch.fire = datapath_fire;
        q->watch.fd = PQsocket(c->pg);
        rc = evloop_watch(q->work_loop, &q->watch, &c->watched, datapath_deadline(q));
        if (rc == 0)
            return;
        /* Sent, but its answer cannot be awaited: it may run, so it is not run again. */
        snprintf(err, sizeof(err), "cannot watch the connection: %s", strerror(-rc));
        datapath_end_here(q, NULL, datastmt_classify(-ECONNRESET, true), err);
        return;
    }
    /* Nothing reached the database. A read retries here on a new connection (one given without
     * its liveness check may be dead: dbpool_wait.trust_recent); anything else makes its
     * first attempt on a worker, on a connection checked as it is taken. */
    if (datapath_may_retry(q)) {
        datastmt_drop_dead(t->db, c);
        q->db = NULL;
        datapath_retry(q, err);
        return;
    }
    dbpool_release(t->db, c, true);
    q->db = NULL;
    if (workpool_hand(t->pool, &q->item) == 0)
        return;
    datapath_end_here(q, NULL, datastmt_classify(-ESHUTDOWN, false), "shutting down");
}

/* Work loop: the pool's answer, posted there by whichever thread gave it. */
static void datapath_answered(struct evloop_task *task)
{
    struct datareq *q = DATAPATH_OF(task, task);
    evloop_unwatch(&q->watch); /* the acquire deadline's timer, unless it fired already */
    datapath_connected(q, q->dbwait.granted, q->dbwait.granted ? 0 : q->dbwait.rc, q->dbwait.err);
}

/* Any thread: the pool answered r's wait. */
static void datapath_pool_done(struct dbpool_wait *w, struct dbconn *c, int rc, const char *err)
{
    (void)c;
    (void)rc;
    (void)err; /* all kept in w, read by datapath_answered */
    struct datareq *q = DATAPATH_OF(w, dbwait);
    q->task.fn = datapath_answered;
    if (evloop_current() == q->work_loop)
        datapath_answered(&q->task);
    else
        evloop_post(q->work_loop, &q->task);
}

/* Work loop: r's wait for a connection passed its deadline, or the loop stops. */
static void datapath_wait_fire(struct evloop_watch *w, enum evloop_event ev)
{
    struct datareq *q = DATAPATH_OF(w, watch);
    struct tier_rt *t = q->tier;
    int rc;
    while ((rc = dbpool_abandon(t->db, &q->dbwait)) == -EINPROGRESS) {
        /* Only a running connect can serve it: its outcome is the answer. */
        if (ev == EVLOOP_TIMEOUT && evloop_watch(q->work_loop, w, NULL, q->dbwait.deadline_us) == 0)
            return;
    }
    if (rc == -EALREADY)
        return; /* the answer is on its way here (datapath_answered) */
    datapath_connected(q, NULL, ev == EVLOOP_STOP ? -ESHUTDOWN : -ETIMEDOUT,
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
static void datapath_start(const struct datapath_cfg *cfg, struct datareq *q,
                           struct evloop_thread *loop)
{
    struct tier_rt *t = q->tier;
    q->cfg = cfg;
    q->work_loop = loop;
    q->r->queue_us = q->item.begun_us - q->item.enqueued_us;
    if (q->args.delay_ms > 0 ||
        (q->args.payload && strlen(q->args.payload) > DATAPATH_LOOP_BODY_MAX)) {
        if (workpool_hand(t->pool, &q->item) == 0)
            return;
        datapath_end_here(q, NULL, datastmt_classify(-ESHUTDOWN, false), "shutting down");
        return;
    }
    datapath_acquire(q);
}

/* Work loop: take a connection for r, or wait for one on this loop's timer. */
static void datapath_acquire(struct datareq *q)
{
    const struct datapath_cfg *cfg = q->cfg;
    struct tier_rt *t = q->tier;
    const struct tier_cfg *c = tierset_cfg(t);
    /* From now: a read retried, or moved off a lane that timed out, late in its call has the
     * acquire timeout again, within its call's deadline. */
    int64_t deadline = datapath_deadline(q);
    int64_t now = mclock_now_us();
    int64_t acquire_deadline = now + c->db_acquire_timeout_ms * 1000;
    if (acquire_deadline > deadline)
        acquire_deadline = deadline;
    /* A retried read does not join a lane: that connection may have died with the other. */
    struct dbpipe *lane = datapath_lane_fits(q) && q->db_retries == 0
                              ? dbpipe_find(q->work_loop, t, q->item.tenant,
                                            (size_t)cfg->lane_depth, cfg->lane_join_us, now)
                              : NULL;
    if (lane) {
        dbpool_count_pipelined(t->db);
        datapath_lane_push(lane, q);
        return;
    }
    /* The timer first: the answer may come before dbpool_acquire_async returns. */
    q->watch.fire = datapath_wait_fire;
    q->watch.fd = -1;
    if (evloop_watch(q->work_loop, &q->watch, NULL, acquire_deadline) != 0)
        abort(); /* a timer alone makes no system call and cannot fail */
    q->dbwait.owner = q->item.tenant;
    q->dbwait.deadline_us = acquire_deadline;
    q->dbwait.trust_recent = datapath_may_retry(q);
    q->dbwait.done = datapath_pool_done;
    struct dbconn *conn = NULL;
    char err[256] = "";
    int rc = dbpool_acquire_async(t->db, &q->dbwait, &conn, err, sizeof(err));
    if (rc == -EINPROGRESS)
        return;
    evloop_unwatch(&q->watch);
    datapath_connected(q, conn, rc, err);
}

int datapath_submit(const struct datapath_cfg *cfg, struct datareq *q)
{
    struct workpool *wp = q->tier->pool;
    struct evloop_thread *loop = evloop_current();
    if (loop && q->args.delay_ms == 0) {
        int rc = workpool_begin(wp, q->tenant, &q->item);
        if (rc == 0) {
            datapath_start(cfg, q, loop);
            return 0;
        }
        if (rc != -EBUSY)
            return rc;
    }
    return workpool_submit(wp, q->tenant, &q->item);
}

const struct workpool_ops datapath_ops_template = {.run = datapath_run, .drop = datapath_drop};
