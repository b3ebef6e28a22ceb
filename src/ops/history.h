/*
 * history: the last minutes of per-second samples, for the live dashboard.
 *
 * Every HISTORY_INTERVAL_MS the janitor takes a snapshot (report_read) and hands it to
 * history_record, which keeps what the dashboard charts, per tier: the requests of that
 * interval by outcome, p50/p99 latency over the interval, and the fields reportdef.c's table marks
 * as sampled (pool and queue levels, breaker state), in a ring of HISTORY_SAMPLES; and the
 * process's: the worst HTTP event loop's lag over the interval (evloop.h). The
 * dashboard polls history_json with the last sample number it has, so each poll carries only
 * new data.
 *
 * DESIGN: one writer (the janitor), many readers (HTTP threads). The mutex guards the ring and
 * next_seq; the previous reading, from which the per-interval counts come, is the writer's.
 */
#ifndef BULKHEAD_HISTORY_H
#define BULKHEAD_HISTORY_H

#include <stdint.h>

#define HISTORY_SAMPLES     300  /* five minutes at one sample per second */
#define HISTORY_INTERVAL_MS 1000 /* the janitor samples this often */

struct history;
struct tierset;
struct report_snap;
struct report_process;

/* Samples of every tier of tiers (the names are read from it). */
struct history *history_create(struct tierset *tiers);
void history_destroy(struct history *h);

/* Janitor thread: keep one sample of s (a reading of the same tiers). */
void history_record(struct history *h, const struct report_snap *s);

/*
 * Samples with seq > since as a JSON document (malloc'd text; the caller frees it):
 *   {"server": {"version", "instance", "startedMs", "nowMs", "healthy", "reason", "dbProbeMs",
 *               "inFlight", "draining", "eventLoops",       live: `live`, read at the call
 *               "fleet": null (FLEET off) or {"up", "instances" (the others seen), "exchanges",
 *                        "failures", "exchangeMs", "reason" (while not up), "changedMs"}},
 *    "tiers": ["free", ...], "intervalMs": 1000,
 *    "last": <newest seq>,                                   poll again with since=last
 *    "samples": [{"seq", "t" (Unix ms), "tiers": {"<name>": {
 *        "outcomes": {"ok": n, ...},                         requests of the interval
 *        "latencyMs": {"p50", "p99"},                        over the interval
 *        "threadPool": {"active", "queued", "poolSize", "queueLimit"},
 *        "connectionPool": {"active", "idle", "pending", "max"},
 *        "circuitBreaker": {"state"}, "fairness": {"activeTenants"}}},
 *        "eventLoops": {"lagMs": {"p50", "p99"}}}, ...]}        the worst loop's, over the interval
 * The sections and keys are those of /metrics/bulkheads. Deprecated, kept for existing readers
 * and to be removed: "server" {"started_ms", "now_ms", "db_probe_ms", "in_flight"},
 * "interval_ms", and in a sample's tier the flat "p50_ms", "p99_ms", "busy", "threads",
 * "queued", "queue_max", "db_active", "db_idle", "db_max", "db_pending", "tenants", "breaker".
 * Sequence numbers restart at 1 with the process; "instance" tells a restart apart.
 */
char *history_json(struct history *h, const struct report_process *live, int64_t since);

#endif
