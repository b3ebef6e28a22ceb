/*
 * tiers: parse and validate the tier table (JSON, through jansson).
 *
 * tier_keys[] is the single description of a tier's settings: name, default, bounds, help and
 * field. The parser refuses unknown keys and out-of-range values with the key's full path, so a
 * typo in a config file stops the server at start instead of silently using a default.
 *
 * A key left out of a tier named like a built-in one (config/tiers.json) keeps the built-in
 * tier's value, so {"free": {"workers": 20}} changes free's workers and nothing else. A tier of
 * a new name starts from the defaults of tier_keys[], except keys without one (TIER_NO_DEFAULT:
 * rate_limit), which it must state: leaving rate_limit out must not make a tier unlimited.
 * A key of named choices (budget_scope) is written as one of its names and stored as its index.
 */
#include "tiers.h"
#include "assets.h"
#include "fileio.h"

#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

struct tier_key {
    const char *name;
    int64_t def, min, max;
    const char *help;
    size_t offset;
    const char *const *choices; /* a key written as one of these names (stored as its index,
                                   min 0, max the last index), or NULL: an integer */
};

static const char *const tiers_scopes[] = {"instance", "fleet", NULL};

#define TOFF(field) .offset = offsetof(struct tier_cfg, field)

/* The def of a key that a tier of a new name must state. Never a valid value (min >= 0). */
#define TIER_NO_DEFAULT INT64_MIN

