/*
 * api: routing, /api/data's request path, and the simple endpoints (see api.h).
 *
 * Order of checks for /api/data, cheapest and least committal first:
 *   tier and tenant (400/401) -> arguments and body (400/413/415) -> admission: [0] the
 *   capacity gate (503 shed) -> [1] rate limit (429) -> [1b] database-time budget (429
 *   db_time_exhausted) -> [4] breaker permit (503 circuit_open)
 *   -> [2] a slot of the tier, or its queue (503 bulkhead_full) -> [3] connection (503
 *   pool_timeout) -> statement (500/504) -> breaker verdict. Nothing here blocks: the HTTP
 *   (event) thread never waits on a slot, a connection or the database; the statement side is
 *   datapath.c.
 *
 * A refusal gives back what admission took before it (the capacity gate, the breaker permit),
 * then goes out or, when the tarpit says so, is held: its request waits, suspended and holding
 * nothing, and is admitted again from [0] on its own event thread when its time comes (a rate
 * limit's turn, or the Retry-After its client did not wait for). The one thing it keeps is a
 * rate-limit token it was granted: admitted again, it does not pay twice.
 */
#include "api.h"
#include "admin.h"
#include "datapath.h"
#include "apierr.h"
#include "assets.h"
#include "auth.h"
#include "breaker.h"
#include "capctl.h"
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
    request_add_header(r, MHD_HTTP_HEADER_ALLOW, allow);
}

/*
 * The client's address. Behind a trusted proxy (TRUSTED_PROXIES) the client is the rightmost
 * untrusted X-Forwarded-For entry; from anyone else X-Forwarded-For is ignored, since a client
 * can write what it likes there. Several X-Forwarded-For fields are one list in their order
 * (RFC 9110 5.3): a proxy that adds a field of its own rather than appending to the client's is
 * read right, not the client's first field.
 */
static void api_client_addr(const struct api_deps *d, struct request *r, char *out, size_t len)
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
    snprintf(out, len, "%s", addr);
}

/* The client as "ip:<key>": the tenant key when no tenant id is given, and the name of every
 * address-keyed limit and hold. An IPv6 client is its network of CLIENT_IPV6_PREFIX bits
 * (params_client_key): one host commonly holds a whole /64 and could rotate through it. */
static void api_client_key(const struct api_deps *d, struct request *r, char *out, size_t len)
{
    char addr[INET6_ADDRSTRLEN], key[PARAMS_CLIENT_KEY_MAX];
    api_client_addr(d, r, addr, sizeof(addr));
    params_client_key(addr, d->ipv6_prefix, key, sizeof(key));
    snprintf(out, len, "ip:%s", key);
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
        r->args.own_db_time = id.own_db_time;
        r->args.db_time_ms_per_min = id.db_time_ms_per_min;
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
    struct request_args *a = &r->args;
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

/* The rate limit that applies to r: the tenant's own if it has one, else the tier's. */
static int64_t api_limit_of(const struct request *r, const struct tier_cfg *c)
{
    return r->args.own_rate_limit ? r->args.rate_limit : c->rate_limit;
}

enum api_limited {
    API_LIMIT_PASS,    /* admitted */
    API_LIMIT_REFUSED, /* refused: r->rl says when a request would pass */
    API_LIMIT_WAITING, /* the shared limiter holds r until its verdict (api_limit_decided) */
};

static void api_limit_decided(void *ctx, const struct ratelimit_result *verdict);

/* Layer 1. HTTP thread. With the shared limiter (RATE_LIMIT_BACKEND=redis) r may have to wait
 * for Redis's answer (its tenant's lease here is used up): then it is r's limiter's until
 * api_limit_decided, and r must be suspended by the caller. */
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
    if (rc == 1) {
        r->work_ctx = d; /* for api_limit_resume */
        return API_LIMIT_WAITING;
    }
    if (rc == 0) {
        ratelimit_count(t->rl, r->rl.allowed);
    } else if (ratelimit_check_limit(t->rl, r->tenant, limit, now, &r->rl)) {
        /* The table is full: the tenant shares the bucket of its address. */
        char addr[PARAMS_CLIENT_KEY_MAX + 4];
        api_client_key(d, r, addr, sizeof(addr));
        ratelimit_check_overflow(t->rl, addr, limit, now, &r->rl);
    }
    r->rl_applied = true;
    r->retry_after_us = r->rl.retry_after_us;
    return r->rl.allowed ? API_LIMIT_PASS : API_LIMIT_REFUSED;
}

