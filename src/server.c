/*
 * server: start-up, signal handling, live reload and graceful shutdown (see server.h).
 *
 * Start order: health probe, tiers (breaker, limiter, workers, pool), API keys, Redis limiter,
 * history, janitor, and the HTTP listener last, so no request arrives before its path exists.
 * Shutdown is the reverse, after in-flight requests have had SHUTDOWN_TIMEOUT_MS to finish.
 */
#include "server.h"
#include "api.h"
#include "auth.h"
#include "breaker.h"
#include "dbpool.h"
#include "health.h"
#include "history.h"
#include "http.h"
#include "janitor.h"
#include "log.h"
#include "mclock.h"
#include "ratelimit.h"
#include "rlredis.h"
#include "workpool.h"
#include "xalloc.h"

#include <errno.h>
#include <inttypes.h>
#include <libpq-fe.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

static struct breaker_cfg server_breaker_cfg(const struct tier_cfg *c)
{
    struct breaker_cfg b = {.error_pct = c->breaker_error_pct,
                            .reset_ms = c->breaker_reset_ms,
                            .window_ms = c->breaker_window_ms,
                            .buckets = c->breaker_buckets,
                            .min_calls = c->breaker_min_calls,
                            .trial_calls = c->breaker_trial_calls};
    return b;
}

static struct workpool_limits server_pool_limits(const struct tier_cfg *c)
{
    struct workpool_limits l = {.threads = (size_t)c->workers,
                                .queue_max = (size_t)c->queue_max,
                                .tenant_queue_max = (size_t)tiers_tenant_queue_cap(c),
                                .share = tiers_worker_policy(c),
                                .linger_us = c->tenant_linger_ms * 1000,
                                .brief_us = c->brief_request_ms * 1000};
    return l;
}

static bool server_others_active(const void *ctx)
{
    return workpool_others_active(ctx);
}

static int server_tier_start(struct server *srv, size_t index, const struct tier_cfg *src)
{
    struct tier_rt *t = xcalloc(1, sizeof(*t));
    srv->tier[index] = t;
    t->index = index;
    struct tier_cfg *c = xmalloc(sizeof(*c));
    *c = *src;
    atomic_store(&t->cfg, c);
    metrics_init(&t->m);
    snprintf(t->appname, sizeof(t->appname), "bulkhead-%s", c->name);

    struct breaker_cfg bc = server_breaker_cfg(c);
    t->breaker = breaker_create(c->name, &bc);
    t->rl = ratelimit_create(c->rate_limit, c->rate_window_s, (size_t)srv->cfg.rl_max_keys);

    struct workpool_ops ops = api_workpool_ops_template;
    ops.ctx = srv;
    struct workpool_limits lim = server_pool_limits(c);
    int rc = workpool_create(c->name, &lim, &ops, &t->pool);
    if (rc) {
        log_error("tier_start", "tier %s: cannot start %" PRId64 " worker threads: %s", c->name,
                  c->workers, strerror(-rc));
        return rc;
    }
    struct dbpool_opts po = {
        .conn = {.conninfo = srv->cfg.database_url,
                 .appname = t->appname,
                 /* Server-side backstop a little past the call timeout: a statement whose
                  * cancel got lost still ends. */
                 .statement_timeout_ms = c->breaker_timeout_ms + 1000,
                 .setup_sql = api_session_sql,
                 .stmts = api_statements,
                 .nstmts = api_statement_count},
        .max = (size_t)c->db_max,
        .share = tiers_conn_policy(c),
        .others_active = server_others_active,
        .brief = workpool_tenant_brief,
        .others_ctx = t->pool,
    };
    rc = dbpool_create(&po, &t->db);
    if (rc)
        return rc;
    return 0;
}

static void server_tier_free(struct tier_rt *t)
{
    if (!t)
        return;
    workpool_destroy(t->pool);
    dbpool_destroy(t->db);
    ratelimit_destroy(t->rl);
    breaker_destroy(t->breaker);
    free((void *)tier_cfg(t));
    free(t);
}

