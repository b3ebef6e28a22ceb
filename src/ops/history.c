/*
 * history: a ring of per-second samples (see history.h).
 */
#include "history.h"
#include "metrics.h"
#include "report.h"
#include "tierset.h"
#include "xalloc.h"

#include <jansson.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

struct history_tier {
    uint64_t outcomes[OUTCOME_COUNT]; /* during the interval */
    int64_t p50_us, p99_us;           /* total latency during the interval */
    uint64_t v[REPORT_SAMPLED_MAX];   /* report_sample's fields, at the sample */
};

struct history_sample {
    uint64_t seq;
    int64_t wall_ms;
    int64_t lag_p50_us, lag_p99_us; /* the worst HTTP event loop's lag during the interval */
    struct history_tier *tiers;     /* ntiers entries, in the ring's block */
};

struct history {
    size_t ntiers;
    const char *names[TIERS_MAX]; /* the tier set's, immutable */

    /* _shared: mutex guards ring and next_seq (written by the janitor, read by HTTP
     * threads). */
    pthread_mutex_t mutex;
    struct history_sample ring[HISTORY_SAMPLES];
    uint64_t next_seq;
    struct history_tier *block; /* owned: HISTORY_SAMPLES * ntiers, the ring's tiers */

    /* Janitor only: the previous reading, to turn totals into per-interval counts. */
    uint64_t prev_outcomes[TIERS_MAX][OUTCOME_COUNT];
    struct metrics_hist_snap prev_total[TIERS_MAX];
    struct metrics_hist_snap prev_lag[REPORT_LOOPS_MAX];
};

