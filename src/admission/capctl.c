/*
 * capctl: latency histograms per tier, the interval verdict against the tier's objective, and
 * the admission gate (see capctl.h for the rule and the threads).
 *
 * A tier's latencies land in a histogram of quarter-octave buckets (lathist.h: a quantile is
 * known to within 19 %). The controller keeps the histogram as of its last verdict and reads
 * the difference: an interval's typical latency (the mean of its fastest nine tenths: a
 * closed-loop client's rate follows the mean, and the slowest tenth is the objective's
 * business) and its p99. A tier with too few latencies gets no verdict until it has enough or
 * CAPCTL_MAX_WAIT intervals have passed. Its level is an exponentially weighted mean of its
 * verdicts' typical latencies (capctl.h says which, and how fast).
 */
#include "capctl.h"
#include "lathist.h"
#include "log.h"
#include "xalloc.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#define CAPCTL_UNIT     1000000 /* limits travel to the request path in millionths */
#define CAPCTL_USAGE_US 100000  /* time constant of the usage's smoothing */
#define CAPCTL_OWN_MIN  3       /* clear latencies (and a quarter of a verdict's) to learn from */

struct cc_tier {
    /* Request path: atomics only. */
    _Atomic int64_t limit_u;      /* limit x CAPCTL_UNIT; at or above max: no limit; 0: closed */
    _Atomic int64_t max_u;        /* max x CAPCTL_UNIT */
    atomic_bool gated;            /* a higher-priority tier is active */
    _Atomic int64_t next_free_us; /* pacing (0 < limit < 1): no admission before this */
    atomic_int_least64_t in_progress;
    _Atomic int64_t last_seen_us; /* the last request's arrival */
    _Atomic int64_t busy_us;      /* the time admitted requests held their slot, in total */
    _Atomic int64_t last_end_us;  /* when its last admitted request ended */
    atomic_uint_least64_t hist[LATHIST_BUCKETS];
    atomic_uint_least64_t clear[LATHIST_BUCKETS]; /* those that ended with nothing below running */
    _Atomic uint32_t below;                       /* the tiers of lower priority, as bits */
    atomic_bool remote_pressing; /* it presses its limit on another instance (fleet) */
    atomic_uint_least64_t admitted, shed;

    /* Controller: guarded by capctl.mutex. */
    struct capctl_tier_cfg cfg;
    double limit;
    uint64_t prev[LATHIST_BUCKETS]; /* the histogram at the last verdict */
    uint64_t prev_clear[LATHIST_BUCKETS];
    uint64_t nclear;               /* the verdict's latencies with nothing below running */
    double clear_mean_us;          /* ... and their typical latency */
    int waited;                    /* intervals since the last verdict */
    uint64_t pending;              /* latencies since the last verdict (0: nothing served) */
    bool verdict;                  /* this interval gave one */
    double mean_us, p99_us;        /* the last verdict's typical latency and p99 */
    double level_us;               /* the smoothed long-term typical latency (0: none yet) */
    double judged_level_us;        /* the level the last verdict was judged against */
    double judged_thr_us;          /* ... and its threshold (0: none) */
    int64_t level_at_us;           /* when the level last took a verdict */
    bool threatened;               /* the last verdict threatens the objective */
    bool blamed;                   /* ... and its clear latencies do not: the tiers below may */
    double pressure;               /* its measured / target (> 1 when threatened) */
    int64_t threatened_us;         /* time spent threatened, in total */
    int64_t last_threat_us;        /* the last tick that found it threatened */
    double threat_pressure;        /* its pressure then */
    int64_t last_blame_us;         /* the last tick that found it threatened and blamed below */
    double blame_pressure;         /* its pressure then */
    int64_t threat_end_us;         /* the tick that found the last threat over */
    int64_t prev_busy_us;          /* busy_us at the last tick */
    double usage;                  /* requests in progress on average, smoothed */
    bool pressing;                 /* usage presses the limit */
    bool released;                 /* the last interval: nothing shed, and little used */
    uint64_t prev_shed;            /* shed at the last tick */
    bool shed_episode;             /* a logged episode of shedding is open */
    int64_t last_shed_us;          /* the last tick that found it shedding */
    bool episode;                  /* a logged episode of threats is open */
    int64_t episode_us;            /* when it began */
    int64_t episode_threatened_us; /* threatened_us when it began */
    struct capctl_remote remote;   /* the fleet's view of it (capctl_remote), or zeros */
    int64_t remote_threat_us;      /* the last tick at which another instance said it threatens */
    bool active;                   /* the last tick found it active here */
};

