/*
 * apiwork: /api/data's statement (see apiwork.h): take a connection of the tier's pool, run the
 * request's prepared statement(s) with the call timeout as deadline, map the result to a
 * breaker verdict and an answer, and resume the request. Two ways, one set of rules: on its
 * event thread without blocking (the end of this file: the loop's watches and timer), or on a
 * worker thread of its tier, blocking (apiwork_run), for what must block.
 */
#include "apiwork.h"
#include "api.h"
#include "apierr.h"
#include "breaker.h"
#include "compiler.h"
#include "dbpool.h"
#include "evloop.h"
#include "log.h"
#include "mclock.h"
#include "request.h"
#include "tierset.h"
#include "xalloc.h"

#include <errno.h>
#include <inttypes.h>
#include <libpq-fe.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define APIWORK_CANCEL_GRACE_US 1000000 /* time for a cancelled statement to end cleanly */
/* A write whose payload is larger than this is sent by a worker thread: libpq sends a statement
 * whole before it returns, and a large one could wait on a full socket buffer. */
#define APIWORK_LOOP_BODY_MAX (64 * 1024)

/* Statement names, in apiwork_statements order. */
#define STMT_READ_TIER   "read_tier"
#define STMT_READ_TENANT "read_tenant"
#define STMT_WRITE       "write"
#define STMT_FAIL        "fail"
#define STMT_SLEEP       "sleep"

/* PostgreSQL builds the JSON: the server passes the text through without parsing it. */
const struct dbconn_stmt apiwork_statements[] = {
    {STMT_READ_TIER,
     "SELECT coalesce(json_agg(r ORDER BY r.id), '[]')::text, max(r.id), count(*) FROM ("
     "SELECT id, tier, tenant, payload, created_at FROM tenant_data "
     "WHERE tier = $1 AND id > $2::bigint ORDER BY id LIMIT $3::int) r"},
    {STMT_READ_TENANT,
     "SELECT coalesce(json_agg(r ORDER BY r.id), '[]')::text, max(r.id), count(*) FROM ("
     "SELECT id, tier, tenant, payload, created_at FROM tenant_data "
     "WHERE tenant = $1 AND id > $2::bigint ORDER BY id LIMIT $3::int) r"},
    {STMT_WRITE, "WITH ins AS (INSERT INTO tenant_data (tier, tenant, payload) "
                 "VALUES ($1, $2, $3::jsonb) RETURNING id, tier, tenant, payload, created_at) "
                 "SELECT row_to_json(ins)::text FROM ins"},
    /* A runtime error inside PostgreSQL: an aggregate keeps it from being folded at prepare. */
    {STMT_FAIL, "SELECT 1 / (count(*) * 0)::int FROM tenant_data WHERE tier = $1"},
    {STMT_SLEEP, "SELECT pg_sleep($1::float8 / 1000.0)"},
};
const size_t apiwork_statement_count = sizeof(apiwork_statements) / sizeof(apiwork_statements[0]);

/* One round trip at connect. The statements are simple index scans whose best plan does not
 * depend on the parameters: a generic plan skips re-planning on every execution (measured: +11%
 * queries per second of the same PostgreSQL CPU). */
const char apiwork_session_sql[] = "SET TimeZone = 'UTC'; SET plan_cache_mode = force_generic_plan";

static void apiwork_pqclear(void *res)
{
    PQclear(res);
}

/* The one statement that answers r (besides a delay): its name and text parameters. */
struct apiwork_stmt {
    const char *name;
    int n;
    const char *v[3];
    char b1[32], b2[32]; /* the numbers among v */
};

static void apiwork_pick(const struct request *r, struct apiwork_stmt *s)
{
    const struct tier_cfg *c = tierset_cfg(r->tier);
    const struct request_args *a = &r->args;
    const char *tenant = (r->tenant[0] == 'i' && r->tenant[1] == 'd') ? r->tenant + 3 : NULL;
    if (r->method == METHOD_POST) {
        *s = (struct apiwork_stmt){STMT_WRITE, 3, {c->name, tenant, a->payload}, "", ""};
        return;
    }
    if (a->force_error) {
        *s = (struct apiwork_stmt){STMT_FAIL, 1, {c->name}, "", ""};
        return;
    }
    *s = (struct apiwork_stmt){tenant ? STMT_READ_TENANT : STMT_READ_TIER, 3, {0}, "", ""};
    snprintf(s->b1, sizeof(s->b1), "%" PRId64, a->cursor);
    snprintf(s->b2, sizeof(s->b2), "%" PRId64, a->limit);
    s->v[0] = tenant ? tenant : c->name;
    s->v[1] = s->b1;
    s->v[2] = s->b2;
}