struct history *history_create(struct tierset *tiers)
{
    struct history *h = xcalloc(1, sizeof(*h));
    h->ntiers = tierset_count(tiers);
    for (size_t t = 0; t < h->ntiers; t++)
        h->names[t] = tierset_tier(tiers, t)->name;
    h->block = xcalloc(HISTORY_SAMPLES * (h->ntiers ? h->ntiers : 1), sizeof(*h->block));
    for (size_t i = 0; i < HISTORY_SAMPLES; i++)
        h->ring[i].tiers = &h->block[i * h->ntiers];
    h->next_seq = 1;
    pthread_mutex_init(&h->mutex, NULL);
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

void history_record(struct history *h, const struct report_snap *s)
{
    struct history_tier now[TIERS_MAX];
    memset(now, 0, sizeof(now));
    for (size_t t = 0; t < h->ntiers && t < s->ntiers; t++) {
        const struct report_tier *rt = &s->tier[t];
        struct history_tier *out = &now[t];
        for (int o = 0; o < OUTCOME_COUNT; o++) {
            out->outcomes[o] = rt->outcomes[o] - h->prev_outcomes[t][o];
            h->prev_outcomes[t][o] = rt->outcomes[o];
        }
        out->p50_us = metrics_hist_quantile(&rt->total, &h->prev_total[t], 0.50);
        out->p99_us = metrics_hist_quantile(&rt->total, &h->prev_total[t], 0.99);
        h->prev_total[t] = rt->total;
        report_sample(rt, out->v);
    }
    int64_t lag_p50 = 0, lag_p99 = 0;
    for (unsigned i = 0; i < s->proc.nloops; i++) {
        int64_t p50 = metrics_hist_quantile(&s->proc.loop_lag[i], &h->prev_lag[i], 0.50);
        int64_t p99 = metrics_hist_quantile(&s->proc.loop_lag[i], &h->prev_lag[i], 0.99);
        lag_p50 = p50 > lag_p50 ? p50 : lag_p50;
        lag_p99 = p99 > lag_p99 ? p99 : lag_p99;
        h->prev_lag[i] = s->proc.loop_lag[i];
    }
    pthread_mutex_lock(&h->mutex);
    struct history_sample *slot = &h->ring[h->next_seq % HISTORY_SAMPLES];
    slot->seq = h->next_seq++;
    slot->wall_ms = s->proc.now_wall_us / 1000;
    slot->lag_p50_us = lag_p50;
    slot->lag_p99_us = lag_p99;
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
    double p50 = (double)s->p50_us / 1000.0, p99 = (double)s->p99_us / 1000.0;
    json_object_set_new(out, "latencyMs", json_pack("{s:f, s:f}", "p50", p50, "p99", p99));
    json_object_set_new(out, "p50_ms", json_real(p50)); /* deprecated */
    json_object_set_new(out, "p99_ms", json_real(p99)); /* deprecated */
    report_sample_json(s->v, out);
    return out;
}

/* The fleet view's medium (src/ops/fleet.c), or null when FLEET is off. */
static json_t *history_fleet_json(const struct report_process *p)
{
    if (!p->have_fleet)
        return json_null();
    json_t *o = json_object();
    json_object_set_new(o, "up", json_boolean(p->fleet_up));
    json_object_set_new(o, "instances", json_integer((json_int_t)p->fleet_instances));
    json_object_set_new(o, "exchanges", json_integer((json_int_t)p->fleet_exchanges));
    json_object_set_new(o, "failures", json_integer((json_int_t)p->fleet_failures));
    json_object_set_new(o, "exchangeMs", json_real((double)p->fleet_rtt_us / 1000.0));
    json_object_set_new(o, "reason", p->fleet_up ? json_null() : json_string(p->fleet_reason));
    json_object_set_new(o, "changedMs", json_integer(p->fleet_changed_wall_us / 1000));
    return o;
}

/* The live process state for the dashboard's header. */
static json_t *history_server_json(const struct report_process *p)
{
    json_t *o = json_object();
    json_int_t started_ms = p->started_wall_us / 1000, now_ms = p->now_wall_us / 1000;
    double probe_ms = (double)p->db_probe_us / 1000.0;
    json_object_set_new(o, "version", json_string(BULKHEAD_VERSION));
    json_object_set_new(o, "instance", json_string(p->instance_id ? p->instance_id : ""));
    json_object_set_new(o, "startedMs", json_integer(started_ms));
    json_object_set_new(o, "nowMs", json_integer(now_ms));
    json_object_set_new(o, "healthy", json_boolean(p->healthy));
    json_object_set_new(o, "reason",
                        p->healthy
                            ? json_null()
                            : json_string(p->reason[0] ? p->reason : "database not answering"));
    json_object_set_new(o, "dbProbeMs", json_real(probe_ms));
    json_object_set_new(o, "inFlight", json_integer((json_int_t)p->in_flight));
    json_object_set_new(o, "draining", json_boolean(p->draining));
    json_object_set_new(o, "eventLoops", json_integer((json_int_t)p->nloops));
    json_object_set_new(o, "fleet", history_fleet_json(p));
    /* Deprecated spellings of the same values. */
    json_object_set_new(o, "started_ms", json_integer(started_ms));
    json_object_set_new(o, "now_ms", json_integer(now_ms));
    json_object_set_new(o, "db_probe_ms", json_real(probe_ms));
    json_object_set_new(o, "in_flight", json_integer((json_int_t)p->in_flight));
    return o;
}

/* The samples after since, under the mutex; returns the newest seq. */
static uint64_t history_samples_json(struct history *h, int64_t since, json_t *samples)
{
    pthread_mutex_lock(&h->mutex);
    uint64_t last = h->next_seq - 1;
    uint64_t first = last >= HISTORY_SAMPLES ? last - HISTORY_SAMPLES + 1 : 1;
    if ((uint64_t)since + 1 > first)
        first = (uint64_t)since + 1;
    for (uint64_t seq = first; seq <= last; seq++) {
        const struct history_sample *s = &h->ring[seq % HISTORY_SAMPLES];
        json_t *tiers = json_object();
        for (size_t t = 0; t < h->ntiers; t++)
            json_object_set_new(tiers, h->names[t], history_tier_json(&s->tiers[t]));
        json_t *lag = json_pack("{s:f, s:f}", "p50", (double)s->lag_p50_us / 1000.0, "p99",
                                (double)s->lag_p99_us / 1000.0);
        json_array_append_new(samples, json_pack("{s:I, s:I, s:o, s:{s:o}}", "seq",
                                                 (json_int_t)s->seq, "t", (json_int_t)s->wall_ms,
                                                 "tiers", tiers, "eventLoops", "lagMs", lag));
    }
    pthread_mutex_unlock(&h->mutex);
    return last;
}

char *history_json(struct history *h, const struct report_process *live, int64_t since)
{
    json_t *root = json_object();
    json_object_set_new(root, "server", history_server_json(live));
    json_t *names = json_array();
    for (size_t t = 0; t < h->ntiers; t++)
        json_array_append_new(names, json_string(h->names[t]));
    json_object_set_new(root, "tiers", names);
    json_object_set_new(root, "intervalMs", json_integer(HISTORY_INTERVAL_MS));
    json_object_set_new(root, "interval_ms", json_integer(HISTORY_INTERVAL_MS)); /* deprecated */
    json_t *samples = json_array();
    uint64_t last = history_samples_json(h, since, samples);
    json_object_set_new(root, "last", json_integer((json_int_t)last));
    json_object_set_new(root, "samples", samples);
    char *text = json_dumps(root, JSON_COMPACT | JSON_REAL_PRECISION(6));
    json_decref(root);
    if (!text)
        abort();
    return text;
}
