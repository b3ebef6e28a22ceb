/*
 * tenantdb: the tenant operations of tenantdb.h, as parameterised SQL in explicit
 * transactions. PostgreSQL renders every tenant and page as JSON text, which is passed through.
 */
#include "tenantdb.h"
#include "assets.h"
#include "mclock.h"
#include "xalloc.h"

#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TENANTDB_TIME(col) "to_char(" col " AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')"

/* A tenant (alias t) as JSON; never its key_hash. */
#define TENANTDB_JSON                                                                              \
    "json_build_object('name', t.name, 'tier', t.tier, 'overrides', "                              \
    "json_strip_nulls(json_build_object('rate_limit', t.rate_limit, 'db_time_ms_per_min', "        \
    "t.db_time_ms_per_min)), 'created', " TENANTDB_TIME(                                           \
        "t.created_at") ", 'revoked', " TENANTDB_TIME("t.revoked_at") ")::text"

static const char tenantdb_sql_lock[] =
    "SELECT " TENANTDB_JSON " FROM tenants t WHERE t.name = $1 FOR UPDATE";
static const char tenantdb_sql_create[] =
    "INSERT INTO tenants AS t (name, tier, key_hash, rate_limit, db_time_ms_per_min) "
    "VALUES ($1, $2, $3, $4::bigint, $5::bigint) RETURNING " TENANTDB_JSON;
static const char tenantdb_sql_update[] =
    "UPDATE tenants t SET tier = coalesce($2, t.tier), rate_limit = CASE $3 "
    "WHEN 'set' THEN $4::bigint WHEN 'clear' THEN NULL ELSE t.rate_limit END, "
    "db_time_ms_per_min = CASE $5 WHEN 'set' THEN $6::bigint WHEN 'clear' THEN NULL "
    "ELSE t.db_time_ms_per_min END WHERE t.name = $1 RETURNING " TENANTDB_JSON;
static const char tenantdb_sql_rotate[] =
    "UPDATE tenants t SET key_hash = $2, revoked_at = NULL WHERE t.name = $1 "
    "RETURNING " TENANTDB_JSON;
static const char tenantdb_sql_revoke[] =
    "UPDATE tenants t SET revoked_at = coalesce(t.revoked_at, now()) WHERE t.name = $1 "
    "RETURNING " TENANTDB_JSON;
static const char tenantdb_sql_audit[] =
    "INSERT INTO tenant_audit (actor, address, action, tenant, before, after, request_id) "
    "VALUES ($1, $2, $3, $4, $5::jsonb, $6::jsonb, $7)";
static const char tenantdb_sql_notify[] = "SELECT pg_notify('" AUTH_NOTIFY_CHANNEL "', $1)";
static const char tenantdb_sql_get[] = "SELECT " TENANTDB_JSON " FROM tenants t WHERE t.name = $1";
/* By name in byte order (COLLATE "C"), whatever the database's collation: pages follow each
 * other exactly, and the order is the same on every database. */
static const char tenantdb_sql_list[] =
    "SELECT json_build_object('tenants', coalesce(json_agg(s.j ORDER BY s.n), '[]'::json), "
    "'next', CASE WHEN count(*) = $2::int THEN max(s.n) END)::text FROM ("
    "SELECT t.name COLLATE \"C\" AS n, (" TENANTDB_JSON ")::json AS j FROM tenants t "
    "WHERE $1::text IS NULL OR t.name COLLATE \"C\" > $1 ORDER BY t.name COLLATE \"C\" "
    "LIMIT $2::int) s";
static const char tenantdb_sql_audit_list[] =
    "SELECT json_build_object('events', coalesce(json_agg(s.e ORDER BY s.id DESC), '[]'::json), "
    "'next', CASE WHEN count(*) = $3::int THEN min(s.id) END)::text FROM ("
    "SELECT a.id, json_build_object('id', a.id, 'at', "
    "to_char(a.at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'), 'actor', a.actor, "
    "'address', a.address, 'action', a.action, 'tenant', a.tenant, 'before', a.before, "
    "'after', a.after, 'request_id', a.request_id) AS e FROM tenant_audit a "
    "WHERE ($1::bigint = 0 OR a.id < $1::bigint) AND ($2::text IS NULL OR a.tenant = $2) "
    "ORDER BY a.id DESC LIMIT $3::int) s";

