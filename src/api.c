/*
 * api: routing, /api/data's request path, and the simple endpoints (see api.h).
 *
 * Order of checks for /api/data, cheapest and least committal first:
 *   tier and tenant (400/401) -> arguments and body (400/413/415) -> [1] rate limit (429)
 *   -> [4] breaker permit (503 circuit_open) -> [2] a slot of the tier, or its queue
 *   (503 bulkhead_full) -> [3] connection (503 pool_timeout) -> statement (500/504) -> breaker
 *   verdict. Nothing here blocks: the HTTP (event) thread never waits on a slot, a connection
 *   or the database; the statement side is apiwork.c.
 */
#include "api.h"
#include "admin.h"
#include "apiwork.h"
#include "apierr.h"
#include "assets.h"
#include "auth.h"
#include "breaker.h"
#include "capctl.h"
#include "evloop.h"
#include "health.h"
#include "history.h"
#include "mclock.h"
#include "params.h"
#include "ratelimit.h"
#include "report.h"
#include "request.h"
#include "rlsync.h"
#include "tarpit.h"
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

#define API_DELAY_MAX_MS  30000 /* delay_ms cap */
#define API_LIMIT_DEFAULT 100   /* rows per page */
#define API_LIMIT_MAX     1000

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
 * Several X-Forwarded-For fields are one list in their order (RFC 9110 5.3): a proxy that adds
 * a field of its own rather than appending to the client's is read right, not the client's
 * first field.
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
        char *xff = request_header_list(r, "X-Forwarded-For");
        if (params_forwarded_client(xff, d->proxies, d->nproxies, fwd, sizeof(fwd)))
            snprintf(addr, sizeof(addr), "%s", fwd);
        free(xff);
    }
    snprintf(out, len, "ip:%s", addr);
}

/* ---- /health, /livez, /readyz ------------------------------------------------------------ */

/*
 * /livez: the process serves requests (the HTTP threads answer); nothing else is asked, so a
 * database outage never makes an orchestrator restart a healthy process. /readyz: it should
 * be sent traffic: the database answers and no shutdown has begun; 503 with the reasons
 * otherwise. /health is the seed's: the database alone, {"status":"healthy"}.
 */
static const char live_body[] = "{\"status\":\"live\"}";
static const char ready_body[] = "{\"status\":\"ready\"}";

static bool api_livez(const struct api_deps *d, struct request *r)
{
    (void)d;
    request_reply_static(r, MHD_HTTP_OK, OUTCOME_OK, "application/json", live_body,
                         sizeof(live_body) - 1);
    request_add_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    return false;
}

static bool api_readyz(const struct api_deps *d, struct request *r)
{
    bool db = health_ok(d->health);
    bool draining = d->draining && atomic_load_explicit(d->draining, memory_order_relaxed);
    if (db && !draining) {
        request_reply_static(r, MHD_HTTP_OK, OUTCOME_OK, "application/json", ready_body,
                             sizeof(ready_body) - 1);
        request_add_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
        return false;
    }
    char why[256] = "";
    if (!db)
        health_reason(d->health, why, sizeof(why));
    char reason[320];
    snprintf(reason, sizeof(reason), "%s%s%s%s",
             draining ? "shutting down: in-flight requests are finishing" : "",
             draining && !db ? "; " : "",
             db ? "" : "database: ", db ? "" : (why[0] ? why : "not answering"));
    json_t *o = json_pack("{s:s, s:s, s:{s:s, s:b}, s:s}", "status", "not_ready", "reason", reason,
                          "checks", "database", db ? "ok" : "unreachable", "draining", draining,
                          "request_id", r->request_id);
    char *text = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    request_reply_owned(r, MHD_HTTP_SERVICE_UNAVAILABLE, OUTCOME_UNAVAILABLE, text, strlen(text),
                        free, text);
    request_add_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    return false;
}

bool api_is_probe(const char *url)
{
    return !strcmp(url, "/livez") || !strcmp(url, "/readyz");
}

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
        r->args.own_rate_limit = id.own_rate_limit;
        r->args.rate_limit = id.rate_limit;
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

enum api_limited {
    API_LIMIT_PASS,    /* go on */
    API_LIMIT_REFUSED, /* 429 set */
    API_LIMIT_WAITING, /* the shared limiter holds r until its verdict (api_limit_decided) */
};