/* Run the request's statement(s) on conn (worker thread). On 0, *res holds the row to send. */
static int apiwork_exec(struct request *r, struct dbconn *conn, int64_t deadline, PGresult **res,
                        char *err, size_t errlen)
{
    if (r->args.delay_ms > 0) {
        char b[32];
        snprintf(b, sizeof(b), "%" PRId64, r->args.delay_ms);
        const char *v[] = {b};
        int rc = dbconn_exec(conn, STMT_SLEEP, 1, v, deadline, res, err, errlen);
        PQclear(*res);
        *res = NULL;
        if (rc)
            return rc;
    }
    struct apiwork_stmt st;
    apiwork_pick(r, &st);
    return dbconn_exec(conn, st.name, st.n, st.v, deadline, res, err, errlen);
}

/* Reply with the statement's result (worker thread). */
static void apiwork_reply_rows(struct request *r, PGresult *res)
{
    if (PQntuples(res) < 1) {
        PQclear(res);
        apierr_replyf(r, APIERR_DATABASE_ERROR, "the statement returned no row");
        return;
    }
    const char *json = PQgetvalue(res, 0, 0);
    size_t len = (size_t)PQgetlength(res, 0, 0);
    bool post = r->method == METHOD_POST;
    char next[32] = "";
    if (!post && PQnfields(res) >= 3 && !PQgetisnull(res, 0, 1) &&
        strtoll(PQgetvalue(res, 0, 2), NULL, 10) == r->args.limit)
        snprintf(next, sizeof(next), "%s", PQgetvalue(res, 0, 1));
    /* The result's memory is the body: PQclear runs when the response is sent. */
    request_reply_owned(r, post ? MHD_HTTP_CREATED : MHD_HTTP_OK, OUTCOME_OK, json, len,
                        apiwork_pqclear, res);
    if (next[0])
        request_add_header(r, "X-Next-Cursor", next);
}

/* What becomes of a worker's connection once its attempt is over. */
enum apiwork_conn {
    APIWORK_CONN_NONE,   /* it never got one */
    APIWORK_CONN_KEEP,   /* back to the pool, reusable */
    APIWORK_CONN_CLOSE,  /* back to the pool, closed: it broke */
    APIWORK_CONN_CANCEL, /* its statement is still running: cancel it, then back (or closed) */
};

#define APIWORK_NO_VERDICT (-1) /* the breaker hears nothing: its permit is released */

/* How a worker's attempt ended: what the breaker hears and which table row answers. */
struct apiwork_end {
    enum apierr err;        /* APIERR_COUNT: the statement's row is the reply */
    int verdict;            /* enum breaker_outcome, or APIWORK_NO_VERDICT */
    enum apiwork_conn conn; /* what happens to the connection */
    const char *log_event;  /* logged with the error text, or NULL */
};

/* The result of dbpool_acquire/apiwork_exec, mapped to a verdict and a row. */
static struct apiwork_end apiwork_classify(int rc, bool have_conn)
{
    switch (rc) {
    case 0:
        return (struct apiwork_end){APIERR_COUNT, BREAKER_SUCCESS, APIWORK_CONN_KEEP, NULL};
    case -ETIMEDOUT:
        if (!have_conn) /* no connection in time: the tier is saturated, not failing */
            return (struct apiwork_end){APIERR_POOL_TIMEOUT, APIWORK_NO_VERDICT, APIWORK_CONN_NONE,
                                        NULL};
        return (struct apiwork_end){APIERR_TIMEOUT, BREAKER_TIMEOUT, APIWORK_CONN_CANCEL, NULL};
    case -EIO: /* the statement failed in PostgreSQL; the connection is fine */
        return (struct apiwork_end){APIERR_DATABASE_ERROR, BREAKER_FAILURE, APIWORK_CONN_KEEP,
                                    "db_error"};
    case -ESHUTDOWN:
        return (struct apiwork_end){APIERR_SHUTTING_DOWN, APIWORK_NO_VERDICT,
                                    have_conn ? APIWORK_CONN_KEEP : APIWORK_CONN_NONE, NULL};
    default: /* could not connect, or the connection broke */
        return (struct apiwork_end){APIERR_DATABASE_UNAVAILABLE, BREAKER_FAILURE,
                                    have_conn ? APIWORK_CONN_CLOSE : APIWORK_CONN_NONE,
                                    "db_unavailable"};
    }
}

/* The reply for an attempt that failed with row e (err: the database's words). */
static void apiwork_reply_failure(struct request *r, const struct tier_cfg *c, enum apierr e,
                                  const char *err)
{
    if (e == APIERR_TIMEOUT)
        apierr_replyf(r, e, "the query passed tier %s's %" PRId64 " ms timeout", c->name,
                      c->breaker_timeout_ms);
    else if (e == APIERR_DATABASE_ERROR)
        apierr_replyf(r, e, "%s", err);
    else
        apierr_reply(r, e);
}