/* Warn when this instance's pools could need more connections than the database allows. */
static void server_check_budget(struct server *srv)
{
    int64_t need = 1; /* the health probe */
    if (srv->cfg.auth_mode == CONFIG_AUTH_APIKEY)
        need++;
    for (size_t i = 0; i < srv->ntiers; i++)
        need += tier_cfg(srv->tier[i])->db_max;
    const char *keys[] = {"dbname", "application_name", "connect_timeout", NULL};
    const char *vals[] = {srv->cfg.database_url, "bulkhead-startup", "5", NULL};
    PGconn *pg = PQconnectdbParams(keys, vals, 1);
    if (PQstatus(pg) != CONNECTION_OK) {
        log_warn("db_budget",
                 "cannot check max_connections now (database unreachable); this "
                 "instance may open up to %" PRId64 " connections",
                 need);
        PQfinish(pg);
        return;
    }
    PGresult *res = PQexec(pg, "SELECT current_setting('max_connections')::int - "
                               "current_setting('superuser_reserved_connections')::int");
    if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1) {
        int64_t allowed = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
        if (need > allowed)
            log_warn("db_budget",
                     "this instance may open %" PRId64
                     " connections but the database allows %" PRId64
                     " (max_connections - superuser_reserved_connections): raise "
                     "max_connections, lower the tiers' db_max, or put PgBouncer in front",
                     need, allowed);
        else
            log_info("db_budget",
                     "connection budget: %" PRId64 " per instance of %" PRId64
                     " allowed; at most %" PRId64 " instances fit",
                     need, allowed, allowed / need);
    }
    PQclear(res);
    PQfinish(pg);
}

static void server_log_config(struct server *srv)
{
    for (size_t i = 0; i < srv->ntiers; i++) {
        const struct tier_cfg *c = tier_cfg(srv->tier[i]);
        char rate[48];
        if (c->rate_limit > 0)
            snprintf(rate, sizeof(rate), "%" PRId64 "/%" PRId64 "s", c->rate_limit,
                     c->rate_window_s);
        else
            snprintf(rate, sizeof(rate), "unlimited");
        log_info("tier",
                 "tier %s: %" PRId64 " workers, queue %" PRId64 " (%" PRId64 " ms), %" PRId64
                 " connections, rate %s, breaker %" PRId64 " ms / %" PRId64 "%% / reset %" PRId64
                 " ms, tenant share %" PRId64 "%% reserve %" PRId64 "%% linger %" PRId64 " ms",
                 c->name, c->workers, c->queue_max, c->queue_timeout_ms, c->db_max, rate,
                 c->breaker_timeout_ms, c->breaker_error_pct, c->breaker_reset_ms,
                 c->tenant_share_pct, c->tenant_reserve_pct, c->tenant_linger_ms);
    }
    log_info("config", "auth %s, rate-limit backend %s, %zu tiers",
             srv->cfg.auth_mode == CONFIG_AUTH_APIKEY ? "apikey" : "header",
             srv->cfg.rl_backend == CONFIG_BACKEND_REDIS ? "redis" : "memory", srv->ntiers);
}

/* Free whatever server_start created, in reverse order; safe on a partial start. */
static void server_teardown(struct server *srv)
{
    for (size_t i = 0; i < srv->ntiers; i++)
        if (srv->tier[i] && srv->tier[i]->pool)
            workpool_stop(srv->tier[i]->pool);
    for (size_t i = 0; i < srv->ntiers; i++)
        if (srv->tier[i] && srv->tier[i]->db)
            dbpool_stop(srv->tier[i]->db);
    http_stop(srv->http);
    janitor_stop(srv->janitor);
    history_destroy(srv->history);
    auth_stop(srv->auth);
    rlredis_destroy(srv->redis);
    health_stop(srv->health);
    for (size_t i = 0; i < srv->ntiers; i++)
        server_tier_free(srv->tier[i]);
    while (srv->old_cfgs) {
        struct server_cfg_old *o = srv->old_cfgs;
        srv->old_cfgs = o->next;
        free(o->cfg);
        free(o);
    }
    pthread_cond_destroy(&srv->drained);
    pthread_mutex_destroy(&srv->drain_mutex);
    config_free(&srv->cfg);
    srv->http = NULL;
    srv->janitor = NULL;
    srv->history = NULL;
    srv->auth = NULL;
    srv->redis = NULL;
    srv->health = NULL;
    srv->ntiers = 0;
}

