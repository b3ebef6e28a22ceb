/*
 * server: start-up, signal handling, live reload and graceful shutdown (see server.h).
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
#include "datapath.h"
#include "datareq.h"
#include "datastmt.h"
#include "auth.h"
#include "breaker.h"
#include "capctl.h"
#include "apierr.h"
#include "dbbudget.h"
#include "dbconn.h"
#include "dbpool.h"
#include "fleet.h"
#include "health.h"
#include "history.h"
#include "http.h"
#include "janitor.h"
#include "log.h"
#include "mclock.h"
#include "ratelimit.h"
#include "rlsync.h"
#include "tarpit.h"
#include "tenantdb.h"
#include "tenantstat.h"
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

static bool server_others_active(const void *ctx)
{
    return workpool_others_active(ctx);
}

/* The session's statement_timeout for tier c's connections: a server-side backstop a little
 * past the call timeout, so a statement whose cancel got lost still ends. */
static int64_t server_statement_backstop_ms(const struct tier_cfg *c)
{
    return c->breaker_timeout_ms + 1000;
}

/* c as this instance's pools see it: with budget_scope "fleet", workers and db_max are the
 * fleet's totals and the pools get this instance's share (lease, or the minimum share without
 * one); else c itself. */
static struct tier_cfg server_tier_share(const struct tier_cfg *c, const struct fleet_lease *l)
{
    struct tier_cfg s = *c;
    if (c->budget_scope != TIERS_SCOPE_FLEET)
        return s;
    s.workers = tiers_min_share(c->workers, c->budget_min_pct);
    s.db_max = tiers_min_share(c->db_max, c->budget_min_pct);
    if (l && l->workers > s.workers)
        s.workers = l->workers < c->workers ? l->workers : c->workers;
    if (l && l->conns > s.db_max)
        s.db_max = l->conns < c->db_max ? l->conns : c->db_max;
    return s;
}

/* Create tier t's parts from its first settings: c_total as configured, its pools at this
 * instance's share (a fleet-scoped tier starts at its minimum, before it has seen the fleet). */
static int server_tier_start(struct server *srv, struct tier_rt *t, const struct tier_cfg *c_total)
{
    const struct tier_cfg share = server_tier_share(c_total, NULL), *c = &share;
    struct breaker_cfg bc = tierset_breaker_cfg(c);
    t->breaker = breaker_create(c->name, &bc);
    t->rl = ratelimit_create(c->rate_limit, c->rate_window_s, (size_t)srv->cfg.rl_max_keys);
    t->budget = dbbudget_create((size_t)srv->cfg.rl_max_keys);

    struct workpool_ops ops = datapath_ops_template;
    ops.ctx = &srv->api.data;
    struct workpool_limits lim = tierset_pool_limits(c);
    int rc = workpool_create(c->name, &lim, &ops, &t->pool);
    if (rc) {
        log_error("tier_start", "tier %s: cannot start %" PRId64 " worker threads: %s", c->name,
                  c->workers, strerror(-rc));
        return rc;
    }
    struct dbpool_opts po = {
        .conn = {.conninfo = srv->cfg.database_url,
                 .appname = t->appname,
                 .statement_timeout_ms = server_statement_backstop_ms(c),
                 .setup_sql = datastmt_session_sql,
                 .stmts = datastmt_statements,
                 .nstmts = datastmt_statement_count},
        .max = (size_t)c->db_max,
        .share = tiers_conn_policy(c),
        .others_active = server_others_active,
        .brief = workpool_tenant_brief,
        .connect_timeout_us = c->breaker_timeout_ms * 1000,
        .others_ctx = t->pool,
    };
    return dbpool_create(&po, &t->db);
}

/* What tier c's settings mean for the capacity controller. */
static struct capctl_tier_cfg server_capacity_cfg(const struct tier_cfg *c)
{
    return (struct capctl_tier_cfg){.priority = c->priority,
                                    .max = (double)c->db_max,
                                    .floor =
                                        (double)c->db_max * (double)c->capacity_floor_pct / 100.0,
                                    .tolerance = (double)c->capacity_tolerance_pct / 100.0,
                                    .margin_us = c->capacity_margin_us,
                                    .objective_us = tiers_latency_objective_ms(c) * 1000};
}

