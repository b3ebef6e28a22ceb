/*
 * fairq: per-tenant FIFOs in a round-robin ring (see fairq.h for the policy).
 *
 * Tenants live in a hash table (htable.h, keyed: clients name them) while active. Tenants with
 * queued items also sit on a circular doubly linked ring; fairq_pop walks the ring from the cursor
 * and serves the first tenant allowed to run (by cost: the one of least cost_rank among those
 * allowed, the first of them from the cursor on a tie), then moves the cursor past it: one item
 * per tenant per turn. The walk by cost visits every tenant with queued items, as the
 * round-robin walk does when all of them are at their share: at most queue_max of them.
 */
#include "fairq.h"
#include "compiler.h"
#include "xalloc.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Keys are cut to FAIRQ_KEY_MAX bytes (the stored copy's size), so hash only those: a longer
 * key must find the tenant it created, not make a new one on every push. */
static uint64_t fairq_hash(const char *key)
{
    return htable_hash(key, strnlen(key, FAIRQ_KEY_MAX));
}

static struct fairq_tenant *fairq_tenant_of(struct htable_node *n)
{
    return container_of(n, struct fairq_tenant, hnode);
}

void fairq_init(struct fairq *q, const struct fairq_limits *lim)
{
    memset(q, 0, sizeof(*q));
    htable_init(&q->tenants, 64);
    fairq_set_limits(q, lim);
}

static void fairq_brief_update(const struct fairq *q, struct fairq_tenant *t);

void fairq_set_limits(struct fairq *q, const struct fairq_limits *lim)
{
    q->lim = *lim;
    if (q->lim.slots.cap < 1)
        q->lim.slots.cap = 1;
    /* brief_us may have changed: every verdict is recomputed with it. */
    struct htable_iter it;
    htable_iter_init(&it, &q->tenants);
    for (struct htable_node *n; (n = htable_iter_next(&it)) != NULL;)
        fairq_brief_update(q, fairq_tenant_of(n));
}

void fairq_destroy(struct fairq *q)
{
    struct htable_iter it;
    htable_iter_init(&it, &q->tenants);
    for (struct htable_node *n; (n = htable_iter_next(&it)) != NULL;)
        free(fairq_tenant_of(n));
    htable_destroy(&q->tenants);
    memset(q, 0, sizeof(*q));
}

static struct fairq_tenant *fairq_lookup(struct fairq *q, const char *key, bool create)
{
    uint64_t h = fairq_hash(key);
    for (struct htable_node *n = htable_first(&q->tenants, h); n; n = htable_next(n, h)) {
        struct fairq_tenant *t = fairq_tenant_of(n);
        if (!strncmp(t->key, key, FAIRQ_KEY_MAX))
            return t;
    }
    if (!create)
        return NULL;
    struct fairq_tenant *t = xcalloc(1, sizeof(*t));
    strncpy(t->key, key, FAIRQ_KEY_MAX);
    t->cost_rank = -HUGE_VAL;
    htable_insert(&q->tenants, &t->hnode, h);
    q->ntenants++;
    return t;
}

static void fairq_ring_insert(struct fairq *q, struct fairq_tenant *t)
{
    if (!q->cursor) {
        t->rnext = t->rprev = t;
        q->cursor = t;
        return;
    }
    /* Join just before the cursor: served last in the current turn. */
    struct fairq_tenant *c = q->cursor;
    t->rnext = c;
    t->rprev = c->rprev;
    c->rprev->rnext = t;
    c->rprev = t;
}

static void fairq_ring_remove(struct fairq *q, struct fairq_tenant *t)
{
    if (t->rnext == t) {
        q->cursor = NULL;
    } else {
        t->rprev->rnext = t->rnext;
        t->rnext->rprev = t->rprev;
        if (q->cursor == t)
            q->cursor = t->rnext;
    }
    t->rnext = t->rprev = NULL;
}

int fairq_push(struct fairq *q, const char *key, struct fairq_item *item, int64_t now_us,
               size_t slack)
{
    if (q->queued >= q->lim.queue_max + slack)
        return FAIRQ_FULL;
    /* Slack is for items an idle worker takes at once: not for a tenant fairq_pop would pass
     * over now (at its share), whose item would wait. */
    struct fairq_tenant *t = fairq_lookup(q, key, false);
    if (slack && t &&
        !share_may_take(&q->lim.slots, t->in_flight, q->in_flight, fairq_others_active(q, t),
                        fairq_tenant_brief(t, now_us))) {
        slack = 0;
        if (q->queued >= q->lim.queue_max)
            return FAIRQ_FULL;
    }
    if (!t)
        t = fairq_lookup(q, key, true);
    if (t->queued >= q->lim.tenant_queue_max + slack) {
        t->last_active_us = now_us;
        return FAIRQ_TENANT_FULL;
    }
    item->next = NULL;
    item->tenant = t;
    item->enqueued_us = now_us;
    if (t->tail)
        t->tail->next = item;
    else
        t->head = item;
    t->tail = item;
    if (t->queued++ == 0)
        fairq_ring_insert(q, t);
    q->queued++;
    t->last_active_us = now_us;
    return FAIRQ_OK;
}

