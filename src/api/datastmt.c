/*
 * datastmt: /api/data's statements and the end of an attempt (see datastmt.h).
 */
#include "datastmt.h"
#include "workpool.h"
#include "datareq.h"
#include "breaker.h"
#include "dbbudget.h"
#include "dbpool.h"
#include "log.h"
#include "mclock.h"
#include "request.h"
#include "tierset.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Statement names, in datastmt_statements order. */
#define STMT_READ_TIER   "read_tier"
#define STMT_READ_TENANT "read_tenant"
#define STMT_WRITE       "write"
#define STMT_FAIL        "fail"
#define STMT_SLEEP       DATASTMT_SLEEP

/* PostgreSQL builds the JSON: the server passes the text through without parsing it. */
const struct dbconn_stmt datastmt_statements[] = {
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
const size_t datastmt_statement_count =
    sizeof(datastmt_statements) / sizeof(datastmt_statements[0]);

/* One round trip at connect. The statements are simple index scans whose best plan does not
 * depend on the parameters: a generic plan skips re-planning on every execution (measured: +11%
 * queries per second of the same PostgreSQL CPU). */
const char datastmt_session_sql[] =
    "SET TimeZone = 'UTC'; SET plan_cache_mode = force_generic_plan";

static void datastmt_pqclear(void *res)
{
    PQclear(res);
}

void datastmt_pick(const struct datareq *q, struct datastmt *s)
{
    const struct tier_cfg *c = tierset_cfg(q->tier);
    const struct datareq_args *a = &q->args;
    const char *tenant = (q->tenant[0] == 'i' && q->tenant[1] == 'd') ? q->tenant + 3 : NULL;
    if (q->r->method == METHOD_POST) {
        *s = (struct datastmt){STMT_WRITE, 3, {c->name, tenant, a->payload}, "", ""};
        return;
    }
    if (a->force_error) {
        *s = (struct datastmt){STMT_FAIL, 1, {c->name}, "", ""};
        return;
    }
    *s = (struct datastmt){tenant ? STMT_READ_TENANT : STMT_READ_TIER, 3, {0}, "", ""};
    snprintf(s->b1, sizeof(s->b1), "%" PRId64, a->cursor);
    snprintf(s->b2, sizeof(s->b2), "%" PRId64, a->limit);
    s->v[0] = tenant ? tenant : c->name;
    s->v[1] = s->b1;
    s->v[2] = s->b2;
}

/* Reply with the statement's result. */
static void datastmt_reply_rows(struct datareq *q, PGresult *res)
{
    if (PQntuples(res) < 1) {
        PQclear(res);
        apierr_replyf(q->r, APIERR_DATABASE_ERROR, "the statement returned no row");
        return;
    }
    const char *json = PQgetvalue(res, 0, 0);
    size_t len = (size_t)PQgetlength(res, 0, 0);
    bool post = q->r->method == METHOD_POST;
    char next[32] = "";
    if (!post && PQnfields(res) >= 3 && !PQgetisnull(res, 0, 1) &&
        strtoll(PQgetvalue(res, 0, 2), NULL, 10) == q->args.limit)
        snprintf(next, sizeof(next), "%s", PQgetvalue(res, 0, 1));
    /* The result's memory is the body: PQclear runs when the response is sent. */
    request_reply_owned(q->r, post ? 201 : 200, OUTCOME_OK, json, len, datastmt_pqclear, res);
    if (next[0])
        request_add_header(q->r, "X-Next-Cursor", next);
}

struct datastmt_end datastmt_classify(int rc, bool have_conn)
{
    switch (rc) {
    case 0:
        return (struct datastmt_end){APIERR_COUNT, BREAKER_SUCCESS, DATASTMT_CONN_KEEP, NULL};
    case -ETIMEDOUT:
        if (!have_conn) /* no connection in time: the tier is saturated, not failing */
            return (struct datastmt_end){APIERR_POOL_TIMEOUT, DATASTMT_NO_VERDICT,
                                         DATASTMT_CONN_NONE, NULL};
        return (struct datastmt_end){APIERR_TIMEOUT, BREAKER_TIMEOUT, DATASTMT_CONN_CANCEL, NULL};
    case -EIO: /* the statement failed in PostgreSQL; the connection is fine */
        return (struct datastmt_end){APIERR_DATABASE_ERROR, BREAKER_FAILURE, DATASTMT_CONN_KEEP,
                                     "db_error"};
    case -ESHUTDOWN:
        return (struct datastmt_end){APIERR_SHUTTING_DOWN, DATASTMT_NO_VERDICT,
                                     have_conn ? DATASTMT_CONN_KEEP : DATASTMT_CONN_NONE, NULL};
    default: /* could not connect, or the connection broke */
        return (struct datastmt_end){APIERR_DATABASE_UNAVAILABLE, BREAKER_FAILURE,
                                     have_conn ? DATASTMT_CONN_CLOSE : DATASTMT_CONN_NONE,
                                     "db_unavailable"};
    }
}

/* The reply for an attempt that failed with row e (err: the database's words). */
static void datastmt_reply_failure(struct datareq *q, const struct tier_cfg *c, enum apierr e,
                                   const char *err)
{
    if (e == APIERR_TIMEOUT)
        apierr_replyf(q->r, e, "the query passed tier %s's %" PRId64 " ms timeout", c->name,
                      c->breaker_timeout_ms);
    else if (e == APIERR_DATABASE_ERROR)
        apierr_replyf(q->r, e, "%s", err);
    else
        apierr_reply(q->r, e);
}

void datastmt_settle(struct datareq *q, struct dbconn *conn, PGresult *res, struct datastmt_end end,
                     const char *err)
{
    struct tier_rt *t = q->tier;
    const struct tier_cfg *c = tierset_cfg(t);
    enum breaker_permit permit = q->permit;
    /* The statement's database time, for the queue's order by cost (its slot is still held),
     * and to its tenant's budget (dbbudget.h; in shadow mode too, so that what it would refuse
     * is counted): here, before the reply is set, so that a client's next request, sent once
     * it has this reply, is admitted knowing this one's debt. */
    workpool_tenant_charge(q->item.tenant, q->r->query_us);
    if (q->r->query_us > 0 && q->budget.limit_ms > 0 && q->tenant[0])
        (void)dbbudget_charge(t->budget, q->tenant, q->budget.limit_ms, q->r->query_us,
                              mclock_now_us());
    if (end.conn == DATASTMT_CONN_KEEP || end.conn == DATASTMT_CONN_CLOSE)
        dbpool_release(t->db, conn, end.conn == DATASTMT_CONN_CLOSE);
    if (end.verdict == DATASTMT_NO_VERDICT)
        breaker_release(t->breaker, permit);
    else
        breaker_record(t->breaker, permit, (enum breaker_outcome)end.verdict, mclock_now_us());
    if (end.log_event)
        log_warn(end.log_event, "tier %s: %s", c->name, err);
    if (end.err == APIERR_COUNT)
        datastmt_reply_rows(q, res);
    else
        datastmt_reply_failure(q, c, end.err, err);
}

void datastmt_drop_dead(struct dbpool *db, struct dbconn *conn)
{
    dbpool_release(db, conn, true);
    dbpool_close_idle(db);
}
