/*
 * rlsync: local verdicts from views of Redis's counts, hits sent in batches (see rlsync.h).
 *
 * A view's life: a tenant's first request creates it (TAT 0: a full bucket; lease 1), admitted
 * hits raise `pending` and put the tenant on the send queue; the syncer's cut moves them to
 * `inflight` and sends them; the answer sets the TAT to Redis's (plus the hits admitted since
 * the cut) and marks the view `known`. A view with nothing pending, in flight or waiting has
 * its TAT as keytab deadline and disappears when the TAT passes, like the in-memory limiter's
 * keys; a busy one never expires.
 */
#include "rlsync.h"
#include "keytab.h"
#include "log.h"
#include "mclock.h"
#include "rlredis.h"
#include "xalloc.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RLSYNC_SWEEP_US  1000000 /* the syncer deletes passed views this often */
#define RLSYNC_KICK_KEYS 4096    /* tenants queued that start a batch before its time */

/* One tenant as this instance sees it: the keytab's data for its key. */
struct rls_view {
    int64_t tat;         /* Redis's TAT at its last answer (this clock) + own hits since */
    int64_t interval_us; /* T of its latest admitted hit: what the next batch charges */
    uint32_t pending;    /* admitted, not sent yet */
    uint32_t inflight;   /* in the batch being sent */
    uint32_t waiting;    /* parked requests for it */
    bool queued;         /* on the send queue (pending > 0 since the last cut) */
    bool known;          /* Redis has answered for it: its lease is full, not 1 */
};

/* A parked request. */
struct rls_wait {
    struct rls_wait *next;
    void (*decided)(void *ctx, const struct ratelimit_result *verdict);
    void *ctx;
    int64_t limit, window_s;
    struct ratelimit_result verdict;
    char key[RLREDIS_KEY_MAX];
};

/* Keys with hits to send (a growing array; the syncer swaps it for an empty one). */
struct rls_queue {
    char (*keys)[RLREDIS_KEY_MAX];
    size_t n, cap;
};

struct rlsync {
    struct rlsync_cfg cfg;
    struct keytab *views;  /* owned: rls_view per "<tier>:<tenant>" */
    struct rlredis *redis; /* owned; the syncer's (or rlsync_sync's caller's) alone */
    atomic_bool down;      /* Redis unavailable: verdicts are local, nothing is queued */
    atomic_bool stopped;   /* rlsync_stop ran: likewise, for good */
    int64_t retry_at_us;   /* while down: the next try (syncer only) */
    int64_t last_batch_us; /* syncer only */
    int64_t last_sweep_us; /* syncer only */
    pthread_t thread;
    bool started;

    pthread_mutex_t mutex;  /* guards the fields below */
    pthread_cond_t wake;    /* the syncer's: hits queued, a request parked, stop */
    struct rls_queue queue; /* tenants with pending hits */
    struct rls_queue spare; /* the syncer's empty one, swapped in at a cut */
    struct rls_wait *waits; /* parked requests, oldest first; owned */
    struct rls_wait **waits_tail;
    bool kicked; /* a request parked: send now rather than at the interval */
    bool stopping;

    atomic_uint_least64_t errors, fallbacks, batches, hits_sent, hits_dropped, nwaits, untracked;
    atomic_uint_least64_t waiting;
};

int64_t rlsync_lease(const struct rlsync *s, int64_t limit)
{
    int64_t l = limit * s->cfg.lease_pct / 100;
    return l < 1 ? 1 : l;
}

static int64_t rls_interval(int64_t limit, int64_t window_s)
{
    int64_t t = window_s * 1000000 / limit;
    return t < 1 ? 1 : t;
}

/* A view with nothing to send, receive or decide lasts until its TAT passes. */
static int64_t rls_deadline(const struct rls_view *v)
{
    return v->pending || v->inflight || v->waiting || v->queued ? INT64_MAX : v->tat;
}

/* ---- verdicts (HTTP threads, and the syncer for parked requests) ------------------------- */

