/*
 * apierr: every error the server answers, one row each: code, HTTP status, outcome (the
 * metrics and access-log label), Retry-After rule, default message. Every error reply goes
 * through apierr_reply/apierr_replyf, so status, outcome and code cannot disagree, and the
 * README's list of codes is printed from the same table (`bulkhead errors --markdown`, checked
 * by tests/integration/test_docs.c).
 *
 * Adding an error: one row in apierr.c and its name here, then scripts/readme-config.sh.
 */
#ifndef BULKHEAD_APIERR_H
#define BULKHEAD_APIERR_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

struct request;

/* In the table's order (by status). */
enum apierr {
    APIERR_INVALID_TIER,
    APIERR_INVALID_TENANT,
    APIERR_INVALID_ARGUMENT,
    APIERR_INVALID_BODY,
    APIERR_BAD_REQUEST,
    APIERR_MISSING_HOST,
    APIERR_AMBIGUOUS_REQUEST,
    APIERR_UNAUTHORIZED,
    APIERR_TIER_UNAVAILABLE,
    APIERR_NOT_FOUND,
    APIERR_UNKNOWN_TIER,
    APIERR_TENANT_NOT_FOUND,
    APIERR_METHOD_NOT_ALLOWED,
    APIERR_REQUEST_TIMEOUT,
    APIERR_TENANT_EXISTS,
    APIERR_LENGTH_REQUIRED,
    APIERR_PAYLOAD_TOO_LARGE,
    APIERR_URI_TOO_LONG,
    APIERR_UNSUPPORTED_MEDIA_TYPE,
    APIERR_EXPECTATION_FAILED,
    APIERR_RATE_LIMITED,
    APIERR_DB_TIME_EXHAUSTED,
    APIERR_TOO_MANY_AUTH_FAILURES,
    APIERR_TOO_MANY_CONNECTIONS,
    APIERR_HEADERS_TOO_LARGE,
    APIERR_DATABASE_ERROR,
    APIERR_AUTH_UNAVAILABLE,
    APIERR_ADMIN_BUSY,
    APIERR_BULKHEAD_FULL,
    APIERR_SHED,
    APIERR_QUEUE_TIMEOUT,
    APIERR_POOL_TIMEOUT,
    APIERR_CIRCUIT_OPEN,
    APIERR_DATABASE_UNAVAILABLE,
    APIERR_SHUTTING_DOWN,
    APIERR_TIMEOUT,
    APIERR_VERSION_NOT_SUPPORTED,
    APIERR_COUNT
};

/* Reply with error e and the table's message. Any thread that owns r. */
void apierr_reply(struct request *r, enum apierr e);

/* Same, with a message of the caller's (it may quote client input: it is escaped). */
void apierr_replyf(struct request *r, enum apierr e, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Same, with extra JSON members ("\"k\":v,...", trusted, no outer braces) after the message. */
void apierr_reply_members(struct request *r, enum apierr e, const char *message,
                          const char *members);

/* Whether a refusal goes to the tarpit when its client is back before its Retry-After, and who
 * that client is: a refusal about the tenant (its rate limit) names the tenant; one about the
 * tier (full, shedding) names the tenant and the client's address, so that fresh tenant ids
 * from one address are one client. */
enum apierr_hold { APIERR_HOLD_NONE, APIERR_HOLD_TENANT, APIERR_HOLD_TIER };
enum apierr_hold apierr_held(enum apierr e);

/* The Retry-After, in seconds, of a reply of e given the refusing layer's wait (r->retry_after_us);
 * 0 when e carries none. */
int64_t apierr_retry_s(enum apierr e, int64_t retry_after_us);

/* The code ("queue_timeout") and status of e. */
const char *apierr_code(enum apierr e);
unsigned apierr_status(enum apierr e);

/* Print the table: text for `bulkhead errors`, Markdown for the README. */
void apierr_print(FILE *out, bool markdown);

#endif
