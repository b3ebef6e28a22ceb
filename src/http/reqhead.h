/*
 * reqhead: what a request's head alone earns it, before any routing: too large (431/414), an
 * HTTP/1.1 request without Host, or an ambiguous one (400 ambiguous_request): a repeated
 * identity header (Host, X-Tenant-Tier, X-Tenant-ID, Authorization, X-API-Key), Content-Length
 * values that differ, or Content-Length beside Transfer-Encoding (RFC 9112 §6.1, §6.3: a
 * request-smuggling vector; a gateway that appends rather than replaces a header would
 * otherwise leave the client's own value first, where a lookup finds it).
 *
 * The connection (conn.c) feeds the fields in one pass (reqhead_field) and asks the verdict;
 * nothing here knows the parser, so the rules are unit-tested on plain strings. A reqhead
 * lives on the stack of the HTTP thread that reads the head.
 */
#ifndef BULKHEAD_REQHEAD_H
#define BULKHEAD_REQHEAD_H

#include "apierr.h"

#include <stdbool.h>
#include <stddef.h>

/* The header fields that name who the client is: one of each at most. */
enum reqhead_ident {
    REQHEAD_HOST,
    REQHEAD_TIER,          /* X-Tenant-Tier */
    REQHEAD_TENANT,        /* X-Tenant-ID */
    REQHEAD_AUTHORIZATION, /* Authorization */
    REQHEAD_API_KEY,       /* X-API-Key */
    REQHEAD_IDENT_COUNT
};

struct reqhead {
    size_t head_bytes;                   /* request line and field lines as received */
    size_t target_bytes;                 /* the request target, query included */
    bool http10;                         /* HTTP/1.0: Host is optional */
    unsigned ident[REQHEAD_IDENT_COUNT]; /* how many of each identity field */
    unsigned content_lengths;            /* Content-Length fields */
    unsigned long long first_length;     /* the first one's value */
    bool lengths_disagree;               /* another one differs, or is not a number */
    bool transfer_encoding;              /* a Transfer-Encoding field is present */
    bool expect_unknown;                 /* an Expect other than 100-continue */
};

/* Start reading a head: its size as received (0 when unknown), the target's size and the
 * protocol version ("HTTP/1.1"). */
void reqhead_init(struct reqhead *h, size_t head_bytes, size_t target_bytes, const char *version);

/* One header field, in order (names compare case-insensitively). */
void reqhead_field(struct reqhead *h, const char *name, const char *value);

/* The refusal the head earns, or APIERR_COUNT when it may go on; *why is the reply's message
 * (a static string). max_head: HTTP_CONNECTION_MEMORY, the largest head served. */
enum apierr reqhead_verdict(const struct reqhead *h, size_t max_head, const char **why);

/* The name of an identity field, as written in messages ("X-Tenant-Tier"). */
const char *reqhead_ident_name(enum reqhead_ident i);

#endif
