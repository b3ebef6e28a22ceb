/*
 * tenantview: JSON and Prometheus text of the per-tenant figures (see tenantview.h).
 */
#include "tenantview.h"
#include "dbbudget.h"
#include "tenantstat.h"
#include "tierset.h"
#include "xalloc.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

/* What a key shows as: a tenant id as it is, an address-keyed client as "ip:<address>". */
static const char *tenantview_label(const char *key)
{
    return !strncmp(key, "id:", 3) ? key + 3 : key;
}

static json_t *tenantview_reasons(const struct tenantstat_counts *c, int base)
{
    json_t *o = json_object();
    for (int r = 0; r < TENANTSTAT_REASONS; r++)
        if (c->v[base + r])
            json_object_set_new(o, tenantstat_reason_name((enum tenantstat_reason)r),
                                json_integer(c->v[base + r]));
    return o;
}

/* The figures of c as members of a new object. */
static json_t *tenantview_counts(const struct tenantstat_counts *c)
{
    return json_pack("{s:f, s:f, s:f, s:I, s:I, s:o, s:o}", "db_time_ms",
                     (double)c->v[TENANTSTAT_DB_US] / 1000.0, "queue_wait_ms",
                     (double)c->v[TENANTSTAT_QUEUE_US] / 1000.0, "pool_wait_ms",
                     (double)c->v[TENANTSTAT_POOL_US] / 1000.0, "requests",
                     (json_int_t)c->v[TENANTSTAT_REQUESTS], "refused",
                     (json_int_t)c->v[TENANTSTAT_REFUSED], "refused_by",
                     tenantview_reasons(c, TENANTSTAT_REFUSED_BY), "shadow_refused_by",
                     tenantview_reasons(c, TENANTSTAT_SHADOW_BY));
}

static json_t *tenantview_row(const struct tenantstat_row *row)
{
    json_t *o = tenantview_counts(&row->c);
    json_object_set_new(o, "tenant", json_string(tenantview_label(row->key)));
    json_object_set_new(o, "exact", json_boolean(row->err == 0));
    return o;
}

static void tenantview_sub(struct tenantstat_counts *from, const struct tenantstat_counts *c)
{
    for (int f = 0; f < TENANTSTAT_FIELDS; f++)
        from->v[f] -= c->v[f];
}

/* One tier's object: its top tenants, the others summed, its total. */
static json_t *tenantview_tier(struct tenantstat *ts, const struct tier_rt *t, int by, size_t limit,
                               int64_t now_us)
{
    struct tenantstat_row *rows = xcalloc(limit ? limit : 1, sizeof(*rows));
    struct tenantstat_counts total, other;
    size_t held;
    size_t n = tenantstat_top(ts, t->index, by, limit, now_us, rows, &total, &held);
    json_t *list = json_array();
    other = total;
    for (size_t i = 0; i < n; i++) {
        json_array_append_new(list, tenantview_row(&rows[i]));
        tenantview_sub(&other, &rows[i].c);
    }
    free(rows);
    const struct tier_cfg *c = tierset_cfg(t);
    return json_pack("{s:o, s:o, s:o, s:I, s:I, s:b, s:b}", "tenants", list, "other",
                     tenantview_counts(&other), "total", tenantview_counts(&total), "held",
                     (json_int_t)held, "db_time_ms_per_min", (json_int_t)c->db_time_ms_per_min,
                     "rate_limit_shadow", c->rate_limit_shadow != 0, "db_time_shadow",
                     c->db_time_shadow != 0);
}

static const char *const tenantview_by_names[] = {
    [TENANTSTAT_DB_US] = "db_time",     [TENANTSTAT_QUEUE_US] = "queue_wait",
    [TENANTSTAT_POOL_US] = "pool_wait", [TENANTSTAT_REQUESTS] = "requests",
    [TENANTSTAT_REFUSED] = "refused",
};

char *tenantview_json(struct tenantstat *ts, struct tierset *tiers, const char *tier, int by,
                      size_t limit, int64_t now_us)
{
    json_t *per = json_object();
    for (size_t i = 0; i < tierset_count(tiers); i++) {
        struct tier_rt *t = tierset_tier(tiers, i);
        if (!tier || !strcmp(tier, t->name))
            json_object_set_new(per, t->name, tenantview_tier(ts, t, by, limit, now_us));
    }
    json_t *o =
        json_pack("{s:I, s:s, s:I, s:o}", "window_s", (json_int_t)(TENANTSTAT_WINDOW_US / 1000000),
                  "by", by >= 0 && by <= TENANTSTAT_REFUSED ? tenantview_by_names[by] : "?",
                  "limit", (json_int_t)limit, "tiers", per);
    char *text = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    return text;
}

