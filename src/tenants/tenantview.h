/*
 * tenantview: what the operator sees of tenantstat (per-tenant accounting) and of the
 * database-time budgets: GET /metrics/tenants (JSON), the top tenants' Prometheus series,
 * and GET /admin/tenants/NAME/usage. Renders only: the figures come from tenantstat.h and
 * dbbudget.h, read at the moment asked (any thread; they lock their own stripes and shards).
 *
 * Prometheus: per tier, the TENANTVIEW_PROM_TOP tenants of most database time get series of
 * their own, labelled {tier, tenant}; every other tenant is summed into tenant="other" (the
 * tier's total minus those shown), so a tier has at most TENANTVIEW_PROM_TOP + 1 series per
 * family, whatever the number of tenants.
 */
#ifndef BULKHEAD_TENANTVIEW_H
#define BULKHEAD_TENANTVIEW_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define TENANTVIEW_LIMIT_DEFAULT 10 /* /metrics/tenants's limit= unless given */
#define TENANTVIEW_PROM_TOP      10 /* tenants per tier with series of their own */

struct tenantstat;
struct tierset;

/* /metrics/tenants: tier (NULL: every tier), ranked by field `by` (tenantstat_field_by_name),
 * at most limit tenants per tier. The caller frees the text. */
char *tenantview_json(struct tenantstat *ts, struct tierset *tiers, const char *tier, int by,
                      size_t limit, int64_t now_us);

/* Append the bulkhead_tenant_* families to f. */
void tenantview_prometheus(FILE *f, struct tenantstat *ts, struct tierset *tiers, int64_t now_us);

/* /admin/tenants/NAME/usage: the tenant "id:NAME" in every tier that counted it in the last
 * minute, with its database-time budget where its tier has one. The caller frees the text. */
char *tenantview_usage_json(struct tenantstat *ts, struct tierset *tiers, const char *name,
                            int64_t now_us);

#endif
