/*
 * history: a ring of per-second samples (see history.h).
 */
#include "history.h"
#include "breaker.h"
#include "dbpool.h"
#include "health.h"
#include "mclock.h"
#include "metrics.h"
#include "server.h"
#include "workpool.h"
#include "xalloc.h"

#include <jansson.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

struct history_tier {
    uint64_t outcomes[OUTCOME_COUNT]; /* during the second */
    int64_t p50_us, p99_us;           /* total latency during the second */
    uint32_t busy, threads, queued, queue_max;
    uint32_t db_active, db_idle, db_max, db_pending;
    uint32_t tenants;
    enum breaker_state breaker;
};

struct history_sample {
    uint64_t seq;
    int64_t wall_ms;
    struct history_tier *tiers; /* ntiers entries, owned by the ring's block */
};

struct history {
    struct server *srv; /* not owned */
    size_t ntiers;

    pthread_mutex_t mutex; /* guards ring, next_seq */
    struct history_sample ring[HISTORY_SAMPLES];
    struct history_tier *block; /* owned: HISTORY_SAMPLES * ntiers */
    uint64_t next_seq;

    /* Janitor-only: the previous reading, to turn totals into per-second deltas. */
    uint64_t prev_outcomes[TIERS_MAX][OUTCOME_COUNT];
    struct metrics_hist_snap prev_total[TIERS_MAX];
    int64_t prev_us;
};

struct history *history_create(struct server *srv)
{
    struct history *h = xcalloc(1, sizeof(*h));
    h->srv = srv;
    h->ntiers = srv->ntiers;
    h->block = xcalloc(HISTORY_SAMPLES * (h->ntiers ? h->ntiers : 1), sizeof(*h->block));
    for (size_t i = 0; i < HISTORY_SAMPLES; i++)
        h->ring[i].tiers = &h->block[i * h->ntiers];
    h->next_seq = 1;
    pthread_mutex_init(&h->mutex, NULL);
    for (size_t t = 0; t < h->ntiers; t++) {
        struct tier_rt *rt = srv->tier[t];
        for (int o = 0; o < OUTCOME_COUNT; o++)
            h->prev_outcomes[t][o] = atomic_load(&rt->m.outcomes[o]);
        metrics_hist_read(&rt->m.total, &h->prev_total[t]);
    }
    return h;
}

void history_destroy(struct history *h)
{
    if (!h)
        return;
    pthread_mutex_destroy(&h->mutex);
    free(h->block);
    free(h);
}

void history_record(struct history *h)
{
    struct history_tier now[TIERS_MAX];
    memset(now, 0, sizeof(now));
    int64_t mono = mclock_now_us();
    for (size_t t = 0; t < h->ntiers; t++) {
        struct tier_rt *rt = h->srv->tier[t];
        struct history_tier *s = &now[t];
        for (int o = 0; o < OUTCOME_COUNT; o++) {
            uint64_t v = atomic_load(&rt->m.outcomes[o]);
            s->outcomes[o] = v - h->prev_outcomes[t][o];
            h->prev_outcomes[t][o] = v;
        }
        struct metrics_hist_snap cur;
        metrics_hist_read(&rt->m.total, &cur);
        s->p50_us = metrics_hist_quantile(&cur, &h->prev_total[t], 0.50);
        s->p99_us = metrics_hist_quantile(&cur, &h->prev_total[t], 0.99);
        h->prev_total[t] = cur;
        struct workpool_stats ws;
        workpool_stats(rt->pool, &ws);
        s->busy = (uint32_t)ws.busy;
        s->threads = (uint32_t)ws.threads;
        s->queued = (uint32_t)ws.queued;
        s->queue_max = (uint32_t)ws.queue_max;
        s->tenants = (uint32_t)ws.tenants;
        struct dbpool_stats ds;
        dbpool_stats(rt->db, &ds);
        s->db_active = (uint32_t)ds.active;
        s->db_idle = (uint32_t)ds.idle;
        s->db_max = (uint32_t)ds.max;
        s->db_pending = (uint32_t)ds.pending;
        struct breaker_snapshot bs;
        breaker_snapshot(rt->breaker, mono, &bs);
        s->breaker = bs.state;
    }
    h->prev_us = mono;
    pthread_mutex_lock(&h->mutex);
    struct history_sample *slot = &h->ring[h->next_seq % HISTORY_SAMPLES];
    slot->seq = h->next_seq++;
    slot->wall_ms = mclock_wall_us() / 1000;
    memcpy(slot->tiers, now, h->ntiers * sizeof(*now));
    pthread_mutex_unlock(&h->mutex);
}

