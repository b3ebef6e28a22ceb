/*
 * api: routing, /api/data's request path, and the simple endpoints (see api.h).
 *
 * Order of checks for /api/data, cheapest and least committal first:
 *   tier and tenant (400/401) -> arguments and body (400/413/415) -> [1] rate limit (429)
 *   -> [4] breaker permit (503 circuit_open) -> [2] tier queue (503 bulkhead_full)
 *   -> worker: [3] connection (503 pool_timeout) -> statement (500/504) -> breaker verdict.
 * Nothing before the queue blocks, so an HTTP thread never waits on a worker or the database.
 */
#include "api.h"
#include "admin.h"
#include "apierr.h"
#include "assets.h"
#include "auth.h"
#include "breaker.h"
#include "dbpool.h"
#include "health.h"
#include "history.h"
#include "log.h"
#include "mclock.h"
#include "params.h"
#include "ratelimit.h"
#include "report.h"
#include "request.h"
#include "rlredis.h"
#include "tierset.h"
#include "xalloc.h"

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <netinet/in.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define API_DELAY_MAX_MS    30000 /* delay_ms cap */
#define API_LIMIT_DEFAULT   100   /* rows per page */
#define API_LIMIT_MAX       1000
#define API_CANCEL_GRACE_US 1000000 /* time for a cancelled statement to end cleanly */

/* Statement names, in api_statements order. */
#define STMT_READ_TIER   "read_tier"
#define STMT_READ_TENANT "read_tenant"
#define STMT_WRITE       "write"
#define STMT_FAIL        "fail"
#define STMT_SLEEP       "sleep"

/* PostgreSQL builds the JSON: the server passes the text through without parsing it. */
const struct dbconn_stmt api_statements[] = {
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
const size_t api_statement_count = sizeof(api_statements) / sizeof(api_statements[0]);

/* One round trip at connect. The statements are simple index scans whose best plan does not
 * depend on the parameters: a generic plan skips re-planning on every execution (measured: +11%
 * queries per second of the same PostgreSQL CPU). */
const char api_session_sql[] = "SET TimeZone = 'UTC'; SET plan_cache_mode = force_generic_plan";

static const char health_ok_body[] = "{\"status\":\"healthy\"}";

/* ---- helpers ---------------------------------------------------------------------------- */

static void api_method_not_allowed(struct request *r, const char *allow)
{
    apierr_replyf(r, APIERR_METHOD_NOT_ALLOWED, "allowed methods: %s", allow);
    request_add_header(r, MHD_HTTP_HEADER_ALLOW, allow);
}

/*
 * The client's address as "ip:<addr>", the tenant key when no tenant id is given. Behind a
 * trusted proxy (TRUSTED_PROXIES) the client is the rightmost untrusted X-Forwarded-For entry;
 * from anyone else X-Forwarded-For is ignored, since a client can write what it likes there.
 */
static void api_client_key(const struct api_deps *d, struct request *r, char *out, size_t len)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(r->conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    char addr[INET6_ADDRSTRLEN] = "unknown";
    if (ci && ci->client_addr) {
        const struct sockaddr *sa = ci->client_addr;
        if (sa->sa_family == AF_INET)
            inet_ntop(AF_INET, &((const struct sockaddr_in *)(const void *)sa)->sin_addr, addr,
                      sizeof(addr));
        else if (sa->sa_family == AF_INET6)
            inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr, addr,
                      sizeof(addr));
    }
    if (d->nproxies && params_cidr_contains(d->proxies, d->nproxies, addr)) {
        char fwd[INET6_ADDRSTRLEN];
        if (params_forwarded_client(request_header(r, "X-Forwarded-For"), d->proxies, d->nproxies,
                                    fwd, sizeof(fwd)))
            snprintf(addr, sizeof(addr), "%s", fwd);
    }
    snprintf(out, len, "ip:%s", addr);
}

/* ---- /health ---------------------------------------------------------------------------- */

