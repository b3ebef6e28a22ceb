/*
 * datapath: /api/data's way to the database. api_dispatch hands an admitted request here
 * (datapath_submit): it runs on its event thread when a slot and a connection are free at once,
 * else on a worker thread of its tier (datapath_ops_template.run), or the janitor or a shutdown
 * drops it from the queue (.drop) with 503 queue_timeout or shutting_down. Either way the
 * request goes back to its HTTP thread with request_resume, and is not touched after.
 *
 * What it runs and how an attempt ends is datastmt.c; a tenant's reads share a connection
 * through dbpipe.c (lanes).
 */
#ifndef BULKHEAD_DATAPATH_H
#define BULKHEAD_DATAPATH_H

#include "workpool.h"

#include <stdint.h>

struct datareq;

/* The data path's settings (from the configuration, or a test); read-only while it runs. */
struct datapath_cfg {
    int64_t retry_reads;  /* DB_READ_RETRIES: reads retried after meeting a dead connection */
    int64_t lane_depth;   /* DB_PIPELINE_DEPTH: a lane's statements in flight (1: no lanes) */
    int64_t lane_join_us; /* DB_PIPELINE_JOIN_MS, in us: a lane older than this is not joined */
};

/*
 * HTTP thread, r deferred (suspended) and admitted (breaker permit held): run it. On an event
 * thread with a slot of its tier free for its tenant, it begins at once: its statement is sent
 * on an idle connection and answered from this thread's loop (no thread hop); a request that
 * has to wait for a connection, or asked for a delay, goes to a worker thread with its slot.
 * Otherwise it is queued (workpool_submit). 0: whoever runs it resumes it; else as
 * workpool_submit (r untouched).
 */
int datapath_submit(const struct datapath_cfg *cfg, struct datareq *q)
    __attribute__((warn_unused_result));

/* The tier worker callbacks; ctx is the struct datapath_cfg. Worker thread (run), janitor or
 * shutdown (drop). */
extern const struct workpool_ops datapath_ops_template;

#endif