static struct fairq_item *fairq_take_head(struct fairq *q, struct fairq_tenant *t)
{
    struct fairq_item *it = t->head;
    t->head = it->next;
    if (!t->head)
        t->tail = NULL;
    it->next = NULL;
    q->queued--;
    if (--t->queued == 0)
        fairq_ring_remove(q, t);
    return it;
}

double fairq_tenant_cost(const struct fairq_tenant *t, int64_t now_us)
{
    if (t->cost_us <= 0)
        return 0;
    int64_t dt = now_us - t->cost_at_us;
    return dt > 0 ? t->cost_us * exp2(-(double)dt / FAIRQ_COST_HALF_LIFE_US) : t->cost_us;
}

/* Add delta_us (negative: a correction) to t's recent cost at now_us, and rank it again. */
static void fairq_cost_add(struct fairq_tenant *t, double delta_us, int64_t now_us)
{
    double c = fairq_tenant_cost(t, now_us) + delta_us;
    t->cost_us = c > 0 ? c : 0;
    t->cost_at_us = now_us;
    /* log2(cost x 2^(now / half-life)): the cost decayed back to time 0, in the log so that
     * it never overflows. */
    t->cost_rank = c > 0 ? log2(c) + (double)now_us / FAIRQ_COST_HALF_LIFE_US : -HUGE_VAL;
}

/* item of t begins now (fairq_pop, fairq_take): count it in flight and charge it t's mean
 * cost, corrected at its fairq_done. */
static void fairq_begin(struct fairq *q, struct fairq_tenant *t, struct fairq_item *item,
                        int64_t now_us)
{
    item->begun_us = now_us;
    t->in_flight++;
    t->served++;
    q->in_flight++;
    t->last_active_us = now_us;
    if (t->cost_avg_us > 0) {
        t->cost_pending_us += t->cost_avg_us;
        fairq_cost_add(t, (double)t->cost_avg_us, now_us);
    }
}

bool fairq_take(struct fairq *q, const char *key, struct fairq_item *item, int64_t now_us)
{
    struct fairq_tenant *t = fairq_lookup(q, key, false);
    if (t && t->queued)
        return false; /* its own items first */
    if (!share_may_take(&q->lim.slots, t ? t->in_flight : 0, q->in_flight,
                        t ? fairq_others_active(q, t) : q->ntenants > 0,
                        t && fairq_tenant_brief(t, now_us)))
        return false;
    if (!t)
        t = fairq_lookup(q, key, true);
    item->next = NULL;
    item->tenant = t;
    item->enqueued_us = now_us;
    fairq_begin(q, t, item, now_us);
    return true;
}

/* The tenant of the ring to serve now, or NULL. share.h's rule: a tenant that may not take a
 * worker now is passed over. */
static struct fairq_tenant *fairq_next(const struct fairq *q, int64_t now_us)
{
    struct fairq_tenant *start = q->cursor, *best = NULL;
    if (!start)
        return NULL;
    struct fairq_tenant *t = start;
    do {
        if (share_may_take(&q->lim.slots, t->in_flight, q->in_flight, fairq_others_active(q, t),
                           fairq_tenant_brief(t, now_us))) {
            if (!q->lim.by_cost)
                return t;
            if (!best || t->cost_rank < best->cost_rank)
                best = t;
        }
        t = t->rnext;
    } while (t != start);
    return best;
}

struct fairq_item *fairq_pop(struct fairq *q, int64_t now_us)
{
    struct fairq_tenant *t = fairq_next(q, now_us);
    if (!t)
        return NULL;
    q->cursor = t->rnext;
    struct fairq_item *it = fairq_take_head(q, t);
    fairq_begin(q, t, it, now_us);
    return it;
}

/* Recompute t's brief verdict (fairq.h) after its mean or its last end changed, as the time
 * until which it holds: every input changes only here, so readers need no lock. */
static void fairq_brief_update(const struct fairq *q, struct fairq_tenant *t)
{
    bool mean_brief = q->lim.brief_us > 0 && t->hold_samples >= FAIRQ_BRIEF_SAMPLES &&
                      t->hold_avg_us < q->lim.brief_us;
    int64_t until = mean_brief && t->held_at_done > 0 ? t->last_done_us + q->lim.brief_us : 0;
    atomic_store_explicit(&t->brief_until_us, until, memory_order_relaxed);
}