static bool api_health(const struct api_deps *d, struct request *r)
{
    if (health_ok(d->health)) {
        request_reply_static(r, MHD_HTTP_OK, OUTCOME_OK, "application/json", health_ok_body,
                             sizeof(health_ok_body) - 1);
        return false;
    }
    char reason[256];
    health_reason(d->health, reason, sizeof(reason));
    json_t *o =
        json_pack("{s:s, s:s, s:s}", "status", "unhealthy", "reason",
                  reason[0] ? reason : "database not answering", "request_id", r->request_id);
    char *text = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    request_reply_owned(r, MHD_HTTP_SERVICE_UNAVAILABLE, OUTCOME_UNAVAILABLE, text, strlen(text),
                        free, text);
    request_add_header(r, MHD_HTTP_HEADER_RETRY_AFTER, "1");
    return false;
}

/* ---- /api/data: HTTP thread ----------------------------------------------------------- */

/* 400 invalid_tier, listing the valid tiers. */
static void api_invalid_tier(const struct api_deps *d, struct request *r, bool given)
{
    char names[TIERS_MAX * (TIERS_NAME_MAX + 2)], msg[sizeof(names) + 64];
    char members[TIERS_MAX * (TIERS_NAME_MAX + 3) + 32] = "\"valid_tiers\":";
    tierset_names(d->tiers, names, sizeof(names));
    size_t n = strlen(members);
    tierset_names_json(d->tiers, members + n, sizeof(members) - n);
    snprintf(msg, sizeof(msg), "%s; valid tiers: %s",
             given ? "unknown X-Tenant-Tier" : "missing X-Tenant-Tier header", names);
    apierr_reply_members(r, APIERR_INVALID_TIER, msg, members);
}

/* Pick the tier and the tenant. Returns false after replying with an error. */
static bool api_identify(const struct api_deps *d, struct request *r)
{
    if (d->auth) {
        /* AUTH_MODE=apikey: the key decides the tenant and its tier. */
        struct auth_identity id;
        int rc = auth_identify(d->auth, request_header(r, MHD_HTTP_HEADER_AUTHORIZATION),
                               request_header(r, "X-API-Key"), &id);
        if (rc == -EAGAIN) {
            apierr_reply(r, APIERR_AUTH_UNAVAILABLE);
            return false;
        }
        if (rc) {
            apierr_reply(r, APIERR_UNAUTHORIZED);
            return false;
        }
        r->tier = tierset_find(d->tiers, id.tier);
        if (!r->tier) {
            apierr_reply(r, APIERR_TIER_UNAVAILABLE);
            return false;
        }
        snprintf(r->tenant, sizeof(r->tenant), "id:%s", id.tenant);
        r->tenant_label = r->tenant + 3;
        return true;
    }

    const char *tier = request_header(r, "X-Tenant-Tier");
    r->tier = tier ? tierset_find(d->tiers, tier) : NULL;
    if (!r->tier) {
        api_invalid_tier(d, r, tier != NULL);
        return false;
    }
    const char *tenant = request_header(r, "X-Tenant-ID");
    if (tenant) {
        if (!params_tenant_valid(tenant)) {
            apierr_reply(r, APIERR_INVALID_TENANT);
            return false;
        }
        snprintf(r->tenant, sizeof(r->tenant), "id:%s", tenant);
    } else {
        api_client_key(d, r, r->tenant, sizeof(r->tenant));
    }
    r->tenant_label = r->tenant + 3;
    return true;
}

/* A present, NUL-free query argument, or NULL when absent; false when it holds a NUL. */
static bool api_arg(struct request *r, const char *name, const char **v)
{
    int rc = request_arg(r, name, v);
    if (rc == -ENOENT)
        *v = NULL;
    return rc != -EINVAL;
}

