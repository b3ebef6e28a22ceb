/*
 * tierset: fixed names and parts, settings published as whole immutable tables (see
 * tierset.h).
 */
#include "tierset.h"
#include "xalloc.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A published settings table; the list keeps every one until the set is destroyed. */
struct tierset_gen {
    struct tier_table table;
    struct tierset_gen *older; /* the one it replaced */
};

struct tierset {
    size_t count;
    struct tier_rt tier[TIERS_MAX];        /* names and parts: written before the set is shared */
    _Atomic(struct tierset_gen *) current; /* any thread loads; the main thread publishes */
};

struct breaker_cfg tierset_breaker_cfg(const struct tier_cfg *c)
{
    struct breaker_cfg b = {.error_pct = c->breaker_error_pct,
                            .reset_ms = c->breaker_reset_ms,
                            .window_ms = c->breaker_window_ms,
                            .buckets = c->breaker_buckets,
                            .min_calls = c->breaker_min_calls,
                            .trial_calls = c->breaker_trial_calls};
    return b;
}

struct workpool_limits tierset_pool_limits(const struct tier_cfg *c)
{
    struct workpool_limits l = {.threads = (size_t)c->workers,
                                .queue_max = (size_t)c->queue_max,
                                .tenant_queue_max = (size_t)tiers_tenant_queue_cap(c),
                                .share = tiers_worker_policy(c),
                                .linger_us = c->tenant_linger_ms * 1000,
                                .brief_us = c->brief_request_ms * 1000,
                                .by_cost = c->fair_queue_cost != 0};
    return l;
}

int tierset_create(const struct tier_table *tiers, struct tierset **out)
{
    if (tiers->count == 0 || tiers->count > TIERS_MAX)
        return -EINVAL;
    struct tierset *ts = xcalloc(1, sizeof(*ts));
    ts->count = tiers->count;
    for (size_t i = 0; i < ts->count; i++) {
        struct tier_rt *t = &ts->tier[i];
        t->index = i;
        t->set = ts;
        snprintf(t->name, sizeof(t->name), "%s", tiers->tiers[i].name);
        snprintf(t->appname, sizeof(t->appname), "bulkhead-%s", t->name);
        metrics_init(&t->m);
    }
    struct tierset_gen *g = xcalloc(1, sizeof(*g));
    g->table = *tiers;
    atomic_init(&ts->current, g);
    *out = ts;
    return 0;
}

void tierset_destroy(struct tierset *ts)
{
    if (!ts)
        return;
    struct tierset_gen *g = atomic_load(&ts->current);
    while (g) {
        struct tierset_gen *older = g->older;
        free(g);
        g = older;
    }
    free(ts);
}

size_t tierset_count(const struct tierset *ts)
{
    return ts->count;
}

struct tier_rt *tierset_tier(struct tierset *ts, size_t i)
{
    return &ts->tier[i];
}

struct tier_rt *tierset_find(struct tierset *ts, const char *name)
{
    for (size_t i = 0; i < ts->count; i++)
        if (!strcmp(ts->tier[i].name, name))
            return &ts->tier[i];
    return NULL;
}

const struct tier_table *tierset_snapshot(const struct tierset *ts)
{
    return &atomic_load_explicit(&ts->current, memory_order_acquire)->table;
}

const struct tier_cfg *tierset_cfg(const struct tier_rt *t)
{
    return &tierset_snapshot(t->set)->tiers[t->index];
}

/* Append a then b to buf[*used..len); stops at len (snprintf cuts, *used passes len). */
static void tierset_put(char *buf, size_t len, size_t *used, const char *a, const char *b)
{
    if (*used >= len)
        return;
    int n = snprintf(buf + *used, len - *used, "%s%s", a, b);
    if (n > 0)
        *used += (size_t)n;
}

void tierset_names(const struct tierset *ts, char *buf, size_t len)
{
    size_t used = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < ts->count; i++)
        tierset_put(buf, len, &used, i ? ", " : "", ts->tier[i].name);
}

void tierset_names_json(const struct tierset *ts, char *buf, size_t len)
{
    size_t used = 0;
    buf[0] = '\0';
    tierset_put(buf, len, &used, "[", "");
    for (size_t i = 0; i < ts->count; i++) {
        tierset_put(buf, len, &used, i ? ",\"" : "\"", ts->tier[i].name);
        tierset_put(buf, len, &used, "\"", "");
    }
    tierset_put(buf, len, &used, "]", "");
}

int tierset_match(const struct tierset *ts, const struct tier_table *next, struct tier_table *out,
                  char *err, size_t errlen)
{
    if (next->count != ts->count) {
        snprintf(err, errlen, "tiers cannot be added or removed live (restart for that)");
        return -EINVAL;
    }
    memset(out, 0, sizeof(*out));
    out->count = ts->count;
    for (size_t i = 0; i < next->count; i++) {
        const struct tier_rt *t = NULL;
        for (size_t j = 0; j < ts->count && !t; j++)
            if (!strcmp(ts->tier[j].name, next->tiers[i].name))
                t = &ts->tier[j];
        if (!t) {
            snprintf(err, errlen,
                     "tier %s is new; tiers cannot be added or removed live (restart for that)",
                     next->tiers[i].name);
            return -EINVAL;
        }
        out->tiers[t->index] = next->tiers[i];
    }
    return 0;
}

void tierset_publish(struct tierset *ts, const struct tier_table *table)
{
    struct tierset_gen *g = xcalloc(1, sizeof(*g));
    g->table = *table;
    g->older = atomic_load_explicit(&ts->current, memory_order_relaxed); /* only writer */
    atomic_store_explicit(&ts->current, g, memory_order_release);
}
