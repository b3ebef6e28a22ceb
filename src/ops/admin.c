/*
 * admin: the operator endpoints of admin.h, on the HTTP thread: the token and the limit on
 * failed attempts, the routes, every check of a tenant request, and the hand-off of a valid one
 * to the admin worker.
 *
 * DESIGN: the failed attempts live in a keytab (its shards' mutexes) as one GCRA time per
 * address (ratelimit_gcra); the shared overflow budget has its own mutex; counters are atomics.
 * Any HTTP thread may run admin_handle at once.
 */
#include "admin.h"
#include "adminwork.h"
#include "apierr.h"
#include "auth.h"
#include "breaker.h"
#include "keytab.h"
#include "mclock.h"
#include "params.h"
#include "ratelimit.h"
#include "request.h"
#include "tenantdb.h"
#include "tenantreq.h"
#include "tenantview.h"
#include "tierset.h"
#include "xalloc.h"

#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct admin {
    char *token;           /* owned: ADMIN_TOKEN */
    char actor[24];        /* "token:" and 8 hex digits of the token's SHA-256: who, in audits */
    struct tierset *tiers; /* not owned */
    struct tenantstat *tenants;  /* not owned; NULL: no accounting */
    struct adminwork *work;      /* owned: the worker that runs tenant requests */
    struct keytab *fails;        /* owned: each address's GCRA time for failed attempts */
    pthread_mutex_t overflow_mu; /* guards overflow_tat */
    int64_t overflow_tat;        /* the budget shared by addresses the table has no room for */
    atomic_uint_least64_t accepted, refused, limited;
};

int admin_create(const struct admin_cfg *cfg, struct admin **out)
{
    struct admin *a = xcalloc(1, sizeof(*a));
    a->token = xstrdup(cfg->token);
    a->tiers = cfg->tiers;
    a->tenants = cfg->tenants;
    char hash[65];
    auth_hash_key(cfg->token, hash);
    snprintf(a->actor, sizeof(a->actor), "token:%.8s", hash);
    int rc = adminwork_start(cfg->conninfo, &a->work);
    if (rc) {
        free(a->token);
        free(a);
        return rc;
    }
    a->fails = keytab_create(ADMIN_AUTH_CLIENTS);
    pthread_mutex_init(&a->overflow_mu, NULL);
    *out = a;
    return 0;
}

void admin_stats(struct admin *a, struct admin_stats *out)
{
    out->accepted = atomic_load_explicit(&a->accepted, memory_order_relaxed);
    out->refused = atomic_load_explicit(&a->refused, memory_order_relaxed);
    out->limited = atomic_load_explicit(&a->limited, memory_order_relaxed);
}

void admin_expire(struct admin *a, int64_t now_us)
{
    if (a)
        adminwork_expire(a->work, now_us);
}

void admin_stop(struct admin *a)
{
    if (a)
        adminwork_stop(a->work);
}

void admin_destroy(struct admin *a)
{
    if (!a)
        return;
    adminwork_destroy(a->work);
    keytab_destroy(a->fails);
    pthread_mutex_destroy(&a->overflow_mu);
    free(a->token);
    free(a);
}

/* ---- failed attempts ---------------------------------------------------------------------- */

/* One more failure against the GCRA time *tat at now; whether it fitted the budget. */
static bool admin_fail_step(int64_t *tat, void *ctx)
{
    struct ratelimit_result r;
    ratelimit_gcra(ADMIN_AUTH_FAILURES, ADMIN_AUTH_WINDOW_S, tat, *(const int64_t *)ctx, &r);
    return r.allowed;
}

/* Whether client's failures go to the shared budget: it is not tracked and has no room. */
static bool admin_overflows(struct admin *a, const char *client, int64_t now)
{
    return keytab_get(a->fails, client, now) == 0 && keytab_count(a->fails) >= ADMIN_AUTH_CLIENTS;
}

/* How long client must wait before its token is compared again (0: now). */
static int64_t admin_auth_wait(struct admin *a, const char *client, int64_t now)
{
    int64_t tat;
    if (admin_overflows(a, client, now)) {
        pthread_mutex_lock(&a->overflow_mu);
        tat = a->overflow_tat;
        pthread_mutex_unlock(&a->overflow_mu);
    } else {
        tat = keytab_get(a->fails, client, now);
    }
    struct ratelimit_result r;
    ratelimit_gcra(ADMIN_AUTH_FAILURES, ADMIN_AUTH_WINDOW_S, &tat, now, &r); /* a copy: a look */
    return r.allowed ? 0 : r.retry_after_us;
}

