/*
 * reportdef: the tables of what a report holds (see reportdef.h). Rows are in the order of the
 * JSON document; consecutive rows with the same Prometheus name form one family (their labels
 * tell the series apart), so a family's samples stay together as the format requires.
 */
#include "reportdef.h"
#include "breaker.h"

#include <stddef.h>

/* Rows name the field's place; what follows it is optional (Prometheus, then sampling). */
#define RT(field) .offset = offsetof(struct report_tier, field)
#define POOL      "connectionPool"
#define THREADS   "threadPool"
#define BREAKER   "circuitBreaker"
#define LIMITER   "rateLimiter"
#define FAIR      "fairness"
#define CAPACITY  "capacity"
#define BUDGET    "budget"

const struct reportdef_field reportdef_fields[] = {
    {POOL, "active", REPORTDEF_SIZE, RT(db.active), "bulkhead_db_connections_active", NULL, "gauge",
     "PostgreSQL connections held by workers.", true, "db_active"},
    {POOL, "idle", REPORTDEF_SIZE, RT(db.idle), "bulkhead_db_connections_idle", NULL, "gauge",
     "PostgreSQL connections idle.", true, "db_idle"},
    {POOL, "pending", REPORTDEF_SIZE, RT(db.pending), "bulkhead_db_connections_pending", NULL,
     "gauge", "Workers waiting for a PostgreSQL connection.", true, "db_pending"},
    {POOL, "max", REPORTDEF_SIZE, RT(db.max), "bulkhead_db_connections_max", NULL, "gauge",
     "PostgreSQL connections allowed for the tier.", true, "db_max"},
    {POOL, "opening", REPORTDEF_SIZE, RT(db.opening)},
    {POOL, "acquired", REPORTDEF_U64, RT(db.acquired)},
    {POOL, "acquireTimeouts", REPORTDEF_U64, RT(db.timeouts), "bulkhead_db_acquire_timeouts_total",
     NULL, "counter", "Requests that found no free connection in time."},
    {POOL, "connects", REPORTDEF_U64, RT(db.connects)},
    {POOL, "connectFailures", REPORTDEF_U64, RT(db.connect_failures),
     "bulkhead_db_connect_failures_total", NULL, "counter",
     "Failed attempts to open a PostgreSQL connection."},
    {POOL, "closedBroken", REPORTDEF_U64, RT(db.closed_broken),
     "bulkhead_db_connections_broken_total", NULL, "counter",
     "Connections closed because they broke."},
    {POOL, "closedIdle", REPORTDEF_U64, RT(db.closed_idle),
     "bulkhead_db_connections_idle_closed_total", NULL, "counter",
     "Connections closed after idling past db_idle_timeout_ms."},
    {POOL, "pipelined", REPORTDEF_U64, RT(db.pipelined), "bulkhead_db_statements_pipelined_total",
     NULL, "counter", "Reads sent on a tenant's connection behind another of its reads."},
    {POOL, "acquireTimeoutMs", REPORTDEF_I64, RT(cfg.db_acquire_timeout_ms)},

    {THREADS, "active", REPORTDEF_SIZE, RT(wp.busy), "bulkhead_workers_busy", NULL, "gauge",
     "Worker threads running a request.", true, "busy"},
    {THREADS, "queued", REPORTDEF_SIZE, RT(wp.queued), "bulkhead_queue_depth", NULL, "gauge",
     "Requests waiting for a worker.", true, "queued"},
    {THREADS, "poolSize", REPORTDEF_SIZE, RT(wp.threads), "bulkhead_workers", NULL, "gauge",
     "Worker threads of the tier.", true, "threads"},
    {THREADS, "queueLimit", REPORTDEF_SIZE, RT(wp.queue_max), "bulkhead_queue_limit", NULL, "gauge",
     "Requests that may wait for a worker.", true, "queue_max"},
    {THREADS, "queueTimeoutMs", REPORTDEF_I64, RT(cfg.queue_timeout_ms)},
    {THREADS, "completed", REPORTDEF_U64, RT(wp.completed)},
    {THREADS, "rejected", REPORTDEF_U64, RT(wp_rejected)},
    {THREADS, "queueTimeouts", REPORTDEF_U64, RT(wp.expired)},
    {THREADS, "submitted", REPORTDEF_U64, RT(wp.submitted)},
    {THREADS, "waitMs", REPORTDEF_HIST, RT(queue), "bulkhead_queue_wait_seconds", NULL, "histogram",
     "Time requests waited for a worker, by tier."},

    {BREAKER, "state", REPORTDEF_STATE, RT(br.state), "bulkhead_breaker_state", NULL, "gauge",
     "Circuit breaker state: 1 for the current state, 0 for the others.", true, "breaker"},
    {BREAKER, "mode", REPORTDEF_MODE, RT(br.mode)},
    {BREAKER, "failures", REPORTDEF_U64, RT(br.failures), "bulkhead_breaker_calls_total",
     "result=\"failure\"", "counter", "Calls seen by the circuit breaker, by result."},
    {BREAKER, "successes", REPORTDEF_U64, RT(br.successes), "bulkhead_breaker_calls_total",
     "result=\"success\"", "counter", "Calls seen by the circuit breaker, by result."},
    {BREAKER, "timeouts", REPORTDEF_U64, RT(br.timeouts), "bulkhead_breaker_calls_total",
     "result=\"timeout\"", "counter", "Calls seen by the circuit breaker, by result."},
    {BREAKER, "rejections", REPORTDEF_U64, RT(br.rejections), "bulkhead_breaker_calls_total",
     "result=\"rejected\"", "counter", "Calls seen by the circuit breaker, by result."},
    {BREAKER, "failureRate", REPORTDEF_RATIO, RT(br.failure_rate), "bulkhead_breaker_failure_ratio",
     NULL, "gauge", "Failures and timeouts over calls in the breaker's rolling window."},
    {BREAKER, "windowCalls", REPORTDEF_U64, RT(br.window_calls)},
    {BREAKER, "windowFailures", REPORTDEF_U64, RT(br.window_failures)},
    {BREAKER, "lastChange", REPORTDEF_TIME, RT(br.last_change_wall_us)},
    {BREAKER, "nextTrial", REPORTDEF_TIME, RT(br.next_trial_wall_us)},
    {BREAKER, "opened", REPORTDEF_U64, RT(br.opened), "bulkhead_breaker_opened_total", NULL,
     "counter", "Times the breaker opened."},
    {BREAKER, "timeoutMs", REPORTDEF_I64, RT(cfg.breaker_timeout_ms)},
    {BREAKER, "errorThresholdPct", REPORTDEF_I64, RT(cfg.breaker_error_pct)},
    {BREAKER, "resetTimeoutMs", REPORTDEF_I64, RT(cfg.breaker_reset_ms)},

    {LIMITER, "limit", REPORTDEF_LIMIT, RT(cfg.rate_limit)},
    {LIMITER, "windowSeconds", REPORTDEF_I64, RT(cfg.rate_window_s)},
    {LIMITER, "tenantOverrides", REPORTDEF_SIZE, RT(tenant_overrides),
     "bulkhead_ratelimit_tenant_overrides", NULL, "gauge",
     "Tenants of the tier whose own rate limit wins over the tier's (AUTH_MODE=apikey)."},
    {LIMITER, "allowed", REPORTDEF_U64, RT(rl.allowed), "bulkhead_ratelimit_decisions_total",
     "result=\"allowed\"", "counter", "Rate-limit decisions, by result."},
    {LIMITER, "rejected", REPORTDEF_U64, RT(rl.rejected), "bulkhead_ratelimit_decisions_total",
     "result=\"rejected\"", "counter", "Rate-limit decisions, by result."},
    {LIMITER, "keysTracked", REPORTDEF_SIZE, RT(rl.keys), "bulkhead_ratelimit_keys", NULL, "gauge",
     "Tenants tracked by the in-memory rate limiter."},
    {LIMITER, "overflowed", REPORTDEF_U64, RT(rl.overflow), "bulkhead_ratelimit_overflow_total",
     NULL, "counter", "Decisions made on the shared overflow bucket (key table full)."},
    {LIMITER, "backend", REPORTDEF_TEXT, RT(rl_backend)},
    {LIMITER, "backendErrors", REPORTDEF_U64, RT(rl_backend_errors)},

    {FAIR, "activeTenants", REPORTDEF_SIZE, RT(wp.tenants), "bulkhead_tenants_active", NULL,
     "gauge", "Tenants with recent work in the tier.", true, "tenants"},
    {FAIR, "tenantWorkerShare", REPORTDEF_I64, RT(worker_share)},
    {FAIR, "tenantConnectionShare", REPORTDEF_I64, RT(conn_share)},
    {FAIR, "tenantQueueShare", REPORTDEF_I64, RT(queue_share)},
    {FAIR, "workerReserve", REPORTDEF_I64, RT(worker_reserve)},
    {FAIR, "connectionReserve", REPORTDEF_I64, RT(conn_reserve)},
    {FAIR, "lingerMs", REPORTDEF_I64, RT(cfg.tenant_linger_ms)},
    {FAIR, "briefRequestMs", REPORTDEF_I64, RT(cfg.brief_request_ms)},
    {FAIR, "queueByCost", REPORTDEF_I64, RT(cfg.fair_queue_cost)},
    {FAIR, "rejectedTenantShare", REPORTDEF_U64, RT(wp.rejected_tenant),
     "bulkhead_tenant_share_rejections_total", NULL, "counter",
     "Requests refused because the tenant's share of the queue was full."},
    {FAIR, "busiest", REPORTDEF_BUSIEST, RT(top)},

    {CAPACITY, "priority", REPORTDEF_I64, RT(cfg.priority)},
    {CAPACITY, "limit", REPORTDEF_REAL, RT(cap_limit), "bulkhead_capacity_limit", NULL, "gauge",
     "Requests of the tier allowed at once by the capacity controller (its max when not "
     "limited; below 1: paced; 0: closed)."},
    {CAPACITY, "max", REPORTDEF_SIZE, RT(db.max)}, /* db_max, or this instance's fleet share */
    {CAPACITY, "floor", REPORTDEF_REAL, RT(cap_floor)},
    {CAPACITY, "gated", REPORTDEF_BOOL, RT(cap.gated)},
    {CAPACITY, "shedding", REPORTDEF_BOOL, RT(cap.shedding), "bulkhead_capacity_shedding", NULL,
     "gauge", "1 while the capacity controller limits the tier for a higher one.", true},
    {CAPACITY, "usage", REPORTDEF_REAL, RT(cap.usage)},
    {CAPACITY, "pressing", REPORTDEF_BOOL, RT(cap.pressing)},
    {CAPACITY, "objectiveMs", REPORTDEF_REAL, RT(cap_objective_ms)},
    {NULL, NULL, REPORTDEF_REAL, RT(cap_objective_s), "bulkhead_capacity_objective_seconds", NULL,
     "gauge", "The tier's p99 latency objective (latency_objective_ms)."},
    {CAPACITY, "latencyP99Ms", REPORTDEF_REAL, RT(cap_p99_ms)},
    {NULL, NULL, REPORTDEF_REAL, RT(cap_p99_s), "bulkhead_capacity_latency_p99_seconds", NULL,
     "gauge", "The tier's p99 latency in the controller's last verdict, against its objective."},
    {CAPACITY, "latencyMeanMs", REPORTDEF_REAL, RT(cap_mean_ms)},
    {NULL, NULL, REPORTDEF_REAL, RT(cap_mean_s), "bulkhead_capacity_latency_mean_seconds", NULL,
     "gauge",
     "The tier's typical latency in the controller's last verdict: the mean of its fastest nine "
     "tenths."},
    {CAPACITY, "latencyLevelMs", REPORTDEF_REAL, RT(cap_level_ms)},
    {NULL, NULL, REPORTDEF_REAL, RT(cap_level_s), "bulkhead_capacity_latency_level_seconds", NULL,
     "gauge", "The tier's level: its typical latency, smoothed over the long term."},
    {CAPACITY, "thresholdMs", REPORTDEF_REAL, RT(cap_threshold_ms)},
    {NULL, NULL, REPORTDEF_REAL, RT(cap_threshold_s), "bulkhead_capacity_latency_threshold_seconds",
     NULL, "gauge",
     "The threshold the tier's last verdict was judged against: a typical latency above it "
     "threatens the objective (its level then, plus its tolerance and margin)."},
    {CAPACITY, "threatened", REPORTDEF_BOOL, RT(cap.threatened), "bulkhead_capacity_threatened",
     NULL, "gauge", "1 while the tier's latency threatens its objective (lower tiers may be cut).",
     true},
    {CAPACITY, "threatFromBelow", REPORTDEF_BOOL, RT(cap.blamed),
     "bulkhead_capacity_threat_from_below", NULL, "gauge",
     "1 while the tier threatens its objective and its clear requests (nothing of a lower tier "
     "beside them) do not: only such a threat cuts the lower tiers."},
    {CAPACITY, "threatenedSeconds", REPORTDEF_REAL, RT(cap_threatened_s),
     "bulkhead_capacity_threatened_seconds_total", NULL, "counter",
     "Time the tier's latency threatened its objective."},
    {CAPACITY, "fleetActive", REPORTDEF_BOOL, RT(cap.remote_active),
     "bulkhead_capacity_fleet_active", NULL, "gauge",
     "1 while another instance of the fleet has the tier active (FLEET)."},
    {CAPACITY, "fleetThreatened", REPORTDEF_BOOL, RT(cap.remote_threatened),
     "bulkhead_capacity_fleet_threatened", NULL, "gauge",
     "1 while the tier threatens its objective on another instance of the fleet: this "
     "instance's lower tiers may be cut for it."},
    {CAPACITY, "fleetPressing", REPORTDEF_BOOL, RT(cap.remote_pressing)},
    {CAPACITY, "inProgress", REPORTDEF_I64, RT(cap.in_progress)},
    {CAPACITY, "admitted", REPORTDEF_U64, RT(cap.admitted)},
    {CAPACITY, "shed", REPORTDEF_U64, RT(cap.shed), "bulkhead_capacity_shed_total", NULL, "counter",
     "Requests refused (503 shed) because a higher tier needed the shared capacity."},

    {BUDGET, "scope", REPORTDEF_TEXT, RT(budget_scope)},
    {BUDGET, "fleetWorkers", REPORTDEF_I64, RT(budget_total_workers), "bulkhead_fleet_budget",
     "resource=\"workers\"", "gauge",
     "The tier's workers and connections, as totals for the fleet (budget_scope fleet) or for "
     "this instance (instance)."},
    {BUDGET, "fleetConnections", REPORTDEF_I64, RT(budget_total_conns), "bulkhead_fleet_budget",
     "resource=\"connections\""},
    {BUDGET, "workers", REPORTDEF_I64, RT(budget_workers), "bulkhead_fleet_budget_share",
     "resource=\"workers\"", "gauge",
     "This instance's share of the tier's workers and connections (its pools' limits now)."},
    {BUDGET, "connections", REPORTDEF_I64, RT(budget_conns), "bulkhead_fleet_budget_share",
     "resource=\"connections\""},
    {BUDGET, "minWorkers", REPORTDEF_I64, RT(budget_min_workers)},
    {BUDGET, "minConnections", REPORTDEF_I64, RT(budget_min_conns)},
    {BUDGET, "instances", REPORTDEF_I64, RT(budget_instances), "bulkhead_fleet_budget_instances",
     NULL, "gauge",
     "Instances sharing the tier's fleet budget, this one included (1: per instance)."},
    {BUDGET, "leased", REPORTDEF_BOOL, RT(budget_leased), "bulkhead_fleet_budget_leased", NULL,
     "gauge",
     "1 while a fleet-scoped tier's share is a lease granted by a recent exchange (0: its "
     "minimum, without the fleet view; always 0 for a per-instance budget)."},

    {NULL, "requests", REPORTDEF_OUTCOMES, RT(outcomes), "bulkhead_requests_total", NULL, "counter",
     "Requests finished, by tier and outcome."},
    {NULL, NULL, REPORTDEF_STATUSES, RT(statuses), "bulkhead_responses_total", NULL, "counter",
     "Responses sent, by tier and status code."},
    {NULL, "latencyMs", REPORTDEF_HIST, RT(total), "bulkhead_request_duration_seconds", NULL,
     "histogram", "Time from request to response, by tier."},
    {NULL, NULL, REPORTDEF_HIST, RT(query), "bulkhead_query_duration_seconds", NULL, "histogram",
     "Time spent in PostgreSQL per request, by tier."},
};