/* A limit in shadow mode would have refused r with `why`: count it (tenantstat, at the end) and
 * log it, and let r pass. */
static void api_shadow(struct request *r, const struct tier_cfg *c, enum tenantstat_reason why)
{
    r->shadow |= 1u << why;
    log_info("shadow_refusal", "tier %s: tenant %s would be refused %s (shadow mode)", c->name,
             r->tenant_label, tenantstat_reason_name(why));
}

/* Layer 1b, the database-time budget: the tenant's own if it has one, else its tier's.
 * Returns false when refused (r->budget says until when). The budget is charged when the
 * request ends (server.c: r->budget.limit_ms), by the time its statement held a connection. */
static bool api_db_budget(struct request *r, const struct tier_cfg *c)
{
    int64_t limit = r->args.own_db_time ? r->args.db_time_ms_per_min : c->db_time_ms_per_min;
    if (limit <= 0 || !r->tier->budget)
        return true;
    dbbudget_check(r->tier->budget, r->tenant, limit, mclock_now_us(), &r->budget);
    r->budget_applied = !c->db_time_shadow; /* a shadow budget shows the client nothing */
    if (r->budget.allowed)
        return true;
    if (c->db_time_shadow) {
        api_shadow(r, c, TENANTSTAT_DB_TIME_EXHAUSTED);
        return true;
    }
    r->retry_after_us = r->budget.retry_after_us;
    return false;
}

/* The reply of refusal e (rc: datapath_submit's, for a full tier), built when it goes out. */
static void api_refusal_reply(struct request *r, enum apierr e, int rc)
{
    const struct tier_cfg *c = tierset_cfg(r->tier);
    switch (e) {
    case APIERR_SHED:
        apierr_replyf(r, e,
                      "tier %s is limited: a tier of higher priority needs the shared capacity",
                      c->name);
        break;
    case APIERR_RATE_LIMITED:
        if (r->args.own_rate_limit)
            apierr_replyf(r, e, "tenant %s is allowed %" PRId64 " requests per %" PRId64 " s",
                          r->tenant_label, api_limit_of(r, c), c->rate_window_s);
        else
            apierr_replyf(r, e, "tier %s allows %" PRId64 " requests per %" PRId64 " s per tenant",
                          c->name, api_limit_of(r, c), c->rate_window_s);
        break;
    case APIERR_DB_TIME_EXHAUSTED:
        apierr_replyf(r, e,
                      "tenant %s used its %" PRId64 " ms of database time per minute (%s %s); "
                      "it is refused until the refill has paid its debt back",
                      r->tenant_label, r->budget.limit_ms,
                      r->args.own_db_time ? "its own budget, in tier" : "tier", c->name);
        break;
    case APIERR_CIRCUIT_OPEN:
        apierr_replyf(r, e, "tier %s is failing; its circuit breaker is open", c->name);
        break;
    case APIERR_BULKHEAD_FULL:
        if (rc == -EDQUOT)
            apierr_replyf(r, e, "this tenant's share of tier %s's queue is full", c->name);
        else
            apierr_replyf(r, e, "tier %s's worker queue is full", c->name);
        break;
    default:
        apierr_reply(r, e);
        break;
    }
}

/*
 * What the tarpit makes of refusal e of r at now: the time to hold r until (<= now: answer it
 * now), with r->retry_after_us set to the Retry-After that holds when it is answered.
 */
static int64_t api_hold_until(const struct api_deps *d, struct request *r, enum apierr e,
                              int64_t now)
{
    enum apierr_hold hold = apierr_held(e);
    if (!d->tarpit || hold == APIERR_HOLD_NONE)
        return now;
    const char *tier = tierset_cfg(r->tier)->name;
    char by_tenant[TIERS_NAME_MAX + FAIRQ_KEY_MAX + 2], by_addr[TIERS_NAME_MAX + 64], addr[56];
    snprintf(by_tenant, sizeof(by_tenant), "%s|%s", tier, r->tenant);
    struct tarpit_refusal rf = {.key1 = by_tenant, .held_us = r->held_us};
    if (hold == APIERR_HOLD_TENANT) {
        /* A rate limit: its exact wait, and its turns one interval apart. */
        rf.wait_us = r->rl.retry_after_us;
        rf.interval_us = ratelimit_interval_us(r->rl.limit, r->rl.window_s);
    } else {
        /* About the tier: the client was told whole seconds; the address is the client too. */
        rf.wait_us = apierr_retry_s(e, r->retry_after_us) * 1000000;
        api_client_key(d, r, addr, sizeof(addr));
        snprintf(by_addr, sizeof(by_addr), "%s|%s", tier, addr);
        if (strcmp(r->tenant, addr) != 0)
            rf.key2 = by_addr;
    }
    struct tarpit_verdict v;
    tarpit_check(d->tarpit, &rf, now, &v);
    if (hold == APIERR_HOLD_TENANT) {
        r->retry_after_us = v.retry_us; /* its turn, behind those already waiting */
        r->rl.retry_after_us = v.retry_us;
    }
    return v.until_us;
}