/*
 * The one way out of an attempt, in this order:
 *   1. the connection goes back to the pool: the client's next request may need it, and a
 *      client that was answered must find it there (tests count idle connections);
 *   2. the breaker hears the verdict (or the permit is released): a client that saw a failure
 *      and asks again must meet the breaker that counted it;
 *   3. the reply is set (then the caller resumes the request, last: after request_resume the
 *      HTTP thread owns r and may already have freed it).
 * A timed-out statement is the exception to 1: the client is answered at its deadline, and
 * the statement is cancelled after the resume, because a cancel may take up to
 * APIWORK_CANCEL_GRACE_US and the client must not wait for it.
 */
static void apiwork_settle(struct request *r, struct dbconn *conn, PGresult *res,
                           struct apiwork_end end, const char *err)
{
    struct tier_rt *t = r->tier;
    const struct tier_cfg *c = tierset_cfg(t);
    enum breaker_permit permit = r->permit;
    /* The statement's database time, for the queue's order by cost (its slot is still held). */
    workpool_tenant_charge(r->item.tenant, r->query_us);
    if (end.conn == APIWORK_CONN_KEEP || end.conn == APIWORK_CONN_CLOSE)
        dbpool_release(t->db, conn, end.conn == APIWORK_CONN_CLOSE);
    if (end.verdict == APIWORK_NO_VERDICT)
        breaker_release(t->breaker, permit);
    else
        breaker_record(t->breaker, permit, (enum breaker_outcome)end.verdict, mclock_now_us());
    if (end.log_event)
        log_warn(end.log_event, "tier %s: %s", c->name, err);
    if (end.err == APIERR_COUNT)
        apiwork_reply_rows(r, res);
    else
        apiwork_reply_failure(r, c, end.err, err);
}

/* Worker thread: settle, resume, then cancel a timed-out statement (it may block). */
static void apiwork_leave(struct request *r, struct dbconn *conn, PGresult *res,
                          struct apiwork_end end, const char *err)
{
    struct dbpool *db = r->tier->db;
    apiwork_settle(r, conn, res, end, err);
    request_resume(r);
    if (end.conn == APIWORK_CONN_CANCEL)
        dbpool_release(db, conn, dbconn_cancel(conn, mclock_now_us() + APIWORK_CANCEL_GRACE_US));
}

/* A connection was found dead under a statement: the server restarted or killed its
 * backends, most likely all of them, and the idle ones would fail the retry too (one killed
 * a moment ago may not look dead yet). Closed with it, so the retry gets a new connection. */
static void apiwork_drop_dead(struct dbpool *db, struct dbconn *conn)
{
    dbpool_release(db, conn, true);
    dbpool_close_idle(db);
}

static void apiwork_run(struct fairq_item *item, void *ctx)
{
    const struct api_deps *d = ctx;
    struct request *r = container_of(item, struct request, item);
    struct tier_rt *t = r->tier;
    const struct tier_cfg *c = tierset_cfg(t);
    int64_t start = item->begun_us; /* an item begun on an event thread held its slot since */
    r->queue_us = start - item->enqueued_us;
    int64_t deadline = start + c->breaker_timeout_ms * 1000;
    int64_t acquire_deadline = start + c->db_acquire_timeout_ms * 1000;
    if (acquire_deadline > deadline)
        acquire_deadline = deadline;
    int retries = r->method == METHOD_POST ? 0 : (int)(d->retry_reads - r->db_retries);

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
        rc = apiwork_exec(r, conn, deadline, &res, err, sizeof(err));
        r->query_us = mclock_now_us() - q0;
        /* A read that met a dead connection is retried once on a fresh one. */
        if (rc == -ECONNRESET && retries-- > 0) {
            apiwork_drop_dead(t->db, conn);
            conn = NULL;
            log_warn("db_retry", "tier %s: %s; retrying the read on a new connection", c->name,
                     err);
            continue;
        }
        break;
    }
    apiwork_leave(r, conn, res, apiwork_classify(rc, conn != NULL), err);
}

