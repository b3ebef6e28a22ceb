/*
 * test_capctl: the capacity controller (capctl.h) on injected latencies and an injected clock.
 *
 * Three tiers as built in (free < pro < enterprise), driven by a small simulation: requests
 * arrive spread over each 100 ms interval, are admitted or shed by the gate, hold their slot
 * for their latency (so a limit binds on concurrency, as in the server) and are observed when
 * they end; a tick closes every interval. Covered:
 * - work-conserving: a tier with nothing above it is never limited, however slow;
 * - light, jittery load never cuts, however sparse the tier above and however far its latency
 *   sits above the level it had while hot (issue 31), and a tier that does not press is never
 *   cut even when the tier above threatens its objective;
 * - a storm cuts the lowest pressing tier first, down to its floor and never below, then the
 *   next one up; enterprise is never cut; a p99 past the objective threatens on its own;
 * - the storm's end: growth back to the maximum within the stated bound, also while the tier
 *   above sends too few requests for a verdict; a quiet tier above does not keep the cut;
 * - a floor of 0 closes the tier and it reopens; pacing below one request, bounded to
 *   CAPCTL_PAUSE_MAX_US and rescaled when the limit moves (issue 26, item 6);
 * - time threatened is counted, and the threshold shown is the one the verdict was judged by;
 * - on a simulated database the limit settles in a band;
 * - the request path on several threads beside the verdicts (and a reload) keeps its counts
 *   (run under ThreadSanitizer by scripts/test.sh).
 */
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

#define MS 1000ll
#define IV (100 * MS) /* the tick interval of these tests */

enum { FREE, PRO, ENT, NT };

static const struct capctl_cfg cfg = {
    .enabled = true,
    .active_us = 1000 * MS,
    .level_us = 60 * 1000 * MS,
    .recovery_us = 1000 * MS,
    .min_samples = 20,
    .decrease = 0.5,
};

/* The built-in tiers' settings (config/tiers.json), objectives at a tenth of the 3 s timeout. */
static const struct capctl_tier_cfg tiers[NT] = {
    {.priority = 10,
     .max = 5,
     .floor = 0.1,
     .tolerance = 1.0,
     .margin_us = 100,
     .objective_us = 300 * MS},
    {.priority = 20,
     .max = 20,
     .floor = 2,
     .tolerance = 1.0,
     .margin_us = 100,
     .objective_us = 300 * MS},
    {.priority = 30,
     .max = 50,
     .floor = 25,
     .tolerance = 0.5,
     .margin_us = 50,
     .objective_us = 300 * MS},
};

/* ---- the simulation ------------------------------------------------------------------------ */

/* One tier's traffic in an interval: n requests spread evenly, each served in lat us plus up
 * to +-jitter, plus per_lower us for every request of a lower tier running when it arrives (a
 * shared machine). */
struct flow {
    int n;
    int64_t lat, jitter, per_lower;
};

struct running {
    int64_t start, end;
    size_t tier;
};

struct sim {
    struct capctl *c;
    int64_t now; /* the start of the next interval */
    struct running run[4096];
    size_t nrun;
    uint64_t rng;
    uint64_t shed[NT], served[NT];
    int64_t last_retry; /* of the last refusal */
};

static void sim_init(struct sim *s, const struct capctl_tier_cfg *tc)
{
    memset(s, 0, sizeof(*s));
    assert_int_equal(capctl_create(&cfg, NT, &s->c), 0);
    for (size_t i = 0; i < NT; i++)
        capctl_configure(s->c, i, &tc[i]);
    s->now = 1000 * 1000 * MS;
    s->rng = 42;
}

static int64_t sim_rand(struct sim *s, int64_t span)
{
    s->rng ^= s->rng << 13;
    s->rng ^= s->rng >> 7;
    s->rng ^= s->rng << 17;
    return span > 0 ? (int64_t)(s->rng % (uint64_t)(2 * span + 1)) - span : 0;
}

/* End every request that ends at or before t, earliest first. */
static void sim_until(struct sim *s, int64_t t)
{
    for (;;) {
        size_t best = s->nrun;
        for (size_t k = 0; k < s->nrun; k++)
            if (s->run[k].end <= t && (best == s->nrun || s->run[k].end < s->run[best].end))
                best = k;
        if (best == s->nrun)
            return;
        struct running r = s->run[best];
        s->run[best] = s->run[--s->nrun];
        capctl_leave(s->c, r.tier, r.start, r.end);
        capctl_observe(s->c, r.tier, r.end - r.start, r.end);
    }
}

static int sim_running(const struct sim *s, size_t tier)
{
    int n = 0;
    for (size_t k = 0; k < s->nrun; k++)
        n += s->run[k].tier == tier;
    return n;
}

