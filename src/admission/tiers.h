/*
 * tiers: the tier table, the data that defines each compartment.
 *
 * A tier is a value: a name and a set of numbers (threads, queue, connections, rate limit,
 * breaker settings, fairness shares), and a few named choices stored as numbers (budget_scope:
 * "instance" or "fleet", written as text in the JSON). The built-in table is config/tiers.json,
 * compiled into the binary; TIERS_FILE replaces it. Every per-tier key is one row of a declarative
 * table in tiers.c, so adding a tier or changing a number needs no code change.
 */
#ifndef BULKHEAD_TIERS_H
#define BULKHEAD_TIERS_H

#include "share.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define TIERS_MAX      16 /* tiers in one table */
#define TIERS_NAME_MAX 32 /* bytes in a tier name, [a-z0-9_-] */

/* One tier's settings. Plain numbers: copied freely, never freed. */
struct tier_cfg {
    char name[TIERS_NAME_MAX + 1];
    int64_t workers;                /* worker threads (logic bulkhead) */
    int64_t queue_max;              /* requests waiting for a worker before 503 bulkhead_full */
    int64_t queue_timeout_ms;       /* longest wait in the queue before 503 queue_timeout */
    int64_t db_max;                 /* PostgreSQL connections at most (database bulkhead) */
    int64_t db_acquire_timeout_ms;  /* longest wait for a connection before 503 */
    int64_t db_idle_timeout_ms;     /* an idle connection is closed after this; 0 = never */
    int64_t rate_limit;             /* requests per window per tenant; 0 = unlimited */
    int64_t rate_window_s;          /* the window of rate_limit, in seconds */
    int64_t breaker_timeout_ms;     /* a call slower than this fails with 504 */
    int64_t breaker_error_pct;      /* failure rate in the window that opens the breaker */
    int64_t breaker_reset_ms;       /* time OPEN before a half-open trial */
    int64_t breaker_window_ms;      /* rolling window of the failure rate */
    int64_t breaker_buckets;        /* buckets in the rolling window */
    int64_t breaker_min_calls;      /* calls in the window before the rate can open it */
    int64_t breaker_trial_calls;    /* calls admitted while HALF_OPEN */
    int64_t tenant_share_pct;       /* most of the workers/connections one tenant may hold while
                                       other tenants of the tier wait */
    int64_t tenant_queue_pct;       /* most of the queue one tenant may fill */
    int64_t tenant_reserve_pct;     /* workers/connections kept for tenants holding none */
    int64_t brief_request_ms;       /* brief below this (fairq.h): one slot past the share */
    int64_t fair_queue_cost;        /* 1: the queue serves the least recent database time first
                                       (fairq.h); 0: round-robin */
    int64_t priority;               /* rank over the shared capacity; higher is served first */
    int64_t capacity_floor_pct;     /* least it is cut to, % of db_max in requests at once */
    int64_t capacity_tolerance_pct; /* its median's growth over its level (%) before lower
                                       tiers are cut */
    int64_t capacity_margin_us;     /* ... and (both must be passed) in microseconds */
    int64_t latency_objective_ms;   /* its p99 objective; 0: a tenth of breaker_timeout_ms */
    int64_t tenant_linger_ms;       /* a tenant counts as active this long after its last one */
    int64_t db_time_ms_per_min;     /* database time a tenant's statements may hold connections
                                       per minute (dbbudget.h); 0 = no budget */
    int64_t rate_limit_shadow;      /* 1: the rate limit refuses nothing, counts what it would */
    int64_t db_time_shadow;         /* 1: the database-time budget refuses nothing, the same */
    int64_t budget_scope;           /* TIERS_SCOPE_*: whom workers and db_max count */
    int64_t budget_min_pct;         /* fleet scope: an instance's least share, % of the totals */
};

/* budget_scope: what a tier's workers and db_max are totals of. */
enum {
    TIERS_SCOPE_INSTANCE = 0, /* each instance's (the seed's meaning) */
    TIERS_SCOPE_FLEET = 1,    /* the fleet's, split among the live instances (fleet.h) */
};

struct tier_table {
    size_t count;
    struct tier_cfg tiers[TIERS_MAX];
};

/*
 * Parse a JSON tier table: {"tier-name": {"key": number, ...}, ...}. The table replaces the
 * built-in one as a whole (tiers it leaves out do not exist), but a key left out of a tier named
 * like a built-in tier keeps that tier's built-in value; in a tier of a new name it takes its
 * default (see tiers_print_help), and keys without a default (rate_limit) must be stated.
 * Returns 0, or -EINVAL with a message naming the key and the reason in err
 * ("tiers.free.workers: must be an integer from 1 to 1024 (got "ten")",
 * "tiers.gold.rate_limit: missing: ...").
 */
int tiers_parse(const char *json, size_t len, struct tier_table *out, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* The built-in table (config/tiers.json). Never fails. */
void tiers_builtin(struct tier_table *out);

/* Load from a file path. Same errors as tiers_parse, plus -ENOENT/-EIO with the path. */
int tiers_load_file(const char *path, struct tier_table *out, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* Index of the named tier, or -1. */
int tiers_find(const struct tier_table *t, const char *name);

/* Who may take a worker, and a connection (share.h): the tenant share and the newcomers'
 * reserve as slot counts of the tier's pools. */
struct share_policy tiers_worker_policy(const struct tier_cfg *c);
struct share_policy tiers_conn_policy(const struct tier_cfg *c);

/* Per-tenant caps derived from the shares: never below 1 (the queue cap is 0 only when the
 * tier has no queue at all, queue_max 0). */
int64_t tiers_tenant_worker_cap(const struct tier_cfg *c);
int64_t tiers_tenant_conn_cap(const struct tier_cfg *c);
int64_t tiers_tenant_queue_cap(const struct tier_cfg *c);
/* With budget_scope "fleet": an instance's least share of a fleet total (workers or db_max),
 * budget_min_pct of it, at least 1 and at most the total. */
int64_t tiers_min_share(int64_t total, int64_t min_pct);
/* The tier's p99 latency objective in ms (latency_objective_ms, or its default). */
int64_t tiers_latency_objective_ms(const struct tier_cfg *c);

/* "free, pro, enterprise": the names, for error messages. */
void tiers_names(const struct tier_table *t, char *buf, size_t buflen);

/* Print the per-tier keys (text for --help, Markdown for the README). */
void tiers_print_help(FILE *out, bool markdown);

/* The table in force: one line per tier, "<prefix>free: workers=10 queue_max=20 ...". */
void tiers_print_table(FILE *out, const struct tier_table *t, const char *prefix);

#endif
