/*
 * tierset: the tiers at run time. Each tier's name and parts (worker pool, connection pool,
 * rate limiter, breaker, request counters) are fixed when the set is built; its settings can be
 * replaced whole on SIGHUP (server_reload).
 *
 * Readers take a snapshot: tierset_snapshot returns every tier's current settings as one
 * immutable table, consistent across tiers and valid until the set is destroyed, so a reader
 * never sees a freed or half-written setting, and a reload never waits for readers.
 *
 * DESIGN: names and parts are written before any other thread sees the set and never again, so
 * they are read without a lock (a lookup by name is lock-free). The settings are a pointer to
 * an immutable table, loaded with acquire by any thread and stored with release by the one
 * thread that reloads (the main thread), so publishers never race. A replaced table is kept
 * until tierset_destroy: a reader may still hold it, and reloads are rare (a table is ~3 KB),
 * so nothing is ever reclaimed under a reader.
 */
#ifndef BULKHEAD_TIERSET_H
#define BULKHEAD_TIERSET_H

#include "breaker.h"
#include "metrics.h"
#include "tiers.h"
#include "workpool.h"

#include <stdbool.h>
#include <stddef.h>

struct tierset;
struct dbpool;
struct ratelimit;

/* One tier at run time. Lives as long as its set. */
struct tier_rt {
    size_t index;                  /* position in the set (the tier file's order) */
    char name[TIERS_NAME_MAX + 1]; /* never changes */
    struct tierset *set;           /* the set it belongs to */
    char appname[64];              /* application_name of its connections: bulkhead-<name> */
    /* Parts: set and freed by whoever built the set (tierparts.c, or a test's fake set); NULL
     * until then. */
    struct workpool *pool;   /* logic bulkhead */
    struct dbpool *db;       /* database bulkhead */
    struct ratelimit *rl;    /* local limiter (also the Redis limiter's fallback) */
    struct breaker *breaker; /* circuit breaker */
    struct dbbudget *budget; /* database-time budgets of its tenants (dbbudget.h) */
    struct metrics_tier m;   /* requests this tier answered (atomics) */
};

/* What a tier's settings mean for its parts (server_start, a reload, a test's fake set). */
struct breaker_cfg tierset_breaker_cfg(const struct tier_cfg *c);
struct workpool_limits tierset_pool_limits(const struct tier_cfg *c);

/* A set with the names and first settings of tiers (1 to TIERS_MAX). 0 or -EINVAL. */
int tierset_create(const struct tier_table *tiers, struct tierset **out)
    __attribute__((warn_unused_result));
/* Frees the set and every settings table it published; not the parts. */
void tierset_destroy(struct tierset *ts);

size_t tierset_count(const struct tierset *ts);
/* The i-th tier, i < tierset_count. */
struct tier_rt *tierset_tier(struct tierset *ts, size_t i);
/* The tier named name, or NULL (lock-free). */
struct tier_rt *tierset_find(struct tierset *ts, const char *name);

/* Every tier's settings now, in set order (any thread). */
const struct tier_table *tierset_snapshot(const struct tierset *ts);
/* One tier's settings now: its row of the current snapshot (any thread). */
const struct tier_cfg *tierset_cfg(const struct tier_rt *t);

/* "free, pro, enterprise": the names in set order. */
void tierset_names(const struct tierset *ts, char *buf, size_t len);
/* The names as JSON members' value: ["free","pro","enterprise"]. */
void tierset_names_json(const struct tierset *ts, char *buf, size_t len);

/*
 * A reload's table in the set's order: 0 and *out when next has exactly the set's names;
 * -EINVAL with the reason in err when it adds or removes a tier (only settings change live).
 */
int tierset_match(const struct tierset *ts, const struct tier_table *next, struct tier_table *out,
                  char *err, size_t errlen) __attribute__((warn_unused_result));
/* Main thread: make table (from tierset_match) the current settings, atomically. */
void tierset_publish(struct tierset *ts, const struct tier_table *table);

#endif
