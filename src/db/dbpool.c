/*
 * dbpool: a bounded libpq pool with FIFO hand-off and per-tenant caps (see dbpool.h).
 *
 * A connection is in exactly one place: on the idle list, in busy[] (held by a worker, with
 * its owner), or being opened by a connector thread (nopeners). `open` counts all three and
 * never exceeds max. dbpool_may_take applies share.h's rule with the owner's busy connections
 * (a connection being opened is nobody's yet: it goes to the first waiter allowed to take it);
 * dbpool_dispatch is the one routine that gives idle connections to waiters and starts
 * connects for them, and every event that can unblock a waiter calls it.
 *
 * Connects run on short-lived connector threads, never on the requesting worker: a worker waits
 * for whichever comes first, a connection released by another request or the one opened for it.
 * Under load a connect can take longer than a request's acquire deadline (a backend start-up
 * competes with the load for CPU); a worker blocked in its own connect failed then (pool_timeout,
 * or a breaker failure when the connect itself timed out) while connections cycled around it.
 * At most DBPOOL_MAX_OPENING connects run at once; a connect gets at least connect_timeout_us;
 * an opened connection goes to the first waiter allowed to take it, or to the idle list.
 *
 * A database that cannot be reached must still fail requests (and open the breaker), as when
 * each worker connected for itself. So: a waiter whose deadline passes while nothing is busy and
 * a connect is running waits for that connect (nothing else could serve it; its wait is not
 * the pool being full); a connect that fails when nothing is busy, idle or connecting fails
 * every waiter with its error, and for DBPOOL_CONNECT_BACKOFF_US after it an acquire that
 * finds nothing to take fails at once with that error and no connect is started (so a refusing
 * database is not sent a connect per request). While connections are busy, a failed connect
 * fails nobody: the waiters wait on for released ones, and the next connect waits the backoff.
 *
 * The pieces this policy works on are modules of their own, each guarded by the pool's mutex:
 * the waiters (dbwaitq), the idle list and its reaper (dbidle), and the threads (dbopen), which
 * call back dbpool_connected and dbpool_cancelled with their outcome.
 */
#include "dbpool.h"
#include "dbidle.h"
#include "dbopen.h"
#include "dbwaitq.h"
#include "mclock.h"
#include "xalloc.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>

#define DBPOOL_CONNECT_BACKOFF_US 100000 /* after a failed connect, before the next */
#define DBPOOL_CONNECT_GRACE_US   50000  /* a connect's failure reaches its waiter */

struct dbpool {
    struct dbpool_opts o;
    char *conninfo, *appname; /* owned copies of o.conn's strings */

    /* _shared: the mutex guards everything below. */
    pthread_mutex_t mutex;
    struct dbidle idle;   /* idle connections (dbidle.h) */
    struct dbconn **busy; /* held connections (owner set), nbusy of them; owned array */
    size_t nbusy, busy_cap;
    size_t nopeners;         /* slots being connected by connector threads */
    int64_t connects_end_us; /* the latest deadline of the connects started */
    int64_t fail_us;         /* when the last connect failed, 0 after a success */
    char fail_err[256];      /* its error */
    size_t open;             /* idle + busy + opening; at most max */
    size_t max;
    struct share_policy share; /* share.size == max */
    struct dbwaitq waiters;    /* waiting acquires and answers to run (dbwaitq.h) */
    bool stopping;
    struct dbopen threads; /* connector and canceller threads (dbopen.h) */

    atomic_uint_least64_t acquired, timeouts, connects, connect_failures, closed_broken;
    atomic_uint_least64_t closed_idle;
    atomic_uint_least64_t pipelined;
    atomic_int_least64_t wait_us_total;
    atomic_int_least64_t connect_timeout_us;   /* o's, changed by reload (dbpool_set_limits) */
    atomic_int_least64_t statement_timeout_ms; /* o.conn's, likewise; older connections close */
};

/* Connections owner holds (busy). Mutex held. */
static size_t dbpool_held_locked(const struct dbpool *p, const void *owner)
{
    size_t held = 0;
    for (size_t i = 0; i < p->nbusy; i++)
        held += p->busy[i]->owner == owner;
    return held;
}