const size_t reportdef_nfields = sizeof(reportdef_fields) / sizeof(reportdef_fields[0]);

#define RP(field) .offset = offsetof(struct report_process, field)

#define REPORTDEF_HTTP_HELP                                                                        \
    "Connections the HTTP layer refused or closed, by reason: head_timeout and body_timeout "      \
    "(408), malformed (400, 414, 431, 505), per_address (429, "                                    \
    "HTTP_MAX_CONNECTIONS_PER_ADDRESS), evicted (idle keep-alive closed for a new client at "      \
    "HTTP_MAX_CONNECTIONS)."

const struct reportdef_proc_field reportdef_proc_fields[] = {
    {"bulkhead_ratelimit_backend_up", NULL, "gauge",
     "1 when the shared Redis rate-limit backend answers (absent in memory mode).", RP(redis_up),
     REPORTDEF_NEEDS_REDIS},
    {"bulkhead_ratelimit_backend_errors_total", NULL, "counter",
     "Failed calls to the Redis rate-limit backend.", RP(redis_errors), REPORTDEF_NEEDS_REDIS},
    {"bulkhead_ratelimit_backend_fallbacks_total", NULL, "counter",
     "Decisions made in memory because Redis was unavailable.", RP(redis_fallbacks),
     REPORTDEF_NEEDS_REDIS},
    {"bulkhead_ratelimit_backend_batches_total", NULL, "counter",
     "Batches of admitted requests counted by Redis (one round trip each).", RP(redis_batches),
     REPORTDEF_NEEDS_REDIS},
    {"bulkhead_ratelimit_backend_hits_total", "result=\"counted\"", "counter",
     "Admitted requests sent to Redis: counted, or dropped because their batch failed.",
     RP(redis_hits_sent), REPORTDEF_NEEDS_REDIS},
    {"bulkhead_ratelimit_backend_hits_total", "result=\"dropped\"", "counter",
     "Admitted requests sent to Redis: counted, or dropped because their batch failed.",
     RP(redis_hits_dropped), REPORTDEF_NEEDS_REDIS},
    {"bulkhead_ratelimit_backend_waits_total", NULL, "counter",
     "Requests that waited for Redis's answer: their tenant's lease on this instance was used "
     "up.",
     RP(redis_waits), REPORTDEF_NEEDS_REDIS},
    {"bulkhead_ratelimit_backend_tenants", NULL, "gauge",
     "Tenants whose shared count this instance holds a view of.", RP(redis_keys),
     REPORTDEF_NEEDS_REDIS},
    {"bulkhead_auth_keys", NULL, "gauge", "Live API keys known to the server.", RP(auth_keys),
     REPORTDEF_NEEDS_AUTH},
    {"bulkhead_auth_decisions_total", "result=\"accepted\"", "counter",
     "API-key checks, by result.", RP(auth_accepted), REPORTDEF_NEEDS_AUTH},
    {"bulkhead_auth_decisions_total", "result=\"rejected\"", "counter",
     "API-key checks, by result.", RP(auth_rejected), REPORTDEF_NEEDS_AUTH},
    {"bulkhead_admin_auth_total", "result=\"accepted\"", "counter",
     "Admin authentications, by result (limited: refused without comparing the token).",
     RP(admin_accepted), REPORTDEF_NEEDS_ADMIN},
    {"bulkhead_admin_auth_total", "result=\"refused\"", "counter",
     "Admin authentications, by result (limited: refused without comparing the token).",
     RP(admin_refused), REPORTDEF_NEEDS_ADMIN},
    {"bulkhead_admin_auth_total", "result=\"limited\"", "counter",
     "Admin authentications, by result (limited: refused without comparing the token).",
     RP(admin_limited), REPORTDEF_NEEDS_ADMIN},
    {"bulkhead_tarpit_held_total", NULL, "counter",
     "Requests held: until their rate-limit turn, or their client's Retry-After.", RP(tarpit_held),
     REPORTDEF_NEEDS_TARPIT},
    {"bulkhead_tarpit_holding", NULL, "gauge", "Requests held now.", RP(tarpit_holding),
     REPORTDEF_NEEDS_TARPIT},
    {"bulkhead_tarpit_overflow_total", NULL, "counter",
     "Refusals answered at once because TARPIT_MAX_HELD were held.", RP(tarpit_overflow),
     REPORTDEF_NEEDS_TARPIT},
    {"bulkhead_tarpit_clients", NULL, "gauge", "Clients remembered with a Retry-After or a turn.",
     RP(tarpit_clients), REPORTDEF_NEEDS_TARPIT},
    {"bulkhead_tarpit_untracked_total", NULL, "counter",
     "Refusals whose client was not remembered: TARPIT_MAX_CLIENTS were.", RP(tarpit_untracked),
     REPORTDEF_NEEDS_TARPIT},
    {"bulkhead_tarpit_left_total", NULL, "counter",
     "Held requests whose client left during the hold: finished at their time without being "
     "admitted (no slot, no statement; 499).",
     RP(tarpit_left), REPORTDEF_NEEDS_TARPIT},
    {"bulkhead_http_connections", NULL, "gauge", "Client connections open on the API port.",
     RP(http_open)},
    {"bulkhead_http_connections_accepted_total", NULL, "counter",
     "Client connections accepted on the API port.", RP(http_accepted)},
    {"bulkhead_http_refusals_total", "reason=\"head_timeout\"", "counter", REPORTDEF_HTTP_HELP,
     RP(http_head_timeouts)},
    {"bulkhead_http_refusals_total", "reason=\"body_timeout\"", "counter", REPORTDEF_HTTP_HELP,
     RP(http_body_timeouts)},
    {"bulkhead_http_refusals_total", "reason=\"malformed\"", "counter", REPORTDEF_HTTP_HELP,
     RP(http_malformed)},
    {"bulkhead_http_refusals_total", "reason=\"per_address\"", "counter", REPORTDEF_HTTP_HELP,
     RP(http_addr_refused)},
    {"bulkhead_http_refusals_total", "reason=\"evicted\"", "counter", REPORTDEF_HTTP_HELP,
     RP(http_evicted)},
    {"bulkhead_fleet_up", NULL, "gauge",
     "1 while this instance exchanges tier states with the fleet (0: local control).", RP(fleet_up),
     REPORTDEF_NEEDS_FLEET},
    {"bulkhead_fleet_instances", NULL, "gauge",
     "Other live instances seen at the last exchange of tier states.", RP(fleet_instances),
     REPORTDEF_NEEDS_FLEET},
    {"bulkhead_fleet_exchanges_total", NULL, "counter", "Exchanges of tier states with the fleet.",
     RP(fleet_exchanges), REPORTDEF_NEEDS_FLEET},
    {"bulkhead_fleet_failures_total", NULL, "counter",
     "Failed connections and exchanges of tier states with the fleet.", RP(fleet_failures),
     REPORTDEF_NEEDS_FLEET},
    {"bulkhead_fleet_exchange_seconds", NULL, "gauge",
     "The round trip of the last exchange of tier states.", RP(fleet_rtt_us), REPORTDEF_NEEDS_FLEET,
     REPORTDEF_UNIT_SECONDS},
    {"bulkhead_database_up", NULL, "gauge", "1 when the health probe reaches PostgreSQL.",
     RP(db_up), REPORTDEF_ALWAYS},
    {"bulkhead_requests_in_flight", NULL, "gauge", "Requests received and not finished.",
     RP(in_flight), REPORTDEF_ALWAYS},
    {"bulkhead_build_info", "version=\"" BULKHEAD_VERSION "\"", "gauge",
     "The running build: 1, with its version as a label.", .offset = 0, REPORTDEF_ALWAYS,
     REPORTDEF_UNIT_ONE},
    /* The Prometheus client libraries' standard process metrics. */
    {"process_cpu_seconds_total", NULL, "counter",
     "Total user and system CPU time spent in seconds.", RP(ps.cpu_us), REPORTDEF_ALWAYS,
     REPORTDEF_UNIT_SECONDS},
    {"process_resident_memory_bytes", NULL, "gauge", "Resident memory size in bytes.",
     RP(ps.rss_bytes), REPORTDEF_ALWAYS},
    {"process_virtual_memory_bytes", NULL, "gauge", "Virtual memory size in bytes.",
     RP(ps.vsize_bytes), REPORTDEF_ALWAYS},
    {"process_open_fds", NULL, "gauge", "Number of open file descriptors.", RP(ps.open_fds),
     REPORTDEF_ALWAYS},
    {"process_max_fds", NULL, "gauge", "Maximum number of open file descriptors.", RP(ps.max_fds),
     REPORTDEF_ALWAYS},
    {"process_threads", NULL, "gauge", "Number of OS threads in the process.", RP(ps.threads),
     REPORTDEF_ALWAYS},
    {"process_start_time_seconds", NULL, "gauge",
     "Start time of the process since the Unix epoch in seconds.", RP(started_wall_us),
     REPORTDEF_ALWAYS, REPORTDEF_UNIT_SECONDS},
};