/*
 * r was refused with e at admission (rc: datapath_submit's). The capacity gate it passed is
 * left at once, charged nothing (it did no work, and a held refusal must not keep its tier's
 * slot); then r is held by the tarpit, or answered. `suspended`: r is suspended already (it was
 * on its way to a slot, or it is being admitted again); answered, it is resumed here. Returns
 * true when held: the tarpit owns r until it releases it.
 */
static bool api_refuse(const struct api_deps *d, struct request *r, bool suspended, enum apierr e,
                       int rc)
{
    struct tier_rt *t = r->tier;
    int64_t now = mclock_now_us();
    if (r->cap_entered_us) {
        capctl_leave(d->capacity, t->index, now, now);
        r->cap_entered_us = 0;
    }
    int64_t until = api_hold_until(d, r, e, now);
    if (until > now) {
        if (!suspended)
            request_defer(r); /* before the tarpit sees it: it may release it at once */
        suspended = true;
        r->work_ctx = d;
        r->held_us += until - now;
        if (tarpit_hold(d->tarpit, r, until))
            return true;
        r->held_us -= until - now; /* too many held: answered at once after all */
    }
    api_refusal_reply(r, e, rc);
    if (r->held_us)
        r->outcome = OUTCOME_HELD; /* a refusal answered after a hold */
    if (suspended)
        request_resume(r);
    return false;
}

/*
 * After the rate limit: [4] a breaker permit, then [2] a worker. `suspended`: as api_admit's.
 * Returns true when r was handed on (to a worker, or to the tarpit).
 */
static bool api_admit_limited(const struct api_deps *d, struct request *r, bool suspended)
{
    struct tier_rt *t = r->tier;
    r->permit = breaker_acquire(t->breaker, mclock_now_us(), &r->retry_after_us);
    if (r->permit == BREAKER_DENY)
        return api_refuse(d, r, suspended, APIERR_CIRCUIT_OPEN, 0);

    /* Suspend before queueing: a worker may finish before this thread returns. */
    if (!suspended)
        request_defer(r);
    int rc = datapath_submit(&d->data, r);
    if (rc == 0)
        return true; /* whoever runs it owns r now */
    breaker_release(t->breaker, r->permit);
    return api_refuse(d, r, true, rc == -ESHUTDOWN ? APIERR_SHUTTING_DOWN : APIERR_BULKHEAD_FULL,
                      rc);
}

/*
 * The rate limit's verdict is known (refused: it would refuse r): apply it, or in shadow mode
 * only count it; then the database-time budget, then api_admit_limited. `suspended`: as
 * api_admit's. Returns true when r was handed on.
 */
static bool api_after_limit(const struct api_deps *d, struct request *r, bool suspended,
                            bool refused)
{
    const struct tier_cfg *c = tierset_cfg(r->tier);
    if (refused) {
        if (!c->rate_limit_shadow)
            return api_refuse(d, r, suspended, APIERR_RATE_LIMITED, 0);
        api_shadow(r, c, TENANTSTAT_RATE_LIMITED);
        r->rl_applied = false; /* a shadow limit shows the client nothing */
        r->retry_after_us = 0;
    } else if (c->rate_limit_shadow) {
        r->rl_applied = false;
    }
    if (!api_db_budget(r, c))
        return api_refuse(d, r, suspended, APIERR_DB_TIME_EXHAUSTED, 0);
    return api_admit_limited(d, r, suspended);
}

