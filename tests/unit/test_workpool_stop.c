/*
 * test_workpool_stop: a pool resized and stopped from two threads at once. The janitor applies
 * a fleet lease (workpool_set_limits, which joins retired threads with the pool's mutex
 * released) while the main thread stops the server (workpool_stop, which joins every thread);
 * before the two were serialised, ThreadSanitizer reported the race on a thread slot in CI and
 * a retired thread could be joined twice. Every round must end with the pool stopped, nothing
 * running, and (under ThreadSanitizer, in make test's tsan pass) no report.
 */
#include "workpool.h"

#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <cmocka.h>

#define POOL_THREADS 64
#define ROUNDS       20

static void run_nothing(struct fairq_item *item, void *ctx)
{
    (void)item;
    (void)ctx;
}

static void drop_nothing(struct fairq_item *item, enum workpool_drop_reason why, void *ctx)
{
    (void)item;
    (void)why;
    (void)ctx;
}

static struct workpool_limits limits(size_t threads)
{
    return (struct workpool_limits){.threads = threads,
                                    .queue_max = 4,
                                    .tenant_queue_max = 4,
                                    .share = {.size = threads, .cap = threads},
                                    .linger_us = 1000000};
}

struct resizer {
    struct workpool *wp;
    int rc;
};

/* The janitor's part: grow the pool back, joining the retired threads. */
static void *resizer_main(void *arg)
{
    struct resizer *r = arg;
    struct workpool_limits l = limits(POOL_THREADS);
    r->rc = workpool_set_limits(r->wp, &l);
    return NULL;
}

/* Until the pool runs exactly (or, more: at least) want threads; bounded: 10 s. */
static bool running(struct workpool *wp, size_t want, bool more)
{
    for (int i = 0; i < 100000; i++) {
        struct workpool_stats st;
        workpool_stats(wp, &st);
        if (more ? st.running >= want : st.running == want)
            return true;
        nanosleep(&(struct timespec){0, 100000}, NULL);
    }
    return false;
}

static void a_resize_and_a_stop_at_once_end_with_every_thread_joined_once(void **state)
{
    (void)state;
    const struct workpool_ops ops = {.run = run_nothing, .drop = drop_nothing};
    for (int round = 0; round < ROUNDS; round++) {
        struct workpool_limits l = limits(POOL_THREADS);
        struct workpool *wp = NULL;
        assert_int_equal(workpool_create("stop", &l, &ops, &wp), 0);
        l = limits(2);
        assert_int_equal(workpool_set_limits(wp, &l), 0);
        assert_true(running(wp, 2, false));
        /* The stop comes once the resize has started its first new thread: in the middle of
         * its joins of the retired ones (before the fix, with the pool's mutex released). */
        struct resizer r = {.wp = wp};
        pthread_t t;
        assert_int_equal(pthread_create(&t, NULL, resizer_main, &r), 0);
        assert_true(running(wp, 3, true));
        workpool_stop(wp);
        pthread_join(t, NULL);
        /* Grown before the stop, or refused by it: either way nothing runs afterwards. */
        workpool_stop(wp);
        struct workpool_stats st;
        workpool_stats(wp, &st);
        assert_int_equal(st.running, 0);
        workpool_destroy(wp);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(a_resize_and_a_stop_at_once_end_with_every_thread_joined_once),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