/* Janitor (expired) or shutdown: the request never ran. */
static void apiwork_drop(struct fairq_item *item, enum workpool_drop_reason why, void *ctx)
{
    (void)ctx;
    struct request *r = container_of(item, struct request, item);
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

static void apiwork_start(const struct api_deps *d, struct request *r, struct evloop_thread *loop);
static void apiwork_acquire(struct request *r);

/* Work loop: a queued request that a freed slot let in (apiwork_end_here). */
static void apiwork_start_posted(struct evloop_task *task)
{
    struct request *r = container_of(task, struct request, task);
    apiwork_start(r->work_ctx, r, evloop_current());
}

static struct request *apiwork_request(struct fairq_item *item)
{
    return container_of(item, struct request, item);
}

/* Event thread: r's attempt ended. Settle it, give its slot back (starting the request that
 * slot lets in), resume it, and cancel a timed-out statement on the pool's thread. */
static void apiwork_end_here(const struct api_deps *d, struct request *r, PGresult *res,
                             struct apiwork_end end, const char *err)
{
    struct tier_rt *t = r->tier;
    struct dbconn *conn = r->db;
    struct fairq_tenant *tenant = r->item.tenant;
    int64_t begun = r->item.begun_us;
    r->db = NULL;
    apiwork_settle(r, conn, res, end, err);
    request_resume(r); /* r is the HTTP thread's from here on */
    if (end.conn == APIWORK_CONN_CANCEL)
        dbpool_cancel_release(t->db, conn, mclock_now_us() + APIWORK_CANCEL_GRACE_US);
    struct evloop_thread *loop = evloop_current();
    struct fairq_item *next = workpool_end(t->pool, tenant, begun, loop != NULL);
    if (next) {
        /* Started from the loop's inbox, not from here: a request that ends at once (the
         * database refusing connects) would start the next one from inside its own end, and
         * a long queue would go as deep as it is long. */
        struct request *n = apiwork_request(next);
        n->work_ctx = d;
        n->task.fn = apiwork_start_posted;
        evloop_post(loop, &n->task);
    }
}

/* Whether r may be run again on a new connection when its connection turns out dead: a read
 * with retries left (DB_READ_RETRIES). */
static bool apiwork_may_retry(const struct request *r)
{
    const struct api_deps *d = r->work_ctx;
    return r->method != METHOD_POST && r->db_retries < d->retry_reads;
}

/* Event thread: r's statement socket is readable, its deadline passed, or the loop stops. */
static void apiwork_fire(struct evloop_watch *w, enum evloop_event ev)
{
    struct request *r = container_of(w, struct request, watch);
    const struct api_deps *d = r->work_ctx;
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
        struct apiwork_end end = apiwork_classify(-ESHUTDOWN, true);
        end.conn = APIWORK_CONN_CLOSE;
        apiwork_end_here(d, r, NULL, end, "shutting down");
        return;
    }
    r->query_us = mclock_now_us() - r->sent_us;
    /* A read that met a dead connection is retried on a fresh one. */
    if (rc == -ECONNRESET && apiwork_may_retry(r)) {
        log_warn("db_retry", "tier %s: %s; retrying the read on a new connection",
                 tierset_cfg(t)->name, err);
        apiwork_drop_dead(t->db, r->db);
        r->db = NULL;
        r->db_retries++;
        apiwork_acquire(r);
        return;
    }
    apiwork_end_here(d, r, res, apiwork_classify(rc, r->db != NULL), err);
}

/* ---- lanes: a tenant's reads pipelined on one connection (event threads) ------------------- */

/*
 * A lane is a connection of the tier's pool held by one event loop for one tenant, in
 * libpq's pipeline mode: a read of that tenant on that loop joins it, its statement sent
 * behind the ones in flight, instead of taking a connection of its own. PostgreSQL then runs
 * a batch per wake-up on one backend instead of one statement per backend (measured: see
 * bench/optimisations.md). A lane is joined only by its own tenant, so no tenant ever waits
 * behind another's statement. The statements a loop turn queues on a lane leave together at
 * the turn's end (apiwork_lanes_flush): one write, one Sync, one reply from PostgreSQL. They
 * share an implicit transaction (reads only: each still sees its own snapshot); when one fails,
 * the rest of its batch is not run and takes a connection again (apiwork_lane_settle), so
 * every request still gets its own statement's outcome. A forced error never joins a lane.
 * Limits: DB_PIPELINE_DEPTH statements in flight (1: no lanes),
 * and a lane whose oldest statement was sent longer than DB_PIPELINE_JOIN_MS ago is not joined
 * (a slow statement of the tenant does not hold its quick ones back for long). The lane's
 * connection goes back to the pool when its last statement and its batch's end are read
 * (together, nearly always; then before the answer, as apiwork_settle's order wants).
 *
 * Deadlines: each statement keeps its own (the call timeout), on the loop's timer. When one
 * passes, its request is answered 504, the lane ends, its connection is cancelled on a pool
 * thread (every statement of the lane is read to its end, then it is reused or closed) and the
 * lane's other requests take a connection again, within their own deadlines. A lost connection
 * fails every statement of the lane: each read is retried as any other (DB_READ_RETRIES).
 *
 * Ownership: a lane, its list and its requests' lane fields are its loop's alone.
 */

/* When a lane's statement passes its deadline, the lane's others whose deadline is this close
 * are answered 504 with it: a new connection could not serve them in time. */
#define APIWORK_LANE_EXPIRE_US 5000

struct apiwork_lane {
    struct dbconn *conn; /* held from the tier's pool for owner */
    struct tier_rt *tier;
    const void *owner;           /* the tenant (fairq tenant) */
    struct request *head, *tail; /* statements in flight, oldest first */
    size_t depth;
    bool broken;                      /* a send failed: failed at the turn's end */
    struct evloop_watch watch;        /* the connection's socket */
    struct apiwork_lane *next, *prev; /* the loop's lanes */
};

