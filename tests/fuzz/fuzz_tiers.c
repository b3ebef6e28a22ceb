/*
 * fuzz_tiers: tiers_parse on arbitrary bytes. An accepted table has 1 to TIERS_MAX uniquely
 * named tiers whose every value lies within the bounds tiers_print_help documents, with tenant
 * caps never below 1; writing it back as JSON parses to the identical table. A refused table
 * is left zeroed with a message starting "tiers".
 */
#include "fuzz.h"
#include "tiers.h"

#include <errno.h>
#include <inttypes.h>

/* Per-tier keys and bounds, read from the documentation table once. */
static struct {
    char name[64];
    int64_t def, min, max;
    size_t offset;
} keys[32];
static size_t nkeys;

static const struct {
    const char *name;
    size_t offset;
} fields[] = {
    {"workers", offsetof(struct tier_cfg, workers)},
    {"queue_max", offsetof(struct tier_cfg, queue_max)},
    {"queue_timeout_ms", offsetof(struct tier_cfg, queue_timeout_ms)},
    {"db_max", offsetof(struct tier_cfg, db_max)},
    {"db_acquire_timeout_ms", offsetof(struct tier_cfg, db_acquire_timeout_ms)},
    {"db_idle_timeout_ms", offsetof(struct tier_cfg, db_idle_timeout_ms)},
    {"rate_limit", offsetof(struct tier_cfg, rate_limit)},
    {"rate_window_s", offsetof(struct tier_cfg, rate_window_s)},
    {"breaker_timeout_ms", offsetof(struct tier_cfg, breaker_timeout_ms)},
    {"breaker_error_pct", offsetof(struct tier_cfg, breaker_error_pct)},
    {"breaker_reset_ms", offsetof(struct tier_cfg, breaker_reset_ms)},
    {"breaker_window_ms", offsetof(struct tier_cfg, breaker_window_ms)},
    {"breaker_buckets", offsetof(struct tier_cfg, breaker_buckets)},
    {"breaker_min_calls", offsetof(struct tier_cfg, breaker_min_calls)},
    {"breaker_trial_calls", offsetof(struct tier_cfg, breaker_trial_calls)},
    {"tenant_share_pct", offsetof(struct tier_cfg, tenant_share_pct)},
    {"tenant_queue_pct", offsetof(struct tier_cfg, tenant_queue_pct)},
    {"tenant_reserve_pct", offsetof(struct tier_cfg, tenant_reserve_pct)},
    {"brief_request_ms", offsetof(struct tier_cfg, brief_request_ms)},
    {"fair_queue_cost", offsetof(struct tier_cfg, fair_queue_cost)},
    {"tenant_linger_ms", offsetof(struct tier_cfg, tenant_linger_ms)},
    {"priority", offsetof(struct tier_cfg, priority)},
    {"capacity_floor_pct", offsetof(struct tier_cfg, capacity_floor_pct)},
    {"capacity_tolerance_pct", offsetof(struct tier_cfg, capacity_tolerance_pct)},
    {"capacity_margin_us", offsetof(struct tier_cfg, capacity_margin_us)},
    {"latency_objective_ms", offsetof(struct tier_cfg, latency_objective_ms)},
    {"db_time_ms_per_min", offsetof(struct tier_cfg, db_time_ms_per_min)},
    {"rate_limit_shadow", offsetof(struct tier_cfg, rate_limit_shadow)},
    {"db_time_shadow", offsetof(struct tier_cfg, db_time_shadow)},
};

static void load_keys(void)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    FUZZ_CHECK(f != NULL);
    tiers_print_help(f, true);
    fclose(f);
    char *save = NULL;
    for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        FUZZ_CHECK(nkeys < sizeof(keys) / sizeof(keys[0]));
        /* rate_limit's default reads "required": a tier of a new name must state it. */
        keys[nkeys].def = 0;
        if (sscanf(line, "| `%63[^`]` | required | %" SCNd64 "..%" SCNd64 " |", keys[nkeys].name,
                   &keys[nkeys].min, &keys[nkeys].max) != 3 &&
            sscanf(line, "| `%63[^`]` | %" SCNd64 " | %" SCNd64 "..%" SCNd64 " |", keys[nkeys].name,
                   &keys[nkeys].def, &keys[nkeys].min, &keys[nkeys].max) != 4)
            continue;
        bool found = false;
        for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
            if (!strcmp(fields[i].name, keys[nkeys].name)) {
                keys[nkeys].offset = fields[i].offset;
                found = true;
            }
        }
        FUZZ_CHECK(found);
        nkeys++;
    }
    free(text);
    FUZZ_CHECK(nkeys == sizeof(fields) / sizeof(fields[0]));
}