static void admin_auth_failed(struct admin *a, const char *client, int64_t now)
{
    if (!admin_overflows(a, client, now) &&
        keytab_update(a->fails, client, now, admin_fail_step, &now) != -ENOSPC)
        return;
    pthread_mutex_lock(&a->overflow_mu);
    admin_fail_step(&a->overflow_tat, &now);
    pthread_mutex_unlock(&a->overflow_mu);
}

/* ---- helpers ------------------------------------------------------------------------------ */

static bool admin_is(const struct request *r, const char *method)
{
    return !strcmp(r->method_name, method);
}

static bool admin_is_read(const struct request *r)
{
    return r->method == METHOD_GET || r->method == METHOD_HEAD;
}

static bool admin_not_allowed(struct request *r, const char *allow)
{
    apierr_replyf(r, APIERR_METHOD_NOT_ALLOWED, "allowed methods: %s", allow);
    request_add_header(r, "Allow", allow);
    return false;
}

/* 400 for a request tenantreq refused, with the code of what is wrong. Returns false. */
static bool admin_refuse(struct admin *a, struct request *r, enum tenantreq_error e,
                         const char *why)
{
    if (e == TENANTREQ_BAD_TIER) {
        char members[TIERS_MAX * (TIERS_NAME_MAX + 3) + 32] = "\"valid_tiers\":";
        size_t n = strlen(members);
        tierset_names_json(a->tiers, members + n, sizeof(members) - n);
        apierr_reply_members(r, APIERR_INVALID_TIER, why, members);
    } else {
        apierr_replyf(r,
                      e == TENANTREQ_BAD_NAME     ? APIERR_INVALID_TENANT
                      : e == TENANTREQ_BAD_NUMBER ? APIERR_INVALID_ARGUMENT
                                                  : APIERR_INVALID_BODY,
                      "%s", why);
    }
    return false;
}

/* A tenant name from the path or the query into out; false after a 400. */
static bool admin_name(struct admin *a, struct request *r, const char *text, char *out)
{
    struct tenantreq req;
    char why[200];
    tenantreq_init(&req);
    enum tenantreq_error e =
        tenantreq_set_text(&req, "name", text, tierset_snapshot(a->tiers), why, sizeof(why));
    if (e != TENANTREQ_OK)
        return admin_refuse(a, r, e, why);
    memcpy(out, req.name, sizeof(req.name));
    return true;
}

/* The JSON body of a create or an update into job->req; false after a 4xx. */
static bool admin_body(struct admin *a, struct request *r, enum tenantreq_kind kind,
                       struct adminwork_job *job)
{
    if (!params_media_type_is(request_header(r, "Content-Type"), "application/json")) {
        apierr_replyf(r, APIERR_UNSUPPORTED_MEDIA_TYPE, "the body must be application/json");
        return false;
    }
    char why[300];
    enum tenantreq_error e = tenantreq_parse_json(
        kind, r->body, r->body_len, tierset_snapshot(a->tiers), &job->req, why, sizeof(why));
    return e == TENANTREQ_OK || admin_refuse(a, r, e, why);
}

static bool admin_no_body(struct request *r)
{
    if (r->body_len == 0)
        return true;
    apierr_replyf(r, APIERR_INVALID_BODY, "this request takes no body");
    return false;
}

/* A present query argument, NULL when absent; false after a 400 when it holds a NUL. */
static bool admin_arg(struct request *r, const char *name, const char **v)
{
    if (request_arg(r, name, v) != -EINVAL)
        return true;
    apierr_replyf(r, APIERR_INVALID_ARGUMENT, "%s must not contain a NUL byte", name);
    return false;
}

/* limit=, and audit's before= and tenant=, or list's after=; false after a 400. */
static bool admin_page(struct admin *a, struct request *r, struct adminwork_job *job)
{
    const char *v;
    job->limit = ADMIN_PAGE_DEFAULT;
    if (!admin_arg(r, "limit", &v))
        return false;
    if (v && params_int(v, 1, TENANTDB_PAGE_MAX, &job->limit)) {
        apierr_replyf(r, APIERR_INVALID_ARGUMENT, "limit must be an integer from 1 to %d",
                      TENANTDB_PAGE_MAX);
        return false;
    }
    bool audit = job->op == ADMINWORK_AUDIT;
    if (audit) {
        if (!admin_arg(r, "before", &v))
            return false;
        if (v && params_int(v, 1, INT64_MAX / 2, &job->before)) {
            apierr_replyf(r, APIERR_INVALID_ARGUMENT,
                          "before must be an event id (the \"next\" of the previous page)");
            return false;
        }
    }
    if (!admin_arg(r, audit ? "tenant" : "after", &v))
        return false;
    return !v || admin_name(a, r, v, job->name);
}

