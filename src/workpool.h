/*
 * workpool: one tier's worker threads and its bounded, tenant-fair queue (the logic bulkhead).
 *
 * HTTP threads submit work and never wait: a full queue is refused at once. Worker threads pop
 * work in tenant round-robin order (fairq) and run it; the janitor expires work that waited
 * longer than the tier's queue timeout. Each tier has its own pool, so a tier can only ever
 * exhaust its own threads.
 *
 * DESIGN: one mutex guards the fairq, the thread targets and `stopping`; one condition variable
 * wakes idle workers. Work runs with no lock held. Callbacks: run (worker thread) executes an
 * item; drop (the caller of workpool_expire/workpool_stop) answers an item that will never run.
 */
#ifndef BULKHEAD_WORKPOOL_H
#define BULKHEAD_WORKPOOL_H

#include "fairq.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct workpool;

enum workpool_drop_reason { WORKPOOL_EXPIRED, WORKPOOL_SHUTDOWN };

struct workpool_ops {
    void (*run)(struct fairq_item *item, void *ctx); /* worker thread */
    void (*drop)(struct fairq_item *item, enum workpool_drop_reason why, void *ctx);
    void *ctx;
};

struct workpool_limits {
    size_t threads;          /* worker threads */
    size_t queue_max;        /* items waiting at most */
    size_t tenant_queue_max; /* items one tenant may have waiting */
    size_t tenant_share;     /* workers one tenant may hold while others are active */
};

/* A consistent snapshot for metrics. */
struct workpool_stats {
    size_t threads, busy, queued, queue_max, tenants;
    size_t idle; /* workers parked, waiting for work */
    uint64_t submitted, completed, rejected_full, rejected_tenant, expired;
};

/* name: the tier, used for thread names. Returns 0 or a negative errno (threads not created). */
int workpool_create(const char *name, const struct workpool_limits *lim,
                    const struct workpool_ops *ops, struct workpool **out)
    __attribute__((warn_unused_result));

/* HTTP thread. 0, -EAGAIN (queue full), -EDQUOT (tenant's queue share full), -ESHUTDOWN. */
int workpool_submit(struct workpool *wp, const char *tenant, struct fairq_item *item)
    __attribute__((warn_unused_result));

/* Janitor thread: drop items that waited since before cutoff_us, and forget idle tenants. */
void workpool_expire(struct workpool *wp, int64_t cutoff_us, int64_t now_us);

/* Change limits live (config reload): threads are started or retired, queued items stay. */
int workpool_set_limits(struct workpool *wp, const struct workpool_limits *lim);

/* Whether a tenant other than the one running item is active in this pool (lock-free). */
bool workpool_others_active(const struct workpool *wp);

void workpool_stats(struct workpool *wp, struct workpool_stats *out);

/* Up to n busiest tenants: key, in-flight and queued counts. */
struct workpool_tenant_load {
    char key[FAIRQ_KEY_MAX + 1];
    uint32_t in_flight, queued;
};
size_t workpool_top_tenants(struct workpool *wp, struct workpool_tenant_load *out, size_t n);

/* Refuse new work, drop queued items (WORKPOOL_SHUTDOWN), wait for running ones, join threads. */
void workpool_stop(struct workpool *wp);
void workpool_destroy(struct workpool *wp);

#endif
