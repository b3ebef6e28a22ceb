/*
 * reqhead: the verdict on a request's head (see reqhead.h).
 */
#include "reqhead.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static const char *const reqhead_ident_names[REQHEAD_IDENT_COUNT] = {
    "Host", "X-Tenant-Tier", "X-Tenant-ID", "Authorization", "X-API-Key"};

/* The replies' messages, one per identity field (static: the verdict hands out a pointer). */
static const char *const reqhead_repeated[REQHEAD_IDENT_COUNT] = {
    "more than one Host header", "more than one X-Tenant-Tier header",
    "more than one X-Tenant-ID header", "more than one Authorization header",
    "more than one X-API-Key header"};

const char *reqhead_ident_name(enum reqhead_ident i)
{
    return (unsigned)i < REQHEAD_IDENT_COUNT ? reqhead_ident_names[i] : "?";
}

void reqhead_init(struct reqhead *h, size_t head_bytes, size_t target_bytes, const char *version)
{
    memset(h, 0, sizeof(*h));
    h->head_bytes = head_bytes;
    h->target_bytes = target_bytes;
    h->http10 = version && !strcmp(version, "HTTP/1.0");
}

/* A Content-Length value as a number; false when it is not one (blanks around are allowed). */
static bool reqhead_length(const char *v, unsigned long long *out)
{
    while (*v == ' ' || *v == '\t')
        v++;
    if (*v < '0' || *v > '9')
        return false;
    char *end = NULL;
    errno = 0;
    *out = strtoull(v, &end, 10);
    while (*end == ' ' || *end == '\t')
        end++;
    return errno == 0 && *end == '\0';
}

void reqhead_field(struct reqhead *h, const char *name, const char *value)
{
    for (int i = 0; i < REQHEAD_IDENT_COUNT; i++) {
        if (!strcasecmp(name, reqhead_ident_names[i])) {
            h->ident[i]++;
            return;
        }
    }
    if (!strcasecmp(name, "Transfer-Encoding")) {
        h->transfer_encoding = true;
    } else if (!strcasecmp(name, "Expect")) {
        /* 100-continue is the one expectation defined (RFC 9110 10.1.1); the parser glue has
         * dropped the value's surrounding whitespace. */
        if (strcasecmp(value, "100-continue") != 0)
            h->expect_unknown = true;
    } else if (!strcasecmp(name, "Content-Length")) {
        unsigned long long v = 0;
        bool number = reqhead_length(value, &v);
        if (h->content_lengths++ == 0)
            h->first_length = v;
        /* A first one that is not a number is the parser's to refuse (it frames the body
         * by it); any other must say the same. */
        else if (!number || v != h->first_length)
            h->lengths_disagree = true;
    }
}

enum apierr reqhead_verdict(const struct reqhead *h, size_t max_head, const char **why)
{
    if (h->head_bytes > max_head) {
        /* Whichever part made it too large names the refusal. */
        if (h->target_bytes > h->head_bytes / 2) {
            *why = "the request target is too long";
            return APIERR_URI_TOO_LONG;
        }
        *why = "the request's header fields are too large";
        return APIERR_HEADERS_TOO_LARGE;
    }
    if (!h->http10 && h->ident[REQHEAD_HOST] == 0) {
        *why = "an HTTP/1.1 request needs a Host header";
        return APIERR_MISSING_HOST;
    }
    for (int i = 0; i < REQHEAD_IDENT_COUNT; i++) {
        if (h->ident[i] > 1) {
            *why = reqhead_repeated[i];
            return APIERR_AMBIGUOUS_REQUEST;
        }
    }
    if (h->content_lengths && h->transfer_encoding) {
        *why = "both Content-Length and Transfer-Encoding";
        return APIERR_AMBIGUOUS_REQUEST;
    }
    if (h->lengths_disagree) {
        *why = "Content-Length fields that disagree";
        return APIERR_AMBIGUOUS_REQUEST;
    }
    if (h->expect_unknown) {
        *why = "the only expectation served is Expect: 100-continue";
        return APIERR_EXPECTATION_FAILED;
    }
    *why = NULL;
    return APIERR_COUNT;
}
