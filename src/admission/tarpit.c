/*
 * tarpit: the clients' times (when they were told to come back, and their next turn), and the
 * held requests' timer (see tarpit.h).
 */
#include "tarpit.h"
#include "keytab.h"
#include "mclock.h"
#include "xalloc.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

struct tp_held {
    int64_t until_us;
    void *item;
};

struct tarpit {
    struct tarpit_cfg cfg;
    struct keytab *told;  /* owned: key -> the time the client was told to come back
                             (monotonic); before it, the client is early */
    struct keytab *turns; /* owned: key -> the client's next turn at its rate limit */
    pthread_t thread;

    /* _shared: the mutex guards the heap, stopping; wake tells the thread the earliest hold
     * changed or stop was asked. */
    pthread_mutex_t mutex;
    pthread_cond_t wake;
    struct tp_held *heap; /* owned; min-heap on until_us, nheld of max_held */
    size_t nheld;
    bool stopping;

    atomic_uint_least64_t held, overflow, untracked, left;
};

static void tp_swap(struct tp_held *a, struct tp_held *b)
{
    struct tp_held t = *a;
    *a = *b;
    *b = t;
}

static void tp_sift_up(struct tp_held *h, size_t i)
{
    while (i > 0 && h[(i - 1) / 2].until_us > h[i].until_us) {
        tp_swap(&h[(i - 1) / 2], &h[i]);
        i = (i - 1) / 2;
    }
}

static void tp_sift_down(struct tp_held *h, size_t n, size_t i)
{
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < n && h[l].until_us < h[m].until_us)
            m = l;
        if (r < n && h[r].until_us < h[m].until_us)
            m = r;
        if (m == i)
            return;
        tp_swap(&h[m], &h[i]);
        i = m;
    }
}

/* Pop the earliest held request. Mutex held; nheld > 0. */
static void *tp_pop(struct tarpit *tp)
{
    void *item = tp->heap[0].item;
    tp->heap[0] = tp->heap[--tp->nheld];
    tp_sift_down(tp->heap, tp->nheld, 0);
    return item;
}

static void *tp_main(void *arg)
{
    struct tarpit *tp = arg;
    pthread_mutex_lock(&tp->mutex);
    while (!tp->stopping) {
        if (tp->nheld == 0) {
            pthread_cond_wait(&tp->wake, &tp->mutex);
            continue;
        }
        int64_t now = mclock_now_us();
        if (tp->heap[0].until_us > now) {
            struct timespec ts = mclock_timespec(tp->heap[0].until_us);
            pthread_cond_timedwait(&tp->wake, &tp->mutex, &ts);
            continue;
        }
        void *item = tp_pop(tp);
        pthread_mutex_unlock(&tp->mutex);
        tp->cfg.release(item, tp->cfg.ctx);
        pthread_mutex_lock(&tp->mutex);
    }
    pthread_mutex_unlock(&tp->mutex);
    return NULL;
}

int tarpit_create(const struct tarpit_cfg *cfg, struct tarpit **out)
{
    struct tarpit *tp = xcalloc(1, sizeof(*tp));
    tp->cfg = *cfg;
    tp->told = keytab_create(cfg->max_clients);
    tp->turns = keytab_create(cfg->max_clients);
    tp->heap = xcalloc(cfg->max_held ? cfg->max_held : 1, sizeof(*tp->heap));
    pthread_mutex_init(&tp->mutex, NULL);
    mclock_cond_init(&tp->wake);
    int rc = pthread_create(&tp->thread, NULL, tp_main, tp);
    if (rc) {
        pthread_cond_destroy(&tp->wake);
        pthread_mutex_destroy(&tp->mutex);
        free(tp->heap);
        keytab_destroy(tp->turns);
        keytab_destroy(tp->told);
        free(tp);
        return -rc;
    }
    pthread_setname_np(tp->thread, "tarpit");
    *out = tp;
    return 0;
}

/* keytab update: keep the later of the stored time and *ctx. */
static bool tp_not_before(int64_t *value, void *ctx)
{
    int64_t t = *(const int64_t *)ctx;
    if (*value >= t)
        return false;
    *value = t;
    return true;
}

/* keytab update for a rate limit's refusal, under its client's lock: its turn is the later of
 * when the limiter would admit one and the client's next turn; it is taken (and the next turn
 * is one interval later) when it comes within the request's budget. */
struct tp_turn {
    int64_t now_us, wait_us, interval_us, budget_us;
    int64_t turn; /* out: this refusal's turn */
    bool taken;   /* out: the request is held until turn */
};

static bool tp_take_turn(int64_t *value, void *ctx)
{
    struct tp_turn *t = ctx;
    int64_t ready = t->now_us + t->wait_us;
    t->turn = ready > *value ? ready : *value;
    t->taken = t->budget_us > 0 && t->turn > t->now_us && t->turn - t->now_us <= t->budget_us;
    if (!t->taken)
        return false;
    *value = t->turn + t->interval_us;
    return true;
}

