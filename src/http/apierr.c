/*
 * apierr: the error table of apierr.h and the replies built from it.
 */
#include "apierr.h"
#include "metrics.h"
#include "request.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>

/* When the client may try again (the Retry-After header and "retry_after_s"). */
enum apierr_retry {
    APIERR_RETRY_NONE,   /* no header: trying again will not help */
    APIERR_RETRY_SECOND, /* 1 s: a transient refusal with no better estimate */
    APIERR_RETRY_WAIT    /* r->retry_after_us, set by the layer that refused (limiter, breaker) */
};

struct apierr_row {
    const char *code;             /* the body's "error" */
    unsigned status;              /* HTTP status */
    enum metrics_outcome outcome; /* metrics and access-log label */
    enum apierr_retry retry;
    const char *header, *value; /* a header every such reply carries, or NULL */
    const char *message;        /* the body's "message" when the caller gives none */
    const char *when;           /* for the README: when it is answered */
    enum apierr_hold held;      /* held by the tarpit when its client is back too early */
};

#define CLIENT OUTCOME_CLIENT_ERROR

static const struct apierr_row apierr_table[APIERR_COUNT] = {
    [APIERR_INVALID_TIER] = {"invalid_tier", 400, CLIENT, .message = "unknown X-Tenant-Tier",
                             .when = "`X-Tenant-Tier` missing or not a tier, or an admin "
                                     "request's `tier` not a tier; the body lists the tiers in "
                                     "`valid_tiers`"},
    [APIERR_INVALID_TENANT] = {"invalid_tenant", 400, CLIENT,
                               .message = "X-Tenant-ID must be 1 to 64 characters of "
                                          "A-Z a-z 0-9 . _ -",
                               .when = "`X-Tenant-ID`, or a tenant name in an admin request, "
                                       "is not 1 to 64 of `A-Za-z0-9._-`"},
    [APIERR_INVALID_ARGUMENT] = {"invalid_argument", 400, CLIENT,
                                 .message = "a query argument is malformed or out of range",
                                 .when = "a query argument, or an admin request's number "
                                         "(`rate_limit`, `db_time_ms_per_min`), is malformed or "
                                         "out of range"},
    [APIERR_INVALID_BODY] = {"invalid_body", 400, CLIENT,
                             .message = "the body must be {\"payload\": {...}}",
                             .when = "the POST body is not `{\"payload\": {...}}`; an admin "
                                     "body is not JSON, has an unknown field, or lacks one"},
    [APIERR_BAD_REQUEST] = {"bad_request", 400, CLIENT, .message = "not an HTTP/1.1 request",
                            .when = "the bytes are not an HTTP/1.x request (a malformed request "
                                    "line or header field, a body that cannot be framed); the "
                                    "message quotes the parser. The connection is closed"},
    [APIERR_MISSING_HOST] = {"missing_host", 400, CLIENT,
                             .message = "an HTTP/1.1 request needs a Host header",
                             .when = "an HTTP/1.1 request without `Host` (RFC 9112 3.2)"},
    [APIERR_AMBIGUOUS_REQUEST] = {"ambiguous_request", 400, CLIENT,
                                  .message = "the request can be read more than one way",
                                  .when = "a repeated `Host`, `X-Tenant-Tier`, `X-Tenant-ID`, "
                                          "`Authorization` or `X-API-Key`; `Content-Length` "
                                          "fields that disagree; `Content-Length` with "
                                          "`Transfer-Encoding`. The connection is closed"},
    [APIERR_UNAUTHORIZED] = {"unauthorized", 401, CLIENT, .header = "WWW-Authenticate",
                             .value = "Bearer",
                             .message = "a valid API key is required "
                                        "(Authorization: Bearer <key>)",
                             .when = "no valid API key (`AUTH_MODE=apikey`) or admin token; "
                                     "with `WWW-Authenticate`"},
    [APIERR_TIER_UNAVAILABLE] = {"tier_unavailable", 403, CLIENT,
                                 .message = "the key's tier is not configured on this server",
                                 .when = "the API key's tier is not configured on this server"},
    [APIERR_NOT_FOUND] = {"not_found", 404, CLIENT, .message = "no such endpoint",
                          .when = "no such endpoint (admin endpoints without `ADMIN_TOKEN`)"},
    [APIERR_UNKNOWN_TIER] = {"unknown_tier", 404, CLIENT, .message = "no such tier",
                             .when = "an admin endpoint names a tier that does not exist"},
    [APIERR_TENANT_NOT_FOUND] = {"tenant_not_found", 404, CLIENT, .message = "no such tenant",
                                 .when = "an admin request names a tenant that does not exist"},
    [APIERR_METHOD_NOT_ALLOWED] = {"method_not_allowed", 405, CLIENT,
                                   .message = "method not allowed",
                                   .when = "the endpoint does not take this method; with "
                                           "`Allow`"},
    [APIERR_REQUEST_TIMEOUT] = {"request_timeout", 408, CLIENT,
                                .message = "the request was not complete in time",
                                .when = "the request head was not complete within "
                                        "`HTTP_HEAD_TIMEOUT_MS` of its first byte, or its body "
                                        "within `HTTP_BODY_TIMEOUT_MS` of the head. The "
                                        "connection is closed"},
    [APIERR_TENANT_EXISTS] = {"tenant_exists", 409, CLIENT,
                              .message = "a tenant with that name already exists",
                              .when = "`POST /admin/tenants` with a name already taken (revoked "
                                      "tenants keep theirs)"},
    [APIERR_LENGTH_REQUIRED] = {"length_required", 411, CLIENT,
                                .message = "request bodies need a Content-Length "
                                           "(no chunked encoding)",
                                .when = "a request body without `Content-Length` (chunked)"},
    [APIERR_PAYLOAD_TOO_LARGE] = {"payload_too_large", 413, CLIENT,
                                  .message = "the request body is too large",
                                  .when = "a body larger than `HTTP_MAX_BODY_BYTES`, refused "
                                          "before it is read"},
    [APIERR_URI_TOO_LONG] = {"uri_too_long", 414, CLIENT,
                             .message = "the request target is too long",
                             .when = "the request head passes `HTTP_CONNECTION_MEMORY`, mostly "
                                     "by its target (see Limits)"},
    [APIERR_UNSUPPORTED_MEDIA_TYPE] = {"unsupported_media_type", 415, CLIENT,
                                       .message = "the body must be application/json",
                                       .when = "a POST or PATCH body that is not "
                                               "`application/json`"},
    [APIERR_EXPECTATION_FAILED] = {"expectation_failed", 417, CLIENT,
                                   .message = "the only expectation served is Expect: "
                                              "100-continue",
                                   .when = "an `Expect` field other than `100-continue`. The "
                                           "connection is closed"},
    [APIERR_RATE_LIMITED] = {"rate_limited", 429, OUTCOME_RATE_LIMITED, APIERR_RETRY_WAIT,
                             .message = "the tenant's rate limit is used up",
                             .when =
                                 "the tenant used up its rate limit (its own override, or its "
                                 "tier's), and its turn is not within `TARPIT_MAX_HOLD_MS` (with "
                                 "the tarpit on, an earlier one is held until its turn and "
                                 "served); Retry-After: until a request would be admitted, "
                                 "behind the tenant's held requests",
                             .held = APIERR_HOLD_TENANT},
    [APIERR_DB_TIME_EXHAUSTED] = {"db_time_exhausted", 429, OUTCOME_RATE_LIMITED, APIERR_RETRY_WAIT,
                                  .message = "the tenant's database-time budget is used up",
                                  .when = "the tenant's statements used up its database-time "
                                          "budget (its own override, or its tier's "
                                          "`db_time_ms_per_min`) and it is "
                                          "in debt; Retry-After: until the refill has paid the "
                                          "debt back",
                                  .held = APIERR_HOLD_TIER},
    [APIERR_TOO_MANY_AUTH_FAILURES] = {"too_many_auth_failures", 429, OUTCOME_RATE_LIMITED,
                                       APIERR_RETRY_WAIT,
                                       .message = "too many failed admin authentications",
                                       .when = "10 failed admin authentications from the "
                                               "client's address within 60 s (then one more "
                                               "every 6 s): its token is not compared; "
                                               "Retry-After: until one more attempt is allowed"},
    [APIERR_TOO_MANY_CONNECTIONS] = {"too_many_connections", 429, CLIENT, APIERR_RETRY_SECOND,
                                     .message = "this address holds too many connections",
                                     .when = "the client's address (the socket's; "
                                             "`TRUSTED_PROXIES` exempt) holds "
                                             "`HTTP_MAX_CONNECTIONS_PER_ADDRESS` connections "
                                             "already; answered on accept, then closed"},
    [APIERR_HEADERS_TOO_LARGE] = {"headers_too_large", 431, CLIENT,
                                  .message = "the request's header fields are too large",
                                  .when = "the request head passes `HTTP_CONNECTION_MEMORY`, "
                                          "mostly by its header fields (see Limits)"},
    [APIERR_DATABASE_ERROR] = {"database_error", 500, OUTCOME_ERROR,
                               .message = "the statement failed",
                               .when = "the statement failed in PostgreSQL (on `/api/data`, "
                                       "a breaker failure)"},
    [APIERR_AUTH_UNAVAILABLE] = {"auth_unavailable", 503, OUTCOME_UNAVAILABLE, APIERR_RETRY_SECOND,
                                 .message = "API keys cannot be checked right now",
                                 .when = "API keys cannot be checked yet (no key table "
                                         "loaded)"},
    [APIERR_ADMIN_BUSY] = {"admin_busy", 503, OUTCOME_UNAVAILABLE, APIERR_RETRY_SECOND,
                           .message = "the admin queue is full",
                           .when = "admin requests are queued to one worker: its queue is full, "
                                   "or the request waited past its time"},
    [APIERR_BULKHEAD_FULL] = {"bulkhead_full", 503, OUTCOME_BULKHEAD_FULL, APIERR_RETRY_SECOND,
                              .message = "the tier's worker queue is full",
                              .when = "the tier's queue, or the tenant's share of it, is full",
                              .held = APIERR_HOLD_TIER},
    [APIERR_SHED] = {"shed", 503, OUTCOME_SHED, APIERR_RETRY_WAIT,
                     .message = "a higher tier needs the shared capacity; this tier is limited",
                     .when = "the capacity controller limits the tier while a higher-priority "
                             "tier's latency is past its tolerance; Retry-After: when the tier "
                             "could admit one again (at least 1 s)",
                     .held = APIERR_HOLD_TIER},
    [APIERR_QUEUE_TIMEOUT] = {"queue_timeout", 503, OUTCOME_QUEUE_TIMEOUT, APIERR_RETRY_SECOND,
                              .message = "no worker of the tier was free in time",
                              .when = "no worker was free within `queue_timeout_ms`"},
    [APIERR_POOL_TIMEOUT] = {"pool_timeout", 503, OUTCOME_POOL_TIMEOUT, APIERR_RETRY_SECOND,
                             .message = "no database connection free in time",
                             .when = "no connection was free within `db_acquire_timeout_ms`"},
    [APIERR_CIRCUIT_OPEN] = {"circuit_open", 503, OUTCOME_CIRCUIT_OPEN, APIERR_RETRY_WAIT,
                             .message = "the tier is failing; its circuit breaker is open",
                             .when = "the tier's breaker is open; Retry-After: until it lets a "
                                     "trial call through"},
    [APIERR_DATABASE_UNAVAILABLE] = {"database_unavailable", 503, OUTCOME_ERROR,
                                     APIERR_RETRY_SECOND,
                                     .message = "the database cannot be reached",
                                     .when = "the database cannot be reached (on "
                                             "`/api/data`, a breaker failure)"},
    [APIERR_SHUTTING_DOWN] = {"shutting_down", 503, OUTCOME_UNAVAILABLE, APIERR_RETRY_SECOND,
                              .message = "the server is shutting down",
                              .when = "the server is stopping"},
    [APIERR_TIMEOUT] = {"timeout", 504, OUTCOME_TIMEOUT,
                        .message = "the query passed the tier's call timeout",
                        .when = "the query passed `breaker_timeout_ms` and was cancelled (a "
                                "breaker failure)"},
    [APIERR_VERSION_NOT_SUPPORTED] = {"http_version_not_supported", 505, CLIENT,
                                      .message = "only HTTP/1.0 and HTTP/1.1 are served",
                                      .when = "a request line with an HTTP version other than "
                                              "1.x. The connection is closed"},
};