static bool api_parse_read_args(struct request *r)
{
    struct request_args *a = &r->args;
    a->limit = API_LIMIT_DEFAULT;
    const char *v;
    if (!api_arg(r, "force_error", &v) || (v && params_bool(v, &a->force_error))) {
        apierr_replyf(r, APIERR_INVALID_ARGUMENT, "force_error must be true or false");
        return false;
    }
    if (!api_arg(r, "delay_ms", &v) || (v && params_int(v, 0, API_DELAY_MAX_MS, &a->delay_ms))) {
        apierr_replyf(r, APIERR_INVALID_ARGUMENT, "delay_ms must be an integer from 0 to %d",
                      API_DELAY_MAX_MS);
        return false;
    }
    if (!api_arg(r, "limit", &v) || (v && params_int(v, 1, API_LIMIT_MAX, &a->limit))) {
        apierr_replyf(r, APIERR_INVALID_ARGUMENT, "limit must be an integer from 1 to %d",
                      API_LIMIT_MAX);
        return false;
    }
    if (!api_arg(r, "cursor", &v) || (v && params_int(v, 0, INT64_MAX / 2, &a->cursor))) {
        apierr_replyf(r, APIERR_INVALID_ARGUMENT, "cursor must be a row id from a previous page");
        return false;
    }
    return true;
}

static bool api_parse_write_body(struct request *r)
{
    if (!params_media_type_is(request_header(r, MHD_HTTP_HEADER_CONTENT_TYPE),
                              "application/json")) {
        apierr_reply(r, APIERR_UNSUPPORTED_MEDIA_TYPE);
        return false;
    }
    char why[200];
    if (params_payload(r->body, r->body_len, &r->args.payload, why, sizeof(why))) {
        apierr_replyf(r, APIERR_INVALID_BODY, "%s", why);
        return false;
    }
    return true;
}

/* Layer 1. Returns false after replying 429. */
static bool api_rate_limit(const struct api_deps *d, struct request *r, const struct tier_cfg *c)
{
    if (c->rate_limit <= 0)
        return true; /* unlimited: no limiter work at all */
    struct tier_rt *t = r->tier;
    int64_t now = mclock_now_us();
    if (!d->redis ||
        rlredis_check(d->redis, c->name, c->rate_limit, c->rate_window_s, r->tenant, &r->rl))
        ratelimit_check(t->rl, r->tenant, now, &r->rl);
    else
        ratelimit_count(t->rl, r->rl.allowed);
    r->rl_applied = true;
    if (r->rl.allowed)
        return true;
    r->retry_after_us = r->rl.retry_after_us;
    apierr_replyf(r, APIERR_RATE_LIMITED,
                  "tier %s allows %" PRId64 " requests per %" PRId64 " s per tenant", c->name,
                  c->rate_limit, c->rate_window_s);
    return false;
}

/* Returns true when r was handed to a worker: from then on the worker owns it. */
static bool api_data(const struct api_deps *d, struct request *r)
{
    if (r->method == METHOD_OTHER) {
        api_method_not_allowed(r, "GET, HEAD, POST");
        return false;
    }
    if (!api_identify(d, r))
        return false;
    if (r->method == METHOD_POST ? !api_parse_write_body(r) : !api_parse_read_args(r))
        return false;

    struct tier_rt *t = r->tier;
    const struct tier_cfg *c = tierset_cfg(t);
    if (!api_rate_limit(d, r, c))
        return false;

    r->permit = breaker_acquire(t->breaker, mclock_now_us(), &r->retry_after_us);
    if (r->permit == BREAKER_DENY) {
        apierr_replyf(r, APIERR_CIRCUIT_OPEN, "tier %s is failing; its circuit breaker is open",
                      c->name);
        return false;
    }

    /* Suspend before queueing: a worker may finish before this thread returns. */
    request_defer(r);
    int rc = workpool_submit(t->pool, r->tenant, &r->item);
    if (rc == 0)
        return false;
    breaker_release(t->breaker, r->permit);
    if (rc == -ESHUTDOWN)
        apierr_reply(r, APIERR_SHUTTING_DOWN);
    else if (rc == -EDQUOT)
        apierr_replyf(r, APIERR_BULKHEAD_FULL, "this tenant's share of tier %s's queue is full",
                      c->name);
    else
        apierr_replyf(r, APIERR_BULKHEAD_FULL, "tier %s's worker queue is full", c->name);
    request_resume(r);
    return false;
}

/* ---- /api/data: worker thread --------------------------------------------------------- */

static void api_pqclear(void *res)
{
    PQclear(res);
}

