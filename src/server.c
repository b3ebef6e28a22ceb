/*
 * server: start-up, signal handling, live reload and graceful shutdown (see server.h); a tier's
 * parts are built by tierparts.c, the request hooks are reqhooks.c, the janitor's chores
 * chores.c.
 *
 * Start order: health probe, tiers (breaker, limiter, workers, pool) and the capacity controller,
 * API keys (after bringing the tenants schema up to date), Redis limiter, tarpit, admin worker,
 * history, janitor, and the HTTP listener last, so no request arrives before its path exists.
 * Every start-up check on the database is bounded (dbconn.h, tenantdb.h): a silent database
 * fails the start rather than hanging it.
 *
 * Shutdown is the reverse, after in-flight requests have had SHUTDOWN_TIMEOUT_MS to finish.
 * Then the admin worker's wait on the database is ended (its request is answered 503), the
 * tiers' workers finish the calls they are in (each at its deadline at most: breaker_timeout_ms
 * and a cancel's grace), replies get SERVER_REPLY_GRACE_US to leave, and the threads with a
 * connection of their own (key refresher, health prober) are stopped at once, whatever the
 * database does: SIGTERM ends within SHUTDOWN_TIMEOUT_MS + SERVER_REPLY_GRACE_US and a few
 * milliseconds unless a tier request is still in a database call.
 */
#include "server.h"
#include "admin.h"
#include "api.h"
#include "admission.h"
#include "auth.h"
#include "capctl.h"
#include "chores.h"
#include "dbconn.h"
#include "dbpool.h"
#include "fleet.h"
#include "health.h"
#include "history.h"
#include "http.h"
#include "janitor.h"
#include "log.h"
#include "mclock.h"
#include "reqhooks.h"
#include "rlsync.h"
#include "tarpit.h"
#include "tenantdb.h"
#include "tenantstat.h"
#include "tierparts.h"
#include "tierset.h"
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

#define SERVER_CHECK_TIMEOUT_MS 5000    /* a start-up (or SIGHUP) check's connect and query */
#define SERVER_REPLY_GRACE_US   1000000 /* after the workers stop, for their replies to leave */

/* Warn when the pools could need more connections than the database allows: this instance's
 * own (the probe, the key cache, the admin worker, every tier of budget_scope "instance"), and
 * the fleet-scoped tiers' db_max once for the whole fleet. */
static void server_check_budget(struct server *srv)
{
    int64_t need = 1, fleet = 0; /* the health probe */
    if (srv->cfg.auth_mode == CONFIG_AUTH_APIKEY)
        need++;
    if (srv->cfg.admin_token[0])
        need++; /* the admin worker */
    const struct tier_table *tiers = tierset_snapshot(srv->tiers);
    for (size_t i = 0; i < tiers->count; i++) {
        if (tiers->tiers[i].budget_scope == TIERS_SCOPE_FLEET)
            fleet += tiers->tiers[i].db_max;
        else
            need += tiers->tiers[i].db_max;
    }
    const struct dbconn_params p = {.conninfo = srv->cfg.database_url,
                                    .appname = "bulkhead-startup",
                                    .statement_timeout_ms = SERVER_CHECK_TIMEOUT_MS};
    struct dbconn *db = NULL;
    PGresult *res = NULL;
    char err[300], fl[96] = "";
    if (fleet)
        snprintf(fl, sizeof(fl), " and %" PRId64 " for the fleet (budget_scope fleet)", fleet);
    int64_t deadline = mclock_now_us() + SERVER_CHECK_TIMEOUT_MS * 1000ll;
    int rc = dbconn_open(&p, deadline, &db, err, sizeof(err));
    if (!rc)
        rc = dbconn_query(db,
                          "SELECT current_setting('max_connections')::int - "
                          "current_setting('superuser_reserved_connections')::int",
                          0, NULL, deadline, &res, err, sizeof(err));
    if (rc) {
        log_warn("db_budget",
                 "cannot check max_connections now (%s); this instance may open up to %" PRId64
                 " connections%s",
                 err, need, fl);
        dbconn_close(db);
        return;
    }
    if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1) {
        int64_t allowed = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
        if (need + fleet > allowed)
            log_warn("db_budget",
                     "this instance may open %" PRId64 " connections%s but the database allows "
                     "%" PRId64 " (max_connections - superuser_reserved_connections): raise "
                     "max_connections, lower the tiers' db_max, or put PgBouncer in front",
                     need + fleet, fl, allowed);
        else if (fleet)
            log_info("db_budget",
                     "connection budget: %" PRId64 " per instance%s of %" PRId64
                     " allowed; at most %" PRId64 " instances fit",
                     need, fl, allowed, (allowed - fleet) / need);
        else
            log_info("db_budget",
                     "connection budget: %" PRId64 " per instance of %" PRId64
                     " allowed; at most %" PRId64 " instances fit",
                     need, allowed, allowed / need);
    }
    PQclear(res);
    dbconn_close(db);
}

