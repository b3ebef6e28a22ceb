/*
 * test_redisurl: rlredis_parse_url, the REDIS_URL parser. It accepts redis://host[:port][/db]
 * and refuses anything it would otherwise misread (credentials, query strings, junk after the
 * port, oversized numbers, hosts that do not fit the caller's buffer).
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
};

static void parses_host_port_and_db_with_defaults(void **state)
{
    (void)state;
    static const struct url_case ok[] = {
        {"redis://127.0.0.1:6379", "127.0.0.1", 6379, 0},
        {"redis://localhost", "localhost", 6379, 0},
        {"redis://redis", "redis", 6379, 0},
        {"redis://cache.internal:7000/3", "cache.internal", 7000, 3},
        {"redis://my-redis_1/15", "my-redis_1", 6379, 15},
        {"redis://h/", "h", 6379, 0},
        {"redis://h:1", "h", 1, 0},
        {"redis://h:65535/999", "h", 65535, 999},
        {"redis://h:06379", "h", 6379, 0},
        {"redis://h/0", "h", 6379, 0},
        {"redis://10.0.0.7:6380/", "10.0.0.7", 6380, 0},
    };
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        char host[256];
        int port = -1, db = -1;
        memset(host, 'x', sizeof(host));
        if (rlredis_parse_url(ok[i].url, host, sizeof(host), &port, &db) != 0)
            fail_msg("refused %s", ok[i].url);
        assert_string_equal(host, ok[i].host);
        assert_int_equal(port, ok[i].port);
        assert_int_equal(db, ok[i].db);
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
        "redis://user:pw@h:6379",
        "redis://:pw@h",
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
        char host[256];
        int port = -1, db = -1;
        if (rlredis_parse_url(bad[i], host, sizeof(host), &port, &db) != -EINVAL)
            fail_msg("accepted \"%s\"", bad[i]);
    }
}

static void host_must_fit_the_buffer_with_its_nul(void **state)
{
    (void)state;
    char url[64];
    int port, db;
    /* "abcdefg" is 7 bytes: an 8-byte buffer holds it, a 7-byte one does not. */
    snprintf(url, sizeof(url), "redis://abcdefg:6379");
    char *exact = malloc(8);
    assert_non_null(exact);
    assert_int_equal(rlredis_parse_url(url, exact, 8, &port, &db), 0);
    assert_string_equal(exact, "abcdefg");
    free(exact);
    char *small = malloc(7);
    assert_non_null(small);
    assert_int_equal(rlredis_parse_url(url, small, 7, &port, &db), -EINVAL);
    free(small);
    /* A 255-byte host fits rlredis's own 256-byte field; 256 bytes do not. */
    char big[300] = "redis://";
    memset(big + 8, 'a', 255);
    big[8 + 255] = '\0';
    char host[256];
    assert_int_equal(rlredis_parse_url(big, host, sizeof(host), &port, &db), 0);
    assert_int_equal(strlen(host), 255);
    big[8 + 255] = 'a';
    big[8 + 256] = '\0';
    assert_int_equal(rlredis_parse_url(big, host, sizeof(host), &port, &db), -EINVAL);
}

static void create_refuses_a_bad_url_naming_the_variable(void **state)
{
    (void)state;
    struct rlredis *r = NULL;
    char err[200];
    assert_int_equal(rlredis_create("redis://h?x", 50, &r, err, sizeof(err)), -EINVAL);
    assert_null(r);
    assert_string_equal(err, "REDIS_URL: \"redis://h?x\" is not redis://host[:port][/db]");
    /* A good URL needs no server: connecting is deferred to the first check. */
    assert_int_equal(rlredis_create("redis://127.0.0.1:1/2", 50, &r, err, sizeof(err)), 0);
    assert_non_null(r);
    rlredis_destroy(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(parses_host_port_and_db_with_defaults),
        cmocka_unit_test(refuses_malformed_urls),
        cmocka_unit_test(host_must_fit_the_buffer_with_its_nul),
        cmocka_unit_test(create_refuses_a_bad_url_naming_the_variable),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
