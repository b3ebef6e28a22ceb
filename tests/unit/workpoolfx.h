/*
 * workpoolfx: the worker pool tests' fixture (test_workpool, test_workpool_share,
 * test_workpool_resize, test_workpool_event), with real threads.
 *
 * Every test item is a job whose run callback can be held until the test releases it, so the
 * tests decide what is running at each moment: counts are read under the context's own mutex
 * (WPFX_CTX_READ) and every wait is a condition-variable wait on the real condition, bounded by
 * WPFX_WAIT_S seconds (WPFX_WAIT_UNTIL). Nothing sleeps. The file that includes this includes
 * cmocka.h first.
 */
#ifndef BULKHEAD_TESTS_WORKPOOLFX_H
#define BULKHEAD_TESTS_WORKPOOLFX_H

#include "fairq.h"
#include "mclock.h"
#include "workpool.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#define WPFX_WAIT_S 30 /* generous bound for any wait; a healthy run needs milliseconds */

#define WPFX_NTENANTS 8 /* tenants are "A".."H", indexed 0..7 */

extern const char *const wpfx_tenant_names[WPFX_NTENANTS];

/* One unit of work. Fields below `item` are guarded by the ctx mutex. */
struct wpfx_job {
    struct fairq_item item;
    int tix;       /* tenant index */
    bool hold;     /* run() waits until released */
    bool released; /* set by the test */
    bool post;     /* counted in post_running/post_max (shrink test) */
    bool started;  /* run() began */
    int runs, drops;
    enum workpool_drop_reason why;
    pthread_t ran_on, dropped_on;
    bool saw_stop_returned; /* at the end of run(): had workpool_stop returned already? */
    int64_t spin_us;        /* run() computes this long (stress test: work that takes time) */
    int64_t run_begun_us;   /* the item's begun_us as run() saw it */
};

/* What the callbacks observed. The mutex guards every field; cv is broadcast on any change. */
struct wpfx_ctx {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int running, max_running;
    int t_running[WPFX_NTENANTS], t_max[WPFX_NTENANTS], t_completed[WPFX_NTENANTS];
    int post_running, post_max;
    int completed, expired, shutdown;
    bool release_all;
    bool stop_returned;
    struct workpool *wp; /* for the stopper/grower helper threads */
};

void wpfx_ctx_init(struct wpfx_ctx *c);

void wpfx_ctx_destroy(struct wpfx_ctx *c);

/* Worker thread. */
void wpfx_job_run(struct fairq_item *it, void *arg);

/* Thread of workpool_expire / workpool_stop. */
void wpfx_job_drop(struct fairq_item *it, enum workpool_drop_reason why, void *arg);

/* Wait until cond, evaluated under the ctx mutex, holds; fail the test after WAIT_S seconds. */
#define WPFX_WAIT_UNTIL(c, cond)                                                                   \
    do {                                                                                           \
        struct timespec dl_ = mclock_timespec(mclock_now_us() + WPFX_WAIT_S * 1000000ll);          \
        pthread_mutex_lock(&(c)->mu);                                                              \
        bool ok_ = true;                                                                           \
        while (ok_ && !(cond))                                                                     \
            if (pthread_cond_timedwait(&(c)->cv, &(c)->mu, &dl_) == ETIMEDOUT)                     \
                ok_ = (cond);                                                                      \
        pthread_mutex_unlock(&(c)->mu);                                                            \
        if (!ok_)                                                                                  \
            fail_msg("timed out waiting for %s", #cond);                                           \
    } while (0)

/* Read a ctx field under its mutex. */
#define WPFX_CTX_READ(c, expr)                                                                     \
    ({                                                                                             \
        pthread_mutex_lock(&(c)->mu);                                                              \
        __typeof__(expr) v_ = (expr);                                                              \
        pthread_mutex_unlock(&(c)->mu);                                                            \
        v_;                                                                                        \
    })

void wpfx_release(struct wpfx_ctx *c, struct wpfx_job *j);

void wpfx_release_all(struct wpfx_ctx *c);

/* Limits with no reserve and a 1 s linger: the shape of most tests. */
struct workpool_limits wpfx_limits(size_t threads, size_t queue_max, size_t tenant_queue_max,
                                   size_t share);

/* A pool whose tenants, while others are active, hold `share` workers at most; `reserve`
 * workers stay free for tenants holding none; a tenant stays active linger_us after its last
 * item (its end is injected through workpool_expire's now). */
struct workpool *wpfx_pool_brief(struct wpfx_ctx *c, size_t threads, size_t queue_max,
                                 size_t tenant_queue_max, size_t share, size_t reserve,
                                 int64_t linger_us, int64_t brief_us);

struct workpool *wpfx_pool_ex(struct wpfx_ctx *c, size_t threads, size_t queue_max,
                              size_t tenant_queue_max, size_t share, size_t reserve,
                              int64_t linger_us);

struct workpool *wpfx_pool(struct wpfx_ctx *c, size_t threads, size_t queue_max,
                           size_t tenant_queue_max, size_t share);

int wpfx_submit(struct workpool *wp, struct wpfx_job *j, int tix, bool hold);

/* The pool counts an item completed after run() returned; wait for its counter (bounded). */
void wpfx_wait_pool_completed(struct workpool *wp, uint64_t n);

/* Wait until exactly n slots are free (threads less items in flight). */
void wpfx_wait_pool_idle(struct workpool *wp, size_t n);

/*
 * Leave every worker parked: `threads` held items of one tenant run at once (one on each
 * worker), then end. A worker counts its item completed and parks without letting go of the
 * pool's mutex in between, so once all are counted, the next taker of the mutex comes after
 * every worker parked. (idle counts free slots, not parked workers, so it cannot tell this.)
 */
void wpfx_park_every_worker(struct wpfx_ctx *c, struct workpool *wp, size_t threads);

void *wpfx_stopper_main(void *arg);

void wpfx_stop_and_destroy(struct wpfx_ctx *c, struct workpool *wp);

/* End j, begun here or returned by workpool_end; the next item to start here, if taken. */
struct wpfx_job *wpfx_end(struct workpool *wp, struct wpfx_job *j, bool take_next);

#endif