struct capctl {
    struct capctl_cfg cfg;
    size_t ntiers;
    pthread_mutex_t mutex; /* guards the controller fields of every tier, and last_tick_us */
    int64_t last_tick_us;  /* 0: no tick yet */
    struct cc_tier tier[CAPCTL_MAX_TIERS];
};

int capctl_create(const struct capctl_cfg *cfg, size_t ntiers, struct capctl **out)
{
    if (ntiers == 0 || ntiers > CAPCTL_MAX_TIERS || cfg->recovery_us <= 0 || cfg->level_us <= 0)
        return -EINVAL;
    struct capctl *c = xcalloc(1, sizeof(*c));
    c->cfg = *cfg;
    c->ntiers = ntiers;
    pthread_mutex_init(&c->mutex, NULL);
    *out = c;
    return 0;
}

void capctl_destroy(struct capctl *c)
{
    if (!c)
        return;
    pthread_mutex_destroy(&c->mutex);
    free(c);
}

static void cc_publish(struct cc_tier *t)
{
    atomic_store_explicit(&t->limit_u, (int64_t)(t->limit * (double)CAPCTL_UNIT),
                          memory_order_relaxed);
}

void capctl_configure(struct capctl *c, size_t i, const struct capctl_tier_cfg *tc)
{
    struct cc_tier *t = &c->tier[i];
    pthread_mutex_lock(&c->mutex);
    bool first = t->cfg.max <= 0;
    t->cfg = *tc;
    if (t->cfg.floor > t->cfg.max)
        t->cfg.floor = t->cfg.max;
    if (t->cfg.floor > 0 && t->cfg.floor < CAPCTL_MIN_LIMIT)
        t->cfg.floor = CAPCTL_MIN_LIMIT;
    if (first || t->limit > t->cfg.max)
        t->limit = t->cfg.max;
    if (t->limit < t->cfg.floor)
        t->limit = t->cfg.floor;
    atomic_store_explicit(&t->max_u, (int64_t)(t->cfg.max * (double)CAPCTL_UNIT),
                          memory_order_relaxed);
    cc_publish(t);
    for (size_t a = 0; a < c->ntiers; a++) {
        uint32_t below = 0;
        for (size_t b = 0; b < c->ntiers; b++)
            if (c->tier[b].cfg.max > 0 && c->tier[b].cfg.priority < c->tier[a].cfg.priority)
                below |= 1u << b;
        atomic_store_explicit(&c->tier[a].below, below, memory_order_relaxed);
    }
    pthread_mutex_unlock(&c->mutex);
}

/* ---- request path ------------------------------------------------------------------------ */

bool capctl_enter(struct capctl *c, size_t i, int64_t now_us, int64_t *retry_us)
{
    struct cc_tier *t = &c->tier[i];
    atomic_store_explicit(&t->last_seen_us, now_us, memory_order_relaxed);
    int64_t lim = atomic_load_explicit(&t->limit_u, memory_order_relaxed);
    bool open = !c->cfg.enabled || !atomic_load_explicit(&t->gated, memory_order_relaxed) ||
                lim >= atomic_load_explicit(&t->max_u, memory_order_relaxed);
    int64_t cap = lim >= CAPCTL_UNIT ? lim / CAPCTL_UNIT : 1;
    int64_t n = atomic_load_explicit(&t->in_progress, memory_order_relaxed);
    for (;;) {
        if (!open) {
            int64_t free_at = atomic_load_explicit(&t->next_free_us, memory_order_relaxed);
            bool paced = lim < CAPCTL_UNIT && now_us < free_at;
            if (lim <= 0 || n >= cap || paced) {
                atomic_fetch_add_explicit(&t->shed, 1, memory_order_relaxed);
                *retry_us = paced && lim > 0 ? free_at - now_us : 0;
                return false;
            }
        }
        if (atomic_compare_exchange_weak_explicit(&t->in_progress, &n, n + 1, memory_order_relaxed,
                                                  memory_order_relaxed))
            break;
    }
    atomic_fetch_add_explicit(&t->admitted, 1, memory_order_relaxed);
    return true;
}

