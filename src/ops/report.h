/*
 * report: one snapshot of every compartment, rendered three ways: /metrics/bulkheads (JSON
 * keyed by tier, with the seed's camelCase keys), /metrics (the Prometheus text exposition
 * format 0.0.4) and the dashboard's per-second samples (history.c).
 *
 * report_read takes the snapshot: each source (pools, breaker, limiter, counters, health,
 * Redis, API keys) is read once, under its own lock or with atomics, without stopping the
 * request path. The renderers only format it, by walking one field list (reportdef_fields in
 * reportdef.c): a row says where a tier's value sits in the snapshot, its JSON section and key,
 * its Prometheus name, label, type and help, and whether the dashboard samples it. A new tier
 * metric is one row there.
 */
#ifndef BULKHEAD_REPORT_H
#define BULKHEAD_REPORT_H

#include "auth.h"
#include "breaker.h"
#include "capctl.h"
#include "dbpool.h"
#include "metrics.h"
#include "procstat.h"
#include "ratelimit.h"
#include "rlsync.h"
#include "tiers.h"
#include "workpool.h"

#include <jansson.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define REPORT_TOP_TENANTS 5 /* busiest tenants listed per tier */
#define REPORT_SAMPLED_MAX 16
#define REPORT_LOOPS_MAX   64 /* HTTP event loops reported at most (EVLOOP_MAX) */

struct tierset;
struct health;
struct fleet;

/* Where the numbers come from. Set up by the server (or a test) and read-only while in use;
 * the optional sources are NULL when absent. */
struct http_counters;

struct report_sources {
    struct tierset *tiers;               /* every tier's parts and counters */
    const struct metrics_tier *untiered; /* requests that reached no tier (404, bad tier) */
    struct health *health;               /* NULL: reported as healthy, no probe */
    struct rlsync *redis;                /* NULL unless RATE_LIMIT_BACKEND=redis */
    struct auth *auth;                   /* NULL unless AUTH_MODE=apikey */
    struct admin *admin;                 /* NULL unless ADMIN_TOKEN is set */
    struct tarpit *tarpit;               /* NULL unless TARPIT=true */
    struct capctl *capacity;             /* NULL: no capacity section */
    struct fleet *fleet;                 /* NULL unless the fleet exchange runs */
    const atomic_int *in_flight;         /* requests received and not finished */
    const atomic_bool *draining;         /* shutdown has begun */
    int64_t started_wall_us;             /* process start, Unix us */
    const char *instance_id;             /* random per process */
    const struct metrics_hist *loop_lag; /* nloops HTTP event loops' lag (evloop.h), or NULL */
    unsigned nloops;
    const struct http_counters *http; /* the API listener's connections, or NULL */
};

/* One tier, as read. */
struct report_tier {
    const char *name;    /* lives as long as the tier set */
    struct tier_cfg cfg; /* its settings at the reading */
    struct workpool_stats wp;
    struct dbpool_stats db;
    struct breaker_snapshot br;
    struct ratelimit_stats rl;
    /* Derived here once, so every rendering agrees. */
    uint64_t wp_rejected;                          /* queue full + tenant's share full */
    int64_t worker_share, conn_share, queue_share; /* per-tenant caps while others wait */
    int64_t worker_reserve, conn_reserve;          /* slots kept for tenants holding none */
    const char *rl_backend;                        /* where the tier's limits are decided */
    uint64_t rl_backend_errors;                    /* Redis calls that failed (limited tiers) */
    size_t tenant_overrides; /* tenants with their own rate limit (API keys; 0 in header mode) */
    struct workpool_tenant_load top[REPORT_TOP_TENANTS]; /* busiest tenants */
    size_t top_conns[REPORT_TOP_TENANTS];                /* connections each of them holds */
    size_t ntop;
    uint64_t outcomes[OUTCOME_COUNT];
    uint64_t statuses[METRICS_STATUS_COUNT];
    struct metrics_hist_snap total, queue, query; /* latency, queue wait, query time */
    struct capctl_tier_stats cap;                 /* the capacity controller's view */
    double cap_limit, cap_floor;                  /* in requests at once */
    double cap_objective_ms, cap_p99_ms, cap_mean_ms, cap_level_ms, cap_threshold_ms;
    double cap_objective_s, cap_p99_s, cap_mean_s, cap_level_s, cap_threshold_s;
    double cap_threatened_s; /* time spent threatening its objective */
    /* Its budget (budget_scope): with "fleet", the totals, this instance's share (what its
     * pools have now) and the instances sharing them; with "instance", share = total, one. */
    const char *budget_scope;
    int64_t budget_total_workers, budget_total_conns;
    int64_t budget_workers, budget_conns;
    int64_t budget_min_workers, budget_min_conns;
    int64_t budget_instances;
    bool budget_leased; /* fleet: the share comes from a lease granted within its validity */
};

/* The process, as read. */
struct report_process {
    int64_t now_wall_us, started_wall_us;
    const char *instance_id;
    bool healthy;
    char reason[256];    /* why not healthy ("" when healthy) */
    int64_t db_probe_us; /* last health probe's round trip */
    uint64_t db_up, in_flight, draining;
    bool have_redis, have_auth, have_admin;
    uint64_t redis_up, redis_errors, redis_fallbacks;
    uint64_t redis_batches, redis_hits_sent, redis_hits_dropped, redis_waits, redis_keys;
    uint64_t auth_keys, auth_accepted, auth_rejected;
    uint64_t admin_accepted, admin_refused, admin_limited; /* admin authentications */
    bool have_tarpit;
    bool have_fleet;
    uint64_t fleet_up, fleet_instances, fleet_exchanges, fleet_failures, fleet_rtt_us;
    char fleet_reason[160];        /* while not up: why (fleet_stats) */
    int64_t fleet_changed_wall_us; /* when fleet_up last changed */
    uint64_t tarpit_held, tarpit_holding, tarpit_overflow, tarpit_clients, tarpit_untracked,
        tarpit_left;
    uint64_t http_open, http_accepted; /* the API listener's connections (http.h) */
    uint64_t http_head_timeouts, http_body_timeouts, http_malformed, http_addr_refused;
    uint64_t http_evicted;
    uint64_t untiered_outcomes[OUTCOME_COUNT];
    uint64_t untiered_statuses[METRICS_STATUS_COUNT];
    struct procstat ps;                                  /* CPU, memory, descriptors, threads */
    unsigned nloops;                                     /* HTTP event loops */
    struct metrics_hist_snap loop_lag[REPORT_LOOPS_MAX]; /* each one's lag so far */
};

struct report_snap {
    struct report_process proc;
    size_t ntiers;
    struct report_tier tier[TIERS_MAX];
};

/* Any thread: read everything (report_read) or only the process (report_read_process). */
void report_read(const struct report_sources *src, struct report_snap *out);
void report_read_process(const struct report_sources *src, struct report_process *out);

/* /metrics/bulkheads: malloc'd JSON text; the caller frees it. */
char *report_json(const struct report_snap *s);

/* /metrics: malloc'd exposition text of *len bytes; the caller frees it. */
char *report_prometheus(const struct report_snap *s, size_t *len);

/*
 * The dashboard's samples: the fields the table marks as sampled, as plain numbers, so a ring
 * of samples stays small. report_sample fills report_sampled_count() values from a tier;
 * report_sample_json renders them under the same sections and keys as /metrics/bulkheads, plus
 * the flat keys the samples carried before (deprecated, kept for existing readers).
 */
size_t report_sampled_count(void);
void report_sample(const struct report_tier *t, uint64_t *out);
void report_sample_json(const uint64_t *v, json_t *into);

#endif
