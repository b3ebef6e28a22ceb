/*
 * breaker: one tier's circuit breaker (layer 4).
 *
 * States, named as opossum names them:
 *   CLOSED     calls pass; outcomes are counted in a rolling window of buckets. When the window
 *              holds at least min_calls calls and failures + timeouts reach error_pct percent,
 *              the breaker opens (moved by breaker_record, on the worker that saw the failure).
 *   OPEN       calls are refused at once (503 circuit_open) until reset_ms has passed; the
 *              first breaker_acquire after that moves it to HALF_OPEN.
 *   HALF_OPEN  trial_calls calls are admitted, the rest refused. trial_calls successes close
 *              it; one failure or timeout opens it again (breaker_record).
 * Operators can force it OPEN or disabled (always passing) and reset it (breaker_force).
 *
 * Only failures of the tier's own work count: database errors, timeouts, forced errors. Client
 * errors and rejections by the earlier layers never reach the breaker.
 *
 * DESIGN: two paths. The healthy one takes no lock: while the breaker is automatic and CLOSED
 * (its `closed` flag), breaker_acquire allows at once and breaker_record adds a success to the
 * window's bucket with atomics. Everything else (a failure or timeout, any call while OPEN or
 * HALF_OPEN, a trial's verdict, breaker_force, breaker_configure, breaker_snapshot) takes the
 * breaker's mutex, which guards the state, mode, settings, trial counts and every total but
 * successes. The flag and the window geometry the fast path reads are written under the mutex
 * and read without it: a call racing a transition may pass once more as if CLOSED, and is
 * counted like any other. A bucket reused for a new time slice is cleared under the mutex.
 * Transitions are logged after the mutex is released. Callers: HTTP threads (acquire), workers
 * (record, release), the admin endpoint (force), metrics readers (snapshot). A call holds a
 * permit from acquire until it records or releases it.
 */
#ifndef BULKHEAD_BREAKER_H
#define BULKHEAD_BREAKER_H

#include <stdbool.h>
#include <stdint.h>

enum breaker_state { BREAKER_CLOSED, BREAKER_OPEN, BREAKER_HALF_OPEN };
enum breaker_mode { BREAKER_AUTO, BREAKER_FORCED_OPEN, BREAKER_DISABLED };
enum breaker_permit { BREAKER_DENY = 0, BREAKER_ALLOW = 1, BREAKER_TRIAL = 2 };
enum breaker_outcome { BREAKER_SUCCESS, BREAKER_FAILURE, BREAKER_TIMEOUT };

struct breaker_cfg {
    int64_t error_pct;   /* failure percentage that opens */
    int64_t reset_ms;    /* OPEN time before half-open */
    int64_t window_ms;   /* rolling window */
    int64_t buckets;     /* buckets in the window (at most BREAKER_MAX_BUCKETS) */
    int64_t min_calls;   /* calls in the window before the rate counts */
    int64_t trial_calls; /* admitted while HALF_OPEN */
};

#define BREAKER_MAX_BUCKETS 1000

struct breaker_snapshot {
    enum breaker_state state;
    enum breaker_mode mode;
    uint64_t successes, failures, timeouts, rejections; /* totals since start */
    uint64_t window_calls, window_failures;             /* failures include timeouts */
    double failure_rate;                                /* in the window, 0..1 */
    int64_t last_change_wall_us;                        /* Unix us of the last state change */
    int64_t next_trial_wall_us;                         /* Unix us of the next trial; 0 = none */
    uint64_t opened;                                    /* times it opened */
};

struct breaker;

/* name is used in transition logs ("breaker free: CLOSED -> OPEN ..."). */
struct breaker *breaker_create(const char *name, const struct breaker_cfg *cfg);
void breaker_destroy(struct breaker *b);
void breaker_configure(struct breaker *b, const struct breaker_cfg *cfg);

/* HTTP thread. DENY fills *retry_after_us (until a trial may run; at least 1 s when unknown). */
enum breaker_permit breaker_acquire(struct breaker *b, int64_t now_us, int64_t *retry_after_us);

/* Worker thread: the call holding permit finished with outcome. */
void breaker_record(struct breaker *b, enum breaker_permit permit, enum breaker_outcome outcome,
                    int64_t now_us);

/* The call holding permit ended without a verdict on the tier (rejected later, client gone). */
void breaker_release(struct breaker *b, enum breaker_permit permit);

/* Operator action: BREAKER_AUTO with reset=true closes it and clears the window. */
void breaker_force(struct breaker *b, enum breaker_mode mode, bool reset, int64_t now_us);

void breaker_snapshot(struct breaker *b, int64_t now_us, struct breaker_snapshot *out);

const char *breaker_state_name(enum breaker_state s);
const char *breaker_mode_name(enum breaker_mode m);

#endif