void capctl_leave(struct capctl *c, size_t i, int64_t entered_us, int64_t now_us)
{
    struct cc_tier *t = &c->tier[i];
    atomic_fetch_sub_explicit(&t->in_progress, 1, memory_order_relaxed);
    int64_t d = now_us > entered_us ? now_us - entered_us : 0;
    atomic_fetch_add_explicit(&t->busy_us, d, memory_order_relaxed);
    if (now_us > atomic_load_explicit(&t->last_end_us, memory_order_relaxed))
        atomic_store_explicit(&t->last_end_us, now_us, memory_order_relaxed); /* racy max: fine */
    int64_t lim = atomic_load_explicit(&t->limit_u, memory_order_relaxed);
    if (lim <= 0 || lim >= CAPCTL_UNIT || !atomic_load_explicit(&t->gated, memory_order_relaxed))
        return;
    /* The slot was busy d: it stays idle d x (1/limit - 1), so it is busy `limit` of the time;
     * never longer than CAPCTL_PAUSE_MAX_US (a slow request does not close the tier for long). */
    double pause = (double)d * ((double)CAPCTL_UNIT / (double)lim - 1.0);
    int64_t free_at = now_us + (pause < CAPCTL_PAUSE_MAX_US ? (int64_t)pause : CAPCTL_PAUSE_MAX_US);
    int64_t cur = atomic_load_explicit(&t->next_free_us, memory_order_relaxed);
    while (cur < free_at &&
           !atomic_compare_exchange_weak_explicit(&t->next_free_us, &cur, free_at,
                                                  memory_order_relaxed, memory_order_relaxed))
        ;
}

void capctl_observe(struct capctl *c, size_t i, int64_t latency_us, int64_t now_us)
{
    struct cc_tier *t = &c->tier[i];
    size_t k = lathist_bucket(latency_us);
    atomic_fetch_add_explicit(&t->hist[k], 1, memory_order_relaxed);
    /* Clear: no lower tier had a request in progress at any time during this one (none now,
     * and the last to end ended before this one began). */
    int64_t began = now_us - latency_us;
    uint32_t below = atomic_load_explicit(&t->below, memory_order_relaxed);
    for (size_t j = 0; below; j++, below >>= 1) {
        const struct cc_tier *u = &c->tier[j];
        if ((below & 1) && (atomic_load_explicit(&u->in_progress, memory_order_relaxed) > 0 ||
                            atomic_load_explicit(&u->last_end_us, memory_order_relaxed) > began ||
                            atomic_load_explicit(&u->remote_pressing, memory_order_relaxed)))
            return;
    }
    atomic_fetch_add_explicit(&t->clear[k], 1, memory_order_relaxed);
}

/* ---- the verdict ------------------------------------------------------------------------- */

/* Read tier t's latencies since its last verdict; set t->verdict, and with it the verdict's
 * typical latency and p99 (with fewer than 100 latencies, the p99 is the slowest of them), and
 * the typical latency of its clear latencies (nothing below running). */
static void cc_read(const struct capctl *c, struct cc_tier *t)
{
    uint64_t now[LATHIST_BUCKETS], d[LATHIST_BUCKETS], n = 0;
    for (size_t k = 0; k < LATHIST_BUCKETS; k++) {
        now[k] = atomic_load_explicit(&t->hist[k], memory_order_relaxed);
        d[k] = now[k] - t->prev[k];
        n += d[k];
    }
    t->pending = n;
    t->verdict = n >= c->cfg.min_samples || (n > 0 && ++t->waited >= CAPCTL_MAX_WAIT);
    if (!t->verdict)
        return;
    t->mean_us = lathist_typical(d, n);
    t->p99_us = lathist_rank(d, (99 * n + 99) / 100);
    memcpy(t->prev, now, sizeof(now));
    t->waited = 0;
    t->nclear = 0;
    for (size_t k = 0; k < LATHIST_BUCKETS; k++) {
        now[k] = atomic_load_explicit(&t->clear[k], memory_order_relaxed);
        d[k] = now[k] - t->prev_clear[k];
        t->nclear += d[k];
    }
    t->clear_mean_us = lathist_typical(d, t->nclear);
    memcpy(t->prev_clear, now, sizeof(now));
}