/* budget_scope "fleet" needs the fleet view: without it no instance could know the others'
 * shares. 0, or -EINVAL with the tier named in err. */
static int server_check_scopes(const struct server *srv, const struct tier_table *t, char *err,
                               size_t errlen)
{
    if (srv->cfg.fleet && srv->cfg.capacity_control)
        return 0;
    for (size_t i = 0; i < t->count; i++) {
        if (t->tiers[i].budget_scope == TIERS_SCOPE_FLEET) {
            snprintf(err, errlen,
                     "tiers.%s.budget_scope: \"fleet\" needs the fleet view (FLEET=true and "
                     "CAPACITY_CONTROL=true)",
                     t->tiers[i].name);
            return -EINVAL;
        }
    }
    return 0;
}

static void server_log_config(struct server *srv)
{
    const struct tier_table *tiers = tierset_snapshot(srv->tiers);
    for (size_t i = 0; i < tiers->count; i++) {
        const struct tier_cfg *c = &tiers->tiers[i];
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
             srv->cfg.rl_backend == CONFIG_BACKEND_REDIS ? "redis" : "memory", tiers->count);
}

/* Stop every tier's workers, then its pool (shutdown, or a failed start). */
static void server_stop_tiers(struct server *srv)
{
    size_t n = srv->tiers ? tierset_count(srv->tiers) : 0;
    for (size_t i = 0; i < n; i++)
        if (tierset_tier(srv->tiers, i)->pool)
            workpool_stop(tierset_tier(srv->tiers, i)->pool);
    for (size_t i = 0; i < n; i++)
        if (tierset_tier(srv->tiers, i)->db)
            dbpool_stop(tierset_tier(srv->tiers, i)->db);
}

/* Free whatever server_start created, in reverse order; safe on a partial start. */
static void server_teardown(struct server *srv)
{
    /* Requests waiting for the shared limiter's answer get their verdicts now, while the HTTP
     * threads can still finish them. */
    rlsync_stop(srv->redis);
    server_stop_tiers(srv);
    admin_stop(srv->admin);
    http_stop(srv->ops);
    http_stop(srv->http);
    janitor_stop(srv->janitor);
    fleet_stop(srv->fleet); /* after the janitor, which publishes to it */
    tarpit_destroy(srv->tarpit);
    capctl_destroy(srv->capacity);
    tenantstat_destroy(srv->tenants);
    history_destroy(srv->history);
    free(srv->sample);
    admin_destroy(srv->admin);
    auth_stop(srv->auth);
    rlsync_destroy(srv->redis);
    health_stop(srv->health);
    for (size_t i = 0; srv->tiers && i < tierset_count(srv->tiers); i++)
        tierparts_free(tierset_tier(srv->tiers, i));
    tierset_destroy(srv->tiers);
    pthread_cond_destroy(&srv->drained);
    pthread_mutex_destroy(&srv->drain_mutex);
    config_free(&srv->cfg);
    srv->tiers = NULL;
    srv->http = NULL;
    srv->ops = NULL;
    srv->janitor = NULL;
    srv->history = NULL;
    srv->tarpit = NULL;
    srv->capacity = NULL;
    srv->sample = NULL;
    srv->admin = NULL;
    srv->auth = NULL;
    srv->redis = NULL;
    srv->health = NULL;
}