/* Run the request's statement(s) on conn. On 0, *res holds the row to send. */
static int api_exec(struct request *r, struct dbconn *conn, int64_t deadline, PGresult **res,
                    char *err, size_t errlen)
{
    const struct tier_cfg *c = tierset_cfg(r->tier);
    const struct request_args *a = &r->args;
    char b1[32], b2[32];
    const char *tenant = (r->tenant[0] == 'i' && r->tenant[1] == 'd') ? r->tenant + 3 : NULL;

    if (a->delay_ms > 0) {
        snprintf(b1, sizeof(b1), "%" PRId64, a->delay_ms);
        const char *v[] = {b1};
        int rc = dbconn_exec(conn, STMT_SLEEP, 1, v, deadline, res, err, errlen);
        PQclear(*res);
        *res = NULL;
        if (rc)
            return rc;
    }
    if (r->method == METHOD_POST) {
        const char *v[] = {c->name, tenant, a->payload};
        return dbconn_exec(conn, STMT_WRITE, 3, v, deadline, res, err, errlen);
    }
    if (a->force_error) {
        const char *v[] = {c->name};
        return dbconn_exec(conn, STMT_FAIL, 1, v, deadline, res, err, errlen);
    }
    snprintf(b1, sizeof(b1), "%" PRId64, a->cursor);
    snprintf(b2, sizeof(b2), "%" PRId64, a->limit);
    if (tenant) {
        const char *v[] = {tenant, b1, b2};
        return dbconn_exec(conn, STMT_READ_TENANT, 3, v, deadline, res, err, errlen);
    }
    const char *v[] = {c->name, b1, b2};
    return dbconn_exec(conn, STMT_READ_TIER, 3, v, deadline, res, err, errlen);
}

/* Reply with the statement's result (worker thread). */
static void api_reply_rows(struct request *r, PGresult *res)
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
                        api_pqclear, res);
    if (next[0])
        request_add_header(r, "X-Next-Cursor", next);
}

/* What becomes of a worker's connection once its attempt is over. */
enum api_conn {
    API_CONN_NONE,   /* it never got one */
    API_CONN_KEEP,   /* back to the pool, reusable */
    API_CONN_CLOSE,  /* back to the pool, closed: it broke */
    API_CONN_CANCEL, /* its statement is still running: cancel it, then back (or closed) */
};

#define API_NO_VERDICT (-1) /* the breaker hears nothing: its permit is released */

/* How a worker's attempt ended: what the breaker hears and which table row answers. */
struct api_end {
    enum apierr err;       /* APIERR_COUNT: the statement's row is the reply */
    int verdict;           /* enum breaker_outcome, or API_NO_VERDICT */
    enum api_conn conn;    /* what happens to the connection */
    const char *log_event; /* logged with the error text, or NULL */
};

/* The result of dbpool_acquire/api_exec, mapped to a verdict and a row. */
static struct api_end api_classify(int rc, bool have_conn)
{
    switch (rc) {
    case 0:
        return (struct api_end){APIERR_COUNT, BREAKER_SUCCESS, API_CONN_KEEP, NULL};
    case -ETIMEDOUT:
        if (!have_conn) /* no connection in time: the tier is saturated, not failing */
            return (struct api_end){APIERR_POOL_TIMEOUT, API_NO_VERDICT, API_CONN_NONE, NULL};
        return (struct api_end){APIERR_TIMEOUT, BREAKER_TIMEOUT, API_CONN_CANCEL, NULL};
    case -EIO: /* the statement failed in PostgreSQL; the connection is fine */
        return (struct api_end){APIERR_DATABASE_ERROR, BREAKER_FAILURE, API_CONN_KEEP, "db_error"};
    case -ESHUTDOWN:
        return (struct api_end){APIERR_SHUTTING_DOWN, API_NO_VERDICT,
                                have_conn ? API_CONN_KEEP : API_CONN_NONE, NULL};
    default: /* could not connect, or the connection broke */
        return (struct api_end){APIERR_DATABASE_UNAVAILABLE, BREAKER_FAILURE,
                                have_conn ? API_CONN_CLOSE : API_CONN_NONE, "db_unavailable"};
    }
}