/* The typical latency beyond which tier t threatens its objective (0: no level yet). */
static double cc_threshold(const struct cc_tier *t)
{
    if (t->level_us <= 0)
        return 0;
    double ratio = t->level_us * (1.0 + t->cfg.tolerance);
    double margin = t->level_us + (double)t->cfg.margin_us;
    return ratio > margin ? ratio : margin;
}

/* Judge tier t's fresh verdict against its objective (the level as it was), then move the
 * level: towards the typical latency of the verdict's clear latencies when it has enough of
 * them (CAPCTL_OWN_MIN, and a quarter of the verdict: that latency is the tier's own), else
 * towards its typical latency, rising only as slowly as level_us. */
static void cc_judge(const struct capctl *c, struct cc_tier *t, int64_t now)
{
    double thr = cc_threshold(t);
    t->judged_level_us = t->level_us;
    t->judged_thr_us = thr;
    double by_mean = thr > 0 ? t->mean_us / thr : 0;
    double by_p99 = t->cfg.objective_us > 0 ? t->p99_us / (double)t->cfg.objective_us : 0;
    t->pressure = by_mean > by_p99 ? by_mean : by_p99;
    t->threatened = t->pressure > 1;
    bool own = t->nclear >= CAPCTL_OWN_MIN && 4 * t->nclear >= t->pending;
    /* Attribution: a threat the verdict's clear latencies share (enough of them, typically
     * past the threshold too) is not the lower tiers' doing, as nothing below ran beside them:
     * the machine or the database is slow for everybody. It is reported and cuts nobody. */
    t->blamed = t->threatened && !(own && thr > 0 && t->clear_mean_us > thr);

    double target = own ? t->clear_mean_us : t->mean_us;
    if (t->level_us <= 0) {
        t->level_us = target;
    } else {
        bool slow = !own && target > t->level_us;
        double tau = slow ? (double)c->cfg.level_us : (double)CAPCTL_LEVEL_FAST_US;
        double a = 1.0 - exp(-(double)(now - t->level_at_us) / tau);
        t->level_us += a * (target - t->level_us);
    }
    t->level_at_us = now;
}

static bool cc_active(const struct cc_tier *t, int64_t now_us, int64_t active_us)
{
    return atomic_load_explicit(&t->in_progress, memory_order_relaxed) > 0 ||
           now_us - atomic_load_explicit(&t->last_seen_us, memory_order_relaxed) < active_us;
}

/* Smooth tier t's usage over the dt_us since the last tick; say whether it presses its limit. */
static void cc_usage(struct cc_tier *t, int64_t dt_us)
{
    int64_t busy = atomic_load_explicit(&t->busy_us, memory_order_relaxed);
    uint64_t shed = atomic_load_explicit(&t->shed, memory_order_relaxed);
    double raw = 0;
    if (dt_us > 0) {
        raw = (double)(busy - t->prev_busy_us) / (double)dt_us;
        if (raw > t->cfg.max)
            raw = t->cfg.max; /* requests that waited long (queued, held) end in a burst */
        t->usage += (1.0 - exp(-(double)dt_us / CAPCTL_USAGE_US)) * (raw - t->usage);
    }
    double lim = t->limit < t->cfg.max ? t->limit : t->cfg.max;
    double press = 0.5 * lim < CAPCTL_PRESS_USAGE ? 0.5 * lim : CAPCTL_PRESS_USAGE;
    t->pressing = t->usage >= press;
    /* Released: its limit refused nothing in the interval and it used little of it. */
    t->released = dt_us > 0 && shed == t->prev_shed && raw < press;
    t->prev_busy_us = busy;
    t->prev_shed = shed;
}

