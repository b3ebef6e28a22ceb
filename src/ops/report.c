/*
 * report: the snapshot and its renderings (see report.h). What a tier's and the process's
 * metrics are is one table, reportdef.c; the renderers here walk it.
 */
#include "report.h"
#include "reportdef.h"
#include "http.h"
#include "admin.h"
#include "capctl.h"
#include "fleet.h"
#include "health.h"
#include "mclock.h"
#include "procstat.h"
#include "tarpit.h"
#include "tierset.h"
#include "xalloc.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- reading ------------------------------------------------------------------------- */

void report_read_process(const struct report_sources *src, struct report_process *out)
{
    memset(out, 0, sizeof(*out));
    out->now_wall_us = mclock_wall_us();
    out->started_wall_us = src->started_wall_us;
    out->instance_id = src->instance_id;
    out->healthy = !src->health || health_ok(src->health);
    if (!out->healthy)
        health_reason(src->health, out->reason, sizeof(out->reason));
    out->db_probe_us = src->health ? health_latency_us(src->health) : 0;
    out->db_up = out->healthy;
    out->in_flight = src->in_flight ? (uint64_t)atomic_load(src->in_flight) : 0;
    out->draining = src->draining && atomic_load(src->draining);
    if (src->http) {
        const struct http_counters *k = src->http;
        out->http_open = atomic_load_explicit(&k->open, memory_order_relaxed);
        out->http_accepted = atomic_load_explicit(&k->accepted, memory_order_relaxed);
        out->http_head_timeouts = atomic_load_explicit(&k->head_timeouts, memory_order_relaxed);
        out->http_body_timeouts = atomic_load_explicit(&k->body_timeouts, memory_order_relaxed);
        out->http_malformed = atomic_load_explicit(&k->malformed, memory_order_relaxed);
        out->http_addr_refused = atomic_load_explicit(&k->addr_refused, memory_order_relaxed);
        out->http_evicted = atomic_load_explicit(&k->evicted, memory_order_relaxed);
    }
    procstat_read(&out->ps);
    out->nloops = src->loop_lag ? src->nloops : 0;
    if (out->nloops > REPORT_LOOPS_MAX)
        out->nloops = REPORT_LOOPS_MAX;
    for (unsigned i = 0; i < out->nloops; i++)
        metrics_hist_read(&src->loop_lag[i], &out->loop_lag[i]);
    if (src->redis) {
        struct rlsync_stats rs;
        rlsync_stats(src->redis, &rs);
        out->have_redis = true;
        out->redis_up = rs.up;
        out->redis_errors = rs.errors;
        out->redis_fallbacks = rs.fallbacks;
        out->redis_batches = rs.batches;
        out->redis_hits_sent = rs.hits_sent;
        out->redis_hits_dropped = rs.hits_dropped;
        out->redis_waits = rs.waits;
        out->redis_keys = rs.keys;
    }
    if (src->fleet) {
        struct fleet_stats fs;
        fleet_stats(src->fleet, &fs);
        out->have_fleet = true;
        out->fleet_up = fs.up;
        out->fleet_instances = fs.instances;
        out->fleet_exchanges = fs.exchanges;
        out->fleet_failures = fs.failures;
        out->fleet_rtt_us = (uint64_t)fs.rtt_us;
        memcpy(out->fleet_reason, fs.reason, sizeof(out->fleet_reason));
        out->fleet_changed_wall_us = fs.changed_wall_us;
    }
    if (src->auth) {
        struct auth_stats as;
        auth_stats(src->auth, &as);
        out->have_auth = true;
        out->auth_keys = as.keys;
        out->auth_accepted = as.accepted;
        out->auth_rejected = as.rejected;
    }
    if (src->admin) {
        struct admin_stats as;
        admin_stats(src->admin, &as);
        out->have_admin = true;
        out->admin_accepted = as.accepted;
        out->admin_refused = as.refused;
        out->admin_limited = as.limited;
    }
    if (src->tarpit) {
        struct tarpit_stats ts;
        tarpit_stats(src->tarpit, &ts);
        out->have_tarpit = true;
        out->tarpit_held = ts.held;
        out->tarpit_holding = ts.holding;
        out->tarpit_overflow = ts.overflow;
        out->tarpit_clients = ts.clients;
        out->tarpit_untracked = ts.untracked;
        out->tarpit_left = ts.left;
    }
    for (int o = 0; o < OUTCOME_COUNT; o++)
        out->untiered_outcomes[o] = atomic_load(&src->untiered->outcomes[o]);
    for (int s = 0; s < METRICS_STATUS_COUNT; s++)
        out->untiered_statuses[s] = atomic_load(&src->untiered->statuses[s]);
}

