/*
 * breakerfx: the circuit breaker tests' fixture (test_breaker, test_breaker_deadline): the
 * suite (a database and a server with the seed defaults) and a second server on the same
 * database, `fast`, with short breaker timings from a tier file (BRFX_FAST_TIERS); a tier's
 * metrics section; a GET as a tenant of a tier. The file that includes this includes cmocka.h
 * first.
 */
#ifndef BULKHEAD_TESTS_BREAKERFX_H
#define BULKHEAD_TESTS_BREAKERFX_H

#include "harness.h"

#include <jansson.h>

extern struct h_suite brfx_suite;

extern struct h_server brfx_fast;

#define BRFX_FAST_TIERS                                                                            \
    "{\"free\": {\"workers\": 4, \"db_max\": 2, \"rate_limit\": 1000, \"breaker_timeout_ms\": "    \
    "500, \"breaker_reset_ms\": 400},"                                                             \
    " \"pro\": {\"workers\": 4, \"db_max\": 2, \"rate_limit\": 0, \"breaker_reset_ms\": 400},"     \
    " \"enterprise\": {\"workers\": 4, \"db_max\": 2, \"breaker_reset_ms\": 400},"                 \
    " \"tiny\": {\"workers\": 1, \"queue_max\": 0, \"db_max\": 1, \"rate_limit\": 3}}"

int brfx_setup(void **state);

int brfx_teardown(void **state);

json_t *brfx_tier_section(const struct h_server *s, const char *tier, const char *section);

long brfx_get(const struct h_server *s, const char *path, const char *tier, const char *tenant);

#endif