/* The reply for an attempt that failed with row e (err: the database's words). */
static void api_reply_failure(struct request *r, const struct tier_cfg *c, enum apierr e,
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
 * The one way out of a worker, in this order:
 *   1. the connection goes back to the pool: the client's next request may need it, and a
 *      client that was answered must find it there (tests count idle connections);
 *   2. the breaker hears the verdict (or the permit is released): a client that saw a failure
 *      and asks again must meet the breaker that counted it;
 *   3. the reply is set and the request resumed, last: after request_resume the HTTP thread
 *      owns r and may already have freed it.
 * A timed-out statement is the exception to 1: the client is answered at its deadline, and
 * the statement is cancelled after the resume, because a cancel may take up to
 * API_CANCEL_GRACE_US and the client must not wait for it.
 */
static void api_leave(struct request *r, struct dbconn *conn, PGresult *res, struct api_end end,
                      const char *err)
{
    struct tier_rt *t = r->tier;
    const struct tier_cfg *c = tierset_cfg(t);
    enum breaker_permit permit = r->permit;
    if (end.conn == API_CONN_KEEP || end.conn == API_CONN_CLOSE)
        dbpool_release(t->db, conn, end.conn == API_CONN_CLOSE);
    if (end.verdict == API_NO_VERDICT)
        breaker_release(t->breaker, permit);
    else
        breaker_record(t->breaker, permit, (enum breaker_outcome)end.verdict, mclock_now_us());
    if (end.log_event)
        log_warn(end.log_event, "tier %s: %s", c->name, err);
    if (end.err == APIERR_COUNT)
        api_reply_rows(r, res);
    else
        api_reply_failure(r, c, end.err, err);
    request_resume(r);
    if (end.conn == API_CONN_CANCEL)
        dbpool_release(t->db, conn, dbconn_cancel(conn, mclock_now_us() + API_CANCEL_GRACE_US));
}

static void api_run(struct fairq_item *item, void *ctx)
{
    const struct api_deps *d = ctx;
    struct request *r = (struct request *)(void *)((char *)item - offsetof(struct request, item));
    struct tier_rt *t = r->tier;
    const struct tier_cfg *c = tierset_cfg(t);
    int64_t start = mclock_now_us();
    r->queue_us = start - item->enqueued_us;
    int64_t deadline = start + c->breaker_timeout_ms * 1000;
    int64_t acquire_deadline = start + c->db_acquire_timeout_ms * 1000;
    if (acquire_deadline > deadline)
        acquire_deadline = deadline;
    int retries = r->method == METHOD_POST ? 0 : (int)d->retry_reads;

    char err[300] = "";
    struct dbconn *conn = NULL;
    PGresult *res = NULL;
    int rc;
    for (;;) {
        rc = dbpool_acquire(t->db, item->tenant, acquire_deadline, &conn, err, sizeof(err));
        if (rc)
            break;
        int64_t q0 = mclock_now_us();
        rc = api_exec(r, conn, deadline, &res, err, sizeof(err));
        r->query_us = mclock_now_us() - q0;
        /* A read that met a dead connection is retried once on a fresh one. */
        if (rc == -ECONNRESET && retries-- > 0) {
            dbpool_release(t->db, conn, true);
            conn = NULL;
            log_warn("db_retry", "tier %s: %s; retrying the read on a new connection", c->name,
                     err);
            continue;
        }
        break;
    }
    api_leave(r, conn, res, api_classify(rc, conn != NULL), err);
}

/* Janitor (expired) or shutdown: the request never ran. */
static void api_drop(struct fairq_item *item, enum workpool_drop_reason why, void *ctx)
{
    (void)ctx;
    struct request *r = (struct request *)(void *)((char *)item - offsetof(struct request, item));
    breaker_release(r->tier->breaker, r->permit);
    r->queue_us = mclock_now_us() - item->enqueued_us;
    if (why == WORKPOOL_EXPIRED)
        apierr_replyf(r, APIERR_QUEUE_TIMEOUT, "waited %" PRId64 " ms for a worker of tier %s",
                      r->queue_us / 1000, tierset_cfg(r->tier)->name);
    else
        apierr_reply(r, APIERR_SHUTTING_DOWN);
    request_resume(r);
}

const struct workpool_ops api_workpool_ops_template = {.run = api_run, .drop = api_drop};

/* ---- metrics, dashboard ------------------------------------------------------------------ */

static bool api_bulkheads(const struct api_deps *d, struct request *r)
{
    struct report_snap *snap = xmalloc(sizeof(*snap));
    report_read(d->metrics, snap);
    char *text = report_json(snap);
    free(snap);
    request_reply_owned(r, MHD_HTTP_OK, OUTCOME_OK, text, strlen(text), free, text);
    return false;
}

static bool api_prometheus(const struct api_deps *d, struct request *r)
{
    struct report_snap *snap = xmalloc(sizeof(*snap));
    report_read(d->metrics, snap);
    size_t len = 0;
    char *text = report_prometheus(snap, &len);
    free(snap);
    request_reply_owned(r, MHD_HTTP_OK, OUTCOME_OK, text, len, free, text);
    /* request_set put application/json; the exposition format has its own type. */
    MHD_del_response_header(r->resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    MHD_add_response_header(r->resp, MHD_HTTP_HEADER_CONTENT_TYPE,
                            "text/plain; version=0.0.4; charset=utf-8");
    return false;
}

static bool api_dashboard(const struct api_deps *d, struct request *r)
{
    (void)d;
    request_reply_static(r, MHD_HTTP_OK, OUTCOME_OK, "text/html; charset=utf-8",
                         assets_dashboard_html, assets_dashboard_html_len);
    request_add_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    return false;
}

static bool api_dashboard_data(const struct api_deps *d, struct request *r)
{
    int64_t since = 0;
    const char *v;
    if (!api_arg(r, "since", &v) || (v && params_int(v, 0, INT64_MAX / 2, &since))) {
        apierr_replyf(r, APIERR_INVALID_ARGUMENT, "since must be a sample number");
        return false;
    }
    struct report_process live;
    report_read_process(d->metrics, &live);
    char *text = history_json(d->history, &live, since);
    request_reply_owned(r, MHD_HTTP_OK, OUTCOME_OK, text, strlen(text), free, text);
    request_add_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    return false;
}

static bool api_admin(const struct api_deps *d, struct request *r)
{
    admin_handle(d->tiers, d->admin_token, r);
    return false;
}

/* ---- routing ---------------------------------------------------------------------------- */

struct api_route {
    const char *path;
    bool prefix;       /* path is a prefix ending in '/' */
    const char *allow; /* for 405 */
    bool read_only;    /* GET and HEAD only */
    bool (*handler)(const struct api_deps *d, struct request *r); /* true: handed to a worker */
};

static const struct api_route api_routes[] = {
    {"/health", false, "GET, HEAD", true, api_health},
    {"/api/data", false, "GET, HEAD, POST", false, api_data},
    {"/metrics/bulkheads", false, "GET, HEAD", true, api_bulkheads},
    {"/metrics", false, "GET, HEAD", true, api_prometheus},
    {"/dashboard", false, "GET, HEAD", true, api_dashboard},
    {"/dashboard/data", false, "GET, HEAD", true, api_dashboard_data},
    {"/admin/", true, "POST", false, api_admin},
};

bool api_dispatch(const struct api_deps *d, struct request *r)
{
    const struct api_route *route = NULL;
    for (size_t i = 0; i < sizeof(api_routes) / sizeof(api_routes[0]); i++) {
        const struct api_route *rt = &api_routes[i];
        if (rt->prefix ? !strncmp(r->url, rt->path, strlen(rt->path)) : !strcmp(r->url, rt->path)) {
            route = rt;
            break;
        }
    }
    if (!route) {
        apierr_reply(r, APIERR_NOT_FOUND);
        return false;
    }
    if (route->read_only && r->method != METHOD_GET && r->method != METHOD_HEAD) {
        api_method_not_allowed(r, route->allow);
        return false;
    }
    return route->handler(d, r);
}
