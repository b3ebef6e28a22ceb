/*
 * test_reqhead: the refusals a request's head earns on its own. A head over the limit is 431,
 * or 414 when the target is most of it; HTTP/1.1 needs Host and HTTP/1.0 does not; a second
 * Host, X-Tenant-Tier, X-Tenant-ID, Authorization or X-API-Key (in any case) is ambiguous, as
 * are Content-Length fields that disagree and Content-Length beside Transfer-Encoding;
 * repeated Content-Length fields that agree, and repeated ordinary fields (X-Forwarded-For,
 * Accept), are not.
 */
#include "reqhead.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#define MAX_HEAD 16384

/* The verdict on a HTTP/1.1 head with Host and the given fields ("Name", "value", ..., NULL). */
static enum apierr verdict(const char **why, ...)
{
    struct reqhead h;
    reqhead_init(&h, 200, 20, "HTTP/1.1");
    reqhead_field(&h, "Host", "api.example");
    va_list ap;
    va_start(ap, why);
    const char *name;
    while ((name = va_arg(ap, const char *)) != NULL)
        reqhead_field(&h, name, va_arg(ap, const char *));
    va_end(ap);
    return reqhead_verdict(&h, MAX_HEAD, why);
}

static void an_ordinary_head_goes_on(void **state)
{
    (void)state;
    const char *why = "x";
    assert_int_equal(verdict(&why, "X-Tenant-Tier", "free", "X-Tenant-ID", "t1", "Accept", "*/*",
                             "Accept", "application/json", "X-Forwarded-For", "10.0.0.1",
                             "X-Forwarded-For", "10.0.0.2", NULL),
                     APIERR_COUNT);
    assert_null(why);
}

static void a_head_over_the_limit_is_431_or_414_by_what_made_it_large(void **state)
{
    (void)state;
    struct reqhead h;
    const char *why = NULL;
    reqhead_init(&h, MAX_HEAD, 100, "HTTP/1.1");
    reqhead_field(&h, "Host", "x");
    assert_int_equal(reqhead_verdict(&h, MAX_HEAD, &why), APIERR_COUNT); /* at the limit */
    reqhead_init(&h, MAX_HEAD + 1, 100, "HTTP/1.1");
    reqhead_field(&h, "Host", "x");
    assert_int_equal(reqhead_verdict(&h, MAX_HEAD, &why), APIERR_HEADERS_TOO_LARGE);
    assert_int_equal(apierr_status(APIERR_HEADERS_TOO_LARGE), 431);
    reqhead_init(&h, MAX_HEAD + 1, MAX_HEAD - 100, "HTTP/1.1");
    reqhead_field(&h, "Host", "x");
    assert_int_equal(reqhead_verdict(&h, MAX_HEAD, &why), APIERR_URI_TOO_LONG);
    assert_int_equal(apierr_status(APIERR_URI_TOO_LONG), 414);
    /* Size comes first: a huge head without Host is still 431. */
    reqhead_init(&h, 2 * MAX_HEAD, 10, "HTTP/1.1");
    assert_int_equal(reqhead_verdict(&h, MAX_HEAD, &why), APIERR_HEADERS_TOO_LARGE);
}

static void http11_needs_host_and_http10_does_not(void **state)
{
    (void)state;
    struct reqhead h;
    const char *why = NULL;
    reqhead_init(&h, 100, 10, "HTTP/1.1");
    assert_int_equal(reqhead_verdict(&h, MAX_HEAD, &why), APIERR_MISSING_HOST);
    assert_int_equal(apierr_status(APIERR_MISSING_HOST), 400);
    assert_string_equal(why, "an HTTP/1.1 request needs a Host header");
    reqhead_init(&h, 100, 10, "HTTP/1.0");
    assert_int_equal(reqhead_verdict(&h, MAX_HEAD, &why), APIERR_COUNT);
    reqhead_field(&h, "host", "a");
    reqhead_field(&h, "HOST", "b");
    assert_int_equal(reqhead_verdict(&h, MAX_HEAD, &why), APIERR_AMBIGUOUS_REQUEST);
    assert_string_equal(why, "more than one Host header");
}

static void a_repeated_identity_header_is_ambiguous_whatever_its_case(void **state)
{
    (void)state;
    const char *fields[][2] = {{"X-Tenant-Tier", "x-tenant-tier"},
                               {"X-Tenant-ID", "X-TENANT-ID"},
                               {"Authorization", "authorization"},
                               {"X-API-Key", "x-api-key"}};
    for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
        const char *why = NULL;
        /* Even the same value twice: a gateway that appends would produce exactly that. */
        assert_int_equal(verdict(&why, fields[i][0], "free", fields[i][1], "free", NULL),
                         APIERR_AMBIGUOUS_REQUEST);
        assert_non_null(strstr(why, reqhead_ident_name((enum reqhead_ident)(i + 1))));
    }
    assert_int_equal(apierr_status(APIERR_AMBIGUOUS_REQUEST), 400);
}

static void content_lengths_must_agree_and_not_meet_transfer_encoding(void **state)
{
    (void)state;
    const char *why = NULL;
    assert_int_equal(verdict(&why, "Content-Length", "5", "Content-Length", "5", NULL),
                     APIERR_COUNT);
    assert_int_equal(verdict(&why, "Content-Length", "5", "content-length", " 05 ", NULL),
                     APIERR_COUNT);
    assert_int_equal(verdict(&why, "Content-Length", "5", "Content-Length", "6", NULL),
                     APIERR_AMBIGUOUS_REQUEST);
    assert_string_equal(why, "Content-Length fields that disagree");
    assert_int_equal(verdict(&why, "Content-Length", "5", "Content-Length", "5x", NULL),
                     APIERR_AMBIGUOUS_REQUEST);
    assert_int_equal(verdict(&why, "Content-Length", "5", "Content-Length", "", NULL),
                     APIERR_AMBIGUOUS_REQUEST);
    assert_int_equal(verdict(&why, "Content-Length", "5", "Transfer-Encoding", "chunked", NULL),
                     APIERR_AMBIGUOUS_REQUEST);
    assert_string_equal(why, "both Content-Length and Transfer-Encoding");
    assert_int_equal(verdict(&why, "transfer-encoding", "chunked", "content-length", "0", NULL),
                     APIERR_AMBIGUOUS_REQUEST);
    /* Transfer-Encoding alone is not ambiguous (the server answers it 411 elsewhere). */
    assert_int_equal(verdict(&why, "Transfer-Encoding", "chunked", NULL), APIERR_COUNT);
}

/* Expect: 100-continue (any case) goes on; any other expectation is 417. */
static void an_expectation_other_than_100_continue_is_417(void **state)
{
    (void)state;
    const char *why = NULL;
    assert_int_equal(verdict(&why, "Expect", "100-continue", NULL), APIERR_COUNT);
    assert_int_equal(verdict(&why, "expect", "100-Continue", NULL), APIERR_COUNT);
    assert_int_equal(verdict(&why, "Expect", "200-ok", NULL), APIERR_EXPECTATION_FAILED);
    assert_non_null(why);
    assert_int_equal(apierr_status(APIERR_EXPECTATION_FAILED), 417);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(an_ordinary_head_goes_on),
        cmocka_unit_test(a_head_over_the_limit_is_431_or_414_by_what_made_it_large),
        cmocka_unit_test(http11_needs_host_and_http10_does_not),
        cmocka_unit_test(a_repeated_identity_header_is_ambiguous_whatever_its_case),
        cmocka_unit_test(content_lengths_must_agree_and_not_meet_transfer_encoding),
        cmocka_unit_test(an_expectation_other_than_100_continue_is_417),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
