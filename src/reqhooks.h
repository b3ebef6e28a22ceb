/*
 * reqhooks: the server's request hooks (request.h's struct request_hooks). begin and freed
 * count the requests in flight, which a shutdown drains (reqhooks_drain); done charges what a
 * request's end means to the rest of the server: its tier's metrics, its tenant's database-time
 * budget and accounting, and the capacity controller's in-progress count and latency samples.
 *
 * DESIGN: begin, done and freed run on the thread that finishes the request (an HTTP thread)
 * and touch only atomics and the modules' own locked tables. server.in_flight and
 * server.draining are atomics; the last request freed while draining takes drain_mutex to
 * broadcast `drained`, on which reqhooks_drain (main thread) waits.
 */
#ifndef BULKHEAD_REQHOOKS_H
#define BULKHEAD_REQHOOKS_H

#include "request.h"

#include <stdint.h>

struct server;

/* The hooks; ctx is the struct server. */
void reqhooks_begin(void *ctx);
void reqhooks_done(void *ctx, const struct request *r, int64_t total_us);
void reqhooks_freed(void *ctx);

/* Main thread: wait until no request is in flight or deadline_us (monotonic) passes. Returns
 * the requests left. */
int reqhooks_drain(struct server *srv, int64_t deadline_us);

#endif
