/*
 * pgproxy: a one-connection TCP relay between libpq and PostgreSQL that can hold back the
 * server's messages, so a test decides what a client's read finds (test_dbconn_stmt's step-by-step
 * reads: an error that arrives before the end of its statement).
 *
 * It listens on a free port of 127.0.0.1, accepts one client, connects it to the server and
 * relays both ways on its own thread. Server-to-client bytes go on whole protocol messages at a
 * time (a type byte and a 32-bit length), so the relay can stop in front of the next message of
 * a type (say 'Z', ReadyForQuery) until the test lets it go; whatever whole messages are ready
 * then leave in one write. A second client (a cancel request, say) is never accepted: its
 * connect completes in the listen backlog and nothing ever answers it. The client must ask for
 * neither SSL nor GSS encryption (sslmode=disable, gssencmode=disable): their one-byte answers are
 * not framed.
 *
 * DESIGN: the relay thread owns both sockets. The mutex guards the hold, the counts and
 * `stopping`; the test waits on the condition variable, and wakes the thread (a release, the
 * stop) through an eventfd it polls with the sockets.
 */
#ifndef BULKHEAD_TEST_PGPROXY_H
#define BULKHEAD_TEST_PGPROXY_H

#include <stdbool.h>
#include <stdint.h>

struct pgproxy;

/* Listen, and relay the first client to 127.0.0.1:server_port. 0 or a negative errno. */
int pgproxy_start(int server_port, struct pgproxy **out);
int pgproxy_port(const struct pgproxy *px); /* where the client connects */

/* Stop in front of the next server message of this type (until pgproxy_release). */
void pgproxy_hold(struct pgproxy *px, char type);
/* Wait, until deadline_us at most, for the relay to stop there: whether it did. */
bool pgproxy_wait_held(struct pgproxy *px, int64_t deadline_us);
/* Wait, until deadline_us at most, for a whole server message of this type to be waiting
 * behind the held one (say, a notification that came after a held ReadyForQuery). On release
 * they reach the client together, in one write. */
bool pgproxy_wait_queued(struct pgproxy *px, char type, int64_t deadline_us);
/* Relay the held message and go on relaying everything. */
void pgproxy_release(struct pgproxy *px);
/* Server messages of this type relayed to the client so far. */
unsigned pgproxy_relayed(struct pgproxy *px, char type);

/* End the relay (closing both connections) and free. */
void pgproxy_stop(struct pgproxy *px);

#endif
