/*
 * workpool: one tier's worker threads and its bounded, tenant-fair queue (the logic bulkhead).
 *
 * A "worker" is a slot: threads = slots, and an item holds one from the time it begins to its
 * end, whether it runs on a worker thread or on an event thread without blocking (see
 * workpool_begin). HTTP threads submit work and never wait: a full queue is refused at once.
 * Worker threads pop work in tenant round-robin order, or by recent cost (fairq), and run it;
 * the janitor expires work that waited longer than the tier's queue timeout. Each tier has its
 * own pool, so a tier can only ever exhaust its own threads.
 *
 * DESIGN: one mutex guards the fairq, the thread targets, the idle-worker stack, the handed
 * items and `stopping`. Each worker parks on its own condition variable (new work wakes exactly
 * one, the most recently idle). Work runs with no lock held. The counters and the active-tenant
 * count are atomics read without the mutex (metrics, and the connection pool's lock-free
 * workpool_others_active); a runner reports its item's cost with one atomic add
 * (workpool_tenant_charge), folded in under the mutex when the item is done. Callbacks: run
 * (worker thread) executes an item; drop (the caller of workpool_expire/workpool_stop) answers
 * an item that will never run.
 */
#ifndef BULKHEAD_WORKPOOL_H
#define BULKHEAD_WORKPOOL_H

#include "fairq.h"
#include "share.h"

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
    size_t threads;            /* worker threads */
    size_t queue_max;          /* items waiting at most */
    size_t tenant_queue_max;   /* items one tenant may have waiting */
    struct share_policy share; /* who may take a worker (share.h); share.size is threads */
    int64_t linger_us;         /* a tenant counts as active this long after its last item */
    int64_t brief_us;          /* a tenant whose items held a worker less than this, on recent
                                  average, and one of which ended less than this ago, is brief
                                  (fairq.h); 0 = nobody is */
    bool by_cost;              /* serve the tenant of least recent database time first (fairq.h) */
};

/* A consistent snapshot for metrics. */
struct workpool_stats {
    size_t threads, busy, queued, queue_max, tenants;
    size_t running; /* threads not yet retired (above threads while a shrink is under way) */
    size_t idle;    /* slots free: threads less items in flight (begun or popped) */
    uint64_t submitted, completed, rejected_full, rejected_tenant, expired;
};

/* name: the tier, used for thread names. Returns 0 or a negative errno (threads not created). */
int workpool_create(const char *name, const struct workpool_limits *lim,
                    const struct workpool_ops *ops, struct workpool **out)
    __attribute__((warn_unused_result));

/* HTTP thread. 0, -EAGAIN (queue full), -EDQUOT (tenant's queue share full), -ESHUTDOWN. */
int workpool_submit(struct workpool *wp, const char *tenant, struct fairq_item *item)
    __attribute__((warn_unused_result));

/*
 * The event-thread way (datapath.c), for an item that can run without blocking a thread:
 * workpool_begin counts it in flight at once when its tenant has nothing waiting and may take
 * a slot (0; -EBUSY: submit it instead; -ESHUTDOWN). If it then has to block after all,
 * workpool_hand gives it to a worker thread, which runs it ahead of the queue (it holds its slot
 * already; -ESHUTDOWN: no thread will, end it). Otherwise workpool_end tells the pool it finished
 * (t and begun_us: its fairq_item's tenant and begun_us); with take_next the item that the freed
 * slot lets in, if any, is popped and returned for the caller to start (counted in flight, begun
 * now), else a worker is woken.
 */
int workpool_begin(struct workpool *wp, const char *tenant, struct fairq_item *item)
    __attribute__((warn_unused_result));
int workpool_hand(struct workpool *wp, struct fairq_item *item) __attribute__((warn_unused_result));
struct fairq_item *workpool_end(struct workpool *wp, struct fairq_tenant *t, int64_t begun_us,
                                bool take_next);

/* Janitor thread: drop items that waited since before cutoff_us, and forget idle tenants. */
void workpool_expire(struct workpool *wp, int64_t cutoff_us, int64_t now_us);

/* Change limits live (config reload, a fleet budget's share): threads are started at once or
 * retired as they finish what they run, queued items stay. */
int workpool_set_limits(struct workpool *wp, const struct workpool_limits *lim);

/* Whether more than one tenant is active in this pool (lock-free): for a caller running an
 * item, whether anyone else is. */
bool workpool_others_active(const struct workpool *wp);

/* Whether the tenant of an item in flight (its fairq_item.tenant) has brief requests now
 * (fairq.h; lock-free, reads the clock; any thread, while that item runs or waits on its
 * worker). */
bool workpool_tenant_brief(const void *tenant);

/* The item in flight of tenant (its fairq_item.tenant) used cost_us of database time: its
 * tenant's recent cost for the queue's order (fairq.h). Any thread, before the item's slot is
 * given back (lock-free). */
void workpool_tenant_charge(struct fairq_tenant *tenant, int64_t cost_us);

void workpool_stats(struct workpool *wp, struct workpool_stats *out);

/* Up to n busiest tenants: key, in-flight and queued counts. */
struct workpool_tenant_load {
    char key[FAIRQ_KEY_MAX + 1];
    const void *id; /* the tenant's identity as the connection pool sees it (dbpool owner);
                       compare only, never dereference: the tenant may be gone already */
    uint32_t in_flight, queued;
    int64_t hold_avg_us; /* recent mean time its items held a worker */
    double recent_db_us; /* its recent database time, as the order by cost sees it (fairq.h) */
    bool brief;          /* its requests count as brief now */
};
size_t workpool_top_tenants(struct workpool *wp, struct workpool_tenant_load *out, size_t n);

/* Refuse new work, drop queued items (WORKPOOL_SHUTDOWN), let the worker threads finish what
 * they run (handed items too) and join them. Items begun on event threads end later, with
 * workpool_end: the event threads answer them before they stop (http_stop). */
void workpool_stop(struct workpool *wp);
void workpool_destroy(struct workpool *wp);

#endif
