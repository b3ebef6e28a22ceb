/*
 * tenantstat: who uses each tier, per tenant, over the last minute: the database time its
 * statements held a connection, its waits for a slot and for a connection, its requests, and
 * its refusals by reason (and what a limit in shadow mode would have refused). Bounded: each
 * tier holds TENANTSTAT_STRIPES * TENANTSTAT_STRIPE_KEYS tenants at most, whatever the number
 * of tenants; /metrics/tenants, the Prometheus top tenants and /admin/tenants/NAME/usage read it.
 *
 * Which tenants are kept: space-saving (Metwally et al.), on a cost weight of database time +
 * waits + 1 ms per request. A tenant not held takes the place of the held one of least weight
 * and inherits that weight as its possible overcount (`err`), so every tenant whose weight
 * exceeds a stripe's least is held; the figures shown are exact since the tenant was taken in
 * (exact outright when err is 0). The window slides: each stripe keeps the current minute and
 * the previous one, and a figure is cur + prev * (the part of the previous minute still within
 * the last 60 s), as a sliding-window counter does. Each tier's totals (all tenants, held or
 * not) are kept the same way, so the tenants not shown sum to total - shown ("other").
 *
 * DESIGN: a tier's tenants are spread over TENANTSTAT_STRIPES stripes by a keyed hash of the
 * tenant (htable.h), each stripe with its own mutex over its entries, its totals and its minute: a
 * record (the HTTP thread that ends a request, tenantstat_record) locks its tenant's stripe
 * alone, for a scan of at most TENANTSTAT_STRIPE_KEYS entries, so no lock is shared by all
 * event threads and two tenants contend only when they share a stripe. A reader locks the
 * stripes one after the other. Every call takes its clock.
 */
#ifndef BULKHEAD_TENANTSTAT_H
#define BULKHEAD_TENANTSTAT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define TENANTSTAT_STRIPES     16
#define TENANTSTAT_STRIPE_KEYS 32 /* so 512 tenants per tier */
#define TENANTSTAT_KEY_MAX     80
#define TENANTSTAT_WINDOW_US   60000000ll /* the last minute */
#define TENANTSTAT_TOP_MAX     100        /* limit= at most */

/* Why a request was refused (or would have been, in shadow mode). */
enum tenantstat_reason {
    TENANTSTAT_RATE_LIMITED,
    TENANTSTAT_DB_TIME_EXHAUSTED,
    TENANTSTAT_SHED,
    TENANTSTAT_BULKHEAD_FULL,
    TENANTSTAT_QUEUE_TIMEOUT,
    TENANTSTAT_POOL_TIMEOUT,
    TENANTSTAT_CIRCUIT_OPEN,
    TENANTSTAT_REASONS,
    TENANTSTAT_NONE = TENANTSTAT_REASONS /* served, or failed otherwise */
};

/* The figures of one tenant (or a tier, or "other") over the last minute. */
enum tenantstat_field {
    TENANTSTAT_DB_US,      /* time its statements held a connection */
    TENANTSTAT_QUEUE_US,   /* time waited for a slot of the tier */
    TENANTSTAT_POOL_US,    /* time waited for a connection */
    TENANTSTAT_REQUESTS,   /* requests that reached the tier (served or refused) */
    TENANTSTAT_REFUSED,    /* of which refused, any reason */
    TENANTSTAT_REFUSED_BY, /* by reason, then */
    TENANTSTAT_SHADOW_BY = TENANTSTAT_REFUSED_BY + TENANTSTAT_REASONS, /* would-be refusals */
    TENANTSTAT_WEIGHT = TENANTSTAT_SHADOW_BY + TENANTSTAT_REASONS,     /* the ranking weight */
    TENANTSTAT_FIELDS
};

struct tenantstat_counts {
    int64_t v[TENANTSTAT_FIELDS];
};

/* One request, as it ended. */
struct tenantstat_sample {
    int64_t db_us, queue_us, pool_us; /* 0 when it did not get there */
    enum tenantstat_reason refused;   /* TENANTSTAT_NONE unless refused */
    unsigned shadow;                  /* bit per reason a shadow limit would have refused */
};

struct tenantstat_row {
    char key[TENANTSTAT_KEY_MAX + 1]; /* the tenant key ("id:acme", "ip:10.0.0.1") */
    int64_t err;                      /* weight it may be overcounted by; 0: exact */
    struct tenantstat_counts c;       /* the last minute */
};

struct tenantstat;

/* Keeps ntiers tiers (indexes 0..ntiers-1). */
struct tenantstat *tenantstat_create(size_t ntiers);
void tenantstat_destroy(struct tenantstat *ts);

/* HTTP thread (any thread): count one request of key in tier at now. */
void tenantstat_record(struct tenantstat *ts, size_t tier, const char *key,
                       const struct tenantstat_sample *s, int64_t now_us);

/* The field by= names ("db_time", "queue_wait", "pool_wait", "requests", "refused"), or -1. */
int tenantstat_field_by_name(const char *name);
const char *tenantstat_reason_name(enum tenantstat_reason r);

/* The top `max` tenants of tier by field `by` at now, heaviest first, into out (ties by key);
 * returns how many. *total gets the tier's figures (every tenant), *held how many it holds. */
size_t tenantstat_top(struct tenantstat *ts, size_t tier, int by, size_t max, int64_t now_us,
                      struct tenantstat_row *out, struct tenantstat_counts *total, size_t *held);

/* One tenant's figures in tier at now: true when it is held. */
bool tenantstat_get(struct tenantstat *ts, size_t tier, const char *key, int64_t now_us,
                    struct tenantstat_row *out);

#endif
