/*
 * tenantdb: the tenants table, the one implementation behind `bulkhead tenant ...` and the
 * admin API (/admin/tenants, /admin/audit).
 *
 * The database is the source of truth. Every change is one transaction that locks the
 * tenant's row, applies the change, writes an audit row (who, from where, what, the tenant
 * before and after) and notifies the servers on AUTH_NOTIFY_CHANNEL; PostgreSQL delivers the
 * notification at commit, and every instance's key table (auth.h) reloads on it, or within
 * AUTH_CACHE_TTL_MS if it was missed. A refused change (unknown tenant, name taken) rolls back
 * and leaves no trace.
 *
 * Tenants are rendered as JSON by PostgreSQL, {"name", "tier", "overrides": {"rate_limit"},
 * "created", "revoked"}, never with a key or its hash; a new key is returned once, in
 * struct tenantdb_result, and only its SHA-256 is stored.
 *
 * On a connection the caller owns (the CLI's, or the admin worker's; dbconn.h), one thread at a
 * time. No wait is unbounded: the server ends a statement at TENANTDB_STATEMENT_TIMEOUT_MS, and
 * a statement not answered TENANTDB_ANSWER_GRACE_MS after that (the database or the network to
 * it has gone silent) is given up as a lost connection; a stop pipe given at connect ends any
 * wait at once. Every function returns 0 or a negative errno:
 *   -ENOENT      no tenant of that name;
 *   -EEXIST      create: the name is taken;
 *   -ECONNRESET  the connection is gone or silent (the caller closes it and opens a new one);
 *   -ECANCELED   the stop pipe was written (the caller closes the connection);
 *   -EIO         a statement failed (err says why).
 */
#ifndef BULKHEAD_TENANTDB_H
#define BULKHEAD_TENANTDB_H

#include "auth.h"
#include "dbconn.h"
#include "tenantreq.h"

#include <stddef.h>
#include <stdint.h>

#define TENANTDB_PAGE_MAX             1000 /* tenants or audit events in one page */
#define TENANTDB_STATEMENT_TIMEOUT_MS 5000 /* every statement of a tenant operation (server) */
#define TENANTDB_ANSWER_GRACE_MS      2000 /* after it, a statement without an answer is lost */
#define TENANTDB_CONNECT_TIMEOUT_MS   5000 /* a connect and its set-up */

/* Who asks: written to the audit row and the event line. Not owned. */
struct tenantdb_actor {
    const char *who;        /* "token:1a2b3c4d" (the admin token's id) or "cli:<user>" */
    const char *address;    /* the client's address, or "local" */
    const char *request_id; /* the HTTP request's id, or NULL */
};

struct tenantdb_result {
    char *json;                 /* malloc'd: the tenant after the change, or the page asked for */
    char *before;               /* malloc'd: a change's tenant before it; NULL after a create */
    char key[AUTH_KEY_LEN + 1]; /* create, rotate: the new API key, shown once; else "" */
    char err[300];              /* -EIO, -ECONNRESET: why */
};

/* Connect to conninfo as application_name appname with the statement timeout above, and bring
 * the tenants schema up to date (tenantdb_migrate). stop_fd: NULL, or a stop pipe's read end
 * (dbconn_params). 0 or -ECONNRESET/-ECANCELED/-EIO with err set; close with dbconn_close. */
int tenantdb_connect(const char *conninfo, const char *appname, const int *stop_fd,
                     struct dbconn **out, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* Apply init-db.sql's tenants part (embedded) when a table or column this code uses is
 * missing: once, under an advisory lock, so instances starting together do not race. A
 * database already up to date is only read (no DDL, no lock, no ownership needed). */
int tenantdb_migrate(struct dbconn *db, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* The tenants part of the embedded init-db.sql, between its "-- begin: tenants schema" and
 * "-- end: tenants schema" lines; *len set. NULL when the markers are missing. */
const char *tenantdb_schema(size_t *len);

/* Changes (audited, notified). req has passed tenantreq_complete for its kind. */
int tenantdb_create(struct dbconn *db, const struct tenantreq *req,
                    const struct tenantdb_actor *who, struct tenantdb_result *out)
    __attribute__((warn_unused_result));
int tenantdb_update(struct dbconn *db, const char *name, const struct tenantreq *req,
                    const struct tenantdb_actor *who, struct tenantdb_result *out)
    __attribute__((warn_unused_result));
/* A new key; the old one stops working. A revoked tenant is reinstated with the new key. */
int tenantdb_rotate(struct dbconn *db, const char *name, const struct tenantdb_actor *who,
                    struct tenantdb_result *out) __attribute__((warn_unused_result));
/* Revoke the tenant's key (again: no change, the first revocation's time stays). */
int tenantdb_revoke(struct dbconn *db, const char *name, const struct tenantdb_actor *who,
                    struct tenantdb_result *out) __attribute__((warn_unused_result));

/* Reads. get: the tenant. list: {"tenants": [...], "next": name|null}, by name after `after`
 * (NULL: from the start). audit: {"events": [...], "next": id|null}, newest first, ids below
 * `before` (0: the newest), of one tenant (NULL: all). limit 1..TENANTDB_PAGE_MAX; "next" is
 * what to pass for the following page, null on the last one. */
int tenantdb_get(struct dbconn *db, const char *name, struct tenantdb_result *out)
    __attribute__((warn_unused_result));
int tenantdb_list(struct dbconn *db, const char *after, int64_t limit, struct tenantdb_result *out)
    __attribute__((warn_unused_result));
int tenantdb_audit(struct dbconn *db, int64_t before, const char *tenant, int64_t limit,
                   struct tenantdb_result *out) __attribute__((warn_unused_result));

/* Free what a result holds (it may be reused afterwards). */
void tenantdb_result_free(struct tenantdb_result *r);

/* The message for -ENOENT and -EEXIST, the same for the CLI and the API. */
void tenantdb_strerror(int rc, const char *name, char *buf, size_t len);

#endif
