/*
 * tenantcli: the tenant commands (see tenantcli.h): arguments to a tenantreq, a tenantdb call,
 * its JSON printed as text. Plain blocking libpq: this is a short-lived command.
 */
#include "tenantcli.h"
#include "auth.h"
#include "tenantdb.h"
#include "tenantreq.h"

#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define TENANTCLI_MAX_POS 3 /* positional arguments after the command */

/* The command line after "tenant", sorted out. */
struct tenantcli_args {
    const char *cmd;
    const char *pos[TENANTCLI_MAX_POS];
    int npos;
    const char *tier, *rate_limit, *tenant, *limit; /* --tier, --rate-limit, --tenant, --limit */
    const char *db_time;                            /* --db-time */
};

static void tenantcli_usage(FILE *out)
{
    fprintf(out, "usage: bulkhead tenant create NAME TIER [--rate-limit N] [--db-time MS]\n"
                 "       bulkhead tenant list\n"
                 "       bulkhead tenant show NAME\n"
                 "       bulkhead tenant set NAME [--tier TIER] [--rate-limit N|none] "
                 "[--db-time MS|none]\n"
                 "       bulkhead tenant set-tier NAME TIER\n"
                 "       bulkhead tenant rotate NAME\n"
                 "       bulkhead tenant revoke NAME\n"
                 "       bulkhead tenant audit [--tenant NAME] [--limit N]\n"
                 "NAME is 1 to 64 characters of A-Z a-z 0-9 . _ -\n"
                 "--rate-limit: the tenant's own limit, requests per its tier's window (0: "
                 "unlimited);\n"
                 "              none removes it (the tier's limit applies)\n"
                 "--db-time: the tenant's own database-time budget, ms per minute (0: none);\n"
                 "           none removes it (the tier's db_time_ms_per_min applies)\n");
}

/* 0, or 2 after printing the usage. */
static int tenantcli_parse(int argc, char **argv, struct tenantcli_args *a)
{
    memset(a, 0, sizeof(*a));
    a->cmd = argv[0];
    static const char *const opts[] = {"--tier", "--rate-limit", "--tenant", "--limit",
                                       "--db-time"};
    const char **slots[] = {&a->tier, &a->rate_limit, &a->tenant, &a->limit, &a->db_time};
    const size_t nopts = sizeof(opts) / sizeof(opts[0]);
    for (int i = 1; i < argc; i++) {
        size_t k = 0;
        while (k < nopts && strcmp(argv[i], opts[k]))
            k++;
        if (k < nopts && i + 1 < argc && !*slots[k]) {
            *slots[k] = argv[++i];
        } else if (k == nopts && strncmp(argv[i], "--", 2) && a->npos < TENANTCLI_MAX_POS) {
            a->pos[a->npos++] = argv[i];
        } else {
            tenantcli_usage(stderr);
            return 2;
        }
    }
    return 0;
}

/* Whether a has exactly npos positionals and only the options in allowed ("tr" = --tier and
 * --rate-limit (and --db-time with r), "nl" = --tenant and --limit). */
static bool tenantcli_shape(const struct tenantcli_args *a, int npos, const char *allowed)
{
    return a->npos == npos && (!a->tier || strchr(allowed, 't')) &&
           (!a->rate_limit || strchr(allowed, 'r')) && (!a->db_time || strchr(allowed, 'r')) &&
           (!a->tenant || strchr(allowed, 'n')) && (!a->limit || strchr(allowed, 'l'));
}

/* The request of create, set and set-tier from the arguments; 0 or 2 after the message. */
static int tenantcli_request(const struct tenantcli_args *a, enum tenantreq_kind kind,
                             const struct tier_table *tiers, struct tenantreq *req)
{
    char why[300];
    tenantreq_init(req);
    struct {
        const char *field, *value;
    } set[] = {{"name", a->pos[0]},
               {"tier", a->npos > 1 ? a->pos[1] : a->tier},
               {"rate_limit", a->rate_limit},
               {"db_time_ms_per_min", a->db_time}};
    for (size_t i = 0; i < sizeof(set) / sizeof(set[0]); i++) {
        if (!set[i].value)
            continue;
        if (tenantreq_set_text(req, set[i].field, set[i].value, tiers, why, sizeof(why))) {
            fprintf(stderr, "bulkhead: %s\n", why);
            return 2;
        }
    }
    if (kind == TENANTREQ_UPDATE)
        req->name[0] = '\0'; /* the tenant to change, not a new name */
    if (tenantreq_complete(kind, req, why, sizeof(why))) {
        fprintf(stderr, "bulkhead: %s\n", why);
        return 2;
    }
    return 0;
}

