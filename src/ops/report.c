/*
 * report: the snapshot and its renderings (see report.h).
 *
 * report_fields is the one description of a tier's metrics. Its rows are in the order of the
 * JSON document; consecutive rows with the same Prometheus name form one family (their labels
 * tell the series apart), so a family's samples stay together as the format requires.
 */
#include "report.h"
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

/* How a field's value is stored in struct report_tier, and rendered. */
enum report_kind {
    REPORT_U64,      /* uint64_t */
    REPORT_SIZE,     /* size_t */
    REPORT_I64,      /* int64_t (a setting) */
    REPORT_LIMIT,    /* int64_t; JSON null when 0 (unlimited) */
    REPORT_RATIO,    /* double, 0..1 */
    REPORT_REAL,     /* double */
    REPORT_BOOL,     /* bool: JSON true/false, Prometheus 1/0 */
    REPORT_TIME,     /* int64_t Unix us; JSON ISO-8601 text, null when 0 */
    REPORT_STATE,    /* enum breaker_state: JSON its name; Prometheus one gauge per state */
    REPORT_MODE,     /* enum breaker_mode: JSON its name */
    REPORT_TEXT,     /* const char * */
    REPORT_HIST,     /* struct metrics_hist_snap: JSON {p50,p99,mean,count} in ms */
    REPORT_OUTCOMES, /* uint64_t[OUTCOME_COUNT], by outcome (and tier "none" in Prometheus) */
    REPORT_STATUSES, /* uint64_t[METRICS_STATUS_COUNT], by status code (and tier "none") */
    REPORT_BUSIEST,  /* the busiest tenants: a JSON array */
};

struct report_field {
    const char *section; /* JSON object under the tier, or NULL: the tier's own object */
    const char *key;     /* JSON key (camelCase), or NULL: not in the JSON */
    enum report_kind kind;
    size_t offset;       /* of the value in struct report_tier */
    const char *prom;    /* Prometheus family, or NULL: not exported */
    const char *label;   /* the series' label besides tier ("result=\"success\""), or NULL */
    const char *type;    /* Prometheus type */
    const char *help;    /* Prometheus help */
    bool sampled;        /* in the dashboard's per-second samples */
    const char *old_key; /* sampled: the flat key samples carried before (deprecated), or NULL */
};

/* Rows name the field's place; what follows it is optional (Prometheus, then sampling). */
#define RT(field) .offset = offsetof(struct report_tier, field)
#define POOL      "connectionPool"
#define THREADS   "threadPool"
#define BREAKER   "circuitBreaker"
#define LIMITER   "rateLimiter"
#define FAIR      "fairness"
#define CAPACITY  "capacity"
#define BUDGET    "budget"