/* share.h's rule for owner, now. Mutex held. */
static bool dbpool_may_take(const struct dbpool *p, const void *owner)
{
    bool others = p->o.others_active && p->o.others_active(p->o.others_ctx);
    bool brief = p->o.brief && p->o.brief(owner);
    return share_may_take(&p->share, dbpool_held_locked(p, owner), p->open - p->idle.n, others,
                          brief);
}

static void dbpool_busy_add(struct dbpool *p, struct dbconn *c, const void *owner)
{
    if (p->nbusy == p->busy_cap) {
        p->busy_cap = p->busy_cap ? p->busy_cap * 2 : 16;
        p->busy = xrealloc(p->busy, p->busy_cap * sizeof(*p->busy));
    }
    c->owner = owner;
    p->busy[p->nbusy++] = c;
}

static void dbpool_busy_remove(struct dbpool *p, struct dbconn *c)
{
    for (size_t i = 0; i < p->nbusy; i++) {
        if (p->busy[i] == c) {
            p->busy[i] = p->busy[--p->nbusy];
            break;
        }
    }
    c->owner = NULL;
}

/* Whether c was opened with settings a reload has changed since (it is closed, not reused). */
static bool dbpool_outdated(const struct dbpool *p, const struct dbconn *c)
{
    return c->statement_timeout_ms != atomic_load(&p->statement_timeout_ms);
}

/* Pop an idle connection that is still alive and current; dead and outdated ones go on *dead
 * for closing unlocked. trust: one released recently is taken as alive (dbpool_wait). */
static struct dbconn *dbpool_pop_idle(struct dbpool *p, struct dbconn **dead, bool trust)
{
    int64_t now = trust ? mclock_now_us() : 0;
    struct dbconn *c;
    while ((c = dbidle_pop(&p->idle))) {
        bool outdated = dbpool_outdated(p, c);
        if (!outdated && ((trust && now - c->released_us < DBPOOL_TRUST_RECENT_US &&
                           PQstatus(c->pg) == CONNECTION_OK) ||
                          !dbconn_is_dead(c)))
            return c;
        p->open--;
        c->next = *dead;
        *dead = c;
        if (!outdated)
            atomic_fetch_add_explicit(&p->closed_broken, 1, memory_order_relaxed);
    }
    return NULL;
}

/* Whether a new connection may be started now: room in the pool, and fewer than
 * DBPOOL_MAX_OPENING being connected (a cold pool under load would otherwise start every connect
 * at once, each backend start-up slowing the others past their deadline). Mutex held. */
static bool dbpool_may_open(const struct dbpool *p)
{
    return p->open < p->max && p->nopeners < DBPOOL_MAX_OPENING &&
           (!p->fail_us || mclock_now_us() - p->fail_us >= DBPOOL_CONNECT_BACKOFF_US);
}

/* Nothing busy, idle or being opened: no waiter can be served but by a new connect. */
static bool dbpool_empty(const struct dbpool *p)
{
    return !p->nbusy && !p->idle.head && !p->nopeners;
}

/* Unlock, then run the callbacks of the asynchronous waits answered meanwhile (no lock held:
 * a callback may take or release a connection of this pool). */
static void dbpool_unlock(struct dbpool *p)
{
    struct dbpool_wait *list = dbwaitq_take_answered(&p->waiters);
    pthread_mutex_unlock(&p->mutex);
    while (list) {
        struct dbpool_wait *w = list;
        list = w->next;
        w->next = NULL;
        if (w->granted)
            atomic_fetch_add_explicit(&p->acquired, 1, memory_order_relaxed);
        atomic_fetch_add_explicit(&p->wait_us_total, mclock_now_us() - w->start_us,
                                  memory_order_relaxed);
        w->done(w, w->granted, w->rc, w->err);
    }
}

static void dbpool_start_connect(struct dbpool *p, int64_t deadline_us);

/* Give idle connections to eligible waiters, oldest first; eligible waiters left over beyond
 * the connects already running get a connect each while there is room. Mutex held. */