int server_start(struct server *srv, const struct config *cfg, const struct tier_table *tiers)
{
    memset(srv, 0, sizeof(*srv));
    srv->cfg = *cfg; /* takes ownership of cfg's strings */
    srv->tiers = *tiers;
    srv->started_wall_us = mclock_wall_us();
    metrics_init(&srv->m_untiered);
    pthread_mutex_init(&srv->drain_mutex, NULL);
    mclock_cond_init(&srv->drained);
    uint32_t rnd = 0;
    if (getrandom(&rnd, sizeof(rnd), 0) != sizeof(rnd))
        rnd = (uint32_t)mclock_wall_us();
    snprintf(srv->instance_id, sizeof(srv->instance_id), "%08x", rnd);

    char why[200];
    int rc = params_parse_cidrs(srv->cfg.trusted_proxies, srv->proxies, PARAMS_CIDRS_MAX,
                                &srv->nproxies, why, sizeof(why));
    if (rc) {
        log_error("config", "TRUSTED_PROXIES: %s", why);
        goto fail;
    }
    rc = health_start(srv->cfg.database_url, srv->cfg.health_interval, &srv->health);
    if (rc)
        goto fail;
    srv->ntiers = tiers->count;
    for (size_t i = 0; i < tiers->count; i++) {
        rc = server_tier_start(srv, i, &tiers->tiers[i]);
        if (rc)
            goto fail;
    }
    server_log_config(srv);
    server_check_budget(srv);

    char err[300];
    if (srv->cfg.auth_mode == CONFIG_AUTH_APIKEY) {
        rc = auth_start(srv->cfg.database_url, srv->cfg.auth_cache_ttl, &srv->auth, err,
                        sizeof(err));
        if (rc) {
            log_error("auth_start", "%s", err);
            goto fail;
        }
    }
    if (srv->cfg.rl_backend == CONFIG_BACKEND_REDIS) {
        rc = rlredis_create(srv->cfg.redis_url, srv->cfg.redis_timeout, &srv->redis, err,
                            sizeof(err));
        if (rc) {
            log_error("config", "%s", err);
            goto fail;
        }
    }
    srv->history = history_create(srv);
    rc = janitor_start(srv, &srv->janitor);
    if (rc)
        goto fail;
    rc = http_start(srv, &srv->http);
    if (rc)
        goto fail;
    return 0;
fail:
    server_teardown(srv);
    return rc;
}

struct tier_rt *server_tier(struct server *srv, const char *name)
{
    for (size_t i = 0; i < srv->ntiers; i++)
        if (!strcmp(tier_cfg(srv->tier[i])->name, name))
            return srv->tier[i];
    return NULL;
}

void server_request_done(struct server *srv)
{
    int left = atomic_fetch_sub_explicit(&srv->in_flight, 1, memory_order_acq_rel) - 1;
    if (left == 0 && atomic_load_explicit(&srv->draining, memory_order_acquire)) {
        pthread_mutex_lock(&srv->drain_mutex);
        pthread_cond_broadcast(&srv->drained);
        pthread_mutex_unlock(&srv->drain_mutex);
    }
}

