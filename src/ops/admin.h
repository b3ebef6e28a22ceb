/*
 * admin: operator endpoints, off unless ADMIN_TOKEN is set.
 *
 *   POST   /admin/breaker/<tier>/open|disable|reset  force a tier's breaker (answered at once)
 *   POST   /admin/tenants                    {"name","tier"[,overrides]}: 201, the key once
 *   GET    /admin/tenants?limit=N&after=NAME every tenant by name, a page at a time
 *   GET    /admin/tenants/<name>             one tenant: tier, overrides, created, revoked
 *   GET    /admin/tenants/<name>/usage       its last minute per tier and its database-time
 *                                            budget (tenantview.h; answered at once)
 *   PATCH  /admin/tenants/<name>             {"tier", "rate_limit", "db_time_ms_per_min"}: 200
 *   DELETE /admin/tenants/<name>             revoke its key: 204
 *   POST   /admin/tenants/<name>/keys        a new key, the old one stops working: 201
 *   GET    /admin/audit?limit=N&before=ID&tenant=NAME  the latest changes, newest first
 *
 * Requests must carry "Authorization: Bearer <ADMIN_TOKEN>" (compared in constant time; the
 * configuration refuses a token shorter than 32 characters). Failed attempts are limited per
 * client address: ADMIN_AUTH_FAILURES in ADMIN_AUTH_WINDOW_S (a GCRA budget: that many at once,
 * then one every window / failures), past which every request from the address is answered
 * 429 too_many_auth_failures with Retry-After, without its token being compared, a right one
 * included (were it compared, a limited guesser would still learn when a guess is right). An
 * address that has used no attempt is never limited by others, unless ADMIN_AUTH_CLIENTS
 * addresses are tracked already: the others then share one budget. A tenant request is checked
 * on the HTTP thread (path, method, query, body: tenantreq, the
 * checks the CLI makes), so a bad one is answered 4xx having touched nothing; a good one is
 * queued to the admin worker (adminwork.h), which runs it against the database with the CLI's
 * implementation (tenantdb.h). The breaker controls answer with the breaker's new state.
 */
#ifndef BULKHEAD_ADMIN_H
#define BULKHEAD_ADMIN_H

#include <stdbool.h>
#include <stdint.h>

struct admin;
struct request;
struct tierset;
struct tenantstat;

#define ADMIN_PAGE_DEFAULT  100   /* tenants or events per page unless limit= says */
#define ADMIN_AUTH_FAILURES 10    /* failed authentications per address per window... */
#define ADMIN_AUTH_WINDOW_S 60    /* ...of this many seconds */
#define ADMIN_AUTH_CLIENTS  10000 /* addresses tracked; past it they share one budget */

struct admin_cfg {
    const char *token;          /* ADMIN_TOKEN, not empty (copied) */
    const char *conninfo;       /* DATABASE_URL (copied) */
    struct tierset *tiers;      /* the tiers a tenant may be in; must outlive the admin */
    struct tenantstat *tenants; /* per-tenant accounting, or NULL; must outlive the admin */
};

/* Admin authentications so far (any thread). */
struct admin_stats {
    uint64_t accepted; /* the right token */
    uint64_t refused;  /* a wrong or missing one: 401 */
    uint64_t limited;  /* not compared: 429 too_many_auth_failures */
};

/* Start the admin worker. 0 or a negative errno. */
int admin_create(const struct admin_cfg *cfg, struct admin **out)
    __attribute__((warn_unused_result));

/* HTTP thread. a NULL: the admin endpoints do not exist (404). client: the caller's address,
 * for the audit. Returns false with r's reply set, or true when r was handed to the admin
 * worker, which owns it until it resumes it. */
bool admin_handle(struct admin *a, const char *client, struct request *r);

/* Janitor thread: answer admin requests that waited too long. */
void admin_expire(struct admin *a, int64_t now_us);

void admin_stats(struct admin *a, struct admin_stats *out);

/* Shutdown: answer queued admin requests, end the running one's wait on the database (503).
 * Then destroy frees. */
void admin_stop(struct admin *a);
void admin_destroy(struct admin *a);

#endif