static const struct tier_key tier_keys[] = {
    {"workers", 10, 1, 1024, "worker threads (logic bulkhead)", TOFF(workers)},
    {"queue_max", 20, 0, 100000, "requests that may wait for a worker; more get 503 bulkhead_full",
     TOFF(queue_max)},
    {"queue_timeout_ms", 2000, 1, 600000, "longest wait for a worker; then 503 queue_timeout",
     TOFF(queue_timeout_ms)},
    {"db_max", 5, 1, 1000, "PostgreSQL connections at most (database bulkhead)", TOFF(db_max)},
    {"db_acquire_timeout_ms", 1000, 1, 600000,
     "longest wait for a free connection; then 503 pool_timeout", TOFF(db_acquire_timeout_ms)},
    {"db_idle_timeout_ms", 600000, 0, 86400000,
     "a connection idle this long is closed (reopened on demand); 0 = never. Connections the "
     "database closed or killed are closed within a second whatever this is",
     TOFF(db_idle_timeout_ms)},
    {"rate_limit", TIER_NO_DEFAULT, 0, 1000000000, "requests per tenant per window; 0 = unlimited",
     TOFF(rate_limit)},
    {"rate_window_s", 60, 1, 86400, "the rate-limit window, in seconds", TOFF(rate_window_s)},
    {"breaker_timeout_ms", 3000, 1, 600000, "a call slower than this fails (504) and is cancelled",
     TOFF(breaker_timeout_ms)},
    {"breaker_error_pct", 50, 1, 100, "failure rate (%) in the window that opens the breaker",
     TOFF(breaker_error_pct)},
    {"breaker_reset_ms", 10000, 1, 3600000, "time OPEN before half-open trial calls",
     TOFF(breaker_reset_ms)},
    {"breaker_window_ms", 10000, 10, 3600000, "rolling window of the failure rate",
     TOFF(breaker_window_ms)},
    {"breaker_buckets", 10, 1, 1000, "buckets in the rolling window", TOFF(breaker_buckets)},
    {"breaker_min_calls", 5, 1, 1000000, "calls in the window before the rate can open it",
     TOFF(breaker_min_calls)},
    {"breaker_trial_calls", 1, 1, 1000, "calls admitted while HALF_OPEN",
     TOFF(breaker_trial_calls)},
    {"tenant_share_pct", 100, 1, 100,
     "most workers/connections (%) one tenant holds while other tenants wait",
     TOFF(tenant_share_pct)},
    {"tenant_queue_pct", 100, 1, 100, "most of the queue (%) one tenant may fill",
     TOFF(tenant_queue_pct)},
    {"tenant_reserve_pct", 0, 0, 50,
     "workers/connections (%, at least 1 when set) kept for tenants with nothing in flight: a busy "
     "tenant never takes them, even alone",
     TOFF(tenant_reserve_pct)},
    {"brief_request_ms", 5, 0, 60000,
     "a tenant whose recent requests held a worker less than this (ms, mean), one of which ended "
     "less than this ago, may take one worker and one connection past its share (never the "
     "reserve); 0 = none",
     TOFF(brief_request_ms)},
    {"fair_queue_cost", 0, 0, 1,
     "1: the queue serves next the tenant whose statements used the least database time recently "
     "(a sum halving every second); 0: tenants in turn, one request each",
     TOFF(fair_queue_cost)},
    {"priority", 10, 0, 1000,
     "rank over the shared capacity: while a tier of higher priority is active, this one is "
     "limited when that tier's latency threatens its objective and this one presses",
     TOFF(priority)},
    {"capacity_floor_pct", 10, 0, 100,
     "the least this tier is cut to, as % of db_max in requests at once (below one request: "
     "paced; 0: it may be shut while a higher tier is threatened); 100 = never cut",
     TOFF(capacity_floor_pct)},
    {"capacity_tolerance_pct", 100, 1, 10000,
     "how much this tier's typical latency may grow over its level (%) before it threatens its "
     "objective; it must also grow by capacity_margin_us",
     TOFF(capacity_tolerance_pct)},
    {"capacity_margin_us", 100, 0, 10000000,
     "how much this tier's typical latency may grow over its level (microseconds) before it "
     "threatens its objective; it must also grow by capacity_tolerance_pct",
     TOFF(capacity_margin_us)},
    {"latency_objective_ms", 0, 0, 600000,
     "this tier's p99 latency objective: lower tiers are cut while it is passed; 0 = a tenth of "
     "breaker_timeout_ms",
     TOFF(latency_objective_ms)},
    {"tenant_linger_ms", 1000, 0, 3600000,
     "how long a tenant still counts as active after its last request ended (its neighbours stay "
     "at their share meanwhile)",
     TOFF(tenant_linger_ms)},
    {"db_time_ms_per_min", 0, 0, 100000000,
     "database time (ms) each tenant's statements may hold connections per minute, charged after "
     "each statement; a tenant over it is refused 429 db_time_exhausted until the refill has "
     "paid its debt back; 0 = no budget",
     TOFF(db_time_ms_per_min)},
    {"rate_limit_shadow", 0, 0, 1,
     "1: shadow mode, the rate limit refuses nothing but counts and logs every request it would "
     "refuse",
     TOFF(rate_limit_shadow)},
    {"db_time_shadow", 0, 0, 1,
     "1: shadow mode, the database-time budget refuses nothing but counts and logs every request "
     "it would refuse",
     TOFF(db_time_shadow)},
    {"budget_scope", TIERS_SCOPE_INSTANCE, TIERS_SCOPE_INSTANCE, TIERS_SCOPE_FLEET,
     "what workers and db_max count: `instance`, each instance's; `fleet`, the fleet's totals, "
     "split among the live instances by demand (needs FLEET=true and CAPACITY_CONTROL=true; "
     "README: Fleet budgets)",
     TOFF(budget_scope), .choices = tiers_scopes},
    {"budget_min_pct", 10, 1, 100,
     "with budget_scope `fleet`: an instance's least share of workers and db_max (%, at least "
     "1): what it takes at once when it starts, and keeps without the fleet view",
     TOFF(budget_min_pct)},
};

#define TIER_KEY_COUNT (sizeof(tier_keys) / sizeof(tier_keys[0]))

static int64_t *tiers_field(struct tier_cfg *c, const struct tier_key *k)
{
    return (int64_t *)(void *)((char *)c + k->offset);
}