struct rls_step {
    bool shared; /* Redis answers: decide within the lease, queue the hit (else the view alone) */
    bool parked; /* a parked request: decided or left parked, never parked again */
    int64_t limit, window_s, now_us, lease;
    struct ratelimit_result *out;
    int rc;     /* 0 decided, 1 parked (or left parked) */
    bool queue; /* the tenant must go on the send queue */
};

static bool rls_decide(int64_t *deadline, void *data, void *ctx)
{
    struct rls_view *v = data;
    struct rls_step *st = ctx;
    st->rc = 0;
    st->queue = false;
    if (st->shared) {
        /* Refused by the view: refused, whatever the lease (Redis only ever adds hits). */
        int64_t probe = v->tat;
        ratelimit_gcra(st->limit, st->window_s, &probe, st->now_us, st->out);
        int64_t lease = v->known ? st->lease : 1;
        bool blocked = v->pending + v->inflight >= lease || (!st->parked && v->waiting);
        if (st->out->allowed && blocked) {
            st->rc = 1;
            if (st->parked)
                return false; /* left parked: nothing changes */
            v->waiting++;
            *deadline = rls_deadline(v);
            return true;
        }
    }
    ratelimit_gcra(st->limit, st->window_s, &v->tat, st->now_us, st->out);
    if (st->parked)
        v->waiting--;
    if (st->out->allowed && st->shared) {
        v->pending++;
        v->interval_us = rls_interval(st->limit, st->window_s);
        st->queue = !v->queued;
        v->queued = true;
    }
    *deadline = rls_deadline(v);
    return true;
}

static void rls_queue_push(struct rls_queue *q, const char *key)
{
    if (q->n == q->cap) {
        q->cap = q->cap ? q->cap * 2 : 256;
        q->keys = xrealloc(q->keys, q->cap * sizeof(*q->keys));
    }
    snprintf(q->keys[q->n++], RLREDIS_KEY_MAX, "%s", key);
}

/* After a verdict that admitted the tenant's first hit since the last cut. */
static void rls_enqueue(struct rlsync *s, const char *key)
{
    pthread_mutex_lock(&s->mutex);
    rls_queue_push(&s->queue, key);
    if (s->queue.n == RLSYNC_KICK_KEYS)
        pthread_cond_signal(&s->wake);
    else if (s->queue.n == 1)
        pthread_cond_signal(&s->wake); /* the interval starts */
    pthread_mutex_unlock(&s->mutex);
}

static bool rls_is_local(struct rlsync *s)
{
    return atomic_load_explicit(&s->down, memory_order_acquire) ||
           atomic_load_explicit(&s->stopped, memory_order_acquire);
}

/* Decide w at now_us; true when decided (w->verdict set), false when it stays parked. */
static bool rls_wait_decide(struct rlsync *s, struct rls_wait *w, int64_t now_us, bool local)
{
    struct rls_step st = {.shared = !local,
                          .parked = true,
                          .limit = w->limit,
                          .window_s = w->window_s,
                          .now_us = now_us,
                          .lease = rlsync_lease(s, w->limit),
                          .out = &w->verdict};
    if (keytab_update_data(s->views, w->key, now_us, rls_decide, &st))
        abort(); /* a parked tenant's view is never deleted nor refused */
    if (st.rc)
        return false;
    if (st.queue)
        rls_enqueue(s, w->key);
    return true;
}