/* Tier t's pools and controller at share (server_tier_share): workers, connections, queue and
 * fairness shares. Grows at once; a shrink retires threads and closes connections as they are
 * returned (workpool_set_limits, dbpool_set_limits). Main thread (reload) or janitor (a new
 * fleet share). */
static void server_tier_limits(struct server *srv, struct tier_rt *t, const struct tier_cfg *share)
{
    struct capctl_tier_cfg tc = server_capacity_cfg(share);
    capctl_configure(srv->capacity, t->index, &tc);
    struct workpool_limits lim = tierset_pool_limits(share);
    if (workpool_set_limits(t->pool, &lim))
        log_error("tier_limits", "tier %s: could not start every new worker thread", t->name);
    dbpool_set_limits(t->db, (size_t)share->db_max, tiers_conn_policy(share),
                      share->breaker_timeout_ms * 1000, server_statement_backstop_ms(share));
}

/* Free tier t's parts (any of them may be missing after a failed start). */
static void server_tier_free(struct tier_rt *t)
{
    workpool_destroy(t->pool);
    dbpool_destroy(t->db);
    ratelimit_destroy(t->rl);
    dbbudget_destroy(t->budget);
    breaker_destroy(t->breaker);
    t->pool = NULL;
    t->db = NULL;
    t->rl = NULL;
    t->budget = NULL;
    t->breaker = NULL;
}

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
        server_tier_free(tierset_tier(srv->tiers, i));
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

/* ---- request hooks (HTTP threads) -------------------------------------------------------- */

static void server_request_begin(void *ctx)
{
    struct server *srv = ctx;
    atomic_fetch_add_explicit(&srv->in_flight, 1, memory_order_relaxed);
}

/* Why r was refused, for the accounting (TENANTSTAT_NONE: it was not). */
static enum tenantstat_reason server_refusal(const struct request *r)
{
    switch (r->error ? (enum apierr)(r->error - 1) : APIERR_COUNT) {
    case APIERR_RATE_LIMITED:
        return TENANTSTAT_RATE_LIMITED;
    case APIERR_DB_TIME_EXHAUSTED:
        return TENANTSTAT_DB_TIME_EXHAUSTED;
    case APIERR_SHED:
        return TENANTSTAT_SHED;
    case APIERR_BULKHEAD_FULL:
        return TENANTSTAT_BULKHEAD_FULL;
    case APIERR_QUEUE_TIMEOUT:
        return TENANTSTAT_QUEUE_TIMEOUT;
    case APIERR_POOL_TIMEOUT:
        return TENANTSTAT_POOL_TIMEOUT;
    case APIERR_CIRCUIT_OPEN:
        return TENANTSTAT_CIRCUIT_OPEN;
    default:
        return TENANTSTAT_NONE;
    }
}

/*
 * HTTP thread, as an /api/data request of a known tenant ends: charge its statement's database
 * time to its budget (dbbudget.h; in shadow mode too, so that what it would refuse is counted)
 * and count it (tenantstat.h). The time charged is the time its statement held a connection,
 * known only now: a tenant over its budget is in debt from here on.
 */
static void server_tenant_done(struct server *srv, const struct request *r, const struct datareq *q,
                               int64_t now)
{
    struct tier_rt *t = q->tier;
    int64_t db_us = r->query_us > 0 ? r->query_us : 0;
    if (db_us && q->budget.limit_ms > 0) /* the budget checked at admission (admission.c) */
        (void)dbbudget_charge(t->budget, q->tenant, q->budget.limit_ms, db_us, now);
    if (!srv->tenants)
        return;
    int64_t begun = q->item.begun_us;
    struct tenantstat_sample s = {
        .db_us = db_us,
        .queue_us = r->queue_us > 0 ? r->queue_us : 0,
        .pool_us = q->sent_us > begun && begun > 0 && r->query_us >= 0 ? q->sent_us - begun : 0,
        .refused = server_refusal(r),
        .shadow = q->shadow};
    tenantstat_record(srv->tenants, t->index, q->tenant, &s, now);
}

