/*
 * datareq: an /api/data request's own state, owned by the handler of /api/data (h2o's way: a
 * request knows nothing of a handler's state). api_data creates it when a request is routed
 * there and hangs it off the request (request_set_handler); it is freed with the request. It
 * holds what admission decided (tier, tenant, limiter and budget verdicts, the breaker permit,
 * the capacity slot) and what the data path holds while the statement runs (its slot in the
 * tier's queue, the connection, the wait for one, its lane statement).
 *
 * DESIGN: as its request (request.h): one thread's at a time. Admission (api.c) fills it on
 * the HTTP thread; from datapath_submit on, whoever runs the request owns it until
 * request_resume; reqhooks.c reads it as the request ends (the done hook), on the HTTP thread.
 */
#ifndef BULKHEAD_DATAREQ_H
#define BULKHEAD_DATAREQ_H

#include "breaker.h"
#include "dbbudget.h"
#include "dbpipe.h"
#include "dbpool.h"
#include "evloop.h"
#include "fairq.h"
#include "ratelimit.h"
#include "request.h"

#include <stdbool.h>
#include <stdint.h>

struct api_deps;
struct datapath_cfg;
struct dbconn;
struct tier_rt;

/* What /api/data was asked to do; parsed and validated on the HTTP thread. */
struct datareq_args {
    bool force_error;
    int64_t delay_ms;     /* 0 = no delay */
    int64_t limit;        /* page size */
    int64_t cursor;       /* rows with id > cursor */
    char *payload;        /* POST: the payload object as compact JSON, owned */
    int64_t tenant_db_id; /* apikey mode: the tenant's row id; 0 = none */
    bool own_rate_limit;  /* apikey mode: the tenant's override wins over the tier's limit */
    int64_t rate_limit;   /* with own_rate_limit: per the tier's window, 0 = unlimited */

    /* apikey mode: the tenant's own database-time budget (ms per minute, 0 = none) wins. */
    bool own_db_time;
    int64_t db_time_ms_per_min;
};

struct datareq {
    struct request *r; /* the request it belongs to (it dies with it) */

    /* Admission (api.c). */
    struct tier_rt *tier;           /* the tier serving it, or NULL before it is known */
    char tenant[FAIRQ_KEY_MAX + 1]; /* rate-limit and fairness key; "" before it is known */
    struct datareq_args args;
    const struct api_deps *deps; /* what admission runs with (a held or waiting request) */
    enum breaker_permit permit;  /* held from breaker_acquire until recorded or released */
    int64_t cap_entered_us;      /* admitted by the capacity controller at; 0 = not admitted */
    bool rl_applied;             /* the tier is rate-limited: send RateLimit-* headers */
    struct ratelimit_result rl;  /* the verdict behind those headers */
    /* The database-time budget's verdict at admission, and the limits in shadow mode that let
     * it pass (a bit per tenantstat_reason), counted when it ends (reqhooks.c). */
    bool budget_applied; /* the tenant has a budget that is enforced: send its policy */
    struct dbbudget_verdict budget;
    unsigned shadow;
    int64_t held_us; /* how long the tarpit held it; 0 = not held */

    /* The data path (datapath.c): that thread's while the statement runs. */
    struct fairq_item item;          /* the tier queue's link (no allocation to enqueue) */
    const struct datapath_cfg *cfg;  /* the settings it runs with */
    struct evloop_thread *work_loop; /* the loop running it */
    struct evloop_watch watch;       /* the statement's socket, or the acquire deadline */
    struct dbpool_wait dbwait;       /* waiting for a connection */
    struct evloop_task task;         /* posted to a loop: pool's answer, start, readmit */
    struct dbconn *db;               /* held while the statement runs there, else NULL */
    int64_t sent_us;                 /* when the statement was sent (on a lane: queued) */
    int64_t db_retries;              /* reads retried after meeting a dead connection */
    struct dbpipe_stmt pipe_stmt;    /* its read's statement on a lane (dbpipe.h) */
};

/* HTTP thread: r's /api/data state, new (zeroed but for its link to r), hung off r. */
struct datareq *datareq_new(struct request *r);

/* r's /api/data state, or NULL when r is not an /api/data request (or not yet one). */
struct datareq *datareq_of(const struct request *r);

#endif
