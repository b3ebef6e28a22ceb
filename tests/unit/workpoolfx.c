/*
 * workpoolfx: the worker pool tests' fixture (see workpoolfx.h).
 */
#include "workpoolfx.h"

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

const char *const wpfx_tenant_names[WPFX_NTENANTS] = {"A", "B", "C", "D", "E", "F", "G", "H"};

static struct wpfx_job *wpfx_job_of(struct fairq_item *it)
{
    return container_of(it, struct wpfx_job, item);
}

void wpfx_ctx_init(struct wpfx_ctx *c)
{
    memset(c, 0, sizeof(*c));
    pthread_mutex_init(&c->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&c->cv, &ca);
    pthread_condattr_destroy(&ca);
}

void wpfx_ctx_destroy(struct wpfx_ctx *c)
{
    pthread_cond_destroy(&c->cv);
    pthread_mutex_destroy(&c->mu);
}

/* Worker thread. */
void wpfx_job_run(struct fairq_item *it, void *arg)
{
    struct wpfx_ctx *c = arg;
    struct wpfx_job *j = wpfx_job_of(it);
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
void wpfx_job_drop(struct fairq_item *it, enum workpool_drop_reason why, void *arg)
{
    struct wpfx_ctx *c = arg;
    struct wpfx_job *j = wpfx_job_of(it);
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

void wpfx_release(struct wpfx_ctx *c, struct wpfx_job *j)
{
    pthread_mutex_lock(&c->mu);
    j->released = true;
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
}

void wpfx_release_all(struct wpfx_ctx *c)
{
    pthread_mutex_lock(&c->mu);
    c->release_all = true;
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
}

/* Limits with no reserve and a 1 s linger: the shape of most tests. */
struct workpool_limits wpfx_limits(size_t threads, size_t queue_max, size_t tenant_queue_max,
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
struct workpool *wpfx_pool_brief(struct wpfx_ctx *c, size_t threads, size_t queue_max,
                                 size_t tenant_queue_max, size_t share, size_t reserve,
                                 int64_t linger_us, int64_t brief_us)
{
    struct workpool_limits lim = {.threads = threads,
                                  .queue_max = queue_max,
                                  .tenant_queue_max = tenant_queue_max,
                                  .share = {.size = threads, .cap = share, .reserve = reserve},
                                  .linger_us = linger_us,
                                  .brief_us = brief_us};
    struct workpool_ops ops = {.run = wpfx_job_run, .drop = wpfx_job_drop, .ctx = c};
    struct workpool *wp = NULL;
    assert_int_equal(workpool_create("test", &lim, &ops, &wp), 0);
    assert_non_null(wp);
    c->wp = wp;
    return wp;
}

struct workpool *wpfx_pool_ex(struct wpfx_ctx *c, size_t threads, size_t queue_max,
                              size_t tenant_queue_max, size_t share, size_t reserve,
                              int64_t linger_us)
{
    return wpfx_pool_brief(c, threads, queue_max, tenant_queue_max, share, reserve, linger_us, 0);
}

struct workpool *wpfx_pool(struct wpfx_ctx *c, size_t threads, size_t queue_max,
                           size_t tenant_queue_max, size_t share)
{
    return wpfx_pool_ex(c, threads, queue_max, tenant_queue_max, share, 0, 1000000);
}

int wpfx_submit(struct workpool *wp, struct wpfx_job *j, int tix, bool hold)
{
    j->tix = tix;
    j->hold = hold;
    return workpool_submit(wp, wpfx_tenant_names[tix], &j->item);
}

/* The pool counts an item completed after run() returned; wait for its counter (bounded). */
void wpfx_wait_pool_completed(struct workpool *wp, uint64_t n)
{
    int64_t end = mclock_now_us() + WPFX_WAIT_S * 1000000ll;
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
void wpfx_wait_pool_idle(struct workpool *wp, size_t n)
{
    int64_t end = mclock_now_us() + WPFX_WAIT_S * 1000000ll;
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
void wpfx_park_every_worker(struct wpfx_ctx *c, struct workpool *wp, size_t threads)
{
    enum { Z = WPFX_NTENANTS - 1 };
    struct wpfx_job *warm = calloc(threads, sizeof(*warm));
    assert_non_null(warm);
    struct workpool_stats st;
    workpool_stats(wp, &st);
    for (size_t i = 0; i < threads; i++)
        assert_int_equal(wpfx_submit(wp, &warm[i], Z, true), 0);
    WPFX_WAIT_UNTIL(c, c->t_running[Z] == (int)threads);
    for (size_t i = 0; i < threads; i++)
        wpfx_release(c, &warm[i]);
    wpfx_wait_pool_completed(wp, st.completed + threads);
    workpool_stats(wp, &st); /* the counter is read without the mutex: take it once more */
    free(warm);
}

void *wpfx_stopper_main(void *arg)
{
    struct wpfx_ctx *c = arg;
    workpool_stop(c->wp);
    pthread_mutex_lock(&c->mu);
    c->stop_returned = true;
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
    return NULL;
}

void wpfx_stop_and_destroy(struct wpfx_ctx *c, struct workpool *wp)
{
    workpool_stop(wp);
    workpool_destroy(wp);
    wpfx_ctx_destroy(c);
}

/* End j, begun here or returned by workpool_end; the next item to start here, if taken. */
struct wpfx_job *wpfx_end(struct workpool *wp, struct wpfx_job *j, bool take_next)
{
    struct fairq_item *next = workpool_end(wp, j->item.tenant, j->item.begun_us, take_next);
    return next ? wpfx_job_of(next) : NULL;
}
