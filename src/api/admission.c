/*
 * admission: whether an /api/data request may go to the database now (see admission.h).
 *
 * Order of checks, cheapest and least committal first: [0] the capacity gate (503 shed) ->
 * [1] rate limit (429) -> [1b] database-time budget (429 db_time_exhausted) -> [4] breaker
 * permit (503 circuit_open) -> [2] a slot of the tier, or its queue (datapath_submit: 503
 * bulkhead_full). Nothing here blocks: the HTTP (event) thread never waits on a slot, a
 * connection or the database.
 *
 * A refusal gives back what admission took before it (the capacity gate, the breaker permit),
 * then goes out or, when the tarpit says so, is held: its request waits, suspended and holding
 * nothing, and is admitted again from [0] on its own event thread when its time comes (a rate
 * limit's turn, or the Retry-After its client did not wait for). The one thing it keeps is a
 * rate-limit token it was granted: admitted again, it does not pay twice. A held request (or one
 * waiting for the shared limiter) whose client left meanwhile is not admitted at all: nobody
 * would read its reply, so it is finished at once, taking no slot and running no statement.
 */
#include "admission.h"
#include "compiler.h"
#include "api.h"
#include "apierr.h"
#include "breaker.h"
#include "capctl.h"
#include "datapath.h"
#include "datareq.h"
#include "dbbudget.h"
#include "evloop.h"
#include "log.h"
#include "mclock.h"
#include "params.h"
#include "ratelimit.h"
#include "request.h"
#include "rlsync.h"
#include "tarpit.h"
#include "tenantstat.h"
#include "tierset.h"
#include "xalloc.h"

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*
 * The client's address. Behind a trusted proxy (TRUSTED_PROXIES) the client is the rightmost
 * untrusted X-Forwarded-For entry; from anyone else X-Forwarded-For is ignored, since a client
 * can write what it likes there. Several X-Forwarded-For fields are one list in their order
 * (RFC 9110 5.3): a proxy that adds a field of its own rather than appending to the client's is
 * read right, not the client's first field.
 */
void admission_client_addr(const struct api_deps *d, struct request *r, char *out, size_t len)
{
    char addr[INET6_ADDRSTRLEN];
    snprintf(addr, sizeof(addr), "%s", r->client_addr ? r->client_addr : "unknown");
    if (d->nproxies && params_cidr_contains(d->proxies, d->nproxies, addr)) {
        char fwd[INET6_ADDRSTRLEN];
        char *xff = request_header_list(r, "X-Forwarded-For");
        if (params_forwarded_client(xff, d->proxies, d->nproxies, fwd, sizeof(fwd)))
            snprintf(addr, sizeof(addr), "%s", fwd);
        free(xff);
    }
    snprintf(out, len, "%s", addr);
}

/* The client as "ip:<key>": the tenant key when no tenant id is given, and the name of every
 * address-keyed limit and hold. An IPv6 client is its network of CLIENT_IPV6_PREFIX bits
 * (params_client_key): one host commonly holds a whole /64 and could rotate through it. */
void admission_client_key(const struct api_deps *d, struct request *r, char *out, size_t len)
{
    char addr[INET6_ADDRSTRLEN], key[PARAMS_CLIENT_KEY_MAX];
    admission_client_addr(d, r, addr, sizeof(addr));
    params_client_key(addr, d->ipv6_prefix, key, sizeof(key));
    snprintf(out, len, "ip:%s", key);
}

/* The rate limit that applies to r: the tenant's own if it has one, else the tier's. */
static int64_t admission_limit_of(const struct datareq *q, const struct tier_cfg *c)
{
    return q->args.own_rate_limit ? q->args.rate_limit : c->rate_limit;
}

enum admission_limited {
    ADMISSION_LIMIT_PASS,    /* admitted */
    ADMISSION_LIMIT_REFUSED, /* refused: q->rl says when a request would pass */
    ADMISSION_LIMIT_WAITING, /* the shared limiter holds r until its verdict
                                (admission_limit_decided) */
};

static void admission_limit_decided(void *ctx, const struct ratelimit_result *verdict);

