/*
 * http: the libmicrohttpd daemon (epoll, a pool of event threads, suspend/resume).
 *
 * It turns libmicrohttpd's callbacks into the request life cycle of request.h: create on the
 * first call, read the body on the next ones (refusing oversized bodies with 413 before they are
 * buffered), hand the complete request to api_dispatch, queue the reply on a later call (so
 * keep-alive survives), and finish the request in the completion callback. The HTTP layer's own
 * limits (connections, idle timeout, header memory) come from config.
 */
#ifndef BULKHEAD_HTTP_H
#define BULKHEAD_HTTP_H

#include <stdint.h>

struct server;
struct http;

/* Start listening. Returns 0 or a negative errno (the reason is logged). */
int http_start(struct server *srv, struct http **out) __attribute__((warn_unused_result));

/* Stop accepting new connections (shutdown, step 1). */
void http_quiesce(struct http *h);

/* Close every connection and stop the threads (shutdown, last step). */
void http_stop(struct http *h);

/* The port actually bound. */
uint16_t http_port(const struct http *h);

#endif
