/*
 * fakeset: a tier set for unit tests, with real parts (breaker, rate limiter, worker pool,
 * connection pool) and no database: its pools point at a port where nothing listens, so a
 * request that reaches a worker fails to connect at once (503 database_unavailable). Linked
 * into the unit tests of api, report and history, which need tiers but not PostgreSQL.
 */
#ifndef BULKHEAD_TEST_FAKESET_H
#define BULKHEAD_TEST_FAKESET_H

#include "tierset.h"
#include "workpool.h"

#include <stddef.h>

/* A set from a JSON tier table (tiers_parse syntax); ops run its workers (NULL: a run that
 * only drops). Aborts the test program on a bad table. */
struct tierset *fakeset_create(const char *tiers_json, const struct workpool_ops *ops);
/* Stop and free the parts, then the set. */
void fakeset_destroy(struct tierset *ts);

#endif