static bool server_dispatch(void *ctx, struct request *r)
{
    return api_dispatch(ctx, r);
}

static bool server_dispatch_ops(void *ctx, struct request *r)
{
    return api_dispatch_ops(ctx, r);
}
/* ---- start ------------------------------------------------------------------------------- */

/* What every module is handed; filled before any thread that uses it starts. */
static void server_wire(struct server *srv)
{
    struct http_settings http_set = config_http_settings(&srv->cfg);
    srv->hooks = (struct request_hooks){.instance_id = srv->instance_id,
                                        .begin = reqhooks_begin,
                                        .done = reqhooks_done,
                                        .freed = reqhooks_freed,
                                        .ctx = srv};
    srv->sources = (struct report_sources){.tiers = srv->tiers,
                                           .untiered = &srv->m_untiered,
                                           .health = srv->health,
                                           .redis = srv->redis,
                                           .auth = srv->auth,
                                           .admin = srv->admin,
                                           .tarpit = srv->tarpit,
                                           .capacity = srv->capacity,
                                           .fleet = srv->fleet,
                                           .in_flight = &srv->in_flight,
                                           .draining = &srv->draining,
                                           .started_wall_us = srv->started_wall_us,
                                           .instance_id = srv->instance_id,
                                           .loop_lag = srv->loop_lag,
                                           .http = &srv->conns,
                                           .nloops = http_thread_count(&http_set)};
    srv->api = (struct api_deps){.tiers = srv->tiers,
                                 .metrics = &srv->sources,
                                 .history = srv->history,
                                 .health = srv->health,
                                 .draining = &srv->draining,
                                 .auth = srv->auth,
                                 .redis = srv->redis,
                                 .tarpit = srv->tarpit,
                                 .capacity = srv->capacity,
                                 .tenants = srv->tenants,
                                 .proxies = srv->proxies,
                                 .nproxies = srv->nproxies,
                                 .data = {.retry_reads = srv->cfg.retry_reads,
                                          .lane_depth = srv->cfg.pipeline_depth,
                                          .lane_join_us = srv->cfg.pipeline_join_ms * 1000},
                                 .admin = srv->admin,
                                 .test_params = srv->cfg.test_params == CONFIG_TEST_PARAMS_ON ||
                                                (srv->cfg.test_params == CONFIG_TEST_PARAMS_AUTO &&
                                                 srv->cfg.auth_mode == CONFIG_AUTH_HEADER),
                                 .ipv6_prefix = (unsigned)srv->cfg.client_ipv6_prefix,
                                 .ops_port = srv->cfg.ops_port != 0};
}

/* The tier set, every tier's parts, and the capacity controller over them. */
static int server_start_tiers(struct server *srv, const struct tier_table *tiers)
{
    int rc = tierset_create(tiers, &srv->tiers);
    for (size_t i = 0; rc == 0 && i < tiers->count; i++)
        rc = tierparts_start(srv, tierset_tier(srv->tiers, i), &tiers->tiers[i]);
    if (rc)
        return rc;
    /* A cut tier is back at its max within 1 s of the tiers above it ceasing to threaten
     * their objectives (README: Between tiers). */
    const struct capctl_cfg cc = {.enabled = srv->cfg.capacity_control,
                                  .active_us = 1000000,
                                  .level_us = srv->cfg.capacity_baseline * 1000000,
                                  .recovery_us = 1000000,
                                  .min_samples = 20,
                                  .decrease = 0.5};
    if (srv->cfg.tenant_accounting)
        srv->tenants = tenantstat_create(tiers->count);
    rc = capctl_create(&cc, tiers->count, &srv->capacity);
    for (size_t i = 0; rc == 0 && i < tiers->count; i++) {
        struct tier_cfg share = tierparts_share(&tiers->tiers[i], NULL);
        struct capctl_tier_cfg tc = tierparts_capacity_cfg(&share);
        capctl_configure(srv->capacity, i, &tc);
    }
    return rc;
}

