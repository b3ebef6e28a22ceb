/*
 * conntx: a connection's reply going out, then keep-alive or the close (see conntx.c). Part of
 * conn (conn.h), on the connection's loop thread.
 */
#ifndef BULKHEAD_CONNTX_H
#define BULKHEAD_CONNTX_H

#include "apierr.h"

struct conn;

/* The request's reply is set: put it on the wire (CONN_WRITE until it is out). */
void conntx_reply(struct conn *c);

/* Write what is left of the reply (the socket has room again). */
void conntx_write(struct conn *c);

/* Answer what is not a request (no c->req yet: one is made) or the request in progress with
 * error e (message: its text, or NULL for apierr's), and close after it. */
void conntx_refuse(struct conn *c, enum apierr e, const char *message);

#endif