static const struct report_field report_fields[] = {
    {POOL, "active", REPORT_SIZE, RT(db.active), "bulkhead_db_connections_active", NULL, "gauge",
     "PostgreSQL connections held by workers.", true, "db_active"},
    {POOL, "idle", REPORT_SIZE, RT(db.idle), "bulkhead_db_connections_idle", NULL, "gauge",
     "PostgreSQL connections idle.", true, "db_idle"},
    {POOL, "pending", REPORT_SIZE, RT(db.pending), "bulkhead_db_connections_pending", NULL, "gauge",
     "Workers waiting for a PostgreSQL connection.", true, "db_pending"},
    {POOL, "max", REPORT_SIZE, RT(db.max), "bulkhead_db_connections_max", NULL, "gauge",
     "PostgreSQL connections allowed for the tier.", true, "db_max"},
    {POOL, "opening", REPORT_SIZE, RT(db.opening)},
    {POOL, "acquired", REPORT_U64, RT(db.acquired)},
    {POOL, "acquireTimeouts", REPORT_U64, RT(db.timeouts), "bulkhead_db_acquire_timeouts_total",
     NULL, "counter", "Requests that found no free connection in time."},
    {POOL, "connects", REPORT_U64, RT(db.connects)},
    {POOL, "connectFailures", REPORT_U64, RT(db.connect_failures),
     "bulkhead_db_connect_failures_total", NULL, "counter",
     "Failed attempts to open a PostgreSQL connection."},
    {POOL, "closedBroken", REPORT_U64, RT(db.closed_broken), "bulkhead_db_connections_broken_total",
     NULL, "counter", "Connections closed because they broke."},
    {POOL, "closedIdle", REPORT_U64, RT(db.closed_idle),
     "bulkhead_db_connections_idle_closed_total", NULL, "counter",
     "Connections closed after idling past db_idle_timeout_ms."},
    {POOL, "pipelined", REPORT_U64, RT(db.pipelined), "bulkhead_db_statements_pipelined_total",
     NULL, "counter", "Reads sent on a tenant's connection behind another of its reads."},
    {POOL, "acquireTimeoutMs", REPORT_I64, RT(cfg.db_acquire_timeout_ms)},

    {THREADS, "active", REPORT_SIZE, RT(wp.busy), "bulkhead_workers_busy", NULL, "gauge",
     "Worker threads running a request.", true, "busy"},
    {THREADS, "queued", REPORT_SIZE, RT(wp.queued), "bulkhead_queue_depth", NULL, "gauge",
     "Requests waiting for a worker.", true, "queued"},
    {THREADS, "poolSize", REPORT_SIZE, RT(wp.threads), "bulkhead_workers", NULL, "gauge",
     "Worker threads of the tier.", true, "threads"},
    {THREADS, "queueLimit", REPORT_SIZE, RT(wp.queue_max), "bulkhead_queue_limit", NULL, "gauge",
     "Requests that may wait for a worker.", true, "queue_max"},
    {THREADS, "queueTimeoutMs", REPORT_I64, RT(cfg.queue_timeout_ms)},
    {THREADS, "completed", REPORT_U64, RT(wp.completed)},
    {THREADS, "rejected", REPORT_U64, RT(wp_rejected)},
    {THREADS, "queueTimeouts", REPORT_U64, RT(wp.expired)},
    {THREADS, "submitted", REPORT_U64, RT(wp.submitted)},
    {THREADS, "waitMs", REPORT_HIST, RT(queue), "bulkhead_queue_wait_seconds", NULL, "histogram",
     "Time requests waited for a worker, by tier."},

    {BREAKER, "state", REPORT_STATE, RT(br.state), "bulkhead_breaker_state", NULL, "gauge",
     "Circuit breaker state: 1 for the current state, 0 for the others.", true, "breaker"},
    {BREAKER, "mode", REPORT_MODE, RT(br.mode)},
    {BREAKER, "failures", REPORT_U64, RT(br.failures), "bulkhead_breaker_calls_total",
     "result=\"failure\"", "counter", "Calls seen by the circuit breaker, by result."},
    {BREAKER, "successes", REPORT_U64, RT(br.successes), "bulkhead_breaker_calls_total",
     "result=\"success\"", "counter", "Calls seen by the circuit breaker, by result."},
    {BREAKER, "timeouts", REPORT_U64, RT(br.timeouts), "bulkhead_breaker_calls_total",
     "result=\"timeout\"", "counter", "Calls seen by the circuit breaker, by result."},
    {BREAKER, "rejections", REPORT_U64, RT(br.rejections), "bulkhead_breaker_calls_total",
     "result=\"rejected\"", "counter", "Calls seen by the circuit breaker, by result."},
    {BREAKER, "failureRate", REPORT_RATIO, RT(br.failure_rate), "bulkhead_breaker_failure_ratio",
     NULL, "gauge", "Failures and timeouts over calls in the breaker's rolling window."},
    {BREAKER, "windowCalls", REPORT_U64, RT(br.window_calls)},
    {BREAKER, "windowFailures", REPORT_U64, RT(br.window_failures)},
    {BREAKER, "lastChange", REPORT_TIME, RT(br.last_change_wall_us)},
    {BREAKER, "nextTrial", REPORT_TIME, RT(br.next_trial_wall_us)},
    {BREAKER, "opened", REPORT_U64, RT(br.opened), "bulkhead_breaker_opened_total", NULL, "counter",
     "Times the breaker opened."},
    {BREAKER, "timeoutMs", REPORT_I64, RT(cfg.breaker_timeout_ms)},
    {BREAKER, "errorThresholdPct", REPORT_I64, RT(cfg.breaker_error_pct)},
    {BREAKER, "resetTimeoutMs", REPORT_I64, RT(cfg.breaker_reset_ms)},

    {LIMITER, "limit", REPORT_LIMIT, RT(cfg.rate_limit)},
    {LIMITER, "windowSeconds", REPORT_I64, RT(cfg.rate_window_s)},
    {LIMITER, "tenantOverrides", REPORT_SIZE, RT(tenant_overrides),
     "bulkhead_ratelimit_tenant_overrides", NULL, "gauge",
     "Tenants of the tier whose own rate limit wins over the tier's (AUTH_MODE=apikey)."},
    {LIMITER, "allowed", REPORT_U64, RT(rl.allowed), "bulkhead_ratelimit_decisions_total",
     "result=\"allowed\"", "counter", "Rate-limit decisions, by result."},
    {LIMITER, "rejected", REPORT_U64, RT(rl.rejected), "bulkhead_ratelimit_decisions_total",
     "result=\"rejected\"", "counter", "Rate-limit decisions, by result."},
    {LIMITER, "keysTracked", REPORT_SIZE, RT(rl.keys), "bulkhead_ratelimit_keys", NULL, "gauge",
     "Tenants tracked by the in-memory rate limiter."},
    {LIMITER, "overflowed", REPORT_U64, RT(rl.overflow), "bulkhead_ratelimit_overflow_total", NULL,
     "counter", "Decisions made on the shared overflow bucket (key table full)."},
    {LIMITER, "backend", REPORT_TEXT, RT(rl_backend)},
    {LIMITER, "backendErrors", REPORT_U64, RT(rl_backend_errors)},

    {FAIR, "activeTenants", REPORT_SIZE, RT(wp.tenants), "bulkhead_tenants_active", NULL, "gauge",
     "Tenants with recent work in the tier.", true, "tenants"},
    {FAIR, "tenantWorkerShare", REPORT_I64, RT(worker_share)},
    {FAIR, "tenantConnectionShare", REPORT_I64, RT(conn_share)},
    {FAIR, "tenantQueueShare", REPORT_I64, RT(queue_share)},
    {FAIR, "workerReserve", REPORT_I64, RT(worker_reserve)},
    {FAIR, "connectionReserve", REPORT_I64, RT(conn_reserve)},
    {FAIR, "lingerMs", REPORT_I64, RT(cfg.tenant_linger_ms)},
    {FAIR, "briefRequestMs", REPORT_I64, RT(cfg.brief_request_ms)},
    {FAIR, "queueByCost", REPORT_I64, RT(cfg.fair_queue_cost)},
    {FAIR, "rejectedTenantShare", REPORT_U64, RT(wp.rejected_tenant),
     "bulkhead_tenant_share_rejections_total", NULL, "counter",
     "Requests refused because the tenant's share of the queue was full."},
    {FAIR, "busiest", REPORT_BUSIEST, RT(top)},

    {CAPACITY, "priority", REPORT_I64, RT(cfg.priority)},
    {CAPACITY, "limit", REPORT_REAL, RT(cap_limit), "bulkhead_capacity_limit", NULL, "gauge",
     "Requests of the tier allowed at once by the capacity controller (its max when not "
     "limited; below 1: paced; 0: closed)."},
    {CAPACITY, "max", REPORT_SIZE, RT(db.max)}, /* db_max, or this instance's fleet share */
    {CAPACITY, "floor", REPORT_REAL, RT(cap_floor)},
    {CAPACITY, "gated", REPORT_BOOL, RT(cap.gated)},
    {CAPACITY, "shedding", REPORT_BOOL, RT(cap.shedding), "bulkhead_capacity_shedding", NULL,
     "gauge", "1 while the capacity controller limits the tier for a higher one.", true},
    {CAPACITY, "usage", REPORT_REAL, RT(cap.usage)},
    {CAPACITY, "pressing", REPORT_BOOL, RT(cap.pressing)},
    {CAPACITY, "objectiveMs", REPORT_REAL, RT(cap_objective_ms)},
    {NULL, NULL, REPORT_REAL, RT(cap_objective_s), "bulkhead_capacity_objective_seconds", NULL,
     "gauge", "The tier's p99 latency objective (latency_objective_ms)."},
    {CAPACITY, "latencyP99Ms", REPORT_REAL, RT(cap_p99_ms)},
    {NULL, NULL, REPORT_REAL, RT(cap_p99_s), "bulkhead_capacity_latency_p99_seconds", NULL, "gauge",
     "The tier's p99 latency in the controller's last verdict, against its objective."},
    {CAPACITY, "latencyMeanMs", REPORT_REAL, RT(cap_mean_ms)},
    {NULL, NULL, REPORT_REAL, RT(cap_mean_s), "bulkhead_capacity_latency_mean_seconds", NULL,
     "gauge",
     "The tier's typical latency in the controller's last verdict: the mean of its fastest nine "
     "tenths."},
    {CAPACITY, "latencyLevelMs", REPORT_REAL, RT(cap_level_ms)},
    {NULL, NULL, REPORT_REAL, RT(cap_level_s), "bulkhead_capacity_latency_level_seconds", NULL,
     "gauge", "The tier's level: its typical latency, smoothed over the long term."},
    {CAPACITY, "thresholdMs", REPORT_REAL, RT(cap_threshold_ms)},
    {NULL, NULL, REPORT_REAL, RT(cap_threshold_s), "bulkhead_capacity_latency_threshold_seconds",
     NULL, "gauge",
     "The threshold the tier's last verdict was judged against: a typical latency above it "
     "threatens the objective (its level then, plus its tolerance and margin)."},
    {CAPACITY, "threatened", REPORT_BOOL, RT(cap.threatened), "bulkhead_capacity_threatened", NULL,
     "gauge", "1 while the tier's latency threatens its objective (lower tiers may be cut).", true},
    {CAPACITY, "threatenedSeconds", REPORT_REAL, RT(cap_threatened_s),
     "bulkhead_capacity_threatened_seconds_total", NULL, "counter",
     "Time the tier's latency threatened its objective."},
    {CAPACITY, "fleetActive", REPORT_BOOL, RT(cap.remote_active), "bulkhead_capacity_fleet_active",
     NULL, "gauge", "1 while another instance of the fleet has the tier active (FLEET)."},
    {CAPACITY, "fleetThreatened", REPORT_BOOL, RT(cap.remote_threatened),
     "bulkhead_capacity_fleet_threatened", NULL, "gauge",
     "1 while the tier threatens its objective on another instance of the fleet: this "
     "instance's lower tiers may be cut for it."},
    {CAPACITY, "fleetPressing", REPORT_BOOL, RT(cap.remote_pressing)},
    {CAPACITY, "inProgress", REPORT_I64, RT(cap.in_progress)},
    {CAPACITY, "admitted", REPORT_U64, RT(cap.admitted)},
    {CAPACITY, "shed", REPORT_U64, RT(cap.shed), "bulkhead_capacity_shed_total", NULL, "counter",
     "Requests refused (503 shed) because a higher tier needed the shared capacity."},

    {BUDGET, "scope", REPORT_TEXT, RT(budget_scope)},
    {BUDGET, "fleetWorkers", REPORT_I64, RT(budget_total_workers), "bulkhead_fleet_budget",
     "resource=\"workers\"", "gauge",
     "The tier's workers and connections, as totals for the fleet (budget_scope fleet) or for "
     "this instance (instance)."},
    {BUDGET, "fleetConnections", REPORT_I64, RT(budget_total_conns), "bulkhead_fleet_budget",
     "resource=\"connections\""},
    {BUDGET, "workers", REPORT_I64, RT(budget_workers), "bulkhead_fleet_budget_share",
     "resource=\"workers\"", "gauge",
     "This instance's share of the tier's workers and connections (its pools' limits now)."},
    {BUDGET, "connections", REPORT_I64, RT(budget_conns), "bulkhead_fleet_budget_share",
     "resource=\"connections\""},
    {BUDGET, "minWorkers", REPORT_I64, RT(budget_min_workers)},
    {BUDGET, "minConnections", REPORT_I64, RT(budget_min_conns)},
    {BUDGET, "instances", REPORT_I64, RT(budget_instances), "bulkhead_fleet_budget_instances", NULL,
     "gauge", "Instances sharing the tier's fleet budget, this one included (1: per instance)."},
    {BUDGET, "leased", REPORT_BOOL, RT(budget_leased), "bulkhead_fleet_budget_leased", NULL,
     "gauge",
     "1 while a fleet-scoped tier's share is a lease granted by a recent exchange (0: its "
     "minimum, without the fleet view; always 0 for a per-instance budget)."},

    {NULL, "requests", REPORT_OUTCOMES, RT(outcomes), "bulkhead_requests_total", NULL, "counter",
     "Requests finished, by tier and outcome."},
    {NULL, NULL, REPORT_STATUSES, RT(statuses), "bulkhead_responses_total", NULL, "counter",
     "Responses sent, by tier and status code."},
    {NULL, "latencyMs", REPORT_HIST, RT(total), "bulkhead_request_duration_seconds", NULL,
     "histogram", "Time from request to response, by tier."},
    {NULL, NULL, REPORT_HIST, RT(query), "bulkhead_query_duration_seconds", NULL, "histogram",
     "Time spent in PostgreSQL per request, by tier."},
};

