/*
 * metrics: per-tier request counters and latency histograms.
 *
 * Every request ends with one outcome and one status, counted here by the thread that finished
 * it; three histograms (total latency, queue wait, query time) use fixed buckets in
 * microseconds. All fields are relaxed atomics: writers never lock, readers (the JSON and
 * Prometheus endpoints, the dashboard sampler) sum what they see.
 */
#ifndef BULKHEAD_METRICS_H
#define BULKHEAD_METRICS_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

/* How a request ended. Names are the Prometheus label values and the access-log outcomes. */
enum metrics_outcome {
    OUTCOME_OK,            /* 2xx */
    OUTCOME_RATE_LIMITED,  /* 429, layer 1 */
    OUTCOME_BULKHEAD_FULL, /* 503, the tier's queue (or the tenant's share of it) was full */
    OUTCOME_QUEUE_TIMEOUT, /* 503, waited in the queue past queue_timeout_ms */
    OUTCOME_POOL_TIMEOUT,  /* 503, no database connection within db_acquire_timeout_ms */
    OUTCOME_CIRCUIT_OPEN,  /* 503, layer 4 refused it */
    OUTCOME_ERROR,         /* 5xx, the database failed (or force_error) */
    OUTCOME_TIMEOUT,       /* 504, the call passed breaker_timeout_ms */
    OUTCOME_CLIENT_ERROR,  /* 4xx other than 429: bad input, auth, not found */
    OUTCOME_UNAVAILABLE,   /* 503, shutting down or database unhealthy */
    OUTCOME_HELD,          /* 429/503 refusal held: the client came back before its Retry-After */
    OUTCOME_SHED, /* 503, the capacity controller limited the tier (a higher one needs it) */
    OUTCOME_COUNT
};

const char *metrics_outcome_name(enum metrics_outcome o);

#define METRICS_HIST_BUCKETS 18 /* finite bounds; one more bucket counts +Inf */

/* Bucket upper bounds in microseconds (the Prometheus `le` values, divided by 1e6). */
extern const int64_t metrics_hist_bounds_us[METRICS_HIST_BUCKETS];

struct metrics_hist {
    atomic_uint_least64_t counts[METRICS_HIST_BUCKETS + 1]; /* not cumulative */
    atomic_uint_least64_t sum_us;
    atomic_uint_least64_t count;
};

/* HTTP status codes counted one by one; anything else is counted as "other". */
#define METRICS_STATUS_COUNT 24
extern const int metrics_status_codes[METRICS_STATUS_COUNT]; /* last entry 0 = other */

struct metrics_tier {
    atomic_uint_least64_t outcomes[OUTCOME_COUNT];
    atomic_uint_least64_t statuses[METRICS_STATUS_COUNT];
    struct metrics_hist total, queue, query;
};

void metrics_init(struct metrics_tier *m);

/* Count one finished request. queue_us/query_us < 0: that stage did not happen. */
void metrics_observe(struct metrics_tier *m, enum metrics_outcome o, int status, int64_t total_us,
                     int64_t queue_us, int64_t query_us);

void metrics_hist_add(struct metrics_hist *h, int64_t us);

/* Plain copy of a histogram, for arithmetic on snapshots. */
struct metrics_hist_snap {
    uint64_t counts[METRICS_HIST_BUCKETS + 1];
    uint64_t sum_us, count;
};
void metrics_hist_read(const struct metrics_hist *h, struct metrics_hist_snap *out);

/* Quantile q (0..1) of the observations in a - b (b may be NULL), in microseconds, by linear
 * interpolation inside the bucket; 0 when empty. */
int64_t metrics_hist_quantile(const struct metrics_hist_snap *a, const struct metrics_hist_snap *b,
                              double q);

#endif