/*
 * Admission, from [0] on: on the HTTP thread for a new request, and again on the same thread
 * (api_readmit) for one the tarpit held. Returns true when r was handed on (to a worker, back
 * to the tarpit, or to the shared limiter until its verdict): from then on whoever has it owns
 * it.
 */
static bool api_admit(const struct api_deps *d, struct request *r, bool suspended)
{
    struct tier_rt *t = r->tier;
    const struct tier_cfg *c = tierset_cfg(t);
    /* A request the limiter admitted in an earlier attempt (then refused by the breaker or a
     * full tier, and held) keeps the place it was given: one request, one token. */
    bool charged = r->rl.allowed;
    r->rl_applied = charged; /* the headers of the verdict, once it reached the limiter */
    /* [0] The shared capacity: a higher tier may need it (capctl.h). First, since a tier that
     * is shed should cost as little as a refusal can. */
    int64_t now = mclock_now_us(), retry_us = 0;
    if (d->capacity && !capctl_enter(d->capacity, t->index, now, &retry_us)) {
        r->retry_after_us = retry_us;
        return api_refuse(d, r, suspended, APIERR_SHED, 0);
    }
    r->cap_entered_us = d->capacity ? now : 0;
    if (!charged) {
        switch (api_rate_limit(d, r, c)) {
        case API_LIMIT_REFUSED:
            return api_after_limit(d, r, suspended, true);
        case API_LIMIT_WAITING:
            /* Its verdict comes back to this thread (api_limit_resume), so only after this
             * returns: suspending it now is in time. It keeps its capacity slot meanwhile. */
            if (!suspended)
                request_defer(r);
            return true;
        case API_LIMIT_PASS:
            break;
        }
    }
    return api_after_limit(d, r, suspended, false);
}

/* A verdict of the shared limiter for a request that waited for it (r->task may not be free:
 * the verdict is copied on the limiter's thread, where r must not be touched). */
struct api_limit_wait {
    struct evloop_task task; /* first: api_limit_resume on r's HTTP thread */
    struct request *r;
    struct ratelimit_result verdict;
};

/* r's HTTP thread: the rest of r's admission, with the verdict it waited for (r is suspended). */
static void api_limit_resume(struct evloop_task *task)
{
    struct api_limit_wait *w = (struct api_limit_wait *)(void *)task;
    struct request *r = w->r;
    r->rl = w->verdict;
    free(w);
    const struct api_deps *d = r->work_ctx;
    ratelimit_count(r->tier->rl, r->rl.allowed);
    r->rl_applied = true;
    r->retry_after_us = r->rl.retry_after_us;
    api_after_limit(d, r, true, !r->rl.allowed);
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

/* r's event thread: the tarpit released it; admit it again (it is suspended). */
static void api_readmit(struct evloop_task *task)
{
    struct request *r = (struct request *)(void *)((char *)task - offsetof(struct request, task));
    api_admit(r->work_ctx, r, true);
}

/* The tarpit's thread: a held request is due. Admission is its event thread's to run. */
void api_release_held(void *item, void *ctx)
{
    (void)ctx;
    struct request *r = item;
    r->task.fn = api_readmit;
    evloop_post(r->loop, &r->task);
}

/* Returns true when r was handed on (to a worker, or the tarpit): from then on it owns it. */
static bool api_data(const struct api_deps *d, struct request *r)
{
    if (r->method == METHOD_OTHER) {
        api_method_not_allowed(r, "GET, HEAD, POST");
        return false;
    }
    if (!api_identify(d, r))
        return false;
    if (r->method == METHOD_POST ? !api_parse_write_body(r) : !api_parse_read_args(d, r))
        return false;
    return api_admit(d, r, false);
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
    request_reply_owned(r, MHD_HTTP_OK, OUTCOME_OK, text, len, free, text);
    /* request_set put application/json; the exposition format has its own type. */
    MHD_del_response_header(r->resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    MHD_add_response_header(r->resp, MHD_HTTP_HEADER_CONTENT_TYPE,
                            "text/plain; version=0.0.4; charset=utf-8");
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
    request_reply_owned(r, MHD_HTTP_OK, OUTCOME_OK, text, strlen(text), free, text);
    request_add_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
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
    char client[INET6_ADDRSTRLEN];
    api_client_addr(d, r, client, sizeof(client));
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
    {"/admin/", true, "POST", false, API_OPS, api_admin},
};

/* Route r, as received on listener `on` (API_PUBLIC or API_OPS). */
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
