/*
 * history: the last minutes of per-second samples, for the live dashboard.
 *
 * Once a second the janitor calls history_record, which reads every tier's counters, latency
 * histogram and gauges and stores what changed in that second (throughput by outcome, p50/p99,
 * pool and queue levels, breaker state) in a ring of HISTORY_SAMPLES entries. The dashboard
 * polls history_json with the last sample number it has, so each poll carries only new data.
 *
 * DESIGN: one writer (the janitor), many readers (HTTP threads); a mutex guards the ring.
 */
#ifndef BULKHEAD_HISTORY_H
#define BULKHEAD_HISTORY_H

#include <stdint.h>

#define HISTORY_SAMPLES 300 /* five minutes at one sample per second */

struct server;
struct history;

struct history *history_create(struct server *srv);
void history_destroy(struct history *h);

/* Janitor thread: take one sample now. */
void history_record(struct history *h);

/* Samples with seq > since as a JSON document (malloc'd text; the caller frees it). */
char *history_json(struct history *h, int64_t since);

#endif