#undef CLIENT

enum apierr_hold apierr_held(enum apierr e)
{
    return apierr_table[e].held;
}

static const char *apierr_hold_doc(enum apierr_hold h)
{
    switch (h) {
    case APIERR_HOLD_NONE:
        return "-";
    case APIERR_HOLD_TENANT:
        return "until its turn, by tenant";
    case APIERR_HOLD_TIER:
        return "by tenant or address";
    }
    return "-";
}

const char *apierr_code(enum apierr e)
{
    return apierr_table[e].code;
}

unsigned apierr_status(enum apierr e)
{
    return apierr_table[e].status;
}

int64_t apierr_retry_s(enum apierr e, int64_t retry_after_us)
{
    switch (apierr_table[e].retry) {
    case APIERR_RETRY_SECOND:
        return 1;
    case APIERR_RETRY_WAIT:
        return request_retry_seconds(retry_after_us);
    case APIERR_RETRY_NONE:
        break;
    }
    return 0;
}

void apierr_reply_members(struct request *r, enum apierr e, const char *message,
                          const char *members)
{
    const struct apierr_row *row = &apierr_table[e];
    int64_t retry_s = apierr_retry_s(e, r->retry_after_us);
    request_reply_error(r, row->status, row->outcome, row->code, message ? message : row->message,
                        members, retry_s);
    r->error = (int)e + 1;
    r->reply_retry_s = retry_s;
    if (row->header)
        request_add_header(r, row->header, row->value);
}