/* Where a tier's keys start: the built-in tier of the same name, or the keys' defaults. */
static void tiers_start(struct tier_cfg *c, const char *name, const struct tier_table *builtin)
{
    int b = builtin ? tiers_find(builtin, name) : -1;
    if (b >= 0) {
        *c = builtin->tiers[b];
        return;
    }
    memset(c, 0, sizeof(*c));
    snprintf(c->name, sizeof(c->name), "%s", name);
    for (size_t i = 0; i < TIER_KEY_COUNT; i++)
        *tiers_field(c, &tier_keys[i]) = tier_keys[i].def;
}

static bool tiers_valid_name(const char *name)
{
    size_t n = strlen(name);
    if (n == 0 || n > TIERS_NAME_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        char ch = name[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '_' || ch == '-'))
            return false;
    }
    return true;
}

/* "a", "b" or "c": a key's choices, for messages and the help. */
static void tiers_choices(const struct tier_key *k, bool markdown, char *buf, size_t len)
{
    size_t used = 0;
    buf[0] = '\0';
    for (size_t i = 0; k->choices[i] && used < len; i++) {
        int n = snprintf(buf + used, len - used, "%s%s%s%s",
                         i ? (k->choices[i + 1] ? ", " : " or ") : "", markdown ? "`" : "\"",
                         k->choices[i], markdown ? "`" : "\"");
        if (n < 0)
            break;
        used += (size_t)n;
    }
}

/* A key of named choices: val must be one of the names (its index is stored). */
static int tiers_parse_choice(const char *name, const struct tier_key *k, json_t *val,
                              struct tier_cfg *c, char *err, size_t errlen)
{
    const char *s = json_string_value(val);
    for (size_t i = 0; s && k->choices[i]; i++) {
        if (!strcmp(k->choices[i], s)) {
            *tiers_field(c, k) = (int64_t)i;
            return 0;
        }
    }
    char names[128], *got = json_dumps(val, JSON_ENCODE_ANY | JSON_COMPACT | JSON_ENSURE_ASCII);
    tiers_choices(k, false, names, sizeof(names));
    snprintf(err, errlen, "tiers.%s.%s: must be %s (got %.32s)", name, k->name, names,
             got ? got : "?");
    free(got);
    return -EINVAL;
}

static int tiers_parse_tier(const char *name, json_t *obj, const struct tier_table *builtin,
                            struct tier_cfg *c, char *err, size_t errlen)
{
    if (!json_is_object(obj)) {
        snprintf(err, errlen, "tiers.%s: must be an object of settings", name);
        return -EINVAL;
    }
    tiers_start(c, name, builtin);
    const char *key;
    json_t *val;
    json_object_foreach(obj, key, val)
    {
        const struct tier_key *k = NULL;
        for (size_t i = 0; i < TIER_KEY_COUNT; i++)
            if (!strcmp(tier_keys[i].name, key))
                k = &tier_keys[i];
        if (!k) {
            snprintf(err, errlen, "tiers.%s.%.64s: unknown key (see bulkhead --help)", name, key);
            return -EINVAL;
        }
        if (k->choices) {
            if (tiers_parse_choice(name, k, val, c, err, errlen))
                return -EINVAL;
            continue;
        }
        json_int_t v = json_integer_value(val);
        if (!json_is_integer(val) || v < k->min || v > k->max) {
            char *got = json_dumps(val, JSON_ENCODE_ANY | JSON_COMPACT | JSON_ENSURE_ASCII);
            snprintf(err, errlen,
                     "tiers.%s.%s: must be an integer from %" PRId64 " to %" PRId64 " (got %.32s)",
                     name, key, k->min, k->max, got ? got : "?");
            free(got);
            return -EINVAL;
        }
        *tiers_field(c, k) = (int64_t)v;
    }
    for (size_t i = 0; i < TIER_KEY_COUNT; i++) {
        if (*tiers_field(c, &tier_keys[i]) != TIER_NO_DEFAULT)
            continue;
        char names[TIERS_MAX * (TIERS_NAME_MAX + 2) + 1] = "";
        if (builtin)
            tiers_names(builtin, names, sizeof(names));
        snprintf(err, errlen,
                 "tiers.%s.%s: missing: a tier not named like a built-in one (%s) must state it",
                 name, tier_keys[i].name, builtin ? names : "none");
        return -EINVAL;
    }
    if (c->breaker_window_ms / c->breaker_buckets < 1) {
        snprintf(err, errlen,
                 "tiers.%s.breaker_buckets: more buckets than milliseconds in "
                 "breaker_window_ms",
                 name);
        return -EINVAL;
    }
    return 0;
}

