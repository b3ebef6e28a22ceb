/*
 * test_redisurl: rlredis_parse_url, the REDIS_URL parser. It accepts
 * redis://[[user]:password@]host[:port][/db], percent-decodes the credentials, and refuses
 * anything it would otherwise misread (a user without a password, query strings, junk after the
 * port, oversized numbers, fields that do not fit their buffers). rlredis_create's error names
 * REDIS_URL and never shows the password.
 */
#include "rlredis.h"

#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

struct url_case {
    const char *url;
    const char *host;
    int port, db;
    const char *user, *password;
};

static void parses_host_port_and_db_with_defaults(void **state)
{
    (void)state;
    static const struct url_case ok[] = {
        {"redis://127.0.0.1:6379", "127.0.0.1", 6379, 0, "", ""},
        {"redis://localhost", "localhost", 6379, 0, "", ""},
        {"redis://redis", "redis", 6379, 0, "", ""},
        {"redis://cache.internal:7000/3", "cache.internal", 7000, 3, "", ""},
        {"redis://my-redis_1/15", "my-redis_1", 6379, 15, "", ""},
        {"redis://h/", "h", 6379, 0, "", ""},
        {"redis://h:1", "h", 1, 0, "", ""},
        {"redis://h:65535/999", "h", 65535, 999, "", ""},
        {"redis://h:06379", "h", 6379, 0, "", ""},
        {"redis://h/0", "h", 6379, 0, "", ""},
        {"redis://10.0.0.7:6380/", "10.0.0.7", 6380, 0, "", ""},
    };
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        struct rlredis_url u;
        memset(&u, 'x', sizeof(u));
        if (rlredis_parse_url(ok[i].url, &u) != 0)
            fail_msg("refused %s", ok[i].url);
        assert_string_equal(u.host, ok[i].host);
        assert_int_equal(u.port, ok[i].port);
        assert_int_equal(u.db, ok[i].db);
        assert_string_equal(u.user, "");
        assert_string_equal(u.password, "");
    }
}

static void credentials_are_parsed_and_percent_decoded(void **state)
{
    (void)state;
    static const struct url_case ok[] = {
        /* requirepass: the default user */
        {"redis://:s3cret@redis:6379", "redis", 6379, 0, "", "s3cret"},
        /* an ACL user (Redis 6+, managed Redis) */
        {"redis://bulkhead:s3cret@cache.internal:6380/2", "cache.internal", 6380, 2, "bulkhead",
         "s3cret"},
        {"redis://default:pw@h", "h", 6379, 0, "default", "pw"},
        /* the userinfo ends at the last '@'; a ':' in the password is fine */
        {"redis://:p@ss@h", "h", 6379, 0, "", "p@ss"},
        {"redis://u:p:q@h", "h", 6379, 0, "u", "p:q"},
        /* escapes: '@', ':', '/', '%', a blank, UTF-8 */
        {"redis://u%40x:p%40%3A%2F%25%20%C3%A9@h", "h", 6379, 0, "u@x", "p@:/% \xc3\xa9"},
        {"redis://:%41b@h/1", "h", 6379, 1, "", "Ab"},
    };
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        struct rlredis_url u;
        if (rlredis_parse_url(ok[i].url, &u) != 0)
            fail_msg("refused %s", ok[i].url);
        assert_string_equal(u.host, ok[i].host);
        assert_int_equal(u.port, ok[i].port);
        assert_int_equal(u.db, ok[i].db);
        assert_string_equal(u.user, ok[i].user);
        assert_string_equal(u.password, ok[i].password);
    }
}

static void refuses_malformed_urls(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "",
        "redis://",
        "redis://:6379",
        "redis:///0",
        "rediss://h",
        "REDIS://h",
        "http://h:6379",
        "redis:/h",
        "h:6379",
        "redis://user@h",  /* AUTH needs a password */
        "redis://user:@h", /* an empty one too */
        "redis://:@h",
        "redis://@h",
        "redis://u:pw@", /* no host after the credentials */
        "redis://u:pw@:6379",
        "redis://u:p w@h", /* blanks must be escaped */
        "redis://u:p\tw@h",
        "redis://u:%zz@h", /* bad escapes */
        "redis://u:%4@h",
        "redis://u:%@h",
        "redis://u:%00@h",  /* never a NUL */
        "redis://a/b:pw@h", /* a user has no '/' */
        "redis://u:pw@h?x=1",
        "redis://h:",
        "redis://h:0",
        "redis://h:65536",
        "redis://h:999999",
        "redis://h:1234567",
        "redis://h:-1",
        "redis://h:+1",
        "redis://h: 6379",
        "redis://h:6379x",
        "redis://h:6379 ",
        "redis://h:0x10",
        "redis://h/1000",
        "redis://h/-1",
        "redis://h/a",
        "redis://h/1/2",
        "redis://h//",
        "redis://h:6379:6380",
        "redis://h?db=1",
        "redis://h:6379?timeout=1",
        "redis://h#frag",
        "redis://h h",
        "redis:// h",
        "redis://h\n",
        "redis://h\t:1",
        "redis://h%20",
        "redis://[::1]:6379",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct rlredis_url u;
        if (rlredis_parse_url(bad[i], &u) != -EINVAL)
            fail_msg("accepted \"%s\"", bad[i]);
    }
}

