/*
 * capctlfx: the capacity controller tests' fixture (test_capctl, test_capctl_gate,
 * test_capctl_fleet): three tiers as built in (free < pro < enterprise) and a small simulation
 * on an injected clock. Requests arrive spread over each 100 ms interval, are admitted or shed
 * by the gate, hold their slot for their latency (so a limit binds on concurrency, as in the
 * server) and are observed when they end; a tick closes every interval. Nothing here sleeps or
 * reads the real clock.
 */
#ifndef BULKHEAD_TESTS_CAPCTLFX_H
#define BULKHEAD_TESTS_CAPCTLFX_H

#include "capctl.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CCFX_MS 1000ll

#define CCFX_IV (100 * CCFX_MS) /* the tick interval of these tests */

enum { CCFX_FREE, CCFX_PRO, CCFX_ENT, CCFX_NT };

extern const struct capctl_cfg ccfx_cfg;

/* The built-in tiers' settings (config/tiers.json), objectives at a tenth of the 3 s timeout. */
extern const struct capctl_tier_cfg ccfx_tiers[CCFX_NT];

/* One tier's traffic in an interval: n requests spread evenly, each served in lat us plus up
 * to +-jitter, plus per_lower us for every request of a lower tier running when it arrives (a
 * shared machine). */
struct ccfx_flow {
    int n;
    int64_t lat, jitter, per_lower;
};

struct ccfx_running {
    int64_t start, end;
    size_t tier;
};

struct ccfx_sim {
    struct capctl *c;
    int64_t now; /* the start of the next interval */
    struct ccfx_running run[4096];
    size_t nrun;
    uint64_t rng;
    uint64_t shed[CCFX_NT], served[CCFX_NT];
    int64_t last_retry; /* of the last refusal */
};

void ccfx_sim_init(struct ccfx_sim *s, const struct capctl_tier_cfg *tc);

/* End every request that ends at or before t, earliest first. */
void ccfx_sim_until(struct ccfx_sim *s, int64_t t);

/* One interval of the three flows (n = 0: that tier sends nothing), then the tick. */
void ccfx_sim_interval(struct ccfx_sim *s, const struct ccfx_flow f[CCFX_NT]);

void ccfx_sim_run(struct ccfx_sim *s, int intervals, const struct ccfx_flow f[CCFX_NT]);

struct capctl_tier_stats ccfx_stats(const struct ccfx_sim *s, size_t i);

double ccfx_limit_of(const struct ccfx_sim *s, size_t i);

/* Traffic shapes (per 100 ms). */
#define CCFX_QUIET                                                                                 \
    {                                                                                              \
        0, 0, 0, 0                                                                                 \
    }
#define CCFX_ENT_HOT                                                                               \
    {                                                                                              \
        200, 90, 10, 0                                                                             \
    } /* a closed loop: 2,000 req/s at 0.09 ms */
#define CCFX_ENT_SPARSE                                                                            \
    {                                                                                              \
        3, 350, 150, 0                                                                             \
    } /* 30 req/s at 0.2-0.5 ms: a sparse client */
#define CCFX_FREE_LIGHT                                                                            \
    {                                                                                              \
        8, 300, 100, 0                                                                             \
    } /* 80 req/s at 0.3 ms: 0.024 requests in progress */
#define CCFX_FREE_STORM                                                                            \
    {                                                                                              \
        100, 5000, 1000, 0                                                                         \
    } /* offers 5 requests in progress */

/* Enterprise past its p99 objective (1 ms here) however its level moves, beside free's storm:
 * free is cut to floor. Returns the controller's tiers as configured. */
const struct capctl_tier_cfg *ccfx_threaten_to(struct ccfx_sim *s, double floor);

#endif
