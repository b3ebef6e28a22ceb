/*
 * janitor: periodic housekeeping (see janitor.h). The thread sleeps on a condition variable
 * with a deadline, so janitor_stop wakes it at once.
 */
#include "janitor.h"
#include "dbpool.h"
#include "history.h"
#include "mclock.h"
#include "ratelimit.h"
#include "server.h"
#include "workpool.h"
#include "xalloc.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>

#define JANITOR_TICK_US   50000
#define JANITOR_SAMPLE_US 1000000
#define JANITOR_SWEEP_US  5000000

struct janitor {
    struct server *srv; /* not owned */
    pthread_t thread;
    pthread_mutex_t mutex; /* guards stop */
    pthread_cond_t wake;
    bool stop;
};

static void janitor_tick(struct server *srv, int64_t now)
{
    for (size_t i = 0; i < srv->ntiers; i++) {
        struct tier_rt *t = srv->tier[i];
        const struct tier_cfg *c = tier_cfg(t);
        workpool_expire(t->pool, now - c->queue_timeout_ms * 1000, now);
        dbpool_kick(t->db);
    }
}

static void *janitor_main(void *arg)
{
    struct janitor *j = arg;
    struct server *srv = j->srv;
    int64_t next_sample = mclock_now_us() + JANITOR_SAMPLE_US;
    int64_t next_sweep = mclock_now_us() + JANITOR_SWEEP_US;
    pthread_mutex_lock(&j->mutex);
    while (!j->stop) {
        struct timespec ts = mclock_timespec(mclock_now_us() + JANITOR_TICK_US);
        pthread_cond_timedwait(&j->wake, &j->mutex, &ts);
        if (j->stop)
            break;
        pthread_mutex_unlock(&j->mutex);
        int64_t now = mclock_now_us();
        janitor_tick(srv, now);
        if (now >= next_sample) {
            history_record(srv->history);
            next_sample += JANITOR_SAMPLE_US;
            if (next_sample < now)
                next_sample = now + JANITOR_SAMPLE_US; /* fell behind: do not burst */
        }
        if (now >= next_sweep) {
            for (size_t i = 0; i < srv->ntiers; i++)
                ratelimit_sweep(srv->tier[i]->rl, now);
            next_sweep = now + JANITOR_SWEEP_US;
        }
        pthread_mutex_lock(&j->mutex);
    }
    pthread_mutex_unlock(&j->mutex);
    return NULL;
}

int janitor_start(struct server *srv, struct janitor **out)
{
    struct janitor *j = xcalloc(1, sizeof(*j));
    j->srv = srv;
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
