/*
 * tierkeys.h: every per-tier key of TIERS_FILE and the struct tier_cfg field it lands in,
 * written here independently of tiers.c's own table: the oracle that test_tiers and fuzz_tiers
 * check tiers.c against (a key added to tiers.c and not here fails them both). Header-only: a
 * static table for each test that includes it.
 */
#ifndef BULKHEAD_TESTS_TIERKEYS_H
#define BULKHEAD_TESTS_TIERKEYS_H

#include "tiers.h"

#include <stddef.h>

struct tierkey {
    const char *name;
    size_t offset; /* of an int64_t in struct tier_cfg */
};

static const struct tierkey tierkeys[] = {
    {"workers", offsetof(struct tier_cfg, workers)},
    {"queue_max", offsetof(struct tier_cfg, queue_max)},
    {"queue_timeout_ms", offsetof(struct tier_cfg, queue_timeout_ms)},
    {"db_max", offsetof(struct tier_cfg, db_max)},
    {"db_acquire_timeout_ms", offsetof(struct tier_cfg, db_acquire_timeout_ms)},
    {"db_idle_timeout_ms", offsetof(struct tier_cfg, db_idle_timeout_ms)},
    {"rate_limit", offsetof(struct tier_cfg, rate_limit)},
    {"rate_window_s", offsetof(struct tier_cfg, rate_window_s)},
    {"breaker_timeout_ms", offsetof(struct tier_cfg, breaker_timeout_ms)},
    {"breaker_error_pct", offsetof(struct tier_cfg, breaker_error_pct)},
    {"breaker_reset_ms", offsetof(struct tier_cfg, breaker_reset_ms)},
    {"breaker_window_ms", offsetof(struct tier_cfg, breaker_window_ms)},
    {"breaker_buckets", offsetof(struct tier_cfg, breaker_buckets)},
    {"breaker_min_calls", offsetof(struct tier_cfg, breaker_min_calls)},
    {"breaker_trial_calls", offsetof(struct tier_cfg, breaker_trial_calls)},
    {"tenant_share_pct", offsetof(struct tier_cfg, tenant_share_pct)},
    {"tenant_queue_pct", offsetof(struct tier_cfg, tenant_queue_pct)},
    {"tenant_reserve_pct", offsetof(struct tier_cfg, tenant_reserve_pct)},
    {"brief_request_ms", offsetof(struct tier_cfg, brief_request_ms)},
    {"fair_queue_cost", offsetof(struct tier_cfg, fair_queue_cost)},
    {"tenant_linger_ms", offsetof(struct tier_cfg, tenant_linger_ms)},
    {"priority", offsetof(struct tier_cfg, priority)},
    {"capacity_floor_pct", offsetof(struct tier_cfg, capacity_floor_pct)},
    {"capacity_tolerance_pct", offsetof(struct tier_cfg, capacity_tolerance_pct)},
    {"capacity_margin_us", offsetof(struct tier_cfg, capacity_margin_us)},
    {"latency_objective_ms", offsetof(struct tier_cfg, latency_objective_ms)},
    {"db_time_ms_per_min", offsetof(struct tier_cfg, db_time_ms_per_min)},
    {"rate_limit_shadow", offsetof(struct tier_cfg, rate_limit_shadow)},
    {"db_time_shadow", offsetof(struct tier_cfg, db_time_shadow)},
    {"budget_min_pct", offsetof(struct tier_cfg, budget_min_pct)},
};
#define TIERKEYS_COUNT (sizeof(tierkeys) / sizeof(tierkeys[0]))

#endif