static _Thread_local struct apiwork_lane *apiwork_lanes; /* this loop's */
/* The end of the turn's flush (apiwork_lanes_flush), and whether it is due. */
static _Thread_local struct evloop_task apiwork_flush_task;
static _Thread_local bool apiwork_flush_due;

/* When r's call times out (the tier's call timeout from when it took its slot). */
static int64_t apiwork_deadline(const struct request *r)
{
    return r->item.begun_us + tierset_cfg(r->tier)->breaker_timeout_ms * 1000;
}

/* Whether r's statement may go on a lane: a read (a write is never sent twice, and the lane's
 * failure retries its reads). */
static bool apiwork_lane_fits(const struct request *r)
{
    const struct api_deps *d = r->work_ctx;
    return r->method != METHOD_POST && !r->args.force_error && d->lane_depth > 1;
}

/* A lane of this loop that r may join, or NULL. */
static struct apiwork_lane *apiwork_lane_find(const struct request *r)
{
    const struct api_deps *d = r->work_ctx;
    int64_t now = mclock_now_us();
    for (struct apiwork_lane *l = apiwork_lanes; l; l = l->next)
        if (l->tier == r->tier && l->owner == r->item.tenant && l->head && !l->broken &&
            l->depth < (size_t)d->lane_depth && now - l->head->sent_us < d->lane_join_us)
            return l;
    return NULL;
}

/* Take l off the loop: no request joins it, its socket is not watched. Its requests stay. */
static void apiwork_lane_unlink(struct apiwork_lane *l)
{
    evloop_unwatch(&l->watch);
    if (l->prev)
        l->prev->next = l->next;
    else
        apiwork_lanes = l->next;
    if (l->next)
        l->next->prev = l->prev;
    l->next = l->prev = NULL;
}

/* The lane's requests, taken off it (their deadline timers disarmed), oldest first. */
static struct request *apiwork_lane_take_all(struct apiwork_lane *l)
{
    struct request *list = l->head;
    for (struct request *m = list; m; m = m->lane_next) {
        evloop_unwatch(&m->watch);
        m->lane = NULL;
    }
    l->head = l->tail = NULL;
    l->depth = 0;
    return list;
}

/* End request m of a lane with outcome rc; the lane keeps the connection. */
static void apiwork_lane_answer(struct request *m, PGresult *res, int rc, const char *err)
{
    struct apiwork_end end = apiwork_classify(rc, true);
    end.conn = APIWORK_CONN_NONE;
    m->query_us = mclock_now_us() - m->sent_us;
    apiwork_end_here(m->work_ctx, m, res, end, err);
}

/* End request m of a lane with its statement's outcome: one that was not run (its batch
 * aborted by another's failure) is sent again, within its deadline. */
static void apiwork_lane_settle(struct request *m, PGresult *res, int rc, const char *err)
{
    if (rc == -EAGAIN && apiwork_deadline(m) <= mclock_now_us() + APIWORK_LANE_EXPIRE_US)
        apiwork_lane_answer(m, NULL, -ETIMEDOUT, "query timed out"); /* no time for another try */
    else if (rc == -EAGAIN)
        apiwork_acquire(m); /* a lane of its tenant, maybe this one, or a connection */
    else
        apiwork_lane_answer(m, res, rc, err);
}

/* Every statement and Sync of l is read: its connection goes back to the pool. */
static void apiwork_lane_close(struct apiwork_lane *l)
{
    apiwork_lane_unlink(l);
    dbpool_release(l->tier->db, l->conn, dbconn_pipe_exit(l->conn) != 0);
    free(l);
}

/* The lane's connection is lost (rc, err): close it (and the pool's idle ones), retry each
 * read that may be, answer the others. */
static void apiwork_lane_fail(struct apiwork_lane *l, int rc, const char *err)
{
    apiwork_lane_unlink(l);
    struct request *m = apiwork_lane_take_all(l);
    if (rc == -ESHUTDOWN)
        dbpool_release(l->tier->db, l->conn, true);
    else
        apiwork_drop_dead(l->tier->db, l->conn);
    free(l);
    while (m) {
        struct request *next = m->lane_next;
        m->lane_next = NULL;
        if (rc == -ECONNRESET && apiwork_may_retry(m)) {
            log_warn("db_retry", "tier %s: %s; retrying the read on a new connection",
                     tierset_cfg(m->tier)->name, err);
            m->db_retries++;
            apiwork_acquire(m);
        } else {
            apiwork_lane_answer(m, NULL, rc, err);
        }
        m = next;
    }
}

