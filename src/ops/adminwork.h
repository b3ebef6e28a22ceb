/*
 * adminwork: the worker side of the admin API's tenant endpoints. admin.c checks a request on
 * its HTTP thread and queues it here as a job; one worker thread runs the jobs in order on a
 * PostgreSQL connection of its own through tenantdb (the CLI's implementation), answers, writes
 * the event line of every change, and hands the request back with request_resume. A job that
 * never runs is answered 503: admin_busy when it waited past ADMINWORK_QUEUE_TIMEOUT_MS,
 * shutting_down at shutdown.
 *
 * The worker never waits on the database without a bound (tenantdb.h): a statement the
 * database does not answer is given up after TENANTDB_STATEMENT_TIMEOUT_MS +
 * TENANTDB_ANSWER_GRACE_MS (503 database_unavailable), and at shutdown adminwork_stop ends the
 * wait at once (503 shutting_down).
 *
 * DESIGN: the queue is a workpool of one thread (its mutex and condition variables; the janitor
 * expires it through adminwork_expire); the connection is that thread's alone, opened at the
 * first job and again after it is lost. adminwork_stop writes a stop pipe that every wait of
 * that connection polls. A job belongs to the HTTP thread until adminwork_submit accepts it,
 * then to the worker (or to whoever drops it), which frees it before resuming its request.
 */
#ifndef BULKHEAD_ADMINWORK_H
#define BULKHEAD_ADMINWORK_H

#include "fairq.h"
#include "tenantreq.h"

#include <stdint.h>

#define ADMINWORK_QUEUE_MAX        16    /* admin requests waiting at most; more get admin_busy */
#define ADMINWORK_QUEUE_TIMEOUT_MS 10000 /* longest wait for the worker */

struct request;
struct adminwork;

enum adminwork_op {
    ADMINWORK_CREATE, /* POST /admin/tenants */
    ADMINWORK_LIST,   /* GET /admin/tenants */
    ADMINWORK_GET,    /* GET /admin/tenants/NAME */
    ADMINWORK_UPDATE, /* PATCH /admin/tenants/NAME */
    ADMINWORK_ROTATE, /* POST /admin/tenants/NAME/keys */
    ADMINWORK_REVOKE, /* DELETE /admin/tenants/NAME */
    ADMINWORK_AUDIT,  /* GET /admin/audit */
};

/* One checked admin request, made and filled on the HTTP thread. */
struct adminwork_job {
    struct fairq_item item; /* the queue's link */
    struct request *r;      /* the request it answers; deferred until the job is done */
    enum adminwork_op op;
    char name[PARAMS_TENANT_MAX + 1]; /* the tenant of the path; list: after it; audit: only
                                         its events; "" = none */
    struct tenantreq req;             /* create, update: the checked body */
    int64_t limit;                    /* list, audit: the page size */
    int64_t before;                   /* audit: events with ids below (0: the newest) */
    char actor[24];                   /* who asks: the admin token's id */
    char address[64];                 /* the client's address */
};

/* conninfo: DATABASE_URL (copied). Starts the worker thread; connects at the first job. */
int adminwork_start(const char *conninfo, struct adminwork **out)
    __attribute__((warn_unused_result));

/* HTTP thread, with job->r deferred: 0 when queued (the worker owns job and answers r),
 * -EAGAIN when the queue is full, -ESHUTDOWN when stopping (job and r are still the caller's). */
int adminwork_submit(struct adminwork *w, struct adminwork_job *job)
    __attribute__((warn_unused_result));

/* Janitor thread: answer the jobs that waited past ADMINWORK_QUEUE_TIMEOUT_MS. */
void adminwork_expire(struct adminwork *w, int64_t now_us);

/* Refuse new jobs, answer queued ones, end the running one's wait on the database and wait for
 * it (a moment). Then destroy frees. */
void adminwork_stop(struct adminwork *w);
void adminwork_destroy(struct adminwork *w);

#endif