/* The tenants schema, brought up to date before anything reads it. */
static int server_tenants_schema(struct server *srv)
{
    struct dbconn *db = NULL;
    char err[300];
    int rc =
        tenantdb_connect(srv->cfg.database_url, "bulkhead-startup", NULL, &db, err, sizeof(err));
    if (rc) {
        log_error("tenants_schema",
                  "AUTH_MODE=apikey: cannot bring the tenants schema up to date: %s (apply "
                  "init-db.sql as the database's owner)",
                  err);
        return rc;
    }
    dbconn_close(db);
    return 0;
}

/* API keys, the Redis limiter, the tarpit and the admin worker, when configured. */
static int server_start_backends(struct server *srv)
{
    char err[300];
    int rc = 0;
    if (srv->cfg.auth_mode == CONFIG_AUTH_APIKEY) {
        rc = server_tenants_schema(srv);
        if (rc)
            return rc;
        rc = auth_start(srv->cfg.database_url, srv->cfg.auth_cache_ttl, &srv->auth, err,
                        sizeof(err));
        if (rc) {
            log_error("auth_start", "%s", err);
            return rc;
        }
    }
    if (srv->cfg.admin_token[0]) {
        const struct admin_cfg ac = {.token = srv->cfg.admin_token,
                                     .conninfo = srv->cfg.database_url,
                                     .tiers = srv->tiers,
                                     .tenants = srv->tenants};
        rc = admin_create(&ac, &srv->admin);
        if (rc) {
            log_error("admin", "cannot start the admin worker: %s", strerror(-rc));
            return rc;
        }
    }
    if (srv->cfg.rl_backend == CONFIG_BACKEND_REDIS) {
        /* RATE_LIMIT_MAX_KEYS per tier, as the in-memory limiters have (any tier may hold
         * tenants with a limit of their own), in one table. */
        const struct rlsync_cfg rc_cfg = {.redis_url = srv->cfg.redis_url,
                                          .timeout_ms = srv->cfg.redis_timeout,
                                          .lease_pct = srv->cfg.rl_lease_pct,
                                          .sync_us = srv->cfg.rl_sync_ms * 1000,
                                          .max_keys = (size_t)srv->cfg.rl_max_keys *
                                                      tierset_count(srv->tiers)};
        rc = rlsync_create(&rc_cfg, &srv->redis, err, sizeof(err));
        if (rc) {
            log_error("config", "%s", err);
            return rc;
        }
    }
    if (srv->cfg.fleet && srv->cfg.capacity_control) {
        const int64_t every = srv->cfg.fleet_interval * 1000;
        const struct fleet_cfg fc = {.conninfo = srv->cfg.database_url,
                                     .instance_id = srv->instance_id,
                                     .interval_us = every,
                                     .ttl_us = every * 4 > 1000000 ? every * 4 : 1000000};
        rc = fleet_start(&fc, &srv->fleet);
        if (rc) {
            log_error("fleet", "cannot start the fleet exchange: %s", strerror(-rc));
            return rc;
        }
    }
    if (srv->cfg.tarpit) {
        const struct tarpit_cfg tc = {.max_clients = (size_t)srv->cfg.tarpit_max_clients,
                                      .max_held = (size_t)srv->cfg.tarpit_max_held,
                                      .max_hold_us = srv->cfg.tarpit_max_hold * 1000,
                                      .release = admission_release_held};
        rc = tarpit_create(&tc, &srv->tarpit);
        if (rc)
            log_error("tarpit", "cannot start the tarpit thread: %s", strerror(-rc));
    }
    return rc;
}

/* The threads that use everything else: janitor, then the HTTP listener, then the operators'
 * one (OPS_PORT: one event thread of its own, so a scrape never waits behind API traffic). */
static int server_start_threads(struct server *srv)
{
    struct janitor_chore chores[CHORES_COUNT];
    chores_table(srv, chores);
    int rc = janitor_start(chores, CHORES_COUNT, &srv->janitor);
    if (rc)
        return rc;
    struct http_opts ho = {.name = "http",
                           .set = config_http_settings(&srv->cfg),
                           .port = srv->cfg.api_port,
                           .hooks = &srv->hooks,
                           .draining = &srv->draining,
                           .drain_exempt = api_is_probe,
                           .dispatch = server_dispatch,
                           .ctx = &srv->api,
                           .loop_lag = srv->loop_lag,
                           .counters = &srv->conns};
    rc = http_start(&ho, &srv->http);
    if (rc || !srv->cfg.ops_port)
        return rc;
    ho.name = "ops";
    ho.port = srv->cfg.ops_port;
    ho.threads = 1;
    ho.dispatch = server_dispatch_ops;
    ho.loop_lag = NULL; /* the ops listener's one thread is not an API loop */
    ho.counters = NULL; /* nor are its connections the API's */
    return http_start(&ho, &srv->ops);
}

