/*
 * apiwork: the worker side of /api/data. api_dispatch queues a request on its tier's worker
 * pool; a worker runs it here (apiwork_ops_template.run) against the tier's connection pool, or
 * the janitor or a shutdown drops it (.drop) with 503 queue_timeout or shutting_down. Either
 * way the request goes back to its HTTP thread with request_resume, and is not touched after.
 *
 * The statements are prepared on every tier connection (the server hands them to dbpool);
 * PostgreSQL builds the JSON, the server passes it through.
 */
#ifndef BULKHEAD_APIWORK_H
#define BULKHEAD_APIWORK_H

#include "dbconn.h"
#include "workpool.h"

#include <stddef.h>

/* The tier worker callbacks; ctx is the struct api_deps. Worker thread (run), janitor or
 * shutdown (drop). */
extern const struct workpool_ops apiwork_ops_template;

/* The statements every tier connection prepares. */
extern const struct dbconn_stmt apiwork_statements[];
extern const size_t apiwork_statement_count;

/* Session settings of every tier connection. */
extern const char apiwork_session_sql[];

#endif