/* "redis://" + prefix + n times ch + suffix, parsed. */
static int parse_with(const char *prefix, char ch, size_t n, const char *suffix,
                      struct rlredis_url *u)
{
    static char url[2048];
    size_t len = (size_t)snprintf(url, sizeof(url), "redis://%s", prefix);
    memset(url + len, ch, n);
    snprintf(url + len + n, sizeof(url) - len - n, "%s", suffix);
    return rlredis_parse_url(url, u);
}

static void fields_must_fit_their_buffers_with_their_nul(void **state)
{
    (void)state;
    struct rlredis_url u;
    /* host: 255 bytes fit the 256-byte field, 256 do not */
    assert_int_equal(parse_with("", 'a', sizeof(u.host) - 1, ":1", &u), 0);
    assert_int_equal(strlen(u.host), sizeof(u.host) - 1);
    assert_int_equal(parse_with("", 'a', sizeof(u.host), ":1", &u), -EINVAL);
    /* user */
    assert_int_equal(parse_with("", 'u', sizeof(u.user) - 1, ":pw@h", &u), 0);
    assert_int_equal(strlen(u.user), sizeof(u.user) - 1);
    assert_int_equal(parse_with("", 'u', sizeof(u.user), ":pw@h", &u), -EINVAL);
    /* password, counted after decoding: 255 "%41" are 255 bytes */
    assert_int_equal(parse_with(":", 'p', sizeof(u.password) - 1, "@h", &u), 0);
    assert_int_equal(strlen(u.password), sizeof(u.password) - 1);
    assert_int_equal(parse_with(":", 'p', sizeof(u.password), "@h", &u), -EINVAL);
    static char esc[3 * 256 + 32] = "redis://:";
    for (size_t i = 0; i < sizeof(u.password) - 1; i++)
        strcat(esc, "%41");
    strcat(esc, "@h");
    assert_int_equal(rlredis_parse_url(esc, &u), 0);
    assert_int_equal(strlen(u.password), sizeof(u.password) - 1);
    /* A refused URL leaves the output as it was. */
    struct rlredis_url before;
    memset(&u, 0x5a, sizeof(u));
    memcpy(&before, &u, sizeof(u));
    assert_int_equal(rlredis_parse_url("redis://u:pw@h:0", &u), -EINVAL);
    assert_memory_equal(&u, &before, sizeof(u));
}

static void create_refuses_a_bad_url_naming_the_variable_never_the_password(void **state)
{
    (void)state;
    struct rlredis *r = NULL;
    char err[300];
    assert_int_equal(rlredis_create("redis://h?x", 50, &r, err, sizeof(err)), -EINVAL);
    assert_null(r);
    assert_string_equal(
        err, "REDIS_URL: \"redis://h?x\" is not redis://[[user]:password@]host[:port][/db]");
    assert_int_equal(rlredis_create("redis://bh:s3cret@h:0", 50, &r, err, sizeof(err)), -EINVAL);
    assert_null(strstr(err, "s3cret"));
    assert_non_null(strstr(err, "\"redis://bh:****@h:0\""));
    assert_int_equal(rlredis_create("redis://:s3cret@h?x=1", 50, &r, err, sizeof(err)), -EINVAL);
    assert_null(strstr(err, "s3cret"));
    /* A good URL needs no server: connecting is deferred to the first check. */
    assert_int_equal(rlredis_create("redis://127.0.0.1:1/2", 50, &r, err, sizeof(err)), 0);
    assert_non_null(r);
    rlredis_destroy(r);
    assert_int_equal(rlredis_create("redis://bh:s3cret@127.0.0.1:1/2", 50, &r, err, sizeof(err)),
                     0);
    rlredis_destroy(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(parses_host_port_and_db_with_defaults),
        cmocka_unit_test(credentials_are_parsed_and_percent_decoded),
        cmocka_unit_test(refuses_malformed_urls),
        cmocka_unit_test(fields_must_fit_their_buffers_with_their_nul),
        cmocka_unit_test(create_refuses_a_bad_url_naming_the_variable_never_the_password),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