/* Every column this code reads or writes: a database missing one is migrated. */
static const char tenantdb_sql_missing[] =
    "SELECT count(*) FROM (VALUES ('tenants', 'name'), ('tenants', 'tier'), "
    "('tenants', 'key_hash'), ('tenants', 'created_at'), ('tenants', 'revoked_at'), "
    "('tenants', 'rate_limit'), ('tenants', 'db_time_ms_per_min'), ('tenant_audit', 'id'), "
    "('tenant_audit', 'at'), "
    "('tenant_audit', 'actor'), ('tenant_audit', 'address'), ('tenant_audit', 'action'), "
    "('tenant_audit', 'tenant'), ('tenant_audit', 'before'), ('tenant_audit', 'after'), "
    "('tenant_audit', 'request_id')) AS need(tab, col) WHERE NOT EXISTS (SELECT 1 FROM "
    "pg_attribute a WHERE a.attrelid = to_regclass(need.tab) AND a.attname = need.col "
    "AND NOT a.attisdropped)";

#define TENANTDB_BEGIN_MARK "-- begin: tenants schema\n"
#define TENANTDB_END_MARK   "-- end: tenants schema\n"

/* Copy PostgreSQL's message without its trailing newlines. */
static void tenantdb_message(char *err, size_t errlen, const char *msg)
{
    snprintf(err, errlen, "%s", msg && msg[0] ? msg : "unknown error");
    size_t n = strlen(err);
    while (n && err[n - 1] == '\n')
        err[--n] = '\0';
}

/* Run sql (n 0: the simple protocol, which takes several statements). With text: on 0, *text is
 * a malloc'd copy of the first column of the first row, -ENOENT when there is no row. */
static int tenantdb_exec(struct dbconn *db, const char *sql, int n, const char *const *v,
                         char **text, char *err, size_t errlen)
{
    PGresult *res = NULL;
    int64_t deadline =
        mclock_now_us() + (TENANTDB_STATEMENT_TIMEOUT_MS + TENANTDB_ANSWER_GRACE_MS) * 1000ll;
    int rc = dbconn_query(db, sql, n, v, deadline, &res, err, errlen);
    if (rc == -ETIMEDOUT) {
        snprintf(err, errlen, "the database did not answer within %d ms",
                 TENANTDB_STATEMENT_TIMEOUT_MS + TENANTDB_ANSWER_GRACE_MS);
        return -ECONNRESET;
    }
    if (rc)
        return rc == -ECANCELED ? rc : -ECONNRESET;
    ExecStatusType st = PQresultStatus(res);
    if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK) {
        const char *constraint = PQresultErrorField(res, PG_DIAG_CONSTRAINT_NAME);
        if (PQstatus(db->pg) != CONNECTION_OK)
            rc = -ECONNRESET;
        else if (constraint && !strcmp(constraint, "tenants_name_key"))
            rc = -EEXIST;
        else
            rc = -EIO;
        tenantdb_message(err, errlen, PQresultErrorMessage(res));
    } else if (text) {
        if (PQntuples(res) > 0)
            *text = xstrdup(PQgetvalue(res, 0, 0));
        else
            rc = -ENOENT;
    }
    PQclear(res);
    return rc;
}

/* End a failed transaction, on a connection still usable. */
static void tenantdb_rollback(struct dbconn *db)
{
    char err[200];
    if (PQstatus(db->pg) == CONNECTION_OK)
        (void)tenantdb_exec(db, "ROLLBACK", 0, NULL, NULL, err, sizeof(err));
}

const char *tenantdb_schema(size_t *len)
{
    const char *begin = strstr(assets_init_db_sql, TENANTDB_BEGIN_MARK);
    const char *end = begin ? strstr(begin, TENANTDB_END_MARK) : NULL;
    if (!end)
        return NULL;
    begin += strlen(TENANTDB_BEGIN_MARK);
    *len = (size_t)(end - begin);
    return begin;
}