/* Work loop: the lane's socket is readable (or the loop stops). */
static void apiwork_lane_fire(struct evloop_watch *w, enum evloop_event ev)
{
    struct apiwork_lane *l = container_of(w, struct apiwork_lane, watch);
    char err[300] = "";
    if (ev == EVLOOP_TIMEOUT) {
        /* Only a lane whose statements are all answered has a deadline (armed at the end of
         * this function): its batch's end did not come. Nobody waits on it; it is closed. */
        log_warn("db_pipeline",
                 "tier %s: the end of a batch did not arrive; closing its "
                 "connection",
                 tierset_cfg(l->tier)->name);
        apiwork_lane_unlink(l);
        dbpool_release(l->tier->db, l->conn, true);
        free(l);
        return;
    }
    if (ev != EVLOOP_READY) {
        apiwork_lane_fail(l, -ESHUTDOWN, "shutting down");
        return;
    }
    if (dbconn_pipe_consume(l->conn, err, sizeof(err))) {
        apiwork_lane_fail(l, -ECONNRESET, err);
        return;
    }
    for (;;) {
        PGresult *res = NULL;
        err[0] = '\0';
        int rc = dbconn_pipe_next(l->conn, &res, err, sizeof(err));
        if (rc == -EINPROGRESS)
            break;
        if (rc == -ENODATA && !l->head) {
            apiwork_lane_close(l);
            return;
        }
        if (rc == -ECONNRESET || rc == -ENODATA || rc == -EPROTO || !l->head) {
            PQclear(res);
            apiwork_lane_fail(l, -ECONNRESET, rc == -ECONNRESET ? err : "out of step");
            return;
        }
        struct request *m = l->head;
        l->head = m->lane_next;
        if (!l->head)
            l->tail = NULL;
        l->depth--;
        m->lane_next = NULL;
        m->lane = NULL;
        evloop_unwatch(&m->watch);
        if (!l->head) {
            /* The last one. Its batch's Sync is most often read with it: then the connection
             * goes back before the answer (apiwork_settle's order). */
            PGresult *none = NULL;
            char why[300] = "";
            int end = dbconn_pipe_next(l->conn, &none, why, sizeof(why));
            if (end == -ENODATA)
                apiwork_lane_close(l);
            else if (end != -EINPROGRESS)
                apiwork_lane_fail(l, -ECONNRESET, end == -ECONNRESET ? why : "out of step");
            PQclear(none);
            apiwork_lane_settle(m, res, rc, err);
            if (end != -EINPROGRESS)
                return;
            continue;
        }
        apiwork_lane_settle(m, res, rc, err);
    }
    /* A lane with statements in flight waits as long as they may (each has its own timer);
     * one waiting only for its batch's end (read with its last answer, nearly always) waits
     * the cancel grace at most. */
    int64_t until = l->head ? INT64_MAX : mclock_now_us() + APIWORK_CANCEL_GRACE_US;
    int wr = evloop_watch(evloop_current(), &l->watch, &l->conn->watched, until);
    if (wr) {
        snprintf(err, sizeof(err), "cannot watch the connection: %s", strerror(-wr));
        apiwork_lane_fail(l, -ECONNRESET, err);
    }
}

/* Work loop: the call timeout of r, a request on a lane, passed (or the loop stops). */
static void apiwork_lane_expired(struct evloop_watch *w, enum evloop_event ev)
{
    struct request *r = container_of(w, struct request, watch);
    struct apiwork_lane *l = r->lane;
    if (ev != EVLOOP_TIMEOUT) {
        apiwork_lane_fail(l, -ESHUTDOWN, "shutting down");
        return;
    }
    apiwork_lane_unlink(l);
    struct request *m = apiwork_lane_take_all(l);
    struct tier_rt *t = l->tier;
    struct dbconn *conn = l->conn;
    free(l);
    /* Cancelled on a pool thread: every statement of the lane is read to its end there. */
    dbpool_cancel_release(t->db, conn, mclock_now_us() + APIWORK_CANCEL_GRACE_US);
    int64_t soon = mclock_now_us() + APIWORK_LANE_EXPIRE_US;
    while (m) {
        struct request *next = m->lane_next;
        m->lane_next = NULL;
        if (m == r || apiwork_deadline(m) <= soon)
            apiwork_lane_answer(m, NULL, -ETIMEDOUT, "query timed out");
        else
            apiwork_acquire(m); /* within its own deadline */
        m = next;
    }
}

/* Work loop, at the end of a turn: the statements queued on each lane leave as one batch (one
 * write, one Sync, one reply from PostgreSQL). */
static void apiwork_lanes_flush(struct evloop_task *task)
{
    (void)task;
    apiwork_flush_due = false;
    for (struct apiwork_lane *l = apiwork_lanes, *next; l; l = next) {
        next = l->next;
        char err[300] = "send failed";
        if (l->broken || (l->conn->pipe_unsynced && dbconn_pipe_sync(l->conn, err, sizeof(err))))
            apiwork_lane_fail(l, -ECONNRESET, err);
    }
}

