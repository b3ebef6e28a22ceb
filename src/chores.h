/*
 * chores: the janitor's periodic work over the server's parts: queue timeouts and pool kicks,
 * idle and dead connections, the dashboard's samples, the rate limiters' and budgets' sweeps,
 * and the capacity controller's tick with the fleet exchange and fleet budgets around it.
 *
 * DESIGN: every chore runs on the janitor thread (janitor.h), one at a time, with the struct
 * server as its context. They reach the tiers through the tier set and each module's own
 * locked calls; server.fleet_seen, server.budget and server.sample are the janitor's alone.
 */
#ifndef BULKHEAD_CHORES_H
#define BULKHEAD_CHORES_H

#include "janitor.h"

#define CHORES_COUNT 5

struct server;

/* The chores of srv, for janitor_start. */
void chores_table(struct server *srv, struct janitor_chore out[CHORES_COUNT]);

#endif
