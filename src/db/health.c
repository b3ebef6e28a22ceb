/*
 * health: the database prober (see health.h).
 *
 * The prober keeps one connection and runs "SELECT 1" on it, bounded by the interval; on any
 * error it drops the connection and reconnects on the next round, so a restarted database is
 * noticed within one interval. health_stop writes a stop pipe that ends a probe's wait on the
 * database at once, so stopping never waits for a silent database.
 */
#include "health.h"
#include "dbconn.h"
#include "log.h"
#include "mclock.h"
#include "xalloc.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const struct dbconn_stmt health_stmts[] = {{"health_ping", "SELECT 1"}};

struct health {
    char *conninfo; /* owned */
    int64_t interval_us;
    pthread_t thread;
    struct dbconn *conn; /* prober thread only */
    int stop_pipe[2];    /* health_stop writes [1]; the probe's waits poll [0] */

    pthread_mutex_t mutex; /* guards reason, stop; with wake, ends the sleep on stop */
    pthread_cond_t wake;
    char reason[256];
    bool stop;

    atomic_bool ok;
    atomic_int_least64_t latency_us;
    atomic_uint_least64_t probes;
};

static void health_probe(struct health *h)
{
    int64_t start = mclock_now_us();
    /* A probe may take most of an interval, never less than a second. */
    int64_t budget = h->interval_us > 1000000 ? h->interval_us : 1000000;
    int64_t deadline = start + budget;
    char err[256] = "";
    int rc = 0;
    if (!h->conn) {
        struct dbconn_params p = {.conninfo = h->conninfo,
                                  .appname = "bulkhead-health",
                                  .stmts = health_stmts,
                                  .nstmts = 1,
                                  .stop_fd = &h->stop_pipe[0]};
        rc = dbconn_open(&p, deadline, &h->conn, err, sizeof(err));
    }
    if (rc == 0) {
        PGresult *res = NULL;
        rc = dbconn_exec(h->conn, "health_ping", 0, NULL, deadline, &res, err, sizeof(err));
        PQclear(res);
        if (rc) {
            dbconn_close(h->conn);
            h->conn = NULL;
        }
    }
    if (rc == -ECANCELED)
        return; /* health_stop: not a verdict on the database */
    bool was = atomic_load(&h->ok);
    bool now_ok = rc == 0;
    atomic_store(&h->latency_us, mclock_now_us() - start);
    pthread_mutex_lock(&h->mutex);
    snprintf(h->reason, sizeof(h->reason), "%s", now_ok ? "" : err);
    pthread_mutex_unlock(&h->mutex);
    atomic_store(&h->ok, now_ok);
    atomic_fetch_add(&h->probes, 1);
    if (was && !now_ok)
        log_error("db_down", "database unreachable: %s", err);
    else if (!was && now_ok && atomic_load(&h->probes) > 1)
        log_info("db_up", "database answering again");
}

static void *health_main(void *arg)
{
    struct health *h = arg;
    pthread_mutex_lock(&h->mutex);
    while (!h->stop) {
        struct timespec ts = mclock_timespec(mclock_now_us() + h->interval_us);
        pthread_cond_timedwait(&h->wake, &h->mutex, &ts);
        if (h->stop)
            break;
        pthread_mutex_unlock(&h->mutex);
        health_probe(h);
        pthread_mutex_lock(&h->mutex);
    }
    pthread_mutex_unlock(&h->mutex);
    return NULL;
}

int health_start(const char *conninfo, int64_t interval_ms, struct health **out)
{
    struct health *h = xcalloc(1, sizeof(*h));
    if (pipe2(h->stop_pipe, O_CLOEXEC)) {
        int rc = -errno;
        free(h);
        return rc;
    }
    h->conninfo = xstrdup(conninfo);
    h->interval_us = interval_ms * 1000;
    pthread_mutex_init(&h->mutex, NULL);
    mclock_cond_init(&h->wake);
    atomic_store(&h->ok, true); /* so a first failure is logged as a transition */
    health_probe(h);
    int rc = pthread_create(&h->thread, NULL, health_main, h);
    if (rc) {
        dbconn_close(h->conn);
        close(h->stop_pipe[0]);
        close(h->stop_pipe[1]);
        free(h->conninfo);
        free(h);
        return -rc;
    }
    pthread_setname_np(h->thread, "health");
    *out = h;
    return 0;
}

void health_stop(struct health *h)
{
    if (!h)
        return;
    pthread_mutex_lock(&h->mutex);
    h->stop = true;
    pthread_cond_signal(&h->wake);
    pthread_mutex_unlock(&h->mutex);
    if (write(h->stop_pipe[1], "x", 1) < 0) /* a probe under way ends its wait */
        log_warn("health", "cannot signal the prober to stop: %s", strerror(errno));
    pthread_join(h->thread, NULL);
    dbconn_close(h->conn);
    close(h->stop_pipe[0]);
    close(h->stop_pipe[1]);
    pthread_cond_destroy(&h->wake);
    pthread_mutex_destroy(&h->mutex);
    free(h->conninfo);
    free(h);
}

bool health_ok(const struct health *h)
{
    return atomic_load_explicit(&h->ok, memory_order_relaxed);
}

void health_reason(struct health *h, char *buf, size_t len)
{
    pthread_mutex_lock(&h->mutex);
    snprintf(buf, len, "%s", h->reason);
    pthread_mutex_unlock(&h->mutex);
}

int64_t health_latency_us(const struct health *h)
{
    return atomic_load_explicit(&h->latency_us, memory_order_relaxed);
}

uint64_t health_probes(const struct health *h)
{
    return atomic_load_explicit(&h->probes, memory_order_relaxed);
}
