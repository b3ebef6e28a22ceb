/*
 * metrics: lock-free counters and fixed-bucket histograms (see metrics.h).
 */
#include "metrics.h"

#include <string.h>

const int64_t metrics_hist_bounds_us[METRICS_HIST_BUCKETS] = {
    100,    250,    500,    1000,    2500,    5000,    10000,    25000,    50000,
    100000, 250000, 500000, 1000000, 2500000, 5000000, 10000000, 30000000, 60000000};

/* Every status the server answers (apierr.c's table, 200/201/204, 499 for a client that left),
 * so "other" stays empty unless something unforeseen happens. */
const int metrics_status_codes[METRICS_STATUS_COUNT] = {200, 201, 204, 400, 401, 403, 404, 405,
                                                        408, 409, 411, 413, 414, 415, 417, 429,
                                                        431, 499, 500, 502, 503, 504, 505, 0};

static const char *const outcome_names[OUTCOME_COUNT] = {
    "ok",    "rate_limited", "bulkhead_full", "queue_timeout", "pool_timeout", "circuit_open",
    "error", "timeout",      "client_error",  "unavailable",   "held",         "shed"};

const char *metrics_outcome_name(enum metrics_outcome o)
{
    return (unsigned)o < OUTCOME_COUNT ? outcome_names[o] : "unknown";
}

void metrics_init(struct metrics_tier *m)
{
    memset(m, 0, sizeof(*m));
}

void metrics_hist_add(struct metrics_hist *h, int64_t us)
{
    if (us < 0)
        us = 0;
    int i = 0;
    while (i < METRICS_HIST_BUCKETS && us > metrics_hist_bounds_us[i])
        i++;
    atomic_fetch_add_explicit(&h->counts[i], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->sum_us, (uint64_t)us, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->count, 1, memory_order_relaxed);
}

void metrics_observe(struct metrics_tier *m, enum metrics_outcome o, int status, int64_t total_us,
                     int64_t queue_us, int64_t query_us)
{
    atomic_fetch_add_explicit(&m->outcomes[o], 1, memory_order_relaxed);
    int si = METRICS_STATUS_COUNT - 1;
    for (int i = 0; i < METRICS_STATUS_COUNT - 1; i++) {
        if (metrics_status_codes[i] == status) {
            si = i;
            break;
        }
    }
    atomic_fetch_add_explicit(&m->statuses[si], 1, memory_order_relaxed);
    metrics_hist_add(&m->total, total_us);
    if (queue_us >= 0)
        metrics_hist_add(&m->queue, queue_us);
    if (query_us >= 0)
        metrics_hist_add(&m->query, query_us);
}

void metrics_hist_read(const struct metrics_hist *h, struct metrics_hist_snap *out)
{
    for (int i = 0; i <= METRICS_HIST_BUCKETS; i++)
        out->counts[i] = atomic_load_explicit(&h->counts[i], memory_order_relaxed);
    out->sum_us = atomic_load_explicit(&h->sum_us, memory_order_relaxed);
    out->count = atomic_load_explicit(&h->count, memory_order_relaxed);
}

int64_t metrics_hist_quantile(const struct metrics_hist_snap *a, const struct metrics_hist_snap *b,
                              double q)
{
    uint64_t c[METRICS_HIST_BUCKETS + 1];
    uint64_t total = 0;
    for (int i = 0; i <= METRICS_HIST_BUCKETS; i++) {
        c[i] = a->counts[i] - (b ? b->counts[i] : 0);
        total += c[i];
    }
    if (total == 0)
        return 0;
    double rank = q * (double)total;
    uint64_t seen = 0;
    for (int i = 0; i <= METRICS_HIST_BUCKETS; i++) {
        if (c[i] == 0)
            continue;
        if ((double)(seen + c[i]) >= rank) {
            int64_t lo = i == 0 ? 0 : metrics_hist_bounds_us[i - 1];
            if (i == METRICS_HIST_BUCKETS)
                return lo; /* +Inf bucket: the last finite bound is all we know */
            int64_t hi = metrics_hist_bounds_us[i];
            double frac = (rank - (double)seen) / (double)c[i];
            if (frac < 0)
                frac = 0;
            return lo + (int64_t)(frac * (double)(hi - lo));
        }
        seen += c[i];
    }
    return metrics_hist_bounds_us[METRICS_HIST_BUCKETS - 1];
}
