/*
 * tenantcli: `bulkhead tenant ...`, the tenant and API-key commands, for bootstrap (no admin
 * token yet) and for operators with database access:
 *
 *   bulkhead tenant create NAME TIER [--rate-limit N]   new tenant; prints its API key once
 *   bulkhead tenant list                                every tenant, tier, overrides, times
 *   bulkhead tenant show NAME                           one tenant
 *   bulkhead tenant set NAME [--tier T] [--rate-limit N|none]   change tier and overrides
 *   bulkhead tenant set-tier NAME TIER                  the same as set NAME --tier TIER
 *   bulkhead tenant rotate NAME                         new key; the old one stops working
 *   bulkhead tenant revoke NAME                         the tenant can no longer call
 *   bulkhead tenant audit [--tenant NAME] [--limit N]   the latest changes, newest first
 *
 * The admin API's implementation: the same checks and messages (tenantreq), the same
 * transactions, audit rows and notifications (tenantdb), against DATABASE_URL. Running servers
 * apply a change at once (LISTEN/NOTIFY), at the latest within AUTH_CACHE_TTL_MS. The audit
 * names the caller "cli:<user>", from "local".
 */
#ifndef BULKHEAD_TENANTCLI_H
#define BULKHEAD_TENANTCLI_H

#include "config.h"
#include "tiers.h"

/* argv starts after "tenant". Returns the process exit status (0, 1 error, 2 usage or a
 * refused argument). */
int tenantcli_main(const struct config *cfg, const struct tier_table *tiers, int argc, char **argv);

#endif