/* One family: the top tenants of each tier by database time, then "other". */
static void tenantview_family(FILE *f, struct tenantstat *ts, struct tierset *tiers, int64_t now_us,
                              const char *name, const char *help, int field, double scale)
{
    fprintf(f, "# HELP %s %s\n# TYPE %s gauge\n", name, help, name);
    struct tenantstat_row rows[TENANTVIEW_PROM_TOP];
    for (size_t i = 0; i < tierset_count(tiers); i++) {
        struct tier_rt *t = tierset_tier(tiers, i);
        struct tenantstat_counts total;
        size_t held;
        size_t n = tenantstat_top(ts, t->index, TENANTSTAT_DB_US, TENANTVIEW_PROM_TOP, now_us, rows,
                                  &total, &held);
        int64_t rest = total.v[field];
        for (size_t k = 0; k < n; k++) {
            /* Tenant ids are [A-Za-z0-9._-] and addresses hex, digits, '.' and ':': no label
             * escaping needed. */
            fprintf(f, "%s{tier=\"%s\",tenant=\"%s\"} %.6g\n", name, t->name,
                    tenantview_label(rows[k].key), (double)rows[k].c.v[field] * scale);
            rest -= rows[k].c.v[field];
        }
        fprintf(f, "%s{tier=\"%s\",tenant=\"other\"} %.6g\n", name, t->name, (double)rest * scale);
    }
}

void tenantview_prometheus(FILE *f, struct tenantstat *ts, struct tierset *tiers, int64_t now_us)
{
    tenantview_family(f, ts, tiers, now_us, "bulkhead_tenant_db_time_seconds",
                      "Database time the tenant's statements held a connection in the last "
                      "minute (top tenants by it; the rest as tenant=\"other\")",
                      TENANTSTAT_DB_US, 1e-6);
    tenantview_family(f, ts, tiers, now_us, "bulkhead_tenant_requests",
                      "Requests of the tenant that reached its tier in the last minute",
                      TENANTSTAT_REQUESTS, 1.0);
    tenantview_family(f, ts, tiers, now_us, "bulkhead_tenant_refused",
                      "Requests of the tenant refused in the last minute, any reason",
                      TENANTSTAT_REFUSED, 1.0);
}

char *tenantview_usage_json(struct tenantstat *ts, struct tierset *tiers, const char *name,
                            int64_t now_us)
{
    char key[TENANTSTAT_KEY_MAX + 1];
    snprintf(key, sizeof(key), "id:%s", name);
    json_t *list = json_array();
    for (size_t i = 0; i < tierset_count(tiers); i++) {
        struct tier_rt *t = tierset_tier(tiers, i);
        const struct tier_cfg *c = tierset_cfg(t);
        struct tenantstat_row row;
        bool seen = tenantstat_get(ts, t->index, key, now_us, &row);
        struct dbbudget_verdict v = {.allowed = true};
        bool budget = c->db_time_ms_per_min > 0 && t->budget;
        if (budget)
            dbbudget_check(t->budget, key, c->db_time_ms_per_min, now_us, &v);
        if (!seen && !(budget && v.full_us > 0))
            continue;
        json_t *o = seen ? tenantview_row(&row) : json_object();
        json_object_set_new(o, "tier", json_string(t->name));
        if (budget)
            json_object_set_new(
                o, "db_time_budget",
                json_pack("{s:I, s:I, s:b, s:I, s:b}", "limit_ms_per_min", (json_int_t)v.limit_ms,
                          "remaining_ms", (json_int_t)v.remaining_ms, "in_debt", !v.allowed,
                          "retry_after_ms", (json_int_t)((v.retry_after_us + 999) / 1000), "shadow",
                          c->db_time_shadow != 0));
        json_array_append_new(list, o);
    }
    json_t *o = json_pack("{s:s, s:I, s:o}", "tenant", name, "window_s",
                          (json_int_t)(TENANTSTAT_WINDOW_US / 1000000), "tiers", list);
    char *text = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    return text;
}
