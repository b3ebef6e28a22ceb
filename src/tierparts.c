/*
 * tierparts: a tier's parts built, resized and freed (see tierparts.h).
 */
#include "tierparts.h"
#include "breaker.h"
#include "capctl.h"
#include "datapath.h"
#include "datastmt.h"
#include "dbbudget.h"
#include "dbpool.h"
#include "log.h"
#include "ratelimit.h"
#include "server.h"
#include "workpool.h"

#include <inttypes.h>
#include <string.h>

static bool tierparts_others_active(const void *ctx)
{
    return workpool_others_active(ctx);
}

/* The session's statement_timeout for tier c's connections: a server-side backstop a little
 * past the call timeout, so a statement whose cancel got lost still ends. */
static int64_t tierparts_statement_backstop_ms(const struct tier_cfg *c)
{
    return c->breaker_timeout_ms + 1000;
}

/* c as this instance's pools see it: with budget_scope "fleet", workers and db_max are the
 * fleet's totals and the pools get this instance's share (lease, or the minimum share without
 * one); else c itself. */
struct tier_cfg tierparts_share(const struct tier_cfg *c, const struct fleet_lease *l)
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
int tierparts_start(struct server *srv, struct tier_rt *t, const struct tier_cfg *c_total)
{
    const struct tier_cfg share = tierparts_share(c_total, NULL), *c = &share;
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
                 .statement_timeout_ms = tierparts_statement_backstop_ms(c),
                 .setup_sql = datastmt_session_sql,
                 .stmts = datastmt_statements,
                 .nstmts = datastmt_statement_count},
        .max = (size_t)c->db_max,
        .share = tiers_conn_policy(c),
        .others_active = tierparts_others_active,
        .brief = workpool_tenant_brief,
        .connect_timeout_us = c->breaker_timeout_ms * 1000,
        .others_ctx = t->pool,
    };
    return dbpool_create(&po, &t->db);
}

/* What tier c's settings mean for the capacity controller. */
struct capctl_tier_cfg tierparts_capacity_cfg(const struct tier_cfg *c)
{
    return (struct capctl_tier_cfg){.priority = c->priority,
                                    .max = (double)c->db_max,
                                    .floor =
                                        (double)c->db_max * (double)c->capacity_floor_pct / 100.0,
                                    .tolerance = (double)c->capacity_tolerance_pct / 100.0,
                                    .margin_us = c->capacity_margin_us,
                                    .objective_us = tiers_latency_objective_ms(c) * 1000};
}

/* Tier t's pools and controller at share (tierparts_share): workers, connections, queue and
 * fairness shares. Grows at once; a shrink retires threads and closes connections as they are
 * returned (workpool_set_limits, dbpool_set_limits). Main thread (reload) or janitor (a new
 * fleet share). */
void tierparts_limits(struct server *srv, struct tier_rt *t, const struct tier_cfg *share)
{
    struct capctl_tier_cfg tc = tierparts_capacity_cfg(share);
    capctl_configure(srv->capacity, t->index, &tc);
    struct workpool_limits lim = tierset_pool_limits(share);
    if (workpool_set_limits(t->pool, &lim))
        log_error("tier_limits", "tier %s: could not start every new worker thread", t->name);
    dbpool_set_limits(t->db, (size_t)share->db_max, tiers_conn_policy(share),
                      share->breaker_timeout_ms * 1000, tierparts_statement_backstop_ms(share));
}

/* Free tier t's parts (any of them may be missing after a failed start). */
void tierparts_free(struct tier_rt *t)
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

/* Hand tier t's new settings c to its parts (they change live). */
void tierparts_apply(struct server *srv, struct tier_rt *t, const struct tier_cfg *old,
                     const struct tier_cfg *c)
{
    struct fleet_lease l = {0};
    if (srv->fleet)
        fleet_leases(srv->fleet, (const char *const[]){t->name}, 1, &l);
    struct tier_cfg share = tierparts_share(c, &l);
    tierparts_limits(srv, t, &share);
    ratelimit_set(t->rl, c->rate_limit, c->rate_window_s);
    struct breaker_cfg ob = tierset_breaker_cfg(old), nb = tierset_breaker_cfg(c);
    if (memcmp(&ob, &nb, sizeof(ob)) != 0)
        breaker_configure(t->breaker, &nb);
}
