/*
 * tenantcli: `bulkhead tenant ...`, the tenant and API-key administration commands.
 *
 *   bulkhead tenant create NAME TIER   new tenant; prints its API key once
 *   bulkhead tenant list               every tenant, its tier, created and revoked times
 *   bulkhead tenant set-tier NAME TIER move a tenant to another tier
 *   bulkhead tenant revoke NAME        revoke the tenant's key (the tenant can no longer call)
 *   bulkhead tenant rotate NAME        new key for the tenant; the old one stops working
 *
 * They run against DATABASE_URL and notify running servers (LISTEN/NOTIFY), which apply the
 * change at once; AUTH_CACHE_TTL_MS bounds the delay if a notification is missed.
 */
#ifndef BULKHEAD_TENANTCLI_H
#define BULKHEAD_TENANTCLI_H

#include "config.h"
#include "tiers.h"

/* argv starts after "tenant". Returns the process exit status (0, 1 error, 2 usage). */
int tenantcli_main(const struct config *cfg, const struct tier_table *tiers, int argc, char **argv);

#endif
