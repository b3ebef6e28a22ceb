/*
 * api: routing, the simple endpoints, and /api/data's first checks (see api.h).
 *
 * /api/data, cheapest and least committal first: tier and tenant (400/401) -> arguments and
 * body (400/413/415) -> admission (admission.c: capacity gate, rate limit, database-time
 * budget, breaker, a slot of the tier) -> the statement (datapath.c). A 4xx here changes
 * nothing: it is decided before any limit is consumed. The request's /api/data state is its
 * own (datareq.h), created here as the request is routed there.
 */
#include "api.h"
#include "admin.h"
#include "admission.h"
#include "apierr.h"
#include "assets.h"
#include "auth.h"
#include "breaker.h"
#include "capctl.h"
#include "datareq.h"
#include "dbbudget.h"
#include "evloop.h"
#include "health.h"
#include "history.h"
#include "log.h"
#include "mclock.h"
#include "params.h"
#include "ratelimit.h"
#include "report.h"
#include "request.h"
#include "rlsync.h"
#include "tarpit.h"
#include "tenantstat.h"
#include "tenantview.h"
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
    request_add_header(r, "Allow", allow);
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
    request_reply_static(r, 200, OUTCOME_OK, "application/json", live_body, sizeof(live_body) - 1);
    request_add_header(r, "Cache-Control", "no-store");
    return false;
}

