/*
 * workpool: worker threads around a fairq (see workpool.h for the design).
 *
 * Threads are numbered; a worker whose number is at or above the current target retires, which
 * is how a config reload shrinks a pool without interrupting running work. Retired threads are
 * joined when the pool grows again or stops.
 *
 * Idle workers park on a stack, each on its own condition variable: new work wakes exactly one
 * worker, the one that went idle last (its cache is warm), and is signalled after the mutex is
 * released so the woken thread does not run into a held lock. A worker that finishes an item
 * looks for the next one itself before parking, so finishing wakes nobody.
 */
#include "workpool.h"
#include "mclock.h"
#include "xalloc.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define WORKPOOL_MAX_THREADS 1024
#define WORKPOOL_STACK       (256 * 1024) /* workers run libpq calls and small formatting only */

struct workpool_thread {
    pthread_t tid;
    bool started; /* tid is joinable */
    bool exited;  /* left its loop for good (guarded by the pool mutex) */
    size_t index;
    struct workpool *wp;
    pthread_cond_t cond;                 /* where it waits while parked */
    bool parked;                         /* on the idle stack (guarded by the pool mutex) */
    struct workpool_thread *next_parked; /* idle stack link (guarded by the pool mutex) */
};

struct workpool {
    char name[40];
    struct workpool_ops ops;

    /* Held for the whole of a resize (workpool_set_limits) and of workpool_stop, so the two never
     * overlap: a resize joins retired threads with the mutex below released, and stop joins
     * every thread without it (the janitor resizes a pool for a fleet lease while the main
     * thread may be stopping it). Workers never take it. Taken before the mutex below. */
    pthread_mutex_t resize;

    /* _shared: the mutex guards everything in this block. */
    pthread_mutex_t mutex;
    struct workpool_thread *parked; /* idle workers, most recently idle on top */
    size_t nparked;                 /* how many are on that stack */
    size_t waking;                  /* taken off the stack, not yet looking for work */
    struct fairq q;
    struct fairq_item *handed, *handed_tail; /* begun items a thread must run (workpool_hand) */
    size_t target;                           /* threads that should run */
    size_t running;                          /* threads not yet retired */
    bool stopping;
    struct workpool_thread threads[WORKPOOL_MAX_THREADS];

    /* Counters, written under the mutex or atomically, read by metrics without it. */
    atomic_size_t tenants_active; /* mirror of q.ntenants for lock-free readers */
    atomic_uint_least64_t submitted, completed, rejected_full, rejected_tenant, expired;
};

static void workpool_mirror(struct workpool *wp)
{
    atomic_store_explicit(&wp->tenants_active, wp->q.ntenants, memory_order_relaxed);
}

/* Take the most recently idle worker off the stack; signal its cond after unlocking. */
static struct workpool_thread *workpool_unpark_one(struct workpool *wp)
{
    struct workpool_thread *th = wp->parked;
    if (th) {
        wp->parked = th->next_parked;
        th->parked = false;
        wp->nparked--;
        wp->waking++;
    }
    return th;
}

/* Wake every parked worker (rare: limits changed, tenants forgotten, stop). Mutex held. */
static void workpool_unpark_all(struct workpool *wp)
{
    struct workpool_thread *th;
    while ((th = workpool_unpark_one(wp)))
        pthread_cond_signal(&th->cond);
}

