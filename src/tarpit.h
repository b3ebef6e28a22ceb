/*
 * tarpit: Retry-After enforcement, after HAProxy's tarpit. A client refused with a Retry-After
 * (429 rate_limited, 503 bulkhead_full, 503 shed) that sends again before
 * that time has passed gets its next refusal held: the connection is suspended and answered at
 * the time it was told to come back (at most max_hold_us later) instead of at once. A client
 * that waits as told sees no difference, and the first refusal is always immediate (fail
 * fast); a retry loop without backoff is slowed to one request per Retry-After per connection
 * instead of taking the HTTP threads.
 *
 * Only refusals are held: a request that would be admitted is admitted, whoever sent it. The
 * caller names the client by up to two keys (the tenant within the tier and, for a refusal
 * about the whole tier, the client's address within the tier, so that fresh tenant ids from one
 * address do not escape), and the request is held when either key is inside its Retry-After.
 *
 * Bounded: at most max_clients keys (then new clients are not tracked, and answered at once),
 * at most max_held requests held at once (then refusals are answered at once).
 *
 * DESIGN: the "retry not before" times live in a keytab (sharded, lock per shard); held
 * requests sit in a min-heap under the tarpit's mutex, and one tarpit thread sleeps on a
 * condition variable until the earliest is due, then hands each due request to release()
 * with no lock held. tarpit_stop releases every held request at once (shutdown).
 */
#ifndef BULKHEAD_TARPIT_H
#define BULKHEAD_TARPIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct tarpit;

struct tarpit_cfg {
    size_t max_clients;  /* keys remembered */
    size_t max_held;     /* requests held at once */
    int64_t max_hold_us; /* longest hold */
    /* Tarpit thread (or the caller of tarpit_stop): answer a held item now. */
    void (*release)(void *item, void *ctx);
    void *ctx;
};

struct tarpit_stats {
    uint64_t held;      /* refusals held, ever */
    uint64_t overflow;  /* refusals that would have been held but were answered at once */
    uint64_t untracked; /* clients not remembered: the table was full */
    size_t holding;     /* held now */
    size_t clients;     /* keys tracked */
};

/* Returns 0, or a negative errno (thread not started). */
int tarpit_create(const struct tarpit_cfg *cfg, struct tarpit **out)
    __attribute__((warn_unused_result));

/*
 * HTTP thread: a refusal telling the client to retry in retry_after_us is about to go out to
 * the client named by key1 and key2 (either may be NULL). Records when it may come back, and
 * returns when its refusal should be answered: now_us (answer at once), or a later time when
 * the client came back too early (then hold it with tarpit_hold).
 */
int64_t tarpit_check(struct tarpit *tp, const char *key1, const char *key2, int64_t retry_after_us,
                     int64_t now_us);

/* Hold item until until_us; false (counted as overflow) when max_held are held already or the
 * tarpit is stopping: answer it at once. */
bool tarpit_hold(struct tarpit *tp, void *item, int64_t until_us)
    __attribute__((warn_unused_result));

/* Forget clients whose time has passed (janitor). Returns how many. */
size_t tarpit_sweep(struct tarpit *tp, int64_t now_us);

void tarpit_stats(struct tarpit *tp, struct tarpit_stats *out);

/* Release every held request now and refuse new holds; joins the thread. */
void tarpit_stop(struct tarpit *tp);
void tarpit_destroy(struct tarpit *tp);

#endif