/* Layer 1. HTTP thread. With the shared limiter (RATE_LIMIT_BACKEND=redis) r may have to wait
 * for Redis's answer (its tenant's lease here is used up): then it is r's limiter's until
 * admission_limit_decided, and r must be suspended by the caller. */
static enum admission_limited admission_rate_limit(const struct api_deps *d, struct request *r,
                                                   const struct tier_cfg *c)
{
    struct datareq *q = datareq_of(r);
    int64_t limit = admission_limit_of(q, c);
    if (limit <= 0)
        return ADMISSION_LIMIT_PASS; /* unlimited: no limiter work at all */
    struct tier_rt *t = q->tier;
    int64_t now = mclock_now_us();
    int rc = d->redis ? rlsync_check(d->redis, c->name, q->tenant, limit, c->rate_window_s, now,
                                     &q->rl, admission_limit_decided, r)
                      : -ENOSPC;
    if (rc == 1) {
        q->deps = d; /* for admission_limit_resume */
        return ADMISSION_LIMIT_WAITING;
    }
    if (rc == 0) {
        ratelimit_count(t->rl, q->rl.allowed);
    } else if (ratelimit_check_limit(t->rl, q->tenant, limit, now, &q->rl)) {
        /* The table is full: the tenant shares the bucket of its address. */
        char addr[PARAMS_CLIENT_KEY_MAX + 4];
        admission_client_key(d, r, addr, sizeof(addr));
        ratelimit_check_overflow(t->rl, addr, limit, now, &q->rl);
    }
    q->rl_applied = true;
    r->retry_after_us = q->rl.retry_after_us;
    return q->rl.allowed ? ADMISSION_LIMIT_PASS : ADMISSION_LIMIT_REFUSED;
}

/* A limit in shadow mode would have refused r with `why`: count it (tenantstat, at the end) and
 * log it, and let r pass. */
static void admission_shadow(struct request *r, const struct tier_cfg *c,
                             enum tenantstat_reason why)
{
    struct datareq *q = datareq_of(r);
    q->shadow |= 1u << why;
    log_info("shadow_refusal", "tier %s: tenant %s would be refused %s (shadow mode)", c->name,
             r->tenant_label, tenantstat_reason_name(why));
}

/* Layer 1b, the database-time budget: the tenant's own if it has one, else its tier's.
 * Returns false when refused (q->budget says until when). The budget is charged when the
 * request ends (reqhooks.c: q->budget.limit_ms), by the time its statement held a connection. */
static bool admission_db_budget(struct request *r, const struct tier_cfg *c)
{
    struct datareq *q = datareq_of(r);
    int64_t limit = q->args.own_db_time ? q->args.db_time_ms_per_min : c->db_time_ms_per_min;
    if (limit <= 0 || !q->tier->budget)
        return true;
    dbbudget_check(q->tier->budget, q->tenant, limit, mclock_now_us(), &q->budget);
    q->budget_applied = !c->db_time_shadow; /* a shadow budget shows the client nothing */
    if (q->budget.allowed)
        return true;
    if (c->db_time_shadow) {
        admission_shadow(r, c, TENANTSTAT_DB_TIME_EXHAUSTED);
        return true;
    }
    r->retry_after_us = q->budget.retry_after_us;
    return false;
}

