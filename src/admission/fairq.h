/*
 * fairq: a tier's waiting room, served round-robin across tenants, or by their recent cost.
 *
 * Each tenant with work has its own FIFO; the queue serves tenants in turn (deficit round-robin
 * with unit cost), so a tenant with 500 waiting requests does not put a tenant with one behind
 * all of them. Bounds: the whole queue (queue_max) and each tenant's share of it. While more
 * than one tenant is active, a tenant already holding its share of the workers is skipped.
 *
 * By cost (limits.by_cost, the tier's fair_queue_cost): the tenant served next is the one whose
 * items cost least recently, ties in ring order. A tenant's cost is a sum of what its items
 * cost (the database time their runner reports with fairq_tenant_charge) decaying by half every
 * FAIRQ_COST_HALF_LIFE_US. An item is charged its tenant's mean cost when it is popped (so a
 * tenant with expensive statements running does not win the next turns while they run) and
 * the difference to what it really cost when it is done (CockroachDB's admission control
 * orders its tenants by the fewest tokens used the same way: an estimate at admission,
 * corrected when the work is done).
 *
 * A tenant is "active" from its first request until linger_us after its last one finished, so a
 * tenant sending a steady trickle keeps a busy neighbour capped between its requests.
 *
 * A tenant is "brief" (share.h: one slot past its share while others are active) while
 *   - its recent items held a worker for less than brief_us on average (a mean over at least
 *     FAIRQ_BRIEF_SAMPLES finished items), and
 *   - it is giving slots back now: one of its items ended less than brief_us ago, and one it
 *     still holds was already running then.
 * The second part sees the work in progress, which the mean sees only once it ends: a tenant
 * whose requests stop ending stops being brief brief_us after the last one ended, and a burst
 * begun at once (every item of it started after the tenant's last end) is held to its share
 * until one of it ends.
 *
 * Not thread-safe: the owner (workpool) holds its mutex around every call.
 */
#ifndef BULKHEAD_FAIRQ_H
#define BULKHEAD_FAIRQ_H

#include "htable.h"
#include "share.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define FAIRQ_KEY_MAX           80 /* longest tenant key, bytes */
#define FAIRQ_BRIEF_SAMPLES     4  /* items a tenant must have finished before it can be brief */
#define FAIRQ_COST_HALF_LIFE_US 1000000 /* a tenant's recent cost halves every second */

struct fairq_tenant;

/* A queued unit of work, embedded in the caller's request (no allocation per item). */
struct fairq_item {
    struct fairq_item *next;     /* next in its tenant's FIFO */
    struct fairq_tenant *tenant; /* set by fairq_push; valid until fairq_done */
    int64_t enqueued_us;         /* monotonic time of fairq_push (or fairq_take) */
    int64_t begun_us;            /* when it was counted in flight (fairq_pop, fairq_take) */
};

/* One tenant's state. Owned by the queue; lives while active (see above). */
struct fairq_tenant {
    char key[FAIRQ_KEY_MAX + 1];
    struct htable_node hnode;           /* in the queue's table of active tenants */
    struct fairq_tenant *rnext, *rprev; /* ring of tenants with queued items, or NULL */
    struct fairq_item *head, *tail;     /* its FIFO */
    uint32_t queued;                    /* items in its FIFO */
    uint32_t in_flight;                 /* items popped and not yet done */
    uint64_t served;                    /* items popped, ever (metrics) */
    int64_t last_active_us;             /* last push, pop or done */
    int64_t last_done_us;               /* when one of its items last ended (fairq_done) */
    uint32_t held_at_done;              /* items in flight that were running at that end */
    int64_t hold_avg_us;                /* recent mean time an item held a worker (EWMA 1/4) */
    uint32_t hold_samples;              /* items measured (saturates) */
    /* Brief (see above) while the clock is below this; 0: not brief. Written with the owner's
     * lock held at every end and hold measured, read without it by the connection pool while
     * one of the tenant's items runs (fairq_tenant_brief). */
    atomic_int_least64_t brief_until_us;
    /* Its recent cost (by cost, see above): cost_us as it was at cost_at_us, decaying since;
     * cost_rank orders tenants at any one time (log2 of the cost decayed to time 0: decay
     * scales every tenant's cost alike, so ranks computed at different times compare). */
    double cost_us;
    int64_t cost_at_us;
    double cost_rank;        /* -HUGE_VAL while cost_us is 0 */
    int64_t cost_avg_us;     /* recent mean cost of one item (EWMA 1/4): charged at pop */
    uint32_t cost_samples;   /* items done since it became active (saturates) */
    int64_t cost_pending_us; /* those charges for its items in flight, not yet corrected */
    /* Costs reported by runners (fairq_tenant_charge, any thread, lock-free) and not yet
     * counted: the owner folds them in at the item's fairq_done. */
    atomic_int_least64_t cost_unfolded_us;
};

