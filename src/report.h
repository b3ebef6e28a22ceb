/*
 * report: the live state of every compartment, as JSON (/metrics/bulkheads, keyed by tier with
 * the seed's field names) and in the Prometheus text exposition format 0.0.4 (/metrics).
 *
 * Both read the same sources (workpool, dbpool, ratelimit, breaker, metrics) without stopping
 * the request path: counters are atomics, pools and breakers are read under their own mutex.
 */
#ifndef BULKHEAD_REPORT_H
#define BULKHEAD_REPORT_H

#include <stddef.h>

struct server;

/* malloc'd JSON text; the caller frees it. */
char *report_bulkheads_json(struct server *srv);

/* malloc'd exposition text of *len bytes; the caller frees it. */
char *report_prometheus(struct server *srv, size_t *len);

#endif
