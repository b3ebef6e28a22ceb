/*
 * report: /metrics/bulkheads (JSON) and /metrics (Prometheus) from one reading of each tier.
 *
 * report_read takes one consistent-enough reading of a tier (each source under its own lock or
 * atomics); the two renderers only format it.
 */
#include "report.h"
#include "auth.h"
#include "breaker.h"
#include "dbpool.h"
#include "health.h"
#include "mclock.h"
#include "metrics.h"
#include "ratelimit.h"
#include "rlredis.h"
#include "server.h"
#include "workpool.h"
#include "xalloc.h"

#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define REPORT_TOP_TENANTS 5

struct report_tier {
    const struct tier_cfg *cfg;
    struct workpool_stats wp;
    struct dbpool_stats db;
    struct breaker_snapshot br;
    struct ratelimit_stats rl;
    struct workpool_tenant_load top[REPORT_TOP_TENANTS];
    size_t top_conns[REPORT_TOP_TENANTS]; /* connections each of them holds */
    size_t ntop;
    uint64_t outcomes[OUTCOME_COUNT];
    uint64_t statuses[METRICS_STATUS_COUNT];
    struct metrics_hist_snap total, queue, query;
};

static void report_read(struct tier_rt *t, int64_t now, struct report_tier *out)
{
    out->cfg = tier_cfg(t);
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

static json_t *report_tier_json(struct server *srv, const struct report_tier *t)
{
    const struct tier_cfg *c = t->cfg;
    json_t *pool = json_pack(
        "{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I}", "active",
        (json_int_t)t->db.active, "idle", (json_int_t)t->db.idle, "pending",
        (json_int_t)t->db.pending, "max", (json_int_t)t->db.max, "opening",
        (json_int_t)t->db.opening, "acquired", (json_int_t)t->db.acquired, "acquireTimeouts",
        (json_int_t)t->db.timeouts, "connects", (json_int_t)t->db.connects, "connectFailures",
        (json_int_t)t->db.connect_failures, "closedBroken", (json_int_t)t->db.closed_broken,
        "acquireTimeoutMs", (json_int_t)c->db_acquire_timeout_ms);

    json_t *threads = json_pack(
        "{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:o}", "active", (json_int_t)t->wp.busy,
        "queued", (json_int_t)t->wp.queued, "poolSize", (json_int_t)t->wp.threads, "queueLimit",
        (json_int_t)t->wp.queue_max, "queueTimeoutMs", (json_int_t)c->queue_timeout_ms, "completed",
        (json_int_t)t->wp.completed, "rejected",
        (json_int_t)(t->wp.rejected_full + t->wp.rejected_tenant), "queueTimeouts",
        (json_int_t)t->wp.expired, "submitted", (json_int_t)t->wp.submitted, "waitMs",
        report_ms(&t->queue));

    json_t *breaker = json_pack(
        "{s:s, s:s, s:I, s:I, s:I, s:I, s:f, s:I, s:I, s:o, s:o, s:I, s:I, s:I, s:I}", "state",
        breaker_state_name(t->br.state), "mode", breaker_mode_name(t->br.mode), "failures",
        (json_int_t)t->br.failures, "successes", (json_int_t)t->br.successes, "timeouts",
        (json_int_t)t->br.timeouts, "rejections", (json_int_t)t->br.rejections, "failureRate",
        t->br.failure_rate, "windowCalls", (json_int_t)t->br.window_calls, "windowFailures",
        (json_int_t)t->br.window_failures, "lastChange", report_time(t->br.last_change_wall_us),
        "nextTrial", report_time(t->br.next_trial_wall_us), "opened", (json_int_t)t->br.opened,
        "timeoutMs", (json_int_t)c->breaker_timeout_ms, "errorThresholdPct",
        (json_int_t)c->breaker_error_pct, "resetTimeoutMs", (json_int_t)c->breaker_reset_ms);

    const char *backend = "memory";
    json_int_t backend_errors = 0;
    if (c->rate_limit > 0 && srv->redis) {
        struct rlredis_stats rs;
        rlredis_stats(srv->redis, &rs);
        backend = rs.up ? "redis" : "memory (redis fallback)";
        backend_errors = (json_int_t)rs.errors;
    }
    json_t *rl = json_pack(
        "{s:o, s:I, s:I, s:I, s:I, s:I, s:s, s:I}", "limit",
        c->rate_limit > 0 ? json_integer(c->rate_limit) : json_null(), "windowSeconds",
        (json_int_t)c->rate_window_s, "allowed", (json_int_t)t->rl.allowed, "rejected",
        (json_int_t)t->rl.rejected, "keysTracked", (json_int_t)t->rl.keys, "overflowed",
        (json_int_t)t->rl.overflow, "backend", c->rate_limit > 0 ? backend : "none (unlimited)",
        "backendErrors", backend_errors);

    json_t *busiest = json_array();
    for (size_t i = 0; i < t->ntop; i++)
        json_array_append_new(
            busiest,
            json_pack("{s:s, s:I, s:I, s:I, s:f, s:b}", "tenant", t->top[i].key, "inFlight",
                      (json_int_t)t->top[i].in_flight, "queued", (json_int_t)t->top[i].queued,
                      "connections", (json_int_t)t->top_conns[i], "holdMs",
                      (double)t->top[i].hold_avg_us / 1000.0, "brief", t->top[i].brief));
    json_t *fair = json_pack(
        "{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:o}", "activeTenants",
        (json_int_t)t->wp.tenants, "tenantWorkerShare", (json_int_t)tiers_worker_policy(c).cap,
        "tenantConnectionShare", (json_int_t)tiers_conn_policy(c).cap, "tenantQueueShare",
        (json_int_t)tiers_tenant_queue_cap(c), "workerReserve",
        (json_int_t)tiers_worker_policy(c).reserve, "connectionReserve",
        (json_int_t)tiers_conn_policy(c).reserve, "lingerMs", (json_int_t)c->tenant_linger_ms,
        "briefRequestMs", (json_int_t)c->brief_request_ms, "rejectedTenantShare",
        (json_int_t)t->wp.rejected_tenant, "busiest", busiest);

    json_t *req = json_object();
    for (int o = 0; o < OUTCOME_COUNT; o++)
        json_object_set_new(req, metrics_outcome_name((enum metrics_outcome)o),
                            json_integer((json_int_t)t->outcomes[o]));

    return json_pack("{s:o, s:o, s:o, s:o, s:o, s:o, s:o}", "connectionPool", pool, "threadPool",
                     threads, "circuitBreaker", breaker, "rateLimiter", rl, "fairness", fair,
                     "requests", req, "latencyMs", report_ms(&t->total));
}

char *report_bulkheads_json(struct server *srv)
{
    json_t *root = json_object();
    int64_t now = mclock_now_us();
    for (size_t i = 0; i < srv->ntiers; i++) {
        struct report_tier t;
        report_read(srv->tier[i], now, &t);
        json_object_set_new(root, t.cfg->name, report_tier_json(srv, &t));
    }
    char *text = json_dumps(root, JSON_COMPACT | JSON_REAL_PRECISION(6));
    json_decref(root);
    if (!text)
        abort();
    return text;
}

/* ---- Prometheus --------------------------------------------------------------------------- */

static void prom_family(FILE *f, const char *name, const char *type, const char *help)
{
    fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void prom_hist(FILE *f, const char *name, const char *tier,
                      const struct metrics_hist_snap *h)
{
    uint64_t cum = 0;
    for (int i = 0; i < METRICS_HIST_BUCKETS; i++) {
        cum += h->counts[i];
        fprintf(f, "%s_bucket{tier=\"%s\",le=\"%g\"} %" PRIu64 "\n", name, tier,
                (double)metrics_hist_bounds_us[i] / 1e6, cum);
    }
    cum += h->counts[METRICS_HIST_BUCKETS];
    fprintf(f, "%s_bucket{tier=\"%s\",le=\"+Inf\"} %" PRIu64 "\n", name, tier, cum);
    fprintf(f, "%s_sum{tier=\"%s\"} %.6f\n", name, tier, (double)h->sum_us / 1e6);
    fprintf(f, "%s_count{tier=\"%s\"} %" PRIu64 "\n", name, tier, cum);
}

/* One gauge or counter family with one sample per tier, value from a field of report_tier. */
#define PROM_PER_TIER(F_, NAME_, TYPE_, HELP_, EXPR_)                                              \
    do {                                                                                           \
        prom_family(F_, NAME_, TYPE_, HELP_);                                                      \
        for (size_t i_ = 0; i_ < n; i_++) {                                                        \
            const struct report_tier *t = &rt[i_];                                                 \
            fprintf(F_, "%s{tier=\"%s\"} %" PRIu64 "\n", NAME_, t->cfg->name, (uint64_t)(EXPR_));  \
        }                                                                                          \
    } while (0)

char *report_prometheus(struct server *srv, size_t *len)
{
    struct report_tier rt[TIERS_MAX];
    size_t n = srv->ntiers;
    int64_t now = mclock_now_us();
    for (size_t i = 0; i < n; i++)
        report_read(srv->tier[i], now, &rt[i]);

    char *buf = NULL;
    size_t size = 0;
    FILE *f = open_memstream(&buf, &size);
    if (!f)
        abort();

    prom_family(f, "bulkhead_requests_total", "counter", "Requests finished, by tier and outcome.");
    for (size_t i = 0; i < n; i++)
        for (int o = 0; o < OUTCOME_COUNT; o++)
            fprintf(f, "bulkhead_requests_total{tier=\"%s\",outcome=\"%s\"} %" PRIu64 "\n",
                    rt[i].cfg->name, metrics_outcome_name((enum metrics_outcome)o),
                    rt[i].outcomes[o]);
    for (int o = 0; o < OUTCOME_COUNT; o++)
        fprintf(f, "bulkhead_requests_total{tier=\"none\",outcome=\"%s\"} %" PRIu64 "\n",
                metrics_outcome_name((enum metrics_outcome)o),
                (uint64_t)atomic_load(&srv->m_untiered.outcomes[o]));

    prom_family(f, "bulkhead_responses_total", "counter",
                "Responses sent, by tier and status code.");
    for (size_t i = 0; i <= n; i++) {
        const char *tier = i < n ? rt[i].cfg->name : "none";
        for (int s = 0; s < METRICS_STATUS_COUNT; s++) {
            uint64_t v = i < n ? rt[i].statuses[s] : atomic_load(&srv->m_untiered.statuses[s]);
            if (metrics_status_codes[s])
                fprintf(f, "bulkhead_responses_total{tier=\"%s\",code=\"%d\"} %" PRIu64 "\n", tier,
                        metrics_status_codes[s], v);
            else
                fprintf(f, "bulkhead_responses_total{tier=\"%s\",code=\"other\"} %" PRIu64 "\n",
                        tier, v);
        }
    }

    prom_family(f, "bulkhead_request_duration_seconds", "histogram",
                "Time from request to response, by tier.");
    for (size_t i = 0; i < n; i++)
        prom_hist(f, "bulkhead_request_duration_seconds", rt[i].cfg->name, &rt[i].total);
    prom_family(f, "bulkhead_queue_wait_seconds", "histogram",
                "Time requests waited for a worker, by tier.");
    for (size_t i = 0; i < n; i++)
        prom_hist(f, "bulkhead_queue_wait_seconds", rt[i].cfg->name, &rt[i].queue);
    prom_family(f, "bulkhead_query_duration_seconds", "histogram",
                "Time spent in PostgreSQL per request, by tier.");
    for (size_t i = 0; i < n; i++)
        prom_hist(f, "bulkhead_query_duration_seconds", rt[i].cfg->name, &rt[i].query);

    PROM_PER_TIER(f, "bulkhead_workers", "gauge", "Worker threads of the tier.", t->wp.threads);
    PROM_PER_TIER(f, "bulkhead_workers_busy", "gauge", "Worker threads running a request.",
                  t->wp.busy);
    PROM_PER_TIER(f, "bulkhead_queue_depth", "gauge", "Requests waiting for a worker.",
                  t->wp.queued);
    PROM_PER_TIER(f, "bulkhead_queue_limit", "gauge", "Requests that may wait for a worker.",
                  t->wp.queue_max);
    PROM_PER_TIER(f, "bulkhead_db_connections_active", "gauge",
                  "PostgreSQL connections held by workers.", t->db.active);
    PROM_PER_TIER(f, "bulkhead_db_connections_idle", "gauge", "PostgreSQL connections idle.",
                  t->db.idle);
    PROM_PER_TIER(f, "bulkhead_db_connections_pending", "gauge",
                  "Workers waiting for a PostgreSQL connection.", t->db.pending);
    PROM_PER_TIER(f, "bulkhead_db_connections_max", "gauge",
                  "PostgreSQL connections allowed for the tier.", t->db.max);
    PROM_PER_TIER(f, "bulkhead_db_acquire_timeouts_total", "counter",
                  "Requests that found no free connection in time.", t->db.timeouts);
    PROM_PER_TIER(f, "bulkhead_db_connect_failures_total", "counter",
                  "Failed attempts to open a PostgreSQL connection.", t->db.connect_failures);
    PROM_PER_TIER(f, "bulkhead_db_connections_broken_total", "counter",
                  "Connections closed because they broke.", t->db.closed_broken);

    prom_family(f, "bulkhead_breaker_state", "gauge",
                "Circuit breaker state: 1 for the current state, 0 for the others.");
    for (size_t i = 0; i < n; i++)
        for (int s = BREAKER_CLOSED; s <= BREAKER_HALF_OPEN; s++)
            fprintf(f, "bulkhead_breaker_state{tier=\"%s\",state=\"%s\"} %d\n", rt[i].cfg->name,
                    breaker_state_name((enum breaker_state)s), (int)rt[i].br.state == s);
    prom_family(f, "bulkhead_breaker_calls_total", "counter",
                "Calls seen by the circuit breaker, by result.");
    for (size_t i = 0; i < n; i++) {
        const char *tn = rt[i].cfg->name;
        fprintf(f, "bulkhead_breaker_calls_total{tier=\"%s\",result=\"success\"} %" PRIu64 "\n", tn,
                rt[i].br.successes);
        fprintf(f, "bulkhead_breaker_calls_total{tier=\"%s\",result=\"failure\"} %" PRIu64 "\n", tn,
                rt[i].br.failures);
        fprintf(f, "bulkhead_breaker_calls_total{tier=\"%s\",result=\"timeout\"} %" PRIu64 "\n", tn,
                rt[i].br.timeouts);
        fprintf(f, "bulkhead_breaker_calls_total{tier=\"%s\",result=\"rejected\"} %" PRIu64 "\n",
                tn, rt[i].br.rejections);
    }
    prom_family(f, "bulkhead_breaker_failure_ratio", "gauge",
                "Failures and timeouts over calls in the breaker's rolling window.");
    for (size_t i = 0; i < n; i++)
        fprintf(f, "bulkhead_breaker_failure_ratio{tier=\"%s\"} %.4f\n", rt[i].cfg->name,
                rt[i].br.failure_rate);
    PROM_PER_TIER(f, "bulkhead_breaker_opened_total", "counter", "Times the breaker opened.",
                  t->br.opened);

    prom_family(f, "bulkhead_ratelimit_decisions_total", "counter",
                "Rate-limit decisions, by result.");
    for (size_t i = 0; i < n; i++) {
        fprintf(f,
                "bulkhead_ratelimit_decisions_total{tier=\"%s\",result=\"allowed\"} %" PRIu64 "\n",
                rt[i].cfg->name, rt[i].rl.allowed);
        fprintf(f,
                "bulkhead_ratelimit_decisions_total{tier=\"%s\",result=\"rejected\"} %" PRIu64 "\n",
                rt[i].cfg->name, rt[i].rl.rejected);
    }
    PROM_PER_TIER(f, "bulkhead_ratelimit_keys", "gauge",
                  "Tenants tracked by the in-memory rate limiter.", t->rl.keys);
    PROM_PER_TIER(f, "bulkhead_ratelimit_overflow_total", "counter",
                  "Decisions made on the shared overflow bucket (key table full).", t->rl.overflow);
    PROM_PER_TIER(f, "bulkhead_tenants_active", "gauge", "Tenants with recent work in the tier.",
                  t->wp.tenants);
    PROM_PER_TIER(f, "bulkhead_tenant_share_rejections_total", "counter",
                  "Requests refused because the tenant's share of the queue was full.",
                  t->wp.rejected_tenant);

    if (srv->redis) {
        struct rlredis_stats rs;
        rlredis_stats(srv->redis, &rs);
        prom_family(f, "bulkhead_ratelimit_backend_up", "gauge",
                    "1 when the shared Redis rate-limit backend answers (absent in memory mode).");
        fprintf(f, "bulkhead_ratelimit_backend_up %d\n", rs.up);
        prom_family(f, "bulkhead_ratelimit_backend_errors_total", "counter",
                    "Failed calls to the Redis rate-limit backend.");
        fprintf(f, "bulkhead_ratelimit_backend_errors_total %" PRIu64 "\n", rs.errors);
        prom_family(f, "bulkhead_ratelimit_backend_fallbacks_total", "counter",
                    "Decisions made in memory because Redis was unavailable.");
        fprintf(f, "bulkhead_ratelimit_backend_fallbacks_total %" PRIu64 "\n", rs.fallbacks);
    }
    if (srv->auth) {
        struct auth_stats as;
        auth_stats(srv->auth, &as);
        prom_family(f, "bulkhead_auth_keys", "gauge", "Live API keys known to the server.");
        fprintf(f, "bulkhead_auth_keys %zu\n", as.keys);
        prom_family(f, "bulkhead_auth_decisions_total", "counter", "API-key checks, by result.");
        fprintf(f, "bulkhead_auth_decisions_total{result=\"accepted\"} %" PRIu64 "\n", as.accepted);
        fprintf(f, "bulkhead_auth_decisions_total{result=\"rejected\"} %" PRIu64 "\n", as.rejected);
    }

    prom_family(f, "bulkhead_database_up", "gauge", "1 when the health probe reaches PostgreSQL.");
    fprintf(f, "bulkhead_database_up %d\n", health_ok(srv->health));
    prom_family(f, "bulkhead_requests_in_flight", "gauge", "Requests received and not finished.");
    fprintf(f, "bulkhead_requests_in_flight %d\n", atomic_load(&srv->in_flight));
    prom_family(f, "process_start_time_seconds", "gauge",
                "Start time of the process since the Unix epoch, in seconds.");
    fprintf(f, "process_start_time_seconds %.3f\n", (double)srv->started_wall_us / 1e6);

    fclose(f);
    *len = size;
    return buf;
}
