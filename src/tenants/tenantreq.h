/*
 * tenantreq: what an operator asks of a tenant, checked. The admin API's JSON bodies
 * (POST /admin/tenants, PATCH /admin/tenants/NAME) and the tenant CLI's arguments go through
 * the same checks and get the same messages, so both accept exactly the same changes.
 *
 * A tenant carries its tier and its overrides: values of its own that win over its tier's.
 * The overrides are rate_limit (requests per the tier's window, 0 = unlimited, as the tier
 * key of the same name) and db_time_ms_per_min (the tenant's database-time budget, 0 = none,
 * as the tier key); an override absent or null means "the tier's".
 *
 * Pure functions of their arguments: no I/O, no state, any thread; fuzzed by
 * tests/fuzz/fuzz_tenantreq.c.
 */
#ifndef BULKHEAD_TENANTREQ_H
#define BULKHEAD_TENANTREQ_H

#include "params.h"
#include "tiers.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define TENANTREQ_RATE_LIMIT_MAX 1000000000 /* the tier key's bound (tiers.c) */
#define TENANTREQ_DB_TIME_MAX    100000000  /* db_time_ms_per_min's bound (tiers.c) */

enum tenantreq_kind {
    TENANTREQ_CREATE, /* a new tenant: name and tier required, overrides optional */
    TENANTREQ_UPDATE  /* a change: tier and overrides, at least one; the name cannot change */
};

/* What a request does to an override. */
enum tenantreq_override {
    TENANTREQ_KEEP,  /* not mentioned: unchanged (on create: none) */
    TENANTREQ_SET,   /* set to the value */
    TENANTREQ_CLEAR, /* null: removed, the tier's value applies */
};

struct tenantreq {
    char name[PARAMS_TENANT_MAX + 1]; /* create: the new tenant's name; update: "" */
    char tier[TIERS_NAME_MAX + 1];    /* the tier; "" = unchanged (update only) */
    enum tenantreq_override rate_limit_op;
    int64_t rate_limit; /* with TENANTREQ_SET: 0..TENANTREQ_RATE_LIMIT_MAX, 0 = unlimited */
    enum tenantreq_override db_time_op;
    int64_t
        db_time; /* db_time_ms_per_min, with TENANTREQ_SET: 0..TENANTREQ_DB_TIME_MAX, 0 = none */
};

/* What is wrong with a request. The admin API answers each with its error code (400
 * invalid_body, invalid_tenant, invalid_tier, invalid_argument), the CLI with exit status 2. */
enum tenantreq_error {
    TENANTREQ_OK,
    TENANTREQ_BAD_BODY,   /* not a JSON object, an unknown or repeated field, nothing to do */
    TENANTREQ_BAD_NAME,   /* not 1..64 of A-Za-z0-9._- */
    TENANTREQ_BAD_TIER,   /* not a tier of the table */
    TENANTREQ_BAD_NUMBER, /* an override that is not an integer in range (or null) */
};

/* An empty request: no name, no tier, every override kept. */
void tenantreq_init(struct tenantreq *req);

/* A JSON body: {"name": "...", "tier": "...", "rate_limit": n|null, "db_time_ms_per_min":
 * n|null} (create needs name and tier; update takes tier and the overrides, at least one). On
 * anything but TENANTREQ_OK, why says what is wrong (it may quote the input, cut short) and *out is
 * unspecified. */
enum tenantreq_error tenantreq_parse_json(enum tenantreq_kind kind, const char *body, size_t len,
                                          const struct tier_table *tiers, struct tenantreq *out,
                                          char *why, size_t whylen)
    __attribute__((warn_unused_result));

/* One field given as text (the CLI): "name", "tier", "rate_limit" or "db_time_ms_per_min" (a
 * decimal integer, or "none" to remove the override). Same checks and messages as the JSON fields.
 */
enum tenantreq_error tenantreq_set_text(struct tenantreq *req, const char *field, const char *value,
                                        const struct tier_table *tiers, char *why, size_t whylen)
    __attribute__((warn_unused_result));

/* Whether req is whole for kind: create has a name and a tier, update changes something. */
enum tenantreq_error tenantreq_complete(enum tenantreq_kind kind, const struct tenantreq *req,
                                        char *why, size_t whylen)
    __attribute__((warn_unused_result));

#endif
