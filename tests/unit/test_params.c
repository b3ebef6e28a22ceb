/*
 * test_params: the strict parsers for what clients send. Each accepts exactly the documented
 * form and refuses everything near it: signs, blanks, overflow, wrong case where case matters,
 * and for the POST body anything but {"payload": {...}}.
 */
#include "params.h"

#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

static void int_accepts_plain_digits_within_bounds(void **state)
{
    (void)state;
    int64_t v = -1;
    assert_int_equal(params_int("0", 0, 10, &v), 0);
    assert_int_equal(v, 0);
    assert_int_equal(params_int("42", 0, 100, &v), 0);
    assert_int_equal(v, 42);
    assert_int_equal(params_int("007", 0, 100, &v), 0);
    assert_int_equal(v, 7);
    /* Bounds are inclusive. */
    assert_int_equal(params_int("5", 5, 9, &v), 0);
    assert_int_equal(v, 5);
    assert_int_equal(params_int("9", 5, 9, &v), 0);
    assert_int_equal(v, 9);
    /* 18 digits is the longest accepted, and it is exact. */
    assert_int_equal(params_int("999999999999999999", 0, INT64_MAX, &v), 0);
    assert_int_equal(v, 999999999999999999LL);
}

static void int_refuses_signs_blanks_empty_and_junk(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "",   "-1", "+1", " 1",  "1 ",  "1\n", "\t1", "1.0", "1e3", "0x10",
        "1a", "a1", "１", "1,0", "1_0", "--1", "- 1", "+",   "-",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int64_t v = 12345;
        assert_int_equal(params_int(bad[i], 0, INT64_MAX, &v), -EINVAL);
        assert_int_equal(v, 12345); /* untouched on error */
    }
    int64_t v = 12345;
    assert_int_equal(params_int(NULL, 0, 10, &v), -EINVAL);
    assert_int_equal(v, 12345);
}

static void int_refuses_out_of_bounds_and_overflow(void **state)
{
    (void)state;
    int64_t v = 12345;
    assert_int_equal(params_int("4", 5, 9, &v), -EINVAL);
    assert_int_equal(params_int("10", 5, 9, &v), -EINVAL);
    /* 19 digits or more, even when the value would fit, and anything past INT64_MAX. */
    assert_int_equal(params_int("1000000000000000000", 0, INT64_MAX, &v), -EINVAL);
    assert_int_equal(params_int("9223372036854775807", 0, INT64_MAX, &v), -EINVAL);
    assert_int_equal(params_int("9223372036854775808", 0, INT64_MAX, &v), -EINVAL);
    assert_int_equal(params_int("99999999999999999999999999", 0, INT64_MAX, &v), -EINVAL);
    assert_int_equal(params_int("0000000000000000001", 0, INT64_MAX, &v), -EINVAL);
    assert_int_equal(v, 12345);
}

static void bool_accepts_exactly_four_spellings(void **state)
{
    (void)state;
    bool b = false;
    assert_int_equal(params_bool("true", &b), 0);
    assert_true(b);
    assert_int_equal(params_bool("1", &b), 0);
    assert_true(b);
    assert_int_equal(params_bool("false", &b), 0);
    assert_false(b);
    b = true;
    assert_int_equal(params_bool("0", &b), 0);
    assert_false(b);
    static const char *const bad[] = {"",      "TRUE",    "True", "yes",  "no", "on",
                                      "off",   "t",       "f",    "2",    "01", " true",
                                      "true ", "false\n", "-1",   "truex"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        b = true;
        assert_int_equal(params_bool(bad[i], &b), -EINVAL);
        assert_true(b);
    }
    assert_int_equal(params_bool(NULL, &b), -EINVAL);
}