#define REPORT_NFIELDS (sizeof(report_fields) / sizeof(report_fields[0]))

/* Process-wide Prometheus series: one value each, from struct report_process. */
struct report_proc_field {
    const char *prom, *label, *type, *help;
    size_t offset; /* of a uint64_t (or int64_t time) in struct report_process */
    int needs;     /* REPORT_NEEDS_*: shown only when that source exists */
    int unit;      /* REPORT_UNIT_*: how the value is written */
};

enum {
    REPORT_ALWAYS,
    REPORT_NEEDS_REDIS,
    REPORT_NEEDS_AUTH,
    REPORT_NEEDS_TARPIT,
    REPORT_NEEDS_ADMIN,
    REPORT_NEEDS_FLEET
};
enum {
    REPORT_UNIT_COUNT,   /* an integer, as is */
    REPORT_UNIT_SECONDS, /* microseconds, written in seconds */
    REPORT_UNIT_ONE      /* always 1 (an info metric: the labels are the information) */
};

#define RP(field) .offset = offsetof(struct report_process, field)

static const struct report_proc_field report_proc_fields[] = {
    {"bulkhead_ratelimit_backend_up", NULL, "gauge",
     "1 when the shared Redis rate-limit backend answers (absent in memory mode).", RP(redis_up),
     REPORT_NEEDS_REDIS},
    {"bulkhead_ratelimit_backend_errors_total", NULL, "counter",
     "Failed calls to the Redis rate-limit backend.", RP(redis_errors), REPORT_NEEDS_REDIS},
    {"bulkhead_ratelimit_backend_fallbacks_total", NULL, "counter",
     "Decisions made in memory because Redis was unavailable.", RP(redis_fallbacks),
     REPORT_NEEDS_REDIS},
    {"bulkhead_ratelimit_backend_batches_total", NULL, "counter",
     "Batches of admitted requests counted by Redis (one round trip each).", RP(redis_batches),
     REPORT_NEEDS_REDIS},
    {"bulkhead_ratelimit_backend_hits_total", "result=\"counted\"", "counter",
     "Admitted requests sent to Redis: counted, or dropped because their batch failed.",
     RP(redis_hits_sent), REPORT_NEEDS_REDIS},
    {"bulkhead_ratelimit_backend_hits_total", "result=\"dropped\"", "counter",
     "Admitted requests sent to Redis: counted, or dropped because their batch failed.",
     RP(redis_hits_dropped), REPORT_NEEDS_REDIS},
    {"bulkhead_ratelimit_backend_waits_total", NULL, "counter",
     "Requests that waited for Redis's answer: their tenant's lease on this instance was used "
     "up.",
     RP(redis_waits), REPORT_NEEDS_REDIS},
    {"bulkhead_ratelimit_backend_tenants", NULL, "gauge",
     "Tenants whose shared count this instance holds a view of.", RP(redis_keys),
     REPORT_NEEDS_REDIS},
    {"bulkhead_auth_keys", NULL, "gauge", "Live API keys known to the server.", RP(auth_keys),
     REPORT_NEEDS_AUTH},
    {"bulkhead_auth_decisions_total", "result=\"accepted\"", "counter",
     "API-key checks, by result.", RP(auth_accepted), REPORT_NEEDS_AUTH},
    {"bulkhead_auth_decisions_total", "result=\"rejected\"", "counter",
     "API-key checks, by result.", RP(auth_rejected), REPORT_NEEDS_AUTH},
    {"bulkhead_admin_auth_total", "result=\"accepted\"", "counter",
     "Admin authentications, by result (limited: refused without comparing the token).",
     RP(admin_accepted), REPORT_NEEDS_ADMIN},
    {"bulkhead_admin_auth_total", "result=\"refused\"", "counter",
     "Admin authentications, by result (limited: refused without comparing the token).",
     RP(admin_refused), REPORT_NEEDS_ADMIN},
    {"bulkhead_admin_auth_total", "result=\"limited\"", "counter",
     "Admin authentications, by result (limited: refused without comparing the token).",
     RP(admin_limited), REPORT_NEEDS_ADMIN},
    {"bulkhead_tarpit_held_total", NULL, "counter",
     "Requests held: until their rate-limit turn, or their client's Retry-After.", RP(tarpit_held),
     REPORT_NEEDS_TARPIT},
    {"bulkhead_tarpit_holding", NULL, "gauge", "Requests held now.", RP(tarpit_holding),
     REPORT_NEEDS_TARPIT},
    {"bulkhead_tarpit_overflow_total", NULL, "counter",
     "Refusals answered at once because TARPIT_MAX_HELD were held.", RP(tarpit_overflow),
     REPORT_NEEDS_TARPIT},
    {"bulkhead_tarpit_clients", NULL, "gauge", "Clients remembered with a Retry-After or a turn.",
     RP(tarpit_clients), REPORT_NEEDS_TARPIT},
    {"bulkhead_tarpit_untracked_total", NULL, "counter",
     "Refusals whose client was not remembered: TARPIT_MAX_CLIENTS were.", RP(tarpit_untracked),
     REPORT_NEEDS_TARPIT},
    {"bulkhead_fleet_up", NULL, "gauge",
     "1 while this instance exchanges tier states with the fleet (0: local control).", RP(fleet_up),
     REPORT_NEEDS_FLEET},
    {"bulkhead_fleet_instances", NULL, "gauge",
     "Other live instances seen at the last exchange of tier states.", RP(fleet_instances),
     REPORT_NEEDS_FLEET},
    {"bulkhead_fleet_exchanges_total", NULL, "counter", "Exchanges of tier states with the fleet.",
     RP(fleet_exchanges), REPORT_NEEDS_FLEET},
    {"bulkhead_fleet_failures_total", NULL, "counter",
     "Failed connections and exchanges of tier states with the fleet.", RP(fleet_failures),
     REPORT_NEEDS_FLEET},
    {"bulkhead_fleet_exchange_seconds", NULL, "gauge",
     "The round trip of the last exchange of tier states.", RP(fleet_rtt_us), REPORT_NEEDS_FLEET,
     REPORT_UNIT_SECONDS},
    {"bulkhead_database_up", NULL, "gauge", "1 when the health probe reaches PostgreSQL.",
     RP(db_up), REPORT_ALWAYS},
    {"bulkhead_requests_in_flight", NULL, "gauge", "Requests received and not finished.",
     RP(in_flight), REPORT_ALWAYS},
    {"bulkhead_build_info", "version=\"" BULKHEAD_VERSION "\"", "gauge",
     "The running build: 1, with its version as a label.", .offset = 0, REPORT_ALWAYS,
     REPORT_UNIT_ONE},
    /* The Prometheus client libraries' standard process metrics. */
    {"process_cpu_seconds_total", NULL, "counter",
     "Total user and system CPU time spent in seconds.", RP(ps.cpu_us), REPORT_ALWAYS,
     REPORT_UNIT_SECONDS},
    {"process_resident_memory_bytes", NULL, "gauge", "Resident memory size in bytes.",
     RP(ps.rss_bytes), REPORT_ALWAYS},
    {"process_virtual_memory_bytes", NULL, "gauge", "Virtual memory size in bytes.",
     RP(ps.vsize_bytes), REPORT_ALWAYS},
    {"process_open_fds", NULL, "gauge", "Number of open file descriptors.", RP(ps.open_fds),
     REPORT_ALWAYS},
    {"process_max_fds", NULL, "gauge", "Maximum number of open file descriptors.", RP(ps.max_fds),
     REPORT_ALWAYS},
    {"process_threads", NULL, "gauge", "Number of OS threads in the process.", RP(ps.threads),
     REPORT_ALWAYS},
    {"process_start_time_seconds", NULL, "gauge",
     "Start time of the process since the Unix epoch in seconds.", RP(started_wall_us),
     REPORT_ALWAYS, REPORT_UNIT_SECONDS},
};