int rlsync_check(struct rlsync *s, const char *tier, const char *key, int64_t limit,
                 int64_t window_s, int64_t now_us, struct ratelimit_result *out,
                 void (*decided)(void *ctx, const struct ratelimit_result *verdict), void *ctx)
{
    char k[RLREDIS_KEY_MAX];
    snprintf(k, sizeof(k), "%s:%s", tier, key);
    bool local = rls_is_local(s);
    struct rls_step st = {.shared = !local,
                          .limit = limit,
                          .window_s = window_s,
                          .now_us = now_us,
                          .lease = rlsync_lease(s, limit),
                          .out = out};
    if (keytab_update_data(s->views, k, now_us, rls_decide, &st)) {
        atomic_fetch_add_explicit(&s->untracked, 1, memory_order_relaxed);
        return -ENOSPC;
    }
    if (local)
        atomic_fetch_add_explicit(&s->fallbacks, 1, memory_order_relaxed);
    if (st.queue)
        rls_enqueue(s, k);
    if (st.rc == 0)
        return 0;

    struct rls_wait *w = xcalloc(1, sizeof(*w));
    w->decided = decided;
    w->ctx = ctx;
    w->limit = limit;
    w->window_s = window_s;
    memcpy(w->key, k, sizeof(k));
    pthread_mutex_lock(&s->mutex);
    if (s->stopping) {
        /* rlsync_stop has decided every parked request already: decide this one here. */
        pthread_mutex_unlock(&s->mutex);
        rls_wait_decide(s, w, now_us, true);
        *out = w->verdict;
        free(w);
        return 0;
    }
    *s->waits_tail = w;
    s->waits_tail = &w->next;
    s->kicked = true;
    atomic_fetch_add_explicit(&s->nwaits, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&s->waiting, 1, memory_order_relaxed);
    pthread_cond_signal(&s->wake);
    pthread_mutex_unlock(&s->mutex);
    return 1;
}

/* Syncer: decide the parked requests that can be; their callbacks run after the lock is let go,
 * in the order they parked. Those left parked have their hits queued: the next batch goes at
 * once. */
static void rls_wake_waiters(struct rlsync *s, int64_t now_us)
{
    bool local = rls_is_local(s);
    pthread_mutex_lock(&s->mutex);
    struct rls_wait *all = s->waits;
    s->waits = NULL;
    s->waits_tail = &s->waits;
    pthread_mutex_unlock(&s->mutex);

    struct rls_wait *done = NULL, **done_tail = &done, *stay = NULL, **stay_tail = &stay;
    for (struct rls_wait *w = all, *next; w; w = next) {
        next = w->next;
        w->next = NULL;
        if (rls_wait_decide(s, w, now_us, local)) {
            *done_tail = w;
            done_tail = &w->next;
        } else {
            *stay_tail = w;
            stay_tail = &w->next;
        }
    }
    if (stay) {
        /* Back in front of any that parked meanwhile; the next batch goes at once. */
        pthread_mutex_lock(&s->mutex);
        *stay_tail = s->waits;
        if (!s->waits)
            s->waits_tail = stay_tail;
        s->waits = stay;
        s->kicked = true;
        pthread_mutex_unlock(&s->mutex);
    }
    for (struct rls_wait *w = done, *next; w; w = next) {
        next = w->next;
        atomic_fetch_sub_explicit(&s->waiting, 1, memory_order_relaxed);
        w->decided(w->ctx, &w->verdict);
        free(w);
    }
}

/* ---- the batch (syncer) ---------------------------------------------------------------- */

struct rls_cut {
    int64_t hits;        /* out: pending moved to inflight */
    int64_t interval_us; /* out */
};

static bool rls_cut_step(int64_t *deadline, void *data, void *ctx)
{
    struct rls_view *v = data;
    struct rls_cut *c = ctx;
    c->hits = v->pending;
    c->interval_us = v->interval_us;
    v->inflight += v->pending;
    v->pending = 0;
    v->queued = false;
    *deadline = rls_deadline(v);
    return true;
}

struct rls_merge {
    int64_t hits, now_us;
    int64_t ahead_us; /* Redis's TAT minus its now; < 0: the batch failed */
};

static bool rls_merge_step(int64_t *deadline, void *data, void *ctx)
{
    struct rls_view *v = data;
    struct rls_merge *m = ctx;
    v->inflight -= (uint32_t)m->hits;
    if (m->ahead_us >= 0) {
        /* Redis's TAT on this clock, late by the answer's way back: never ahead of the truth.
         * Hits admitted since the cut are not in it yet. */
        int64_t tat = m->now_us + m->ahead_us + (int64_t)v->pending * v->interval_us;
        if (tat > v->tat)
            v->tat = tat;
        v->known = true;
    }
    *deadline = rls_deadline(v);
    return true;
}