static void dbpool_dispatch(struct dbpool *p, struct dbconn **dead)
{
    size_t covered = p->nopeners; /* waiters the running connects will serve */
    struct dbpool_wait *w = p->waiters.head;
    while (w && (p->idle.head || dbpool_may_open(p) || covered)) {
        struct dbpool_wait *next = w->next;
        if (w->answered) /* answered by a failed connect started just now: the list moved on */
            break;
        if (dbpool_may_take(p, w->owner)) {
            struct dbconn *c = dbpool_pop_idle(p, dead, w->trust_recent);
            if (c) {
                dbpool_busy_add(p, c, w->owner);
                w->granted = c;
                dbwaitq_wake(&p->waiters, w);
            } else if (covered) {
                covered--;
            } else if (dbpool_may_open(p)) {
                dbpool_start_connect(p, w->deadline_us);
            }
        }
        w = next;
    }
}

static void dbpool_close_list(struct dbconn *dead)
{
    while (dead) {
        struct dbconn *next = dead->next;
        dbconn_close(dead);
        dead = next;
    }
}

/* A connect failed with err. Mutex held, its slot given back. */
static void dbpool_connect_failed(struct dbpool *p, const char *err)
{
    atomic_fetch_add_explicit(&p->connect_failures, 1, memory_order_relaxed);
    p->fail_us = mclock_now_us();
    snprintf(p->fail_err, sizeof(p->fail_err), "%s", err);
    if (dbpool_empty(p))
        dbwaitq_fail_all(&p->waiters, -ECONNRESET, err);
}

/* Connector thread (dbopen's opened), no lock held: a connect for the pool ended; c goes to the
 * first waiter allowed to take it, or to the idle list. */
static void dbpool_connected(void *ctx, struct dbconn *c, int rc, const char *err)
{
    struct dbpool *p = ctx;
    struct dbconn *dead = NULL;
    pthread_mutex_lock(&p->mutex);
    p->nopeners--;
    if (rc == 0 && !p->stopping && p->open <= p->max) {
        atomic_fetch_add_explicit(&p->connects, 1, memory_order_relaxed);
        p->fail_us = 0;
        c->released_us = c->opened_us;
        dbidle_push(&p->idle, c);
    } else {
        p->open--;
        if (rc == 0) /* stopping, or max lowered meanwhile */
            dead = c;
        else if (rc == -EPIPE) /* not the database refusing: the dispatch below tries again */
            atomic_fetch_add_explicit(&p->connect_failures, 1, memory_order_relaxed);
        else
            dbpool_connect_failed(p, err);
    }
    if (!p->stopping)
        dbpool_dispatch(p, &dead);
    dbpool_unlock(p);
    dbpool_close_list(dead);
}

/* Canceller thread (dbopen's cancelled), no lock held: c's statement is over. */
static void dbpool_cancelled(void *ctx, struct dbconn *c, bool broken)
{
    dbpool_release(ctx, c, broken);
}

/* Reserve a slot and start a connector thread for it. Mutex held; may_open. The connect gets
 * connect_timeout_us, or the waiter's time (until deadline_us) if that is longer. */
static void dbpool_start_connect(struct dbpool *p, int64_t deadline_us)
{
    struct dbconn_params prm = p->o.conn;
    prm.statement_timeout_ms = atomic_load(&p->statement_timeout_ms);
    int64_t end_us = mclock_now_us() + atomic_load(&p->connect_timeout_us);
    if (end_us < deadline_us)
        end_us = deadline_us;
    if (end_us > p->connects_end_us)
        p->connects_end_us = end_us;
    p->nopeners++;
    p->open++;
    if (dbopen_connect(&p->threads, &prm, end_us)) {
        /* No thread: the slot is given back and this is a failed connect. */
        p->nopeners--;
        p->open--;
        dbpool_connect_failed(p, "connect failed: cannot start a connector thread");
    }
}

int dbpool_create(const struct dbpool_opts *opts, struct dbpool **out)
{
    if (opts->max == 0)
        return -EINVAL;
    struct dbpool *p = xcalloc(1, sizeof(*p));
    p->o = *opts;
    p->conninfo = xstrdup(opts->conn.conninfo ? opts->conn.conninfo : "");
    p->appname = xstrdup(opts->conn.appname ? opts->conn.appname : "bulkhead");
    p->o.conn.conninfo = p->conninfo;
    p->o.conn.appname = p->appname;
    p->max = opts->max;
    p->share = opts->share;
    p->share.size = p->max;
    if (p->share.cap < 1)
        p->share.cap = p->max;
    atomic_init(&p->connect_timeout_us, p->o.connect_timeout_us);
    atomic_init(&p->statement_timeout_ms, p->o.conn.statement_timeout_ms);
    pthread_mutex_init(&p->mutex, NULL);
    dbopen_init(&p->threads, &p->mutex, p, dbpool_connected, dbpool_cancelled);
    *out = p;
    return 0;
}