/* The reply of refusal e (rc: datapath_submit's, for a full tier), built when it goes out. */
static void admission_refusal_reply(struct request *r, enum apierr e, int rc)
{
    struct datareq *q = datareq_of(r);
    const struct tier_cfg *c = tierset_cfg(q->tier);
    switch (e) {
    case APIERR_SHED:
        apierr_replyf(r, e,
                      "tier %s is limited: a tier of higher priority needs the shared capacity",
                      c->name);
        break;
    case APIERR_RATE_LIMITED:
        if (q->args.own_rate_limit)
            apierr_replyf(r, e, "tenant %s is allowed %" PRId64 " requests per %" PRId64 " s",
                          r->tenant_label, admission_limit_of(q, c), c->rate_window_s);
        else
            apierr_replyf(r, e, "tier %s allows %" PRId64 " requests per %" PRId64 " s per tenant",
                          c->name, admission_limit_of(q, c), c->rate_window_s);
        break;
    case APIERR_DB_TIME_EXHAUSTED:
        apierr_replyf(r, e,
                      "tenant %s used its %" PRId64 " ms of database time per minute (%s %s); "
                      "it is refused until the refill has paid its debt back",
                      r->tenant_label, q->budget.limit_ms,
                      q->args.own_db_time ? "its own budget, in tier" : "tier", c->name);
        break;
    case APIERR_CIRCUIT_OPEN:
        apierr_replyf(r, e, "tier %s is failing; its circuit breaker is open", c->name);
        break;
    case APIERR_BULKHEAD_FULL:
        if (rc == -EDQUOT)
            apierr_replyf(r, e, "this tenant's share of tier %s's queue is full", c->name);
        else
            apierr_replyf(r, e, "tier %s's worker queue is full", c->name);
        break;
    default:
        apierr_reply(r, e);
        break;
    }
}

/*
 * What the tarpit makes of refusal e of r at now: the time to hold r until (<= now: answer it
 * now), with r->retry_after_us set to the Retry-After that holds when it is answered.
 */
static int64_t admission_hold_until(const struct api_deps *d, struct request *r, enum apierr e,
                                    int64_t now)
{
    struct datareq *q = datareq_of(r);
    enum apierr_hold hold = apierr_held(e);
    if (!d->tarpit || hold == APIERR_HOLD_NONE)
        return now;
    const char *tier = tierset_cfg(q->tier)->name;
    char by_tenant[TIERS_NAME_MAX + FAIRQ_KEY_MAX + 2], by_addr[TIERS_NAME_MAX + 64], addr[56];
    snprintf(by_tenant, sizeof(by_tenant), "%s|%s", tier, q->tenant);
    struct tarpit_refusal rf = {.key1 = by_tenant, .held_us = q->held_us};
    if (hold == APIERR_HOLD_TENANT) {
        /* A rate limit: its exact wait, and its turns one interval apart. */
        rf.wait_us = q->rl.retry_after_us;
        rf.interval_us = ratelimit_interval_us(q->rl.limit, q->rl.window_s);
    } else {
        /* About the tier: the client was told whole seconds; the address is the client too. */
        rf.wait_us = apierr_retry_s(e, r->retry_after_us) * 1000000;
        admission_client_key(d, r, addr, sizeof(addr));
        snprintf(by_addr, sizeof(by_addr), "%s|%s", tier, addr);
        if (strcmp(q->tenant, addr) != 0)
            rf.key2 = by_addr;
    }
    struct tarpit_verdict v;
    tarpit_check(d->tarpit, &rf, now, &v);
    if (hold == APIERR_HOLD_TENANT) {
        r->retry_after_us = v.retry_us; /* its turn, behind those already waiting */
        q->rl.retry_after_us = v.retry_us;
    }
    return v.until_us;
}

/*
 * r was refused with e at admission (rc: datapath_submit's). The capacity gate it passed is
 * left at once, charged nothing (it did no work, and a held refusal must not keep its tier's
 * slot); then r is held by the tarpit, or answered. `suspended`: r is suspended already (it was
 * on its way to a slot, or it is being admitted again); answered, it is resumed here. Returns
 * true when held: the tarpit owns r until it releases it.
 */
static bool admission_refuse(const struct api_deps *d, struct request *r, bool suspended,
                             enum apierr e, int rc)
{
    struct datareq *q = datareq_of(r);
    struct tier_rt *t = q->tier;
    int64_t now = mclock_now_us();
    if (q->cap_entered_us) {
        capctl_leave(d->capacity, t->index, now, now);
        q->cap_entered_us = 0;
    }
    int64_t until = admission_hold_until(d, r, e, now);
    if (until > now) {
        if (!suspended)
            request_defer(r); /* before the tarpit sees it: it may release it at once */
        suspended = true;
        q->deps = d;
        q->held_us += until - now;
        if (tarpit_hold(d->tarpit, r, until))
            return true;
        q->held_us -= until - now; /* too many held: answered at once after all */
    }
    admission_refusal_reply(r, e, rc);
    if (q->held_us)
        r->outcome = OUTCOME_HELD; /* a refusal answered after a hold */
    if (suspended)
        request_resume(r);
    return false;
}

