/*
 * capctl: priority over the capacity every tier shares (the database, and the CPUs the server,
 * its HTTP threads and PostgreSQL run on). The bulkheads bound each tier's own pools; they do
 * not stop a busy low tier from taking the shared machine from a higher one. This controller
 * does, one per instance. In a fleet each instance also hears what the others' tiers do
 * (fleet.h, capctl_remote): a tier is gated while a higher tier is active on any instance, and
 * cut while one threatens its objective on any instance, so a storm on one instance yields to
 * enterprise served by another. Without that view each instance controls its tiers alone.
 *
 * Signal: each tier's own latency (arrival to reply, server side), read every interval as a
 * verdict (once the tier has min_samples latencies, or after CAPCTL_MAX_WAIT intervals), against
 * the tier's objective. A tier *threatens its objective* when its verdict's p99 passes its
 * latency objective, or when its typical latency (the mean of the fastest nine tenths) has
 * grown over its level (the same, smoothed over the long term) by more than both its tolerance
 * (a ratio) and its margin (an absolute time, so noise of a few tens of microseconds never
 * counts). Why the tier's own latency and not the database's
 * query time: in the storms this is built for, enterprise's query time did not move while its
 * total time grew sixfold (it waited for CPUs and HTTP threads busy with the lower tier).
 *
 * Attribution. A tier's level is learnt from its *clear* latencies, those of requests during
 * which no tier below it had a request in progress: nobody below can have caused them,
 * so they are its own latency, whatever its load (a sparse client's latency is higher than a
 * busy loop's, and that is not congestion). It follows their typical latency within about a
 * second. When too few of a verdict's latencies are clear (a tier below always has something
 * running: a storm), the level follows all of them, falling within a second but rising only as
 * slowly as level_us, so a storm is not learnt as normal. A threat is *blamed* on the tiers
 * below only when the verdict's clear latencies do not share it: when enough of them are clear
 * (as above) and they too are typically past the threshold, the machine or the database is slow
 * for everybody (another process, a sanitizer, a vacuum), nothing below can be what slows it,
 * and the threat is reported but cuts nobody. And a tier's *usage* is the requests
 * it had in progress, on average, recently (the time its requests held their slots, per unit
 * of time). It *presses* when its usage is at least half its limit, or at least
 * CAPCTL_PRESS_USAGE (a quarter of one request's time): only a pressing tier can be what
 * threatens a tier above, so only a pressing tier is cut (from what it uses, when that is less
 * than its limit, so that the cut binds), and a tier that does not press grows back whatever
 * the tiers above say.
 *
 * Rule, every interval:
 *   - a tier is "gated" while a tier of higher priority is active (had a request within
 *     active_us); only a gated tier is ever limited, so capacity nobody above wants is never
 *     withheld (work-conserving: free alone gets everything its bulkheads allow);
 *   - when an active tier gives a verdict that threatens its objective and blames the tiers
 *     below, the lowest-priority gated, pressing tier below it that is above its floor is
 *     cut: its limit is multiplied
 *     by max(decrease, the threatened tier's target / measured), one tier per interval;
 *   - a tier whose limit refused nothing in the interval, and that used less than would
 *     press it, is back at its maximum at once: its traffic is light, the storm is over;
 *   - every other limit below its maximum grows while no tier above it threatens its
 *     objective blaming the tiers below (as of its last verdict, whatever its sample count since)
 * or while the tier does not press: from nothing to its maximum in recovery_us; but while it
 * presses and a tier above threatened within CAPCTL_CALM_US, CAPCTL_PROBE times slower (it probes
 * for room during a storm, and gets it all back once the storm is over). The limit is the tier's
 * effective concurrency: requests admitted and not finished. At or above the tier's max it binds
 * nothing; at 1 or more it caps requests in progress; between CAPCTL_MIN_LIMIT and 1 the tier gets
 * that fraction of one request's time (pacing: after a request that took d, the next waits d x
 * (1/limit - 1), never more than CAPCTL_PAUSE_MAX_US, and a pause is rescaled whenever the limit
 * changes); at 0 (a floor of 0) the tier is closed while gated. A cut below CAPCTL_MIN_LIMIT goes
 * to the floor.
 *
 * Requests over the limit are refused at once (503 shed) before any worker or connection is
 * used; capctl_enter says when to retry.
 *
 * DESIGN: the request path (capctl_enter/leave/observe, HTTP threads) only touches atomics: a
 * tier's limit, gate, pacing time, in-progress count, busy time and latency histograms (and
 * capctl_observe reads the lower tiers' in-progress counts).
 * capctl_tick (the janitor thread), capctl_configure (a reload, main thread) and capctl_stats
 * (any thread) take the controller's mutex, which guards every tier's controller fields (the
 * previous histograms, levels, verdicts and configuration). The tick also rescales pacing
 * times with a compare-and-swap, the only atomic both sides write.
 */
#ifndef BULKHEAD_CAPCTL_H
#define BULKHEAD_CAPCTL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CAPCTL_MAX_TIERS 16

#define CAPCTL_MAX_WAIT         10      /* intervals a quiet tier may take to gather its samples */
#define CAPCTL_MIN_LIMIT        0.01    /* the smallest limit above 0: 1 % of one request's time */
#define CAPCTL_PAUSE_MAX_US     1000000 /* the longest pause pacing imposes after a request */
#define CAPCTL_PRESS_USAGE      0.25    /* usage that presses whatever the limit */
#define CAPCTL_LEVEL_FAST_US    1000000 /* time constant of a level that follows its latency */
#define CAPCTL_CALM_US          1000000 /* no threat above for this long: a storm is over */
#define CAPCTL_PROBE            10      /* growth this many times slower until then */
#define CAPCTL_EPISODE_QUIET_US 1000000 /* a logged episode ends after this long without */