static void tenantcli_print_tenant(const char *json, const char *key)
{
    json_t *t = json_loads(json, 0, NULL);
    json_t *limit = json_object_get(json_object_get(t, "overrides"), "rate_limit");
    printf("tenant: %s\ntier: %s\n", json_string_value(json_object_get(t, "name")),
           json_string_value(json_object_get(t, "tier")));
    if (limit)
        printf("rate limit: %" JSON_INTEGER_FORMAT " (its own)\n", json_integer_value(limit));
    else
        printf("rate limit: the tier's\n");
    json_t *dbt = json_object_get(json_object_get(t, "overrides"), "db_time_ms_per_min");
    if (dbt)
        printf("database-time budget: %" JSON_INTEGER_FORMAT " ms per minute (its own)\n",
               json_integer_value(dbt));
    else
        printf("database-time budget: the tier's\n");
    const char *revoked = json_string_value(json_object_get(t, "revoked"));
    printf("created: %s\n", json_string_value(json_object_get(t, "created")));
    if (revoked)
        printf("revoked: %s\n", revoked);
    if (key) {
        printf("api key: %s\n", key);
        fprintf(stderr, "Store the key now: it is shown once; only its SHA-256 is kept.\n");
    }
    json_decref(t);
}

/* list: every page, as a table. */
static int tenantcli_list(struct dbconn *db)
{
    printf("%-24s %-12s %-11s %-21s %s\n", "NAME", "TIER", "RATE_LIMIT", "CREATED", "REVOKED");
    char after[PARAMS_TENANT_MAX + 1] = "";
    for (;;) {
        struct tenantdb_result res;
        int rc = tenantdb_list(db, after[0] ? after : NULL, TENANTDB_PAGE_MAX, &res);
        if (rc) {
            fprintf(stderr, "bulkhead: %s\n", res.err);
            return 1;
        }
        json_t *page = json_loads(res.json, 0, NULL);
        tenantdb_result_free(&res);
        size_t i;
        json_t *t;
        json_array_foreach(json_object_get(page, "tenants"), i, t)
        {
            json_t *lim = json_object_get(json_object_get(t, "overrides"), "rate_limit");
            char limit[24] = "-";
            if (lim)
                snprintf(limit, sizeof(limit), "%" JSON_INTEGER_FORMAT, json_integer_value(lim));
            const char *revoked = json_string_value(json_object_get(t, "revoked"));
            printf("%-24s %-12s %-11s %-21s %s\n", json_string_value(json_object_get(t, "name")),
                   json_string_value(json_object_get(t, "tier")), limit,
                   json_string_value(json_object_get(t, "created")), revoked ? revoked : "-");
        }
        const char *next = json_string_value(json_object_get(page, "next"));
        snprintf(after, sizeof(after), "%s", next ? next : "");
        json_decref(page);
        if (!after[0])
            return 0;
    }
}

/* audit: the latest changes, one line each. */
static int tenantcli_audit(struct dbconn *db, const struct tenantcli_args *a)
{
    int64_t limit = 100;
    if ((a->limit && params_int(a->limit, 1, TENANTDB_PAGE_MAX, &limit)) ||
        (a->tenant && !params_tenant_valid(a->tenant))) {
        fprintf(stderr, "bulkhead: --limit is 1 to %d, --tenant a tenant name\n",
                TENANTDB_PAGE_MAX);
        return 2;
    }
    struct tenantdb_result res;
    if (tenantdb_audit(db, 0, a->tenant, limit, &res)) {
        fprintf(stderr, "bulkhead: %s\n", res.err);
        return 1;
    }
    json_t *page = json_loads(res.json, 0, NULL);
    tenantdb_result_free(&res);
    size_t i;
    json_t *e;
    json_array_foreach(json_object_get(page, "events"), i, e)
    {
        char *after = json_dumps(json_object_get(e, "after"), JSON_COMPACT | JSON_ENCODE_ANY);
        printf("%" JSON_INTEGER_FORMAT " %s %s from %s: %s %s -> %s\n",
               json_integer_value(json_object_get(e, "id")),
               json_string_value(json_object_get(e, "at")),
               json_string_value(json_object_get(e, "actor")),
               json_string_value(json_object_get(e, "address")),
               json_string_value(json_object_get(e, "action")),
               json_string_value(json_object_get(e, "tenant")), after ? after : "null");
        free(after);
    }
    json_decref(page);
    return 0;
}