/* builtin: the table whose tiers lend their values to tiers of the same name (NULL: none). */
static int tiers_parse_over(const char *json, size_t len, const struct tier_table *builtin,
                            struct tier_table *out, char *err, size_t errlen)
{
    json_error_t jerr;
    memset(out, 0, sizeof(*out));
    json_t *root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) {
        snprintf(err, errlen, "tiers: invalid JSON at line %d column %d: %s", jerr.line,
                 jerr.column, jerr.text);
        return -EINVAL;
    }
    int rc = 0;
    if (!json_is_object(root) || json_object_size(root) == 0) {
        snprintf(err, errlen, "tiers: must be a non-empty object {\"tier\": {settings}, ...}");
        rc = -EINVAL;
        goto out;
    }
    if (json_object_size(root) > TIERS_MAX) {
        snprintf(err, errlen, "tiers: at most %d tiers", TIERS_MAX);
        rc = -EINVAL;
        goto out;
    }
    const char *name;
    json_t *obj;
    json_object_foreach(root, name, obj)
    {
        if (!tiers_valid_name(name)) {
            snprintf(err, errlen,
                     "tiers.%.40s: a tier name is 1 to %d characters of a-z, 0-9, '_' and '-'",
                     name, TIERS_NAME_MAX);
            rc = -EINVAL;
            goto out;
        }
        rc = tiers_parse_tier(name, obj, builtin, &out->tiers[out->count], err, errlen);
        if (rc)
            goto out;
        out->count++;
    }
out:
    json_decref(root);
    if (rc)
        memset(out, 0, sizeof(*out));
    return rc;
}

int tiers_parse(const char *json, size_t len, struct tier_table *out, char *err, size_t errlen)
{
    struct tier_table builtin;
    tiers_builtin(&builtin);
    return tiers_parse_over(json, len, &builtin, out, err, errlen);
}

void tiers_builtin(struct tier_table *out)
{
    char err[256];
    if (tiers_parse_over(assets_tiers_json, assets_tiers_json_len, NULL, out, err, sizeof(err)) !=
        0) {
        /* The built-in file is checked by the unit tests; reaching this is a build error. */
        fprintf(stderr, "bulkhead: built-in tier table is invalid: %s\n", err);
        abort();
    }
}

int tiers_load_file(const char *path, struct tier_table *out, char *err, size_t errlen)
{
    char *buf = NULL;
    size_t len = 0;
    int rc = fileio_read(path, 1 << 20, &buf, &len);
    if (rc) {
        snprintf(err, errlen, "TIERS_FILE %s: %s", path,
                 rc == -EFBIG ? "larger than 1 MiB" : strerror(-rc));
        return rc;
    }
    char why[300];
    rc = tiers_parse(buf, len, out, why, sizeof(why));
    if (rc)
        snprintf(err, errlen, "TIERS_FILE %s: %s", path, why);
    free(buf);
    return rc;
}

int tiers_find(const struct tier_table *t, const char *name)
{
    for (size_t i = 0; i < t->count; i++)
        if (!strcmp(t->tiers[i].name, name))
            return (int)i;
    return -1;
}

