/*
 * dbcancel: the statement running on a dbconn cancelled in PostgreSQL within the caller's
 * deadline, and whether the connection can be used again.
 *
 * A cancel is a new connection to the server, and libpq 15's PQcancel blocks with no deadline
 * of its own: it sets the connection's keepalives and tcp_user_timeout on its socket (TCP only),
 * which bound a wait for a server that stopped answering after the connect (tcp_user_timeout,
 * 10 s here), but not a connect() whose SYNs go unanswered (the kernel's SYN retries, about
 * 2 min on Linux's defaults) nor a peer that accepts and never answers (a hung postmaster, a
 * proxy). So dbcancel sends it from a short-lived thread of its own and waits for it until the
 * caller's deadline at most; past that the sender is left to end by itself. At most
 * DBCANCEL_SENDERS are in flight in the process: past that no cancel is sent and the
 * connection is reported unusable (closing it ends the statement too:
 * client_connection_check_interval, and the statement_timeout backstop).
 */
#ifndef BULKHEAD_DBCANCEL_H
#define BULKHEAD_DBCANCEL_H

#include "dbconn.h"

#include <stdint.h>

/* After -ETIMEDOUT: cancel the running statement and read its end, until deadline_us at most
 * (the cancel's own connection included). Returns 0 when the connection is clean and reusable,
 * negative when it must be closed. In pipeline mode the statements still in flight are read to
 * their end: one cancel for the statement running, none for those its batch will not run, and
 * a statement still running DBCANCEL_RECANCEL_FIRST_MS after its cancel (which may have reached
 * the backend between two statements and been lost) gets another, then again after twice as
 * long each time. c->cancels counts them. */
#define DBCANCEL_RECANCEL_FIRST_MS 250
#define DBCANCEL_SENDERS           16 /* cancel requests in flight at once, in the process */
int dbcancel_run(struct dbconn *c, int64_t deadline_us);

#endif