/* The commands that read or change one tenant, through the admin API's implementation. */
static int tenantcli_run(struct dbconn *db, const struct tenantcli_args *a,
                         const struct tenantreq *req)
{
    char user[64] = "cli:", msg[200];
    const struct passwd *pw = getpwuid(geteuid());
    if (pw)
        snprintf(user + 4, sizeof(user) - 4, "%s", pw->pw_name);
    else
        snprintf(user + 4, sizeof(user) - 4, "%u", (unsigned)geteuid());
    const struct tenantdb_actor who = {.who = user, .address = "local"};
    const char *name = a->pos[0], *cmd = a->cmd;
    struct tenantdb_result res;
    int rc = !strcmp(cmd, "create")   ? tenantdb_create(db, req, &who, &res)
             : !strcmp(cmd, "rotate") ? tenantdb_rotate(db, name, &who, &res)
             : !strcmp(cmd, "revoke") ? tenantdb_revoke(db, name, &who, &res)
             : !strcmp(cmd, "show")   ? tenantdb_get(db, name, &res)
                                      : tenantdb_update(db, name, req, &who, &res);
    if (rc == -ENOENT || rc == -EEXIST) {
        tenantdb_strerror(rc, name, msg, sizeof(msg));
        fprintf(stderr, "bulkhead: %s\n", msg);
    } else if (rc) {
        fprintf(stderr, "bulkhead: %s\n", res.err);
    } else if (!strcmp(cmd, "revoke")) {
        printf("tenant %s revoked\n", name);
    } else {
        tenantcli_print_tenant(res.json, res.key[0] ? res.key : NULL);
    }
    tenantdb_result_free(&res);
    return rc ? 1 : 0;
}

/* Check the arguments of a's command before touching the database. 0, or 2. */
static int tenantcli_check(const struct tenantcli_args *a, const struct tier_table *tiers,
                           struct tenantreq *req)
{
    const char *cmd = a->cmd;
    bool one = !strcmp(cmd, "show") || !strcmp(cmd, "rotate") || !strcmp(cmd, "revoke");
    bool ok = !strcmp(cmd, "create")     ? tenantcli_shape(a, 2, "r")
              : !strcmp(cmd, "set")      ? tenantcli_shape(a, 1, "tr")
              : !strcmp(cmd, "set-tier") ? tenantcli_shape(a, 2, "")
              : !strcmp(cmd, "list")     ? tenantcli_shape(a, 0, "")
              : !strcmp(cmd, "audit")    ? tenantcli_shape(a, 0, "nl")
                                         : one && tenantcli_shape(a, 1, "");
    if (!ok) {
        tenantcli_usage(stderr);
        return 2;
    }
    if (!strcmp(cmd, "list") || !strcmp(cmd, "audit"))
        return 0;
    if (one) {
        tenantreq_init(req);
        char why[200];
        if (tenantreq_set_text(req, "name", a->pos[0], tiers, why, sizeof(why))) {
            fprintf(stderr, "bulkhead: %s\n", why);
            return 2;
        }
        return 0;
    }
    return tenantcli_request(a, !strcmp(cmd, "create") ? TENANTREQ_CREATE : TENANTREQ_UPDATE, tiers,
                             req);
}

int tenantcli_main(const struct config *cfg, const struct tier_table *tiers, int argc, char **argv)
{
    if (argc < 1 || !strcmp(argv[0], "--help") || !strcmp(argv[0], "-h")) {
        tenantcli_usage(argc < 1 ? stderr : stdout);
        return argc < 1 ? 2 : 0;
    }
    struct tenantcli_args a;
    struct tenantreq req;
    int rc = tenantcli_parse(argc, argv, &a);
    if (!rc)
        rc = tenantcli_check(&a, tiers, &req);
    if (rc)
        return rc;
    struct dbconn *db = NULL;
    char err[300];
    if (tenantdb_connect(cfg->database_url, "bulkhead-cli", NULL, &db, err, sizeof(err))) {
        fprintf(stderr, "bulkhead: cannot use the database: %s\n", err);
        return 1;
    }
    if (!strcmp(a.cmd, "list"))
        rc = tenantcli_list(db);
    else if (!strcmp(a.cmd, "audit"))
        rc = tenantcli_audit(db, &a);
    else
        rc = tenantcli_run(db, &a, &req);
    dbconn_close(db);
    return rc;
}