static void *workpool_main(void *arg)
{
    struct workpool_thread *self = arg;
    struct workpool *wp = self->wp;
    pthread_mutex_lock(&wp->mutex);
    for (;;) {
        if (self->index >= wp->target || (wp->stopping && wp->q.queued == 0 && !wp->handed))
            break;
        int64_t popped = mclock_now_us();
        struct fairq_item *it = wp->handed;
        if (it) {
            /* Begun elsewhere and counted in flight since: its hold started then. */
            wp->handed = it->next;
            if (!wp->handed)
                wp->handed_tail = NULL;
            it->next = NULL;
            popped = it->begun_us;
        } else if (!wp->stopping) {
            it = fairq_pop(&wp->q, popped);
        }
        if (!it) {
            self->parked = true;
            self->next_parked = wp->parked;
            wp->parked = self;
            wp->nparked++;
            while (self->parked)
                pthread_cond_wait(&self->cond, &wp->mutex);
            wp->waking--;
            continue;
        }
        workpool_mirror(wp);
        pthread_mutex_unlock(&wp->mutex);

        struct fairq_tenant *t = it->tenant;
        wp->ops.run(it, wp->ops.ctx); /* it may be freed by now: only t is used below */

        pthread_mutex_lock(&wp->mutex);
        int64_t now = mclock_now_us();
        fairq_record_hold(&wp->q, t, now - popped);
        fairq_done(&wp->q, t, now);
        atomic_fetch_add_explicit(&wp->completed, 1, memory_order_relaxed);
        /* A tenant below its share again may unblock a queued item: this thread looks for it
         * next, so no one else needs waking. */
    }
    self->exited = true;
    wp->running--;
    /* A retiring thread that has just finished an item would have looked for the next one
     * itself (see fairq_done above); it leaves instead, so it hands that look to a parked
     * worker. Without this, items held back by a tenant's share could wait with every
     * remaining worker parked. */
    struct workpool_thread *th =
        (wp->q.queued && !wp->stopping) || wp->handed ? workpool_unpark_one(wp) : NULL;
    pthread_mutex_unlock(&wp->mutex);
    if (th)
        pthread_cond_signal(&th->cond);
    return NULL;
}

/* Start threads [from, to). Caller holds the mutex. */
static int workpool_spawn(struct workpool *wp, size_t from, size_t to)
{
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, WORKPOOL_STACK);
    int rc = 0;
    for (size_t i = from; i < to; i++) {
        struct workpool_thread *th = &wp->threads[i];
        if (th->started && !th->exited) {
            /* Told to retire but still running its last item: it sees the raised target when
             * it looks again and stays. Joining it here would wait for it forever. */
            continue;
        }
        if (th->started) {
            /* A retired thread in this slot: reap it (it has left its loop). */
            pthread_mutex_unlock(&wp->mutex);
            pthread_join(th->tid, NULL);
            pthread_mutex_lock(&wp->mutex);
            th->started = false;
        }
        th->index = i;
        th->wp = wp;
        th->exited = false;
        rc = pthread_create(&th->tid, &attr, workpool_main, th);
        if (rc) {
            rc = -rc;
            break;
        }
        th->started = true;
        wp->running++;
        char tname[16];
        snprintf(tname, sizeof(tname), "w-%.8s-%zu", wp->name, i);
        pthread_setname_np(th->tid, tname);
    }
    pthread_attr_destroy(&attr);
    return rc;
}

static struct fairq_limits workpool_q_limits(const struct workpool_limits *lim)
{
    struct fairq_limits q = {.queue_max = lim->queue_max,
                             .tenant_queue_max = lim->tenant_queue_max,
                             .slots = lim->share,
                             .linger_us = lim->linger_us,
                             .brief_us = lim->brief_us,
                             .by_cost = lim->by_cost};
    q.slots.size = lim->threads;
    return q;
}

int workpool_create(const char *name, const struct workpool_limits *lim,
                    const struct workpool_ops *ops, struct workpool **out)
{
    if (lim->threads == 0 || lim->threads > WORKPOOL_MAX_THREADS)
        return -EINVAL;
    struct workpool *wp = xcalloc(1, sizeof(*wp));
    snprintf(wp->name, sizeof(wp->name), "%s", name);
    wp->ops = *ops;
    struct fairq_limits ql = workpool_q_limits(lim);
    fairq_init(&wp->q, &ql);
    pthread_mutex_init(&wp->resize, NULL);
    pthread_mutex_init(&wp->mutex, NULL);
    for (size_t i = 0; i < WORKPOOL_MAX_THREADS; i++)
        pthread_cond_init(&wp->threads[i].cond, NULL);

    pthread_mutex_lock(&wp->mutex);
    wp->target = lim->threads;
    int rc = workpool_spawn(wp, 0, lim->threads);
    pthread_mutex_unlock(&wp->mutex);
    if (rc) {
        workpool_stop(wp);
        workpool_destroy(wp);
        return rc;
    }
    *out = wp;
    return 0;
}