/*
 * After the rate limit: [4] a breaker permit, then [2] a worker. `suspended`: as admission_admit's.
 * Returns true when r was handed on (to a worker, or to the tarpit).
 */
static bool admission_admit_limited(const struct api_deps *d, struct request *r, bool suspended)
{
    struct datareq *q = datareq_of(r);
    struct tier_rt *t = q->tier;
    q->permit = breaker_acquire(t->breaker, mclock_now_us(), &r->retry_after_us);
    if (q->permit == BREAKER_DENY)
        return admission_refuse(d, r, suspended, APIERR_CIRCUIT_OPEN, 0);

    /* Suspend before queueing: a worker may finish before this thread returns. */
    if (!suspended)
        request_defer(r);
    int rc = datapath_submit(&d->data, q);
    if (rc == 0)
        return true; /* whoever runs it owns r now */
    breaker_release(t->breaker, q->permit);
    return admission_refuse(d, r, true,
                            rc == -ESHUTDOWN ? APIERR_SHUTTING_DOWN : APIERR_BULKHEAD_FULL, rc);
}

/*
 * The rate limit's verdict is known (refused: it would refuse r): apply it, or in shadow mode
 * only count it; then the database-time budget, then admission_admit_limited. `suspended`: as
 * admission_admit's. Returns true when r was handed on.
 */
static bool admission_after_limit(const struct api_deps *d, struct request *r, bool suspended,
                                  bool refused)
{
    struct datareq *q = datareq_of(r);
    const struct tier_cfg *c = tierset_cfg(q->tier);
    if (refused) {
        if (!c->rate_limit_shadow)
            return admission_refuse(d, r, suspended, APIERR_RATE_LIMITED, 0);
        admission_shadow(r, c, TENANTSTAT_RATE_LIMITED);
        q->rl_applied = false; /* a shadow limit shows the client nothing */
        r->retry_after_us = 0;
    } else if (c->rate_limit_shadow) {
        q->rl_applied = false;
    }
    if (!admission_db_budget(r, c))
        return admission_refuse(d, r, suspended, APIERR_DB_TIME_EXHAUSTED, 0);
    return admission_admit_limited(d, r, suspended);
}

/*
 * Admission, from [0] on: on the HTTP thread for a new request, and again on the same thread
 * (admission_readmit) for one the tarpit held. Returns true when r was handed on (to a worker, back
 * to the tarpit, or to the shared limiter until its verdict): from then on whoever has it owns
 * it.
 */
bool admission_admit(const struct api_deps *d, struct request *r, bool suspended)
{
    struct datareq *q = datareq_of(r);
    struct tier_rt *t = q->tier;
    const struct tier_cfg *c = tierset_cfg(t);
    /* A request the limiter admitted in an earlier attempt (then refused by the breaker or a
     * full tier, and held) keeps the place it was given: one request, one token. */
    bool charged = q->rl.allowed;
    q->rl_applied = charged; /* the headers of the verdict, once it reached the limiter */
    /* [0] The shared capacity: a higher tier may need it (capctl.h). First, since a tier that
     * is shed should cost as little as a refusal can. */
    int64_t now = mclock_now_us(), retry_us = 0;
    if (d->capacity && !capctl_enter(d->capacity, t->index, now, &retry_us)) {
        r->retry_after_us = retry_us;
        return admission_refuse(d, r, suspended, APIERR_SHED, 0);
    }
    q->cap_entered_us = d->capacity ? now : 0;
    if (!charged) {
        switch (admission_rate_limit(d, r, c)) {
        case ADMISSION_LIMIT_REFUSED:
            return admission_after_limit(d, r, suspended, true);
        case ADMISSION_LIMIT_WAITING:
            /* Its verdict comes back to this thread (admission_limit_resume), so only after this
             * returns: suspending it now is in time. It keeps its capacity slot meanwhile. */
            if (!suspended)
                request_defer(r);
            return true;
        case ADMISSION_LIMIT_PASS:
            break;
        }
    }
    return admission_after_limit(d, r, suspended, false);
}

