/*
 * fkrelay: a TCP relay from a free port of 127.0.0.1 to a PostgreSQL port, for every connection
 * a server opens, for the fault tests (faultkit.h includes it). fk_relay_cut stops it forwarding
 * anything, either way, without closing a connection: what either side sends stays unread, new
 * connections complete in the listen backlog and get no answer, and TCP keepalives are answered
 * by the relay's kernel; to the server the database is silent, as with packets dropped on the
 * way, except that no TCP timeout ever fires. The relay notes each connection's
 * application_name from its startup packet.
 *
 * DESIGN: one relay thread owns the sockets and moves the bytes; the mutex guards the
 * connection list and `cut`, which the test thread reads (fk_relay_waiting) and sets (waking the
 * thread through an eventfd).
 */
#ifndef BULKHEAD_TEST_FKRELAY_H
#define BULKHEAD_TEST_FKRELAY_H

#include <stdbool.h>

struct fk_relay;
/* Listen and relay to 127.0.0.1:upstream_port. 0 or -1. */
int fk_relay_start(int upstream_port, struct fk_relay **out);
int fk_relay_port(const struct fk_relay *r);
/* Stop forwarding (true) or forward again (false). */
void fk_relay_cut(struct fk_relay *r, bool cut);
/* Whether a connection of this application_name waits on bytes the cut holds back: a statement
 * (or a connect) it sent, or the database's answer to one sent just before the cut. */
bool fk_relay_waiting(struct fk_relay *r, const char *appname);
/* Close every connection and free. */
void fk_relay_stop(struct fk_relay *r);

#endif
