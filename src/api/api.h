/*
 * api: the endpoints, and the entry of /api/data.
 *
 * api_dispatch runs on the HTTP thread once a request is complete: it routes, answers cheap
 * endpoints directly, and validates /api/data requests (a 4xx changes nothing: it is decided
 * before any limit is consumed), then hands them to admission (admission.c: capacity, rate
 * limit, budget, breaker), which hands what it admits to the data path (datapath.c: the
 * statement on its event thread or a tier worker).
 *
 * Everything it uses comes in struct api_deps: the api knows the modules it calls, never the
 * server that built them, so a test can hand it a fake tier set and no database.
 */
#ifndef BULKHEAD_API_H
#define BULKHEAD_API_H

#include "datapath.h"
#include "params.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct request;
struct tierset;
struct report_sources;
struct history;
struct health;
struct auth;
struct rlsync;
struct tarpit;
struct admin;
struct capctl;
struct tenantstat;

/* What the endpoints need. Filled by the server (or a test) before the first request and
 * read-only afterwards; whatever it points to must outlive the HTTP daemon and the workers. */
struct api_deps {
    struct tierset *tiers;                /* the tiers and their parts */
    const struct report_sources *metrics; /* /metrics, /metrics/bulkheads, /dashboard/data */
    struct history *history;              /* /dashboard/data's samples */
    struct health *health;                /* /health, /readyz */
    const atomic_bool *draining;          /* /readyz: shutdown has begun */
    struct auth *auth;                    /* NULL unless AUTH_MODE=apikey */
    struct rlsync *redis;                 /* NULL unless RATE_LIMIT_BACKEND=redis */
    struct tarpit *tarpit;                /* NULL unless TARPIT=true */
    struct capctl *capacity;              /* the capacity controller (NULL: none, in tests) */
    struct tenantstat *tenants;           /* per-tenant accounting (NULL: none, in tests) */
    const struct params_cidr *proxies;    /* TRUSTED_PROXIES */
    size_t nproxies;
    struct datapath_cfg data; /* the data path's settings (also its workers' ctx) */
    struct admin *admin;      /* NULL unless ADMIN_TOKEN is set: /admin is off */
    bool test_params;         /* force_error and delay_ms are accepted (TEST_PARAMS) */
    unsigned ipv6_prefix;     /* CLIENT_IPV6_PREFIX: an IPv6 client is its network of these bits */
    bool ops_port;            /* OPS_PORT is set: operator endpoints answer on it alone */
};

/* HTTP thread. Returns false with r READY (reply set), or true when r was suspended and handed
 * to a worker, which owns it until request_resume: the caller must not touch it, not even to
 * read its state. */
bool api_dispatch(const struct api_deps *d, struct request *r);

/* The same for a request on the operators' port (OPS_PORT): /metrics, /metrics/bulkheads,
 * /metrics/tenants, /dashboard (and its files under /dashboard/), /admin and the probes answer
 * there; anything else is a 404. With OPS_PORT set, api_dispatch answers those operator paths
 * 404 in turn, and the probes on both. */
bool api_dispatch_ops(const struct api_deps *d, struct request *r);

/* Any thread: whether url is a probe (/livez, /readyz), answered even while draining so that
 * an orchestrator sees the process alive and not ready (http_opts.drain_exempt). */
bool api_is_probe(const char *url);

#endif