/* Work loop: queue r's statement on lane l and keep r on it until its outcome is read. */
static void apiwork_lane_push(struct apiwork_lane *l, struct request *r)
{
    struct apiwork_stmt st;
    apiwork_pick(r, &st);
    char err[300] = "";
    r->lane = l;
    r->lane_next = NULL;
    if (l->tail)
        l->tail->lane_next = r;
    else
        l->head = r;
    l->tail = r;
    l->depth++;
    r->sent_us = mclock_now_us();
    r->watch.fire = apiwork_lane_expired;
    r->watch.fd = -1;
    if (evloop_watch(r->work_loop, &r->watch, NULL, apiwork_deadline(r)) != 0)
        abort(); /* a timer alone makes no system call and cannot fail */
    /* Queued: the turn's statements of a lane leave in one write at its end. A failed send
     * fails the lane there too (here the caller may be reading the lane). */
    if (!apiwork_flush_due) {
        apiwork_flush_due = true;
        apiwork_flush_task.fn = apiwork_lanes_flush;
        evloop_defer(r->work_loop, &apiwork_flush_task);
    }
    if (dbconn_pipe_send(l->conn, st.name, st.n, st.v, err, sizeof(err))) {
        log_warn("db_pipeline", "tier %s: %s", tierset_cfg(l->tier)->name, err);
        l->broken = true;
    }
}

/* Work loop: open a lane on c, just taken for r, and send r's statement on it. */
static void apiwork_lane_open(struct request *r, struct dbconn *c)
{
    struct apiwork_lane *l = xcalloc(1, sizeof(*l));
    l->conn = c;
    l->tier = r->tier;
    l->owner = r->item.tenant;
    l->watch.fire = apiwork_lane_fire;
    l->watch.fd = PQsocket(c->pg);
    char err[300] = "";
    int rc = dbconn_pipe_enter(c);
    if (rc == 0)
        rc = evloop_watch(r->work_loop, &l->watch, &c->watched, INT64_MAX);
    if (rc) {
        /* Nothing sent: this connection is closed (not the pool's others), r tries again. */
        snprintf(err, sizeof(err), "cannot use the connection: %s", strerror(-rc));
        free(l);
        dbpool_release(r->tier->db, c, true);
        if (apiwork_may_retry(r)) {
            r->db_retries++;
            apiwork_acquire(r);
        } else {
            apiwork_lane_answer(r, NULL, -ECONNRESET, err);
        }
        return;
    }
    l->next = apiwork_lanes;
    if (apiwork_lanes)
        apiwork_lanes->prev = l;
    apiwork_lanes = l;
    apiwork_lane_push(l, r);
}

/* Work loop: r has its connection (or the answer that it gets none): send its statement and
 * watch its socket from this loop. */
static void apiwork_connected(struct request *r, struct dbconn *c, int rc, const char *why)
{
    const struct api_deps *d = r->work_ctx;
    struct tier_rt *t = r->tier;
    if (rc) {
        r->query_us = -1;
        apiwork_end_here(d, r, NULL, apiwork_classify(rc, false), why);
        return;
    }
    if (apiwork_lane_fits(r)) {
        apiwork_lane_open(r, c);
        return;
    }
    r->db = c;
    struct apiwork_stmt st;
    apiwork_pick(r, &st);
    char err[300];
    r->sent_us = mclock_now_us();
    rc = dbconn_send(c, st.name, st.n, st.v, err, sizeof(err));
    if (rc == 0) {
        r->watch.fire = apiwork_fire;
        r->watch.fd = PQsocket(c->pg);
        rc = evloop_watch(r->work_loop, &r->watch, &c->watched, apiwork_deadline(r));
        if (rc == 0)
            return;
        /* Sent, but its answer cannot be awaited: it may run, so it is not run again. */
        snprintf(err, sizeof(err), "cannot watch the connection: %s", strerror(-rc));
        apiwork_end_here(d, r, NULL, apiwork_classify(-ECONNRESET, true), err);
        return;
    }
    /* Nothing reached the database. A read retries here on a new connection (one given without
     * its liveness check may be dead: dbpool_wait.trust_recent); anything else makes its
     * first attempt on a worker, on a connection checked as it is taken. */
    if (apiwork_may_retry(r)) {
        log_warn("db_retry", "tier %s: %s; retrying the read on a new connection",
                 tierset_cfg(t)->name, err);
        apiwork_drop_dead(t->db, c);
        r->db = NULL;
        r->db_retries++;
        apiwork_acquire(r);
        return;
    }
    dbpool_release(t->db, c, true);
    r->db = NULL;
    if (workpool_hand(t->pool, &r->item) == 0)
        return;
    apiwork_end_here(d, r, NULL, apiwork_classify(-ESHUTDOWN, false), "shutting down");
}