void tarpit_check(struct tarpit *tp, const struct tarpit_refusal *rf, int64_t now_us,
                  struct tarpit_verdict *out)
{
    int64_t budget = tp->cfg.max_hold_us - rf->held_us;
    out->until_us = now_us;
    out->retry_us = rf->wait_us;
    if (rf->interval_us > 0 && rf->key1) {
        struct tp_turn t = {.now_us = now_us,
                            .wait_us = rf->wait_us,
                            .interval_us = rf->interval_us,
                            .budget_us = budget};
        if (keytab_update(tp->turns, rf->key1, now_us, tp_take_turn, &t)) {
            /* A new client and a full table: its turns cannot be kept, so it is not held. */
            atomic_fetch_add_explicit(&tp->untracked, 1, memory_order_relaxed);
            return;
        }
        if (t.taken) {
            out->until_us = t.turn;
            out->retry_us = t.turn - now_us;
            return;
        }
        out->retry_us = t.turn - now_us; /* behind the turns already taken */
    }
    const char *keys[2] = {rf->key1, rf->key2};
    int64_t told = 0;
    for (int i = 0; i < 2; i++) {
        int64_t t = keys[i] ? keytab_get(tp->told, keys[i], now_us) : 0;
        if (t > told)
            told = t;
    }
    if (told > now_us && budget > 0) {
        /* Back before it was told: held until then, at most its budget. Nothing new is told. */
        out->until_us = told < now_us + budget ? told : now_us + budget;
        return;
    }
    /* Answered now: the client may come back when it is told. */
    int64_t next = now_us + out->retry_us;
    for (int i = 0; i < 2; i++)
        if (keys[i] && keytab_update(tp->told, keys[i], now_us, tp_not_before, &next))
            atomic_fetch_add_explicit(&tp->untracked, 1, memory_order_relaxed);
}

bool tarpit_hold(struct tarpit *tp, void *item, int64_t until_us)
{
    pthread_mutex_lock(&tp->mutex);
    if (tp->stopping || tp->nheld >= tp->cfg.max_held) {
        pthread_mutex_unlock(&tp->mutex);
        atomic_fetch_add_explicit(&tp->overflow, 1, memory_order_relaxed);
        return false;
    }
    tp->heap[tp->nheld] = (struct tp_held){.until_us = until_us, .item = item};
    tp_sift_up(tp->heap, tp->nheld++);
    bool earliest = tp->heap[0].item == item;
    pthread_mutex_unlock(&tp->mutex);
    atomic_fetch_add_explicit(&tp->held, 1, memory_order_relaxed);
    if (earliest)
        pthread_cond_signal(&tp->wake);
    return true;
}

void tarpit_count_left(struct tarpit *tp)
{
    atomic_fetch_add_explicit(&tp->left, 1, memory_order_relaxed);
}

size_t tarpit_sweep(struct tarpit *tp, int64_t now_us)
{
    return keytab_sweep(tp->told, now_us) + keytab_sweep(tp->turns, now_us);
}

void tarpit_stats(struct tarpit *tp, struct tarpit_stats *out)
{
    pthread_mutex_lock(&tp->mutex);
    out->holding = tp->nheld;
    pthread_mutex_unlock(&tp->mutex);
    out->held = atomic_load_explicit(&tp->held, memory_order_relaxed);
    out->overflow = atomic_load_explicit(&tp->overflow, memory_order_relaxed);
    out->untracked = atomic_load_explicit(&tp->untracked, memory_order_relaxed);
    out->left = atomic_load_explicit(&tp->left, memory_order_relaxed);
    out->clients = keytab_count(tp->told) + keytab_count(tp->turns);
}

void tarpit_stop(struct tarpit *tp)
{
    if (!tp)
        return;
    pthread_mutex_lock(&tp->mutex);
    bool was = tp->stopping;
    tp->stopping = true;
    pthread_cond_signal(&tp->wake);
    pthread_mutex_unlock(&tp->mutex);
    if (was)
        return;
    pthread_join(tp->thread, NULL);
    /* The thread is gone: answer whatever is still held, earliest first. */
    for (;;) {
        pthread_mutex_lock(&tp->mutex);
        void *item = tp->nheld ? tp_pop(tp) : NULL;
        pthread_mutex_unlock(&tp->mutex);
        if (!item)
            break;
        tp->cfg.release(item, tp->cfg.ctx);
    }
}

void tarpit_destroy(struct tarpit *tp)
{
    if (!tp)
        return;
    tarpit_stop(tp);
    pthread_cond_destroy(&tp->wake);
    pthread_mutex_destroy(&tp->mutex);
    free(tp->heap);
    keytab_destroy(tp->turns);
    keytab_destroy(tp->told);
    free(tp);
}