const size_t reportdef_nproc = sizeof(reportdef_proc_fields) / sizeof(reportdef_proc_fields[0]);

const void *reportdef_at(const struct report_tier *t, const struct reportdef_field *f)
{
    return (const char *)t + f->offset;
}

/* Whether a field is one number that reportdef_u64 can read (and a sample can hold). */
bool reportdef_integral(enum reportdef_kind k)
{
    return k == REPORTDEF_U64 || k == REPORTDEF_SIZE || k == REPORTDEF_I64 ||
           k == REPORTDEF_LIMIT || k == REPORTDEF_TIME || k == REPORTDEF_STATE ||
           k == REPORTDEF_MODE || k == REPORTDEF_BOOL;
}

/* An integral field as an unsigned integer (0 for the others). */
uint64_t reportdef_u64(const struct report_tier *t, const struct reportdef_field *f)
{
    const void *p = reportdef_at(t, f);
    switch (f->kind) {
    case REPORTDEF_U64:
        return *(const uint64_t *)p;
    case REPORTDEF_SIZE:
        return *(const size_t *)p;
    case REPORTDEF_I64:
    case REPORTDEF_LIMIT:
    case REPORTDEF_TIME:
        return (uint64_t) * (const int64_t *)p;
    case REPORTDEF_STATE:
        return (uint64_t) * (const enum breaker_state *)p;
    case REPORTDEF_MODE:
        return (uint64_t) * (const enum breaker_mode *)p;
    case REPORTDEF_BOOL:
        return *(const bool *)p;
    default:
        return 0;
    }
}
