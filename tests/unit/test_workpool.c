/*
 * test_workpool: the worker pool's contract (workpool.h) with real threads.
 *
 * Every test item is a `job` whose run callback can be held until the test releases it, so the
 * tests decide what is running at each moment: counts are read under the test's own mutex and
 * every wait is a condition-variable wait on the real condition, bounded by WAIT_S seconds.
 * No test sleeps. The share-cap tests use "probe" jobs of another tenant: a probe that runs
 * proves a worker was idle, so a capped tenant that did not get it was refused by the cap.
 * The event-thread way (workpool_begin, workpool_hand, workpool_end) is driven from the test
 * thread, which plays the event thread: a begun item holds a slot there until it is ended or
 * handed to a worker.
 */
#include "workpool.h"
#include "compiler.h"
#include "mclock.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#define WAIT_S   30 /* generous bound for any wait; a healthy run needs milliseconds */
#define NTENANTS 8  /* tenants are "A".."H", indexed 0..7 */

static const char *const tenant_names[NTENANTS] = {"A", "B", "C", "D", "E", "F", "G", "H"};

/* One unit of work. Fields below `item` are guarded by the ctx mutex. */
struct job {
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
struct ctx {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int running, max_running;
    int t_running[NTENANTS], t_max[NTENANTS], t_completed[NTENANTS];
    int post_running, post_max;
    int completed, expired, shutdown;
    bool release_all;
    bool stop_returned;
    struct workpool *wp; /* for the stopper/grower helper threads */
};

static struct job *job_of(struct fairq_item *it)
{
    return container_of(it, struct job, item);
}

static void ctx_init(struct ctx *c)
{
    memset(c, 0, sizeof(*c));
    pthread_mutex_init(&c->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&c->cv, &ca);
    pthread_condattr_destroy(&ca);
}

static void ctx_destroy(struct ctx *c)
{
    pthread_cond_destroy(&c->cv);
    pthread_mutex_destroy(&c->mu);
}

/* Worker thread. */
static void job_run(struct fairq_item *it, void *arg)
{
    struct ctx *c = arg;
    struct job *j = job_of(it);
    if (j->spin_us) {
        int64_t end = mclock_now_us() + j->spin_us;
        while (mclock_now_us() < end)
            ;
    }
    pthread_mutex_lock(&c->mu);
    j->started = true;
    j->ran_on = pthread_self();
    j->run_begun_us = it->begun_us;
    c->running++;
    if (c->running > c->max_running)
        c->max_running = c->running;
    if (++c->t_running[j->tix] > c->t_max[j->tix])
        c->t_max[j->tix] = c->t_running[j->tix];
    if (j->post && ++c->post_running > c->post_max)
        c->post_max = c->post_running;
    pthread_cond_broadcast(&c->cv);
    while (j->hold && !j->released && !c->release_all)
        pthread_cond_wait(&c->cv, &c->mu);
    c->running--;
    c->t_running[j->tix]--;
    if (j->post)
        c->post_running--;
    c->t_completed[j->tix]++;
    c->completed++;
    j->runs++;
    j->saw_stop_returned = c->stop_returned;
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
}

/* Thread of workpool_expire / workpool_stop. */
static void job_drop(struct fairq_item *it, enum workpool_drop_reason why, void *arg)
{
    struct ctx *c = arg;
    struct job *j = job_of(it);
    pthread_mutex_lock(&c->mu);
    j->drops++;
    j->why = why;
    j->dropped_on = pthread_self();
    if (why == WORKPOOL_EXPIRED)
        c->expired++;
    else
        c->shutdown++;
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
}

/* Wait until cond, evaluated under the ctx mutex, holds; fail the test after WAIT_S seconds. */
#define WAIT_UNTIL(c, cond)                                                                        \
    do {                                                                                           \
        struct timespec dl_ = mclock_timespec(mclock_now_us() + WAIT_S * 1000000ll);               \
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
#define CTX_READ(c, expr)                                                                          \
    ({                                                                                             \
        pthread_mutex_lock(&(c)->mu);                                                              \
        __typeof__(expr) v_ = (expr);                                                              \
        pthread_mutex_unlock(&(c)->mu);                                                            \
        v_;                                                                                        \
    })

static void release(struct ctx *c, struct job *j)
{
    pthread_mutex_lock(&c->mu);
    j->released = true;
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
}

static void release_all(struct ctx *c)
{
    pthread_mutex_lock(&c->mu);
    c->release_all = true;
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
}

/* Limits with no reserve and a 1 s linger: the shape of most tests. */
static struct workpool_limits limits(size_t threads, size_t queue_max, size_t tenant_queue_max,
                                     size_t share)
{
    return (struct workpool_limits){.threads = threads,
                                    .queue_max = queue_max,
                                    .tenant_queue_max = tenant_queue_max,
                                    .share = {.size = threads, .cap = share},
                                    .linger_us = 1000000};
}

/* A pool whose tenants, while others are active, hold `share` workers at most; `reserve`
 * workers stay free for tenants holding none; a tenant stays active linger_us after its last
 * item (its end is injected through workpool_expire's now). */
static struct workpool *pool_brief(struct ctx *c, size_t threads, size_t queue_max,
                                   size_t tenant_queue_max, size_t share, size_t reserve,
                                   int64_t linger_us, int64_t brief_us)
{
    struct workpool_limits lim = {.threads = threads,
                                  .queue_max = queue_max,
                                  .tenant_queue_max = tenant_queue_max,
                                  .share = {.size = threads, .cap = share, .reserve = reserve},
                                  .linger_us = linger_us,
                                  .brief_us = brief_us};
    struct workpool_ops ops = {.run = job_run, .drop = job_drop, .ctx = c};
    struct workpool *wp = NULL;
    assert_int_equal(workpool_create("test", &lim, &ops, &wp), 0);
    assert_non_null(wp);
    c->wp = wp;
    return wp;
}

static struct workpool *pool_ex(struct ctx *c, size_t threads, size_t queue_max,
                                size_t tenant_queue_max, size_t share, size_t reserve,
                                int64_t linger_us)
{
    return pool_brief(c, threads, queue_max, tenant_queue_max, share, reserve, linger_us, 0);
}

static struct workpool *pool(struct ctx *c, size_t threads, size_t queue_max,
                             size_t tenant_queue_max, size_t share)
{
    return pool_ex(c, threads, queue_max, tenant_queue_max, share, 0, 1000000);
}

static int submit(struct workpool *wp, struct job *j, int tix, bool hold)
{
    j->tix = tix;
    j->hold = hold;
    return workpool_submit(wp, tenant_names[tix], &j->item);
}

/* The pool counts an item completed after run() returned; wait for its counter (bounded). */
static void wait_pool_completed(struct workpool *wp, uint64_t n)
{
    int64_t end = mclock_now_us() + WAIT_S * 1000000ll;
    struct workpool_stats st;
    for (;;) {
        workpool_stats(wp, &st);
        if (st.completed >= n || mclock_now_us() > end)
            break;
        sched_yield();
    }
    assert_int_equal(st.completed, n);
}

/* Wait until exactly n slots are free (threads less items in flight). */
static void wait_pool_idle(struct workpool *wp, size_t n)
{
    int64_t end = mclock_now_us() + WAIT_S * 1000000ll;
    struct workpool_stats st;
    for (;;) {
        workpool_stats(wp, &st);
        if (st.idle == n || mclock_now_us() > end)
            break;
        sched_yield();
    }
    assert_int_equal(st.idle, n);
}

/*
 * Leave every worker parked: `threads` held items of one tenant run at once (one on each
 * worker), then end. A worker counts its item completed and parks without letting go of the
 * pool's mutex in between, so once all are counted, the next taker of the mutex comes after
 * every worker parked. (idle counts free slots, not parked workers, so it cannot tell this.)
 */
static void park_every_worker(struct ctx *c, struct workpool *wp, size_t threads)
{
    enum { Z = NTENANTS - 1 };
    struct job *warm = calloc(threads, sizeof(*warm));
    assert_non_null(warm);
    struct workpool_stats st;
    workpool_stats(wp, &st);
    for (size_t i = 0; i < threads; i++)
        assert_int_equal(submit(wp, &warm[i], Z, true), 0);
    WAIT_UNTIL(c, c->t_running[Z] == (int)threads);
    for (size_t i = 0; i < threads; i++)
        release(c, &warm[i]);
    wait_pool_completed(wp, st.completed + threads);
    workpool_stats(wp, &st); /* the counter is read without the mutex: take it once more */
    free(warm);
}

static void *stopper_main(void *arg)
{
    struct ctx *c = arg;
    workpool_stop(c->wp);
    pthread_mutex_lock(&c->mu);
    c->stop_returned = true;
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
    return NULL;
}

static void stop_and_destroy(struct ctx *c, struct workpool *wp)
{
    workpool_stop(wp);
    workpool_destroy(wp);
    ctx_destroy(c);
}

static void every_item_runs_exactly_once_on_a_worker(void **state)
{
    (void)state;
    enum { N = 2000 };
    struct ctx c;
    ctx_init(&c);
    struct workpool *wp = pool(&c, 4, N, N, 4);
    struct job *j = calloc(N, sizeof(*j));
    assert_non_null(j);
    for (int i = 0; i < N; i++)
        assert_int_equal(submit(wp, &j[i], i % NTENANTS, false), 0);
    WAIT_UNTIL(&c, c.completed == N);
    wait_pool_completed(wp, N);
    workpool_stop(wp);
    pthread_t me = pthread_self();
    for (int i = 0; i < N; i++) {
        assert_int_equal(j[i].runs, 1);
        assert_int_equal(j[i].drops, 0);
        assert_false(pthread_equal(j[i].ran_on, me));
    }
    assert_true(c.max_running <= 4);
    struct workpool_stats st;
    workpool_stats(wp, &st);
    assert_int_equal(st.threads, 4);
    assert_int_equal(st.submitted, N);
    assert_int_equal(st.completed, N);
    assert_int_equal(st.busy, 0);
    assert_int_equal(st.queued, 0);
    assert_int_equal(st.expired + st.rejected_full + st.rejected_tenant, 0);
    workpool_destroy(wp);
    ctx_destroy(&c);
    free(j);
}

static void running_items_never_exceed_threads(void **state)
{
    (void)state;
    struct ctx c;
    ctx_init(&c);
    struct workpool *wp = pool(&c, 3, 100, 100, 1);
    struct job j[12];
    memset(j, 0, sizeof(j));
    for (int i = 0; i < 12; i++)
        assert_int_equal(submit(wp, &j[i], 0, true), 0);
    WAIT_UNTIL(&c, c.running == 3);
    /* All three workers are held; the rest waits in the queue. */
    struct workpool_stats st;
    workpool_stats(wp, &st);
    assert_int_equal(st.busy, 3);
    assert_int_equal(st.queued, 9);
    /* Release them one at a time, oldest first (one tenant: FIFO), each start checked. */
    for (int i = 0; i < 12; i++) {
        WAIT_UNTIL(&c, j[i].started);
        release(&c, &j[i]);
    }
    WAIT_UNTIL(&c, c.completed == 12);
    assert_int_equal(CTX_READ(&c, c.max_running), 3);
    stop_and_destroy(&c, wp);
}

static void tenant_share_is_capped_while_others_are_active(void **state)
{
    (void)state;
    enum { A, B, C };
    struct ctx c;
    ctx_init(&c);
    struct workpool *wp = pool(&c, 4, 100, 100, 2);
    struct job b1 = {0}, a[4], probe[2];
    memset(a, 0, sizeof(a));
    memset(probe, 0, sizeof(probe));

    /* B holds one worker; then A asks for four. */
    assert_int_equal(submit(wp, &b1, B, true), 0);
    WAIT_UNTIL(&c, c.t_running[B] == 1);
    for (int i = 0; i < 4; i++)
        assert_int_equal(submit(wp, &a[i], A, true), 0);
    WAIT_UNTIL(&c, c.t_running[A] == 2);
    assert_true(workpool_others_active(wp));

    /* A probe of C runs on the fourth worker, which A's queued items could not get. */
    assert_int_equal(submit(wp, &probe[0], C, false), 0);
    WAIT_UNTIL(&c, c.t_completed[C] == 1);
    wait_pool_completed(wp, 1);
    struct workpool_stats st;
    workpool_stats(wp, &st);
    assert_int_equal(st.busy, 3);
    assert_int_equal(st.queued, 2);
    assert_int_equal(st.tenants, 3);
    assert_int_equal(CTX_READ(&c, c.t_max[A]), 2);

    /* B finishes but lingers as active: A is still capped (a second probe proves a free worker). */
    release(&c, &b1);
    WAIT_UNTIL(&c, c.t_completed[B] == 1);
    assert_int_equal(submit(wp, &probe[1], C, false), 0);
    WAIT_UNTIL(&c, c.t_completed[C] == 2);
    assert_int_equal(CTX_READ(&c, c.t_running[A]), 2);
    assert_int_equal(CTX_READ(&c, c.t_max[A]), 2);

    /* Once B and C are forgotten (their linger passed), A alone takes every worker. Their
     * items must be done in the pool, not only in run(), or they are not idle yet. */
    wait_pool_completed(wp, 3);
    workpool_expire(wp, 0, mclock_now_us() + 10 * 1000000ll);
    WAIT_UNTIL(&c, c.t_running[A] == 4);
    workpool_stats(wp, &st);
    assert_int_equal(st.tenants, 1);
    assert_int_equal(st.expired, 0);
    assert_false(workpool_others_active(wp));

    release_all(&c);
    WAIT_UNTIL(&c, c.completed == 7);
    stop_and_destroy(&c, wp);
}

/*
 * The reserve and the linger on real threads: A alone holds every worker but one; B's item
 * runs on that one while all of A's are still running; A drains to its share while B is
 * active and gets all but the reserve back only once B's linger has passed (the end of the
 * linger is injected through workpool_expire's now). Every item runs.
 */
static void a_newcomer_runs_while_a_busy_tenant_holds_every_other_worker(void **state)
{
    (void)state;
    enum { A, B };
    const int64_t linger = 1000000;
    struct ctx c;
    ctx_init(&c);
    struct workpool *wp = pool_ex(&c, 4, 100, 100, 2, 1, linger);
    struct job a[6], b = {0};
    memset(a, 0, sizeof(a));
    for (int i = 0; i < 6; i++)
        assert_int_equal(submit(wp, &a[i], A, true), 0);
    WAIT_UNTIL(&c, c.t_running[A] == 3);
    wait_pool_idle(wp, 1); /* the reserved worker waits, A's three items queued or not */

    assert_int_equal(submit(wp, &b, B, true), 0);
    WAIT_UNTIL(&c, c.t_running[B] == 1);
    assert_int_equal(CTX_READ(&c, c.t_completed[A]), 0);
    assert_int_equal(CTX_READ(&c, c.t_max[A]), 3);

    /* One of A's items ends: A (3 running, share 2) does not take the worker back. A's items
     * run in submit order, so a[0] is one of the running ones. */
    release(&c, &a[0]);
    wait_pool_completed(wp, 1);
    wait_pool_idle(wp, 1);
    assert_int_equal(CTX_READ(&c, c.t_running[A]), 2);

    /* B ends but lingers: A stays at 2 until the linger is over, then takes 3 again. */
    release(&c, &b);
    wait_pool_completed(wp, 2);
    workpool_expire(wp, 0, mclock_now_us() + linger / 2);
    struct workpool_stats st;
    workpool_stats(wp, &st);
    assert_int_equal(st.tenants, 2);
    assert_int_equal(CTX_READ(&c, c.t_running[A]), 2);
    workpool_expire(wp, 0, mclock_now_us() + 2 * linger);
    WAIT_UNTIL(&c, c.t_running[A] == 3);
    wait_pool_idle(wp, 1);
    workpool_stats(wp, &st);
    assert_int_equal(st.tenants, 1);
    assert_int_equal(st.expired, 0);

    release_all(&c);
    WAIT_UNTIL(&c, c.completed == 7);
    assert_int_equal(CTX_READ(&c, c.t_completed[A]), 6);
    stop_and_destroy(&c, wp);
}

/* The pool measures how long each item held its worker: a tenant whose items end at once while
 * it runs others is brief and, beside another tenant, takes one worker past its share; never a
 * second, and never the reserve: a newcomer that arrives next still finds a worker. */
static void a_tenant_with_brief_items_takes_one_worker_past_its_share(void **state)
{
    (void)state;
    enum { A, B, D };
    struct ctx c;
    ctx_init(&c);
    struct workpool *wp = pool_brief(&c, 6, 100, 100, 2, 1, 1000000, 1000000);
    struct job warm[FAIRQ_BRIEF_SAMPLES], b = {0}, d = {0}, a[4];
    memset(warm, 0, sizeof(warm));
    memset(a, 0, sizeof(a));
    assert_int_equal(submit(wp, &a[0], A, true), 0);
    WAIT_UNTIL(&c, c.t_running[A] == 1);
    /* Short items end while a[0] runs: A is giving workers back. */
    for (int i = 0; i < FAIRQ_BRIEF_SAMPLES; i++)
        assert_int_equal(submit(wp, &warm[i], A, false), 0);
    wait_pool_completed(wp, FAIRQ_BRIEF_SAMPLES);
    assert_true(workpool_tenant_brief(a[0].item.tenant));

    assert_int_equal(submit(wp, &b, B, true), 0);
    WAIT_UNTIL(&c, c.t_running[B] == 1);
    for (int i = 1; i < 4; i++)
        assert_int_equal(submit(wp, &a[i], A, true), 0);
    WAIT_UNTIL(&c, c.t_running[A] == 3); /* its share of 2, and one more */
    /* D arrives after A's last item: the one idle worker A may not take is D's, then only the
     * reserve is left and A's last item waits. */
    assert_int_equal(submit(wp, &d, D, true), 0);
    WAIT_UNTIL(&c, c.t_running[D] == 1);
    wait_pool_idle(wp, 1);
    struct workpool_stats st;
    workpool_stats(wp, &st);
    assert_int_equal(st.queued, 1);
    assert_int_equal(CTX_READ(&c, c.t_running[A]), 3);
    release_all(&c);
    WAIT_UNTIL(&c, c.completed == FAIRQ_BRIEF_SAMPLES + 6);
    stop_and_destroy(&c, wp);
}

static void submit_refuses_full_queue_tenant_share_and_shutdown(void **state)
{
    (void)state;
    enum { A, B, C, Z = 7 };
    struct ctx c;
    ctx_init(&c);
    struct workpool *wp = pool(&c, 1, 2, 1, 1);
    struct job x = {0}, a1 = {0}, a2 = {0}, b1 = {0}, c1 = {0}, late = {0};

    assert_int_equal(submit(wp, &x, Z, true), 0);
    WAIT_UNTIL(&c, x.started);
    assert_int_equal(submit(wp, &a1, A, true), 0);
    assert_int_equal(submit(wp, &a2, A, true), -EDQUOT); /* A's one queued place is taken */
    assert_int_equal(submit(wp, &b1, B, true), 0);
    assert_int_equal(submit(wp, &c1, C, true), -EAGAIN); /* two queued: the queue is full */
    struct workpool_stats st;
    workpool_stats(wp, &st);
    assert_int_equal(st.queued, 2);
    assert_int_equal(st.queue_max, 2);
    assert_int_equal(st.submitted, 3);
    assert_int_equal(st.rejected_tenant, 1);
    assert_int_equal(st.rejected_full, 1);

    /* Stop on another thread: queued items are dropped at once, the running one is awaited. */
    pthread_t stopper;
    assert_int_equal(pthread_create(&stopper, NULL, stopper_main, &c), 0);
    WAIT_UNTIL(&c, c.shutdown == 2);
    assert_int_equal(submit(wp, &late, A, false), -ESHUTDOWN);
    assert_false(CTX_READ(&c, c.stop_returned)); /* x is still held */
    assert_int_equal(CTX_READ(&c, x.runs), 0);
    release(&c, &x);
    pthread_join(stopper, NULL);

    assert_int_equal(x.runs, 1);
    assert_false(x.saw_stop_returned);
    struct job *dropped[2] = {&a1, &b1};
    for (int i = 0; i < 2; i++) {
        struct job *j = dropped[i];
        assert_int_equal(j->runs, 0);
        assert_int_equal(j->drops, 1);
        assert_int_equal(j->why, WORKPOOL_SHUTDOWN);
        assert_true(pthread_equal(j->dropped_on, stopper));
    }
    assert_int_equal(a2.runs + a2.drops + c1.runs + c1.drops + late.runs + late.drops, 0);
    workpool_stats(wp, &st);
    assert_int_equal(st.completed, 1);
    assert_int_equal(st.busy, 0);
    assert_int_equal(st.queued, 0);
    workpool_destroy(wp);
    ctx_destroy(&c);
}

/* queue_max 0 (and so a tenant cap of 0): nothing may wait, but whatever finds a worker free
 * runs. The queue's limits count waiting items; an item that an idle worker takes at once does
 * not wait (it used to be refused, so a tier with queue_max 0 served nothing). */
static void a_pool_without_a_queue_runs_what_finds_a_free_worker(void **state)
{
    (void)state;
    enum { A, B };
    struct ctx c;
    ctx_init(&c);
    /* Parked workers are the ones counted as taking an item at once: park both first, with a
     * queue (before they park, a pool without one refuses everything), then remove it. */
    struct workpool *wp = pool(&c, 2, 2, 2, 2);
    park_every_worker(&c, wp, 2);
    struct workpool_limits none = limits(2, 0, 0, 2);
    assert_int_equal(workpool_set_limits(wp, &none), 0);
    wait_pool_idle(wp, 2);
    struct job x1 = {0}, x2 = {0}, x3 = {0};
    /* Back to back, before either worker has woken: both count as taken at once. */
    assert_int_equal(submit(wp, &x1, A, true), 0);
    assert_int_equal(submit(wp, &x2, B, true), 0);
    assert_int_equal(submit(wp, &x3, A, true), -EAGAIN); /* every worker has one: no queue */
    WAIT_UNTIL(&c, x1.started && x2.started);
    release_all(&c);
    wait_pool_completed(wp, 2 + 2); /* the warm-up's two, then x1 and x2 */
    struct workpool_stats st;
    workpool_stats(wp, &st);
    assert_int_equal(st.submitted, 2 + 2);
    assert_int_equal(st.rejected_full, 1);
    assert_int_equal(x3.runs + x3.drops, 0);
    stop_and_destroy(&c, wp);
}

static void expire_drops_only_items_queued_before_cutoff(void **state)
{
    (void)state;
    enum { A, B, Z = 7 };
    struct ctx c;
    ctx_init(&c);
    struct workpool *wp = pool(&c, 1, 10, 10, 1);
    struct job x = {0}, a1 = {0}, a2 = {0}, b1 = {0};
    assert_int_equal(submit(wp, &x, Z, true), 0);
    WAIT_UNTIL(&c, x.started);
    assert_int_equal(submit(wp, &a1, A, false), 0);
    /* Let the clock tick so a2 is strictly younger than a1 (microseconds: a short spin). */
    while (mclock_now_us() <= a1.item.enqueued_us)
        ;
    assert_int_equal(submit(wp, &a2, A, false), 0);
    assert_int_equal(submit(wp, &b1, B, false), 0);

    workpool_expire(wp, a2.item.enqueued_us, mclock_now_us());
    /* The drop callback ran on this thread, before workpool_expire returned. */
    assert_int_equal(CTX_READ(&c, c.expired), 1);
    assert_int_equal(a1.drops, 1);
    assert_int_equal(a1.why, WORKPOOL_EXPIRED);
    assert_true(pthread_equal(a1.dropped_on, pthread_self()));
    struct workpool_stats st;
    workpool_stats(wp, &st);
    assert_int_equal(st.expired, 1);
    assert_int_equal(st.queued, 2);
    assert_int_equal(st.tenants, 3); /* nobody lingered out: now_us is now */

    release(&c, &x);
    WAIT_UNTIL(&c, c.completed == 3);
    workpool_stop(wp);
    assert_int_equal(a1.runs, 0);
    assert_int_equal(a2.runs, 1);
    assert_int_equal(b1.runs, 1);
    assert_int_equal(a2.drops + b1.drops, 0);
    workpool_stats(wp, &st);
    assert_int_equal(st.submitted, 4);
    assert_int_equal(st.completed + st.expired, st.submitted);
    workpool_destroy(wp);
    ctx_destroy(&c);
}

static void set_limits_adds_threads_live(void **state)
{
    (void)state;
    struct ctx c;
    ctx_init(&c);
    struct workpool *wp = pool(&c, 1, 100, 100, 1);
    struct job j[4];
    memset(j, 0, sizeof(j));
    for (int i = 0; i < 4; i++)
        assert_int_equal(submit(wp, &j[i], 0, true), 0);
    WAIT_UNTIL(&c, c.running == 1);
    struct workpool_limits lim = limits(4, 100, 100, 1);
    assert_int_equal(workpool_set_limits(wp, &lim), 0);
    /* The queued items start on the new threads without anything finishing. */
    WAIT_UNTIL(&c, c.running == 4);
    struct workpool_stats st;
    workpool_stats(wp, &st);
    assert_int_equal(st.threads, 4);
    assert_int_equal(st.busy, 4);
    release_all(&c);
    WAIT_UNTIL(&c, c.completed == 4);
    stop_and_destroy(&c, wp);
}

static void set_limits_retires_threads_live(void **state)
{
    (void)state;
    enum { PRE = 4, POST = 8 };
    struct ctx c;
    ctx_init(&c);
    struct workpool *wp = pool(&c, 4, 100, 100, 1);
    struct job pre[PRE], post[POST];
    memset(pre, 0, sizeof(pre));
    memset(post, 0, sizeof(post));
    for (int i = 0; i < PRE; i++)
        assert_int_equal(submit(wp, &pre[i], 0, true), 0);
    WAIT_UNTIL(&c, c.running == 4);
    /* Every post item is queued while all four threads are busy, so each starts after the
     * shrink. */
    for (int i = 0; i < POST; i++) {
        post[i].post = true;
        assert_int_equal(submit(wp, &post[i], 0, true), 0);
    }
    struct workpool_limits lim = limits(2, 100, 100, 1);
    assert_int_equal(workpool_set_limits(wp, &lim), 0);
    struct workpool_stats st;
    workpool_stats(wp, &st);
    assert_int_equal(st.threads, 2);
    /* Running work is not interrupted: the four held items finish normally. */
    for (int i = 0; i < PRE; i++)
        release(&c, &pre[i]);
    /* Post items run in FIFO order (one tenant). Release each once it and the next one have
     * started, so two are always held together: the remaining two threads are both busy. */
    for (int i = 0; i < POST; i++) {
        WAIT_UNTIL(&c, post[i].started && (i + 1 == POST || post[i + 1].started));
        release(&c, &post[i]);
    }
    WAIT_UNTIL(&c, c.completed == PRE + POST);
    assert_int_equal(CTX_READ(&c, c.post_max), 2);
    assert_int_equal(CTX_READ(&c, c.max_running), 4);
    stop_and_destroy(&c, wp);
}

static void *grower_main(void *arg)
{
    struct ctx *c = arg;
    struct workpool_limits lim = limits(2, 100, 100, 1);
    int rc = workpool_set_limits(c->wp, &lim);
    pthread_mutex_lock(&c->mu);
    c->stop_returned = rc == 0; /* reused as "grow returned 0" */
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
    return NULL;
}

static void regrow_while_retiring_thread_is_busy(void **state)
{
    (void)state;
    struct ctx c;
    ctx_init(&c);
    struct workpool *wp = pool(&c, 2, 100, 100, 2);
    struct job j[4];
    memset(j, 0, sizeof(j));
    for (int i = 0; i < 2; i++)
        assert_int_equal(submit(wp, &j[i], 0, true), 0);
    WAIT_UNTIL(&c, c.running == 2);
    /* Shrink to 1 (thread 1 will retire after its held item), then grow back to 2 before it
     * finished: the pool must not wait for a thread that is busy and no longer retiring. */
    struct workpool_limits one = limits(1, 100, 100, 2);
    assert_int_equal(workpool_set_limits(wp, &one), 0);
    pthread_t grower;
    assert_int_equal(pthread_create(&grower, NULL, grower_main, &c), 0);
    WAIT_UNTIL(&c, c.stop_returned);
    pthread_join(grower, NULL);
    release(&c, &j[0]);
    release(&c, &j[1]);
    WAIT_UNTIL(&c, c.completed == 2);
    /* Two threads serve again. */
    for (int i = 2; i < 4; i++)
        assert_int_equal(submit(wp, &j[i], 0, true), 0);
    WAIT_UNTIL(&c, c.running == 2);
    struct workpool_stats st;
    workpool_stats(wp, &st);
    assert_int_equal(st.threads, 2);
    release_all(&c);
    WAIT_UNTIL(&c, c.completed == 4);
    stop_and_destroy(&c, wp);
}

static void bad_thread_counts_are_refused(void **state)
{
    (void)state;
    struct ctx c;
    ctx_init(&c);
    struct workpool_ops ops = {.run = job_run, .drop = job_drop, .ctx = &c};
    struct workpool *wp = NULL;
    struct workpool_limits zero = limits(0, 10, 10, 1), huge = limits(1025, 10, 10, 1);
    assert_int_equal(workpool_create("bad", &zero, &ops, &wp), -EINVAL);
    assert_int_equal(workpool_create("bad", &huge, &ops, &wp), -EINVAL);
    assert_null(wp);
    wp = pool(&c, 1, 10, 10, 1);
    assert_int_equal(workpool_set_limits(wp, &zero), -EINVAL);
    assert_int_equal(workpool_set_limits(wp, &huge), -EINVAL);
    /* The refused change left the pool as it was. */
    struct job j = {0};
    assert_int_equal(submit(wp, &j, 0, false), 0);
    WAIT_UNTIL(&c, c.completed == 1);
    struct workpool_stats st;
    workpool_stats(wp, &st);
    assert_int_equal(st.threads, 1);
    assert_int_equal(st.queue_max, 10);
    stop_and_destroy(&c, wp);
}

static void top_tenants_lists_busiest_first(void **state)
{
    (void)state;
    enum { A, B, Z = 7 };
    struct ctx c;
    ctx_init(&c);
    struct workpool *wp = pool(&c, 1, 100, 100, 1);
    struct job x = {0}, a[3], b = {0};
    memset(a, 0, sizeof(a));
    assert_int_equal(submit(wp, &x, Z, true), 0);
    WAIT_UNTIL(&c, x.started);
    for (int i = 0; i < 3; i++)
        assert_int_equal(submit(wp, &a[i], A, true), 0);
    assert_int_equal(submit(wp, &b, B, true), 0);
    struct workpool_tenant_load top[20];
    assert_int_equal(workpool_top_tenants(wp, top, 20), 3);
    assert_string_equal(top[0].key, "A");
    assert_int_equal(top[0].queued, 3);
    assert_int_equal(top[0].in_flight, 0);
    /* H (one running) and B (one queued) tie for second place. */
    for (int i = 1; i < 3; i++) {
        if (!strcmp(top[i].key, "H")) {
            assert_int_equal(top[i].in_flight, 1);
            assert_int_equal(top[i].queued, 0);
        } else {
            assert_string_equal(top[i].key, "B");
            assert_int_equal(top[i].in_flight, 0);
            assert_int_equal(top[i].queued, 1);
        }
    }
    assert_int_equal(workpool_top_tenants(wp, top, 1), 1);
    assert_string_equal(top[0].key, "A");
    release_all(&c);
    WAIT_UNTIL(&c, c.completed == 5);
    stop_and_destroy(&c, wp);
}

/*
 * A worker retired by a shrink, finishing the item that held back a queued one (its tenant was
 * at its share), hands the look for that item to a parked worker. It used to leave it queued
 * with every remaining worker parked, until the next submit.
 */
static void a_retiring_worker_hands_on_the_item_its_own_held_back(void **state)
{
    (void)state;
    struct ctx c;
    ctx_init(&c);
    struct workpool *wp = pool(&c, 2, 16, 8, 1);
    struct job j[2], next = {0};
    memset(j, 0, sizeof(j));
    assert_int_equal(submit(wp, &j[0], 0, true), 0);
    assert_int_equal(submit(wp, &j[1], 1, true), 0);
    WAIT_UNTIL(&c, c.running == 2);
    /* Which item runs on worker 1, the one a shrink to one thread retires? */
    char name[16] = "";
    pthread_getname_np(CTX_READ(&c, j[0].ran_on), name, sizeof(name));
    size_t n = strlen(name);
    int on1 = n >= 2 && !strcmp(name + n - 2, "-1") ? 0 : 1, other = 1 - on1;
    /* Worker 0 finishes and parks; the other tenant stays active (it lingers), so the tenant
     * on worker 1 is at its share of one and its next item must wait. */
    release(&c, &j[other]);
    wait_pool_completed(wp, 1);
    wait_pool_idle(wp, 1);
    assert_int_equal(submit(wp, &next, j[on1].tix, false), 0);
    /* The submit woke worker 0, which finds nothing it may run. (Whether it parked again is
     * not observable: idle counts free slots, not parked workers.) */
    wait_pool_idle(wp, 1);
    struct workpool_stats st;
    workpool_stats(wp, &st);
    assert_int_equal(st.queued, 1);
    struct workpool_limits lim = limits(1, 16, 8, 1);
    assert_int_equal(workpool_set_limits(wp, &lim), 0);
    /* One slot now, held by the item on worker 1, which retires after it. */
    wait_pool_idle(wp, 0);
    /* Worker 1 finishes and retires: the queued item must still run. */
    release(&c, &j[on1]);
    WAIT_UNTIL(&c, next.runs == 1);
    stop_and_destroy(&c, wp);
}

/* ---- the event-thread way ----------------------------------------------------------------- */

/* The test thread as an event thread: begin j for tenant tix. hold: if it is handed to a worker,
 * its run waits for release. */
static int begin(struct workpool *wp, struct job *j, int tix, bool hold)
{
    j->tix = tix;
    j->hold = hold;
    return workpool_begin(wp, tenant_names[tix], &j->item);
}

/* End j, begun here or returned by workpool_end; the next item to start here, if taken. */
static struct job *end(struct workpool *wp, struct job *j, bool take_next)
{
    struct fairq_item *next = workpool_end(wp, j->item.tenant, j->item.begun_us, take_next);
    return next ? job_of(next) : NULL;
}

static struct workpool_stats pool_stats(struct workpool *wp)
{
    struct workpool_stats st;
    workpool_stats(wp, &st);
    return st;
}

/* A begun item is counted busy and holds one of the slots (threads) until it ends; idle counts
 * the slots left. With every slot held, workpool_begin says -EBUSY and changes nothing. */
static void a_begun_item_holds_a_slot_until_it_is_ended(void **state)
{
    (void)state;
    enum { A, B, C };
    struct ctx c;
    ctx_init(&c);
    struct workpool *wp = pool(&c, 2, 10, 10, 2);
    struct job a = {0}, b = {0}, x = {0};
    int64_t t0 = mclock_now_us();
    assert_int_equal(begin(wp, &a, A, false), 0);
    assert_non_null(a.item.tenant);
    assert_true(a.item.begun_us >= t0 && a.item.begun_us <= mclock_now_us());
    struct workpool_stats st = pool_stats(wp);
    assert_int_equal(st.busy, 1);
    assert_int_equal(st.idle, 1);
    assert_int_equal(st.queued, 0);
    assert_int_equal(st.submitted, 1);
    assert_int_equal(begin(wp, &b, B, false), 0);
    st = pool_stats(wp);
    assert_int_equal(st.busy, 2);
    assert_int_equal(st.idle, 0);

    assert_int_equal(begin(wp, &x, C, false), -EBUSY);
    st = pool_stats(wp);
    assert_int_equal(st.submitted, 2);
    assert_int_equal(st.busy, 2);
    assert_int_equal(st.tenants, 2); /* a refused newcomer is not remembered */

    assert_null(end(wp, &a, false));
    st = pool_stats(wp);
    assert_int_equal(st.busy, 1);
    assert_int_equal(st.idle, 1);
    assert_int_equal(st.completed, 1);
    assert_int_equal(begin(wp, &x, C, false), 0); /* the slot a freed */
    assert_null(end(wp, &x, true));               /* nothing queued: nothing to take */
    assert_null(end(wp, &b, false));
    st = pool_stats(wp);
    assert_int_equal(st.busy, 0);
    assert_int_equal(st.idle, 2);
    assert_int_equal(st.submitted, 3);
    assert_int_equal(st.completed, 3);
    assert_int_equal(CTX_READ(&c, c.completed), 0); /* no worker ran any of them */
    stop_and_destroy(&c, wp);
}

/* share.h's rule holds for begun items: beside another active tenant, a tenant at its share
 * is refused although a slot is free; a newcomer gets it. */
static void begin_refuses_a_tenant_at_its_share_while_others_are_active(void **state)
{
    (void)state;
    enum { A, B, Z = 7 };
    struct ctx c;
    ctx_init(&c);
    struct workpool *wp = pool(&c, 3, 10, 10, 1);
    struct job z = {0}, a1 = {0}, a2 = {0}, b = {0};
    assert_int_equal(submit(wp, &z, Z, true), 0);
    WAIT_UNTIL(&c, z.started);
    assert_int_equal(begin(wp, &a1, A, false), 0);
    assert_int_equal(pool_stats(wp).idle, 1);
    assert_int_equal(begin(wp, &a2, A, false), -EBUSY);
    assert_int_equal(begin(wp, &b, B, false), 0);
    struct workpool_stats st = pool_stats(wp);
    assert_int_equal(st.busy, 3);
    assert_int_equal(st.submitted, 3);
    assert_null(end(wp, &a1, false));
    assert_null(end(wp, &b, false));
    release(&c, &z);
    wait_pool_completed(wp, 3);
    stop_and_destroy(&c, wp);
}

/* Slots, not threads, bound the work: with one slot held by a begun item, a pool of two
 * threads runs one queued item at a time on its workers; handed over, the begun item runs on
 * the other thread and the two together never exceed two. */
static void begun_items_count_against_the_thread_limit(void **state)
{
    (void)state;
    enum { A, B, C, N = 4 };
    struct ctx c;
    ctx_init(&c);
    struct workpool *wp = pool(&c, 2, 10, 10, 2);
    struct job a = {0}, x = {0}, q[N];
    memset(q, 0, sizeof(q));
    assert_int_equal(begin(wp, &a, A, true), 0);
    for (int i = 0; i < N; i++)
        assert_int_equal(submit(wp, &q[i], B, true), 0);
    WAIT_UNTIL(&c, q[0].started);
    struct workpool_stats st = pool_stats(wp);
    assert_int_equal(st.busy, 2);
    assert_int_equal(st.queued, N - 1);
    assert_int_equal(st.idle, 0);
    assert_int_equal(begin(wp, &x, C, false), -EBUSY);
    /* One item of B at a time while a holds the other slot (B alone may take both). */
    release(&c, &q[0]);
    WAIT_UNTIL(&c, q[1].started);
    assert_int_equal(CTX_READ(&c, c.max_running), 1);
    assert_false(CTX_READ(&c, q[2].started));

    int64_t begun = a.item.begun_us;
    assert_int_equal(workpool_hand(wp, &a.item), 0);
    WAIT_UNTIL(&c, a.started);
    assert_int_equal(CTX_READ(&c, c.running), 2);
    assert_false(pthread_equal(CTX_READ(&c, a.ran_on), pthread_self()));
    assert_int_equal(CTX_READ(&c, a.run_begun_us), begun);
    st = pool_stats(wp);
    assert_int_equal(st.busy, 2);
    assert_int_equal(st.queued, N - 2);

    release_all(&c);
    WAIT_UNTIL(&c, c.completed == N + 1);
    wait_pool_completed(wp, N + 1);
    assert_int_equal(CTX_READ(&c, c.max_running), 2);
    assert_int_equal(a.runs, 1);
    st = pool_stats(wp);
    assert_int_equal(st.busy, 0);
    assert_int_equal(st.submitted, N + 1);
    stop_and_destroy(&c, wp);
}

/* A handed item runs on a worker with the slot it holds: it needs no free one (a queued item
 * waits for one meanwhile), and when it ends its slot is what lets the queued item in. */
static void a_handed_item_runs_on_a_worker_with_the_slot_it_holds(void **state)
{
    (void)state;
    enum { A, B, Z = 7 };
    struct ctx c;
    ctx_init(&c);
    struct workpool *wp = pool(&c, 2, 10, 10, 2);
    struct job x = {0}, h = {0}, q = {0};
    assert_int_equal(submit(wp, &x, Z, true), 0);
    WAIT_UNTIL(&c, x.started);
    assert_int_equal(begin(wp, &h, A, true), 0);
    assert_int_equal(submit(wp, &q, B, false), 0);
    assert_int_equal(pool_stats(wp).queued, 1);

    int64_t begun = h.item.begun_us;
    assert_int_equal(workpool_hand(wp, &h.item), 0);
    WAIT_UNTIL(&c, h.started);
    assert_false(pthread_equal(CTX_READ(&c, h.ran_on), pthread_self()));
    assert_int_equal(CTX_READ(&c, h.run_begun_us), begun); /* its hold began at begin */
    assert_int_equal(CTX_READ(&c, c.running), 2);
    struct workpool_stats st = pool_stats(wp);
    assert_int_equal(st.busy, 2);
    assert_int_equal(st.queued, 1);
    assert_int_equal(CTX_READ(&c, q.runs), 0);

    /* h ends: its slot goes to q while x still runs. */
    release(&c, &h);
    WAIT_UNTIL(&c, q.runs == 1);
    assert_int_equal(CTX_READ(&c, x.runs), 0);
    release(&c, &x);
    WAIT_UNTIL(&c, c.completed == 3);
    wait_pool_completed(wp, 3);
    assert_int_equal(CTX_READ(&c, c.max_running), 2);
    assert_int_equal(h.runs, 1);
    stop_and_destroy(&c, wp);
}

/* workpool_end with take_next: the queued item the freed slot lets in is popped for the caller
 * (begun now, counted in flight), and no worker runs it. */
static void end_with_take_next_returns_the_queued_item_begun_and_in_flight(void **state)
{
    (void)state;
    enum { A, B };
    struct ctx c;
    ctx_init(&c);
    struct workpool *wp = pool(&c, 1, 10, 10, 1);
    struct job a = {0}, q = {0};
    assert_int_equal(begin(wp, &a, A, false), 0);
    assert_int_equal(submit(wp, &q, B, false), 0);
    assert_int_equal(pool_stats(wp).queued, 1);
    int64_t t_end = mclock_now_us();
    struct job *next = end(wp, &a, true);
    assert_ptr_equal(next, &q);
    assert_true(q.item.begun_us >= t_end && q.item.begun_us <= mclock_now_us());
    assert_true(q.item.enqueued_us <= t_end);
    struct workpool_stats st = pool_stats(wp);
    assert_int_equal(st.busy, 1);
    assert_int_equal(st.queued, 0);
    assert_int_equal(st.idle, 0);
    assert_int_equal(st.completed, 1);
    assert_null(end(wp, next, true));
    st = pool_stats(wp);
    assert_int_equal(st.busy, 0);
    assert_int_equal(st.completed, 2);
    workpool_stop(wp);
    assert_int_equal(q.runs + q.drops, 0);
    workpool_destroy(wp);
    ctx_destroy(&c);
}

/* Without take_next, the freed slot goes to a worker, which pops the queued item itself. */
static void end_without_take_next_lets_a_worker_run_the_queued_item(void **state)
{
    (void)state;
    enum { A, B };
    struct ctx c;
    ctx_init(&c);
    struct workpool *wp = pool(&c, 1, 10, 10, 1);
    struct job a = {0}, q = {0};
    assert_int_equal(begin(wp, &a, A, false), 0);
    assert_int_equal(submit(wp, &q, B, false), 0);
    assert_int_equal(pool_stats(wp).queued, 1);
    int64_t t_end = mclock_now_us();
    assert_null(end(wp, &a, false));
    WAIT_UNTIL(&c, q.runs == 1);
    assert_false(pthread_equal(CTX_READ(&c, q.ran_on), pthread_self()));
    assert_true(CTX_READ(&c, q.run_begun_us) >= t_end); /* popped after the slot was freed */
    wait_pool_completed(wp, 2);
    struct workpool_stats st = pool_stats(wp);
    assert_int_equal(st.busy, 0);
    assert_int_equal(st.queued, 0);
    assert_int_equal(st.submitted, 2);
    stop_and_destroy(&c, wp);
}

/* Once stopping, begin and hand are refused (-ESHUTDOWN); an item handed before still runs
 * and is waited for; an item begun before still ends (it holds its slot until then). */
static void after_stop_begin_and_hand_are_refused_and_begun_items_still_end(void **state)
{
    (void)state;
    enum { A, B, C, D };
    struct ctx c;
    ctx_init(&c);
    struct workpool *wp = pool(&c, 2, 10, 10, 2);
    struct job a = {0}, h = {0}, q = {0}, x = {0}, late = {0};
    assert_int_equal(begin(wp, &a, A, false), 0);
    assert_int_equal(begin(wp, &h, B, true), 0);
    assert_int_equal(workpool_hand(wp, &h.item), 0);
    WAIT_UNTIL(&c, h.started);
    assert_int_equal(submit(wp, &q, C, false), 0); /* no slot: it waits */

    pthread_t stopper;
    assert_int_equal(pthread_create(&stopper, NULL, stopper_main, &c), 0);
    WAIT_UNTIL(&c, c.shutdown == 1); /* the stop dropped q: the pool is stopping */
    assert_int_equal(begin(wp, &x, D, false), -ESHUTDOWN);
    assert_int_equal(workpool_hand(wp, &a.item), -ESHUTDOWN);
    assert_int_equal(submit(wp, &late, D, false), -ESHUTDOWN);
    assert_false(CTX_READ(&c, c.stop_returned)); /* h is still held on its worker */
    release(&c, &h);
    pthread_join(stopper, NULL);
    assert_int_equal(h.runs, 1);
    assert_false(h.saw_stop_returned);
    assert_int_equal(q.drops, 1);
    assert_int_equal(q.why, WORKPOOL_SHUTDOWN);

    struct workpool_stats st = pool_stats(wp);
    assert_int_equal(st.busy, 1); /* a, begun here */
    assert_null(end(wp, &a, true));
    st = pool_stats(wp);
    assert_int_equal(st.busy, 0);
    assert_int_equal(st.completed, 2);
    assert_int_equal(st.submitted, 3);
    assert_int_equal(a.runs + x.runs + x.drops + late.runs + late.drops, 0);
    workpool_destroy(wp);
    ctx_destroy(&c);
}

/*
 * Every slot is held by a begun item (a request running on its event thread) and the worker is
 * parked with nothing it may run: a pool without a queue must refuse a newcomer's item (-EAGAIN),
 * as it does when its workers are busy. It queues it instead, past queue_max 0, to wait for the
 * slot: workpool_submit passes the parked workers as fairq_push's slack ("will take an item at
 * once"), and fairq_push checks the share rule, which sees no free slot, only for a tenant it
 * already knows.
 */
static void
a_pool_without_a_queue_refuses_a_newcomer_while_begun_items_hold_every_slot(void **state)
{
    (void)state;
    enum { A, B };
    struct ctx c;
    ctx_init(&c);
    struct workpool *wp = pool(&c, 1, 1, 1, 1);
    park_every_worker(&c, wp, 1);
    struct workpool_limits none = limits(1, 0, 0, 1);
    assert_int_equal(workpool_set_limits(wp, &none), 0);
    struct job a = {0}, q = {0};
    assert_int_equal(begin(wp, &a, A, false), 0);
    int rc = submit(wp, &q, B, false);
    struct workpool_stats st = pool_stats(wp);
    /* Undo before judging, so that a failure leaves nothing running. */
    assert_null(end(wp, &a, false));
    if (rc == 0)
        WAIT_UNTIL(&c, q.runs == 1);
    assert_int_equal(st.queued, 0);
    assert_int_equal(rc, -EAGAIN);
    stop_and_destroy(&c, wp);
}

/* ---- everything at once ------------------------------------------------------------------ */

struct submitter {
    pthread_t tid;
    struct workpool *wp;
    struct job *jobs; /* this thread's slice */
    int n;
    atomic_int *done;
    int accepted, rejected; /* read after join */
};

static void *submitter_main(void *arg)
{
    struct submitter *s = arg;
    for (int i = 0; i < s->n; i++) {
        s->jobs[i].spin_us = 50;
        /* A refused item is offered again a few times, as a client would retry. */
        int rc = -EAGAIN;
        for (int attempt = 0; attempt < 20 && (rc == -EAGAIN || rc == -EDQUOT); attempt++) {
            rc = submit(s->wp, &s->jobs[i], i % NTENANTS, false);
            if (rc)
                sched_yield();
        }
        if (rc == 0)
            s->accepted++;
        else if (rc == -EAGAIN || rc == -EDQUOT)
            s->rejected++;
        else
            fail_msg("submit: %d", rc);
    }
    atomic_fetch_add(s->done, 1);
    return NULL;
}

static void every_item_is_accounted_for_under_resizes_and_expiry(void **state)
{
    (void)state;
    enum { SUBMITTERS = 4, PER = 2000 };
    struct ctx c;
    ctx_init(&c);
    struct workpool *wp = pool(&c, 2, 256, 64, 2);
    struct job *jobs = calloc(SUBMITTERS * PER, sizeof(*jobs));
    assert_non_null(jobs);
    atomic_int done = 0;
    struct submitter sub[SUBMITTERS];
    for (int i = 0; i < SUBMITTERS; i++) {
        sub[i] = (struct submitter){.wp = wp, .jobs = jobs + i * PER, .n = PER, .done = &done};
        assert_int_equal(pthread_create(&sub[i].tid, NULL, submitter_main, &sub[i]), 0);
    }
    /* Meanwhile: resize the pool and expire whatever waited more than 1 ms, over and over. */
    const size_t sizes[] = {1, 3, 8, 2, 5, 1, 4};
    for (unsigned k = 0; atomic_load(&done) < SUBMITTERS; k++) {
        struct workpool_limits lim = limits(sizes[k % 7], 256, 64, 1 + k % 3);
        assert_int_equal(workpool_set_limits(wp, &lim), 0);
        workpool_expire(wp, mclock_now_us() - 1000, mclock_now_us());
        sched_yield();
    }
    int accepted = 0, rejected = 0;
    for (int i = 0; i < SUBMITTERS; i++) {
        pthread_join(sub[i].tid, NULL);
        accepted += sub[i].accepted;
        rejected += sub[i].rejected;
    }
    assert_int_equal(accepted + rejected, SUBMITTERS * PER);
    WAIT_UNTIL(&c, c.completed + c.expired == accepted);
    workpool_stop(wp);

    /* Each accepted item ran once or was expired once, never both; refused ones never. */
    int ran = 0, dropped = 0;
    for (int i = 0; i < SUBMITTERS * PER; i++) {
        assert_true(jobs[i].runs + jobs[i].drops <= 1);
        ran += jobs[i].runs;
        dropped += jobs[i].drops;
        if (jobs[i].drops)
            assert_int_equal(jobs[i].why, WORKPOOL_EXPIRED);
    }
    assert_int_equal(ran + dropped, accepted);
    assert_int_equal(c.shutdown, 0);
    print_message("# %d accepted (%d ran, %d expired), %d refused\n", accepted, ran, dropped,
                  rejected);
    struct workpool_stats st;
    workpool_stats(wp, &st);
    assert_int_equal(st.submitted, accepted);
    assert_int_equal(st.completed, ran);
    assert_int_equal(st.expired, dropped);
    assert_true(st.rejected_full + st.rejected_tenant >= (uint64_t)rejected); /* with retries */
    assert_int_equal(st.busy + st.queued, 0);
    workpool_destroy(wp);
    ctx_destroy(&c);
    free(jobs);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(every_item_runs_exactly_once_on_a_worker),
        cmocka_unit_test(running_items_never_exceed_threads),
        cmocka_unit_test(tenant_share_is_capped_while_others_are_active),
        cmocka_unit_test(a_newcomer_runs_while_a_busy_tenant_holds_every_other_worker),
        cmocka_unit_test(a_tenant_with_brief_items_takes_one_worker_past_its_share),
        cmocka_unit_test(submit_refuses_full_queue_tenant_share_and_shutdown),
        cmocka_unit_test(a_pool_without_a_queue_runs_what_finds_a_free_worker),
        cmocka_unit_test(expire_drops_only_items_queued_before_cutoff),
        cmocka_unit_test(set_limits_adds_threads_live),
        cmocka_unit_test(set_limits_retires_threads_live),
        cmocka_unit_test(regrow_while_retiring_thread_is_busy),
        cmocka_unit_test(bad_thread_counts_are_refused),
        cmocka_unit_test(top_tenants_lists_busiest_first),
        cmocka_unit_test(a_retiring_worker_hands_on_the_item_its_own_held_back),
        cmocka_unit_test(a_begun_item_holds_a_slot_until_it_is_ended),
        cmocka_unit_test(begin_refuses_a_tenant_at_its_share_while_others_are_active),
        cmocka_unit_test(begun_items_count_against_the_thread_limit),
        cmocka_unit_test(a_handed_item_runs_on_a_worker_with_the_slot_it_holds),
        cmocka_unit_test(end_with_take_next_returns_the_queued_item_begun_and_in_flight),
        cmocka_unit_test(end_without_take_next_lets_a_worker_run_the_queued_item),
        cmocka_unit_test(after_stop_begin_and_hand_are_refused_and_begun_items_still_end),
        cmocka_unit_test(
            a_pool_without_a_queue_refuses_a_newcomer_while_begun_items_hold_every_slot),
        cmocka_unit_test(every_item_is_accounted_for_under_resizes_and_expiry),
    };
    return cmocka_run_group_tests_name("workpool", tests, NULL, NULL);
}