static void server_request_done(void *ctx, const struct request *r, int64_t total_us)
{
    struct server *srv = ctx;
    const struct datareq *q = datareq_of(r); /* NULL but for /api/data */
    struct tier_rt *tier = q ? q->tier : NULL;
    struct metrics_tier *m = tier ? &tier->m : &srv->m_untiered;
    metrics_observe(m, r->outcome, (int)r->status, total_us, r->queue_us, r->query_us);
    if (tier && q->tenant[0])
        server_tenant_done(srv, r, q, mclock_now_us());
    if (q && q->cap_entered_us) {
        int64_t now = mclock_now_us();
        capctl_leave(srv->capacity, tier->index, q->cap_entered_us, now);
        if (r->outcome == OUTCOME_OK) /* its latency, not the time it waited for its turn */
            capctl_observe(srv->capacity, tier->index, total_us - q->held_us, now);
    }
}

/* The last one out wakes a shutdown waiting for it. */
static void server_request_freed(void *ctx)
{
    struct server *srv = ctx;
    int left = atomic_fetch_sub_explicit(&srv->in_flight, 1, memory_order_acq_rel) - 1;
    if (left == 0 && atomic_load_explicit(&srv->draining, memory_order_acquire)) {
        pthread_mutex_lock(&srv->drain_mutex);
        pthread_cond_broadcast(&srv->drained);
        pthread_mutex_unlock(&srv->drain_mutex);
    }
}

static bool server_dispatch(void *ctx, struct request *r)
{
    return api_dispatch(ctx, r);
}

static bool server_dispatch_ops(void *ctx, struct request *r)
{
    return api_dispatch_ops(ctx, r);
}

/* ---- janitor chores ---------------------------------------------------------------------- */

#define SERVER_QUEUE_CHECK_US 50000   /* queue timeouts are answered within this */
#define SERVER_SWEEP_US       5000000 /* expired rate-limit keys are dropped this often */
#define SERVER_IDLE_CHECK_US  1000000 /* dead or long-idle connections are closed this often */

/* Answer requests that waited past their tier's queue timeout; let connection waiters
 * re-check their tenant's share (the set of active tenants may have changed). */
static void server_chore_queues(void *ctx, int64_t now)
{
    struct server *srv = ctx;
    for (size_t i = 0; i < tierset_count(srv->tiers); i++) {
        struct tier_rt *t = tierset_tier(srv->tiers, i);
        workpool_expire(t->pool, now - tierset_cfg(t)->queue_timeout_ms * 1000, now);
        dbpool_kick(t->db);
    }
    admin_expire(srv->admin, now);
}

/* Close the pool connections the database closed or killed while idle, and those idle past
 * their tier's db_idle_timeout_ms, without waiting for a request to find them. */
static void server_chore_idle_conns(void *ctx, int64_t now)
{
    struct server *srv = ctx;
    for (size_t i = 0; i < tierset_count(srv->tiers); i++) {
        struct tier_rt *t = tierset_tier(srv->tiers, i);
        size_t dead = dbpool_reap_idle(t->db, now, tierset_cfg(t)->db_idle_timeout_ms * 1000);
        if (dead)
            log_warn("db_idle",
                     "tier %s: %zu idle connections were killed or closed by the database; "
                     "closed, reopened on demand",
                     t->name, dead);
    }
}

static void server_chore_sample(void *ctx, int64_t now)
{
    (void)now;
    struct server *srv = ctx;
    report_read(&srv->sources, srv->sample);
    history_record(srv->history, srv->sample);
}

/* The fleet's view of each tier, for the controller's next verdict (local control without it). */
static void server_fleet_in(struct server *srv, const char *const *names, size_t n)
{
    struct fleet_sum sum[TIERS_MAX];
    bool live = fleet_view(srv->fleet, names, n, sum);
    struct fleet_stats st;
    fleet_stats(srv->fleet, &st);
    bool fresh = st.exchanges != srv->fleet_seen;
    srv->fleet_seen = st.exchanges;
    for (size_t i = 0; i < n; i++) {
        const struct capctl_remote r = {.active = sum[i].active > 0,
                                        .threatened = sum[i].threatened > 0,
                                        .pressing = sum[i].pressing > 0,
                                        .fresh = fresh,
                                        .pressure = sum[i].pressure};
        capctl_remote(srv->capacity, i, live ? &r : NULL);
    }
}