/* Hand a checked job to the worker. True when it took it (and r with it). */
static bool admin_queue(struct admin *a, const char *client, struct request *r,
                        struct adminwork_job *job)
{
    job->r = r;
    snprintf(job->actor, sizeof(job->actor), "%s", a->actor);
    snprintf(job->address, sizeof(job->address), "%s", client);
    /* Suspend before queueing: the worker may answer before this thread returns. */
    request_defer(r);
    int rc = adminwork_submit(a->work, job);
    if (rc == 0)
        return true;
    free(job);
    if (rc == -ESHUTDOWN)
        apierr_reply(r, APIERR_SHUTTING_DOWN);
    else
        apierr_replyf(r, APIERR_ADMIN_BUSY, "%d admin requests are waiting already",
                      ADMINWORK_QUEUE_MAX);
    request_resume(r);
    return false;
}

/* ---- routes ----------------------------------------------------------------------------- */

/* /admin/breaker/<tier>/<action> */
static bool admin_breaker(struct admin *a, struct request *r, const char *path)
{
    if (r->method != METHOD_POST)
        return admin_not_allowed(r, "POST");
    char tier[TIERS_NAME_MAX + 1], action[16];
    int n = 0;
    if (sscanf(path, "breaker/%32[a-z0-9_-]/%15[a-z]%n", tier, action, &n) != 2 ||
        path[n] != '\0') {
        apierr_replyf(r, APIERR_NOT_FOUND, "use POST /admin/breaker/<tier>/(open|disable|reset)");
        return false;
    }
    struct tier_rt *t = tierset_find(a->tiers, tier);
    if (!t) {
        apierr_reply(r, APIERR_UNKNOWN_TIER);
        return false;
    }
    enum breaker_mode mode;
    if (!strcmp(action, "open"))
        mode = BREAKER_FORCED_OPEN;
    else if (!strcmp(action, "disable"))
        mode = BREAKER_DISABLED;
    else if (!strcmp(action, "reset"))
        mode = BREAKER_AUTO;
    else {
        apierr_replyf(r, APIERR_NOT_FOUND, "actions: open, disable, reset");
        return false;
    }
    int64_t now = mclock_now_us();
    breaker_force(t->breaker, mode, true, now);
    struct breaker_snapshot s;
    breaker_snapshot(t->breaker, now, &s);
    json_t *o = json_pack("{s:s, s:s, s:s}", "tier", tier, "state", breaker_state_name(s.state),
                          "mode", breaker_mode_name(s.mode));
    char *text = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    request_reply_owned(r, 200, OUTCOME_OK, text, strlen(text), free, text);
    return false;
}

/* The collection, /admin/tenants: list or create. */
static bool admin_collection(struct admin *a, struct request *r, struct adminwork_job *job)
{
    if (admin_is_read(r)) {
        job->op = ADMINWORK_LIST;
        return admin_no_body(r) && admin_page(a, r, job);
    }
    if (!admin_is(r, "POST"))
        return admin_not_allowed(r, "GET, HEAD, POST");
    job->op = ADMINWORK_CREATE;
    return admin_body(a, r, TENANTREQ_CREATE, job);
}

/* One tenant, /admin/tenants/<name>: read, change, revoke. */
static bool admin_item(struct admin *a, struct request *r, struct adminwork_job *job)
{
    if (admin_is_read(r)) {
        job->op = ADMINWORK_GET;
        return admin_no_body(r);
    }
    if (admin_is(r, "PATCH")) {
        job->op = ADMINWORK_UPDATE;
        return admin_body(a, r, TENANTREQ_UPDATE, job);
    }
    if (!admin_is(r, "DELETE"))
        return admin_not_allowed(r, "GET, HEAD, PATCH, DELETE");
    job->op = ADMINWORK_REVOKE;
    return admin_no_body(r);
}

/* /admin/tenants[/<name>[/keys]]: rest is what follows "/admin/tenants". Fills job's op and
 * arguments; false after replying. */
static bool admin_tenant_job(struct admin *a, struct request *r, const char *rest,
                             struct adminwork_job *job)
{
    if (rest[0] == '\0')
        return admin_collection(a, r, job);
    if (rest[0] != '/') {
        apierr_reply(r, APIERR_NOT_FOUND);
        return false;
    }
    const char *slash = strchr(rest + 1, '/');
    size_t len = slash ? (size_t)(slash - rest - 1) : strlen(rest + 1);
    char text[PARAMS_TENANT_MAX + 2]; /* one more than a name: too long is refused, not cut */
    snprintf(text, sizeof(text), "%.*s", (int)(len < sizeof(text) - 1 ? len : sizeof(text) - 1),
             rest + 1);
    if (!admin_name(a, r, text, job->name))
        return false;
    const char *sub = rest + 1 + len;
    if (sub[0] == '\0')
        return admin_item(a, r, job);
    if (strcmp(sub, "/keys") != 0) {
        apierr_reply(r, APIERR_NOT_FOUND);
        return false;
    }
    if (!admin_is(r, "POST"))
        return admin_not_allowed(r, "POST");
    job->op = ADMINWORK_ROTATE;
    return admin_no_body(r);
}