/* r's verdict is in r->rl (counted): reply 429 when it refuses. */
static enum api_limited api_limit_verdict(struct request *r, const struct tier_cfg *c,
                                          int64_t limit)
{
    r->rl_applied = true;
    if (r->rl.allowed)
        return API_LIMIT_PASS;
    r->retry_after_us = r->rl.retry_after_us;
    if (r->args.own_rate_limit)
        apierr_replyf(r, APIERR_RATE_LIMITED,
                      "tenant %s is allowed %" PRId64 " requests per %" PRId64 " s",
                      r->tenant_label, limit, c->rate_window_s);
    else
        apierr_replyf(r, APIERR_RATE_LIMITED,
                      "tier %s allows %" PRId64 " requests per %" PRId64 " s per tenant", c->name,
                      limit, c->rate_window_s);
    return API_LIMIT_REFUSED;
}

static int64_t api_limit_of(const struct request *r, const struct tier_cfg *c)
{
    return r->args.own_rate_limit ? r->args.rate_limit : c->rate_limit;
}

static void api_limit_decided(void *ctx, const struct ratelimit_result *verdict);

/* Layer 1, at the tenant's own limit if it has one, else the tier's. */
static enum api_limited api_rate_limit(const struct api_deps *d, struct request *r,
                                       const struct tier_cfg *c)
{
    int64_t limit = api_limit_of(r, c);
    if (limit <= 0)
        return API_LIMIT_PASS; /* unlimited: no limiter work at all */
    struct tier_rt *t = r->tier;
    int64_t now = mclock_now_us();
    int rc = d->redis ? rlsync_check(d->redis, c->name, r->tenant, limit, c->rate_window_s, now,
                                     &r->rl, api_limit_decided, r)
                      : -ENOSPC;
    if (rc == 1)
        return API_LIMIT_WAITING;
    if (rc < 0)
        ratelimit_check_limit(t->rl, r->tenant, limit, now, &r->rl); /* counts it */
    else
        ratelimit_count(t->rl, r->rl.allowed);
    return api_limit_verdict(r, c, limit);
}

/*
 * r was just refused on this thread (its reply is set). When the refusal carries a Retry-After
 * and its client (the tenant, and for a refusal about the tier also the address, within the
 * tier: apierr_held) is back before the time it was last told, hold it in the tarpit until
 * then. `deferred` says r is suspended already (it was
 * on its way to the queue); it is resumed here unless held. Returns true when held: the tarpit
 * owns r until it resumes it.
 */
static bool api_refused(const struct api_deps *d, struct request *r, bool deferred)
{
    enum apierr_hold hold = r->error ? apierr_held((enum apierr)(r->error - 1)) : APIERR_HOLD_NONE;
    if (!d->tarpit || hold == APIERR_HOLD_NONE || !r->reply_retry_s) {
        if (deferred)
            request_resume(r);
        return false;
    }
    const char *tier = tierset_cfg(r->tier)->name;
    char by_tenant[TIERS_NAME_MAX + FAIRQ_KEY_MAX + 2], by_addr[TIERS_NAME_MAX + 64], addr[56];
    snprintf(by_tenant, sizeof(by_tenant), "%s|%s", tier, r->tenant);
    api_client_key(d, r, addr, sizeof(addr));
    snprintf(by_addr, sizeof(by_addr), "%s|%s", tier, addr);
    int64_t now = mclock_now_us();
    bool addr_too = hold == APIERR_HOLD_TIER && strcmp(r->tenant, addr) != 0;
    int64_t until = tarpit_check(d->tarpit, by_tenant, addr_too ? by_addr : NULL,
                                 r->reply_retry_s * 1000000, now);
    if (until <= now) {
        if (deferred)
            request_resume(r);
        return false;
    }
    enum metrics_outcome refused = r->outcome;
    r->outcome = OUTCOME_HELD;
    r->held_us = until - now;
    if (!deferred)
        request_defer(r); /* before the tarpit sees it: it may release it at once */
    if (tarpit_hold(d->tarpit, r, until))
        return true;
    r->outcome = refused; /* too many held: answered at once after all */
    r->held_us = 0;
    request_resume(r);
    return false;
}

/* The tarpit's thread: a held refusal is due. */
void api_release_held(void *item, void *ctx)
{
    (void)ctx;
    request_resume(item);
}

