/*
 * admin: operator endpoints, off unless ADMIN_TOKEN is set.
 *
 *   POST   /admin/breaker/<tier>/open|disable|reset  force a tier's breaker (answered at once)
 *   POST   /admin/tenants                    {"name","tier"[,"rate_limit"]}: 201, the key once
 *   GET    /admin/tenants?limit=N&after=NAME every tenant by name, a page at a time
 *   GET    /admin/tenants/<name>             one tenant: tier, overrides, created, revoked
 *   PATCH  /admin/tenants/<name>             {"tier", "rate_limit": n|null}: 200
 *   DELETE /admin/tenants/<name>             revoke its key: 204
 *   POST   /admin/tenants/<name>/keys        a new key, the old one stops working: 201
 *   GET    /admin/audit?limit=N&before=ID&tenant=NAME  the latest changes, newest first
 *
 * Requests must carry "Authorization: Bearer <ADMIN_TOKEN>" (compared in constant time). A
 * tenant request is checked on the HTTP thread (path, method, query, body: tenantreq, the
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

#define ADMIN_PAGE_DEFAULT 100 /* tenants or events per page unless limit= says */

struct admin_cfg {
    const char *token;     /* ADMIN_TOKEN, not empty (copied) */
    const char *conninfo;  /* DATABASE_URL (copied) */
    struct tierset *tiers; /* the tiers a tenant may be in; must outlive the admin */
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

/* Shutdown: answer queued admin requests, wait for the running one. Then destroy frees. */
void admin_stop(struct admin *a);
void admin_destroy(struct admin *a);

#endif
