/*
 * test_janitor: the chore runner (janitor.h) with real threads.
 *
 * Covered: every chore runs, again and again, with its context, on one thread (the janitor's,
 * so one at a time) and with a monotonic time that never goes back; janitor_stop ends the thread
 * (waking it from a long sleep) and no chore runs afterwards; too many chores are refused. Waits
 * are on a condition variable, on the real counts, bounded by WAIT_S.
 */
#include "janitor.h"
#include "mclock.h"

#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#define WAIT_S 30

struct tally {
    pthread_mutex_t mutex; /* guards everything below */
    pthread_cond_t changed;
    int runs[3];
    bool ran;          /* runner is set */
    pthread_t runner;  /* the thread of the first run */
    bool wrong_thread; /* a run on the test's thread or on another than the first */
    bool time_went_back;
    int64_t last_now;
    pthread_t main;
};

struct chore_ctx {
    struct tally *t;
    int id;
};

static void chore(void *arg, int64_t now)
{
    struct chore_ctx *c = arg;
    struct tally *t = c->t;
    pthread_mutex_lock(&t->mutex);
    if (!t->ran)
        t->runner = pthread_self();
    t->ran = true;
    t->wrong_thread |=
        pthread_equal(pthread_self(), t->main) != 0 || !pthread_equal(pthread_self(), t->runner);
    t->time_went_back |= now < t->last_now;
    t->last_now = now;
    t->runs[c->id]++;
    pthread_cond_broadcast(&t->changed);
    pthread_mutex_unlock(&t->mutex);
}

/* Wait until chore id ran at least n times. */
static bool wait_runs(struct tally *t, int id, int n)
{
    struct timespec until = mclock_timespec(mclock_now_us() + WAIT_S * 1000000ll);
    pthread_mutex_lock(&t->mutex);
    while (t->runs[id] < n)
        if (pthread_cond_timedwait(&t->changed, &t->mutex, &until) == ETIMEDOUT)
            break;
    bool ok = t->runs[id] >= n;
    pthread_mutex_unlock(&t->mutex);
    return ok;
}

static void tally_init(struct tally *t)
{
    memset(t, 0, sizeof(*t));
    pthread_mutex_init(&t->mutex, NULL);
    mclock_cond_init(&t->changed);
    t->main = pthread_self();
}

static void every_chore_runs_repeatedly_on_the_janitor_thread(void **state)
{
    (void)state;
    struct tally t;
    tally_init(&t);
    struct chore_ctx c[2] = {{&t, 0}, {&t, 1}};
    const struct janitor_chore chores[] = {{1000, chore, &c[0]}, {3000, chore, &c[1]}};
    struct janitor *j;
    assert_int_equal(janitor_start(chores, 2, &j), 0);
    assert_true(wait_runs(&t, 0, 20));
    assert_true(wait_runs(&t, 1, 5));
    janitor_stop(j);
    pthread_mutex_lock(&t.mutex);
    int after[2] = {t.runs[0], t.runs[1]};
    assert_false(t.wrong_thread);
    assert_false(t.time_went_back);
    pthread_mutex_unlock(&t.mutex);
    /* Stopped means joined: nothing runs any more. */
    assert_int_equal(t.runs[0], after[0]);
    assert_int_equal(t.runs[1], after[1]);
}

static void stop_wakes_a_janitor_sleeping_for_an_hour(void **state)
{
    (void)state;
    struct tally t;
    tally_init(&t);
    struct chore_ctx c = {&t, 2};
    const struct janitor_chore chores[] = {{3600ll * 1000000, chore, &c}};
    struct janitor *j;
    assert_int_equal(janitor_start(chores, 1, &j), 0);
    janitor_stop(j); /* returns: the sleep was cut short */
    assert_int_equal(t.runs[2], 0);
}

static void too_many_chores_are_refused(void **state)
{
    (void)state;
    struct janitor_chore chores[JANITOR_MAX_CHORES + 1];
    memset(chores, 0, sizeof(chores));
    struct janitor *j = NULL;
    assert_int_equal(janitor_start(chores, JANITOR_MAX_CHORES + 1, &j), -EINVAL);
    assert_null(j);
    janitor_stop(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(every_chore_runs_repeatedly_on_the_janitor_thread),
        cmocka_unit_test(stop_wakes_a_janitor_sleeping_for_an_hour),
        cmocka_unit_test(too_many_chores_are_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