/* A fleet-scoped tier's totals, demand and what its pools hold, for the next exchange. */
static void server_fleet_budget_out(struct server *srv, size_t i, struct fleet_tier *out)
{
    struct tier_rt *t = tierset_tier(srv->tiers, i);
    const struct tier_cfg *c = tierset_cfg(t);
    if (c->budget_scope != TIERS_SCOPE_FLEET)
        return;
    struct workpool_stats ws;
    struct dbpool_stats ds;
    workpool_stats(t->pool, &ws);
    dbpool_stats(t->db, &ds);
    size_t open = ds.active + ds.idle + ds.opening;
    out->budget_workers = c->workers;
    out->budget_conns = c->db_max;
    out->min_workers = tiers_min_share(c->workers, c->budget_min_pct);
    out->min_conns = tiers_min_share(c->db_max, c->budget_min_pct);
    out->demand = (int64_t)(ws.busy + ws.queued);
    /* A shrink takes effect as work is returned: until then the pools hold more. */
    out->held_workers = (int64_t)(ws.busy > ws.threads ? ws.busy : ws.threads);
    out->held_conns = (int64_t)(open > ds.max ? open : ds.max);
}

/* This instance's tiers as the controller left them, for the others. */
static void server_fleet_out(struct server *srv, const char *const *names, size_t n, int64_t now)
{
    struct fleet_tier out[TIERS_MAX];
    for (size_t i = 0; i < n; i++) {
        struct capctl_tier_stats cs;
        capctl_stats(srv->capacity, i, &cs);
        /* A threat is published if any verdict since the last exchange found one: threats
         * under a storm come and go within an interval or two, and an exchange that sampled
         * only the current verdict would miss most of them. */
        bool threat = cs.threatened || (cs.last_threat_us > 0 &&
                                        now - cs.last_threat_us <= srv->cfg.fleet_interval * 1000);
        out[i] = (struct fleet_tier){.active = cs.active,
                                     .threatened = threat,
                                     .pressing = cs.pressing,
                                     .pressure = threat ? cs.threat_pressure : 0,
                                     .usage = cs.usage,
                                     .in_progress = cs.in_progress,
                                     .shed = cs.shed};
        snprintf(out[i].name, sizeof(out[i].name), "%s", names[i]);
        server_fleet_budget_out(srv, i, &out[i]);
    }
    fleet_publish(srv->fleet, out, n);
}

/* A fleet-scoped tier's share in force, applied to its pools when it or the settings changed
 * (after a reload, server_tier_apply applied it already; applying it again changes nothing). */
static void server_budgets_apply(struct server *srv, const char *const *names, size_t n)
{
    struct fleet_lease l[TIERS_MAX];
    fleet_leases(srv->fleet, names, n, l);
    const struct tier_table *tab = tierset_snapshot(srv->tiers);
    for (size_t i = 0; i < n; i++) {
        const struct tier_cfg *c = &tab->tiers[i];
        if (c->budget_scope != TIERS_SCOPE_FLEET)
            continue;
        struct tier_cfg share = server_tier_share(c, &l[i]);
        struct server_budget *a = &srv->budget[i];
        if (a->from == tab && a->workers == share.workers && a->conns == share.db_max)
            continue;
        server_tier_limits(srv, tierset_tier(srv->tiers, i), &share);
        *a = (struct server_budget){.from = tab, .workers = share.workers, .conns = share.db_max};
    }
}

static void server_chore_capacity(void *ctx, int64_t now)
{
    struct server *srv = ctx;
    const char *names[TIERS_MAX];
    size_t n = tierset_count(srv->tiers);
    for (size_t i = 0; i < n; i++)
        names[i] = tierset_tier(srv->tiers, i)->name;
    if (srv->fleet) {
        server_fleet_in(srv, names, n);
        server_budgets_apply(srv, names, n);
    }
    capctl_tick(srv->capacity, now, names);
    if (srv->fleet)
        server_fleet_out(srv, names, n, now);
}

