/*
 * apiwork: the statement side of /api/data. api_dispatch hands an admitted request here
 * (apiwork_submit): it runs on its event thread when a slot and a connection are free at once,
 * else on a worker thread of its tier (apiwork_ops_template.run), or the janitor or a shutdown
 * drops it from the queue (.drop) with 503 queue_timeout or shutting_down. Either way the
 * request goes back to its HTTP thread with request_resume, and is not touched after.
 *
 * The statements are prepared on every tier connection (the server hands them to dbpool);
 * PostgreSQL builds the JSON, the server passes it through.
 */
#ifndef BULKHEAD_APIWORK_H
#define BULKHEAD_APIWORK_H

#include "dbconn.h"
#include "workpool.h"

#include <stddef.h>

struct api_deps;
struct request;

/*
 * HTTP thread, r deferred (suspended) and admitted (breaker permit held): run it. On an event
 * thread with a slot of its tier free for its tenant, it begins at once: its statement is sent
 * on an idle connection and answered from this thread's loop (no thread hop); a request that
 * has to wait for a connection, or asked for a delay, goes to a worker thread with its slot.
 * Otherwise it is queued (workpool_submit). 0: whoever runs it resumes it; else as
 * workpool_submit (r untouched).
 */
int apiwork_submit(const struct api_deps *d, struct request *r) __attribute__((warn_unused_result));

/* The tier worker callbacks; ctx is the struct api_deps. Worker thread (run), janitor or
 * shutdown (drop). */
extern const struct workpool_ops apiwork_ops_template;

/* The statements every tier connection prepares. */
extern const struct dbconn_stmt apiwork_statements[];
extern const size_t apiwork_statement_count;

/* Session settings of every tier connection. */
extern const char apiwork_session_sql[];

#endif