int workpool_submit(struct workpool *wp, const char *tenant, struct fairq_item *item)
{
    pthread_mutex_lock(&wp->mutex);
    if (wp->stopping) {
        pthread_mutex_unlock(&wp->mutex);
        return -ESHUTDOWN;
    }
    /* A free slot takes an item at once (a worker thread is free for every free slot: items
     * begun on event threads hold slots, not threads): it does not wait, so the queue's limits
     * let that many more in. */
    size_t free_slots = wp->target > wp->q.in_flight ? wp->target - wp->q.in_flight : 0;
    int r = fairq_push(&wp->q, tenant, item, mclock_now_us(), free_slots);
    workpool_mirror(wp);
    struct workpool_thread *th = r == FAIRQ_OK ? workpool_unpark_one(wp) : NULL;
    pthread_mutex_unlock(&wp->mutex);
    if (th)
        pthread_cond_signal(&th->cond);
    switch (r) {
    case FAIRQ_OK:
        atomic_fetch_add_explicit(&wp->submitted, 1, memory_order_relaxed);
        return 0;
    case FAIRQ_FULL:
        atomic_fetch_add_explicit(&wp->rejected_full, 1, memory_order_relaxed);
        return -EAGAIN;
    default:
        atomic_fetch_add_explicit(&wp->rejected_tenant, 1, memory_order_relaxed);
        return -EDQUOT;
    }
}

int workpool_begin(struct workpool *wp, const char *tenant, struct fairq_item *item)
{
    pthread_mutex_lock(&wp->mutex);
    int rc = -ESHUTDOWN;
    if (!wp->stopping)
        rc = fairq_take(&wp->q, tenant, item, mclock_now_us()) ? 0 : -EBUSY;
    workpool_mirror(wp);
    pthread_mutex_unlock(&wp->mutex);
    if (rc == 0)
        atomic_fetch_add_explicit(&wp->submitted, 1, memory_order_relaxed);
    return rc;
}

int workpool_hand(struct workpool *wp, struct fairq_item *item)
{
    pthread_mutex_lock(&wp->mutex);
    if (wp->stopping) {
        pthread_mutex_unlock(&wp->mutex);
        return -ESHUTDOWN;
    }
    item->next = NULL;
    if (wp->handed_tail)
        wp->handed_tail->next = item;
    else
        wp->handed = item;
    wp->handed_tail = item;
    struct workpool_thread *th = workpool_unpark_one(wp);
    pthread_mutex_unlock(&wp->mutex);
    if (th)
        pthread_cond_signal(&th->cond);
    return 0;
}

struct fairq_item *workpool_end(struct workpool *wp, struct fairq_tenant *t, int64_t begun_us,
                                bool take_next)
{
    int64_t now_us = mclock_now_us();
    pthread_mutex_lock(&wp->mutex);
    fairq_record_hold(&wp->q, t, now_us - begun_us);
    fairq_done(&wp->q, t, now_us);
    atomic_fetch_add_explicit(&wp->completed, 1, memory_order_relaxed);
    struct fairq_item *next = NULL;
    struct workpool_thread *th = NULL;
    if (!wp->stopping && wp->q.queued) {
        /* The caller takes what the freed slot lets in; when nothing may be served now, a
         * worker's fairq_pop would find nothing either, so none is woken to look (a tenant at
         * its share with items queued would otherwise cost a wake-up per request of the
         * others). Without take_next, a worker looks. */
        if (take_next)
            next = fairq_pop(&wp->q, now_us);
        else
            th = workpool_unpark_one(wp);
    }
    workpool_mirror(wp);
    pthread_mutex_unlock(&wp->mutex);
    if (th)
        pthread_cond_signal(&th->cond);
    return next;
}

static void workpool_drop_list(struct workpool *wp, struct fairq_item *list,
                               enum workpool_drop_reason why)
{
    while (list) {
        struct fairq_item *next = list->next;
        wp->ops.drop(list, why, wp->ops.ctx);
        list = next;
    }
}

void workpool_expire(struct workpool *wp, int64_t cutoff_us, int64_t now_us)
{
    pthread_mutex_lock(&wp->mutex);
    struct fairq_item *list = fairq_expire(&wp->q, cutoff_us);
    size_t forgotten = fairq_sweep(&wp->q, now_us);
    workpool_mirror(wp);
    /* Forgotten tenants may lift a neighbour's share cap. */
    if (forgotten && wp->q.queued)
        workpool_unpark_all(wp);
    pthread_mutex_unlock(&wp->mutex);
    size_t n = 0;
    for (struct fairq_item *it = list; it; it = it->next)
        n++;
    atomic_fetch_add_explicit(&wp->expired, n, memory_order_relaxed);
    workpool_drop_list(wp, list, WORKPOOL_EXPIRED);
}