static void report_read_tier(struct tier_rt *t, const struct report_process *p,
                             struct capctl *src_cap, int64_t now, struct report_tier *out)
{
    const struct tier_cfg *c = tierset_cfg(t);
    out->name = t->name;
    out->cfg = *c;
    workpool_stats(t->pool, &out->wp);
    dbpool_stats(t->db, &out->db);
    breaker_snapshot(t->breaker, now, &out->br);
    ratelimit_stats(t->rl, &out->rl);
    out->ntop = workpool_top_tenants(t->pool, out->top, REPORT_TOP_TENANTS);
    for (size_t i = 0; i < out->ntop; i++)
        out->top_conns[i] = dbpool_held(t->db, out->top[i].id);
    for (int o = 0; o < OUTCOME_COUNT; o++)
        out->outcomes[o] = atomic_load_explicit(&t->m.outcomes[o], memory_order_relaxed);
    for (int s = 0; s < METRICS_STATUS_COUNT; s++)
        out->statuses[s] = atomic_load_explicit(&t->m.statuses[s], memory_order_relaxed);
    metrics_hist_read(&t->m.total, &out->total);
    metrics_hist_read(&t->m.queue, &out->queue);
    metrics_hist_read(&t->m.query, &out->query);

    out->wp_rejected = out->wp.rejected_full + out->wp.rejected_tenant;
    struct share_policy wpol = tiers_worker_policy(c), cpol = tiers_conn_policy(c);
    out->worker_share = (int64_t)wpol.cap;
    out->conn_share = (int64_t)cpol.cap;
    out->queue_share = tiers_tenant_queue_cap(c);
    out->worker_reserve = (int64_t)wpol.reserve;
    out->conn_reserve = (int64_t)cpol.reserve;
    memset(&out->cap, 0, sizeof(out->cap));
    out->cap_floor = (double)out->db.max * (double)c->capacity_floor_pct / 100.0;
    /* No controller (CAPACITY_CONTROL=false, a test's fake set): the section reads zeros,
     * not whatever the snapshot's memory held. */
    if (src_cap)
        capctl_stats(src_cap, t->index, &out->cap);
    out->cap_limit = src_cap ? out->cap.limit : 0;
    out->cap_objective_ms = (double)tiers_latency_objective_ms(c);
    out->cap_p99_ms = out->cap.p99_us / 1000.0;
    out->cap_mean_ms = out->cap.mean_us / 1000.0;
    out->cap_level_ms = out->cap.level_us / 1000.0;
    out->cap_threshold_ms = out->cap.threshold_us / 1000.0;
    out->cap_objective_s = out->cap_objective_ms / 1000.0;
    out->cap_p99_s = out->cap.p99_us / 1e6;
    out->cap_mean_s = out->cap.mean_us / 1e6;
    out->cap_level_s = out->cap.level_us / 1e6;
    out->cap_threshold_s = out->cap.threshold_us / 1e6;
    out->cap_threatened_s = (double)out->cap.threatened_us / 1e6;
    out->rl_backend = "none (unlimited)";
    out->rl_backend_errors = 0;
    if (c->rate_limit > 0) {
        out->rl_backend = !p->have_redis ? "memory"
                          : p->redis_up  ? "redis"
                                         : "memory (redis fallback)";
        out->rl_backend_errors = p->redis_errors;
    }
}

/* A tier's budget: its totals, and this instance's share as its pools have it now. */
static void report_read_budget(const struct fleet_lease *l, struct report_tier *out)
{
    const struct tier_cfg *c = &out->cfg;
    bool fleet = c->budget_scope == TIERS_SCOPE_FLEET;
    out->budget_scope = fleet ? "fleet" : "instance";
    out->budget_total_workers = c->workers;
    out->budget_total_conns = c->db_max;
    out->budget_workers = (int64_t)out->wp.threads;
    out->budget_conns = (int64_t)out->db.max;
    out->budget_min_workers = fleet ? tiers_min_share(c->workers, c->budget_min_pct) : c->workers;
    out->budget_min_conns = fleet ? tiers_min_share(c->db_max, c->budget_min_pct) : c->db_max;
    out->budget_instances = fleet && l->instances ? (int64_t)l->instances : 1;
    out->budget_leased = fleet && l->granted_us > 0;
}

