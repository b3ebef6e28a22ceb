/*
 * dbbudget: database-time budgets per tenant (a tier's db_time_ms_per_min, or a tenant's own).
 *
 * A budget of B ms per minute is a bucket of B ms of database time, refilled continuously at B
 * per DBBUDGET_WINDOW_S. A statement is charged after it ran, by the time it held its connection
 * (its cost is known only then), so a tenant may run into debt; while it is in debt (the bucket
 * at or below zero) its requests are refused (429 db_time_exhausted, api.c) until the refill
 * has paid the debt back. A fresh tenant may use B ms at once.
 *
 * State is one 64-bit time per tenant, as GCRA keeps for the rate limiter: full_at, when its
 * bucket will be full again. At now the bucket holds B - (full_at - now) * B / W; a charge of c
 * moves full_at by c * W / B; the tenant is in debt while full_at - now >= W. A key whose
 * full_at has passed holds nothing and is deleted, so the table holds the tenants charged
 * within about the last minute, at most max_keys per tier; a tenant the full table cannot take
 * is not charged (counted as untracked) and so never refused. A budget changed live (a reload,
 * an override) applies from the next charge: a tenant in debt stays refused for the time it
 * was told, whatever its new budget.
 *
 * Per instance. dbbudget_check and dbbudget_charge are the whole interface the request path uses,
 * and dbbudget_step / dbbudget_after_charge are the arithmetic on one stored time: sharing
 * budgets across instances (as rlredis.c shares the rate limit) is a backend with those two
 * calls, the same arithmetic in a Redis script, behind this seam; not built yet.
 *
 * DESIGN: the times live in a keytab (KEYTAB_SHARDS shards, each with its own mutex): the check
 * (api.c, at admission) and a charge (reqhooks.c, as the request ends) both run on HTTP threads,
 * the sweep on the janitor's; each locks the tenant's shard only. Counters are atomics. Every
 * call takes its clock.
 */
#ifndef BULKHEAD_DBBUDGET_H
#define BULKHEAD_DBBUDGET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define DBBUDGET_WINDOW_S 60 /* budgets are per minute */

struct dbbudget;

/* One tenant's bucket at a moment (dbbudget_check, dbbudget_step). */
struct dbbudget_verdict {
    bool allowed;           /* out of debt: the bucket holds more than nothing */
    int64_t limit_ms;       /* B */
    int64_t remaining_ms;   /* what the bucket holds now, 0 while in debt */
    int64_t retry_after_us; /* in debt: until it is paid back (a request then is admitted) */
    int64_t full_us;        /* until the bucket is full again (0: full) */
};

struct dbbudget_stats {
    uint64_t charges;    /* statements charged */
    uint64_t charged_us; /* database time charged */
    uint64_t untracked;  /* charges dropped: the table was full */
    size_t keys;         /* tenants held (some may have expired unswept) */
};

/* At most max_keys tenants at once. */
struct dbbudget *dbbudget_create(size_t max_keys);
void dbbudget_destroy(struct dbbudget *b);

/* HTTP thread: key's bucket at now under limit_ms per minute (> 0). Changes nothing. */
void dbbudget_check(struct dbbudget *b, const char *key, int64_t limit_ms, int64_t now_us,
                    struct dbbudget_verdict *out);

/* Any thread, after a statement: charge key cost_us of database time under limit_ms per minute
 * (> 0). 0, or -ENOSPC when the table is full and key not held (not charged; counted). */
int dbbudget_charge(struct dbbudget *b, const char *key, int64_t limit_ms, int64_t cost_us,
                    int64_t now_us);

/* The arithmetic on one stored full_at (0: fresh): the bucket at now, and full_at after a
 * charge of cost_us (never before now). */
void dbbudget_step(int64_t limit_ms, int64_t full_at, int64_t now_us, struct dbbudget_verdict *out);
int64_t dbbudget_after_charge(int64_t limit_ms, int64_t full_at, int64_t cost_us, int64_t now_us);

/* Janitor thread: delete tenants whose bucket is full. Returns how many. */
size_t dbbudget_sweep(struct dbbudget *b, int64_t now_us);

void dbbudget_stats(struct dbbudget *b, struct dbbudget_stats *out);

#endif
