/*
 * tenantcli: tenant administration (see tenantcli.h). Plain blocking libpq: this is a
 * short-lived command, not the server.
 */
#include "tenantcli.h"
#include "auth.h"
#include "params.h"

#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void tenantcli_usage(FILE *out)
{
    fprintf(out, "usage: bulkhead tenant create NAME TIER\n"
                 "       bulkhead tenant list\n"
                 "       bulkhead tenant set-tier NAME TIER\n"
                 "       bulkhead tenant revoke NAME\n"
                 "       bulkhead tenant rotate NAME\n"
                 "NAME is 1 to 64 characters of A-Z a-z 0-9 . _ -\n");
}

static PGconn *tenantcli_connect(const struct config *cfg)
{
    const char *keys[] = {"dbname", "application_name", "connect_timeout", NULL};
    const char *vals[] = {cfg->database_url, "bulkhead-cli", "10", NULL};
    PGconn *pg = PQconnectdbParams(keys, vals, 1);
    if (PQstatus(pg) != CONNECTION_OK) {
        fprintf(stderr, "bulkhead: cannot connect to the database: %s", PQerrorMessage(pg));
        PQfinish(pg);
        return NULL;
    }
    return pg;
}

/* Run a parameterised statement; returns the result or NULL after printing the error. */
static PGresult *tenantcli_exec(PGconn *pg, const char *sql, int n, const char *const *v)
{
    PGresult *res = PQexecParams(pg, sql, n, NULL, v, NULL, NULL, 0);
    ExecStatusType st = PQresultStatus(res);
    if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK) {
        const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
        if (state && !strcmp(state, "23505"))
            fprintf(stderr, "bulkhead: a tenant with that name already exists\n");
        else
            fprintf(stderr, "bulkhead: %s", PQresultErrorMessage(res));
        PQclear(res);
        return NULL;
    }
    return res;
}

static void tenantcli_notify(PGconn *pg)
{
    PQclear(PQexec(pg, "NOTIFY " AUTH_NOTIFY_CHANNEL));
}

static bool tenantcli_check_tier(const struct tier_table *tiers, const char *tier)
{
    if (tiers_find(tiers, tier) >= 0)
        return true;
    char names[TIERS_MAX * (TIERS_NAME_MAX + 2)];
    tiers_names(tiers, names, sizeof(names));
    fprintf(stderr, "bulkhead: unknown tier \"%s\" (tiers: %s)\n", tier, names);
    return false;
}

/* create and rotate: store a new key's hash for NAME and print the key. */
static int tenantcli_new_key(PGconn *pg, const char *sql, const char *name, const char *tier)
{
    char key[AUTH_KEY_LEN + 1], hash[65];
    if (auth_new_key(key)) {
        fprintf(stderr, "bulkhead: cannot read random bytes from the OS\n");
        return 1;
    }
    auth_hash_key(key, hash);
    const char *v[] = {name, hash, tier};
    PGresult *res = tenantcli_exec(pg, sql, tier ? 3 : 2, v);
    if (!res)
        return 1;
    bool found = PQntuples(res) == 1;
    PQclear(res);
    if (!found) {
        fprintf(stderr, "bulkhead: no tenant named %s\n", name);
        return 1;
    }
    tenantcli_notify(pg);
    printf("tenant: %s\napi key: %s\n", name, key);
    fprintf(stderr, "Store the key now: it is shown once; only its SHA-256 is kept.\n");
    return 0;
}

static int tenantcli_list(PGconn *pg)
{
    PGresult *res = tenantcli_exec(
        pg,
        "SELECT name, tier, to_char(created_at AT TIME ZONE 'UTC', "
        "'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'),"
        " coalesce(to_char(revoked_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), '-')"
        " FROM tenants ORDER BY name",
        0, NULL);
    if (!res)
        return 1;
    printf("%-24s %-12s %-21s %s\n", "NAME", "TIER", "CREATED", "REVOKED");
    for (int i = 0; i < PQntuples(res); i++)
        printf("%-24s %-12s %-21s %s\n", PQgetvalue(res, i, 0), PQgetvalue(res, i, 1),
               PQgetvalue(res, i, 2), PQgetvalue(res, i, 3));
    PQclear(res);
    return 0;
}

static int tenantcli_update(PGconn *pg, const char *sql, int n, const char *const *v,
                            const char *done)
{
    PGresult *res = tenantcli_exec(pg, sql, n, v);
    if (!res)
        return 1;
    bool found = PQntuples(res) == 1;
    PQclear(res);
    if (!found) {
        fprintf(stderr, "bulkhead: no tenant named %s\n", v[0]);
        return 1;
    }
    tenantcli_notify(pg);
    printf("%s\n", done);
    return 0;
}

int tenantcli_main(const struct config *cfg, const struct tier_table *tiers, int argc, char **argv)
{
    if (argc < 1 || !strcmp(argv[0], "--help") || !strcmp(argv[0], "-h")) {
        tenantcli_usage(argc < 1 ? stderr : stdout);
        return argc < 1 ? 2 : 0;
    }
    const char *cmd = argv[0];
    int want = !strcmp(cmd, "create") || !strcmp(cmd, "set-tier") ? 3
               : !strcmp(cmd, "revoke") || !strcmp(cmd, "rotate") ? 2
               : !strcmp(cmd, "list")                             ? 1
                                                                  : -1;
    if (want < 0 || argc != want) {
        tenantcli_usage(stderr);
        return 2;
    }
    if (want >= 2 && !params_tenant_valid(argv[1])) {
        fprintf(stderr, "bulkhead: invalid tenant name \"%s\"\n", argv[1]);
        return 2;
    }
    if (want == 3 && !tenantcli_check_tier(tiers, argv[2]))
        return 2;
    PGconn *pg = tenantcli_connect(cfg);
    if (!pg)
        return 1;
    int rc;
    char done[160];
    if (!strcmp(cmd, "create")) {
        rc = tenantcli_new_key(pg,
                               "INSERT INTO tenants (name, key_hash, tier) VALUES ($1, $2, $3) "
                               "RETURNING id",
                               argv[1], argv[2]);
    } else if (!strcmp(cmd, "rotate")) {
        rc = tenantcli_new_key(pg,
                               "UPDATE tenants SET key_hash = $2, revoked_at = NULL "
                               "WHERE name = $1 RETURNING id",
                               argv[1], NULL);
    } else if (!strcmp(cmd, "list")) {
        rc = tenantcli_list(pg);
    } else if (!strcmp(cmd, "set-tier")) {
        const char *v[] = {argv[1], argv[2]};
        snprintf(done, sizeof(done), "tenant %s is now in tier %s", argv[1], argv[2]);
        rc = tenantcli_update(pg, "UPDATE tenants SET tier = $2 WHERE name = $1 RETURNING id", 2, v,
                              done);
    } else {
        const char *v[] = {argv[1]};
        snprintf(done, sizeof(done), "tenant %s revoked", argv[1]);
        rc = tenantcli_update(pg,
                              "UPDATE tenants SET revoked_at = coalesce(revoked_at, now()) "
                              "WHERE name = $1 RETURNING id",
                              1, v, done);
    }
    PQfinish(pg);
    return rc;
}