/* /admin/tenants/<name>/usage: from memory, on this thread (tenantview.h). */
static bool admin_usage(struct admin *a, struct request *r, const char *path)
{
    if (!admin_is_read(r))
        return admin_not_allowed(r, "GET, HEAD");
    const char *name = path + strlen("tenants/");
    size_t len = strlen(name) - strlen("/usage");
    char text[PARAMS_TENANT_MAX + 2], tenant[sizeof(((struct tenantreq *)0)->name)];
    snprintf(text, sizeof(text), "%.*s", (int)(len < sizeof(text) - 1 ? len : sizeof(text) - 1),
             name);
    if (!admin_name(a, r, text, tenant))
        return false;
    if (!a->tenants) {
        apierr_replyf(r, APIERR_NOT_FOUND, "per-tenant accounting is off (TENANT_ACCOUNTING)");
        return false;
    }
    char *body = tenantview_usage_json(a->tenants, a->tiers, tenant, mclock_now_us());
    request_reply_owned(r, 200, OUTCOME_OK, body, strlen(body), free, body);
    request_add_header(r, "Cache-Control", "no-store");
    return false;
}

/* Whether path is tenants/<one segment>/usage. */
static bool admin_is_usage(const char *path)
{
    size_t n = strlen(path);
    if (strncmp(path, "tenants/", strlen("tenants/")) != 0 || n < strlen("tenants/x/usage") ||
        strcmp(path + n - strlen("/usage"), "/usage") != 0)
        return false;
    const char *slash = strchr(path + strlen("tenants/"), '/');
    return slash == path + n - strlen("/usage");
}

/* The tenant endpoints and the audit log: check, then queue. */
static bool admin_tenants(struct admin *a, const char *client, struct request *r, const char *path)
{
    struct adminwork_job *job = xcalloc(1, sizeof(*job));
    bool ok;
    if (!strcmp(path, "audit")) {
        job->op = ADMINWORK_AUDIT;
        ok = admin_is_read(r) ? admin_no_body(r) && admin_page(a, r, job)
                              : admin_not_allowed(r, "GET, HEAD");
    } else {
        ok = admin_tenant_job(a, r, path + strlen("tenants"), job);
    }
    if (!ok) {
        free(job);
        return false;
    }
    return admin_queue(a, client, r, job);
}

bool admin_handle(struct admin *a, const char *client, struct request *r)
{
    if (!a) {
        apierr_replyf(r, APIERR_NOT_FOUND,
                      "admin endpoints are off (set ADMIN_TOKEN to enable them)");
        return false;
    }
    int64_t now = mclock_now_us();
    int64_t wait_us = admin_auth_wait(a, client, now);
    if (wait_us > 0) {
        atomic_fetch_add_explicit(&a->limited, 1, memory_order_relaxed);
        r->retry_after_us = wait_us;
        apierr_replyf(r, APIERR_TOO_MANY_AUTH_FAILURES,
                      "%d failed admin authentications from this address within %d s; the "
                      "token is not checked until Retry-After",
                      ADMIN_AUTH_FAILURES, ADMIN_AUTH_WINDOW_S);
        return false;
    }
    const char *given = params_bearer(request_header(r, "Authorization"));
    if (!given || !params_equal_ct(given, a->token)) {
        admin_auth_failed(a, client, now);
        atomic_fetch_add_explicit(&a->refused, 1, memory_order_relaxed);
        apierr_replyf(r, APIERR_UNAUTHORIZED,
                      "admin endpoints need Authorization: Bearer <ADMIN_TOKEN>");
        return false;
    }
    atomic_fetch_add_explicit(&a->accepted, 1, memory_order_relaxed);
    const char *path = r->url + strlen("/admin/");
    if (!strncmp(path, "breaker/", strlen("breaker/")))
        return admin_breaker(a, r, path);
    if (admin_is_usage(path))
        return admin_usage(a, r, path);
    if (!strcmp(path, "audit") || !strncmp(path, "tenants", strlen("tenants")))
        return admin_tenants(a, client, r, path);
    apierr_replyf(r, APIERR_NOT_FOUND,
                  "admin endpoints: /admin/tenants, /admin/audit, "
                  "/admin/breaker/<tier>/(open|disable|reset)");
    return false;
}