int tenantdb_migrate(struct dbconn *db, char *err, size_t errlen)
{
    char *missing = NULL;
    int rc = tenantdb_exec(db, tenantdb_sql_missing, 0, NULL, &missing, err, errlen);
    bool current = rc == 0 && !strcmp(missing, "0");
    free(missing);
    if (rc || current)
        return rc;
    size_t len = 0;
    const char *schema = tenantdb_schema(&len);
    if (!schema) {
        snprintf(err, errlen, "the embedded init-db.sql has no tenants schema part");
        return -EIO;
    }
    char *sql = xmalloc(len + 1);
    memcpy(sql, schema, len);
    sql[len] = '\0';
    /* Instances starting together take turns; the notices of "already exists" are noise. */
    rc = tenantdb_exec(db, "BEGIN", 0, NULL, NULL, err, errlen);
    if (!rc)
        rc = tenantdb_exec(db,
                           "SELECT pg_advisory_xact_lock(hashtext('bulkhead tenants schema')), "
                           "set_config('client_min_messages', 'warning', true)",
                           0, NULL, NULL, err, errlen);
    if (!rc)
        rc = tenantdb_exec(db, sql, 0, NULL, NULL, err, errlen);
    if (!rc)
        rc = tenantdb_exec(db, "COMMIT", 0, NULL, NULL, err, errlen);
    else if (rc != -ECONNRESET && rc != -ECANCELED)
        tenantdb_rollback(db);
    free(sql);
    return rc;
}

int tenantdb_connect(const char *conninfo, const char *appname, const int *stop_fd,
                     struct dbconn **out, char *err, size_t errlen)
{
    const struct dbconn_params p = {.conninfo = conninfo,
                                    .appname = appname,
                                    .statement_timeout_ms = TENANTDB_STATEMENT_TIMEOUT_MS,
                                    .stop_fd = stop_fd};
    struct dbconn *db = NULL;
    int rc =
        dbconn_open(&p, mclock_now_us() + TENANTDB_CONNECT_TIMEOUT_MS * 1000ll, &db, err, errlen);
    if (rc)
        return rc == -ECANCELED || rc == -EIO ? rc : -ECONNRESET;
    rc = tenantdb_migrate(db, err, errlen);
    if (rc) {
        dbconn_close(db);
        return rc;
    }
    *out = db;
    return 0;
}

void tenantdb_result_free(struct tenantdb_result *r)
{
    free(r->json);
    free(r->before);
    r->json = NULL;
    r->before = NULL;
}

/*
 * One audited change of tenant `name`: lock its row (unless `action` creates it), run sql,
 * which returns the tenant after the change, write the audit row, notify, commit. Anything
 * that fails rolls the whole change back.
 */
static int tenantdb_change(struct dbconn *db, const char *action, const char *name, const char *sql,
                           int n, const char *const *v, const struct tenantdb_actor *who,
                           struct tenantdb_result *out)
{
    char *err = out->err;
    size_t errlen = sizeof(out->err);
    int rc = tenantdb_exec(db, "BEGIN", 0, NULL, NULL, err, errlen);
    if (rc)
        return rc;
    if (strcmp(action, "create") != 0)
        rc = tenantdb_exec(db, tenantdb_sql_lock, 1, &name, &out->before, err, errlen);
    if (!rc)
        rc = tenantdb_exec(db, sql, n, v, &out->json, err, errlen);
    if (!rc) {
        const char *a[] = {who->who,    who->address, action,         name,
                           out->before, out->json,    who->request_id};
        rc = tenantdb_exec(db, tenantdb_sql_audit, 7, a, NULL, err, errlen);
    }
    if (!rc)
        rc = tenantdb_exec(db, tenantdb_sql_notify, 1, &name, NULL, err, errlen);
    if (!rc)
        rc = tenantdb_exec(db, "COMMIT", 0, NULL, NULL, err, errlen);
    if (rc) {
        if (rc != -ECONNRESET && rc != -ECANCELED)
            tenantdb_rollback(db);
        tenantdb_result_free(out);
        out->key[0] = '\0';
    }
    return rc;
}

/* A new key in out->key and its hash in hash. */
static int tenantdb_new_key(struct tenantdb_result *out, char hash[65])
{
    if (auth_new_key(out->key)) {
        snprintf(out->err, sizeof(out->err), "cannot read random bytes from the OS");
        return -EIO;
    }
    auth_hash_key(out->key, hash);
    return 0;
}