#define REPORT_NPROC (sizeof(report_proc_fields) / sizeof(report_proc_fields[0]))

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

/* ---- values ------------------------------------------------------------------------- */

static const void *report_at(const struct report_tier *t, const struct report_field *f)
{
    return (const char *)t + f->offset;
}

/* Whether a field is one number that report_u64 can read (and a sample can hold). */
static bool report_integral(enum report_kind k)
{
    return k == REPORT_U64 || k == REPORT_SIZE || k == REPORT_I64 || k == REPORT_LIMIT ||
           k == REPORT_TIME || k == REPORT_STATE || k == REPORT_MODE || k == REPORT_BOOL;
}

/* An integral field as an unsigned integer (0 for the others). */
static uint64_t report_u64(const struct report_tier *t, const struct report_field *f)
{
    const void *p = report_at(t, f);
    switch (f->kind) {
    case REPORT_U64:
        return *(const uint64_t *)p;
    case REPORT_SIZE:
        return *(const size_t *)p;
    case REPORT_I64:
    case REPORT_LIMIT:
    case REPORT_TIME:
        return (uint64_t) * (const int64_t *)p;
    case REPORT_STATE:
        return (uint64_t) * (const enum breaker_state *)p;
    case REPORT_MODE:
        return (uint64_t) * (const enum breaker_mode *)p;
    case REPORT_BOOL:
        return *(const bool *)p;
    default:
        return 0;
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
static json_t *report_value_json(const struct report_field *f, const struct report_tier *t,
                                 uint64_t v)
{
    const void *p = t ? report_at(t, f) : NULL;
    if (t && report_integral(f->kind))
        v = report_u64(t, f);
    switch (f->kind) {
    case REPORT_U64:
    case REPORT_SIZE:
    case REPORT_I64:
        return json_integer((json_int_t)v);
    case REPORT_LIMIT:
        return (int64_t)v > 0 ? json_integer((json_int_t)v) : json_null();
    case REPORT_RATIO:
    case REPORT_REAL:
        return json_real(p ? *(const double *)p : 0.0);
    case REPORT_BOOL:
        return json_boolean(v != 0);
    case REPORT_TIME:
        return report_time((int64_t)v);
    case REPORT_STATE:
        return json_string(breaker_state_name((enum breaker_state)v));
    case REPORT_MODE:
        return json_string(breaker_mode_name((enum breaker_mode)v));
    case REPORT_TEXT:
        return json_string(p ? *(const char *const *)p : "");
    case REPORT_HIST:
        return report_ms(p);
    case REPORT_OUTCOMES:
        return report_outcomes_json(p);
    case REPORT_BUSIEST:
        return report_busiest(t);
    case REPORT_STATUSES:
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
        for (size_t k = 0; k < REPORT_NFIELDS; k++) {
            const struct report_field *f = &report_fields[k];
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
    for (size_t k = 0; k < REPORT_NFIELDS; k++) {
        /* A sample holds one integer per field; anything else is a table mistake. */
        if (report_fields[k].sampled && !report_integral(report_fields[k].kind))
            abort();
        n += report_fields[k].sampled;
    }
    if (n > REPORT_SAMPLED_MAX)
        abort();
    return n;
}

void report_sample(const struct report_tier *t, uint64_t *out)
{
    size_t n = 0;
    for (size_t k = 0; k < REPORT_NFIELDS; k++)
        if (report_fields[k].sampled)
            out[n++] = report_u64(t, &report_fields[k]);
}

void report_sample_json(const uint64_t *v, json_t *into)
{
    size_t n = 0;
    for (size_t k = 0; k < REPORT_NFIELDS; k++) {
        const struct report_field *f = &report_fields[k];
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
static void prom_series(FILE *f, const struct report_field *fd, const struct report_tier *t)
{
    const void *p = report_at(t, fd);
    const char *sep = fd->label ? "," : "", *label = fd->label ? fd->label : "";
    switch (fd->kind) {
    case REPORT_HIST:
        prom_hist(f, fd->prom, "tier", t->name, p);
        return;
    case REPORT_OUTCOMES:
        prom_outcomes(f, fd->prom, t->name, p);
        return;
    case REPORT_STATUSES:
        prom_statuses(f, fd->prom, t->name, p);
        return;
    case REPORT_STATE:
        for (int s = BREAKER_CLOSED; s <= BREAKER_HALF_OPEN; s++)
            fprintf(f, "%s{tier=\"%s\",state=\"%s\"} %d\n", fd->prom, t->name,
                    breaker_state_name((enum breaker_state)s), (int)report_u64(t, fd) == s);
        return;
    case REPORT_RATIO:
        fprintf(f, "%s{tier=\"%s\"%s%s} %.4f\n", fd->prom, t->name, sep, label, *(const double *)p);
        return;
    case REPORT_REAL:
        fprintf(f, "%s{tier=\"%s\"%s%s} %.6g\n", fd->prom, t->name, sep, label, *(const double *)p);
        return;
    default:
        fprintf(f, "%s{tier=\"%s\"%s%s} %" PRIu64 "\n", fd->prom, t->name, sep, label,
                report_u64(t, fd));
        return;
    }
}

/* The family starting at report_fields[k]: its rows are k..*end-1. */
static void prom_tier_family(FILE *f, const struct report_snap *s, size_t k, size_t *end)
{
    const struct report_field *first = &report_fields[k];
    size_t e = k + 1;
    while (e < REPORT_NFIELDS && report_fields[e].prom &&
           !strcmp(report_fields[e].prom, first->prom))
        e++;
    prom_family(f, first->prom, first->type, first->help);
    for (size_t i = 0; i < s->ntiers; i++)
        for (size_t r = k; r < e; r++)
            prom_series(f, &report_fields[r], &s->tier[i]);
    /* Requests that reached no tier are counted under tier="none". */
    if (first->kind == REPORT_OUTCOMES)
        prom_outcomes(f, first->prom, "none", s->proc.untiered_outcomes);
    if (first->kind == REPORT_STATUSES)
        prom_statuses(f, first->prom, "none", s->proc.untiered_statuses);
    *end = e;
}

static void prom_process(FILE *f, const struct report_process *p)
{
    const char *last = NULL;
    for (size_t k = 0; k < REPORT_NPROC; k++) {
        const struct report_proc_field *fd = &report_proc_fields[k];
        if ((fd->needs == REPORT_NEEDS_REDIS && !p->have_redis) ||
            (fd->needs == REPORT_NEEDS_AUTH && !p->have_auth) ||
            (fd->needs == REPORT_NEEDS_ADMIN && !p->have_admin) ||
            (fd->needs == REPORT_NEEDS_TARPIT && !p->have_tarpit) ||
            (fd->needs == REPORT_NEEDS_FLEET && !p->have_fleet))
            continue;
        if (!last || strcmp(last, fd->prom))
            prom_family(f, fd->prom, fd->type, fd->help);
        last = fd->prom;
        uint64_t v = *(const uint64_t *)(const void *)((const char *)p + fd->offset);
        fprintf(f, "%s%s%s%s ", fd->prom, fd->label ? "{" : "", fd->label ? fd->label : "",
                fd->label ? "}" : "");
        if (fd->unit == REPORT_UNIT_SECONDS)
            fprintf(f, "%.6f\n", (double)v / 1e6);
        else
            fprintf(f, "%" PRIu64 "\n", fd->unit == REPORT_UNIT_ONE ? 1 : v);
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
    for (size_t k = 0; k < REPORT_NFIELDS;) {
        if (!report_fields[k].prom) {
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
