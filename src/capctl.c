/*
 * capctl: latency histograms per tier, the interval verdict, and the admission gate (see
 * capctl.h for the rule and the threads).
 *
 * A tier's latencies land in a histogram of quarter-octave buckets (bucket k holds
 * [2^(k/4), 2^((k+1)/4)) us, so a median is known to within 19 %, well inside any tolerance).
 * The controller keeps the histogram as of its last verdict and reads the difference: an
 * interval's median. A tier with too few latencies gets no verdict until it has enough or
 * CAPCTL_MAX_WAIT intervals have passed. The baseline is the lowest verdict median over the
 * baseline window, kept as CAPCTL_SLOTS slots of that window each holding its own minimum.
 */
#include "capctl.h"
#include "log.h"
#include "xalloc.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#define CAPCTL_BUCKETS  100     /* up to 2^25 us: half a minute */
#define CAPCTL_SLOTS    30      /* baseline window slots */
#define CAPCTL_MAX_WAIT 10      /* intervals a quiet tier may take to gather its samples */
#define CAPCTL_UNIT     1000000 /* limits travel to the request path in millionths */

struct cc_tier {
    /* Request path: atomics only. */
    _Atomic int64_t limit_u;      /* limit x CAPCTL_UNIT; at or above max: no limit */
    _Atomic int64_t max_u;        /* max x CAPCTL_UNIT */
    atomic_bool gated;            /* a higher-priority tier is active */
    _Atomic int64_t next_free_us; /* pacing (limit < 1): no admission before this */
    atomic_int_least64_t in_progress;
    _Atomic int64_t last_seen_us; /* the last request's arrival */
    atomic_uint_least64_t hist[CAPCTL_BUCKETS];
    atomic_uint_least64_t admitted, shed;

    /* Controller: guarded by capctl.mutex. */
    struct capctl_tier_cfg cfg;
    double limit;
    uint64_t prev[CAPCTL_BUCKETS]; /* the histogram at the last verdict */
    int waited;                    /* intervals since the last verdict */
    uint64_t pending;              /* latencies since the last verdict (0: nothing served) */
    bool verdict;                  /* this interval gave one */
    bool congested;                /* the last verdict's: ratio > 1 */
    double ratio;                  /* the last verdict's median / (baseline x (1 + tolerance)) */
    double median_us;              /* the last verdict's median */
    double baseline_us;            /* the lowest median of the window (0: none yet) */
    double slot_min[CAPCTL_SLOTS]; /* lowest median of each baseline slot (0: none) */
    int64_t slot_epoch[CAPCTL_SLOTS];
    bool shedding;
};

struct capctl {
    struct capctl_cfg cfg;
    size_t ntiers;
    pthread_mutex_t mutex; /* guards the controller fields of every tier */
    struct cc_tier tier[CAPCTL_MAX_TIERS];
};