int server_reload(struct server *srv)
{
    if (!srv->cfg.tiers_file[0]) {
        log_warn("reload", "SIGHUP: no TIERS_FILE set, nothing to reload");
        return -EINVAL;
    }
    struct tier_table next;
    char err[400];
    if (tiers_load_file(srv->cfg.tiers_file, &next, err, sizeof(err))) {
        log_error("reload", "SIGHUP: %s; keeping the current settings", err);
        return -EINVAL;
    }
    if (next.count != srv->ntiers) {
        log_error("reload", "SIGHUP: tiers cannot be added or removed live (restart for that); "
                            "keeping the current settings");
        return -EINVAL;
    }
    for (size_t i = 0; i < next.count; i++) {
        if (!server_tier(srv, next.tiers[i].name)) {
            log_error("reload", "SIGHUP: tier %s is new; tiers cannot be added or removed live",
                      next.tiers[i].name);
            return -EINVAL;
        }
    }
    for (size_t i = 0; i < next.count; i++) {
        const struct tier_cfg *nc = &next.tiers[i];
        struct tier_rt *t = server_tier(srv, nc->name);
        if (!t)
            continue; /* checked above; keeps the compiler's null analysis happy */
        const struct tier_cfg *old = tier_cfg(t);
        struct tier_cfg *c = xmalloc(sizeof(*c));
        *c = *nc;
        struct workpool_limits lim = server_pool_limits(c);
        if (workpool_set_limits(t->pool, &lim))
            log_error("reload", "tier %s: could not start every new worker thread", c->name);
        dbpool_set_limits(t->db, (size_t)c->db_max, tiers_conn_policy(c));
        ratelimit_set(t->rl, c->rate_limit, c->rate_window_s);
        struct breaker_cfg ob = server_breaker_cfg(old), nb = server_breaker_cfg(c);
        if (memcmp(&ob, &nb, sizeof(ob)) != 0)
            breaker_configure(t->breaker, &nb);
        atomic_store_explicit(&t->cfg, c, memory_order_release);
        /* Readers may still hold the old copy: keep it until exit. */
        struct server_cfg_old *o = xmalloc(sizeof(*o));
        o->cfg = (struct tier_cfg *)old;
        o->next = srv->old_cfgs;
        srv->old_cfgs = o;
    }
    srv->tiers = next;
    log_info("reload", "SIGHUP: tier settings reloaded from %s", srv->cfg.tiers_file);
    server_log_config(srv);
    server_check_budget(srv); /* a larger db_max may no longer fit the database */
    return 0;
}

void server_wait(struct server *srv)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGHUP);
    for (;;) {
        int sig = 0;
        if (sigwait(&set, &sig))
            continue;
        if (sig == SIGHUP) {
            server_reload(srv);
            continue;
        }
        log_info("shutdown", "%s received: finishing in-flight requests (up to %" PRId64 " ms)",
                 sig == SIGINT ? "SIGINT" : "SIGTERM", srv->cfg.shutdown_timeout);
        return;
    }
}

/* Wait until no request is in flight or the deadline passes. Returns requests left. */
static int server_drain(struct server *srv, int64_t deadline_us)
{
    pthread_mutex_lock(&srv->drain_mutex);
    int left;
    struct timespec ts = mclock_timespec(deadline_us);
    while ((left = atomic_load(&srv->in_flight)) > 0 && mclock_now_us() < deadline_us)
        pthread_cond_timedwait(&srv->drained, &srv->drain_mutex, &ts);
    pthread_mutex_unlock(&srv->drain_mutex);
    return left;
}

void server_stop(struct server *srv)
{
    int64_t start = mclock_now_us();
    atomic_store(&srv->draining, true);
    http_quiesce(srv->http);
    int left = server_drain(srv, start + srv->cfg.shutdown_timeout * 1000);
    if (left > 0)
        log_warn("shutdown",
                 "%d requests still running after %" PRId64 " ms; answering queued ones 503", left,
                 srv->cfg.shutdown_timeout);
    /* Stop the workers: queued requests are answered 503, running ones finish. */
    for (size_t i = 0; i < srv->ntiers; i++)
        if (srv->tier[i] && srv->tier[i]->pool)
            workpool_stop(srv->tier[i]->pool);
    /* Their replies still have to be sent before the HTTP threads go. */
    server_drain(srv, mclock_now_us() + 2000000);
    server_teardown(srv);
    log_info("shutdown", "stopped cleanly in %" PRId64 " ms", (mclock_now_us() - start) / 1000);
}
