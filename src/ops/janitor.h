/*
 * janitor: one thread for the server's clock-driven chores.
 *
 * It knows no other module: whoever starts it hands it a list of chores, each a function and a
 * period, and the janitor runs each one about every period (a chore that fell behind runs once
 * and then keeps its period, never in a burst). The server's chores (chores.c): every 50 ms
 * answer queued requests that waited past their tier's queue timeout and let connection waiters
 * re-check their tenant's share; every HISTORY_INTERVAL_MS a dashboard sample; every 5 s drop
 * expired rate-limit keys; every second close pool connections found dead or idle too long;
 * every CAPACITY_INTERVAL_MS the capacity controller's verdict, with the fleet view and the
 * fleet budgets' shares applied (the fleet exchange itself runs on fleet.c's own thread).
 * (Named after PgBouncer's janitor, which does the same kind of housekeeping.)
 */
#ifndef BULKHEAD_JANITOR_H
#define BULKHEAD_JANITOR_H

#include <stddef.h>
#include <stdint.h>

#define JANITOR_MAX_CHORES 8

struct janitor;

struct janitor_chore {
    int64_t period_us;                      /* run about this often; the first run one period in */
    void (*run)(void *ctx, int64_t now_us); /* janitor thread; now_us is monotonic */
    void *ctx;
};

/* Start the thread with n (at most JANITOR_MAX_CHORES) chores, copied. 0 or a negative errno. */
int janitor_start(const struct janitor_chore *chores, size_t n, struct janitor **out)
    __attribute__((warn_unused_result));
/* Stop and join the thread (a chore that is running finishes first); NULL is a no-op. */
void janitor_stop(struct janitor *j);

#endif
