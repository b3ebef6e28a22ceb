/*
 * api: the endpoints, and the four layers of the request path for /api/data.
 *
 * api_dispatch runs on the HTTP thread once a request is complete: it routes, answers cheap
 * endpoints directly, validates /api/data requests (a 4xx changes nothing: it is decided before
 * any limit is consumed), applies the rate limit and the breaker, and queues the work. The
 * queued work runs on a tier worker (api_run) against the tier's connection pool.
 */
#ifndef BULKHEAD_API_H
#define BULKHEAD_API_H

#include "dbconn.h"
#include "workpool.h"

#include <stddef.h>

struct server;
struct request;

/* HTTP thread. Leaves r READY (reply set) or DEFERRED (suspended and queued). */
void api_dispatch(struct server *srv, struct request *r);

/* The tier worker callbacks (ctx is the server). */
extern const struct workpool_ops api_workpool_ops_template;

/* The statements every tier connection prepares. */
extern const struct dbconn_stmt api_statements[];
extern const size_t api_statement_count;

/* Session settings of every tier connection. */
extern const char api_session_sql[];

#endif