void apierr_reply(struct request *r, enum apierr e)
{
    apierr_reply_members(r, e, NULL, NULL);
}

void apierr_replyf(struct request *r, enum apierr e, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    apierr_reply_members(r, e, msg, NULL);
}

/* Markdown table cell text: '|' would split the cell, '<' could open an HTML tag. */
static void apierr_print_md(FILE *out, const char *s)
{
    for (; *s; s++) {
        if (*s == '|')
            fputs("\\|", out);
        else if (*s == '<')
            fputs("&lt;", out);
        else if (*s == '>')
            fputs("&gt;", out);
        else
            fputc(*s, out);
    }
}

static const char *apierr_retry_doc(enum apierr_retry rule)
{
    switch (rule) {
    case APIERR_RETRY_NONE:
        return "-";
    case APIERR_RETRY_SECOND:
        return "1 s";
    case APIERR_RETRY_WAIT:
        return "computed";
    }
    return "-";
}

void apierr_print(FILE *out, bool markdown)
{
    if (markdown)
        fprintf(out, "| code | status | outcome | Retry-After | held when back early | when |\n"
                     "|---|---|---|---|---|---|\n");
    for (size_t i = 0; i < APIERR_COUNT; i++) {
        const struct apierr_row *row = &apierr_table[i];
        const char *outcome = metrics_outcome_name(row->outcome);
        const char *retry = apierr_retry_doc(row->retry);
        if (markdown) {
            fprintf(out, "| `%s` | %u | `%s` | %s | %s | ", row->code, row->status, outcome, retry,
                    apierr_hold_doc(row->held));
            apierr_print_md(out, row->when);
            fprintf(out, " |\n");
        } else {
            fprintf(out, "  %-24s %u %-14s retry %-9s held %-21s %s\n", row->code, row->status,
                    outcome, retry, apierr_hold_doc(row->held), row->when);
        }
    }
}