static bool api_readyz(const struct api_deps *d, struct request *r)
{
    bool db = health_ok(d->health);
    bool draining = d->draining && atomic_load_explicit(d->draining, memory_order_relaxed);
    if (db && !draining) {
        request_reply_static(r, 200, OUTCOME_OK, "application/json", ready_body,
                             sizeof(ready_body) - 1);
        request_add_header(r, "Cache-Control", "no-store");
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
    request_reply_owned(r, 503, OUTCOME_UNAVAILABLE, text, strlen(text), free, text);
    request_add_header(r, "Cache-Control", "no-store");
    return false;
}

bool api_is_probe(const char *url)
{
    return !strcmp(url, "/livez") || !strcmp(url, "/readyz");
}

static bool api_health(const struct api_deps *d, struct request *r)
{
    if (health_ok(d->health)) {
        request_reply_static(r, 200, OUTCOME_OK, "application/json", health_ok_body,
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
    request_reply_owned(r, 503, OUTCOME_UNAVAILABLE, text, strlen(text), free, text);
    request_add_header(r, "Retry-After", "1");
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
    struct datareq *q = datareq_of(r);
    if (d->auth) {
        /* AUTH_MODE=apikey: the key decides the tenant and its tier. */
        struct auth_identity id;
        int rc = auth_identify(d->auth, request_header(r, "Authorization"),
                               request_header(r, "X-API-Key"), &id);
        if (rc == -EAGAIN) {
            apierr_reply(r, APIERR_AUTH_UNAVAILABLE);
            return false;
        }
        if (rc) {
            apierr_reply(r, APIERR_UNAUTHORIZED);
            return false;
        }
        q->tier = tierset_find(d->tiers, id.tier);
        if (!q->tier) {
            apierr_reply(r, APIERR_TIER_UNAVAILABLE);
            return false;
        }
        r->tier_name = q->tier->name;
        snprintf(q->tenant, sizeof(q->tenant), "id:%s", id.tenant);
        r->tenant_label = q->tenant + 3;
        q->args.own_rate_limit = id.own_rate_limit;
        q->args.rate_limit = id.rate_limit;
        q->args.own_db_time = id.own_db_time;
        q->args.db_time_ms_per_min = id.db_time_ms_per_min;
        return true;
    }

    const char *tier = request_header(r, "X-Tenant-Tier");
    q->tier = tier ? tierset_find(d->tiers, tier) : NULL;
    if (!q->tier) {
        api_invalid_tier(d, r, tier != NULL);
        return false;
    }
    r->tier_name = q->tier->name;
    const char *tenant = request_header(r, "X-Tenant-ID");
    if (tenant) {
        if (!params_tenant_valid(tenant)) {
            apierr_reply(r, APIERR_INVALID_TENANT);
            return false;
        }
        snprintf(q->tenant, sizeof(q->tenant), "id:%s", tenant);
    } else {
        admission_client_key(d, r, q->tenant, sizeof(q->tenant));
    }
    r->tenant_label = q->tenant + 3;
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

/* force_error and delay_ms let a client fail or slow its tier on purpose (the reference
 * design's verification): refused unless TEST_PARAMS allows them, since where tenants are real
 * one of them could open its tier's breaker for all. */
static bool api_test_params_off(const struct api_deps *d, struct request *r)
{
    const char *v;
    if (d->test_params ||
        (request_arg(r, "force_error", &v) == -ENOENT && request_arg(r, "delay_ms", &v) == -ENOENT))
        return false;
    apierr_replyf(r, APIERR_INVALID_ARGUMENT,
                  "force_error and delay_ms are test parameters, off on this server: "
                  "TEST_PARAMS=on turns them on (its default, auto, has them on in "
                  "AUTH_MODE=header only)");
    return true;
}

static bool api_parse_read_args(const struct api_deps *d, struct request *r)
{
    struct datareq *q = datareq_of(r);
    struct datareq_args *a = &q->args;
    a->limit = API_LIMIT_DEFAULT;
    const char *v;
    if (api_test_params_off(d, r))
        return false;
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
    struct datareq *q = datareq_of(r);
    if (!params_media_type_is(request_header(r, "Content-Type"), "application/json")) {
        apierr_reply(r, APIERR_UNSUPPORTED_MEDIA_TYPE);
        return false;
    }
    char why[200];
    if (params_payload(r->body, r->body_len, &q->args.payload, why, sizeof(why))) {
        apierr_replyf(r, APIERR_INVALID_BODY, "%s", why);
        return false;
    }
    return true;
}

/* Returns true when r was handed on (to a worker, or the tarpit): from then on it owns it. */
static bool api_data(const struct api_deps *d, struct request *r)
{
    if (r->method == METHOD_OTHER) {
        api_method_not_allowed(r, "GET, HEAD, POST");
        return false;
    }
    datareq_new(r);
    if (!api_identify(d, r))
        return false;
    if (r->method == METHOD_POST ? !api_parse_write_body(r) : !api_parse_read_args(d, r))
        return false;
    return admission_admit(d, r, false);
}

/* ---- metrics, dashboard ------------------------------------------------------------------ */

static bool api_bulkheads(const struct api_deps *d, struct request *r)
{
    struct report_snap *snap = xmalloc(sizeof(*snap));
    report_read(d->metrics, snap);
    char *text = report_json(snap);
    free(snap);
    request_reply_owned(r, 200, OUTCOME_OK, text, strlen(text), free, text);
    return false;
}

static bool api_prometheus(const struct api_deps *d, struct request *r)
{
    struct report_snap *snap = xmalloc(sizeof(*snap));
    report_read(d->metrics, snap);
    size_t len = 0;
    char *text = report_prometheus(snap, &len);
    free(snap);
    if (d->tenants) {
        /* The top tenants' families after the tiers' (tenantview.h). */
        char *more = NULL;
        size_t n = 0;
        FILE *f = open_memstream(&more, &n);
        if (!f)
            abort();
        tenantview_prometheus(f, d->tenants, d->tiers, mclock_now_us());
        fclose(f);
        text = xrealloc(text, len + n + 1);
        memcpy(text + len, more, n + 1);
        len += n;
        free(more);
    }
    request_reply_owned(r, 200, OUTCOME_OK, text, len, free, text);
    /* request_set put application/json; the exposition format has its own type. */
    request_set_content_type(r, "text/plain; version=0.0.4; charset=utf-8");
    return false;
}

/* GET /metrics/tenants?tier=&by=&limit=: the heaviest tenants per tier (tenantview.h). */
static bool api_tenants(const struct api_deps *d, struct request *r)
{
    const char *tier, *by_name, *limit_text;
    int64_t limit = TENANTVIEW_LIMIT_DEFAULT;
    if (!api_arg(r, "tier", &tier) || (tier && !tierset_find(d->tiers, tier))) {
        api_invalid_tier(d, r, true);
        return false;
    }
    if (!api_arg(r, "by", &by_name) || (by_name && tenantstat_field_by_name(by_name) < 0)) {
        apierr_replyf(r, APIERR_INVALID_ARGUMENT,
                      "by must be db_time, queue_wait, pool_wait, requests or refused");
        return false;
    }
    if (!api_arg(r, "limit", &limit_text) ||
        (limit_text && params_int(limit_text, 1, TENANTSTAT_TOP_MAX, &limit))) {
        apierr_replyf(r, APIERR_INVALID_ARGUMENT, "limit must be an integer from 1 to %d",
                      TENANTSTAT_TOP_MAX);
        return false;
    }
    if (!d->tenants) {
        apierr_replyf(r, APIERR_NOT_FOUND, "per-tenant accounting is off");
        return false;
    }
    int by = by_name ? tenantstat_field_by_name(by_name) : TENANTSTAT_DB_US;
    char *text = tenantview_json(d->tenants, d->tiers, tier, by, (size_t)limit, mclock_now_us());
    request_reply_owned(r, 200, OUTCOME_OK, text, strlen(text), free, text);
    request_add_header(r, "Cache-Control", "no-store");
    return false;
}

/* The dashboard's files (web/, embedded by assets.c): the page and the parts it names. All
 * no-store, so a page never runs beside the parts of another build (an upgrade, or two
 * instances of different versions behind a balancer). */
static const char api_html[] = "text/html; charset=utf-8";
static const char api_css[] = "text/css; charset=utf-8";
static const char api_js[] = "text/javascript; charset=utf-8";

static const struct api_file {
    const char *path;
    const char *type;
    const char *body;
    const size_t *len;
} api_files[] = {
    {"/dashboard", api_html, assets_dashboard_html, &assets_dashboard_html_len},
    {"/dashboard/dashboard.css", api_css, assets_dashboard_css, &assets_dashboard_css_len},
    {"/dashboard/dashboard-state.js", api_js, assets_dashboard_state_js,
     &assets_dashboard_state_js_len},
    {"/dashboard/dashboard-tiers.js", api_js, assets_dashboard_tiers_js,
     &assets_dashboard_tiers_js_len},
    {"/dashboard/dashboard-charts.js", api_js, assets_dashboard_charts_js,
     &assets_dashboard_charts_js_len},
    {"/dashboard/dashboard-fleet.js", api_js, assets_dashboard_fleet_js,
     &assets_dashboard_fleet_js_len},
    {"/dashboard/dashboard-tenants.js", api_js, assets_dashboard_tenants_js,
     &assets_dashboard_tenants_js_len},
    {"/dashboard/dashboard-page.js", api_js, assets_dashboard_page_js,
     &assets_dashboard_page_js_len},
};

/* GET /dashboard and /dashboard/<file>: an unknown file is a 404 whatever the method, as an
 * unknown path is; a known one answers GET and HEAD only. */
static bool api_dashboard(const struct api_deps *d, struct request *r)
{
    (void)d;
    const struct api_file *f = NULL;
    for (size_t i = 0; i < sizeof(api_files) / sizeof(api_files[0]) && !f; i++)
        if (!strcmp(r->url, api_files[i].path))
            f = &api_files[i];
    if (!f) {
        apierr_reply(r, APIERR_NOT_FOUND);
        return false;
    }
    if (r->method != METHOD_GET && r->method != METHOD_HEAD) {
        api_method_not_allowed(r, "GET, HEAD");
        return false;
    }
    request_reply_static(r, 200, OUTCOME_OK, f->type, f->body, *f->len);
    request_add_header(r, "Cache-Control", "no-store");
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
    request_reply_owned(r, 200, OUTCOME_OK, text, strlen(text), free, text);
    request_add_header(r, "Cache-Control", "no-store");
    return false;
}

static bool api_admin(const struct api_deps *d, struct request *r)
{
    char client[INET6_ADDRSTRLEN];
    admission_client_addr(d, r, client, sizeof(client));
    return admin_handle(d->admin, client, r);
}

/* ---- routing ---------------------------------------------------------------------------- */

/* The listeners a route answers on when OPS_PORT is set (without it, API_PORT answers all). */
enum api_listeners {
    API_PUBLIC = 1, /* API_PORT */
    API_OPS = 2,    /* OPS_PORT */
    API_BOTH = 3,   /* the probes and /health: orchestrators and balancers ask the public port */
};

struct api_route {
    const char *path;
    bool prefix;       /* path is a prefix ending in '/' */
    const char *allow; /* for 405 */
    bool read_only;    /* GET and HEAD only */
    enum api_listeners on;
    bool (*handler)(const struct api_deps *d, struct request *r); /* true: handed to a worker */
};

static const struct api_route api_routes[] = {
    {"/health", false, "GET, HEAD", true, API_BOTH, api_health},
    {"/livez", false, "GET, HEAD", true, API_BOTH, api_livez},
    {"/readyz", false, "GET, HEAD", true, API_BOTH, api_readyz},
    {"/api/data", false, "GET, HEAD, POST", false, API_PUBLIC, api_data},
    {"/metrics/bulkheads", false, "GET, HEAD", true, API_OPS, api_bulkheads},
    {"/metrics/tenants", false, "GET, HEAD", true, API_OPS, api_tenants},
    {"/metrics", false, "GET, HEAD", true, API_OPS, api_prometheus},
    {"/dashboard", false, "GET, HEAD", true, API_OPS, api_dashboard},
    {"/dashboard/data", false, "GET, HEAD", true, API_OPS, api_dashboard_data},
    {"/dashboard/", true, "GET, HEAD", false, API_OPS, api_dashboard}, /* its files (api_files) */
    {"/admin/", true, "POST", false, API_OPS, api_admin},
};

/* Route r, as received on listener `on` (API_PUBLIC or API_OPS): the first route that matches,
 * so an exact path comes before a prefix that covers it. */
static bool api_route(const struct api_deps *d, struct request *r, enum api_listeners on)
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
    if (d->ops_port && !(route->on & on)) {
        apierr_replyf(r, APIERR_NOT_FOUND, "%s",
                      on == API_PUBLIC ? "not served on the public port"
                                       : "not served on the operators' port");
        return false;
    }
    if (route->read_only && r->method != METHOD_GET && r->method != METHOD_HEAD) {
        api_method_not_allowed(r, route->allow);
        return false;
    }
    return route->handler(d, r);
}

bool api_dispatch(const struct api_deps *d, struct request *r)
{
    return api_route(d, r, API_PUBLIC);
}

bool api_dispatch_ops(const struct api_deps *d, struct request *r)
{
    return api_route(d, r, API_OPS);
}