static void rls_set_down(struct rlsync *s, int64_t now_us, const char *why)
{
    atomic_fetch_add_explicit(&s->errors, 1, memory_order_relaxed);
    s->retry_at_us = now_us + RLSYNC_RETRY_US;
    if (!atomic_exchange(&s->down, true))
        log_error("redis_down",
                  "rate-limit backend Redis unavailable (%s); every instance limits on its own "
                  "until it answers again",
                  why);
}

static void rls_set_up(struct rlsync *s)
{
    if (atomic_exchange(&s->down, false))
        log_info("redis_up", "rate-limit backend Redis answering again; limits are shared");
}

/* Cut the queue, send it, merge the answers. Returns the tenants sent or -EIO. */
static int rls_batch(struct rlsync *s, int64_t now_us)
{
    pthread_mutex_lock(&s->mutex);
    struct rls_queue q = s->queue;
    s->queue = s->spare;
    s->queue.n = 0;
    pthread_mutex_unlock(&s->mutex);

    size_t n = 0;
    struct rlredis_charge *c = q.n ? xmalloc(q.n * sizeof(*c)) : NULL;
    for (size_t i = 0; i < q.n; i++) {
        struct rls_cut cut = {0};
        if (keytab_update_data(s->views, q.keys[i], now_us, rls_cut_step, &cut))
            abort(); /* a queued tenant's view is never deleted nor refused */
        if (cut.hits > 0)
            c[n++] = (struct rlredis_charge){
                .key = q.keys[i], .interval_us = cut.interval_us, .hits = cut.hits};
    }
    int rc = 0;
    char err[256] = "";
    if (n && rls_is_local(s))
        rc = -EIO; /* went down or stopped since these were admitted: not sent */
    else if (n)
        rc = rlredis_charge(s->redis, c, n, err, sizeof(err));
    int64_t got_us = s->cfg.manual ? now_us : mclock_now_us();
    uint64_t hits = 0;
    for (size_t i = 0; i < n; i++) {
        struct rls_merge m = {
            .hits = c[i].hits, .now_us = got_us, .ahead_us = rc ? -1 : c[i].ahead_us};
        hits += (uint64_t)c[i].hits;
        if (keytab_update_data(s->views, c[i].key, got_us, rls_merge_step, &m))
            abort();
    }
    free(c);
    pthread_mutex_lock(&s->mutex);
    s->spare = q; /* the keys array is reused */
    pthread_mutex_unlock(&s->mutex);
    if (!n)
        return 0;
    s->last_batch_us = got_us;
    if (rc) {
        atomic_fetch_add_explicit(&s->hits_dropped, hits, memory_order_relaxed);
        if (!rls_is_local(s))
            rls_set_down(s, got_us, err);
        return -EIO;
    }
    atomic_fetch_add_explicit(&s->batches, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&s->hits_sent, hits, memory_order_relaxed);
    return (int)n;
}

int rlsync_sync(struct rlsync *s, int64_t now_us)
{
    int rc = 0;
    if (atomic_load(&s->down) && !atomic_load(&s->stopped)) {
        if (now_us >= s->retry_at_us) {
            char err[256];
            if (rlredis_ping(s->redis, err, sizeof(err)) == 0)
                rls_set_up(s);
            else
                rls_set_down(s, now_us, err);
        }
        rc = atomic_load(&s->down) ? -EIO : 0;
    }
    rls_wake_waiters(s, now_us); /* what the last answer (or going down) allows */
    int sent = rls_batch(s, now_us);
    rls_wake_waiters(s, s->cfg.manual ? now_us : mclock_now_us());
    if (now_us - s->last_sweep_us >= RLSYNC_SWEEP_US) {
        keytab_sweep(s->views, now_us);
        s->last_sweep_us = now_us;
    }
    return rc ? rc : sent;
}

/* ---- the syncer thread --------------------------------------------------------------- */

/* Wait for something to do: a full queue, the interval after queued hits, a parked request, a
 * retry or a sweep due, or stop. Returns false on stop. */