/* What an acquire can do without waiting. Mutex held. 0 and *out; -ESHUTDOWN or -ECONNRESET
 * (err says why); -EINPROGRESS: w is queued (and may be answered already, by the dispatch that
 * follows). */
static int dbpool_try_locked(struct dbpool *p, struct dbpool_wait *w, struct dbconn **out,
                             struct dbconn **dead, char *err, size_t errlen)
{
    if (p->stopping) {
        snprintf(err, errlen, "shutting down");
        return -ESHUTDOWN;
    }
    /* Waiters allowed to take a connection go first; one that is not allowed (its tenant at
     * its share, or only the reserve left) is passed over, never waited behind. */
    if (p->waiters.n)
        dbpool_dispatch(p, dead);
    if (dbpool_may_take(p, w->owner)) {
        struct dbconn *c = dbpool_pop_idle(p, dead, w->trust_recent);
        if (c) {
            dbpool_busy_add(p, c, w->owner);
            *out = c;
            return 0;
        }
    }
    /* A connect failed just now and nothing could serve this request: that is its answer. */
    if (dbpool_empty(p) && p->fail_us && mclock_now_us() - p->fail_us < DBPOOL_CONNECT_BACKOFF_US) {
        snprintf(err, errlen, "%s", p->fail_err);
        return -ECONNRESET;
    }
    /* Wait for a released connection or one opened for this or an earlier waiter (the
     * dispatch starts a connect if there is room). */
    w->start_us = mclock_now_us();
    w->answered = w->extended = false;
    w->granted = NULL;
    w->rc = 0;
    w->err[0] = '\0';
    dbwaitq_push(&p->waiters, w);
    dbpool_dispatch(p, dead);
    return -EINPROGRESS;
}

/* The deadline of w passed. Mutex held. true: keep waiting until w->deadline_us, moved to
 * when the running connects end (nothing is busy, so only a connect can serve it, and its
 * outcome is the answer, not a timeout); false: w is out of the queue, timed out. */
static bool dbpool_expire_locked(struct dbpool *p, struct dbpool_wait *w)
{
    if (!w->extended && !p->nbusy && p->nopeners) {
        w->extended = true;
        w->deadline_us = p->connects_end_us + DBPOOL_CONNECT_GRACE_US;
        return true;
    }
    dbwaitq_unlink(&p->waiters, w);
    atomic_fetch_add_explicit(&p->timeouts, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&p->wait_us_total, mclock_now_us() - w->start_us,
                              memory_order_relaxed);
    return false;
}

int dbpool_acquire(struct dbpool *p, const void *owner, int64_t deadline_us, struct dbconn **out,
                   char *err, size_t errlen)
{
    struct dbconn *dead = NULL;
    struct dbwaitq_sync sw = {.w = {.owner = owner, .deadline_us = deadline_us}};
    mclock_cond_init(&sw.cond); /* the dispatch in dbpool_try_locked may signal it */
    pthread_mutex_lock(&p->mutex);
    int rc = dbpool_try_locked(p, &sw.w, out, &dead, err, errlen);
    if (rc == -EINPROGRESS) {
        while (!sw.w.answered) {
            if (p->waiters.answered) {
                /* Answers to event threads given meanwhile: run them before sleeping. */
                dbpool_unlock(p);
                pthread_mutex_lock(&p->mutex);
                continue;
            }
            struct timespec ts = mclock_timespec(sw.w.deadline_us);
            if (pthread_cond_timedwait(&sw.cond, &p->mutex, &ts) == ETIMEDOUT && !sw.w.answered &&
                !dbpool_expire_locked(p, &sw.w)) {
                snprintf(err, errlen, "no connection free within the acquire timeout");
                rc = -ETIMEDOUT;
                break;
            }
        }
        if (sw.w.answered) {
            atomic_fetch_add_explicit(&p->wait_us_total, mclock_now_us() - sw.w.start_us,
                                      memory_order_relaxed);
            rc = sw.w.granted ? 0 : sw.w.rc;
            if (rc)
                snprintf(err, errlen, "%s", sw.w.err);
            else
                *out = sw.w.granted;
        }
    }
    dbpool_unlock(p);
    pthread_cond_destroy(&sw.cond);
    dbpool_close_list(dead);
    if (rc == 0)
        atomic_fetch_add_explicit(&p->acquired, 1, memory_order_relaxed);
    return rc;
}

