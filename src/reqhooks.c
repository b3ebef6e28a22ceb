/*
 * reqhooks: the server's request hooks and the shutdown drain (see reqhooks.h).
 */
#include "reqhooks.h"
#include "apierr.h"
#include "capctl.h"
#include "datareq.h"
#include "mclock.h"
#include "metrics.h"
#include "server.h"
#include "tenantstat.h"
#include "tierset.h"

#include <pthread.h>
#include <stdatomic.h>

/* ---- request hooks (HTTP threads) -------------------------------------------------------- */

void reqhooks_begin(void *ctx)
{
    struct server *srv = ctx;
    atomic_fetch_add_explicit(&srv->in_flight, 1, memory_order_relaxed);
}

/* Why r was refused, for the accounting (TENANTSTAT_NONE: it was not). */
static enum tenantstat_reason reqhooks_refusal(const struct request *r)
{
    switch (r->error ? (enum apierr)(r->error - 1) : APIERR_COUNT) {
    case APIERR_RATE_LIMITED:
        return TENANTSTAT_RATE_LIMITED;
    case APIERR_DB_TIME_EXHAUSTED:
        return TENANTSTAT_DB_TIME_EXHAUSTED;
    case APIERR_SHED:
        return TENANTSTAT_SHED;
    case APIERR_BULKHEAD_FULL:
        return TENANTSTAT_BULKHEAD_FULL;
    case APIERR_QUEUE_TIMEOUT:
        return TENANTSTAT_QUEUE_TIMEOUT;
    case APIERR_POOL_TIMEOUT:
        return TENANTSTAT_POOL_TIMEOUT;
    case APIERR_CIRCUIT_OPEN:
        return TENANTSTAT_CIRCUIT_OPEN;
    default:
        return TENANTSTAT_NONE;
    }
}

/*
 * HTTP thread, as an /api/data request of a known tenant ends: count it (tenantstat.h). Its
 * statement's database time was charged to its budget as the statement ended, before its reply
 * (datastmt_settle).
 */
static void reqhooks_tenant_done(struct server *srv, const struct request *r,
                                 const struct datareq *q, int64_t now)
{
    struct tier_rt *t = q->tier;
    int64_t db_us = r->query_us > 0 ? r->query_us : 0;
    if (!srv->tenants)
        return;
    int64_t begun = q->item.begun_us;
    struct tenantstat_sample s = {
        .db_us = db_us,
        .queue_us = r->queue_us > 0 ? r->queue_us : 0,
        .pool_us = q->sent_us > begun && begun > 0 && r->query_us >= 0 ? q->sent_us - begun : 0,
        .refused = reqhooks_refusal(r),
        .shadow = q->shadow};
    tenantstat_record(srv->tenants, t->index, q->tenant, &s, now);
}

void reqhooks_done(void *ctx, const struct request *r, int64_t total_us)
{
    struct server *srv = ctx;
    const struct datareq *q = datareq_of(r); /* NULL but for /api/data */
    struct tier_rt *tier = q ? q->tier : NULL;
    struct metrics_tier *m = tier ? &tier->m : &srv->m_untiered;
    metrics_observe(m, r->outcome, (int)r->status, total_us, r->queue_us, r->query_us);
    if (tier && q->tenant[0])
        reqhooks_tenant_done(srv, r, q, mclock_now_us());
    if (q && q->cap_entered_us) {
        int64_t now = mclock_now_us();
        capctl_leave(srv->capacity, tier->index, q->cap_entered_us, now);
        if (r->outcome == OUTCOME_OK) /* its latency, not the time it waited for its turn */
            capctl_observe(srv->capacity, tier->index, total_us - q->held_us, now);
    }
}

/* The last one out wakes a shutdown waiting for it. */
void reqhooks_freed(void *ctx)
{
    struct server *srv = ctx;
    int left = atomic_fetch_sub_explicit(&srv->in_flight, 1, memory_order_acq_rel) - 1;
    if (left == 0 && atomic_load_explicit(&srv->draining, memory_order_acquire)) {
        pthread_mutex_lock(&srv->drain_mutex);
        pthread_cond_broadcast(&srv->drained);
        pthread_mutex_unlock(&srv->drain_mutex);
    }
}

/* Wait until no request is in flight or the deadline passes. Returns requests left. */
int reqhooks_drain(struct server *srv, int64_t deadline_us)
{
    pthread_mutex_lock(&srv->drain_mutex);
    int left;
    struct timespec ts = mclock_timespec(deadline_us);
    while ((left = atomic_load(&srv->in_flight)) > 0 && mclock_now_us() < deadline_us)
        pthread_cond_timedwait(&srv->drained, &srv->drain_mutex, &ts);
    pthread_mutex_unlock(&srv->drain_mutex);
    return left;
}