/* A request of tier i arriving at t (after every earlier one): admitted or shed. */
static bool sim_arrive(struct sim *s, size_t i, int64_t t, const struct flow *f)
{
    sim_until(s, t);
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
    s->run[s->nrun++] = (struct running){t, t + (lat > 1 ? lat : 1), i};
    s->served[i]++;
    return true;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* One interval of the three flows (n = 0: that tier sends nothing), then the tick. */
static void sim_interval(struct sim *s, const struct flow f[NT])
{
    static int64_t ev[3 * 4096]; /* arrival time x 4 + tier, sorted */
    size_t nev = 0;
    for (size_t i = 0; i < NT; i++)
        for (int k = 0; k < f[i].n; k++)
            ev[nev++] = (s->now + (int64_t)k * IV / f[i].n + (int64_t)i) * 4 + (int64_t)i;
    qsort(ev, nev, sizeof(ev[0]), cmp_i64);
    for (size_t e = 0; e < nev; e++)
        (void)sim_arrive(s, (size_t)(ev[e] % 4), ev[e] / 4, &f[ev[e] % 4]);
    s->now += IV;
    sim_until(s, s->now);
    (void)capctl_tick(s->c, s->now, NULL);
    if (getenv("CAPCTL_TRACE")) { /* one line per interval, to see what a failing test saw */
        struct capctl_tier_stats fs, es;
        capctl_stats(s->c, FREE, &fs);
        capctl_stats(s->c, ENT, &es);
        printf("# %6.1f s free %.3f usage %.3f%s shed %llu | ent typical %.0f level %.0f "
               "threshold %.0f p99 %.0f%s\n",
               (double)(s->now % (1000 * 1000 * MS)) / 1e6, fs.limit, fs.usage,
               fs.pressing ? " pressing" : "", (unsigned long long)s->shed[FREE], es.mean_us,
               es.level_us, es.threshold_us, es.p99_us, es.threatened ? " THREATENED" : "");
    }
}

static void sim_run(struct sim *s, int intervals, const struct flow f[NT])
{
    for (int k = 0; k < intervals; k++)
        sim_interval(s, f);
}

static struct capctl_tier_stats stats(const struct sim *s, size_t i)
{
    struct capctl_tier_stats st;
    capctl_stats(s->c, i, &st);
    return st;
}

static double limit_of(const struct sim *s, size_t i)
{
    return stats(s, i).limit;
}

/* Traffic shapes (per 100 ms). */
#define QUIET                                                                                      \
    {                                                                                              \
        0, 0, 0, 0                                                                                 \
    }
#define ENT_HOT                                                                                    \
    {                                                                                              \
        200, 90, 10, 0                                                                             \
    } /* a closed loop: 2,000 req/s at 0.09 ms */
#define ENT_SPARSE                                                                                 \
    {                                                                                              \
        3, 350, 150, 0                                                                             \
    } /* 30 req/s at 0.2-0.5 ms: a sparse client */
#define FREE_LIGHT                                                                                 \
    {                                                                                              \
        8, 300, 100, 0                                                                             \
    } /* 80 req/s at 0.3 ms: 0.024 requests in progress */
#define FREE_STORM                                                                                 \
    {                                                                                              \
        100, 5000, 1000, 0                                                                         \
    } /* offers 5 requests in progress */

/* ---- tests ---------------------------------------------------------------------------------- */

static void a_tier_with_nobody_above_is_never_limited(void **state)
{
    (void)state;
    struct sim s;
    sim_init(&s, tiers);
    /* free alone, a storm of slow requests: nothing above it to protect. */
    sim_run(&s, 50, (struct flow[]){{100, 20000, 0, 0}, QUIET, QUIET});
    assert_false(stats(&s, FREE).gated);
    assert_true(limit_of(&s, FREE) == 5);
    assert_int_equal(s.shed[FREE], 0);
    capctl_destroy(s.c);
}

static void light_jittery_load_never_cuts_however_sparse_the_tier_above(void **state)
{
    (void)state;
    struct sim s;
    sim_init(&s, tiers);
    /* Enterprise hot first: its level is 0.09 ms. */
    sim_run(&s, 50, (struct flow[]){QUIET, QUIET, ENT_HOT});
    assert_true(stats(&s, ENT).level_us < 120);
    /* Then light traffic for a minute: enterprise sparse, four times slower than its hot level
     * and jittery, free light over many tenants. Nobody is cut, nothing is shed. */
    for (int k = 0; k < 600; k++) {
        sim_interval(&s, (struct flow[]){FREE_LIGHT, QUIET, ENT_SPARSE});
        assert_true(limit_of(&s, FREE) == 5);
        assert_false(stats(&s, FREE).pressing);
    }
    assert_true(stats(&s, FREE).gated);
    assert_int_equal(s.shed[FREE], 0);
    /* The level followed the sparse client's latency: enterprise no longer reads as threatened,
     * and was so for a moment at most. */
    assert_false(stats(&s, ENT).threatened);
    assert_true(stats(&s, ENT).level_us > 250);
    assert_true(stats(&s, ENT).threatened_us < 5 * 1000 * MS);
    capctl_destroy(s.c);
}

static void a_tier_that_does_not_press_is_not_cut(void **state)
{
    (void)state;
    struct sim s;
    sim_init(&s, tiers);
    sim_run(&s, 50, (struct flow[]){FREE_LIGHT, QUIET, ENT_HOT});
    /* Enterprise's own queries turn 50 times slower: it threatens its objective, but free's
     * light traffic is not what threatens it, so free is left alone. */
    sim_run(&s, 3, (struct flow[]){FREE_LIGHT, QUIET, {200, 5000, 100, 0}});
    assert_true(stats(&s, ENT).threatened);
    sim_run(&s, 100, (struct flow[]){FREE_LIGHT, QUIET, {200, 5000, 100, 0}});
    assert_true(limit_of(&s, FREE) == 5);
    assert_int_equal(s.shed[FREE], 0);
    /* Nothing presses below it: its level follows, within seconds it is not threatened. */
    assert_false(stats(&s, ENT).threatened);
    capctl_destroy(s.c);
}

static void a_storm_cuts_the_lowest_pressing_tier_first_and_never_below_its_floor(void **state)
{
    (void)state;
    struct sim s;
    sim_init(&s, tiers);
    const struct flow pro = {40, 2000, 500, 0}; /* 0.8 in progress: pressing */
    sim_run(&s, 50, (struct flow[]){FREE_STORM, pro, ENT_HOT});
    assert_true(stats(&s, FREE).gated && stats(&s, PRO).gated && !stats(&s, ENT).gated);
    assert_true(limit_of(&s, FREE) == 5 && limit_of(&s, PRO) == 20);
    assert_true(stats(&s, FREE).pressing && stats(&s, PRO).pressing);
    /* Every request of theirs running slows enterprise by 5 ms: free is cut, pro untouched
     * while free can give. */
    const struct flow slow = {200, 90, 10, 5000};
    int k = 0;
    while (limit_of(&s, FREE) > 0.1 && k++ < 50) {
        sim_interval(&s, (struct flow[]){FREE_STORM, pro, slow});
        assert_true(limit_of(&s, PRO) == 20);
    }
    assert_true(limit_of(&s, FREE) == 0.1); /* the floor, not below */
    assert_true(k <= 10);
    assert_true(s.shed[FREE] > 0);
    /* Still threatened: now pro is cut, to its floor of 2 at the least; enterprise never. */
    sim_run(&s, 30, (struct flow[]){FREE_STORM, pro, slow});
    assert_true(limit_of(&s, PRO) == 2);
    assert_true(limit_of(&s, FREE) == 0.1);
    assert_false(stats(&s, ENT).gated);
    assert_true(limit_of(&s, ENT) == 50);
    assert_int_equal(s.shed[ENT], 0);
    capctl_destroy(s.c);
}

static void a_p99_past_the_objective_threatens_on_its_own(void **state)
{
    (void)state;
    struct capctl_tier_cfg tc[NT];
    memcpy(tc, tiers, sizeof(tc));
    tc[ENT].objective_us = 10 * MS;
    struct sim s;
    sim_init(&s, tc);
    sim_run(&s, 50, (struct flow[]){FREE_STORM, QUIET, ENT_HOT});
    assert_false(stats(&s, ENT).threatened);
    /* The median does not move, but one request in fifty takes 50 ms: past the objective. */
    struct flow ent = ENT_HOT;
    ent.n = 50;
    sim_interval(&s, (struct flow[]){FREE_STORM, QUIET, ent});
    for (int k = 0; k < 3; k++) {
        assert_true(capctl_enter(s.c, ENT, s.now, &(int64_t){0}));
        capctl_leave(s.c, ENT, s.now, s.now + 50 * MS);
        capctl_observe(s.c, ENT, 50 * MS, s.now + 50 * MS);
        sim_interval(&s, (struct flow[]){FREE_STORM, QUIET, ent});
    }
    struct capctl_tier_stats st = stats(&s, ENT);
    assert_true(st.mean_us < 150);
    assert_true(st.p99_us > 10 * MS);
    assert_true(limit_of(&s, FREE) < 5);
    capctl_destroy(s.c);
}

/* Enterprise beside a storm: every free request running slows it by 5 ms. */
#define ENT_STORMED                                                                                \
    {                                                                                              \
        200, 90, 10, 5000                                                                          \
    }

/* A storm: free offers 5 requests in progress, each slowing enterprise, for three seconds:
 * free is cut until it runs about a tenth of the time (enterprise's typical latency leaves its
 * slowest tenth out), well below one request. */
static void storm_free(struct sim *s)
{
    sim_run(s, 50, (struct flow[]){QUIET, QUIET, ENT_HOT});
    sim_run(s, 30, (struct flow[]){FREE_STORM, QUIET, ENT_STORMED});
    assert_true(limit_of(s, FREE) <= 0.3);
    assert_true(stats(s, ENT).threatened_us > 0);
}

/* Enterprise past its p99 objective (1 ms here) however its level moves, beside free's storm:
 * free is cut to floor. Returns the controller's tiers as configured. */
static const struct capctl_tier_cfg *threaten_to(struct sim *s, double floor)
{
    static struct capctl_tier_cfg tc[NT];
    memcpy(tc, tiers, sizeof(tc));
    tc[FREE].floor = floor;
    tc[ENT].objective_us = 1 * MS;
    sim_init(s, tc);
    sim_run(s, 50, (struct flow[]){QUIET, QUIET, ENT_HOT});
    for (int k = 0; k < 100 && limit_of(s, FREE) > floor; k++)
        sim_interval(s, (struct flow[]){FREE_STORM, QUIET, {200, 2000, 0, 0}});
    assert_true(limit_of(s, FREE) == floor);
    assert_true(stats(s, ENT).threatened);
    return tc;
}

static void after_a_storm_free_is_back_at_its_max_within_two_seconds(void **state)
{
    (void)state;
    struct sim s;
    sim_init(&s, tiers);
    storm_free(&s);
    /* The storm ends; light traffic, enterprise sparse (far above the level it had while hot).
     * The bound the README states: 2 s. */
    int k = 0;
    while (limit_of(&s, FREE) < 5 && k < 100) {
        sim_interval(&s, (struct flow[]){FREE_LIGHT, QUIET, ENT_SPARSE});
        k++;
    }
    printf("# free back at its max %d ms after the storm\n", k * 100);
    assert_true(k * IV <= 2000 * MS);
    /* And it stays there. */
    uint64_t shed = s.shed[FREE];
    for (int n = 0; n < 300; n++) {
        sim_interval(&s, (struct flow[]){FREE_LIGHT, QUIET, ENT_SPARSE});
        assert_true(limit_of(&s, FREE) == 5);
    }
    assert_true(s.shed[FREE] == shed);
    capctl_destroy(s.c);
}

static void a_cut_tier_whose_traffic_turns_light_is_released_at_the_next_verdict(void **state)
{
    (void)state;
    struct sim s;
    sim_init(&s, tiers);
    storm_free(&s);
    /* The storm stops while enterprise is still busy (and its last verdict may threaten): the
     * first interval in which free's limit refused nothing and was barely used gives it all
     * back, before its light traffic meets the limit. */
    assert_true(limit_of(&s, FREE) < 5);
    sim_interval(&s, (struct flow[]){FREE_LIGHT, QUIET, ENT_HOT});
    sim_interval(&s, (struct flow[]){FREE_LIGHT, QUIET, ENT_HOT});
    assert_true(limit_of(&s, FREE) == 5);
    uint64_t shed = s.shed[FREE];
    sim_run(&s, 100, (struct flow[]){FREE_LIGHT, QUIET, ENT_HOT});
    assert_true(s.shed[FREE] == shed);
    assert_true(limit_of(&s, FREE) == 5);
    capctl_destroy(s.c);
}

static void a_tier_above_with_too_few_samples_does_not_block_growth(void **state)
{
    (void)state;
    struct sim s;
    sim_init(&s, tiers);
    storm_free(&s);
    /* Enterprise's latency is back (one verdict says so), then it sends two requests per
     * interval: a verdict every ten intervals at best. free still presses (the storm goes on,
     * but no longer hurts enterprise): it grows in every interval, verdict or not. */
    sim_interval(&s, (struct flow[]){FREE_STORM, QUIET, ENT_HOT});
    assert_false(stats(&s, ENT).threatened);
    double prev = limit_of(&s, FREE);
    int k = 0;
    for (; k < 200 && prev < 5; k++) {
        sim_interval(&s, (struct flow[]){FREE_STORM, QUIET, {2, 90, 10, 0}});
        assert_true(stats(&s, FREE).pressing);
        assert_true(limit_of(&s, FREE) > prev);
        prev = limit_of(&s, FREE);
    }
    assert_true(prev == 5);
    /* Slowly at first (probing: a tier above threatened within the last second), then at the
     * full rate: from its floor to 5 within 1 s + 1 s. */
    assert_true(k * IV <= 2100 * MS);
    capctl_destroy(s.c);
}

static void a_quiet_tier_above_does_not_keep_the_cut(void **state)
{
    (void)state;
    struct sim s;
    sim_init(&s, tiers);
    storm_free(&s);
    /* Enterprise stops: for a second it still counts as active and free stays gated, but its
     * stale verdict does not hold the cut; then free is not gated at all. */
    sim_run(&s, 9, (struct flow[]){FREE_STORM, QUIET, QUIET});
    assert_true(stats(&s, FREE).gated);
    assert_false(stats(&s, ENT).threatened);
    sim_run(&s, 12, (struct flow[]){FREE_STORM, QUIET, QUIET});
    assert_false(stats(&s, FREE).gated);
    assert_true(limit_of(&s, FREE) == 5);
    capctl_destroy(s.c);
}

static void
a_database_slow_for_everybody_cuts_only_until_the_slowness_shows_as_its_own(void **state)
{
    (void)state;
    struct sim s;
    sim_init(&s, tiers);
    sim_run(&s, 50, (struct flow[]){FREE_STORM, {40, 2000, 0, 0}, ENT_HOT});
    /* Every tier 50 times slower, whatever the others do. Enterprise is never limited; free
     * is cut at first (enterprise's latency is new, and free always had something running),
     * until enterprise's requests that ended with nothing below running show the same
     * latency: it is enterprise's own, and cutting free would not help; free grows back. */
    double least = 5;
    for (int k = 0; k < 300; k++) {
        sim_interval(&s, (struct flow[]){{100, 250000, 0, 0}, {1, 50000, 0, 0}, {200, 4500, 0, 0}});
        least = limit_of(&s, FREE) < least ? limit_of(&s, FREE) : least;
    }
    assert_true(least < 1);
    assert_true(limit_of(&s, FREE) == 5);
    assert_true(limit_of(&s, PRO) == 20);
    assert_true(limit_of(&s, ENT) == 50);
    assert_int_equal(s.shed[ENT], 0);
    assert_false(stats(&s, ENT).threatened);
    capctl_destroy(s.c);
}

static void a_floor_of_zero_closes_the_tier_and_it_reopens(void **state)
{
    (void)state;
    struct sim s;
    (void)threaten_to(&s, 0);
    /* Cut to nothing: not one request at a time, none, while enterprise is threatened. */
    uint64_t served = s.served[FREE];
    sim_run(&s, 10, (struct flow[]){FREE_STORM, QUIET, {200, 2000, 0, 0}});
    assert_true(limit_of(&s, FREE) == 0);
    assert_int_equal(s.served[FREE], served);
    assert_true(s.shed[FREE] > 900);
    assert_int_equal(s.last_retry, 0); /* retry at the next verdict */
    /* Enterprise within its objective again: free grows back from nothing. */
    sim_run(&s, 25, (struct flow[]){FREE_STORM, QUIET, ENT_HOT});
    assert_true(limit_of(&s, FREE) == 5);
    assert_true(s.served[FREE] > served);
    capctl_destroy(s.c);
}

/* Cut free to floor, then let what runs end and any pause pass (no tick: the limit and the
 * gate stay). */
static void cut_below_one(struct sim *s, double floor)
{
    (void)threaten_to(s, floor);
    s->now += (int64_t)(6 * MS / floor); /* free's slowest request, and its rest */
    sim_until(s, s->now);
}

static void below_one_request_the_gate_paces(void **state)
{
    (void)state;
    struct sim s;
    cut_below_one(&s, 0.1);
    int64_t now = s.now, retry = 0;
    assert_true(capctl_enter(s.c, FREE, now, &retry));
    assert_false(capctl_enter(s.c, FREE, now, &retry)); /* one at a time */
    capctl_leave(s.c, FREE, now, now + 2 * MS);         /* it took 2 ms... */
    now += 2 * MS;
    assert_false(capctl_enter(s.c, FREE, now + 17 * MS, &retry)); /* ...so 18 ms of rest */
    assert_true(retry == 1 * MS);
    assert_true(capctl_enter(s.c, FREE, now + 18 * MS, &retry));
    capctl_leave(s.c, FREE, now + 18 * MS, now + 18 * MS);
    assert_true(stats(&s, FREE).shedding);
    capctl_destroy(s.c);
}

static void a_pause_is_bounded_whatever_the_request_took(void **state)
{
    (void)state;
    struct sim s;
    cut_below_one(&s, CAPCTL_MIN_LIMIT);
    /* At 1 % a request of 5 s would earn 495 s of rest: the pause is bounded. */
    int64_t now = s.now, retry = 0;
    assert_true(capctl_enter(s.c, FREE, now, &retry));
    capctl_leave(s.c, FREE, now, now + 5000 * MS);
    now += 5000 * MS;
    assert_false(capctl_enter(s.c, FREE, now + CAPCTL_PAUSE_MAX_US - 1, &retry));
    assert_true(retry == 1);
    assert_true(capctl_enter(s.c, FREE, now + CAPCTL_PAUSE_MAX_US, &retry));
    capctl_leave(s.c, FREE, now + CAPCTL_PAUSE_MAX_US, now + CAPCTL_PAUSE_MAX_US);
    capctl_destroy(s.c);
}

static void a_pause_follows_the_limit_as_it_grows_back(void **state)
{
    (void)state;
    struct sim s;
    cut_below_one(&s, 0.1);
    /* Enterprise is fast again (its last slow requests, ending now, still threaten once). */
    sim_interval(&s, (struct flow[]){QUIET, QUIET, ENT_HOT});
    double was = limit_of(&s, FREE);
    assert_true(was < 1);
    /* A request of 100 ms: 100 x (1/limit - 1) ms of rest. */
    int64_t now = s.now, retry = 0, rest = (int64_t)(100 * MS * (1 / was - 1));
    assert_true(capctl_enter(s.c, FREE, now, &retry));
    capctl_leave(s.c, FREE, now, now + 100 * MS);
    assert_false(capctl_enter(s.c, FREE, now + 50 * MS, &retry));
    assert_true(llabs(retry - (50 * MS + rest)) <= 1 * MS);
    /* The limit grows in the next verdict (at now + 100 ms), and the rest still due shrinks in
     * proportion: it was taken at the old limit. */
    sim_interval(&s, (struct flow[]){QUIET, QUIET, ENT_HOT});
    double lim = limit_of(&s, FREE);
    assert_true(lim > was && lim < 1);
    int64_t shrunk = (int64_t)((double)rest * (1 / lim - 1) / (1 / was - 1));
    assert_false(capctl_enter(s.c, FREE, now + 50 * MS, &retry));
    assert_true(llabs(retry - (50 * MS + shrunk)) <= 1 * MS);
    /* And once the limit is 1 or more, no pause is left at all: a request of 500 ms at that
     * limit earns its second of rest, which the growth to 1 drops. */
    int64_t t = now + 50 * MS + retry;
    assert_true(capctl_enter(s.c, FREE, t, &retry));
    capctl_leave(s.c, FREE, t, t + 500 * MS);
    assert_false(capctl_enter(s.c, FREE, t + 600 * MS, &retry));
    while (limit_of(&s, FREE) < 1)
        sim_interval(&s, (struct flow[]){QUIET, QUIET, ENT_HOT});
    assert_true(capctl_enter(s.c, FREE, t + 600 * MS, &retry));
    capctl_leave(s.c, FREE, t + 600 * MS, t + 600 * MS);
    capctl_destroy(s.c);
}

static void the_time_threatened_is_counted(void **state)
{
    (void)state;
    struct sim s;
    sim_init(&s, tiers);
    sim_run(&s, 50, (struct flow[]){QUIET, QUIET, ENT_HOT});
    assert_int_equal(stats(&s, ENT).threatened_us, 0);
    /* Ten intervals far past its threshold, then back: a second threatened. */
    sim_run(&s, 10, (struct flow[]){QUIET, {100, 10000, 0, 0}, {200, 2000, 100, 0}});
    assert_true(stats(&s, ENT).threatened);
    sim_run(&s, 20, (struct flow[]){QUIET, QUIET, ENT_HOT});
    struct capctl_tier_stats st = stats(&s, ENT);
    assert_false(st.threatened);
    assert_int_equal(st.threatened_us, 1000 * MS);
    assert_true(st.objective_us == 300 * MS);
    assert_true(st.threshold_us >= st.level_us + 50);
    capctl_destroy(s.c);
}

static void the_threshold_shown_is_the_one_the_verdict_was_judged_by(void **state)
{
    (void)state;
    struct sim s;
    sim_init(&s, tiers);
    sim_run(&s, 50, (struct flow[]){QUIET, QUIET, ENT_HOT});
    /* Enterprise turns sparse at 0.25 ms, nothing below: its first verdict (after ten
     * intervals) passes its threshold of 0.19 ms, and moves its level towards 0.25 ms, which
     * lifts the threshold past 0.25 ms. What the stats show is what the verdict was judged by. */
    int k = 0;
    while (!stats(&s, ENT).threatened && k++ < 20)
        sim_interval(&s, (struct flow[]){QUIET, QUIET, {3, 250, 0, 0}});
    struct capctl_tier_stats st = stats(&s, ENT);
    assert_true(st.threatened);
    assert_true(st.mean_us > st.threshold_us);
    assert_true(st.threshold_us < 200);
    assert_true(st.level_us > st.threshold_us - 100); /* the level moved on */
    capctl_destroy(s.c);
}

/*
 * A simulated database: enterprise's latency is 0.09 ms plus 1 ms per free request running,
 * free offers 5 at once. Enterprise's typical latency leaves its slowest tenth out and may
 * grow by max(50 %, 0.05 ms): free is held to running about a tenth of the time, and after
 * settling its limit stays in a band well below one request, above its floor, never shut.
 */
static void on_a_simulated_database_the_limit_settles_in_a_band(void **state)
{
    (void)state;
    struct sim s;
    sim_init(&s, tiers);
    sim_run(&s, 50, (struct flow[]){QUIET, QUIET, ENT_HOT});
    const struct flow ent = {200, 90, 10, 1000};
    double lo = 1e9, hi = 0, sum = 0;
    int threatened = 0;
    for (int k = 0; k < 600; k++) {
        sim_interval(&s, (struct flow[]){FREE_STORM, QUIET, ent});
        if (k >= 100) {
            double l = limit_of(&s, FREE);
            lo = l < lo ? l : lo;
            hi = l > hi ? l : hi;
            sum += l;
            threatened += stats(&s, ENT).threatened;
        }
    }
    printf("# free's limit settled in [%.3f, %.3f], mean %.2f; enterprise threatened %d of 500\n",
           lo, hi, sum / 500, threatened);
    assert_true(lo >= 0.1);
    assert_true(hi <= 0.5);
    assert_true(s.served[FREE] > 1000);
    capctl_destroy(s.c);
}

/* ---- threads ------------------------------------------------------------------------------ */

/* One client thread: requests of its tier at the shared clock until told to stop. */
struct client {
    struct capctl *c;
    size_t tier;
    int64_t lat;
    _Atomic int64_t *clock;
    atomic_bool *stop;
    long attempts, admitted;
};

/* ---- the fleet (capctl_remote) ------------------------------------------------------------ */

static void remote(struct sim *s, size_t i, bool active, bool threatened, bool fresh)
{
    const struct capctl_remote r = {
        .active = active, .threatened = threatened, .fresh = fresh, .pressure = 4};
    capctl_remote(s->c, i, &r);
}

static void enterprise_active_on_another_instance_gates_free_here(void **state)
{
    (void)state;
    struct sim s;
    sim_init(&s, tiers);
    sim_run(&s, 20, (struct flow[]){FREE_STORM, QUIET, QUIET});
    assert_false(stats(&s, FREE).gated); /* alone here: work-conserving */
    remote(&s, ENT, true, false, true);
    sim_run(&s, 20, (struct flow[]){FREE_STORM, QUIET, QUIET});
    assert_true(stats(&s, FREE).gated);
    assert_true(stats(&s, ENT).remote_active);
    /* active but content elsewhere: gated, never cut */
    assert_true(limit_of(&s, FREE) == 5);
    assert_int_equal(s.shed[FREE], 0);
    capctl_remote(s.c, ENT, NULL); /* the view lost: local control, free is not gated */
    sim_run(&s, 1, (struct flow[]){FREE_STORM, QUIET, QUIET});
    assert_false(stats(&s, FREE).gated);
    assert_false(stats(&s, ENT).remote_active);
    capctl_destroy(s.c);
}

static void a_remote_threat_cuts_free_here_once_per_exchange(void **state)
{
    (void)state;
    struct sim s;
    sim_init(&s, tiers);
    sim_run(&s, 20, (struct flow[]){FREE_STORM, QUIET, QUIET});
    assert_true(stats(&s, FREE).pressing);
    /* One exchange says enterprise threatens its objective elsewhere (pressure 4): free is cut
     * by the deepest step, 0.5, once; the same report on later ticks cuts no further. */
    remote(&s, ENT, true, true, true);
    double before = limit_of(&s, FREE);
    sim_run(&s, 1, (struct flow[]){FREE_STORM, QUIET, QUIET});
    double after = limit_of(&s, FREE);
    assert_true(after < before);
    assert_true(after >= before * 0.5 * 0.99 || after == tiers[FREE].floor);
    remote(&s, ENT, true, true, false); /* the same exchange, read again */
    sim_run(&s, 3, (struct flow[]){FREE_STORM, QUIET, QUIET});
    assert_true(limit_of(&s, FREE) <= after); /* neither cut again nor grown while threatened */
    assert_true(limit_of(&s, FREE) >= after * 0.99);
    /* More exchanges with the threat: cut down to its floor, never below. */
    for (int k = 0; k < 40; k++) {
        remote(&s, ENT, true, true, true);
        sim_run(&s, 1, (struct flow[]){FREE_STORM, QUIET, QUIET});
    }
    assert_true(limit_of(&s, FREE) == tiers[FREE].floor);
    assert_true(s.shed[FREE] > 0);
    /* The threat over everywhere: free grows back to its max. */
    remote(&s, ENT, true, false, true);
    sim_run(&s, 40, (struct flow[]){FREE_STORM, QUIET, QUIET});
    assert_true(limit_of(&s, FREE) == 5);
    capctl_destroy(s.c);
}

static void a_lower_tier_pressing_elsewhere_makes_latencies_here_not_clear(void **state)
{
    (void)state;
    struct sim s;
    sim_init(&s, tiers);
    /* Enterprise alone here, hot: its level is its own latency. */
    sim_run(&s, 50, (struct flow[]){QUIET, QUIET, ENT_HOT});
    double level = stats(&s, ENT).level_us;
    /* Free presses on another instance and enterprise slows fivefold here: its latencies are
     * not clear, so its level rises only slowly and it threatens its objective (with nothing
     * pressing elsewhere, the level would follow within a second and hide the storm). */
    const struct capctl_remote busy = {.active = true, .pressing = true};
    capctl_remote(s.c, FREE, &busy);
    sim_run(&s, 20, (struct flow[]){QUIET, QUIET, {200, 450, 10, 0}});
    assert_true(stats(&s, ENT).threatened);
    assert_true(stats(&s, ENT).level_us < 2 * level);
    capctl_destroy(s.c);
}

static void *client_main(void *arg)
{
    struct client *cl = arg;
    while (!atomic_load(cl->stop)) {
        int64_t now = atomic_fetch_add(cl->clock, 3), retry = 0;
        cl->attempts++;
        if (!capctl_enter(cl->c, cl->tier, now, &retry))
            continue;
        cl->admitted++;
        capctl_leave(cl->c, cl->tier, now, now + cl->lat);
        capctl_observe(cl->c, cl->tier, cl->lat, now + cl->lat);
    }
    return NULL;
}

static void the_request_path_and_the_verdicts_run_side_by_side(void **state)
{
    (void)state;
    struct capctl *c = NULL;
    assert_int_equal(capctl_create(&cfg, NT, &c), 0);
    for (size_t i = 0; i < NT; i++)
        capctl_configure(c, i, &tiers[i]);
    _Atomic int64_t clock = 1000 * 1000 * MS;
    atomic_bool stop = false;
    struct client cl[3] = {{c, FREE, 5000, &clock, &stop, 0, 0},
                           {c, FREE, 5000, &clock, &stop, 0, 0},
                           {c, ENT, 90, &clock, &stop, 0, 0}};
    pthread_t th[3];
    for (int k = 0; k < 3; k++)
        assert_int_equal(pthread_create(&th[k], NULL, client_main, &cl[k]), 0);
    /* Ticks (and a reload) while the clients run: the gate, pacing and histograms are shared. */
    for (int k = 0; k < 300; k++) {
        int64_t now = atomic_fetch_add(&clock, IV / 10) + IV / 10;
        (void)capctl_tick(c, now, NULL);
        if (k == 150)
            capctl_configure(c, FREE, &tiers[FREE]);
    }
    atomic_store(&stop, true);
    for (int k = 0; k < 3; k++)
        pthread_join(th[k], NULL);
    struct capctl_tier_stats f, e;
    capctl_stats(c, FREE, &f);
    capctl_stats(c, ENT, &e);
    assert_int_equal(f.in_progress, 0);
    assert_int_equal(e.in_progress, 0);
    assert_true(f.admitted == (uint64_t)(cl[0].admitted + cl[1].admitted));
    assert_true(f.admitted + f.shed == (uint64_t)(cl[0].attempts + cl[1].attempts));
    assert_true(e.admitted == (uint64_t)cl[2].attempts && e.shed == 0);
    capctl_destroy(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(a_tier_with_nobody_above_is_never_limited),
        cmocka_unit_test(light_jittery_load_never_cuts_however_sparse_the_tier_above),
        cmocka_unit_test(a_tier_that_does_not_press_is_not_cut),
        cmocka_unit_test(a_storm_cuts_the_lowest_pressing_tier_first_and_never_below_its_floor),
        cmocka_unit_test(a_p99_past_the_objective_threatens_on_its_own),
        cmocka_unit_test(after_a_storm_free_is_back_at_its_max_within_two_seconds),
        cmocka_unit_test(a_cut_tier_whose_traffic_turns_light_is_released_at_the_next_verdict),
        cmocka_unit_test(a_tier_above_with_too_few_samples_does_not_block_growth),
        cmocka_unit_test(a_quiet_tier_above_does_not_keep_the_cut),
        cmocka_unit_test(
            a_database_slow_for_everybody_cuts_only_until_the_slowness_shows_as_its_own),
        cmocka_unit_test(a_floor_of_zero_closes_the_tier_and_it_reopens),
        cmocka_unit_test(below_one_request_the_gate_paces),
        cmocka_unit_test(a_pause_is_bounded_whatever_the_request_took),
        cmocka_unit_test(a_pause_follows_the_limit_as_it_grows_back),
        cmocka_unit_test(the_time_threatened_is_counted),
        cmocka_unit_test(the_threshold_shown_is_the_one_the_verdict_was_judged_by),
        cmocka_unit_test(on_a_simulated_database_the_limit_settles_in_a_band),
        cmocka_unit_test(enterprise_active_on_another_instance_gates_free_here),
        cmocka_unit_test(a_remote_threat_cuts_free_here_once_per_exchange),
        cmocka_unit_test(a_lower_tier_pressing_elsewhere_makes_latencies_here_not_clear),
        cmocka_unit_test(the_request_path_and_the_verdicts_run_side_by_side),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
