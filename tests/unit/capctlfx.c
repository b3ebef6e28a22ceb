/*
 * capctlfx: the capacity controller tests' fixture (see capctlfx.h).
 */
#include "capctlfx.h"

#include "capctl.h"

#include <pthread.h>
#include <setjmp.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

const struct capctl_cfg ccfx_cfg = {
    .enabled = true,
    .active_us = 1000 * CCFX_MS,
    .level_us = 60 * 1000 * CCFX_MS,
    .recovery_us = 1000 * CCFX_MS,
    .min_samples = 20,
    .decrease = 0.5,
};

/* The built-in tiers' settings (config/tiers.json), objectives at a tenth of the 3 s timeout. */
const struct capctl_tier_cfg ccfx_tiers[CCFX_NT] = {
    {.priority = 10,
     .max = 5,
     .floor = 0.1,
     .tolerance = 1.0,
     .margin_us = 100,
     .objective_us = 300 * CCFX_MS},
    {.priority = 20,
     .max = 20,
     .floor = 2,
     .tolerance = 1.0,
     .margin_us = 100,
     .objective_us = 300 * CCFX_MS},
    {.priority = 30,
     .max = 50,
     .floor = 25,
     .tolerance = 0.5,
     .margin_us = 50,
     .objective_us = 300 * CCFX_MS},
};

void ccfx_sim_init(struct ccfx_sim *s, const struct capctl_tier_cfg *tc)
{
    memset(s, 0, sizeof(*s));
    assert_int_equal(capctl_create(&ccfx_cfg, CCFX_NT, &s->c), 0);
    for (size_t i = 0; i < CCFX_NT; i++)
        capctl_configure(s->c, i, &tc[i]);
    s->now = 1000 * 1000 * CCFX_MS;
    s->rng = 42;
}

static int64_t sim_rand(struct ccfx_sim *s, int64_t span)
{
    s->rng ^= s->rng << 13;
    s->rng ^= s->rng >> 7;
    s->rng ^= s->rng << 17;
    return span > 0 ? (int64_t)(s->rng % (uint64_t)(2 * span + 1)) - span : 0;
}

/* End every request that ends at or before t, earliest first. */
void ccfx_sim_until(struct ccfx_sim *s, int64_t t)
{
    for (;;) {
        size_t best = s->nrun;
        for (size_t k = 0; k < s->nrun; k++)
            if (s->run[k].end <= t && (best == s->nrun || s->run[k].end < s->run[best].end))
                best = k;
        if (best == s->nrun)
            return;
        struct ccfx_running r = s->run[best];
        s->run[best] = s->run[--s->nrun];
        capctl_leave(s->c, r.tier, r.start, r.end);
        capctl_observe(s->c, r.tier, r.end - r.start, r.end);
    }
}

static int sim_running(const struct ccfx_sim *s, size_t tier)
{
    int n = 0;
    for (size_t k = 0; k < s->nrun; k++)
        n += s->run[k].tier == tier;
    return n;
}

/* A request of tier i arriving at t (after every earlier one): admitted or shed. */
static bool sim_arrive(struct ccfx_sim *s, size_t i, int64_t t, const struct ccfx_flow *f)
{
    ccfx_sim_until(s, t);
    int64_t retry = 0;
    if (!capctl_enter(s->c, i, t, &retry)) {
        s->shed[i]++;
        s->last_retry = retry;
        return false;
    }
    int64_t lat = f->lat + sim_rand(s, f->jitter);
    for (size_t j = 0; j < i && f->per_lower; j++)
        lat += f->per_lower * sim_running(s, j);
    assert_true(s->nrun < sizeof(s->run) / sizeof(s->run[0]));
    s->run[s->nrun++] = (struct ccfx_running){t, t + (lat > 1 ? lat : 1), i};
    s->served[i]++;
    return true;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* One interval of the three flows (n = 0: that tier sends nothing), then the tick. */
void ccfx_sim_interval(struct ccfx_sim *s, const struct ccfx_flow f[CCFX_NT])
{
    static int64_t ev[3 * 4096]; /* arrival time x 4 + tier, sorted */
    size_t nev = 0;
    for (size_t i = 0; i < CCFX_NT; i++)
        for (int k = 0; k < f[i].n; k++)
            ev[nev++] = (s->now + (int64_t)k * CCFX_IV / f[i].n + (int64_t)i) * 4 + (int64_t)i;
    qsort(ev, nev, sizeof(ev[0]), cmp_i64);
    for (size_t e = 0; e < nev; e++)
        (void)sim_arrive(s, (size_t)(ev[e] % 4), ev[e] / 4, &f[ev[e] % 4]);
    s->now += CCFX_IV;
    ccfx_sim_until(s, s->now);
    (void)capctl_tick(s->c, s->now, NULL);
    if (getenv("CAPCTL_TRACE")) { /* one line per interval, to see what a failing test saw */
        struct capctl_tier_stats fs, es;
        capctl_stats(s->c, CCFX_FREE, &fs);
        capctl_stats(s->c, CCFX_ENT, &es);
        printf("# %6.1f s free %.3f usage %.3f%s shed %llu | ent typical %.0f level %.0f "
               "threshold %.0f p99 %.0f%s\n",
               (double)(s->now % (1000 * 1000 * CCFX_MS)) / 1e6, fs.limit, fs.usage,
               fs.pressing ? " pressing" : "", (unsigned long long)s->shed[CCFX_FREE], es.mean_us,
               es.level_us, es.threshold_us, es.p99_us, es.threatened ? " THREATENED" : "");
    }
}

void ccfx_sim_run(struct ccfx_sim *s, int intervals, const struct ccfx_flow f[CCFX_NT])
{
    for (int k = 0; k < intervals; k++)
        ccfx_sim_interval(s, f);
}

struct capctl_tier_stats ccfx_stats(const struct ccfx_sim *s, size_t i)
{
    struct capctl_tier_stats st;
    capctl_stats(s->c, i, &st);
    return st;
}

double ccfx_limit_of(const struct ccfx_sim *s, size_t i)
{
    return ccfx_stats(s, i).limit;
}

/* Enterprise past its p99 objective (1 ms here) however its level moves, beside free's storm:
 * free is cut to floor. Returns the controller's tiers as configured. */
const struct capctl_tier_cfg *ccfx_threaten_to(struct ccfx_sim *s, double floor)
{
    static struct capctl_tier_cfg tc[CCFX_NT];
    memcpy(tc, ccfx_tiers, sizeof(tc));
    tc[CCFX_FREE].floor = floor;
    tc[CCFX_ENT].objective_us = 1 * CCFX_MS;
    ccfx_sim_init(s, tc);
    ccfx_sim_run(s, 50, (struct ccfx_flow[]){CCFX_QUIET, CCFX_QUIET, CCFX_ENT_HOT});
    for (int k = 0; k < 100 && ccfx_limit_of(s, CCFX_FREE) > floor; k++)
        ccfx_sim_interval(s, (struct ccfx_flow[]){CCFX_FREE_STORM, CCFX_QUIET, {200, 2000, 0, 0}});
    assert_true(ccfx_limit_of(s, CCFX_FREE) == floor);
    assert_true(ccfx_stats(s, CCFX_ENT).threatened);
    return tc;
}