void report_read(const struct report_sources *src, struct report_snap *out)
{
    report_read_process(src, &out->proc);
    int64_t now = mclock_now_us();
    out->ntiers = tierset_count(src->tiers);
    const char *names[TIERS_MAX];
    struct fleet_lease leases[TIERS_MAX] = {{0}};
    for (size_t i = 0; i < out->ntiers; i++)
        names[i] = tierset_tier(src->tiers, i)->name;
    if (src->fleet)
        fleet_leases(src->fleet, names, out->ntiers, leases);
    for (size_t i = 0; i < out->ntiers; i++) {
        struct report_tier *t = &out->tier[i];
        report_read_tier(tierset_tier(src->tiers, i), &out->proc, src->capacity, now, t);
        report_read_budget(&leases[i], t);
        size_t tenants = 0;
        t->tenant_overrides = 0;
        if (src->auth)
            auth_tier_counts(src->auth, t->name, &tenants, &t->tenant_overrides);
    }
}

/* ---- JSON ----------------------------------------------------------------------------- */

static json_t *report_time(int64_t wall_us)
{
    if (wall_us <= 0)
        return json_null();
    time_t s = (time_t)(wall_us / 1000000);
    struct tm tm;
    gmtime_r(&s, &tm);
    char buf[40];
    size_t n = strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(buf + n, sizeof(buf) - n, ".%03dZ", (int)(wall_us / 1000 % 1000));
    return json_string(buf);
}

static json_t *report_ms(const struct metrics_hist_snap *h)
{
    return json_pack("{s:f, s:f, s:f, s:I}", "p50",
                     (double)metrics_hist_quantile(h, NULL, 0.5) / 1000.0, "p99",
                     (double)metrics_hist_quantile(h, NULL, 0.99) / 1000.0, "mean",
                     h->count ? (double)h->sum_us / (double)h->count / 1000.0 : 0.0, "count",
                     (json_int_t)h->count);
}

static json_t *report_busiest(const struct report_tier *t)
{
    json_t *a = json_array();
    for (size_t i = 0; i < t->ntop; i++)
        json_array_append_new(
            a, json_pack("{s:s, s:I, s:I, s:I, s:f, s:b, s:f}", "tenant", t->top[i].key, "inFlight",
                         (json_int_t)t->top[i].in_flight, "queued", (json_int_t)t->top[i].queued,
                         "connections", (json_int_t)t->top_conns[i], "holdMs",
                         (double)t->top[i].hold_avg_us / 1000.0, "brief", t->top[i].brief,
                         "recentDbMs", t->top[i].recent_db_us / 1000.0));
    return a;
}

static json_t *report_outcomes_json(const uint64_t *outcomes)
{
    json_t *o = json_object();
    for (int i = 0; i < OUTCOME_COUNT; i++)
        json_object_set_new(o, metrics_outcome_name((enum metrics_outcome)i),
                            json_integer((json_int_t)outcomes[i]));
    return o;
}

/* The JSON value of field f: from the tier t, or (t NULL) from the sampled number v. */
static json_t *report_value_json(const struct reportdef_field *f, const struct report_tier *t,
                                 uint64_t v)
{
    const void *p = t ? reportdef_at(t, f) : NULL;
    if (t && reportdef_integral(f->kind))
        v = reportdef_u64(t, f);
    switch (f->kind) {
    case REPORTDEF_U64:
    case REPORTDEF_SIZE:
    case REPORTDEF_I64:
        return json_integer((json_int_t)v);
    case REPORTDEF_LIMIT:
        return (int64_t)v > 0 ? json_integer((json_int_t)v) : json_null();
    case REPORTDEF_RATIO:
    case REPORTDEF_REAL:
        return json_real(p ? *(const double *)p : 0.0);
    case REPORTDEF_BOOL:
        return json_boolean(v != 0);
    case REPORTDEF_TIME:
        return report_time((int64_t)v);
    case REPORTDEF_STATE:
        return json_string(breaker_state_name((enum breaker_state)v));
    case REPORTDEF_MODE:
        return json_string(breaker_mode_name((enum breaker_mode)v));
    case REPORTDEF_TEXT:
        return json_string(p ? *(const char *const *)p : "");
    case REPORTDEF_HIST:
        return report_ms(p);
    case REPORTDEF_OUTCOMES:
        return report_outcomes_json(p);
    case REPORTDEF_BUSIEST:
        return report_busiest(t);
    case REPORTDEF_STATUSES:
        break;
    }
    return json_null();
}

/* Set key in obj's member section (created on first use; NULL: in obj itself). */
static void report_json_put(json_t *obj, const char *section, const char *key, json_t *v)
{
    if (section) {
        json_t *sec = json_object_get(obj, section);
        if (!sec) {
            sec = json_object();
            json_object_set_new(obj, section, sec);
        }
        obj = sec;
    }
    json_object_set_new(obj, key, v);
}

