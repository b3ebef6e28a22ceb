/*
 * dbbudget: database-time budgets per tenant (see dbbudget.h). The arithmetic on one stored
 * time, full_at, and a keytab of those times.
 *
 * With W the window (60 s) and B the budget (ms), d = full_at - now is the refill time still
 * owed: the bucket holds B * (W - d) / W, it is in debt while d >= W, and a charge of c us of
 * database time owes c * W / (B * 1000) us more refill time.
 */
#include "dbbudget.h"
#include "keytab.h"
#include "xalloc.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>

#define DBBUDGET_WINDOW_US ((int64_t)DBBUDGET_WINDOW_S * 1000000)

struct dbbudget {
    struct keytab *full_at; /* owned: per tenant, when its bucket is full again */
    atomic_uint_least64_t charges, charged_us, untracked;
};

struct dbbudget *dbbudget_create(size_t max_keys)
{
    struct dbbudget *b = xcalloc(1, sizeof(*b));
    b->full_at = keytab_create(max_keys);
    return b;
}

void dbbudget_destroy(struct dbbudget *b)
{
    if (!b)
        return;
    keytab_destroy(b->full_at);
    free(b);
}

void dbbudget_step(int64_t limit_ms, int64_t full_at, int64_t now_us, struct dbbudget_verdict *out)
{
    int64_t d = full_at > now_us ? full_at - now_us : 0;
    out->limit_ms = limit_ms;
    out->full_us = d;
    if (d >= DBBUDGET_WINDOW_US) {
        out->allowed = false;
        out->remaining_ms = 0;
        out->retry_after_us = d - DBBUDGET_WINDOW_US + 1;
        return;
    }
    out->allowed = true;
    out->retry_after_us = 0;
    /* (W - d) / W of B, in two steps: B * W would overflow for the largest budgets. */
    out->remaining_ms = limit_ms - (limit_ms * (d / 1000)) / (DBBUDGET_WINDOW_US / 1000);
}

int64_t dbbudget_after_charge(int64_t limit_ms, int64_t full_at, int64_t cost_us, int64_t now_us)
{
    int64_t base = full_at > now_us ? full_at : now_us;
    if (cost_us <= 0 || limit_ms <= 0)
        return base;
    /* c * W / (B * 1000): c is at most hours of microseconds, W is 6e7: no overflow. */
    int64_t owed = cost_us * (DBBUDGET_WINDOW_US / 1000) / limit_ms;
    return base + (owed > 0 ? owed : 1);
}

void dbbudget_check(struct dbbudget *b, const char *key, int64_t limit_ms, int64_t now_us,
                    struct dbbudget_verdict *out)
{
    dbbudget_step(limit_ms, keytab_get(b->full_at, key, now_us), now_us, out);
}

struct dbbudget_charge_ctx {
    int64_t limit_ms, cost_us, now_us;
};

static bool dbbudget_charge_fn(int64_t *value, void *ctx)
{
    const struct dbbudget_charge_ctx *c = ctx;
    *value = dbbudget_after_charge(c->limit_ms, *value, c->cost_us, c->now_us);
    return true;
}

int dbbudget_charge(struct dbbudget *b, const char *key, int64_t limit_ms, int64_t cost_us,
                    int64_t now_us)
{
    if (cost_us <= 0)
        return 0;
    struct dbbudget_charge_ctx c = {limit_ms, cost_us, now_us};
    int rc = keytab_update(b->full_at, key, now_us, dbbudget_charge_fn, &c);
    if (rc) {
        atomic_fetch_add_explicit(&b->untracked, 1, memory_order_relaxed);
        return rc;
    }
    atomic_fetch_add_explicit(&b->charges, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&b->charged_us, (uint64_t)cost_us, memory_order_relaxed);
    return 0;
}

size_t dbbudget_sweep(struct dbbudget *b, int64_t now_us)
{
    return keytab_sweep(b->full_at, now_us);
}

void dbbudget_stats(struct dbbudget *b, struct dbbudget_stats *out)
{
    out->charges = atomic_load_explicit(&b->charges, memory_order_relaxed);
    out->charged_us = atomic_load_explicit(&b->charged_us, memory_order_relaxed);
    out->untracked = atomic_load_explicit(&b->untracked, memory_order_relaxed);
    out->keys = keytab_count(b->full_at);
}