int workpool_set_limits(struct workpool *wp, const struct workpool_limits *lim)
{
    if (lim->threads == 0 || lim->threads > WORKPOOL_MAX_THREADS)
        return -EINVAL;
    struct fairq_limits ql = workpool_q_limits(lim);
    pthread_mutex_lock(&wp->resize);
    pthread_mutex_lock(&wp->mutex);
    fairq_set_limits(&wp->q, &ql);
    size_t old = wp->target;
    wp->target = lim->threads;
    int rc = 0;
    if (lim->threads > old && !wp->stopping)
        rc = workpool_spawn(wp, old, lim->threads);
    workpool_unpark_all(wp); /* retire surplus threads, try new share limits */
    pthread_mutex_unlock(&wp->mutex);
    pthread_mutex_unlock(&wp->resize);
    return rc;
}

bool workpool_tenant_brief(const void *tenant)
{
    return fairq_tenant_brief(tenant, mclock_now_us());
}

void workpool_tenant_charge(struct fairq_tenant *tenant, int64_t cost_us)
{
    fairq_tenant_charge(tenant, cost_us);
}

bool workpool_others_active(const struct workpool *wp)
{
    return atomic_load_explicit(&wp->tenants_active, memory_order_relaxed) > 1;
}

void workpool_stats(struct workpool *wp, struct workpool_stats *out)
{
    pthread_mutex_lock(&wp->mutex);
    out->threads = wp->target;
    out->running = wp->running;
    out->busy = wp->q.in_flight;
    out->queued = wp->q.queued;
    out->queue_max = wp->q.lim.queue_max;
    out->tenants = wp->q.ntenants;
    out->idle = wp->target > wp->q.in_flight ? wp->target - wp->q.in_flight : 0;
    pthread_mutex_unlock(&wp->mutex);
    out->submitted = atomic_load_explicit(&wp->submitted, memory_order_relaxed);
    out->completed = atomic_load_explicit(&wp->completed, memory_order_relaxed);
    out->rejected_full = atomic_load_explicit(&wp->rejected_full, memory_order_relaxed);
    out->rejected_tenant = atomic_load_explicit(&wp->rejected_tenant, memory_order_relaxed);
    out->expired = atomic_load_explicit(&wp->expired, memory_order_relaxed);
}

size_t workpool_top_tenants(struct workpool *wp, struct workpool_tenant_load *out, size_t n)
{
    const struct fairq_tenant *top[16];
    if (n > 16)
        n = 16;
    int64_t now = mclock_now_us();
    pthread_mutex_lock(&wp->mutex);
    size_t found = fairq_top(&wp->q, top, n);
    for (size_t i = 0; i < found; i++) {
        snprintf(out[i].key, sizeof(out[i].key), "%s", top[i]->key);
        out[i].id = top[i];
        out[i].hold_avg_us = top[i]->hold_avg_us;
        out[i].recent_db_us = fairq_tenant_cost(top[i], now);
        out[i].brief = fairq_tenant_brief(top[i], now);
        out[i].in_flight = top[i]->in_flight;
        out[i].queued = top[i]->queued;
    }
    pthread_mutex_unlock(&wp->mutex);
    return found;
}

void workpool_stop(struct workpool *wp)
{
    pthread_mutex_lock(&wp->resize);
    pthread_mutex_lock(&wp->mutex);
    wp->stopping = true;
    struct fairq_item *list = fairq_drain(&wp->q);
    workpool_unpark_all(wp);
    pthread_mutex_unlock(&wp->mutex);
    workpool_drop_list(wp, list, WORKPOOL_SHUTDOWN);

    for (size_t i = 0; i < WORKPOOL_MAX_THREADS; i++) {
        if (wp->threads[i].started) {
            pthread_join(wp->threads[i].tid, NULL);
            wp->threads[i].started = false;
        }
    }
    pthread_mutex_unlock(&wp->resize);
}

void workpool_destroy(struct workpool *wp)
{
    if (!wp)
        return;
    fairq_destroy(&wp->q);
    for (size_t i = 0; i < WORKPOOL_MAX_THREADS; i++)
        pthread_cond_destroy(&wp->threads[i].cond);
    pthread_mutex_destroy(&wp->mutex);
    pthread_mutex_destroy(&wp->resize);
    free(wp);
}