static void tenant_id_is_1_to_64_chars_of_the_safe_set(void **state)
{
    (void)state;
    char id[80];
    memset(id, 'a', 64);
    id[64] = '\0';
    assert_true(params_tenant_valid(id));
    id[64] = 'a';
    id[65] = '\0';
    assert_false(params_tenant_valid(id));
    assert_false(params_tenant_valid(""));
    assert_true(params_tenant_valid("a"));
    assert_true(params_tenant_valid("Acme-Corp_2.eu"));
    assert_true(params_tenant_valid("..."));
    assert_true(params_tenant_valid("0123456789"));
    static const char *const bad[] = {"a b",  "a/b",  "a:b", "a@b", "a\tb", "é", "a\nb",
                                      "a\"b", "a\\b", "a%b", "a+b", "a,b",  "*", "a\x7f"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_false(params_tenant_valid(bad[i]));
    /* Every byte outside the set is refused, wherever it sits. */
    for (int c = 1; c < 256; c++) {
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '.' || c == '_' || c == '-';
        char s[4] = {'x', (char)c, 'y', '\0'};
        assert_int_equal(params_tenant_valid(s), ok);
    }
}

static void media_type_ignores_case_parameters_and_leading_blanks(void **state)
{
    (void)state;
    const char *j = "application/json";
    assert_true(params_media_type_is("application/json", j));
    assert_true(params_media_type_is("Application/JSON", j));
    assert_true(params_media_type_is("application/json; charset=utf-8", j));
    assert_true(params_media_type_is("application/json;charset=UTF-8", j));
    assert_true(params_media_type_is("application/json ; charset=utf-8", j));
    assert_true(params_media_type_is("  \tapplication/json", j));
    assert_true(params_media_type_is("application/json  ", j));
    assert_false(params_media_type_is(NULL, j));
    assert_false(params_media_type_is("", j));
    assert_false(params_media_type_is("application/jsonx", j));
    assert_false(params_media_type_is("application/json-patch+json", j));
    assert_false(params_media_type_is("application/jso", j));
    assert_false(params_media_type_is("text/json", j));
    assert_false(params_media_type_is("text/plain; x=application/json", j));
    assert_false(params_media_type_is("application/json,text/plain", j));
    assert_false(params_media_type_is("\napplication/json", j));
}

static void bearer_returns_the_token_or_null(void **state)
{
    (void)state;
    const char *h = "Bearer abc.def";
    assert_ptr_equal(params_bearer(h), h + 7);
    assert_string_equal(params_bearer("bearer tok"), "tok");
    assert_string_equal(params_bearer("BEARER tok"), "tok");
    assert_string_equal(params_bearer("Bearer    tok"), "tok");
    assert_null(params_bearer(NULL));
    assert_null(params_bearer(""));
    assert_null(params_bearer("Bearer"));
    assert_null(params_bearer("Bearer "));
    assert_null(params_bearer("Bearer     "));
    assert_null(params_bearer("Basic dXNlcjpwYXNz"));
    assert_null(params_bearer("Bearertok"));
    assert_null(params_bearer(" Bearer tok"));
    assert_null(params_bearer("tok"));
}

static void equal_ct_compares_whole_strings(void **state)
{
    (void)state;
    assert_true(params_equal_ct("", ""));
    assert_true(params_equal_ct("secret", "secret"));
    assert_false(params_equal_ct("secret", "secreT"));
    assert_false(params_equal_ct("Secret", "secret"));
    assert_false(params_equal_ct("secre", "secret"));
    assert_false(params_equal_ct("secrets", "secret"));
    assert_false(params_equal_ct("", "secret"));
    assert_false(params_equal_ct("secret", ""));
    /* Same length, difference only in the last byte or only in the first. */
    assert_false(params_equal_ct("abcdefgh", "abcdefgX"));
    assert_false(params_equal_ct("Xbcdefgh", "abcdefgh"));
}

/* params_payload on a C string: returns the re-encoded payload (caller frees) or NULL. */
static char *payload_of(const char *body, char *why, size_t whylen)
{
    char *out = (char *)0x1; /* must be reset to NULL on failure */
    why[0] = '\0';
    int rc = params_payload(body, strlen(body), &out, why, whylen);
    if (rc) {
        assert_int_equal(rc, -EINVAL);
        assert_null(out);
        assert_true(why[0] != '\0');
        return NULL;
    }
    assert_non_null(out);
    return out;
}

static void payload_accepts_exactly_one_payload_object(void **state)
{
    (void)state;
    char why[200];
    char *p = payload_of("{\"payload\": {}}", why, sizeof(why));
    assert_string_equal(p, "{}");
    free(p);
    p = payload_of(" {\"payload\" : {\"b\": [1, 2, {\"c\": null}], \"a\": \"x\"}}\n", why,
                   sizeof(why));
    assert_string_equal(p, "{\"b\":[1,2,{\"c\":null}],\"a\":\"x\"}");
    free(p);
    /* Output is compact ASCII: non-ASCII text comes back as \u escapes. */
    p = payload_of("{\"payload\": {\"name\": \"caf\xc3\xa9 \xf0\x9f\x98\x80\"}}", why, sizeof(why));
    assert_string_equal(p, "{\"name\":\"caf\\u00E9 \\uD83D\\uDE00\"}");
    free(p);
}

static void payload_refuses_other_shapes(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "{\"payload\": []}",
        "{\"payload\": [1, 2]}",
        "{\"payload\": 1}",
        "{\"payload\": \"x\"}",
        "{\"payload\": null}",
        "{\"payload\": true}",
        "{}",
        "[]",
        "[{\"payload\": {}}]",
        "{\"Payload\": {}}",
        "{\"payload\": {}, \"extra\": 1}",
        "{\"extra\": 1, \"payload\": {}}",
        "{\"data\": {}}",
    };
    char why[200];
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_null(payload_of(bad[i], why, sizeof(why)));
        assert_string_equal(why, "the body must be {\"payload\": {...}}");
    }
    /* A bare scalar is not even a document to the parser. */
    static const char *const scalars[] = {"\"payload\"", "42", "null", "true"};
    for (size_t i = 0; i < sizeof(scalars) / sizeof(scalars[0]); i++) {
        assert_null(payload_of(scalars[i], why, sizeof(why)));
        assert_non_null(strstr(why, "invalid JSON"));
    }
    char *out = (char *)0x1;
    assert_int_equal(params_payload(NULL, 0, &out, why, sizeof(why)), -EINVAL);
    assert_null(out);
    assert_int_equal(params_payload("{\"payload\": {}}", 0, &out, why, sizeof(why)), -EINVAL);
    assert_string_equal(why, "the body is empty");
}