int capctl_create(const struct capctl_cfg *cfg, size_t ntiers, struct capctl **out)
{
    if (ntiers == 0 || ntiers > CAPCTL_MAX_TIERS)
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
    if (first || t->limit > t->cfg.max)
        t->limit = t->cfg.max;
    if (t->limit < t->cfg.floor)
        t->limit = t->cfg.floor;
    atomic_store_explicit(&t->max_u, (int64_t)(t->cfg.max * (double)CAPCTL_UNIT),
                          memory_order_relaxed);
    cc_publish(t);
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
            if (n >= cap || paced) {
                atomic_fetch_add_explicit(&t->shed, 1, memory_order_relaxed);
                *retry_us = paced ? free_at - now_us : 0;
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
    int64_t lim = atomic_load_explicit(&t->limit_u, memory_order_relaxed);
    if (lim <= 0 || lim >= CAPCTL_UNIT || !atomic_load_explicit(&t->gated, memory_order_relaxed))
        return;
    /* The slot was busy d: it stays idle d x (1/limit - 1), so it is busy `limit` of the time. */
    double d = (double)(now_us - entered_us);
    int64_t free_at = now_us + (int64_t)(d * ((double)CAPCTL_UNIT / (double)lim - 1.0));
    int64_t cur = atomic_load_explicit(&t->next_free_us, memory_order_relaxed);
    while (cur < free_at &&
           !atomic_compare_exchange_weak_explicit(&t->next_free_us, &cur, free_at,
                                                  memory_order_relaxed, memory_order_relaxed))
        ;
}

/* The quarter-octave bucket of us: 4 * floor(log2 us) plus the quarter it falls in. */
static size_t cc_bucket(int64_t us)
{
    if (us < 1)
        return 0;
    int e = 63 - __builtin_clzll((unsigned long long)us);
    uint64_t m = e >= 10 ? (uint64_t)us >> (e - 10) : (uint64_t)us << (10 - e); /* [1024, 2048) */
    size_t q = (m >= 1218) + (m >= 1448) + (m >= 1722); /* 2^(1/4), 2^(2/4), 2^(3/4) */
    size_t k = 4 * (size_t)e + q;
    return k < CAPCTL_BUCKETS ? k : CAPCTL_BUCKETS - 1;
}

/* The middle of bucket k, in us. */
static double cc_bucket_mid(size_t k)
{
    return exp2(((double)k + 0.5) / 4.0);
}

void capctl_observe(struct capctl *c, size_t i, int64_t latency_us)
{
    atomic_fetch_add_explicit(&c->tier[i].hist[cc_bucket(latency_us)], 1, memory_order_relaxed);
}

/* ---- the verdict ------------------------------------------------------------------------- */

/* Read tier t's latencies since its last verdict; set t->verdict and t->median_us. */
static void cc_read(const struct capctl *c, struct cc_tier *t)
{
    uint64_t now[CAPCTL_BUCKETS], n = 0;
    for (size_t k = 0; k < CAPCTL_BUCKETS; k++) {
        now[k] = atomic_load_explicit(&t->hist[k], memory_order_relaxed);
        n += now[k] - t->prev[k];
    }
    t->pending = n;
    t->verdict = n >= c->cfg.min_samples || (n > 0 && ++t->waited >= CAPCTL_MAX_WAIT);
    if (!t->verdict)
        return;
    uint64_t half = (n + 1) / 2, seen = 0;
    for (size_t k = 0; k < CAPCTL_BUCKETS; k++) {
        seen += now[k] - t->prev[k];
        if (seen >= half) {
            t->median_us = cc_bucket_mid(k);
            break;
        }
    }
    memcpy(t->prev, now, sizeof(now));
    t->waited = 0;
}

/* Fold a verdict's median into the baseline window; return the baseline (0: none). */
static double cc_baseline(const struct capctl *c, struct cc_tier *t, int64_t now_us)
{
    int64_t slot_us = c->cfg.baseline_us / CAPCTL_SLOTS;
    if (slot_us < 1)
        slot_us = 1;
    int64_t epoch = now_us / slot_us;
    size_t s = (size_t)(epoch % CAPCTL_SLOTS);
    if (t->verdict) {
        if (t->slot_epoch[s] != epoch || t->slot_min[s] <= 0 || t->median_us < t->slot_min[s])
            t->slot_min[s] = t->median_us;
        t->slot_epoch[s] = epoch;
    }
    double base = 0;
    for (size_t k = 0; k < CAPCTL_SLOTS; k++)
        if (t->slot_min[k] > 0 && epoch - t->slot_epoch[k] < CAPCTL_SLOTS &&
            (base == 0 || t->slot_min[k] < base))
            base = t->slot_min[k];
    return base;
}

static bool cc_active(const struct cc_tier *t, int64_t now_us, int64_t active_us)
{
    return atomic_load_explicit(&t->in_progress, memory_order_relaxed) > 0 ||
           now_us - atomic_load_explicit(&t->last_seen_us, memory_order_relaxed) < active_us;
}

/* The worst ratio, among tiers above priority p that are active and gave a verdict this
 * interval, of median to target (> 1: congested); 0 when none is congested. */
static double cc_pressure_above(const struct capctl *c, const bool *active, int64_t p)
{
    double worst = 0;
    for (size_t i = 0; i < c->ntiers; i++) {
        const struct cc_tier *u = &c->tier[i];
        if (active[i] && u->cfg.priority > p && u->verdict && u->ratio > 1 && u->ratio > worst)
            worst = u->ratio;
    }
    return worst;
}

/* Whether tier t may grow back: no tier above it is active, or among the active ones above it
 * none is congested in a verdict of this interval and at least one gave a verdict. A tier above
 * that is active but idle (nothing in progress, nothing served since its last verdict) has no
 * complaint: it neither blocks nor is needed (a verdict from before it went quiet is stale). */
static bool cc_may_grow(const struct capctl *c, const bool *active, const struct cc_tier *t)
{
    bool above = false, verdict = false;
    for (size_t i = 0; i < c->ntiers; i++) {
        const struct cc_tier *u = &c->tier[i];
        if (!active[i] || u->cfg.priority <= t->cfg.priority)
            continue;
        if (!u->verdict && u->pending == 0 &&
            atomic_load_explicit(&u->in_progress, memory_order_relaxed) == 0)
            continue;
        above = true;
        verdict |= u->verdict;
        if (u->verdict && u->congested)
            return false;
    }
    return !above || verdict;
}

/* Read every tier: activity, this interval's verdict, baseline, congestion; set the gates. */
static void cc_assess(struct capctl *c, int64_t now_us, bool *active)
{
    for (size_t i = 0; i < c->ntiers; i++) {
        struct cc_tier *t = &c->tier[i];
        active[i] = cc_active(t, now_us, c->cfg.active_us);
        cc_read(c, t);
        t->baseline_us = cc_baseline(c, t, now_us);
        if (t->verdict) {
            double target = t->baseline_us * (1.0 + t->cfg.tolerance);
            t->ratio = target > 0 ? t->median_us / target : 0;
            t->congested = t->ratio > 1;
        }
    }
    for (size_t i = 0; i < c->ntiers; i++) {
        bool gated = false;
        for (size_t j = 0; j < c->ntiers && c->cfg.enabled; j++)
            gated |= active[j] && c->tier[j].cfg.priority > c->tier[i].cfg.priority;
        atomic_store_explicit(&c->tier[i].gated, gated, memory_order_relaxed);
    }
}

/* Cut the lowest-priority active, gated tier above its floor that has pressure above it. Returns
 * its index, or -1. */
static int cc_cut(struct capctl *c, const bool *active)
{
    int pick = -1;
    double pressure = 0;
    for (size_t i = 0; i < c->ntiers; i++) {
        struct cc_tier *t = &c->tier[i];
        if (!active[i] || !atomic_load_explicit(&t->gated, memory_order_relaxed) ||
            t->limit <= t->cfg.floor)
            continue;
        double p = cc_pressure_above(c, active, t->cfg.priority);
        if (p > 1 && (pick < 0 || t->cfg.priority < c->tier[pick].cfg.priority)) {
            pick = (int)i;
            pressure = p;
        }
    }
    if (pick >= 0) {
        struct cc_tier *t = &c->tier[pick];
        double factor = 1.0 / pressure > c->cfg.decrease ? 1.0 / pressure : c->cfg.decrease;
        double from = t->limit < t->cfg.max ? t->limit : t->cfg.max;
        t->limit = from * factor > t->cfg.floor ? from * factor : t->cfg.floor;
    }
    return pick;
}

/* Log the tiers that started or stopped shedding; returns how many did. */
static int cc_log_changes(struct capctl *c, const char *const *names)
{
    int changed = 0;
    for (size_t i = 0; i < c->ntiers; i++) {
        struct cc_tier *t = &c->tier[i];
        bool shedding =
            atomic_load_explicit(&t->gated, memory_order_relaxed) && t->limit < t->cfg.max;
        if (shedding == t->shedding)
            continue;
        t->shedding = shedding;
        changed++;
        if (!names)
            continue;
        if (shedding)
            log_info("capacity_shed",
                     "tier %s: shedding, limit %.2f of %.0f (a higher tier's latency is %.1fx "
                     "its baseline)",
                     names[i], t->limit, t->cfg.max, t->ratio > 0 ? t->ratio : 0.0);
        else
            log_info("capacity_shed", "tier %s: no longer shedding", names[i]);
    }
    return changed;
}

int capctl_tick(struct capctl *c, int64_t now_us, const char *const *names)
{
    bool active[CAPCTL_MAX_TIERS];
    pthread_mutex_lock(&c->mutex);
    cc_assess(c, now_us, active);
    int cut = cc_cut(c, active);
    for (size_t i = 0; i < c->ntiers; i++) {
        struct cc_tier *t = &c->tier[i];
        if ((int)i != cut && t->limit < t->cfg.max && cc_may_grow(c, active, t)) {
            t->limit += c->cfg.increase * t->cfg.max;
            if (t->limit > t->cfg.max)
                t->limit = t->cfg.max;
        }
        cc_publish(t);
    }
    int changed = cc_log_changes(c, names);
    pthread_mutex_unlock(&c->mutex);
    return changed;
}

void capctl_stats(struct capctl *c, size_t i, struct capctl_tier_stats *out)
{
    struct cc_tier *t = &c->tier[i];
    pthread_mutex_lock(&c->mutex);
    out->gated = atomic_load_explicit(&t->gated, memory_order_relaxed);
    out->limit = out->gated ? t->limit : t->cfg.max;
    out->shedding = t->shedding;
    out->congested = t->congested;
    out->median_us = t->median_us;
    out->baseline_us = t->baseline_us;
    pthread_mutex_unlock(&c->mutex);
    out->in_progress = atomic_load_explicit(&t->in_progress, memory_order_relaxed);
    out->admitted = atomic_load_explicit(&t->admitted, memory_order_relaxed);
    out->shed = atomic_load_explicit(&t->shed, memory_order_relaxed);
}