/* Read every tier: activity, gate, usage, this interval's verdict and the threats. */
static void cc_assess(struct capctl *c, int64_t now_us, int64_t dt_us, bool *active)
{
    for (size_t i = 0; i < c->ntiers; i++) {
        active[i] = cc_active(&c->tier[i], now_us, c->cfg.active_us);
        c->tier[i].active = active[i];
        if (c->tier[i].remote.threatened)
            c->tier[i].remote_threat_us = now_us;
    }
    for (size_t i = 0; i < c->ntiers; i++) {
        struct cc_tier *t = &c->tier[i];
        bool gated = false;
        for (size_t j = 0; j < c->ntiers && c->cfg.enabled; j++)
            gated |= (active[j] || c->tier[j].remote.active) &&
                     c->tier[j].cfg.priority > t->cfg.priority;
        atomic_store_explicit(&t->gated, gated, memory_order_relaxed);
        cc_usage(t, dt_us);
    }
    for (size_t i = 0; i < c->ntiers; i++) {
        struct cc_tier *t = &c->tier[i];
        bool threatened = t->threatened;
        int64_t prev_tick = now_us - dt_us;
        /* Idle: nothing in progress and nothing arrived since the last tick. Its complaint, if
         * any, is stale (latencies still arriving are stragglers), and none is needed. */
        bool idle = !active[i] ||
                    (atomic_load_explicit(&t->in_progress, memory_order_relaxed) == 0 &&
                     atomic_load_explicit(&t->last_seen_us, memory_order_relaxed) < prev_tick);
        cc_read(c, t);
        if (t->verdict)
            cc_judge(c, t, now_us);
        if (idle)
            t->threatened = t->blamed = false;
        if (threatened && dt_us > 0)
            t->threatened_us += dt_us;
        if (t->threatened) {
            t->last_threat_us = now_us;
            t->threat_pressure = t->pressure;
        } else if (threatened)
            t->threat_end_us = now_us;
        if (t->blamed) {
            t->last_blame_us = now_us;
            t->blame_pressure = t->pressure;
        }
    }
}

/* The worst pressure among the active tiers above priority p that threaten their objective
 * and blame the tiers below: fresh: only those whose verdict of this interval does. 0 when none
 * does. */
static double cc_threat_above(const struct capctl *c, const bool *active, int64_t p, bool fresh)
{
    double worst = 0;
    for (size_t i = 0; i < c->ntiers; i++) {
        const struct cc_tier *u = &c->tier[i];
        if (active[i] && u->cfg.priority > p && u->blamed && (u->verdict || !fresh) &&
            u->pressure > worst)
            worst = u->pressure;
        /* Another instance's threat counts the same, once per exchange that reports it. */
        if (u->cfg.priority > p && u->remote.threatened && (u->remote.fresh || !fresh) &&
            u->remote.pressure > worst)
            worst = u->remote.pressure;
    }
    return worst;
}

/* Cut the lowest-priority active, gated, pressing tier above its floor that a fresh verdict
 * above it threatens. Returns its index, or -1. */
static int cc_cut(struct capctl *c, const bool *active)
{
    int pick = -1;
    double pressure = 0;
    for (size_t i = 0; i < c->ntiers; i++) {
        struct cc_tier *t = &c->tier[i];
        if (!active[i] || !atomic_load_explicit(&t->gated, memory_order_relaxed) || !t->pressing ||
            t->limit <= t->cfg.floor)
            continue;
        double p = cc_threat_above(c, active, t->cfg.priority, true);
        if (p > 1 && (pick < 0 || t->cfg.priority < c->tier[pick].cfg.priority)) {
            pick = (int)i;
            pressure = p;
        }
    }
    if (pick >= 0) {
        struct cc_tier *t = &c->tier[pick];
        double factor = 1.0 / pressure > c->cfg.decrease ? 1.0 / pressure : c->cfg.decrease;
        /* From what it uses when that is less than its limit: a cut that does not bind
         * protects nobody. */
        double from = t->limit < t->cfg.max ? t->limit : t->cfg.max;
        if (t->usage < from)
            from = t->usage;
        double to = from * factor;
        t->limit = to > t->cfg.floor && to >= CAPCTL_MIN_LIMIT ? to : t->cfg.floor;
    }
    return pick;
}

/* When a tier above priority p that is active last threatened its objective, blaming the tiers
 * below (0: never). */
