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

/*
 * Samples with seq > since as a JSON document (malloc'd text; the caller frees it):
 *   {"server": {"version", "instance", "started_ms", "now_ms", "healthy", "reason",
 *               "db_probe_ms", "in_flight", "draining"},      live, read at the call
 *    "tiers": ["free", ...], "interval_ms": 1000,
 *    "last": <newest seq>,                                     poll again with since=last
 *    "samples": [{"seq", "t" (Unix ms), "tiers": {"<name>": {"outcomes": {"ok": n, ...},
 *                 "p50_ms", "p99_ms", "busy", "threads", "queued", "queue_max", "db_active",
 *                 "db_idle", "db_max", "db_pending", "tenants", "breaker"}}}, ...]}
 * Sequence numbers restart at 1 with the process; "instance" tells a restart apart.
 */
char *history_json(struct history *h, int64_t since);

#endif
