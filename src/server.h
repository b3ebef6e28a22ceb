/*
 * server: the composition root, and the only module (with main.c) that knows every other. It
 * owns the configuration, the tier set with each tier's parts (queue and workers, connection
 * pool, rate limiter, breaker, counters) and the shared services (HTTP, health probe, janitor,
 * Redis limiter, API-key cache, admin worker, dashboard history); it wires them together through
 * the callbacks and dependency structs they declare, starts them in order and stops them in
 * reverse. Three modules beside it work on its parts: tierparts (a tier's parts built, resized
 * and freed), reqhooks (the request hooks and the shutdown drain) and chores (the janitor's
 * periodic work).
 *
 *   http ──dispatch──> api ──> admission ──> datapath ──> dbpool, dbpipe (lanes), breaker
 *   ops (OPS_PORT, one thread) ──dispatch_ops──> api: /metrics, /dashboard, /admin, probes
 *     │                 └──> report (snapshot) ──> JSON, Prometheus; history (dashboard)
 *     └─ request ──hooks (begin, done, freed)──> reqhooks: counters, in-flight, shutdown drain
 *   janitor ──chores──> chores: queue timeouts, pool kicks, dashboard samples, limiter sweep,
 *                       capacity control, fleet exchange and budgets
 *
 * Request path of /api/data (on the event thread that read it, unless said otherwise):
 *
 *   client -> http (libmicrohttpd) -> api: route, tier, tenant, arguments (datareq)
 *        -> admission: capacity gate (503 shed) -> [1] rate limit (429, or held by the tarpit)
 *           -> database-time budget (429 db_time_exhausted) -> [4] breaker permit (503)
 *        -> datapath: [2] the tier's worker slot (fair queue; 503 bulkhead_full)
 *           -> [3] a pool connection (503 pool_timeout) -> PostgreSQL, on this event thread
 *              (pipelined on a tenant's lane, dbpipe) or on a worker thread (blocking work)
 *        -> datastmt: breaker verdict, connection back, reply -> access log
 *
 * DESIGN: tiers are created at start and live until exit; their settings are swapped whole on
 * SIGHUP (server_reload, main thread) through the tier set, whose readers take snapshots (see
 * tierset.h). A tier of budget_scope "fleet" has its pools resized live to its fleet share by
 * the janitor (chores.c, from fleet_leases) and by a reload; both go through the
 * pools' own locked set_limits, and the janitor applies again whenever the settings table it
 * applied from was replaced, so the last word is the current share. in_flight and draining are
 * atomics read by the HTTP threads; drain_mutex with `drained` lets shutdown wait for the last
 * request.
 */
#ifndef BULKHEAD_SERVER_H
#define BULKHEAD_SERVER_H

#include "api.h"
#include "config.h"
#include "metrics.h"
#include "params.h"
#include "report.h"
#include "request.h"
#include "tiers.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

struct tierset;
struct health;
struct rlsync;
struct auth;
struct http;
struct janitor;
struct history;
struct tarpit;
struct admin;
struct capctl;
struct fleet;

/* A fleet-scoped tier's share as last applied to its pools (janitor only). */
struct server_budget {
    const struct tier_table *from; /* the settings it was applied with */
    int64_t workers, conns;
};

struct server {
    struct config cfg;              /* owned; environment settings */
    struct tierset *tiers;          /* owned, with every tier's parts */
    struct metrics_tier m_untiered; /* requests that never reached a tier (404, bad tier) */
    struct health *health;          /* owned */
    struct rlsync *redis;           /* owned; NULL unless RATE_LIMIT_BACKEND=redis */
    struct auth *auth;              /* owned; NULL unless AUTH_MODE=apikey */
    struct http *http;              /* owned: API_PORT */
    struct http *ops;               /* owned; NULL unless OPS_PORT is set */
    struct janitor *janitor;        /* owned */
    struct history *history;        /* owned: per-second samples for the dashboard */
    struct tarpit *tarpit;          /* owned; NULL unless TARPIT=true */
    struct admin *admin;            /* owned; NULL unless ADMIN_TOKEN is set */
    struct capctl *capacity;        /* owned: the capacity controller over the tiers */
    struct fleet *fleet;            /* owned; NULL unless FLEET and CAPACITY_CONTROL are true */
    uint64_t fleet_seen;            /* the fleet's exchanges at the last tick (janitor only) */
    struct server_budget budget[TIERS_MAX]; /* fleet budgets applied (janitor only) */
    struct tenantstat *tenants;             /* owned; NULL unless TENANT_ACCOUNTING=true */
    struct report_snap *sample; /* owned: the janitor's scratch reading (janitor only) */
    /* Each HTTP thread's event-loop lag (written by that thread, read by report.c). */
    struct metrics_hist loop_lag[REPORT_LOOPS_MAX];
    atomic_int in_flight;        /* requests created and not yet freed */
    atomic_bool draining;        /* shutdown started: refuse new work */
    pthread_mutex_t drain_mutex; /* with drained: shutdown waits for in_flight == 0 */
    pthread_cond_t drained;
    struct params_cidr proxies[PARAMS_CIDRS_MAX]; /* TRUSTED_PROXIES, parsed */
    size_t nproxies;
    int64_t started_wall_us;
    char instance_id[24]; /* random per process, prefixes request ids */
    /* What the modules were handed; they keep pointers into these. */
    struct request_hooks hooks;
    struct report_sources sources;
    struct api_deps api;
};

/* Start everything; returns 0, or a negative errno with the reason logged. */
int server_start(struct server *srv, const struct config *cfg, const struct tier_table *tiers)
    __attribute__((warn_unused_result));

/* Main thread: block until SIGINT/SIGTERM, reloading on SIGHUP. */
void server_wait(struct server *srv);

/* Reload the tier table from TIERS_FILE (SIGHUP). Returns 0 or -EINVAL (nothing changed). */
int server_reload(struct server *srv);

/* Graceful stop: refuse new work, finish in flight within SHUTDOWN_TIMEOUT_MS, free. */
void server_stop(struct server *srv);

#endif
