/*
 * breaker: the state machine of breaker.h over a bucketed rolling window.
 *
 * Bucket i covers [k*w, (k+1)*w) for the k with k % n == i; a bucket whose epoch k is stale is
 * cleared when reused, so the window slides without a timer. Transitions are logged after the
 * mutex is released.
 */
#include "breaker.h"
#include "log.h"
#include "mclock.h"
#include "xalloc.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Atomics: successes in CLOSED are added without the mutex (see breaker_record). */
struct breaker_bucket {
    _Atomic int64_t epoch; /* k: which bucket_us slice of time this bucket holds */
    atomic_uint calls, failures;
};

struct breaker {
    char name[40];

    /* _shared: the mutex guards everything below. */
    pthread_mutex_t mutex;
    struct breaker_cfg cfg;
    enum breaker_state state;
    enum breaker_mode mode;
    int64_t opened_us;        /* monotonic time it last opened */
    int64_t changed_us;       /* monotonic time of the last state change */
    int64_t changed_wall_us;  /* wall time of the same moment */
    int64_t trials_in_flight; /* trial permits out, from this or an earlier HALF_OPEN */
    int64_t trial_successes;  /* HALF_OPEN: trials that succeeded */
    uint64_t failures, timeouts, rejections, opened;
    struct breaker_bucket buckets[BREAKER_MAX_BUCKETS];

    /* The fast path: read without the mutex, written under it. While `closed` is set (mode
     * AUTO and state CLOSED) a call is allowed and a success recorded with atomics only, so
     * the healthy hot path takes no lock. A call racing a transition may pass once more. */
    atomic_bool closed;
    _Atomic int64_t fast_bucket_us, fast_nbuckets; /* copies of the window geometry */
    atomic_uint_least64_t successes;
};

const char *breaker_state_name(enum breaker_state s)
{
    switch (s) {
    case BREAKER_CLOSED:
        return "CLOSED";
    case BREAKER_OPEN:
        return "OPEN";
    case BREAKER_HALF_OPEN:
        return "HALF_OPEN";
    }
    return "?";
}

const char *breaker_mode_name(enum breaker_mode m)
{
    switch (m) {
    case BREAKER_AUTO:
        return "auto";
    case BREAKER_FORCED_OPEN:
        return "forced_open";
    case BREAKER_DISABLED:
        return "disabled";
    }
    return "?";
}

static int64_t breaker_bucket_us(const struct breaker *b)
{
    int64_t w = b->cfg.window_ms * 1000 / b->cfg.buckets;
    return w > 0 ? w : 1;
}

static void breaker_clear_window(struct breaker *b)
{
    for (int i = 0; i < BREAKER_MAX_BUCKETS; i++) {
        atomic_store(&b->buckets[i].epoch, -1);
        atomic_store(&b->buckets[i].calls, 0);
        atomic_store(&b->buckets[i].failures, 0);
    }
}

/* Publish what the lock-free fast path needs. Mutex held. */
static void breaker_sync_fast(struct breaker *b)
{
    atomic_store_explicit(&b->fast_bucket_us, breaker_bucket_us(b), memory_order_relaxed);
    atomic_store_explicit(&b->fast_nbuckets, b->cfg.buckets, memory_order_relaxed);
    atomic_store_explicit(&b->closed, b->mode == BREAKER_AUTO && b->state == BREAKER_CLOSED,
                          memory_order_release);
}

/* The bucket for time slice k, cleared first if it still holds an older slice. Callers that
 * do not hold the mutex take it to clear. */
static struct breaker_bucket *breaker_bucket_at(struct breaker *b, int64_t k, int64_t nbuckets,
                                                bool locked)
{
    struct breaker_bucket *bk = &b->buckets[k % nbuckets];
    if (atomic_load(&bk->epoch) == k)
        return bk;
    if (!locked)
        pthread_mutex_lock(&b->mutex);
    if (atomic_load(&bk->epoch) != k) {
        atomic_store(&bk->calls, 0);
        atomic_store(&bk->failures, 0);
        atomic_store(&bk->epoch, k); /* last: a reader that sees k sees the zeroes */
    }
    if (!locked)
        pthread_mutex_unlock(&b->mutex);
    return bk;
}

static void breaker_window(struct breaker *b, int64_t now_us, uint64_t *calls, uint64_t *failures)
{
    int64_t k = now_us / breaker_bucket_us(b);
    *calls = *failures = 0;
    for (int64_t i = 0; i < b->cfg.buckets; i++) {
        struct breaker_bucket *bk = &b->buckets[i];
        int64_t e = atomic_load(&bk->epoch);
        if (e > k - b->cfg.buckets && e <= k) {
            *calls += atomic_load(&bk->calls);
            *failures += atomic_load(&bk->failures);
        }
    }
}