int dbpool_acquire_async(struct dbpool *p, struct dbpool_wait *w, struct dbconn **out, char *err,
                         size_t errlen)
{
    struct dbconn *dead = NULL;
    pthread_mutex_lock(&p->mutex);
    int rc = dbpool_try_locked(p, w, out, &dead, err, errlen);
    dbpool_unlock(p);
    dbpool_close_list(dead);
    if (rc == 0)
        atomic_fetch_add_explicit(&p->acquired, 1, memory_order_relaxed);
    return rc;
}

int dbpool_abandon(struct dbpool *p, struct dbpool_wait *w)
{
    pthread_mutex_lock(&p->mutex);
    int rc = w->answered ? -EALREADY : dbpool_expire_locked(p, w) ? -EINPROGRESS : 0;
    pthread_mutex_unlock(&p->mutex);
    return rc;
}

int dbpool_try_acquire(struct dbpool *p, const void *owner, struct dbconn **out)
{
    struct dbconn *dead = NULL, *c = NULL;
    pthread_mutex_lock(&p->mutex);
    /* Waiters go first: a connection that could be taken now would have been given to one. */
    if (!p->stopping && !p->waiters.n && dbpool_may_take(p, owner)) {
        c = dbpool_pop_idle(p, &dead, false);
        if (c)
            dbpool_busy_add(p, c, owner);
    }
    pthread_mutex_unlock(&p->mutex);
    dbpool_close_list(dead);
    if (!c)
        return -EAGAIN;
    atomic_fetch_add_explicit(&p->acquired, 1, memory_order_relaxed);
    *out = c;
    return 0;
}

void dbpool_cancel_release(struct dbpool *p, struct dbconn *c, int64_t deadline_us)
{
    pthread_mutex_lock(&p->mutex);
    /* Nobody's while it is cancelled: its tenant may be gone before the cancel ends. */
    c->owner = NULL;
    pthread_mutex_unlock(&p->mutex);
    dbopen_cancel(&p->threads, c, deadline_us); /* then dbpool_cancelled releases it */
}

void dbpool_release(struct dbpool *p, struct dbconn *c, bool broken)
{
    struct dbconn *dead = NULL;
    pthread_mutex_lock(&p->mutex);
    dbpool_busy_remove(p, c);
    if (broken || p->stopping || p->open > p->max || dbpool_outdated(p, c)) {
        p->open--;
        c->next = dead;
        dead = c;
        if (broken)
            atomic_fetch_add_explicit(&p->closed_broken, 1, memory_order_relaxed);
    } else {
        c->released_us = mclock_now_us();
        dbidle_push(&p->idle, c);
    }
    dbpool_dispatch(p, &dead);
    dbpool_unlock(p);
    dbpool_close_list(dead);
}

void dbpool_count_pipelined(struct dbpool *p)
{
    atomic_fetch_add_explicit(&p->pipelined, 1, memory_order_relaxed);
}

void dbpool_kick(struct dbpool *p)
{
    struct dbconn *dead = NULL;
    pthread_mutex_lock(&p->mutex);
    if (p->waiters.n)
        dbpool_dispatch(p, &dead);
    dbpool_unlock(p);
    dbpool_close_list(dead);
}

void dbpool_set_limits(struct dbpool *p, size_t max, struct share_policy share,
                       int64_t connect_timeout_us, int64_t statement_timeout_ms)
{
    struct dbconn *dead = NULL;
    atomic_store(&p->connect_timeout_us, connect_timeout_us);
    atomic_store(&p->statement_timeout_ms, statement_timeout_ms);
    pthread_mutex_lock(&p->mutex);
    p->max = max ? max : 1;
    p->share = share;
    p->share.size = p->max;
    if (p->share.cap < 1)
        p->share.cap = p->max;
    while (p->open > p->max && p->idle.head) {
        struct dbconn *c = dbidle_pop(&p->idle);
        p->open--;
        c->next = dead;
        dead = c;
    }
    dbpool_dispatch(p, &dead);
    dbpool_unlock(p);
    dbpool_close_list(dead);
}