static json_t *history_tier_json(const struct history_tier *s)
{
    json_t *out = json_object();
    json_t *oc = json_object();
    for (int o = 0; o < OUTCOME_COUNT; o++)
        json_object_set_new(oc, metrics_outcome_name((enum metrics_outcome)o),
                            json_integer((json_int_t)s->outcomes[o]));
    json_object_set_new(out, "outcomes", oc);
    json_object_set_new(out, "p50_ms", json_real((double)s->p50_us / 1000.0));
    json_object_set_new(out, "p99_ms", json_real((double)s->p99_us / 1000.0));
    json_object_set_new(out, "busy", json_integer(s->busy));
    json_object_set_new(out, "threads", json_integer(s->threads));
    json_object_set_new(out, "queued", json_integer(s->queued));
    json_object_set_new(out, "queue_max", json_integer(s->queue_max));
    json_object_set_new(out, "db_active", json_integer(s->db_active));
    json_object_set_new(out, "db_idle", json_integer(s->db_idle));
    json_object_set_new(out, "db_max", json_integer(s->db_max));
    json_object_set_new(out, "db_pending", json_integer(s->db_pending));
    json_object_set_new(out, "tenants", json_integer(s->tenants));
    json_object_set_new(out, "breaker", json_string(breaker_state_name(s->breaker)));
    return out;
}

/* The live process state for the dashboard's header, read at the time of the poll. */
static json_t *history_server_json(struct server *srv)
{
    json_t *o = json_object();
    bool healthy = srv->health && health_ok(srv->health);
    json_object_set_new(o, "version", json_string(BULKHEAD_VERSION));
    json_object_set_new(o, "instance", json_string(srv->instance_id));
    json_object_set_new(o, "started_ms", json_integer(srv->started_wall_us / 1000));
    json_object_set_new(o, "now_ms", json_integer(mclock_wall_us() / 1000));
    json_object_set_new(o, "healthy", json_boolean(healthy));
    if (!healthy && srv->health) {
        char reason[256];
        health_reason(srv->health, reason, sizeof(reason));
        json_object_set_new(o, "reason",
                            json_string(reason[0] ? reason : "database not answering"));
    } else {
        json_object_set_new(o, "reason", json_null());
    }
    json_object_set_new(
        o, "db_probe_ms",
        json_real(srv->health ? (double)health_latency_us(srv->health) / 1000.0 : 0.0));
    json_object_set_new(o, "in_flight", json_integer(atomic_load(&srv->in_flight)));
    json_object_set_new(o, "draining", json_boolean(atomic_load(&srv->draining)));
    return o;
}

char *history_json(struct history *h, int64_t since)
{
    json_t *root = json_object();
    json_object_set_new(root, "server", history_server_json(h->srv));
    json_t *names = json_array();
    for (size_t t = 0; t < h->ntiers; t++)
        json_array_append_new(names, json_string(tier_cfg(h->srv->tier[t])->name));
    json_object_set_new(root, "tiers", names);
    json_object_set_new(root, "interval_ms", json_integer(1000));
    json_t *samples = json_array();
    pthread_mutex_lock(&h->mutex);
    uint64_t last = h->next_seq - 1;
    uint64_t first = last >= HISTORY_SAMPLES ? last - HISTORY_SAMPLES + 1 : 1;
    if ((uint64_t)since + 1 > first)
        first = (uint64_t)since + 1;
    for (uint64_t seq = first; seq <= last; seq++) {
        const struct history_sample *s = &h->ring[seq % HISTORY_SAMPLES];
        json_t *js = json_object();
        json_object_set_new(js, "seq", json_integer((json_int_t)s->seq));
        json_object_set_new(js, "t", json_integer(s->wall_ms));
        json_t *tiers = json_object();
        for (size_t t = 0; t < h->ntiers; t++)
            json_object_set_new(tiers, tier_cfg(h->srv->tier[t])->name,
                                history_tier_json(&s->tiers[t]));
        json_object_set_new(js, "tiers", tiers);
        json_array_append_new(samples, js);
    }
    pthread_mutex_unlock(&h->mutex);
    json_object_set_new(root, "last", json_integer((json_int_t)last));
    json_object_set_new(root, "samples", samples);
    char *text = json_dumps(root, JSON_COMPACT | JSON_REAL_PRECISION(6));
    json_decref(root);
    if (!text)
        abort();
    return text;
}
