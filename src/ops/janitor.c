/*
 * janitor: runs the chores of janitor.h. The thread sleeps on a condition variable until the
 * next chore is due, so janitor_stop wakes it at once.
 *
 * DESIGN: one thread runs every chore, one at a time, with no lock held. The mutex guards only
 * `stop`; the chores and their due times are the janitor thread's alone.
 */
#include "janitor.h"
#include "mclock.h"
#include "xalloc.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>

struct janitor {
    struct janitor_chore chores[JANITOR_MAX_CHORES]; /* janitor thread only after start */
    int64_t due_us[JANITOR_MAX_CHORES];              /* janitor thread only */
    size_t n;
    pthread_t thread;

    /* _shared: mutex guards stop; wake ends the sleep when stop is set. */
    pthread_mutex_t mutex;
    pthread_cond_t wake;
    bool stop;
};

/* Run every chore that is due; returns when the next one is. */
static int64_t janitor_run_due(struct janitor *j, int64_t now)
{
    int64_t next = now + 1000000; /* with no chore at all, look again in a second */
    for (size_t i = 0; i < j->n; i++) {
        const struct janitor_chore *c = &j->chores[i];
        if (now >= j->due_us[i]) {
            c->run(c->ctx, now);
            j->due_us[i] += c->period_us;
            if (j->due_us[i] < now)
                j->due_us[i] = now + c->period_us; /* fell behind: do not burst */
        }
        if (j->due_us[i] < next)
            next = j->due_us[i];
    }
    return next;
}

static void *janitor_main(void *arg)
{
    struct janitor *j = arg;
    int64_t now = mclock_now_us();
    for (size_t i = 0; i < j->n; i++)
        j->due_us[i] = now + j->chores[i].period_us;
    int64_t next = janitor_run_due(j, now);
    pthread_mutex_lock(&j->mutex);
    while (!j->stop) {
        struct timespec ts = mclock_timespec(next);
        pthread_cond_timedwait(&j->wake, &j->mutex, &ts);
        if (j->stop)
            break;
        pthread_mutex_unlock(&j->mutex);
        next = janitor_run_due(j, mclock_now_us());
        pthread_mutex_lock(&j->mutex);
    }
    pthread_mutex_unlock(&j->mutex);
    return NULL;
}

int janitor_start(const struct janitor_chore *chores, size_t n, struct janitor **out)
{
    if (n > JANITOR_MAX_CHORES)
        return -EINVAL;
    struct janitor *j = xcalloc(1, sizeof(*j));
    for (size_t i = 0; i < n; i++)
        j->chores[i] = chores[i];
    j->n = n;
    pthread_mutex_init(&j->mutex, NULL);
    mclock_cond_init(&j->wake);
    int rc = pthread_create(&j->thread, NULL, janitor_main, j);
    if (rc) {
        pthread_cond_destroy(&j->wake);
        pthread_mutex_destroy(&j->mutex);
        free(j);
        return -rc;
    }
    pthread_setname_np(j->thread, "janitor");
    *out = j;
    return 0;
}

void janitor_stop(struct janitor *j)
{
    if (!j)
        return;
    pthread_mutex_lock(&j->mutex);
    j->stop = true;
    pthread_cond_signal(&j->wake);
    pthread_mutex_unlock(&j->mutex);
    pthread_join(j->thread, NULL);
    pthread_cond_destroy(&j->wake);
    pthread_mutex_destroy(&j->mutex);
    free(j);
}
