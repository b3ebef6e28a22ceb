/*
 * ratelimit: GCRA over a sharded, capped hash table (see ratelimit.h for the semantics).
 *
 * The arithmetic is integer microseconds: emission interval T = window / limit, burst tolerance
 * tau = (limit - 1) * T, so exactly `limit` requests pass at once whatever the rounding of T.
 */
#include "ratelimit.h"
#include "htable.h"
#include "keytab.h"
#include "xalloc.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

struct ratelimit {
    _Atomic int64_t limit, window_s; /* read per request; written by ratelimit_set */
    struct keytab *tats;             /* owned: one TAT per tracked key, at most max_keys */
    /* The TATs of untracked keys, by their client's address (ratelimit_overflow_bucket). */
    _Atomic int64_t overflow_tat[RATELIMIT_OVERFLOW_BUCKETS];
    atomic_uint_least64_t allowed, rejected, overflow;
};

int64_t ratelimit_interval_us(int64_t limit, int64_t window_s)
{
    int64_t T = limit > 0 ? window_s * 1000000 / limit : 1;
    return T < 1 ? 1 : T;
}

void ratelimit_gcra(int64_t limit, int64_t window_s, int64_t *tat, int64_t now_us,
                    struct ratelimit_result *out)
{
    int64_t T = ratelimit_interval_us(limit, window_s);
    int64_t tau = (limit - 1) * T;
    int64_t cur = *tat > now_us ? *tat : now_us;
    out->limit = limit;
    out->window_s = window_s;
    if (now_us < cur - tau) {
        out->allowed = false;
        out->remaining = 0;
        out->retry_after_us = cur - tau - now_us;
        out->reset_us = cur - now_us;
        return;
    }
    int64_t next = cur + T;
    *tat = next;
    int64_t diff = now_us + tau - next;
    out->allowed = true;
    out->remaining = diff < 0 ? 0 : diff / T + 1;
    out->retry_after_us = 0;
    out->reset_us = next - now_us;
}

int64_t ratelimit_next_us(const struct ratelimit_result *r)
{
    if (!r->allowed)
        return r->retry_after_us;
    int64_t T = ratelimit_interval_us(r->limit, r->window_s);
    /* As in ratelimit_gcra: diff = now + tau - tat, and tat - now is reset_us. One more request
     * fits each time diff passes a multiple of T (remaining = diff / T + 1). */
    int64_t diff = (r->limit - 1) * T - r->reset_us;
    return diff < 0 ? -diff : T - diff % T;
}

struct ratelimit *ratelimit_create(int64_t limit, int64_t window_s, size_t max_keys)
{
    struct ratelimit *rl = xcalloc(1, sizeof(*rl));
    atomic_store(&rl->limit, limit);
    atomic_store(&rl->window_s, window_s);
    rl->tats = keytab_create(max_keys);
    return rl;
}

void ratelimit_destroy(struct ratelimit *rl)
{
    if (!rl)
        return;
    keytab_destroy(rl->tats);
    free(rl);
}

void ratelimit_set(struct ratelimit *rl, int64_t limit, int64_t window_s)
{
    atomic_store(&rl->limit, limit);
    atomic_store(&rl->window_s, window_s);
}

/* One GCRA step under the key's lock; the new TAT is stored only when the request passes. */
struct rl_step {
    int64_t limit, window_s, now_us;
    struct ratelimit_result *out;
};

static bool rl_step(int64_t *tat, void *ctx)
{
    struct rl_step *st = ctx;
    ratelimit_gcra(st->limit, st->window_s, tat, st->now_us, st->out);
    return st->out->allowed;
}

int ratelimit_check(struct ratelimit *rl, const char *key, int64_t now_us,
                    struct ratelimit_result *out)
{
    return ratelimit_check_limit(rl, key, atomic_load_explicit(&rl->limit, memory_order_relaxed),
                                 now_us, out);
}

int ratelimit_check_limit(struct ratelimit *rl, const char *key, int64_t limit, int64_t now_us,
                          struct ratelimit_result *out)
{
    struct rl_step st = {.limit = limit,
                         .window_s = atomic_load_explicit(&rl->window_s, memory_order_relaxed),
                         .now_us = now_us,
                         .out = out};
    if (st.limit <= 0) {
        memset(out, 0, sizeof(*out));
        out->allowed = true;
        return 0;
    }
    int rc = keytab_update(rl->tats, key, now_us, rl_step, &st);
    if (rc)
        return rc; /* full: nothing decided, the caller names the client's address */
    ratelimit_count(rl, out->allowed);
    return 0;
}

size_t ratelimit_overflow_bucket(const char *addr)
{
    return (size_t)(htable_hash_str(addr) % RATELIMIT_OVERFLOW_BUCKETS);
}

void ratelimit_check_overflow(struct ratelimit *rl, const char *addr, int64_t limit, int64_t now_us,
                              struct ratelimit_result *out)
{
    int64_t tier_limit = atomic_load_explicit(&rl->limit, memory_order_relaxed);
    int64_t window_s = atomic_load_explicit(&rl->window_s, memory_order_relaxed);
    if (tier_limit > 0)
        limit = tier_limit;
    atomic_fetch_add_explicit(&rl->overflow, 1, memory_order_relaxed);
    if (limit <= 0) {
        memset(out, 0, sizeof(*out));
        out->allowed = true;
        ratelimit_count(rl, true);
        return;
    }
    /* One GCRA step on the bucket's TAT, stored only when the request passes (and only if no
     * other thread moved the TAT meanwhile: then the step is taken again from the new one). */
    _Atomic int64_t *b = &rl->overflow_tat[ratelimit_overflow_bucket(addr)];
    int64_t seen = atomic_load_explicit(b, memory_order_relaxed);
    for (;;) {
        int64_t tat = seen;
        ratelimit_gcra(limit, window_s, &tat, now_us, out);
        if (!out->allowed || atomic_compare_exchange_weak_explicit(
                                 b, &seen, tat, memory_order_relaxed, memory_order_relaxed))
            break;
    }
    ratelimit_count(rl, out->allowed);
}

void ratelimit_count(struct ratelimit *rl, bool allowed)
{
    atomic_fetch_add_explicit(allowed ? &rl->allowed : &rl->rejected, 1, memory_order_relaxed);
}

size_t ratelimit_sweep(struct ratelimit *rl, int64_t now_us)
{
    return keytab_sweep(rl->tats, now_us);
}

void ratelimit_stats(struct ratelimit *rl, struct ratelimit_stats *out)
{
    out->limit = atomic_load(&rl->limit);
    out->window_s = atomic_load(&rl->window_s);
    out->allowed = atomic_load_explicit(&rl->allowed, memory_order_relaxed);
    out->rejected = atomic_load_explicit(&rl->rejected, memory_order_relaxed);
    out->overflow = atomic_load_explicit(&rl->overflow, memory_order_relaxed);
    out->keys = keytab_count(rl->tats);
}
