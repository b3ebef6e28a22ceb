/*
 * janitor: the server's clock-driven chores, on one thread.
 *
 * Every 50 ms: answer queued requests that waited past their tier's queue timeout (503
 * queue_timeout), forget tenants that went idle, and let connection waiters re-check their
 * tenant's share. Every second: a dashboard sample. Every 5 s: drop expired rate-limit keys.
 * (Named after PgBouncer's janitor, which does the same kind of housekeeping.)
 */
#ifndef BULKHEAD_JANITOR_H
#define BULKHEAD_JANITOR_H

struct server;
struct janitor;

int janitor_start(struct server *srv, struct janitor **out) __attribute__((warn_unused_result));
void janitor_stop(struct janitor *j);

#endif
