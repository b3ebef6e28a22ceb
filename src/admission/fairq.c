/*
 * fairq: per-tenant FIFOs in a round-robin ring (see fairq.h for the policy).
 *
 * Tenants live in a hash table (htable.h, keyed: clients name them) while active. Tenants with
 * queued items also sit on a circular doubly linked ring; fairq_pop walks the ring from the cursor
 * and serves the first tenant allowed to run, then moves the cursor past it: one item per tenant
 * per turn.
 */
#include "fairq.h"
#include "compiler.h"
#include "xalloc.h"

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
    item->begun_us = now_us;
    t->in_flight++;
    t->served++;
    q->in_flight++;
    t->last_active_us = now_us;
    return true;
}

struct fairq_item *fairq_pop(struct fairq *q, int64_t now_us)
{
    struct fairq_tenant *start = q->cursor;
    if (!start)
        return NULL;
    struct fairq_tenant *t = start;
    do {
        /* share.h's rule: a tenant that may not take a worker now is passed over. */
        if (share_may_take(&q->lim.slots, t->in_flight, q->in_flight, fairq_others_active(q, t),
                           fairq_tenant_brief(t, now_us))) {
            q->cursor = t->rnext;
            struct fairq_item *it = fairq_take_head(q, t);
            it->begun_us = now_us;
            t->in_flight++;
            t->served++;
            q->in_flight++;
            t->last_active_us = now_us;
            return it;
        }
        t = t->rnext;
    } while (t != start);
    return NULL;
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

void fairq_done(struct fairq *q, struct fairq_tenant *t, int64_t now_us)
{
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