static bool rls_wait_work(struct rlsync *s)
{
    pthread_mutex_lock(&s->mutex);
    for (;;) {
        if (s->stopping) {
            pthread_mutex_unlock(&s->mutex);
            return false;
        }
        int64_t now = mclock_now_us();
        int64_t due = s->last_sweep_us + RLSYNC_SWEEP_US;
        if (atomic_load(&s->down)) {
            if (s->retry_at_us < due)
                due = s->retry_at_us;
        } else if (s->queue.n) {
            int64_t send = s->last_batch_us + s->cfg.sync_us;
            if (s->queue.n >= RLSYNC_KICK_KEYS)
                send = now;
            if (send < due)
                due = send;
        }
        if (s->kicked || now >= due) {
            s->kicked = false;
            pthread_mutex_unlock(&s->mutex);
            return true;
        }
        struct timespec ts = mclock_timespec(due);
        pthread_cond_timedwait(&s->wake, &s->mutex, &ts);
    }
}

static void *rls_main(void *arg)
{
    struct rlsync *s = arg;
    while (rls_wait_work(s))
        rlsync_sync(s, mclock_now_us());
    return NULL;
}

/* ---- life ------------------------------------------------------------------------------ */

int rlsync_create(const struct rlsync_cfg *cfg, struct rlsync **out, char *err, size_t errlen)
{
    struct rlsync *s = xcalloc(1, sizeof(*s));
    s->cfg = *cfg;
    s->cfg.redis_url = NULL; /* not kept: rlredis holds what it needs */
    int rc = rlredis_create(cfg->redis_url, cfg->timeout_ms, &s->redis, err, errlen);
    if (rc) {
        free(s);
        return rc;
    }
    s->views = keytab_create_data(cfg->max_keys, sizeof(struct rls_view));
    pthread_mutex_init(&s->mutex, NULL);
    mclock_cond_init(&s->wake);
    s->waits_tail = &s->waits;
    if (!cfg->manual) {
        rc = -pthread_create(&s->thread, NULL, rls_main, s);
        if (rc) {
            snprintf(err, errlen, "cannot start the rate-limit syncer thread: %s", strerror(-rc));
            rlsync_destroy(s);
            return rc;
        }
        s->started = true;
    }
    *out = s;
    return 0;
}

void rlsync_stop(struct rlsync *s)
{
    if (!s)
        return;
    pthread_mutex_lock(&s->mutex);
    bool already = s->stopping;
    s->stopping = true;
    pthread_cond_signal(&s->wake);
    pthread_mutex_unlock(&s->mutex);
    if (already)
        return;
    if (s->started)
        pthread_join(s->thread, NULL);
    s->started = false;
    atomic_store(&s->stopped, true);
    int64_t now = mclock_now_us();
    rls_batch(s, now);        /* queued hits: dropped, counted */
    rls_wake_waiters(s, now); /* every parked request, from the views */
}

void rlsync_destroy(struct rlsync *s)
{
    if (!s)
        return;
    rlsync_stop(s);
    keytab_destroy(s->views);
    rlredis_destroy(s->redis);
    free(s->queue.keys);
    free(s->spare.keys);
    pthread_cond_destroy(&s->wake);
    pthread_mutex_destroy(&s->mutex);
    free(s);
}

void rlsync_stats(struct rlsync *s, struct rlsync_stats *out)
{
    out->up = !atomic_load(&s->down);
    out->errors = atomic_load_explicit(&s->errors, memory_order_relaxed);
    out->fallbacks = atomic_load_explicit(&s->fallbacks, memory_order_relaxed);
    out->batches = atomic_load_explicit(&s->batches, memory_order_relaxed);
    out->hits_sent = atomic_load_explicit(&s->hits_sent, memory_order_relaxed);
    out->hits_dropped = atomic_load_explicit(&s->hits_dropped, memory_order_relaxed);
    out->waits = atomic_load_explicit(&s->nwaits, memory_order_relaxed);
    out->waiting = atomic_load_explicit(&s->waiting, memory_order_relaxed);
    out->untracked = atomic_load_explicit(&s->untracked, memory_order_relaxed);
    out->keys = keytab_count(s->views);
}