/* Work loop: the pool's answer, posted there by whichever thread gave it. */
static void apiwork_answered(struct evloop_task *task)
{
    struct request *r = container_of(task, struct request, task);
    evloop_unwatch(&r->watch); /* the acquire deadline's timer, unless it fired already */
    apiwork_connected(r, r->dbwait.granted, r->dbwait.granted ? 0 : r->dbwait.rc, r->dbwait.err);
}

/* Any thread: the pool answered r's wait. */
static void apiwork_pool_done(struct dbpool_wait *w, struct dbconn *c, int rc, const char *err)
{
    (void)c;
    (void)rc;
    (void)err; /* all kept in w, read by apiwork_answered */
    struct request *r = container_of(w, struct request, dbwait);
    r->task.fn = apiwork_answered;
    if (evloop_current() == r->work_loop)
        apiwork_answered(&r->task);
    else
        evloop_post(r->work_loop, &r->task);
}

/* Work loop: r's wait for a connection passed its deadline, or the loop stops. */
static void apiwork_wait_fire(struct evloop_watch *w, enum evloop_event ev)
{
    struct request *r = container_of(w, struct request, watch);
    struct tier_rt *t = r->tier;
    int rc;
    while ((rc = dbpool_abandon(t->db, &r->dbwait)) == -EINPROGRESS) {
        /* Only a running connect can serve it: its outcome is the answer. */
        if (ev == EVLOOP_TIMEOUT && evloop_watch(r->work_loop, w, NULL, r->dbwait.deadline_us) == 0)
            return;
    }
    if (rc == -EALREADY)
        return; /* the answer is on its way here (apiwork_answered) */
    apiwork_connected(r, NULL, ev == EVLOOP_STOP ? -ESHUTDOWN : -ETIMEDOUT,
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
static void apiwork_start(const struct api_deps *d, struct request *r, struct evloop_thread *loop)
{
    struct tier_rt *t = r->tier;
    r->work_ctx = d;
    r->work_loop = loop;
    r->queue_us = r->item.begun_us - r->item.enqueued_us;
    if (r->args.delay_ms > 0 ||
        (r->args.payload && strlen(r->args.payload) > APIWORK_LOOP_BODY_MAX)) {
        if (workpool_hand(t->pool, &r->item) == 0)
            return;
        apiwork_end_here(d, r, NULL, apiwork_classify(-ESHUTDOWN, false), "shutting down");
        return;
    }
    apiwork_acquire(r);
}

/* Work loop: take a connection for r, or wait for one on this loop's timer. */
static void apiwork_acquire(struct request *r)
{
    struct tier_rt *t = r->tier;
    const struct tier_cfg *c = tierset_cfg(t);
    /* From now: a read retried, or moved off a lane that timed out, late in its call has the
     * acquire timeout again, within its call's deadline. */
    int64_t deadline = apiwork_deadline(r);
    int64_t acquire_deadline = mclock_now_us() + c->db_acquire_timeout_ms * 1000;
    if (acquire_deadline > deadline)
        acquire_deadline = deadline;
    /* A retried read does not join a lane: that connection may have died with the other. */
    struct apiwork_lane *lane =
        apiwork_lane_fits(r) && r->db_retries == 0 ? apiwork_lane_find(r) : NULL;
    if (lane) {
        dbpool_count_pipelined(t->db);
        apiwork_lane_push(lane, r);
        return;
    }
    /* The timer first: the answer may come before dbpool_acquire_async returns. */
    r->watch.fire = apiwork_wait_fire;
    r->watch.fd = -1;
    if (evloop_watch(r->work_loop, &r->watch, NULL, acquire_deadline) != 0)
        abort(); /* a timer alone makes no system call and cannot fail */
    r->dbwait.owner = r->item.tenant;
    r->dbwait.deadline_us = acquire_deadline;
    r->dbwait.trust_recent = apiwork_may_retry(r);
    r->dbwait.done = apiwork_pool_done;
    struct dbconn *conn = NULL;
    char err[256] = "";
    int rc = dbpool_acquire_async(t->db, &r->dbwait, &conn, err, sizeof(err));
    if (rc == -EINPROGRESS)
        return;
    evloop_unwatch(&r->watch);
    apiwork_connected(r, conn, rc, err);
}

int apiwork_submit(const struct api_deps *d, struct request *r)
{
    struct workpool *wp = r->tier->pool;
    struct evloop_thread *loop = evloop_current();
    if (loop && r->args.delay_ms == 0) {
        int rc = workpool_begin(wp, r->tenant, &r->item);
        if (rc == 0) {
            apiwork_start(d, r, loop);
            return 0;
        }
        if (rc != -EBUSY)
            return rc;
    }
    return workpool_submit(wp, r->tenant, &r->item);
}

const struct workpool_ops apiwork_ops_template = {.run = apiwork_run, .drop = apiwork_drop};