static int64_t get(const struct tier_cfg *c, size_t k)
{
    int64_t v;
    memcpy(&v, (const char *)c + keys[k].offset, sizeof(v));
    return v;
}

static bool valid_name(const char *s)
{
    size_t n = strlen(s);
    if (n < 1 || n > TIERS_NAME_MAX)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '_' ||
              s[i] == '-'))
            return false;
    return true;
}

static void check_table(const struct tier_table *t)
{
    FUZZ_CHECK(t->count >= 1 && t->count <= TIERS_MAX);
    for (size_t i = 0; i < t->count; i++) {
        const struct tier_cfg *c = &t->tiers[i];
        FUZZ_CHECK(valid_name(c->name));
        FUZZ_CHECK(tiers_find(t, c->name) == (int)i); /* names are unique */
        for (size_t k = 0; k < nkeys; k++)
            FUZZ_CHECK(get(c, k) >= keys[k].min && get(c, k) <= keys[k].max);
        FUZZ_CHECK(c->breaker_window_ms / c->breaker_buckets >= 1);
        FUZZ_CHECK(tiers_tenant_worker_cap(c) >= 1 && tiers_tenant_worker_cap(c) <= c->workers);
        FUZZ_CHECK(tiers_tenant_conn_cap(c) >= 1 && tiers_tenant_conn_cap(c) <= c->db_max);
        /* The reserve leaves a lone tenant at least one slot; a share never exceeds the pool. */
        struct share_policy w = tiers_worker_policy(c), d = tiers_conn_policy(c);
        FUZZ_CHECK(w.size == (size_t)c->workers && w.reserve < w.size && w.cap <= w.size);
        FUZZ_CHECK(d.size == (size_t)c->db_max && d.reserve < d.size && d.cap <= d.size);
        int64_t q = tiers_tenant_queue_cap(c);
        FUZZ_CHECK(c->queue_max == 0 ? q == 0 : q >= 1 && q <= c->queue_max);
    }
}

/* The table as JSON with every key written out. */
static char *serialise(const struct tier_table *t, size_t *len)
{
    size_t cap = 64 + t->count * (TIERS_NAME_MAX + 16 + nkeys * 48);
    char *out = malloc(cap);
    FUZZ_CHECK(out != NULL);
    size_t n = (size_t)snprintf(out, cap, "{");
    for (size_t i = 0; i < t->count; i++) {
        n += (size_t)snprintf(out + n, cap - n, "%s\"%s\": {", i ? ", " : "", t->tiers[i].name);
        for (size_t k = 0; k < nkeys; k++)
            n += (size_t)snprintf(out + n, cap - n, "%s\"%s\": %" PRId64, k ? ", " : "",
                                  keys[k].name, get(&t->tiers[i], k));
        n += (size_t)snprintf(out + n, cap - n, "}");
    }
    n += (size_t)snprintf(out + n, cap - n, "}");
    FUZZ_CHECK(n < cap);
    *len = n;
    return out;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!nkeys)
        load_keys();
    struct tier_table t;
    char err[300];
    err[0] = '\0';
    int rc = tiers_parse((const char *)data, size, &t, err, sizeof(err));
    FUZZ_CHECK(rc == 0 || rc == -EINVAL);
    if (rc) {
        static const struct tier_table zero;
        FUZZ_CHECK(memcmp(&t, &zero, sizeof(t)) == 0);
        FUZZ_CHECK(strncmp(err, "tiers", 5) == 0);
        return 0;
    }
    check_table(&t);
    size_t len = 0;
    char *json = serialise(&t, &len);
    struct tier_table again;
    if (tiers_parse(json, len, &again, err, sizeof(err)) != 0) {
        fprintf(stderr, "re-parse refused: %s\n", err);
        abort();
    }
    FUZZ_CHECK(memcmp(&t, &again, sizeof(t)) == 0);
    free(json);
    return 0;
}
