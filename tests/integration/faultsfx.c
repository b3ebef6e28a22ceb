/*
 * faultsfx: the fault tests' fixture (see faultsfx.h).
 */
#include "faultsfx.h"

#include "faultkit.h"
#include "harness.h"

#include "../redisproc.h"

#include <curl/curl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

char ftfx_db_url[300]; /* a database in the shared cluster */

char ftfx_tiers_env[400];

const char *const ftfx_tiers3[] = {"free", "pro", "enterprise"};

int ftfx_setup(const char *db)
{
    if (h_db_create(db, ftfx_db_url, sizeof(ftfx_db_url)))
        return -1;
    return h_tiers_env("tiers-faults.json", FTFX_FAULT_TIERS, ftfx_tiers_env,
                       sizeof(ftfx_tiers_env));
}

long ftfx_tier_get(const struct h_server *s, const char *tier, const char *path)
{
    char th[64];
    snprintf(th, sizeof(th), "X-Tenant-Tier: %s", tier);
    const char *h[] = {th, "X-Tenant-Id: probe", NULL};
    return fk_status(s->base, path, h);
}

void ftfx_load_start(struct ftfx_load *l, const struct h_server *s, int readers, int writers,
                     int read_rate, int write_rate, const char *tag)
{
    memset(l, 0, sizeof(*l));
    for (int t = 0; t < 3; t++) {
        l->ts[t].tier = ftfx_tiers3[t];
        for (int k = 0; k < readers + writers; k++) {
            struct fk_client *c = &l->c[l->n];
            c->base = s->base;
            c->tier = ftfx_tiers3[t];
            snprintf(c->tenant, sizeof(c->tenant), "%s-%d", tag, l->n);
            c->post_every = k < readers ? 0 : 1;
            c->rate = k < readers ? read_rate : write_rate;
            c->tag = tag;
            c->id = l->n;
            c->stop = &l->stop;
            c->mark_ms = &l->mark;
            c->ts = &l->ts[t];
            assert_int_equal(fk_client_start(c), 0);
            l->n++;
        }
    }
}

void ftfx_load_stop(struct ftfx_load *l)
{
    atomic_store(&l->stop, true);
    for (int i = 0; i < l->n; i++)
        fk_client_join(&l->c[i]);
}

void ftfx_load_free(struct ftfx_load *l)
{
    for (int i = 0; i < l->n; i++)
        fk_client_free(&l->c[i]);
}

static bool every_tier_served(void *arg)
{
    struct ftfx_served_ctx *x = arg;
    for (int t = 0; t < 3; t++)
        if (fk_sum(x->l->c, x->l->n, ftfx_tiers3[t], FK_200) < x->want)
            return false;
    return true;
}

int64_t ftfx_sum_metric(const struct h_server *s, const char *section, const char *field)
{
    int64_t v = 0;
    for (int t = 0; t < 3; t++)
        v += h_metric(s->base, ftfx_tiers3[t], section, field);
    return v;
}

/* Wait until the load runs on every tier, then reset the gap counters. */
void ftfx_load_warm(struct ftfx_load *l, long per_tier)
{
    struct ftfx_served_ctx x = {.l = l, .want = per_tier};
    assert_true(h_wait_until(every_tier_served, &x, 30000));
    for (int t = 0; t < 3; t++) {
        atomic_store(&l->ts[t].max_gap_ms, 0);
        atomic_store(&l->ts[t].first_ok_ms, 0);
    }
    atomic_store(&l->mark, 0);
}

/* Every response of the load was an answer the contract allows, the server never dropped one. */
void ftfx_expect_clean_answers(struct ftfx_load *l)
{
    assert_int_equal(fk_sum(l->c, l->n, NULL, FK_TRANSPORT), 0);
    assert_int_equal(fk_sum(l->c, l->n, NULL, FK_OTHER), 0);
    assert_int_equal(fk_sum(l->c, l->n, NULL, FK_4XX), 0);
    assert_int_equal(fk_sum(l->c, l->n, NULL, FK_429), 0);
}
