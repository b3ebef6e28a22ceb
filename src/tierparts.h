/*
 * tierparts: a tier's parts (breaker, rate limiter, database-time budgets, worker pool,
 * connection pool) made from its settings, sized to this instance's share, reconfigured on
 * reload and freed. The server builds every tier through it at start (server_start); a reload
 * (tierparts_apply) and the janitor's fleet budgets (chores.c) resize the pools through
 * tierparts_limits.
 *
 * DESIGN: the parts hang on the tier (struct tier_rt, tierset.h) from start to exit.
 * tierparts_start and tierparts_free run on the main thread before the HTTP threads start or
 * after they stop; tierparts_apply on the main thread (SIGHUP); tierparts_limits on the main
 * thread or the janitor, through the pools' and the controller's own locked setters, so it
 * takes no lock of its own.
 */
#ifndef BULKHEAD_TIERPARTS_H
#define BULKHEAD_TIERPARTS_H

#include "capctl.h"
#include "fleet.h"
#include "tierset.h"
#include "tiers.h"

struct server;

/* c as this instance's pools see it: with budget_scope "fleet", workers and db_max are the
 * fleet's totals and the pools get this instance's share (lease l, or the minimum share
 * without one; l may be NULL); else c itself. */
struct tier_cfg tierparts_share(const struct tier_cfg *c, const struct fleet_lease *l);

/* What tier c's settings mean for the capacity controller. */
struct capctl_tier_cfg tierparts_capacity_cfg(const struct tier_cfg *c);

/* Create tier t's parts from its first settings c_total. 0 or a negative errno (logged); the
 * parts made so far stay on t for tierparts_free. */
int tierparts_start(struct server *srv, struct tier_rt *t, const struct tier_cfg *c_total)
    __attribute__((warn_unused_result));

/* Tier t's pools and controller at share (tierparts_share). Main thread or janitor. */
void tierparts_limits(struct server *srv, struct tier_rt *t, const struct tier_cfg *share);

/* Hand tier t's new settings c (old: those in force) to its parts. Main thread (reload). */
void tierparts_apply(struct server *srv, struct tier_rt *t, const struct tier_cfg *old,
                     const struct tier_cfg *c);

/* Free tier t's parts (any of them may be missing after a failed start). */
void tierparts_free(struct tier_rt *t);

#endif