static void payload_refuses_invalid_json_with_its_position(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "{\"payload\": {}",                             /* truncated */
        "{\"payload\": {}} x",                          /* trailing garbage */
        "{\"payload\": {}}{}",                          /* two documents */
        "{'payload': {}}",                              /* single quotes */
        "{\"payload\": {\"a\": 1,}}",                   /* trailing comma */
        "{\"payload\": {\"a\": NaN}}",                  /* not JSON */
        "{\"payload\": {\"a\": \"\xff\"}}",             /* invalid UTF-8 */
        "{\"payload\": {\"a\": \"\xc3\"}}",             /* truncated UTF-8 sequence */
        "{\"payload\": {\"a\": \"\xed\xa0\x80\"}}",     /* UTF-16 surrogate in UTF-8 */
        "{\"payload\": {\"a\": \"\xc0\xaf\"}}",         /* overlong encoding */
        "{\"payload\": {\"a\": \"\\u0000\"}}",          /* NUL inside a string */
        "{\"payload\": {\"a\": \"x\ty\"}}",             /* raw control character */
        "{\"payload\": {\"a\": 1, \"a\": 2}}",          /* duplicate key in the payload */
        "{\"payload\": {}, \"payload\": {}}",           /* duplicate key at the top */
        "{\"payload\": {\"a\": 1e999}}",                /* real overflow */
        "{\"payload\": {\"a\": 99999999999999999999}}", /* integer overflow */
    };
    char why[200];
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_null(payload_of(bad[i], why, sizeof(why)));
        assert_non_null(strstr(why, "invalid JSON at line 1 column "));
    }
    /* A body with a raw NUL byte inside is refused, not cut at the NUL. */
    static const char nul[] = "{\"payload\": {\"a\": \"x\0y\"}}";
    char *out = (char *)0x1;
    assert_int_equal(params_payload(nul, sizeof(nul) - 1, &out, why, sizeof(why)), -EINVAL);
    assert_null(out);
    assert_non_null(strstr(why, "invalid JSON"));
    /* A duplicate key is named in the reason. */
    assert_null(payload_of("{\"payload\": {\"k\": 1, \"k\": 2}}", why, sizeof(why)));
    assert_non_null(strstr(why, "duplicate object key"));
}

