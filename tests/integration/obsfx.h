/*
 * obsfx: the fixture of what operators read (test_observability, test_observability_logs): the
 * suite (a database and a server whose free tier takes 2 requests per minute per tenant and
 * whose breaker stays open once it opens), and one request that sends and returns an
 * X-Request-Id. The file that includes this includes cmocka.h first.
 */
#ifndef BULKHEAD_TESTS_OBSFX_H
#define BULKHEAD_TESTS_OBSFX_H

#include "harness.h"

#include <stddef.h>

/* free: 2 requests per minute per tenant, a breaker that stays open once it opens. */
extern struct h_suite obfx_suite;

int obfx_setup(void **state);

int obfx_teardown(void **state);

/* One request; returns the status and copies the X-Request-Id the server sent back. */
long obfx_request_as(const struct h_server *s, const char *path, const char *tier,
                     const char *tenant, const char *rid, char *rid_out, size_t rid_len);

#endif