int tenantdb_create(struct dbconn *db, const struct tenantreq *req,
                    const struct tenantdb_actor *who, struct tenantdb_result *out)
{
    memset(out, 0, sizeof(*out));
    char hash[65], limit[24], dbt[24];
    int rc = tenantdb_new_key(out, hash);
    if (rc)
        return rc;
    snprintf(limit, sizeof(limit), "%" PRId64, req->rate_limit);
    snprintf(dbt, sizeof(dbt), "%" PRId64, req->db_time);
    const char *v[] = {req->name, req->tier, hash,
                       req->rate_limit_op == TENANTREQ_SET ? limit : NULL,
                       req->db_time_op == TENANTREQ_SET ? dbt : NULL};
    return tenantdb_change(db, "create", req->name, tenantdb_sql_create, 5, v, who, out);
}

int tenantdb_update(struct dbconn *db, const char *name, const struct tenantreq *req,
                    const struct tenantdb_actor *who, struct tenantdb_result *out)
{
    memset(out, 0, sizeof(*out));
    char limit[24], dbt[24];
    snprintf(limit, sizeof(limit), "%" PRId64, req->rate_limit);
    snprintf(dbt, sizeof(dbt), "%" PRId64, req->db_time);
    static const char *const ops[] = {
        [TENANTREQ_KEEP] = "keep", [TENANTREQ_SET] = "set", [TENANTREQ_CLEAR] = "clear"};
    const char *v[] = {name,
                       req->tier[0] ? req->tier : NULL,
                       ops[req->rate_limit_op],
                       req->rate_limit_op == TENANTREQ_SET ? limit : NULL,
                       ops[req->db_time_op],
                       req->db_time_op == TENANTREQ_SET ? dbt : NULL};
    return tenantdb_change(db, "update", name, tenantdb_sql_update, 6, v, who, out);
}

int tenantdb_rotate(struct dbconn *db, const char *name, const struct tenantdb_actor *who,
                    struct tenantdb_result *out)
{
    memset(out, 0, sizeof(*out));
    char hash[65];
    int rc = tenantdb_new_key(out, hash);
    if (rc)
        return rc;
    const char *v[] = {name, hash};
    return tenantdb_change(db, "rotate", name, tenantdb_sql_rotate, 2, v, who, out);
}

int tenantdb_revoke(struct dbconn *db, const char *name, const struct tenantdb_actor *who,
                    struct tenantdb_result *out)
{
    memset(out, 0, sizeof(*out));
    return tenantdb_change(db, "revoke", name, tenantdb_sql_revoke, 1, &name, who, out);
}

int tenantdb_get(struct dbconn *db, const char *name, struct tenantdb_result *out)
{
    memset(out, 0, sizeof(*out));
    return tenantdb_exec(db, tenantdb_sql_get, 1, &name, &out->json, out->err, sizeof(out->err));
}

int tenantdb_list(struct dbconn *db, const char *after, int64_t limit, struct tenantdb_result *out)
{
    memset(out, 0, sizeof(*out));
    char lim[24];
    snprintf(lim, sizeof(lim), "%" PRId64, limit);
    const char *v[] = {after, lim};
    return tenantdb_exec(db, tenantdb_sql_list, 2, v, &out->json, out->err, sizeof(out->err));
}

int tenantdb_audit(struct dbconn *db, int64_t before, const char *tenant, int64_t limit,
                   struct tenantdb_result *out)
{
    memset(out, 0, sizeof(*out));
    char b[24], lim[24];
    snprintf(b, sizeof(b), "%" PRId64, before);
    snprintf(lim, sizeof(lim), "%" PRId64, limit);
    const char *v[] = {b, tenant, lim};
    return tenantdb_exec(db, tenantdb_sql_audit_list, 3, v, &out->json, out->err, sizeof(out->err));
}

void tenantdb_strerror(int rc, const char *name, char *buf, size_t len)
{
    if (rc == -ENOENT)
        snprintf(buf, len, "no tenant named \"%s\"", name);
    else if (rc == -EEXIST)
        snprintf(buf, len, "a tenant named \"%s\" already exists", name);
    else
        snprintf(buf, len, "%s", strerror(-rc));
}
