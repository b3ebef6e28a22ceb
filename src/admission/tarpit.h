/*
 * tarpit: Retry-After enforcement and paced delivery, after HAProxy's tarpit and nginx's
 * limit_req with burst and delay. A refused request either goes out at once or is held (its
 * connection suspended: no thread, worker or connection) until a time the tarpit gives, and
 * is then admitted again from the start by the caller (capacity, rate limit, breaker, slot):
 * served if its time has come, else refused again.
 *
 * Two kinds of refusal, named by the caller:
 *   - a rate limit's (429), with the limiter's wait and interval: the request waits for its
 *     turn. A client's turns follow one another one interval apart from when the limiter would
 *     admit one, in the order its refusals arrive; a request whose turn comes within its hold
 *     budget (max_hold_us, less the time it was held already) is held until its turn. A client
 *     with several connections is thus served at its rate, in arrival order, and no token
 *     refills unused while its requests wait. A request with no turn within its budget is
 *     refused, with its turn (behind the turns already taken) as its Retry-After.
 *   - a refusal about the whole tier (503 bulkhead_full, 503 shed), with the Retry-After it
 *     carries.
 * Either refusal, when it goes out, is answered at once (fail fast) and tells the client when
 * to come back. A client back before that time whose request is refused again (no turn within
 * reach) is held until that time, at most the request's budget, and then admitted again: a
 * closed loop at full speed thus costs one refusal per Retry-After (at most per max_hold) per
 * connection, and a client that waits as told is never held. Holding a request tells the
 * client nothing new, so it never pushes the client's time further; only a refusal that goes
 * out does, to what it says.
 *
 * The caller names the client by up to two keys (the tenant within the tier and, for a refusal
 * about the whole tier, the client's address within the tier, so that fresh tenant ids from one
 * address do not escape); the later of their times counts.
 *
 * Bounded: at most max_clients keys in each of its two tables (then new clients are not
 * tracked: never held, answered at once), at most max_held requests held at once (then
 * refusals are answered at once).
 *
 * DESIGN: the times clients were told and their next turns live in two keytabs (sharded, lock
 * per shard); a turn is taken under its key's shard lock, so two refusals of one client never
 * get the same turn. Held requests sit in a min-heap under the tarpit's mutex,
 * and one tarpit thread sleeps on a condition variable until the earliest is due, then hands
 * each due request to release() with no lock held (release must not admit it there: it posts it
 * to its own thread). tarpit_stop releases every held request at once (shutdown).
 */
#ifndef BULKHEAD_TARPIT_H
#define BULKHEAD_TARPIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct tarpit;

struct tarpit_cfg {
    size_t max_clients;  /* keys remembered, in each table */
    size_t max_held;     /* requests held at once */
    int64_t max_hold_us; /* longest hold */
    /* Tarpit thread (or the caller of tarpit_stop): answer a held item now. */
    void (*release)(void *item, void *ctx);
    void *ctx;
};

struct tarpit_stats {
    uint64_t held;      /* requests held, ever (a request held twice counts twice) */
    uint64_t overflow;  /* refusals that would have been held but were answered at once */
    uint64_t untracked; /* clients not remembered: the table was full */
    uint64_t left;      /* held requests whose client left meanwhile (tarpit_count_left) */
    size_t holding;     /* held now */
    size_t clients;     /* keys tracked (times told, and turns) */
};

/* Returns 0, or a negative errno (thread not started). */
int tarpit_create(const struct tarpit_cfg *cfg, struct tarpit **out)
    __attribute__((warn_unused_result));

/* A refusal about to go out, as tarpit_check needs it. */
struct tarpit_refusal {
    const char *key1, *key2; /* the client (either may be NULL) */
    int64_t wait_us;         /* until the layer that refused would admit a request: the
                                limiter's exact wait, or the Retry-After of a tier refusal */
    int64_t interval_us;     /* > 0: a rate limit, one request per interval_us (its turns);
                                0: a refusal about the tier */
    int64_t held_us;         /* how long this request was held already */
};

/* What becomes of it. */
struct tarpit_verdict {
    int64_t until_us; /* > now: hold it until then (tarpit_hold), then admit it again;
                         <= now: answer it now */
    int64_t retry_us; /* answered now: the Retry-After that holds, >= wait_us (its turn) */
};

/* HTTP thread: decide the refusal rf at now_us, and record what the client is told or the turn
 * it takes. */
void tarpit_check(struct tarpit *tp, const struct tarpit_refusal *rf, int64_t now_us,
                  struct tarpit_verdict *out);

/* Hold item until until_us; false (counted as overflow) when max_held are held already or the
 * tarpit is stopping: answer it at once. */
bool tarpit_hold(struct tarpit *tp, void *item, int64_t until_us)
    __attribute__((warn_unused_result));

/* Any thread: a request released by the tarpit was not admitted again because its client had
 * left while it was held (the caller's finding; counted in the stats as left). */
void tarpit_count_left(struct tarpit *tp);

/* Forget clients whose time has passed (janitor). Returns how many. */
size_t tarpit_sweep(struct tarpit *tp, int64_t now_us);

void tarpit_stats(struct tarpit *tp, struct tarpit_stats *out);

/* Release every held request now and refuse new holds; joins the thread. */
void tarpit_stop(struct tarpit *tp);
void tarpit_destroy(struct tarpit *tp);

#endif
