/*
 * health: is the database answering? A background thread probes it every HEALTH_INTERVAL_MS
 * with its own connection, so GET /health costs an atomic load, not a query, however often it
 * is called. Transitions are logged once, with the cause.
 *
 * DESIGN: one thread (the prober) writes; any thread reads. The verdict and its time are
 * atomics; the last error text is guarded by a mutex. health_stop writes a stop pipe that every
 * wait of the prober's connection polls, so a probe under way never delays it.
 */
#ifndef BULKHEAD_HEALTH_H
#define BULKHEAD_HEALTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct health;

/* Probe once synchronously (so the first answer is known), then start the prober thread. */
int health_start(const char *conninfo, int64_t interval_ms, struct health **out)
    __attribute__((warn_unused_result));
void health_stop(struct health *h);

bool health_ok(const struct health *h);
/* The last failure's reason ("" when healthy). */
void health_reason(struct health *h, char *buf, size_t len);
/* Last probe round-trip in microseconds. */
int64_t health_latency_us(const struct health *h);
/* Probes so far (tests wait on this to change). */
uint64_t health_probes(const struct health *h);

#endif