/* Change state; returns a log line in msg (empty when none). Mutex held. */
static void breaker_set_state(struct breaker *b, enum breaker_state to, int64_t now_us,
                              const char *why, char *msg, size_t msglen)
{
    if (b->state == to)
        return;
    snprintf(msg, msglen, "breaker %s: %s -> %s (%s)", b->name, breaker_state_name(b->state),
             breaker_state_name(to), why);
    b->state = to;
    b->changed_us = now_us;
    b->changed_wall_us = mclock_wall_us();
    /* trials_in_flight is not reset: a trial still running holds its slot until it records
     * or releases, even when the state moved on (say, another trial failed and the breaker
     * reopened and went half-open again), so HALF_OPEN never has more than trial_calls out. */
    b->trial_successes = 0;
    if (to == BREAKER_OPEN) {
        b->opened_us = now_us;
        b->opened++;
    }
    if (to == BREAKER_CLOSED)
        breaker_clear_window(b);
    breaker_sync_fast(b);
}

struct breaker *breaker_create(const char *name, const struct breaker_cfg *cfg)
{
    struct breaker *b = xcalloc(1, sizeof(*b));
    snprintf(b->name, sizeof(b->name), "%s", name);
    pthread_mutex_init(&b->mutex, NULL);
    b->state = BREAKER_CLOSED;
    b->mode = BREAKER_AUTO;
    b->changed_us = mclock_now_us();
    b->changed_wall_us = mclock_wall_us();
    breaker_configure(b, cfg);
    return b;
}

void breaker_destroy(struct breaker *b)
{
    if (!b)
        return;
    pthread_mutex_destroy(&b->mutex);
    free(b);
}

void breaker_configure(struct breaker *b, const struct breaker_cfg *cfg)
{
    pthread_mutex_lock(&b->mutex);
    b->cfg = *cfg;
    if (b->cfg.buckets < 1)
        b->cfg.buckets = 1;
    if (b->cfg.buckets > BREAKER_MAX_BUCKETS)
        b->cfg.buckets = BREAKER_MAX_BUCKETS;
    /* Bucket geometry changed: old counts no longer line up. */
    breaker_clear_window(b);
    breaker_sync_fast(b);
    pthread_mutex_unlock(&b->mutex);
}

enum breaker_permit breaker_acquire(struct breaker *b, int64_t now_us, int64_t *retry_after_us)
{
    if (atomic_load_explicit(&b->closed, memory_order_acquire))
        return BREAKER_ALLOW; /* healthy: no lock */
    char msg[200] = "";
    enum breaker_permit p = BREAKER_DENY;
    pthread_mutex_lock(&b->mutex);
    if (b->mode == BREAKER_DISABLED) {
        p = BREAKER_ALLOW;
    } else if (b->mode == BREAKER_FORCED_OPEN) {
        *retry_after_us = b->cfg.reset_ms * 1000;
    } else {
        if (b->state == BREAKER_OPEN && now_us - b->opened_us >= b->cfg.reset_ms * 1000)
            breaker_set_state(b, BREAKER_HALF_OPEN, now_us, "reset timeout passed", msg,
                              sizeof(msg));
        switch (b->state) {
        case BREAKER_CLOSED:
            p = BREAKER_ALLOW;
            break;
        case BREAKER_OPEN:
            *retry_after_us = b->opened_us + b->cfg.reset_ms * 1000 - now_us;
            break;
        case BREAKER_HALF_OPEN:
            if (b->trials_in_flight + b->trial_successes < b->cfg.trial_calls) {
                b->trials_in_flight++;
                p = BREAKER_TRIAL;
            } else {
                /* A trial is running; its verdict comes within the call timeout. */
                *retry_after_us = 1000000;
            }
            break;
        }
    }
    if (p == BREAKER_DENY)
        b->rejections++;
    pthread_mutex_unlock(&b->mutex);
    if (msg[0])
        log_info("breaker_half_open", "%s", msg);
    return p;
}