char *report_json(const struct report_snap *s)
{
    json_t *root = json_object();
    for (size_t i = 0; i < s->ntiers; i++) {
        const struct report_tier *t = &s->tier[i];
        json_t *tier = json_object();
        for (size_t k = 0; k < reportdef_nfields; k++) {
            const struct reportdef_field *f = &reportdef_fields[k];
            if (f->key)
                report_json_put(tier, f->section, f->key, report_value_json(f, t, 0));
        }
        json_object_set_new(root, t->name, tier);
    }
    char *text = json_dumps(root, JSON_COMPACT | JSON_REAL_PRECISION(6));
    json_decref(root);
    if (!text)
        abort();
    return text;
}

/* ---- the dashboard's samples ------------------------------------------------------------ */

size_t report_sampled_count(void)
{
    size_t n = 0;
    for (size_t k = 0; k < reportdef_nfields; k++) {
        /* A sample holds one integer per field; anything else is a table mistake. */
        if (reportdef_fields[k].sampled && !reportdef_integral(reportdef_fields[k].kind))
            abort();
        n += reportdef_fields[k].sampled;
    }
    if (n > REPORT_SAMPLED_MAX)
        abort();
    return n;
}

void report_sample(const struct report_tier *t, uint64_t *out)
{
    size_t n = 0;
    for (size_t k = 0; k < reportdef_nfields; k++)
        if (reportdef_fields[k].sampled)
            out[n++] = reportdef_u64(t, &reportdef_fields[k]);
}

void report_sample_json(const uint64_t *v, json_t *into)
{
    size_t n = 0;
    for (size_t k = 0; k < reportdef_nfields; k++) {
        const struct reportdef_field *f = &reportdef_fields[k];
        if (!f->sampled)
            continue;
        report_json_put(into, f->section, f->key, report_value_json(f, NULL, v[n]));
        if (f->old_key)
            json_object_set_new(into, f->old_key, report_value_json(f, NULL, v[n]));
        n++;
    }
}

/* ---- Prometheus --------------------------------------------------------------------------- */