/* An item of t is done: count what its runner reported (fairq_tenant_charge) in place of the
 * mean charged when it began, and learn the mean from it. The charges of t's items in flight
 * are corrected by their mean: exact while they were the same. */
static void fairq_cost_done(struct fairq_tenant *t, int64_t now_us)
{
    int64_t cost = atomic_exchange_explicit(&t->cost_unfolded_us, 0, memory_order_relaxed);
    int64_t estimate = t->in_flight ? t->cost_pending_us / t->in_flight : 0;
    t->cost_pending_us -= estimate;
    if (cost != estimate)
        fairq_cost_add(t, (double)(cost - estimate), now_us);
    if (t->cost_samples == 0)
        t->cost_avg_us = cost;
    else
        t->cost_avg_us += (cost - t->cost_avg_us) / 4;
    if (t->cost_samples < UINT32_MAX)
        t->cost_samples++;
}

void fairq_tenant_charge(struct fairq_tenant *t, int64_t cost_us)
{
    if (cost_us > 0)
        atomic_fetch_add_explicit(&t->cost_unfolded_us, cost_us, memory_order_relaxed);
}

void fairq_done(struct fairq *q, struct fairq_tenant *t, int64_t now_us)
{
    fairq_cost_done(t, now_us);
    t->in_flight--;
    q->in_flight--;
    t->last_active_us = now_us;
    /* Every item still in flight was running at this end; those begun later were not. */
    t->last_done_us = now_us;
    t->held_at_done = t->in_flight;
    fairq_brief_update(q, t);
}

void fairq_record_hold(struct fairq *q, struct fairq_tenant *t, int64_t held_us)
{
    if (held_us < 0)
        held_us = 0;
    if (t->hold_samples == 0)
        t->hold_avg_us = held_us;
    else
        t->hold_avg_us += (held_us - t->hold_avg_us) / 4;
    if (t->hold_samples < UINT32_MAX)
        t->hold_samples++;
    fairq_brief_update(q, t);
}

bool fairq_tenant_brief(const struct fairq_tenant *t, int64_t now_us)
{
    return now_us < atomic_load_explicit(&t->brief_until_us, memory_order_relaxed);
}

static struct fairq_item *fairq_collect(struct fairq *q, int64_t cutoff_us, bool all)
{
    /* Walk the hash table, not the ring: taking heads may unlink tenants from the ring. */
    struct fairq_item *out = NULL, **tail = &out;
    struct htable_iter it;
    htable_iter_init(&it, &q->tenants);
    for (struct htable_node *n; q->queued && (n = htable_iter_next(&it)) != NULL;) {
        struct fairq_tenant *t = fairq_tenant_of(n);
        while (t->head && (all || t->head->enqueued_us < cutoff_us)) {
            *tail = fairq_take_head(q, t);
            tail = &(*tail)->next;
        }
    }
    return out;
}

struct fairq_item *fairq_expire(struct fairq *q, int64_t cutoff_us)
{
    return fairq_collect(q, cutoff_us, false);
}

struct fairq_item *fairq_drain(struct fairq *q)
{
    return fairq_collect(q, 0, true);
}

size_t fairq_sweep(struct fairq *q, int64_t now_us)
{
    size_t freed = 0;
    struct htable_iter it;
    htable_iter_init(&it, &q->tenants);
    for (struct htable_node *n; (n = htable_iter_next(&it)) != NULL;) {
        struct fairq_tenant *t = fairq_tenant_of(n);
        if (t->queued == 0 && t->in_flight == 0 && now_us - t->last_active_us >= q->lim.linger_us) {
            htable_remove(&q->tenants, n);
            free(t);
            q->ntenants--;
            freed++;
        }
    }
    return freed;
}

size_t fairq_top(const struct fairq *q, const struct fairq_tenant **out, size_t n)
{
    size_t found = 0;
    struct htable_iter it;
    htable_iter_init(&it, &q->tenants);
    for (struct htable_node *node; n && (node = htable_iter_next(&it)) != NULL;) {
        const struct fairq_tenant *t = fairq_tenant_of(node);
        uint32_t load = t->in_flight + t->queued;
        if (load == 0)
            continue;
        /* Insertion into a short sorted list: n is small (a handful). */
        size_t pos = found < n ? found : n;
        while (pos > 0 && out[pos - 1]->in_flight + out[pos - 1]->queued < load)
            pos--;
        if (pos >= n)
            continue;
        size_t last = found < n ? found : n - 1;
        memmove(&out[pos + 1], &out[pos], (last - pos) * sizeof(*out));
        out[pos] = t;
        if (found < n)
            found++;
    }
    return found;
}
