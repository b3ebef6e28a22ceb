/*
 * fuzz_tiers: tiers_parse on arbitrary bytes. An accepted table has 1 to TIERS_MAX uniquely
 * named tiers whose every value lies within the bounds tiers_print_help documents, with tenant
 * caps never below 1 and a budget_scope that is one of its two names; writing it back as JSON
 * (budget_scope as its name) parses to the identical table. A refused table is left zeroed with
 * a message starting "tiers".
 */
#include "fuzz.h"
#include "tiers.h"

#include "../tierkeys.h"

#include <errno.h>
#include <inttypes.h>

/* Per-tier keys and bounds, read from the documentation table once. */
static struct {
    char name[64];
    int64_t def, min, max;
    size_t offset;
} keys[32];
static size_t nkeys;

/* The one key of named choices, stored as the index of its name (tiers.h: TIERS_SCOPE_*). */
static const char *const scopes[] = {"instance", "fleet"};

static void load_keys(void)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    FUZZ_CHECK(f != NULL);
    tiers_print_help(f, true);
    fclose(f);
    FUZZ_CHECK(strstr(text, "| `budget_scope` | `instance` | `instance` or `fleet` |") != NULL);
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
        for (size_t i = 0; i < TIERKEYS_COUNT; i++) {
            if (!strcmp(tierkeys[i].name, keys[nkeys].name)) {
                keys[nkeys].offset = tierkeys[i].offset;
                found = true;
            }
        }
        FUZZ_CHECK(found);
        nkeys++;
    }
    free(text);
    FUZZ_CHECK(nkeys == TIERKEYS_COUNT);
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
        FUZZ_CHECK(c->budget_scope == TIERS_SCOPE_INSTANCE || c->budget_scope == TIERS_SCOPE_FLEET);
        int64_t mw = tiers_min_share(c->workers, c->budget_min_pct);
        FUZZ_CHECK(mw >= 1 && mw <= c->workers);
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
    size_t cap = 64 + t->count * (TIERS_NAME_MAX + 48 + nkeys * 48);
    char *out = malloc(cap);
    FUZZ_CHECK(out != NULL);
    size_t n = (size_t)snprintf(out, cap, "{");
    for (size_t i = 0; i < t->count; i++) {
        n += (size_t)snprintf(out + n, cap - n, "%s\"%s\": {", i ? ", " : "", t->tiers[i].name);
        for (size_t k = 0; k < nkeys; k++)
            n += (size_t)snprintf(out + n, cap - n, "%s\"%s\": %" PRId64, k ? ", " : "",
                                  keys[k].name, get(&t->tiers[i], k));
        n += (size_t)snprintf(out + n, cap - n, ", \"budget_scope\": \"%s\"}",
                              scopes[t->tiers[i].budget_scope]);
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
