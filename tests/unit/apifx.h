/*
 * apifx: the endpoint tests' fixture (test_api, test_api_tarpit): the endpoints (api.h) served
 * in process over real HTTP (the http module) on a fake tier set with no database: its pools
 * point where nothing listens, so a request that reaches a worker fails to connect at once.
 * apifx_setup starts it (a cmocka group setup), apifx_teardown stops it; apifx_fetch is a
 * libcurl client. The file that includes this includes cmocka.h first.
 */
#ifndef BULKHEAD_TESTS_APIFX_H
#define BULKHEAD_TESTS_APIFX_H

#include "admin.h"
#include "api.h"
#include "capctl.h"
#include "config.h"
#include "history.h"
#include "http.h"
#include "metrics.h"
#include "report.h"
#include "request.h"
#include "tarpit.h"
#include "tierset.h"

#include <stdatomic.h>
#include <stddef.h>

/* The server under test and what it was built from (apifx_setup, apifx_teardown). */
struct apifx_server {
    struct config cfg;
    struct tierset *ts;
    struct history *history;
    struct metrics_tier untiered;
    atomic_int in_flight;
    atomic_bool draining;
    struct request_hooks hooks;
    struct report_sources sources;
    struct api_deps deps;
    struct admin *admin;
    struct capctl *capacity;
    struct tarpit *tarpit;
    struct http *http;
    char base[64];
};
extern struct apifx_server apifx_srv;

int apifx_setup(void **state);

int apifx_teardown(void **state);

struct apifx_reply {
    long status;
    char body[1 << 17];
    size_t len;
    char headers[4096];
    size_t hlen;
};

/* method path with up to two headers (or NULL) and a body (or NULL); the reply in *r. */
void apifx_fetch_body(const char *method, const char *path, const char *h1, const char *h2,
                      const char *body, struct apifx_reply *r);

/* The same with no body (an empty one for POST). */
void apifx_fetch(const char *method, const char *path, const char *h1, const char *h2,
                 struct apifx_reply *r);

/* A header's value (case-insensitive name) as an integer, or -1. */
long apifx_header_int(const struct apifx_reply *r, const char *name);

const char *apifx_error_code(const struct apifx_reply *r, char *buf, size_t len);

#endif