/* {"payload": [[[ ... ]]] } nested depth levels deep inside the payload object. */
static char *nested_body(int depth)
{
    char *s = malloc((size_t)depth * 2 + 64);
    if (!s)
        abort();
    size_t n = (size_t)sprintf(s, "{\"payload\": {\"a\": ");
    for (int i = 0; i < depth; i++)
        s[n++] = '[';
    for (int i = 0; i < depth; i++)
        s[n++] = ']';
    strcpy(s + n, "}}");
    return s;
}

static void payload_accepts_moderate_nesting_and_refuses_deep_nesting(void **state)
{
    (void)state;
    char why[200];
    char *body = nested_body(500);
    char *p = payload_of(body, why, sizeof(why));
    assert_non_null(p);
    assert_int_equal(strlen(p), strlen("{\"a\":}") + 1000);
    free(p);
    free(body);
    /* Deep enough to exhaust a recursive parser's stack if it had no limit. */
    body = nested_body(100000);
    assert_null(payload_of(body, why, sizeof(why)));
    assert_non_null(strstr(why, "maximum parsing depth"));
    free(body);
}

static void payload_reason_is_truncated_to_the_buffer(void **state)
{
    (void)state;
    char why[8];
    memset(why, 'z', sizeof(why));
    char *out = NULL;
    assert_int_equal(params_payload("[]", 2, &out, why, sizeof(why)), -EINVAL);
    assert_int_equal(strlen(why), sizeof(why) - 1);
}

static void cidr_lists_parse_addresses_and_prefixes(void **state)
{
    (void)state;
    struct params_cidr set[4];
    size_t n = 0;
    char why[160];
    assert_int_equal(
        params_parse_cidrs("10.0.0.0/8, 127.0.0.1,::1 fd00::/8", set, 4, &n, why, sizeof(why)), 0);
    assert_int_equal(n, 4);
    assert_int_equal(set[0].prefix, 8);
    assert_int_equal(set[1].prefix, 32);
    assert_int_equal(set[2].prefix, 128);
    assert_int_equal(set[3].prefix, 8);
    assert_true(params_cidr_contains(set, n, "10.200.3.4"));
    assert_false(params_cidr_contains(set, n, "11.0.0.1"));
    assert_true(params_cidr_contains(set, n, "127.0.0.1"));
    assert_false(params_cidr_contains(set, n, "127.0.0.2"));
    assert_true(params_cidr_contains(set, n, "::1"));
    assert_true(params_cidr_contains(set, n, "fd12::5"));
    assert_false(params_cidr_contains(set, n, "fe80::1"));
    assert_false(params_cidr_contains(set, n, "garbage"));
    assert_int_equal(params_parse_cidrs("", set, 4, &n, why, sizeof(why)), 0);
    assert_int_equal(n, 0);
    assert_int_equal(params_parse_cidrs(" , ", set, 4, &n, why, sizeof(why)), 0);
    assert_int_equal(n, 0);
}

static void cidr_lists_refuse_bad_entries(void **state)
{
    (void)state;
    struct params_cidr set[2];
    size_t n;
    char why[160];
    const char *bad[] = {"10.0.0.0/33",  "::1/129", "10.0.0.0/",   "10.0.0.0/x",
                         "host.example", "1.2.3",   "1.2.3.4/8/8", "1.1.1.1, 2.2.2.2, 3.3.3.3"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        why[0] = '\0';
        assert_int_equal(params_parse_cidrs(bad[i], set, 2, &n, why, sizeof(why)), -EINVAL);
        assert_true(why[0] != '\0');
    }
}

