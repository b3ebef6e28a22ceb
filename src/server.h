/*
 * server: the composition root. It owns the configuration, one runtime per tier (queue and
 * workers, connection pool, rate limiter, breaker, metrics) and the shared services (HTTP,
 * health probe, janitor, Redis limiter, API-key cache), starts them in order and stops them in
 * reverse.
 *
 * Request path (every arrow on the HTTP thread until the queue):
 *
 *   client -> http (libmicrohttpd) -> api: route, tier, tenant, validate
 *        -> [1] ratelimit (429) -> [4] breaker permit (503 circuit_open)
 *        -> [2] workpool queue (503 bulkhead_full) ... worker thread:
 *        -> [3] dbpool connection (503 pool_timeout) -> PostgreSQL (504 on timeout)
 *        -> breaker verdict -> resume the connection -> response -> access log
 *
 * DESIGN: tiers are created at start and live until exit; their settings can be swapped on
 * SIGHUP (server_reload), readers load the current struct tier_cfg through an atomic pointer
 * and old copies are kept until exit, so no reader ever sees a freed or half-written table.
 */
#ifndef BULKHEAD_SERVER_H
#define BULKHEAD_SERVER_H

#include "config.h"
#include "metrics.h"
#include "params.h"
#include "tiers.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

struct workpool;
struct dbpool;
struct ratelimit;
struct breaker;
struct health;
struct rlredis;
struct auth;
struct http;
struct janitor;
struct history;

/* One tier at run time. Created by server_start, freed by server_stop. */
struct tier_rt {
    size_t index;                         /* position in the tier table */
    _Atomic(const struct tier_cfg *) cfg; /* current settings; see DESIGN above */
    char appname[64];                     /* application_name of its connections */
    struct workpool *pool;                /* owned: logic bulkhead */
    struct dbpool *db;                    /* owned: database bulkhead */
    struct ratelimit *rl;                 /* owned: local limiter (also Redis fallback) */
    struct breaker *breaker;              /* owned */
    struct metrics_tier m;                /* counters of requests served by this tier */
};

/* Retired tier_cfg copies, freed at exit. */
struct server_cfg_old {
    struct tier_cfg *cfg;
    struct server_cfg_old *next;
};

struct server {
    struct config cfg;               /* owned; environment settings */
    struct tier_table tiers;         /* the table as loaded at start (names never change) */
    struct tier_rt *tier[TIERS_MAX]; /* owned */
    size_t ntiers;
    struct metrics_tier m_untiered;  /* requests that never reached a tier (404, bad tier) */
    struct health *health;           /* owned */
    struct rlredis *redis;           /* owned; NULL unless RATE_LIMIT_BACKEND=redis */
    struct auth *auth;               /* owned; NULL unless AUTH_MODE=apikey */
    struct http *http;               /* owned */
    struct janitor *janitor;         /* owned */
    struct history *history;         /* owned: per-second samples for the dashboard */
    struct server_cfg_old *old_cfgs; /* owned; guarded by reload (main thread only) */
    atomic_int in_flight;            /* requests created and not yet completed */
    atomic_bool draining;            /* shutdown started: refuse new work */
    pthread_mutex_t drain_mutex;     /* with drained: shutdown waits for in_flight == 0 */
    pthread_cond_t drained;
    struct params_cidr proxies[PARAMS_CIDRS_MAX]; /* TRUSTED_PROXIES, parsed */
    size_t nproxies;
    int64_t started_wall_us;
    char instance_id[24]; /* random per process, prefixes request ids */
};

/* The tier's current settings (any thread). */
static inline const struct tier_cfg *tier_cfg(const struct tier_rt *t)
{
    return atomic_load_explicit(&t->cfg, memory_order_acquire);
}

/* Start everything; returns 0, or a negative errno with the reason logged. */
int server_start(struct server *srv, const struct config *cfg, const struct tier_table *tiers)
    __attribute__((warn_unused_result));

/* Main thread: block until SIGINT/SIGTERM, reloading on SIGHUP. */
void server_wait(struct server *srv);

/* Reload the tier table from TIERS_FILE (SIGHUP). Returns 0 or -EINVAL (nothing changed). */
int server_reload(struct server *srv);

/* Graceful stop: refuse new work, finish in flight within SHUTDOWN_TIMEOUT_MS, free. */
void server_stop(struct server *srv);

/* A request ended (request_finish): wakes a shutdown waiting for the last one. */
void server_request_done(struct server *srv);

/* The tier runtime by name, or NULL. */
struct tier_rt *server_tier(struct server *srv, const char *name);

#endif