int server_start(struct server *srv, const struct config *cfg, const struct tier_table *tiers)
{
    memset(srv, 0, sizeof(*srv));
    srv->cfg = *cfg; /* takes ownership of cfg's strings */
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
    rc = server_check_scopes(srv, tiers, why, sizeof(why));
    if (rc) {
        log_error("config", "%s", why);
        goto fail;
    }
    rc = health_start(srv->cfg.database_url, srv->cfg.health_interval, &srv->health);
    if (rc)
        goto fail;
    rc = server_start_tiers(srv, tiers);
    if (rc)
        goto fail;
    server_log_config(srv);
    server_check_budget(srv);
    rc = server_start_backends(srv);
    if (rc)
        goto fail;
    srv->history = history_create(srv->tiers);
    srv->sample = xmalloc(sizeof(*srv->sample));
    server_wire(srv);
    rc = server_start_threads(srv);
    if (rc)
        goto fail;
    return 0;
fail:
    server_teardown(srv);
    return rc;
}

/* ---- reload (main thread) ------------------------------------------------------------------ */

int server_reload(struct server *srv)
{
    if (!srv->cfg.tiers_file[0]) {
        log_warn("reload", "SIGHUP: no TIERS_FILE set, nothing to reload");
        return -EINVAL;
    }
    struct tier_table loaded, next;
    char err[400];
    if (tiers_load_file(srv->cfg.tiers_file, &loaded, err, sizeof(err))) {
        log_error("reload", "SIGHUP: %s; keeping the current settings", err);
        return -EINVAL;
    }
    if (tierset_match(srv->tiers, &loaded, &next, err, sizeof(err)) ||
        server_check_scopes(srv, &next, err, sizeof(err))) {
        log_error("reload", "SIGHUP: %s; keeping the current settings", err);
        return -EINVAL;
    }
    const struct tier_table *old = tierset_snapshot(srv->tiers);
    for (size_t i = 0; i < next.count; i++)
        tierparts_apply(srv, tierset_tier(srv->tiers, i), &old->tiers[i], &next.tiers[i]);
    tierset_publish(srv->tiers, &next);
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

void server_stop(struct server *srv)
{
    int64_t start = mclock_now_us();
    atomic_store(&srv->draining, true);
    http_quiesce(srv->http);
    http_quiesce(srv->ops);
    /* Held refusals are answered now rather than at their time: nobody waits on a tarpit. */
    tarpit_stop(srv->tarpit);
    int left = reqhooks_drain(srv, start + srv->cfg.shutdown_timeout * 1000);
    if (left > 0)
        log_warn("shutdown",
                 "%d requests still running after %" PRId64 " ms; answering queued ones 503", left,
                 srv->cfg.shutdown_timeout);
    /* The janitor stops before the pools: it resizes them for fleet leases (a resize racing
     * workpool_stop was a ThreadSanitizer report in CI), and what it does for requests (queue
     * expiry) the pools' stop does now for every queued one. */
    janitor_stop(srv->janitor);
    srv->janitor = NULL;
    /* The admin worker's wait on the database ends now (503); the tiers' workers answer their
     * queued requests 503 and finish the calls they are in, each by its deadline. */
    admin_stop(srv->admin);
    for (size_t i = 0; i < tierset_count(srv->tiers); i++)
        workpool_stop(tierset_tier(srv->tiers, i)->pool);
    /* Their replies still have to be sent before the HTTP threads go. */
    reqhooks_drain(srv, mclock_now_us() + SERVER_REPLY_GRACE_US);
    server_teardown(srv);
    log_info("shutdown", "stopped cleanly in %" PRId64 " ms", (mclock_now_us() - start) / 1000);
}