/*
 * r's event thread, r suspended (held by the tarpit, or waiting for the shared limiter): its
 * client left meanwhile (request_client_left). Admitting it would take a slot, a breaker permit
 * and a statement for a reply nobody reads, so it is finished here: the capacity gate (entered
 * by one that waited for the limiter) is left charged nothing, and the reply, whatever it says,
 * is dropped by its connection (499, no query time). Not an apierr: no client ever reads it.
 */
static void admission_abandon(const struct api_deps *d, struct request *r)
{
    struct datareq *q = datareq_of(r);
    if (q->cap_entered_us) {
        int64_t now = mclock_now_us();
        capctl_leave(d->capacity, q->tier->index, now, now);
        q->cap_entered_us = 0;
    }
    request_reply_error(r, 499, OUTCOME_CLIENT_ERROR, "client_closed_request",
                        "the client closed its connection before its request was admitted", NULL,
                        0);
    request_resume(r);
}

/* A verdict of the shared limiter for a request that waited for it (q->task may not be free:
 * the verdict is copied on the limiter's thread, where r must not be touched). */
struct admission_limit_wait {
    struct evloop_task task; /* first: admission_limit_resume on r's HTTP thread */
    struct request *r;
    struct ratelimit_result verdict;
};

/* r's HTTP thread: the rest of r's admission, with the verdict it waited for (r is suspended). */
static void admission_limit_resume(struct evloop_task *task)
{
    struct admission_limit_wait *w = (struct admission_limit_wait *)(void *)task;
    struct request *r = w->r;
    struct datareq *q = datareq_of(r);
    q->rl = w->verdict;
    free(w);
    const struct api_deps *d = q->deps;
    ratelimit_count(q->tier->rl, q->rl.allowed);
    q->rl_applied = true;
    r->retry_after_us = q->rl.retry_after_us;
    if (request_client_left(r)) {
        admission_abandon(d, r);
        return;
    }
    admission_after_limit(d, r, true, !q->rl.allowed);
}

/* The shared limiter's thread (rlsync): hand the verdict to r's HTTP thread, touching nothing
 * of r but the loop it belongs to. */
static void admission_limit_decided(void *ctx, const struct ratelimit_result *verdict)
{
    struct request *r = ctx;
    struct admission_limit_wait *w = xmalloc(sizeof(*w));
    w->task = (struct evloop_task){.fn = admission_limit_resume};
    w->r = r;
    w->verdict = *verdict;
    evloop_post(r->loop, &w->task);
}

/* r's event thread: the tarpit released it; admit it again (it is suspended), unless its
 * client left while it was held. */
static void admission_readmit(struct evloop_task *task)
{
    struct datareq *q = container_of(task, struct datareq, task);
    const struct api_deps *d = q->deps;
    if (request_client_left(q->r)) {
        tarpit_count_left(d->tarpit);
        admission_abandon(d, q->r);
        return;
    }
    admission_admit(d, q->r, true);
}

/* The tarpit's thread: a held request is due. Admission is its event thread's to run. */
void admission_release_held(void *item, void *ctx)
{
    (void)ctx;
    struct request *r = item;
    struct datareq *q = datareq_of(r);
    q->task.fn = admission_readmit;
    evloop_post(r->loop, &q->task);
}

/* ---- RateLimit fields ---------------------------------------------------------------- */

/*
 * The rate limit's verdict, in the fields of draft-ietf-httpapi-ratelimit-headers (07 and
 * later: structured-field lists, one item named after the tier) and, for clients that have not
 * moved yet, the three fields of the older drafts:
 *   RateLimit-Policy: "free";q=100;w=60      quota, window (s)
 *   RateLimit: "free";r=42;t=1               available now; seconds until that grows (a 429:
 *                                            its Retry-After)
 *   RateLimit-Limit: 100, RateLimit-Remaining: 42, RateLimit-Reset: 35 (until the full burst)
 * Tier names are [a-z0-9_-], so they need no escaping inside a structured-field string.
 */