void breaker_record(struct breaker *b, enum breaker_permit permit, enum breaker_outcome outcome,
                    int64_t now_us)
{
    if (outcome == BREAKER_SUCCESS && permit != BREAKER_TRIAL &&
        atomic_load_explicit(&b->closed, memory_order_acquire)) {
        /* A success while CLOSED can only add to the window: no transition, no lock. */
        int64_t k = now_us / atomic_load_explicit(&b->fast_bucket_us, memory_order_relaxed);
        struct breaker_bucket *bk = breaker_bucket_at(
            b, k, atomic_load_explicit(&b->fast_nbuckets, memory_order_relaxed), false);
        atomic_fetch_add_explicit(&bk->calls, 1, memory_order_relaxed);
        atomic_fetch_add_explicit(&b->successes, 1, memory_order_relaxed);
        return;
    }
    char msg[200] = "";
    const char *event = NULL;
    bool failed = outcome != BREAKER_SUCCESS;
    pthread_mutex_lock(&b->mutex);
    if (outcome == BREAKER_SUCCESS)
        atomic_fetch_add_explicit(&b->successes, 1, memory_order_relaxed);
    else if (outcome == BREAKER_FAILURE)
        b->failures++;
    else
        b->timeouts++;

    struct breaker_bucket *bk =
        breaker_bucket_at(b, now_us / breaker_bucket_us(b), b->cfg.buckets, true);
    atomic_fetch_add_explicit(&bk->calls, 1, memory_order_relaxed);
    if (failed)
        atomic_fetch_add_explicit(&bk->failures, 1, memory_order_relaxed);

    if (permit == BREAKER_TRIAL && b->trials_in_flight > 0)
        b->trials_in_flight--;
    if (b->mode == BREAKER_AUTO) {
        /* A trial's verdict counts for the HALF_OPEN in force now, even if it was admitted by
         * an earlier one: either way it is fresh news about the tier. */
        if (permit == BREAKER_TRIAL && b->state == BREAKER_HALF_OPEN) {
            if (failed) {
                breaker_set_state(b, BREAKER_OPEN, now_us,
                                  outcome == BREAKER_TIMEOUT ? "trial call timed out"
                                                             : "trial call failed",
                                  msg, sizeof(msg));
                event = "breaker_open";
            } else if (++b->trial_successes >= b->cfg.trial_calls) {
                breaker_set_state(b, BREAKER_CLOSED, now_us, "trial calls succeeded", msg,
                                  sizeof(msg));
                event = "breaker_closed";
            }
        } else if (b->state == BREAKER_CLOSED && failed) {
            uint64_t calls, fails;
            breaker_window(b, now_us, &calls, &fails);
            if (calls >= (uint64_t)b->cfg.min_calls &&
                fails * 100 >= (uint64_t)b->cfg.error_pct * calls) {
                char why[120];
                snprintf(why, sizeof(why), "%llu of %llu calls failed in the last %lld ms",
                         (unsigned long long)fails, (unsigned long long)calls,
                         (long long)b->cfg.window_ms);
                breaker_set_state(b, BREAKER_OPEN, now_us, why, msg, sizeof(msg));
                event = "breaker_open";
            }
        }
    }
    pthread_mutex_unlock(&b->mutex);
    if (event)
        log_warn(event, "%s", msg);
}

void breaker_release(struct breaker *b, enum breaker_permit permit)
{
    if (permit != BREAKER_TRIAL)
        return;
    pthread_mutex_lock(&b->mutex);
    if (b->trials_in_flight > 0)
        b->trials_in_flight--;
    pthread_mutex_unlock(&b->mutex);
}

void breaker_force(struct breaker *b, enum breaker_mode mode, bool reset, int64_t now_us)
{
    char msg[200] = "";
    pthread_mutex_lock(&b->mutex);
    enum breaker_mode old = b->mode;
    b->mode = mode;
    if (reset || mode != BREAKER_AUTO) {
        breaker_set_state(b, mode == BREAKER_FORCED_OPEN ? BREAKER_OPEN : BREAKER_CLOSED, now_us,
                          "operator", msg, sizeof(msg));
        if (mode == BREAKER_AUTO)
            breaker_clear_window(b);
    }
    breaker_sync_fast(b);
    pthread_mutex_unlock(&b->mutex);
    log_warn("breaker_forced", "breaker %s: mode %s -> %s%s%s", b->name, breaker_mode_name(old),
             breaker_mode_name(mode), msg[0] ? "; " : "", msg);
}

void breaker_snapshot(struct breaker *b, int64_t now_us, struct breaker_snapshot *out)
{
    pthread_mutex_lock(&b->mutex);
    out->state = b->state;
    out->mode = b->mode;
    /* An OPEN breaker whose reset time passed is half-open in effect; report what the next
     * call would see without moving the state from a reader. */
    if (b->mode == BREAKER_AUTO && b->state == BREAKER_OPEN &&
        now_us - b->opened_us >= b->cfg.reset_ms * 1000)
        out->state = BREAKER_HALF_OPEN;
    out->successes = atomic_load(&b->successes);
    out->failures = b->failures;
    out->timeouts = b->timeouts;
    out->rejections = b->rejections;
    out->opened = b->opened;
    breaker_window(b, now_us, &out->window_calls, &out->window_failures);
    out->failure_rate =
        out->window_calls ? (double)out->window_failures / (double)out->window_calls : 0.0;
    out->last_change_wall_us = b->changed_wall_us;
    out->next_trial_wall_us = 0;
    if (b->mode == BREAKER_AUTO && b->state == BREAKER_OPEN) {
        int64_t left = b->opened_us + b->cfg.reset_ms * 1000 - now_us;
        out->next_trial_wall_us = mclock_wall_us() + (left > 0 ? left : 0);
    }
    pthread_mutex_unlock(&b->mutex);
}