static int64_t cc_last_threat_above(const struct capctl *c, const bool *active, int64_t p)
{
    int64_t last = 0;
    for (size_t i = 0; i < c->ntiers; i++) {
        const struct cc_tier *u = &c->tier[i];
        if (active[i] && u->cfg.priority > p && u->last_blame_us > last)
            last = u->last_blame_us;
        if (u->cfg.priority > p && u->remote_threat_us > last)
            last = u->remote_threat_us;
    }
    return last;
}

/* Grow tier t: straight to its max when it is released and does not press (its traffic is
 * light: the storm is over); by dt_us's share of recovery_us when it does not press, or when
 * nothing above threatened its objective for CAPCTL_CALM_US; CAPCTL_PROBE times slower while
 * it presses and a tier above threatened lately (probing for room during a storm); not at all
 * while it presses and a tier above threatens. */
static void cc_grow(struct capctl *c, const bool *active, struct cc_tier *t, int64_t dt_us,
                    int64_t now)
{
    if (t->limit >= t->cfg.max)
        return;
    if (t->released && !t->pressing) {
        t->limit = t->cfg.max; /* its traffic is light now: the limit protects nobody */
        return;
    }
    double step = t->cfg.max * (double)dt_us / (double)c->cfg.recovery_us;
    if (t->pressing) {
        if (cc_threat_above(c, active, t->cfg.priority, false) > 1)
            return;
        int64_t last = cc_last_threat_above(c, active, t->cfg.priority);
        if (last > 0 && now - last < CAPCTL_CALM_US)
            step /= CAPCTL_PROBE;
    }
    t->limit += step;
    if (t->limit > t->cfg.max)
        t->limit = t->cfg.max;
}

/* The limit went from was to t->limit: a pause pending on the old one is rescaled to the new
 * one (a tier grown back is not held by pauses its cut imposed), or dropped when the tier is
 * no longer paced. */
static void cc_repace(struct cc_tier *t, double was, int64_t now)
{
    bool paced =
        atomic_load_explicit(&t->gated, memory_order_relaxed) && t->limit > 0 && t->limit < 1;
    int64_t cur = atomic_load_explicit(&t->next_free_us, memory_order_relaxed);
    for (;;) {
        int64_t next = 0;
        if (paced && cur > now && was > 0 && was < 1) {
            double rest = (double)(cur - now) * (1.0 / t->limit - 1.0) / (1.0 / was - 1.0);
            next = now + (rest < CAPCTL_PAUSE_MAX_US ? (int64_t)rest : CAPCTL_PAUSE_MAX_US);
        } else if (paced) {
            return; /* nothing pending, or nothing to rescale from */
        }
        if (next == cur ||
            atomic_compare_exchange_weak_explicit(&t->next_free_us, &cur, next,
                                                  memory_order_relaxed, memory_order_relaxed))
            return;
    }
}

/* Log the start and the end of tier t's episodes of threats: one begins with a verdict that
 * threatens, and ends once none has for CAPCTL_EPISODE_QUIET_US (so a tier that flaps at its
 * threshold logs two lines, not two per interval). Returns whether one began or ended. */
static bool cc_log_episode(struct cc_tier *t, const char *name, int64_t now)
{
    if (t->threatened && !t->episode) {
        t->episode = true;
        t->episode_us = now;
        t->episode_threatened_us = t->threatened_us;
        if (name)
            log_info("capacity_objective",
                     "tier %s: threatening its objective%s: typical latency %.3f ms (level %.3f "
                     "ms, threshold %.3f ms), p99 %.3f ms (objective %.0f ms)",
                     name, t->blamed ? "" : " (its clear requests too: nothing below is cut)",
                     t->mean_us / 1000.0, t->judged_level_us / 1000.0, t->judged_thr_us / 1000.0,
                     t->p99_us / 1000.0, (double)t->cfg.objective_us / 1000.0);
        return true;
    }
    if (!t->episode || t->threatened || now - t->last_threat_us < CAPCTL_EPISODE_QUIET_US)
        return false;
    t->episode = false;
    if (name)
        log_info("capacity_objective",
                 "tier %s: within its objective again; threatened %.1f s of the last %.1f s", name,
                 (double)(t->threatened_us - t->episode_threatened_us) / 1e6,
                 (double)(t->threat_end_us - t->episode_us) / 1e6);
    return true;
}