static void forwarded_client_is_the_rightmost_untrusted_entry(void **state)
{
    (void)state;
    struct params_cidr set[2];
    size_t n;
    char why[160], out[64];
    assert_int_equal(params_parse_cidrs("10.0.0.0/8", set, 2, &n, why, sizeof(why)), 0);
    /* The client may have written anything on the left; the proxy appended the real peer. */
    assert_true(
        params_forwarded_client("1.1.1.1, 203.0.113.9, 10.0.0.2", set, n, out, sizeof(out)));
    assert_string_equal(out, "203.0.113.9");
    assert_true(params_forwarded_client("203.0.113.9", set, n, out, sizeof(out)));
    assert_string_equal(out, "203.0.113.9");
    assert_true(params_forwarded_client(" 2001:db8:0:0::1 ", set, n, out, sizeof(out)));
    assert_string_equal(out, "2001:db8::1"); /* canonical form */
    assert_false(params_forwarded_client("10.0.0.1, 10.0.0.2", set, n, out, sizeof(out)));
    assert_false(params_forwarded_client("evil, 10.0.0.2", set, n, out, sizeof(out)));
    assert_false(params_forwarded_client("", set, n, out, sizeof(out)));
    assert_false(params_forwarded_client(NULL, set, n, out, sizeof(out)));
    assert_false(params_forwarded_client("1.2.3.4,", set, n, out, sizeof(out)));
}

static const char *key_of(const char *addr, unsigned prefix)
{
    static char out[PARAMS_CLIENT_KEY_MAX];
    params_client_key(addr, prefix, out, sizeof(out));
    return out;
}

static void an_ipv6_client_is_its_network_and_ipv4_is_unchanged(void **state)
{
    (void)state;
    /* Two addresses in one /64 are one client; the next /64 is another. */
    assert_string_equal(key_of("2001:db8:1:2::1", 64), "2001:db8:1:2::/64");
    assert_string_equal(key_of("2001:db8:1:2:ffff:ffff:ffff:ffff", 64), "2001:db8:1:2::/64");
    assert_string_equal(key_of("2001:db8:1:3::1", 64), "2001:db8:1:3::/64");
    /* Prefixes off a 16-bit group boundary, and the ends of the range. */
    assert_string_equal(key_of("2001:db8:1:2ff::1", 56), "2001:db8:1:200::/56");
    assert_string_equal(key_of("2001:db8:abcd:ef01::1", 33), "2001:db8:8000::/33");
    assert_string_equal(key_of("2001:db8::1", 128), "2001:db8::1");
    assert_string_equal(key_of("2001:db8::1", 200), "2001:db8::1");
    assert_string_equal(key_of("2001:db8::1", 0), "::/0");
    /* The longest key fits. */
    assert_string_equal(key_of("ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe", 127),
                        "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe/127");
    /* IPv4 is unchanged, also when it reaches a dual-stack listener as ::ffff:a.b.c.d: IPv4
     * clients are never lumped into one IPv6 network. */
    assert_string_equal(key_of("192.0.2.7", 64), "192.0.2.7");
    assert_string_equal(key_of("::ffff:192.0.2.7", 64), "192.0.2.7");
    assert_string_equal(key_of("::ffff:192.0.2.8", 0), "192.0.2.8");
    /* Not an address: as it is (the server's "unknown"). */
    assert_string_equal(key_of("unknown", 64), "unknown");
    char small[8];
    params_client_key("2001:db8:1:2::1", 64, small, sizeof(small));
    assert_string_equal(small, "2001:db");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(int_accepts_plain_digits_within_bounds),
        cmocka_unit_test(int_refuses_signs_blanks_empty_and_junk),
        cmocka_unit_test(int_refuses_out_of_bounds_and_overflow),
        cmocka_unit_test(bool_accepts_exactly_four_spellings),
        cmocka_unit_test(tenant_id_is_1_to_64_chars_of_the_safe_set),
        cmocka_unit_test(media_type_ignores_case_parameters_and_leading_blanks),
        cmocka_unit_test(bearer_returns_the_token_or_null),
        cmocka_unit_test(equal_ct_compares_whole_strings),
        cmocka_unit_test(payload_accepts_exactly_one_payload_object),
        cmocka_unit_test(payload_refuses_other_shapes),
        cmocka_unit_test(payload_refuses_invalid_json_with_its_position),
        cmocka_unit_test(payload_accepts_moderate_nesting_and_refuses_deep_nesting),
        cmocka_unit_test(payload_reason_is_truncated_to_the_buffer),
        cmocka_unit_test(cidr_lists_parse_addresses_and_prefixes),
        cmocka_unit_test(cidr_lists_refuse_bad_entries),
        cmocka_unit_test(forwarded_client_is_the_rightmost_untrusted_entry),
        cmocka_unit_test(an_ipv6_client_is_its_network_and_ipv4_is_unchanged),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