static void admission_ratelimit_headers(struct request *r, const struct datareq *q)
{
    const struct ratelimit_result *rl = &q->rl;
    const char *policy = q->tier ? q->tier->name : "default";
    char v[TIERS_NAME_MAX + 64], n1[24], n2[24];
    size_t len = 0;
    request_put(v, sizeof(v), &len, "\"");
    request_put(v, sizeof(v), &len, policy);
    request_put(v, sizeof(v), &len, "\";q=");
    request_put(v, sizeof(v), &len, request_i64(n1, sizeof(n1), rl->limit));
    request_put(v, sizeof(v), &len, ";w=");
    request_put(v, sizeof(v), &len, request_i64(n2, sizeof(n2), rl->window_s));
    request_add_header(r, "RateLimit-Policy", v);
    len = 0;
    request_put(v, sizeof(v), &len, "\"");
    request_put(v, sizeof(v), &len, policy);
    request_put(v, sizeof(v), &len, "\";r=");
    request_put(v, sizeof(v), &len, request_i64(n1, sizeof(n1), rl->remaining));
    request_put(v, sizeof(v), &len, ";t=");
    request_put(v, sizeof(v), &len,
                request_i64(n2, sizeof(n2), request_retry_seconds(ratelimit_next_us(rl))));
    request_add_header(r, "RateLimit", v);
    /* Deprecated (draft 06 and before), kept while clients move. */
    request_add_header(r, "RateLimit-Limit", request_i64(n1, sizeof(n1), rl->limit));
    request_add_header(r, "RateLimit-Remaining", request_i64(n1, sizeof(n1), rl->remaining));
    request_add_header(r, "RateLimit-Reset",
                       request_i64(n1, sizeof(n1), request_retry_seconds(rl->reset_us)));
}

/*
 * The database-time budget (dbbudget.h), a second policy in the same fields, in ms of database
 * time per 60 s: RateLimit-Policy: "free_db_time";q=600;w=60 and RateLimit:
 * "free_db_time";r=120;t=0 (r: ms left; t: a 429's Retry-After, else 0 as the bucket refills
 * continuously).
 */
static void admission_budget_headers(struct request *r, const struct datareq *q)
{
    const struct dbbudget_verdict *b = &q->budget;
    const char *policy = q->tier ? q->tier->name : "default";
    char v[TIERS_NAME_MAX + 80], n1[24], n2[24];
    size_t len = 0;
    request_put(v, sizeof(v), &len, "\"");
    request_put(v, sizeof(v), &len, policy);
    request_put(v, sizeof(v), &len, "_db_time\";q=");
    request_put(v, sizeof(v), &len, request_i64(n1, sizeof(n1), b->limit_ms));
    request_put(v, sizeof(v), &len, ";w=");
    request_put(v, sizeof(v), &len, request_i64(n2, sizeof(n2), DBBUDGET_WINDOW_S));
    request_add_header(r, "RateLimit-Policy", v);
    len = 0;
    request_put(v, sizeof(v), &len, "\"");
    request_put(v, sizeof(v), &len, policy);
    request_put(v, sizeof(v), &len, "_db_time\";r=");
    request_put(v, sizeof(v), &len, request_i64(n1, sizeof(n1), b->remaining_ms));
    request_put(v, sizeof(v), &len, ";t=");
    request_put(
        v, sizeof(v), &len,
        request_i64(n2, sizeof(n2), b->allowed ? 0 : request_retry_seconds(b->retry_after_us)));
    request_add_header(r, "RateLimit", v);
}

void admission_reply_headers(struct request *r, void *state)
{
    const struct datareq *q = state;
    if (q->rl_applied)
        admission_ratelimit_headers(r, q);
    if (q->budget_applied)
        admission_budget_headers(r, q);
}
