/*
 * connrx: a connection's request coming in: reads and the parse, up to the hand-off to the
 * dispatcher (see connrx.c). Part of conn (conn.h), on the connection's loop thread.
 */
#ifndef BULKHEAD_CONNRX_H
#define BULKHEAD_CONNRX_H

struct conn;

/* Read what the socket holds and parse it: as far as a request's end (dispatched), or until
 * the socket is drained; in LINGER, read and drop until the client closes. A connection
 * between reading states (BUSY, WRITE) only notes that bytes wait (may_read). */
void connrx_read(struct conn *c);

/* Parse the bytes already in the buffer (a pipelined request's, conn's task). */
void connrx_parse(struct conn *c);

#endif