static void prom_family(FILE *f, const char *name, const char *type, const char *help)
{
    fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* A histogram's series; key="value" is its label (tier, or loop). */
static void prom_hist(FILE *f, const char *name, const char *key, const char *value,
                      const struct metrics_hist_snap *h)
{
    uint64_t cum = 0;
    for (int i = 0; i < METRICS_HIST_BUCKETS; i++) {
        cum += h->counts[i];
        fprintf(f, "%s_bucket{%s=\"%s\",le=\"%g\"} %" PRIu64 "\n", name, key, value,
                (double)metrics_hist_bounds_us[i] / 1e6, cum);
    }
    cum += h->counts[METRICS_HIST_BUCKETS];
    fprintf(f, "%s_bucket{%s=\"%s\",le=\"+Inf\"} %" PRIu64 "\n", name, key, value, cum);
    fprintf(f, "%s_sum{%s=\"%s\"} %.6f\n", name, key, value, (double)h->sum_us / 1e6);
    fprintf(f, "%s_count{%s=\"%s\"} %" PRIu64 "\n", name, key, value, cum);
}

static void prom_outcomes(FILE *f, const char *name, const char *tier, const uint64_t *v)
{
    for (int o = 0; o < OUTCOME_COUNT; o++)
        fprintf(f, "%s{tier=\"%s\",outcome=\"%s\"} %" PRIu64 "\n", name, tier,
                metrics_outcome_name((enum metrics_outcome)o), v[o]);
}

static void prom_statuses(FILE *f, const char *name, const char *tier, const uint64_t *v)
{
    for (int s = 0; s < METRICS_STATUS_COUNT; s++) {
        if (metrics_status_codes[s])
            fprintf(f, "%s{tier=\"%s\",code=\"%d\"} %" PRIu64 "\n", name, tier,
                    metrics_status_codes[s], v[s]);
        else
            fprintf(f, "%s{tier=\"%s\",code=\"other\"} %" PRIu64 "\n", name, tier, v[s]);
    }
}

/* The series of field fd for tier t. */
static void prom_series(FILE *f, const struct reportdef_field *fd, const struct report_tier *t)
{
    const void *p = reportdef_at(t, fd);
    const char *sep = fd->label ? "," : "", *label = fd->label ? fd->label : "";
    switch (fd->kind) {
    case REPORTDEF_HIST:
        prom_hist(f, fd->prom, "tier", t->name, p);
        return;
    case REPORTDEF_OUTCOMES:
        prom_outcomes(f, fd->prom, t->name, p);
        return;
    case REPORTDEF_STATUSES:
        prom_statuses(f, fd->prom, t->name, p);
        return;
    case REPORTDEF_STATE:
        for (int s = BREAKER_CLOSED; s <= BREAKER_HALF_OPEN; s++)
            fprintf(f, "%s{tier=\"%s\",state=\"%s\"} %d\n", fd->prom, t->name,
                    breaker_state_name((enum breaker_state)s), (int)reportdef_u64(t, fd) == s);
        return;
    case REPORTDEF_RATIO:
        fprintf(f, "%s{tier=\"%s\"%s%s} %.4f\n", fd->prom, t->name, sep, label, *(const double *)p);
        return;
    case REPORTDEF_REAL:
        fprintf(f, "%s{tier=\"%s\"%s%s} %.6g\n", fd->prom, t->name, sep, label, *(const double *)p);
        return;
    default:
        fprintf(f, "%s{tier=\"%s\"%s%s} %" PRIu64 "\n", fd->prom, t->name, sep, label,
                reportdef_u64(t, fd));
        return;
    }
}

/* The family starting at reportdef_fields[k]: its rows are k..*end-1. */
static void prom_tier_family(FILE *f, const struct report_snap *s, size_t k, size_t *end)
{
    const struct reportdef_field *first = &reportdef_fields[k];
    size_t e = k + 1;
    while (e < reportdef_nfields && reportdef_fields[e].prom &&
           !strcmp(reportdef_fields[e].prom, first->prom))
        e++;
    prom_family(f, first->prom, first->type, first->help);
    for (size_t i = 0; i < s->ntiers; i++)
        for (size_t r = k; r < e; r++)
            prom_series(f, &reportdef_fields[r], &s->tier[i]);
    /* Requests that reached no tier are counted under tier="none". */
    if (first->kind == REPORTDEF_OUTCOMES)
        prom_outcomes(f, first->prom, "none", s->proc.untiered_outcomes);
    if (first->kind == REPORTDEF_STATUSES)
        prom_statuses(f, first->prom, "none", s->proc.untiered_statuses);
    *end = e;
}

static void prom_process(FILE *f, const struct report_process *p)
{
    const char *last = NULL;
    for (size_t k = 0; k < reportdef_nproc; k++) {
        const struct reportdef_proc_field *fd = &reportdef_proc_fields[k];
        if ((fd->needs == REPORTDEF_NEEDS_REDIS && !p->have_redis) ||
            (fd->needs == REPORTDEF_NEEDS_AUTH && !p->have_auth) ||
            (fd->needs == REPORTDEF_NEEDS_ADMIN && !p->have_admin) ||
            (fd->needs == REPORTDEF_NEEDS_TARPIT && !p->have_tarpit) ||
            (fd->needs == REPORTDEF_NEEDS_FLEET && !p->have_fleet))
            continue;
        if (!last || strcmp(last, fd->prom))
            prom_family(f, fd->prom, fd->type, fd->help);
        last = fd->prom;
        uint64_t v = *(const uint64_t *)(const void *)((const char *)p + fd->offset);
        fprintf(f, "%s%s%s%s ", fd->prom, fd->label ? "{" : "", fd->label ? fd->label : "",
                fd->label ? "}" : "");
        if (fd->unit == REPORTDEF_UNIT_SECONDS)
            fprintf(f, "%.6f\n", (double)v / 1e6);
        else
            fprintf(f, "%" PRIu64 "\n", fd->unit == REPORTDEF_UNIT_ONE ? 1 : v);
    }
}

/* The HTTP threads' event-loop lag, one histogram per loop. */
static void prom_loops(FILE *f, const struct report_process *p)
{
    if (!p->nloops)
        return;
    prom_family(f, "bulkhead_event_loop_lag_seconds", "histogram",
                "How late each HTTP event loop handled a moment it was due to (a probe every "
                "few ms): what a request readable then waited before its loop read it.");
    for (unsigned i = 0; i < p->nloops; i++) {
        char idx[16];
        snprintf(idx, sizeof(idx), "%u", i);
        prom_hist(f, "bulkhead_event_loop_lag_seconds", "loop", idx, &p->loop_lag[i]);
    }
}

char *report_prometheus(const struct report_snap *s, size_t *len)
{
    char *buf = NULL;
    size_t size = 0;
    FILE *f = open_memstream(&buf, &size);
    if (!f)
        abort();
    for (size_t k = 0; k < reportdef_nfields;) {
        if (!reportdef_fields[k].prom) {
            k++;
            continue;
        }
        prom_tier_family(f, s, k, &k);
    }
    prom_process(f, &s->proc);
    prom_loops(f, &s->proc);
    fclose(f);
    *len = size;
    return buf;
}
