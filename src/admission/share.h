/*
 * share: the one admission rule for a tier's shared slots, used by its worker pool (fairq) and
 * its connection pool (dbpool), so both bulkheads treat tenants the same way.
 *
 * A pool has `size` slots. A tenant may take one more slot when one is free and either
 *   - it holds nothing yet (a newcomer): it may take any free slot; or
 *   - taking it leaves more than `reserve` slots free (the last `reserve` free slots are kept
 *     for newcomers, so a newcomer never waits for a busy tenant's slow work) and, while other
 *     tenants are active, it holds fewer than `cap` (its share), or fewer than cap + 1 when its
 *     requests are brief (they give a slot back within milliseconds).
 * The bounds hold whatever the caller says about the tenant: brief buys one slot past the share
 * and never the reserve, so a tenant whose requests turn slow after it was judged brief holds
 * at most one slot more than an ordinary busy tenant, and a newcomer always finds the reserve.
 * What it costs a busy tenant alone: `reserve` slots of the pool; its share applies only while
 * others are active.
 *
 * "Active" and "brief" are decided by the caller (fairq: hysteresis after the last request; a
 * brief verdict that sees the work in progress).
 *
 * Pure functions of their arguments: no state, no locks, any thread.
 */
#ifndef BULKHEAD_SHARE_H
#define BULKHEAD_SHARE_H

#include <stdbool.h>
#include <stddef.h>

struct share_policy {
    size_t size;    /* slots in the pool */
    size_t cap;     /* most slots one tenant holds while other tenants are active (>= 1) */
    size_t reserve; /* free slots only a tenant holding none may take (< size) */
};

/* A policy for a pool of size slots from percentages (1..100 and 0..50): cap is
 * floor(size * share_pct / 100) and at least 1; reserve is ceil(size * reserve_pct / 100),
 * at least 1 when reserve_pct > 0, and at most size - 1 so a lone tenant can always run. */
struct share_policy share_policy_pct(size_t size, long share_pct, long reserve_pct);

/* Whether a tenant holding `held` slots may take one more, with `in_use` slots taken by all
 * tenants together, others_active telling whether another tenant is active and brief whether
 * the tenant's requests are brief now. */
bool share_may_take(const struct share_policy *p, size_t held, size_t in_use, bool others_active,
                    bool brief);

#endif