struct fairq_limits {
    size_t queue_max;          /* all tenants' queued items at most */
    size_t tenant_queue_max;   /* one tenant's queued items at most */
    struct share_policy slots; /* who may take one of the workers (slots.size = workers) */
    int64_t linger_us;         /* how long an idle tenant still counts as active */
    int64_t brief_us;          /* brief (see above) needs a recent mean hold below this and an
                                  end this recent; 0: nobody is brief */
    bool by_cost;              /* serve the tenant of least recent cost first (see above);
                                  false: round-robin */
};

struct fairq {
    struct htable tenants;       /* every active tenant; the tenants are the queue's (sweep) */
    size_t ntenants;             /* active tenants */
    struct fairq_tenant *cursor; /* next tenant of the ring to serve */
    size_t queued, in_flight;    /* in_flight: items popped and not done (busy workers) */
    struct fairq_limits lim;
};

enum { FAIRQ_OK = 0, FAIRQ_FULL = 1, FAIRQ_TENANT_FULL = 2 };

void fairq_init(struct fairq *q, const struct fairq_limits *lim);
void fairq_destroy(struct fairq *q); /* the queue must hold no items */

/* Change the limits (config reload). Items queued or in flight stay. */
void fairq_set_limits(struct fairq *q, const struct fairq_limits *lim);

/* Queue item for tenant key. Returns FAIRQ_OK, FAIRQ_FULL or FAIRQ_TENANT_FULL. The limits
 * count requests that wait: slack is how many idle workers will take an item at once (the
 * caller's count), and that many items more are let in beyond queue_max and the tenant's cap,
 * so a tier with queue_max 0 still serves whatever finds a worker free. */
int fairq_push(struct fairq *q, const char *key, struct fairq_item *item, int64_t now_us,
               size_t slack);

/* Serve item now, without queueing, if tenant key has nothing waiting and share.h's rule lets
 * it take a slot: true with it counted in flight (as fairq_pop would), false otherwise. */
bool fairq_take(struct fairq *q, const char *key, struct fairq_item *item, int64_t now_us);

/* The next item to serve, or NULL when nothing may be served now. Counts it in flight. */
struct fairq_item *fairq_pop(struct fairq *q, int64_t now_us);

/* An item returned by fairq_pop (or fairq_take) has finished: t is giving a slot back. */
void fairq_done(struct fairq *q, struct fairq_tenant *t, int64_t now_us);

/* An item of t held a worker for held_us: update t's mean hold (before its fairq_done). */
void fairq_record_hold(struct fairq *q, struct fairq_tenant *t, int64_t held_us);

/* An item of t in flight cost cost_us (its statement's database time): counted at the item's
 * fairq_done. Any thread, while the item is in flight (lock-free, one atomic add). */
void fairq_tenant_charge(struct fairq_tenant *t, int64_t cost_us);

/* t's recent cost (see above) at now_us, in microseconds. */
double fairq_tenant_cost(const struct fairq_tenant *t, int64_t now_us);

/* Whether t's requests are brief at now_us (any thread, while one of t's items is in flight:
 * lock-free, one atomic load). */
bool fairq_tenant_brief(const struct fairq_tenant *t, int64_t now_us);

/* Remove and return (as a list linked by ->next) the queued items enqueued before cutoff_us. */
struct fairq_item *fairq_expire(struct fairq *q, int64_t cutoff_us);

/* Remove and return every queued item (shutdown). */
struct fairq_item *fairq_drain(struct fairq *q);

/* Forget tenants idle for linger_us. Returns how many were freed. */
size_t fairq_sweep(struct fairq *q, int64_t now_us);

/* Up to n busiest tenants (by in-flight + queued), busiest first. Returns how many. */
size_t fairq_top(const struct fairq *q, const struct fairq_tenant **out, size_t n);

/* Whether a tenant other than t is active. */
static inline bool fairq_others_active(const struct fairq *q, const struct fairq_tenant *t)
{
    return q->ntenants > (t ? 1u : 0u);
}

#endif