struct capctl;

struct capctl_cfg {
    bool enabled;        /* false: every tier is always admitted (the gate is never shut) */
    int64_t active_us;   /* a tier with no request for this long wants nothing */
    int64_t level_us;    /* time constant of a level rising while a lower tier presses */
    int64_t recovery_us; /* a cut limit grows from 0 to its max in this time */
    size_t min_samples;  /* latencies an interval needs for a verdict */
    double decrease;     /* the deepest cut in one interval (0.5: halve) */
};

struct capctl_tier_cfg {
    int64_t priority;     /* higher is served first */
    double max;           /* the tier's largest concurrency (its limit binds nothing at or above) */
    double floor;         /* the least it is ever cut to; below 1 means pacing, 0 closed */
    double tolerance;     /* growth over the level it accepts, as a ratio (0.5 = 50 %) */
    int64_t margin_us;    /* ... and as a time: both must be passed to threaten */
    int64_t objective_us; /* p99 latency objective: a verdict's p99 above it threatens */
};

struct capctl_tier_stats {
    double limit;          /* effective concurrency now (max when not limited) */
    bool gated;            /* a higher-priority tier is active: the limit applies */
    bool shedding;         /* gated and below its max */
    bool threatened;       /* its last verdict threatens its objective (cleared when idle) */
    bool pressing;         /* its usage presses its limit (it may be cut) */
    double usage;          /* requests in progress on average, recently */
    double mean_us;        /* the last verdict's typical latency (0: no verdict yet) */
    double p99_us;         /* the last verdict's p99 latency (0: no verdict yet) */
    double level_us;       /* its level: the smoothed long-term typical latency (0: none yet) */
    double threshold_us;   /* the last verdict's threshold: a typical latency above it
                              threatened (max(level x (1 + tol), level + margin), the level as
                              it was before that verdict moved it; 0: none yet) */
    int64_t objective_us;  /* its p99 objective */
    int64_t threatened_us; /* time spent threatening its objective, in total */
    int64_t in_progress;   /* requests admitted and not finished */
    uint64_t admitted, shed;
    bool active;            /* had a request within active_us (as of the last tick) */
    int64_t last_threat_us; /* the last tick that found it threatening its objective (0: none) */
    double threat_pressure; /* its pressure then */
    bool blamed;            /* threatened, and its clear requests were not: lower tiers may be
                               cut for it (a threat they share is the machine's, not theirs) */
    int64_t last_blame_us;  /* the last tick that found it so (0: none) */
    double blame_pressure;  /* its pressure then */
    double pressure;        /* the last verdict's latency / what it may be (> 1: threatened) */
    bool remote_active;     /* the fleet: another instance has this tier active */
    bool remote_threatened; /* ... threatening its objective */
    bool remote_pressing;   /* ... pressing its limit */
};

/* What the other instances of the fleet say of one tier (fleet.h), given before a tick. */
struct capctl_remote {
    bool active;     /* active on at least one other instance */
    bool threatened; /* threatens its objective on at least one */
    bool pressing;   /* presses its limit on at least one */
    bool fresh;      /* a new exchange since the last capctl_remote: a threat in it may cut */
    double pressure; /* the worst pressure among those where it threatens */
};

/* ntiers tiers (index = the tier set's), every limit at its max. 0 or -EINVAL. */
int capctl_create(const struct capctl_cfg *cfg, size_t ntiers, struct capctl **out)
    __attribute__((warn_unused_result));
void capctl_destroy(struct capctl *c);

/* Set tier i's settings (start, reload); a limit above the new max is brought down to it. */
void capctl_configure(struct capctl *c, size_t i, const struct capctl_tier_cfg *tc);

/*
 * HTTP thread: may a request of tier i start now? true: it counts as in progress until
 * capctl_leave. false: shed it; *retry_us says when the tier could admit one again (0: at the
 * next verdict, which may change it).
 */
bool capctl_enter(struct capctl *c, size_t i, int64_t now_us, int64_t *retry_us)
    __attribute__((warn_unused_result));
/* A request admitted at entered_us ended at now_us (any thread). */
void capctl_leave(struct capctl *c, size_t i, int64_t entered_us, int64_t now_us);
/* A request of tier i, served in latency_us, ended at now_us (the signal; any thread). */
void capctl_observe(struct capctl *c, size_t i, int64_t latency_us, int64_t now_us);

/* One interval's verdict (janitor thread): returns how many episodes of shedding or of threats
 * to an objective began or ended (an episode ends after CAPCTL_EPISODE_QUIET_US without); with
 * names (the tiers' names by index), each is logged (capacity_shed, capacity_objective). */
int capctl_tick(struct capctl *c, int64_t now_us, const char *const *names);

void capctl_stats(struct capctl *c, size_t i, struct capctl_tier_stats *out);

/* Janitor thread, before capctl_tick: tier i as the other instances see it (NULL: nothing,
 * the fleet view is lost or off: local control). A tier is gated while a higher tier is
 * active here or anywhere; a fresh remote threat from a higher tier cuts this instance's
 * pressing lower tiers as a local one does; a lower tier pressing elsewhere makes this
 * instance's latencies not clear (that tier may be what slowed them). */
void capctl_remote(struct capctl *c, size_t i, const struct capctl_remote *r);

#endif