void dbpool_close_idle(struct dbpool *p)
{
    pthread_mutex_lock(&p->mutex);
    size_t n;
    struct dbconn *dead = dbidle_take_all(&p->idle, &n);
    p->open -= n;
    dbpool_dispatch(p, &dead);
    dbpool_unlock(p);
    dbpool_close_list(dead);
}

size_t dbpool_reap_idle(struct dbpool *p, int64_t now_us, int64_t idle_timeout_us)
{
    struct dbidle_seen *seen = NULL;
    pthread_mutex_lock(&p->mutex);
    size_t n = p->stopping ? 0 : dbidle_snapshot(&p->idle, &seen);
    pthread_mutex_unlock(&p->mutex);
    size_t k = n ? dbidle_probe(seen, n, now_us, idle_timeout_us) : 0;
    if (k == 0) {
        free(seen);
        return 0;
    }
    struct dbconn *dead = NULL;
    size_t found_dead;
    pthread_mutex_lock(&p->mutex);
    size_t closed = dbidle_unlink_seen(&p->idle, seen, k, &dead, &found_dead);
    p->open -= closed;
    atomic_fetch_add_explicit(&p->closed_broken, found_dead, memory_order_relaxed);
    atomic_fetch_add_explicit(&p->closed_idle, closed - found_dead, memory_order_relaxed);
    dbpool_dispatch(p, &dead); /* the freed slots may let a waiter's connect start */
    dbpool_unlock(p);
    free(seen);
    dbpool_close_list(dead);
    return found_dead;
}

void dbpool_stats(struct dbpool *p, struct dbpool_stats *out)
{
    pthread_mutex_lock(&p->mutex);
    out->max = p->max;
    out->active = p->nbusy;
    out->idle = p->idle.n;
    out->pending = p->waiters.n;
    out->opening = p->nopeners;
    out->reserve = p->share.reserve;
    pthread_mutex_unlock(&p->mutex);
    out->acquired = atomic_load_explicit(&p->acquired, memory_order_relaxed);
    out->timeouts = atomic_load_explicit(&p->timeouts, memory_order_relaxed);
    out->connects = atomic_load_explicit(&p->connects, memory_order_relaxed);
    out->connect_failures = atomic_load_explicit(&p->connect_failures, memory_order_relaxed);
    out->closed_broken = atomic_load_explicit(&p->closed_broken, memory_order_relaxed);
    out->closed_idle = atomic_load_explicit(&p->closed_idle, memory_order_relaxed);
    out->pipelined = atomic_load_explicit(&p->pipelined, memory_order_relaxed);
    out->wait_us_total = atomic_load_explicit(&p->wait_us_total, memory_order_relaxed);
}

size_t dbpool_held(struct dbpool *p, const void *owner)
{
    pthread_mutex_lock(&p->mutex);
    size_t n = dbpool_held_locked(p, owner);
    pthread_mutex_unlock(&p->mutex);
    return n;
}

void dbpool_stop(struct dbpool *p)
{
    pthread_mutex_lock(&p->mutex);
    p->stopping = true;
    dbwaitq_fail_all(&p->waiters, -ESHUTDOWN, "shutting down");
    size_t n;
    struct dbconn *dead = dbidle_take_all(&p->idle, &n);
    p->open -= n;
    dbpool_unlock(p);
    dbpool_close_list(dead);
}

void dbpool_destroy(struct dbpool *p)
{
    if (!p)
        return;
    /* Connects still running end within their timeout; each closes what it opened (stopping)
     * or leaves it on the idle list. */
    pthread_mutex_lock(&p->mutex);
    p->stopping = true;
    dbopen_wait(&p->threads);
    pthread_mutex_unlock(&p->mutex);
    dbopen_destroy(&p->threads);
    dbpool_close_list(p->idle.head);
    free(p->busy);
    free(p->conninfo);
    free(p->appname);
    pthread_mutex_destroy(&p->mutex);
    free(p);
}
