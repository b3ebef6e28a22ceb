/*
 * fakeset: see fakeset.h.
 */
#include "fakeset.h"
#include "breaker.h"
#include "dbpool.h"
#include "ratelimit.h"
#include "tiers.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Nothing listens on port 1: a connect fails at once, without a network wait. */
#define FAKESET_CONNINFO "host=127.0.0.1 port=1 connect_timeout=2"

static void fakeset_run(struct fairq_item *item, void *ctx)
{
    (void)item;
    (void)ctx;
}

static void fakeset_drop(struct fairq_item *item, enum workpool_drop_reason why, void *ctx)
{
    (void)item;
    (void)why;
    (void)ctx;
}

static const struct workpool_ops fakeset_ops = {.run = fakeset_run, .drop = fakeset_drop};

static void fakeset_parts(struct tier_rt *t, const struct tier_cfg *c,
                          const struct workpool_ops *ops)
{
    struct breaker_cfg bc = tierset_breaker_cfg(c);
    t->breaker = breaker_create(c->name, &bc);
    t->rl = ratelimit_create(c->rate_limit, c->rate_window_s, 1000);
    struct workpool_limits lim = tierset_pool_limits(c);
    struct dbpool_opts po = {.conn = {.conninfo = FAKESET_CONNINFO, .appname = t->appname},
                             .max = (size_t)c->db_max,
                             .share = tiers_conn_policy(c),
                             .brief = workpool_tenant_brief};
    if (workpool_create(c->name, &lim, ops ? ops : &fakeset_ops, &t->pool) ||
        dbpool_create(&po, &t->db)) {
        fprintf(stderr, "fakeset: cannot build tier %s's parts\n", c->name);
        abort();
    }
}

struct tierset *fakeset_create(const char *tiers_json, const struct workpool_ops *ops)
{
    struct tier_table table;
    char err[300];
    struct tierset *ts = NULL;
    if (tiers_parse(tiers_json, strlen(tiers_json), &table, err, sizeof(err)) ||
        tierset_create(&table, &ts)) {
        fprintf(stderr, "fakeset: bad tier table: %s\n", err);
        abort();
    }
    for (size_t i = 0; i < table.count; i++)
        fakeset_parts(tierset_tier(ts, i), &table.tiers[i], ops);
    return ts;
}

void fakeset_destroy(struct tierset *ts)
{
    for (size_t i = 0; i < tierset_count(ts); i++) {
        struct tier_rt *t = tierset_tier(ts, i);
        workpool_stop(t->pool);
        dbpool_stop(t->db);
    }
    for (size_t i = 0; i < tierset_count(ts); i++) {
        struct tier_rt *t = tierset_tier(ts, i);
        workpool_destroy(t->pool);
        dbpool_destroy(t->db);
        ratelimit_destroy(t->rl);
        breaker_destroy(t->breaker);
    }
    tierset_destroy(ts);
}
