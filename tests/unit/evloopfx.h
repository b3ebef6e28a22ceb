/*
 * evloopfx: the event-loop tests' fixture (test_evloop, test_evloop_timers), on real threads
 * and real descriptors.
 *
 * Each loop's source is an eventfd the test owns (written only where a test says so); the run
 * callback counts its calls per loop and checks the thread it runs on; the source has no
 * timeout unless a test sets one. Watches (struct evfx_probe) are on socketpairs: writing the
 * far end makes one ready. evloop_watch must be called on its loop's thread, so watches are
 * armed from a function that evloop_call runs there (evfx_arm). Every wait is on the fixture's
 * condition variable, bounded by EVFX_WAIT_S (EVFX_WAIT_UNTIL); nothing sleeps. The file that
 * includes this includes cmocka.h first.
 */
#ifndef BULKHEAD_TEST_EVLOOPFX_H
#define BULKHEAD_TEST_EVLOOPFX_H

#include "evloop.h"
#include "mclock.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#define EVFX_WAIT_S 30 /* generous bound for any wait; a healthy run needs milliseconds */
#define EVFX_NLOOPS 3

/* What the loops' callbacks observed. The mutex guards every field; cv is broadcast on any
 * change. */
struct evfx {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct evloop *l;                            /* the loops under test; NULL once stopped */
    int sources[EVFX_NLOOPS];                    /* eventfds, owned by the test */
    struct evloop_thread *self[EVFX_NLOOPS];     /* evloop_current() on loop i (evfx_who_fn) */
    pthread_t tid[EVFX_NLOOPS];                  /* loop i's thread (evfx_who_fn) */
    char name[EVFX_NLOOPS][16];                  /* its thread name */
    int calls[EVFX_NLOOPS];                      /* evfx_who_fn calls per loop */
    unsigned call_order[4 * EVFX_NLOOPS], ncall; /* indexes in the order evfx_who_fn ran */
    int runs[EVFX_NLOOPS];                       /* run callback calls per loop */
    struct evloop_thread *run_self[EVFX_NLOOPS]; /* evloop_current() in loop i's first run */
    bool run_elsewhere;                          /* a run saw another loop's thread (or none) */
    int64_t timeout_us[EVFX_NLOOPS];             /* what timeout_us says; a run resets it to -1 */
    int64_t run_at_us[EVFX_NLOOPS];              /* time of loop i's last run */
    unsigned seq;                                /* orders runs and fires */
    unsigned run_seq[EVFX_NLOOPS];               /* seq of loop i's last run */
    struct metrics_hist lag[EVFX_NLOOPS];        /* the loops' lag (written by the loops) */
    int64_t turn_us[EVFX_NLOOPS];                /* evloop_turn_us in loop i's last run */
};

/* One watch on one socketpair: fds[0] is watched, the test writes fds[1]. */
struct evfx_probe {
    struct evloop_watch w;
    struct evfx *c;
    int fds[2];
    uint64_t watched; /* fds[0]'s loops (evloop_watch's bitmask) */
    /* Under c->mu: */
    int fires;
    enum evloop_event ev;     /* the last one */
    struct evloop_thread *on; /* evloop_current() when it fired */
    bool disarmed;            /* w.loop was NULL when it fired */
    int64_t fired_at_us;
    unsigned fired_seq;
};

#define EVFX_WAIT_UNTIL(c, cond)                                                                   \
    do {                                                                                           \
        struct timespec dl_ = mclock_timespec(mclock_now_us() + EVFX_WAIT_S * 1000000ll);          \
        pthread_mutex_lock(&(c)->mu);                                                              \
        bool ok_ = true;                                                                           \
        while (ok_ && !(cond))                                                                     \
            if (pthread_cond_timedwait(&(c)->cv, &(c)->mu, &dl_) == ETIMEDOUT)                     \
                ok_ = (cond);                                                                      \
        pthread_mutex_unlock(&(c)->mu);                                                            \
        if (!ok_)                                                                                  \
            fail_msg("timed out waiting for %s", #cond);                                           \
    } while (0)

#define EVFX_READ(c, expr)                                                                         \
    ({                                                                                             \
        pthread_mutex_lock(&(c)->mu);                                                              \
        __typeof__(expr) v_ = (expr);                                                              \
        pthread_mutex_unlock(&(c)->mu);                                                            \
        v_;                                                                                        \
    })

void evfx_run_cb(void *arg, unsigned i);
int64_t evfx_timeout_cb(void *arg, unsigned i);
void evfx_who_fn(void *arg, unsigned i);
void evfx_noop_fn(void *arg, unsigned i);
void evfx_start_probing(struct evfx *c, int64_t lag_probe_us);
void evfx_start(struct evfx *c);
void evfx_stop(struct evfx *c);
void evfx_probe_fire(struct evloop_watch *w, enum evloop_event ev);
void evfx_probe_init(struct evfx_probe *p, struct evfx *c);
void evfx_probe_close(struct evfx_probe *p);
void evfx_poke(struct evfx_probe *p);
void evfx_drain(struct evfx_probe *p);
int evfx_arm_with(struct evfx *c, struct evfx_probe *p, unsigned index, int64_t deadline_us,
                  uint64_t *watched);
int evfx_arm(struct evfx *c, struct evfx_probe *p, unsigned index, int64_t deadline_us);
int64_t evfx_far_deadline(void);
void evfx_round_trip(struct evfx *c);

#endif
