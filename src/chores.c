/*
 * chores: the janitor's periodic work over the server's parts (see chores.h).
 */
#include "chores.h"
#include "admin.h"
#include "capctl.h"
#include "dbbudget.h"
#include "dbpool.h"
#include "fleet.h"
#include "history.h"
#include "log.h"
#include "ratelimit.h"
#include "report.h"
#include "server.h"
#include "tarpit.h"
#include "tierparts.h"
#include "tierset.h"
#include "workpool.h"

#include <stdio.h>
#include <string.h>

#define CHORES_QUEUE_CHECK_US 50000   /* queue timeouts are answered within this */
#define CHORES_SWEEP_US       5000000 /* expired rate-limit keys are dropped this often */
#define CHORES_IDLE_CHECK_US  1000000 /* dead or long-idle connections are closed this often */

/* Answer requests that waited past their tier's queue timeout; let connection waiters
 * re-check their tenant's share (the set of active tenants may have changed). */
static void chores_queues(void *ctx, int64_t now)
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
static void chores_idle_conns(void *ctx, int64_t now)
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

static void chores_sample(void *ctx, int64_t now)
{
    (void)now;
    struct server *srv = ctx;
    report_read(&srv->sources, srv->sample);
    history_record(srv->history, srv->sample);
}

/* The fleet's view of each tier, for the controller's next verdict (local control without it). */
static void chores_fleet_in(struct server *srv, const char *const *names, size_t n)
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
static void chores_fleet_budget_out(struct server *srv, size_t i, struct fleet_tier *out)
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
static void chores_fleet_out(struct server *srv, const char *const *names, size_t n, int64_t now)
{
    struct fleet_tier out[TIERS_MAX];
    for (size_t i = 0; i < n; i++) {
        struct capctl_tier_stats cs;
        capctl_stats(srv->capacity, i, &cs);
        /* A threat (one blamed on the tiers below: another instance's lower tiers cannot be
         * the cause of one this instance's clear requests share either) is published if any
         * verdict since the last exchange found one: threats
         * under a storm come and go within an interval or two, and an exchange that sampled
         * only the current verdict would miss most of them. */
        bool threat = cs.blamed || (cs.last_blame_us > 0 &&
                                    now - cs.last_blame_us <= srv->cfg.fleet_interval * 1000);
        out[i] = (struct fleet_tier){.active = cs.active,
                                     .threatened = threat,
                                     .pressing = cs.pressing,
                                     .pressure = threat ? cs.blame_pressure : 0,
                                     .usage = cs.usage,
                                     .in_progress = cs.in_progress,
                                     .shed = cs.shed};
        snprintf(out[i].name, sizeof(out[i].name), "%s", names[i]);
        chores_fleet_budget_out(srv, i, &out[i]);
    }
    fleet_publish(srv->fleet, out, n);
}

/* A fleet-scoped tier's share in force, applied to its pools when it or the settings changed
 * (after a reload, tierparts_apply applied it already; applying it again changes nothing). */
static void chores_budgets_apply(struct server *srv, const char *const *names, size_t n)
{
    struct fleet_lease l[TIERS_MAX];
    fleet_leases(srv->fleet, names, n, l);
    const struct tier_table *tab = tierset_snapshot(srv->tiers);
    for (size_t i = 0; i < n; i++) {
        const struct tier_cfg *c = &tab->tiers[i];
        if (c->budget_scope != TIERS_SCOPE_FLEET)
            continue;
        struct tier_cfg share = tierparts_share(c, &l[i]);
        struct server_budget *a = &srv->budget[i];
        if (a->from == tab && a->workers == share.workers && a->conns == share.db_max)
            continue;
        tierparts_limits(srv, tierset_tier(srv->tiers, i), &share);
        *a = (struct server_budget){.from = tab, .workers = share.workers, .conns = share.db_max};
    }
}

static void chores_capacity(void *ctx, int64_t now)
{
    struct server *srv = ctx;
    const char *names[TIERS_MAX];
    size_t n = tierset_count(srv->tiers);
    for (size_t i = 0; i < n; i++)
        names[i] = tierset_tier(srv->tiers, i)->name;
    if (srv->fleet) {
        chores_fleet_in(srv, names, n);
        chores_budgets_apply(srv, names, n);
    }
    capctl_tick(srv->capacity, now, names);
    if (srv->fleet)
        chores_fleet_out(srv, names, n, now);
}

static void chores_sweep(void *ctx, int64_t now)
{
    struct server *srv = ctx;
    for (size_t i = 0; i < tierset_count(srv->tiers); i++) {
        ratelimit_sweep(tierset_tier(srv->tiers, i)->rl, now);
        dbbudget_sweep(tierset_tier(srv->tiers, i)->budget, now);
    }
    if (srv->tarpit)
        tarpit_sweep(srv->tarpit, now);
}

void chores_table(struct server *srv, struct janitor_chore out[CHORES_COUNT])
{
    const struct janitor_chore chores[CHORES_COUNT] = {
        {CHORES_QUEUE_CHECK_US, chores_queues, srv},
        {HISTORY_INTERVAL_MS * 1000, chores_sample, srv},
        {CHORES_SWEEP_US, chores_sweep, srv},
        {CHORES_IDLE_CHECK_US, chores_idle_conns, srv},
        {srv->cfg.capacity_interval * 1000, chores_capacity, srv},
    };
    memcpy(out, chores, sizeof(chores));
}