/*
 * After the rate limit: [4] a breaker permit, then [2] a worker. `deferred`: r is suspended
 * already (it waited for the shared limiter's verdict). Returns true when r was handed on (to a
 * worker or the tarpit), false with r's reply set (and r resumed when it was deferred).
 */
static bool api_admit(const struct api_deps *d, struct request *r, const struct tier_cfg *c,
                      bool deferred)
{
    struct tier_rt *t = r->tier;
    r->permit = breaker_acquire(t->breaker, mclock_now_us(), &r->retry_after_us);
    if (r->permit == BREAKER_DENY) {
        apierr_replyf(r, APIERR_CIRCUIT_OPEN, "tier %s is failing; its circuit breaker is open",
                      c->name);
        return api_refused(d, r, deferred);
    }

    /* Suspend before queueing: a worker may finish before this thread returns. */
    if (!deferred)
        request_defer(r);
    int rc = apiwork_submit(d, r);
    if (rc == 0)
        return true; /* whoever runs it owns r now */
    breaker_release(t->breaker, r->permit);
    if (rc == -ESHUTDOWN)
        apierr_reply(r, APIERR_SHUTTING_DOWN);
    else if (rc == -EDQUOT)
        apierr_replyf(r, APIERR_BULKHEAD_FULL, "this tenant's share of tier %s's queue is full",
                      c->name);
    else
        apierr_replyf(r, APIERR_BULKHEAD_FULL, "tier %s's worker queue is full", c->name);
    return api_refused(d, r, true);
}

/* A verdict of the shared limiter for a request that waited for it. */
struct api_limit_wait {
    struct evloop_task task; /* first: api_limit_resume on the request's HTTP thread */
    struct request *r;
    struct ratelimit_result verdict;
};

/* r's HTTP thread: the rest of r's admission, with the verdict it waited for. */
static void api_limit_resume(struct evloop_task *task)
{
    struct api_limit_wait *w = (struct api_limit_wait *)(void *)task;
    struct request *r = w->r;
    r->rl = w->verdict;
    free(w);
    const struct api_deps *d = r->work_ctx;
    const struct tier_cfg *c = tierset_cfg(r->tier);
    ratelimit_count(r->tier->rl, r->rl.allowed);
    if (api_limit_verdict(r, c, api_limit_of(r, c)) == API_LIMIT_REFUSED)
        api_refused(d, r, true);
    else
        api_admit(d, r, c, true);
}

/* The shared limiter's thread (rlsync): hand the verdict to r's HTTP thread, touching nothing
 * of r but the loop it belongs to. */
static void api_limit_decided(void *ctx, const struct ratelimit_result *verdict)
{
    struct request *r = ctx;
    struct api_limit_wait *w = xmalloc(sizeof(*w));
    w->task = (struct evloop_task){.fn = api_limit_resume};
    w->r = r;
    w->verdict = *verdict;
    evloop_post(r->loop, &w->task);
}

/* Returns true when r was handed on (a worker, the tarpit, the shared limiter): from then on
 * that owns it. */
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
    /* [0] The shared capacity: a higher tier may need it (capctl.h). First, since a tier that
     * is shed should cost as little as a refusal can. */
    int64_t now = mclock_now_us(), retry_us = 0;
    if (d->capacity && !capctl_enter(d->capacity, t->index, now, &retry_us)) {
        r->retry_after_us = retry_us;
        apierr_replyf(r, APIERR_SHED,
                      "tier %s is limited: a tier of higher priority needs the "
                      "shared capacity",
                      c->name);
        return api_refused(d, r, false);
    }
    r->cap_entered_us = d->capacity ? now : 0;
    r->work_ctx = d; /* for api_limit_resume */
    switch (api_rate_limit(d, r, c)) {
    case API_LIMIT_REFUSED:
        return api_refused(d, r, false);
    case API_LIMIT_WAITING:
        /* Its verdict runs on this thread (api_limit_resume), so only after this returns. */
        request_defer(r);
        return true;
    case API_LIMIT_PASS:
        break;
    }
    return api_admit(d, r, c, false);
}

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
    char client[INET6_ADDRSTRLEN + 8];
    api_client_key(d, r, client, sizeof(client));
    return admin_handle(d->admin, client + 3, r); /* without "ip:" */
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
    {"/livez", false, "GET, HEAD", true, api_livez},
    {"/readyz", false, "GET, HEAD", true, api_readyz},
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