/* Log the tiers that started or stopped shedding or threatening; returns how many did. */
static int cc_log_changes(struct capctl *c, const char *const *names, int64_t now)
{
    int changed = 0;
    for (size_t i = 0; i < c->ntiers; i++) {
        struct cc_tier *t = &c->tier[i];
        changed += cc_log_episode(t, names ? names[i] : NULL, now);
        /* Shedding episodes are logged the same way: from the first cut to a quiet second. */
        bool shedding =
            atomic_load_explicit(&t->gated, memory_order_relaxed) && t->limit < t->cfg.max;
        if (shedding)
            t->last_shed_us = now;
        if (shedding == t->shed_episode ||
            (!shedding && now - t->last_shed_us < CAPCTL_EPISODE_QUIET_US))
            continue;
        t->shed_episode = shedding;
        changed++;
        if (!names)
            continue;
        if (shedding)
            log_info("capacity_shed",
                     "tier %s: shedding, limit %.2f of %.0f (a higher tier threatens its "
                     "objective; this one's usage %.2f)",
                     names[i], t->limit, t->cfg.max, t->usage);
        else
            log_info("capacity_shed", "tier %s: no longer shedding", names[i]);
    }
    return changed;
}

int capctl_tick(struct capctl *c, int64_t now_us, const char *const *names)
{
    bool active[CAPCTL_MAX_TIERS];
    pthread_mutex_lock(&c->mutex);
    int64_t dt = c->last_tick_us > 0 && now_us > c->last_tick_us ? now_us - c->last_tick_us : 0;
    c->last_tick_us = now_us;
    cc_assess(c, now_us, dt, active);
    double was[CAPCTL_MAX_TIERS];
    for (size_t i = 0; i < c->ntiers; i++)
        was[i] = c->tier[i].limit;
    int cut = cc_cut(c, active);
    for (size_t i = 0; i < c->ntiers; i++) {
        struct cc_tier *t = &c->tier[i];
        if ((int)i != cut)
            cc_grow(c, active, t, dt, now_us);
        cc_publish(t);
        cc_repace(t, was[i], now_us);
        t->remote.fresh = false; /* a remote threat cuts once per exchange */
    }
    int changed = cc_log_changes(c, names, now_us);
    pthread_mutex_unlock(&c->mutex);
    return changed;
}

void capctl_stats(struct capctl *c, size_t i, struct capctl_tier_stats *out)
{
    struct cc_tier *t = &c->tier[i];
    pthread_mutex_lock(&c->mutex);
    out->gated = atomic_load_explicit(&t->gated, memory_order_relaxed);
    out->limit = out->gated ? t->limit : t->cfg.max;
    out->shedding = out->gated && t->limit < t->cfg.max;
    out->threatened = t->threatened;
    out->pressing = t->pressing;
    out->usage = t->usage;
    out->mean_us = t->mean_us;
    out->p99_us = t->p99_us;
    out->level_us = t->level_us;
    out->threshold_us = t->judged_thr_us;
    out->objective_us = t->cfg.objective_us;
    out->threatened_us = t->threatened_us;
    out->active = t->active;
    out->last_threat_us = t->last_threat_us;
    out->threat_pressure = t->threat_pressure;
    out->blamed = t->blamed;
    out->last_blame_us = t->last_blame_us;
    out->blame_pressure = t->blame_pressure;
    out->pressure = t->pressure;
    out->remote_active = t->remote.active;
    out->remote_threatened = t->remote.threatened;
    out->remote_pressing = t->remote.pressing;
    pthread_mutex_unlock(&c->mutex);
    out->in_progress = atomic_load_explicit(&t->in_progress, memory_order_relaxed);
    out->admitted = atomic_load_explicit(&t->admitted, memory_order_relaxed);
    out->shed = atomic_load_explicit(&t->shed, memory_order_relaxed);
}

void capctl_remote(struct capctl *c, size_t i, const struct capctl_remote *r)
{
    struct cc_tier *t = &c->tier[i];
    pthread_mutex_lock(&c->mutex);
    if (r)
        t->remote = *r;
    else
        memset(&t->remote, 0, sizeof(t->remote));
    atomic_store_explicit(&t->remote_pressing, t->remote.pressing, memory_order_relaxed);
    pthread_mutex_unlock(&c->mutex);
}
