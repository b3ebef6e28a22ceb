/*
 * test_dbwaitq: a pool's waiter queue (dbwaitq.h) alone, no database: the FIFO keeps its order
 * when a waiter leaves from the middle, an asynchronous waiter's answer goes on the answered list
 * (taken once), a blocking one is woken on its own condition variable, and failing every waiter
 * answers each with the reason. The tests hold a mutex as the pool would.
 */
#include "dbwaitq.h"
#include "mclock.h"

#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#define WAIT_US (20 * 1000000ll) /* bound for the woken thread's wait */

static void on_done(struct dbpool_wait *w, struct dbconn *c, int rc, const char *err)
{
    (void)w, (void)c, (void)rc, (void)err;
}

static void a_waiter_leaving_from_the_middle_leaves_the_rest_in_order(void **state)
{
    (void)state;
    struct dbwaitq q = {0};
    struct dbpool_wait a = {0}, b = {0}, c = {0};
    dbwaitq_push(&q, &a);
    dbwaitq_push(&q, &b);
    dbwaitq_push(&q, &c);
    assert_int_equal(q.n, 3);
    dbwaitq_unlink(&q, &b);
    assert_int_equal(q.n, 2);
    assert_ptr_equal(q.head, &a);
    assert_ptr_equal(a.next, &c);
    assert_ptr_equal(c.prev, &a);
    assert_ptr_equal(q.tail, &c);
    assert_null(b.next);
    assert_null(b.prev);
    dbwaitq_unlink(&q, &a);
    dbwaitq_unlink(&q, &c);
    assert_int_equal(q.n, 0);
    assert_null(q.head);
    assert_null(q.tail);
}

static void an_asynchronous_waiter_answered_is_on_the_answered_list_once(void **state)
{
    (void)state;
    struct dbwaitq q = {0};
    struct dbpool_wait a = {.done = on_done}, b = {.done = on_done};
    struct dbconn conn = {0};
    dbwaitq_push(&q, &a);
    dbwaitq_push(&q, &b);
    b.granted = &conn;
    dbwaitq_wake(&q, &b);
    assert_true(b.answered);
    assert_false(a.answered);
    assert_int_equal(q.n, 1);
    assert_ptr_equal(q.head, &a);
    assert_ptr_equal(q.tail, &a);
    assert_ptr_equal(dbwaitq_take_answered(&q), &b);
    assert_null(b.next);
    assert_null(dbwaitq_take_answered(&q));
}

struct sleeper {
    pthread_mutex_t *mutex;
    struct dbwaitq_sync *sw;
    bool woken; /* answered seen before the bound */
};

/* As dbpool_acquire sleeps: under the mutex, on its own condition variable, until answered. */
static void *sleeper_main(void *arg)
{
    struct sleeper *s = arg;
    struct timespec ts = mclock_timespec(mclock_now_us() + WAIT_US);
    pthread_mutex_lock(s->mutex);
    int rc = 0;
    while (!s->sw->w.answered && rc != ETIMEDOUT)
        rc = pthread_cond_timedwait(&s->sw->cond, s->mutex, &ts);
    s->woken = s->sw->w.answered;
    pthread_mutex_unlock(s->mutex);
    return NULL;
}

static void a_blocking_waiter_is_woken_on_its_own_condition_variable(void **state)
{
    (void)state;
    pthread_mutex_t mutex = PTHREAD_MUTEX_INITIALIZER;
    struct dbwaitq q = {0};
    struct dbwaitq_sync sw = {0};
    struct dbconn conn = {0};
    mclock_cond_init(&sw.cond);
    dbwaitq_push(&q, &sw.w);
    struct sleeper s = {.mutex = &mutex, .sw = &sw};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, sleeper_main, &s), 0);
    pthread_mutex_lock(&mutex);
    sw.w.granted = &conn;
    dbwaitq_wake(&q, &sw.w);
    pthread_mutex_unlock(&mutex);
    pthread_join(t, NULL);
    assert_true(s.woken);
    assert_int_equal(q.n, 0);
    assert_null(dbwaitq_take_answered(&q)); /* a blocking answer runs no callback */
    pthread_cond_destroy(&sw.cond);
    pthread_mutex_destroy(&mutex);
}

static void failing_every_waiter_answers_each_with_the_reason(void **state)
{
    (void)state;
    struct dbwaitq q = {0};
    struct dbwaitq_sync sw = {0};
    struct dbpool_wait a = {.done = on_done}, b = {.done = on_done};
    mclock_cond_init(&sw.cond);
    dbwaitq_push(&q, &a);
    dbwaitq_push(&q, &sw.w);
    dbwaitq_push(&q, &b);
    dbwaitq_fail_all(&q, -ECONNRESET, "connection refused");
    assert_int_equal(q.n, 0);
    assert_null(q.head);
    assert_null(q.tail);
    struct dbpool_wait *all[] = {&a, &sw.w, &b};
    for (size_t i = 0; i < 3; i++) {
        assert_true(all[i]->answered);
        assert_null(all[i]->granted);
        assert_int_equal(all[i]->rc, -ECONNRESET);
        assert_string_equal(all[i]->err, "connection refused");
    }
    /* The asynchronous two, to run their callbacks; the blocking one was signalled. */
    size_t n = 0;
    for (struct dbpool_wait *w = dbwaitq_take_answered(&q); w; w = w->next, n++)
        assert_true(w == &a || w == &b);
    assert_int_equal(n, 2);
    pthread_cond_destroy(&sw.cond);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(a_waiter_leaving_from_the_middle_leaves_the_rest_in_order),
        cmocka_unit_test(an_asynchronous_waiter_answered_is_on_the_answered_list_once),
        cmocka_unit_test(a_blocking_waiter_is_woken_on_its_own_condition_variable),
        cmocka_unit_test(failing_every_waiter_answers_each_with_the_reason),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
