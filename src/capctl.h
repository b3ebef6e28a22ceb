/*
 * capctl: priority over the capacity every tier shares (the database, and the CPUs the server,
 * its HTTP threads and PostgreSQL run on). The bulkheads bound each tier's own pools; they do
 * not stop a busy low tier from taking the shared machine from a higher one. This controller
 * does, one per instance, with no coordination between instances (like TCP flows, each reacts
 * to the same congestion).
 *
 * Signal: the latency of each tier's served requests (arrival to reply, server side), as the
 * median of every interval, against the tier's own baseline, the lowest such median of the
 * last baseline window. A tier is congested when its median passes baseline x (1 + tolerance).
 * Why this and not the database's query time: in the storms this is built for, enterprise's
 * query time did not move while its total time grew sixfold (it waited for CPUs and HTTP
 * threads busy with the lower tier): a tier's own latency sees contention wherever it is.
 *
 * Rule, every interval:
 *   - a tier is "gated" while a tier of higher priority is active (had a request within
 *     active_us); only a gated tier is ever limited, so capacity nobody above wants is never
 *     withheld (work-conserving: free alone gets everything its bulkheads allow);
 *   - when an active tier is congested, the lowest-priority gated tier below it that is above
 *     its floor is cut: its limit is multiplied by max(decrease, target/median), one tier per
 *     interval, lowest priority first;
 *   - when no active tier is congested (and at least one gave a verdict), every limit below
 *     its maximum grows by increase x max (additive increase); a tier with nobody above it
 *     grows back in any case.
 * The limit is the tier's effective concurrency: requests admitted and not finished. At or
 * above the tier's max it binds nothing; at 1 or more it caps requests in progress; below 1
 * the tier gets that fraction of one request's time (pacing: after a request that took d, the
 * next waits d x (1/limit - 1)), so a tier can be held below one connection's worth.
 *
 * Requests over the limit are refused at once (503 shed) before any worker or connection is
 * used; capctl_enter says when to retry.
 *
 * DESIGN: the request path (capctl_enter/leave/observe, HTTP threads) only touches atomics: a
 * tier's limit, gate, pacing time, in-progress count and latency histogram. capctl_tick (the
 * janitor thread) and capctl_configure (a reload, main thread) take the controller's mutex,
 * which guards the baseline windows, the previous histograms and the configuration.
 */
#ifndef BULKHEAD_CAPCTL_H
#define BULKHEAD_CAPCTL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CAPCTL_MAX_TIERS 16

struct capctl;

struct capctl_cfg {
    bool enabled;        /* false: every tier is always admitted (the gate is never shut) */
    int64_t active_us;   /* a tier with no request for this long wants nothing */
    int64_t baseline_us; /* the baseline is the lowest interval median over this window */
    size_t min_samples;  /* latencies an interval needs for a verdict */
    double decrease;     /* the deepest cut in one interval (0.5: halve) */
    double increase;     /* additive step per interval, as a fraction of the tier's max */
};

struct capctl_tier_cfg {
    int64_t priority; /* higher is served first */
    double max;       /* the tier's largest concurrency (its limit binds nothing at or above) */
    double floor;     /* the least it is ever cut to; below 1 means pacing */
    double tolerance; /* latency growth it accepts before lower tiers are cut (0.5 = 50 %) */
};

struct capctl_tier_stats {
    double limit;        /* effective concurrency now (max when not limited) */
    bool gated;          /* a higher-priority tier is active: the limit applies */
    bool shedding;       /* gated and below its max */
    bool congested;      /* its latency passed its tolerance in the last verdict */
    double median_us;    /* the last interval's median latency (0: no verdict) */
    double baseline_us;  /* its baseline (0: none yet) */
    int64_t in_progress; /* requests admitted and not finished */
    uint64_t admitted, shed;
};

/* ntiers tiers (index = the tier set's), every limit at its max. 0 or -EINVAL. */
int capctl_create(const struct capctl_cfg *cfg, size_t ntiers, struct capctl **out)
    __attribute__((warn_unused_result));
void capctl_destroy(struct capctl *c);

/* Set tier i's settings (start, reload); a limit above the new max is brought down to it. */
void capctl_configure(struct capctl *c, size_t i, const struct capctl_tier_cfg *tc);

/*
 * HTTP thread: may a request of tier i start now? true: it counts as in progress until
 * capctl_leave. false: shed it; *retry_us says when the tier could admit one again (at least
 * one interval: the next verdict may change it).
 */
bool capctl_enter(struct capctl *c, size_t i, int64_t now_us, int64_t *retry_us)
    __attribute__((warn_unused_result));
/* A request admitted at entered_us ended at now_us (any thread). */
void capctl_leave(struct capctl *c, size_t i, int64_t entered_us, int64_t now_us);
/* A request of tier i was served in latency_us (the signal; any thread). */
void capctl_observe(struct capctl *c, size_t i, int64_t latency_us);

/* One interval's verdict (janitor thread): returns how many tiers started or stopped shedding;
 * with names (the tiers' names by index), each change is logged. */
int capctl_tick(struct capctl *c, int64_t now_us, const char *const *names);

void capctl_stats(struct capctl *c, size_t i, struct capctl_tier_stats *out);

#endif