static void server_chore_sweep(void *ctx, int64_t now)
{
    struct server *srv = ctx;
    for (size_t i = 0; i < tierset_count(srv->tiers); i++) {
        ratelimit_sweep(tierset_tier(srv->tiers, i)->rl, now);
        dbbudget_sweep(tierset_tier(srv->tiers, i)->budget, now);
    }
    if (srv->tarpit)
        tarpit_sweep(srv->tarpit, now);
}

/* ---- start ------------------------------------------------------------------------------- */

/* What every module is handed; filled before any thread that uses it starts. */
static void server_wire(struct server *srv)
{
    struct http_settings http_set = config_http_settings(&srv->cfg);
    srv->hooks = (struct request_hooks){.instance_id = srv->instance_id,
                                        .begin = server_request_begin,
                                        .done = server_request_done,
                                        .freed = server_request_freed,
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
        rc = server_tier_start(srv, tierset_tier(srv->tiers, i), &tiers->tiers[i]);
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
        struct tier_cfg share = server_tier_share(&tiers->tiers[i], NULL);
        struct capctl_tier_cfg tc = server_capacity_cfg(&share);
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
    const struct janitor_chore chores[] = {
        {SERVER_QUEUE_CHECK_US, server_chore_queues, srv},
        {HISTORY_INTERVAL_MS * 1000, server_chore_sample, srv},
        {SERVER_SWEEP_US, server_chore_sweep, srv},
        {SERVER_IDLE_CHECK_US, server_chore_idle_conns, srv},
        {srv->cfg.capacity_interval * 1000, server_chore_capacity, srv},
    };
    int rc = janitor_start(chores, sizeof(chores) / sizeof(chores[0]), &srv->janitor);
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
                           .loop_lag = srv->loop_lag};
    rc = http_start(&ho, &srv->http);
    if (rc || !srv->cfg.ops_port)
        return rc;
    ho.name = "ops";
    ho.port = srv->cfg.ops_port;
    ho.threads = 1;
    ho.dispatch = server_dispatch_ops;
    ho.loop_lag = NULL; /* the ops listener's one thread is not an API loop */
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

/* Hand tier t's new settings c to its parts (they change live). */
static void server_tier_apply(struct server *srv, struct tier_rt *t, const struct tier_cfg *old,
                              const struct tier_cfg *c)
{
    struct fleet_lease l = {0};
    if (srv->fleet)
        fleet_leases(srv->fleet, (const char *const[]){t->name}, 1, &l);
    struct tier_cfg share = server_tier_share(c, &l);
    server_tier_limits(srv, t, &share);
    ratelimit_set(t->rl, c->rate_limit, c->rate_window_s);
    struct breaker_cfg ob = tierset_breaker_cfg(old), nb = tierset_breaker_cfg(c);
    if (memcmp(&ob, &nb, sizeof(ob)) != 0)
        breaker_configure(t->breaker, &nb);
}

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
        server_tier_apply(srv, tierset_tier(srv->tiers, i), &old->tiers[i], &next.tiers[i]);
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
    http_quiesce(srv->ops);
    /* Held refusals are answered now rather than at their time: nobody waits on a tarpit. */
    tarpit_stop(srv->tarpit);
    int left = server_drain(srv, start + srv->cfg.shutdown_timeout * 1000);
    if (left > 0)
        log_warn("shutdown",
                 "%d requests still running after %" PRId64 " ms; answering queued ones 503", left,
                 srv->cfg.shutdown_timeout);
    /* The admin worker's wait on the database ends now (503); the tiers' workers answer their
     * queued requests 503 and finish the calls they are in, each by its deadline. */
    admin_stop(srv->admin);
    for (size_t i = 0; i < tierset_count(srv->tiers); i++)
        workpool_stop(tierset_tier(srv->tiers, i)->pool);
    /* Their replies still have to be sent before the HTTP threads go. */
    server_drain(srv, mclock_now_us() + SERVER_REPLY_GRACE_US);
    server_teardown(srv);
    log_info("shutdown", "stopped cleanly in %" PRId64 " ms", (mclock_now_us() - start) / 1000);
}