static int64_t tiers_share(int64_t total, int64_t pct)
{
    int64_t cap = total * pct / 100;
    return cap < 1 ? 1 : cap;
}

struct share_policy tiers_worker_policy(const struct tier_cfg *c)
{
    return share_policy_pct((size_t)c->workers, c->tenant_share_pct, c->tenant_reserve_pct);
}

struct share_policy tiers_conn_policy(const struct tier_cfg *c)
{
    return share_policy_pct((size_t)c->db_max, c->tenant_share_pct, c->tenant_reserve_pct);
}

int64_t tiers_tenant_worker_cap(const struct tier_cfg *c)
{
    return (int64_t)tiers_worker_policy(c).cap;
}

int64_t tiers_tenant_conn_cap(const struct tier_cfg *c)
{
    return (int64_t)tiers_conn_policy(c).cap;
}

int64_t tiers_min_share(int64_t total, int64_t min_pct)
{
    int64_t m = total * min_pct / 100;
    if (m < 1)
        m = 1;
    return m < total ? m : total;
}

int64_t tiers_latency_objective_ms(const struct tier_cfg *c)
{
    if (c->latency_objective_ms > 0)
        return c->latency_objective_ms;
    return c->breaker_timeout_ms >= 10 ? c->breaker_timeout_ms / 10 : 1;
}

int64_t tiers_tenant_queue_cap(const struct tier_cfg *c)
{
    return c->queue_max == 0 ? 0 : tiers_share(c->queue_max, c->tenant_queue_pct);
}

void tiers_names(const struct tier_table *t, char *buf, size_t buflen)
{
    size_t used = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < t->count && used < buflen; i++) {
        int n = snprintf(buf + used, buflen - used, "%s%s", i ? ", " : "", t->tiers[i].name);
        if (n < 0)
            break;
        used += (size_t)n;
    }
}

void tiers_print_help(FILE *out, bool markdown)
{
    if (markdown)
        fprintf(out, "| key | default in a new tier | allowed | meaning |\n|---|---|---|---|\n");
    for (size_t i = 0; i < TIER_KEY_COUNT; i++) {
        const struct tier_key *k = &tier_keys[i];
        char def[40];
        if (k->choices) {
            char names[128];
            tiers_choices(k, markdown, names, sizeof(names));
            if (markdown)
                fprintf(out, "| `%s` | `%s` | %s | %s |\n", k->name, k->choices[k->def], names,
                        k->help);
            else
                fprintf(out, "  %-24s %s (default \"%s\", %s)\n", k->name, k->help,
                        k->choices[k->def], names);
            continue;
        }
        if (k->def != TIER_NO_DEFAULT)
            snprintf(def, sizeof(def), "%" PRId64, k->def);
        else
            snprintf(def, sizeof(def), markdown ? "required" : "none: a new tier states it");
        if (markdown)
            fprintf(out, "| `%s` | %s | %" PRId64 "..%" PRId64 " | %s |\n", k->name, def, k->min,
                    k->max, k->help);
        else
            fprintf(out, "  %-24s %s (default %s, %" PRId64 "..%" PRId64 ")\n", k->name, k->help,
                    def, k->min, k->max);
    }
}

void tiers_print_table(FILE *out, const struct tier_table *t, const char *prefix)
{
    for (size_t i = 0; i < t->count; i++) {
        fprintf(out, "%s%s:", prefix, t->tiers[i].name);
        for (size_t k = 0; k < TIER_KEY_COUNT; k++) {
            int64_t v =
                *(const int64_t *)(const void *)((const char *)&t->tiers[i] + tier_keys[k].offset);
            if (tier_keys[k].choices)
                fprintf(out, " %s=%s", tier_keys[k].name, tier_keys[k].choices[v]);
            else
                fprintf(out, " %s=%" PRId64, tier_keys[k].name, v);
        }
        fputc('\n', out);
    }
}
