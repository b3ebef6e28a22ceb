/*
 * test_log: log_json_escape and the lines built with it. Escaping turns quotes, backslashes,
 * control bytes and bytes >= 0x80 into JSON escapes, stops at the cap without splitting an escape
 * and always leaves a NUL-terminated string; a whole log line, whatever a client put in its
 * fields, stays one line of valid JSON that fits the line cap. Sampling (log_sampling): every
 * request that is not a success and every slow one gets its line whatever the fraction, a
 * fraction of the successes does (counted over many draws, with a margin no fair draw misses).
 */
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#define LINE_CAP 4000 /* log.c's LOG_LINE_MAX: a line with its newline never exceeds it */

/* Escape s into a fresh buffer of cap bytes; returns the length written. */
static size_t escape(char *dst, size_t cap, const char *s, size_t maxin)
{
    size_t len = 0;
    memset(dst, '#', cap);
    log_json_escape(dst, cap, &len, s, maxin);
    assert_true(len < cap);
    assert_int_equal(dst[len], '\0');
    return len;
}

static void escapes_quotes_and_backslashes(void **state)
{
    (void)state;
    char out[64];
    escape(out, sizeof(out), "a\"b\\c/d'e", SIZE_MAX);
    assert_string_equal(out, "a\\\"b\\\\c/d'e");
    escape(out, sizeof(out), "plain text 123 {}[]:,", SIZE_MAX);
    assert_string_equal(out, "plain text 123 {}[]:,");
    assert_int_equal(escape(out, sizeof(out), "", SIZE_MAX), 0);
    assert_string_equal(out, "");
}

static void escapes_every_control_byte_and_delete(void **state)
{
    (void)state;
    for (int c = 1; c < 0x20; c++) {
        char in[4] = {'x', (char)c, 'y', '\0'}, want[16], out[32];
        snprintf(want, sizeof(want), "x\\u%04xy", c);
        escape(out, sizeof(out), in, SIZE_MAX);
        assert_string_equal(out, want);
    }
    char out[32];
    escape(out, sizeof(out), "\x7f", SIZE_MAX);
    assert_string_equal(out, "\\u007f");
    escape(out, sizeof(out), "a\r\nb", SIZE_MAX);
    assert_string_equal(out, "a\\u000d\\u000ab");
}

static void escapes_bytes_above_ascii(void **state)
{
    (void)state;
    char out[64];
    escape(out, sizeof(out), "caf\xc3\xa9", SIZE_MAX);
    assert_string_equal(out, "caf\\u00c3\\u00a9");
    escape(out, sizeof(out), "\x80\xff", SIZE_MAX);
    assert_string_equal(out, "\\u0080\\u00ff");
    /* The result is plain printable ASCII whatever the input. */
    char in[256], big[256 * 6 + 1];
    for (int i = 0; i < 255; i++)
        in[i] = (char)(i + 1);
    in[255] = '\0';
    size_t n = escape(big, sizeof(big), in, SIZE_MAX);
    for (size_t i = 0; i < n; i++)
        assert_true(big[i] >= 0x20 && big[i] < 0x7f);
    /* ... and decodes as a JSON string to one code point per input byte. */
    char doc[sizeof(big) + 2];
    snprintf(doc, sizeof(doc), "\"%s\"", big);
    json_error_t jerr;
    json_t *j = json_loads(doc, JSON_DECODE_ANY, &jerr);
    assert_non_null(j);
    assert_true(json_is_string(j));
    json_decref(j);
}

static void stops_at_the_cap_without_splitting_an_escape(void **state)
{
    (void)state;
    /* "ab" + "\u000a" needs 2 + 6 + NUL = 9 bytes. */
    for (size_t cap = 1; cap <= 12; cap++) /* 12: room to spare */ {
        char out[16];
        size_t n = escape(out, cap, "ab\ncd", SIZE_MAX);
        const char *want = cap >= 11   ? "ab\\u000acd"
                           : cap >= 10 ? "ab\\u000ac"
                           : cap >= 9  ? "ab\\u000a"
                           : cap >= 3  ? "ab"
                           : cap == 2  ? "a"
                                       : "";
        assert_string_equal(out, want);
        assert_int_equal(n, strlen(want));
    }
    char out[8];
    escape(out, 4, "\"\"\"", SIZE_MAX);
    assert_string_equal(out, "\\\""); /* 3 bytes + NUL; a half escape would be "\\\"\\" */
}

static void appends_after_what_is_there_and_honours_maxin(void **state)
{
    (void)state;
    char out[32] = "key=";
    size_t len = 4;
    log_json_escape(out, sizeof(out), &len, "v\"w", SIZE_MAX);
    assert_int_equal(len, 8);
    assert_string_equal(out, "key=v\\\"w");
    len = 0;
    log_json_escape(out, sizeof(out), &len, "abcdef", 3);
    assert_string_equal(out, "abc");
    assert_int_equal(len, 3);
    /* Already full: nothing is written and the length stays. */
    char full[4] = "abc";
    len = 3;
    log_json_escape(full, sizeof(full), &len, "xyz", SIZE_MAX);
    assert_int_equal(len, 3);
    assert_string_equal(full, "abc");
    /* A zero cap writes nothing at all. */
    char none = 'z';
    len = 0;
    log_json_escape(&none, 0, &len, "x", SIZE_MAX);
    assert_int_equal(len, 0);
    assert_int_equal(none, 'z');
}

/* ---- whole lines ---- */

static int log_pipe[2];

static int setup(void **state)
{
    (void)state;
    if (pipe(log_pipe))
        return -1;
    return fcntl(log_pipe[0], F_SETFL, O_NONBLOCK);
}

static int teardown(void **state)
{
    (void)state;
    log_setup(LOG_FORMAT_JSON, LOG_LEVEL_INFO, true, 1);
    close(log_pipe[0]);
    close(log_pipe[1]);
    return 0;
}

/* Read everything written so far; exactly one line is expected. Returns it without '\n'. */
static char *read_one_line(char *buf, size_t cap)
{
    log_flush();
    ssize_t n = read(log_pipe[0], buf, cap - 1);
    assert_true(n > 0);
    assert_true((size_t)n <= LINE_CAP);
    buf[n] = '\0';
    assert_int_equal(buf[n - 1], '\n');
    buf[n - 1] = '\0';
    assert_null(strchr(buf, '\n'));
    for (ssize_t i = 0; i < n - 1; i++)
        assert_true((unsigned char)buf[i] >= 0x20 && (unsigned char)buf[i] < 0x7f);
    /* Nothing more was written. */
    char extra;
    assert_int_equal(read(log_pipe[0], &extra, 1), -1);
    assert_int_equal(errno, EAGAIN);
    return buf;
}

static json_t *read_json_line(void)
{
    static char buf[2 * LINE_CAP];
    char *line = read_one_line(buf, sizeof(buf));
    json_error_t jerr;
    json_t *j = json_loads(line, 0, &jerr);
    if (!j)
        fail_msg("invalid JSON line (%s): %.200s ... %s", jerr.text, line,
                 line + (strlen(line) > 100 ? strlen(line) - 100 : 0));
    return j;
}

static void access_line_is_json_with_every_field(void **state)
{
    (void)state;
    log_setup(LOG_FORMAT_JSON, LOG_LEVEL_INFO, true, log_pipe[1]);
    assert_true(log_access_enabled());
    struct log_access a = {.request_id = "r-1",
                           .tier = "free",
                           .tenant = "acme",
                           .method = "GET",
                           .path = "/api/data?x=\"1\"",
                           .outcome = "ok",
                           .status = 200,
                           .total_ms = 1.5,
                           .queue_ms = 0.25,
                           .query_ms = 1.0};
    log_access(&a);
    json_t *j = read_json_line();
    assert_string_equal(json_string_value(json_object_get(j, "type")), "access");
    assert_string_equal(json_string_value(json_object_get(j, "level")), "info");
    assert_string_equal(json_string_value(json_object_get(j, "request_id")), "r-1");
    assert_string_equal(json_string_value(json_object_get(j, "tier")), "free");
    assert_string_equal(json_string_value(json_object_get(j, "tenant")), "acme");
    assert_string_equal(json_string_value(json_object_get(j, "path")), "/api/data?x=\"1\"");
    assert_int_equal(json_integer_value(json_object_get(j, "status")), 200);
    assert_string_equal(json_string_value(json_object_get(j, "outcome")), "ok");
    assert_true(json_real_value(json_object_get(j, "queue_ms")) == 0.25);
    json_decref(j);
    /* Missing fields are null. */
    struct log_access empty = {.status = 404};
    log_access(&empty);
    j = read_json_line();
    assert_true(json_is_null(json_object_get(j, "tenant")));
    assert_true(json_is_null(json_object_get(j, "path")));
    json_decref(j);
}

static void hostile_oversized_fields_keep_the_line_valid_and_complete(void **state)
{
    (void)state;
    log_setup(LOG_FORMAT_JSON, LOG_LEVEL_INFO, true, log_pipe[1]);
    /* Every field at its worst: 6 output bytes for each input byte, far past the line cap. */
    static char hostile[5000];
    for (size_t i = 0; i < sizeof(hostile) - 1; i++)
        hostile[i] = (char)(i % 2 ? 0xff : '\n');
    hostile[sizeof(hostile) - 1] = '\0';
    struct log_access a = {.request_id = hostile,
                           .tier = hostile,
                           .tenant = hostile,
                           .method = hostile,
                           .path = hostile,
                           .outcome = "ok",
                           .status = 431,
                           .total_ms = 12345.678,
                           .queue_ms = 0,
                           .query_ms = 0};
    log_access(&a);
    json_t *j = read_json_line();
    /* The fields after the cut are still there: the line was not cut mid-object. */
    assert_int_equal(json_integer_value(json_object_get(j, "status")), 431);
    assert_string_equal(json_string_value(json_object_get(j, "outcome")), "ok");
    assert_true(json_real_value(json_object_get(j, "total_ms")) == 12345.678);
    /* Each hostile field kept its share: a whole number of escaped bytes, the same prefix. */
    static const char *const fields[] = {"request_id", "tier", "tenant", "method", "path"};
    for (size_t i = 0; i < 5; i++) {
        const char *v = json_string_value(json_object_get(j, fields[i]));
        assert_non_null(v);
        assert_true(strlen(v) >= 50);
        assert_memory_equal(v, "\n\xc3\xbf\n", 4); /* \u00ff decodes to U+00FF */
    }
    json_decref(j);
    /* Same with a long message in an event line. */
    log_event(LOG_LEVEL_ERROR, "boom", "%s", hostile);
    j = read_json_line();
    assert_string_equal(json_string_value(json_object_get(j, "event")), "boom");
    assert_string_equal(json_string_value(json_object_get(j, "level")), "error");
    assert_non_null(json_string_value(json_object_get(j, "msg")));
    json_decref(j);
    /* And with plain long text, one byte per character. */
    memset(hostile, 'a', sizeof(hostile) - 1);
    log_event(LOG_LEVEL_WARN, "long", "%s", hostile);
    j = read_json_line();
    assert_true(strlen(json_string_value(json_object_get(j, "msg"))) > 3000);
    json_decref(j);
}

static void text_lines_stay_one_line(void **state)
{
    (void)state;
    log_setup(LOG_FORMAT_TEXT, LOG_LEVEL_INFO, true, log_pipe[1]);
    struct log_access a = {.method = "GET", .path = "/x\n{\"forged\":1}", .status = 200};
    log_access(&a);
    char buf[2 * LINE_CAP];
    char *line = read_one_line(buf, sizeof(buf));
    assert_non_null(strstr(line, " info  access 200 method=GET path=/x\\u000a{\\\"forged\\\":1}"));
    assert_non_null(strstr(line, " tenant=- "));
    static char hostile[5000];
    memset(hostile, '\x01', sizeof(hostile) - 1);
    a.tenant = hostile;
    a.request_id = hostile;
    log_access(&a);
    line = read_one_line(buf, sizeof(buf));
    assert_non_null(strstr(line, " query_ms=0.000"));
    log_event(LOG_LEVEL_ERROR, "ev", "m\r\n%s", hostile);
    line = read_one_line(buf, sizeof(buf));
    assert_non_null(strstr(line, "error ev: m\\u000d\\u000a\\u0001"));
}

static void levels_and_access_switch_filter_lines(void **state)
{
    (void)state;
    log_setup(LOG_FORMAT_JSON, LOG_LEVEL_WARN, true, log_pipe[1]);
    assert_false(log_access_enabled()); /* access lines are info */
    log_info("quiet", "not written");
    log_debug("quiet", "not written");
    struct log_access a = {.status = 200};
    log_access(&a);
    log_flush();
    char extra;
    assert_int_equal(read(log_pipe[0], &extra, 1), -1);
    log_warn("loud", "n=%d", 7);
    json_t *j = read_json_line();
    assert_string_equal(json_string_value(json_object_get(j, "msg")), "n=7");
    assert_string_equal(json_string_value(json_object_get(j, "type")), "event");
    json_decref(j);
    log_setup(LOG_FORMAT_JSON, LOG_LEVEL_DEBUG, false, log_pipe[1]);
    assert_false(log_access_enabled());
    log_access(&a);
    log_flush();
    assert_int_equal(read(log_pipe[0], &extra, 1), -1);
    log_debug("dbg", "x");
    j = read_json_line();
    assert_string_equal(json_string_value(json_object_get(j, "level")), "debug");
    json_decref(j);
}

#define WRITERS    4
#define LINES_EACH 5000 /* 4 x 5000 lines of ~250 bytes: several swaps of the pending buffer */

static void *write_access_lines(void *arg)
{
    char tenant[32], rid[32];
    snprintf(tenant, sizeof(tenant), "t%d", (int)(intptr_t)arg);
    for (int i = 0; i < LINES_EACH; i++) {
        snprintf(rid, sizeof(rid), "%d", i);
        struct log_access a = {.request_id = rid,
                               .tier = "free",
                               .tenant = tenant,
                               .method = "GET",
                               .path = "/api/data",
                               .outcome = "ok",
                               .status = 200,
                               .total_ms = 1.5};
        log_access(&a);
    }
    return NULL;
}

/* Lines from many threads through the writer thread: every one arrives once, whole, and each
 * thread's lines keep their order. */
static void concurrent_access_lines_all_arrive_whole_and_in_order(void **state)
{
    (void)state;
    FILE *f = tmpfile();
    assert_non_null(f);
    log_setup(LOG_FORMAT_JSON, LOG_LEVEL_INFO, true, fileno(f));
    pthread_t th[WRITERS];
    for (intptr_t t = 0; t < WRITERS; t++)
        assert_int_equal(pthread_create(&th[t], NULL, write_access_lines, (void *)t), 0);
    for (int t = 0; t < WRITERS; t++)
        pthread_join(th[t], NULL);
    log_flush();
    rewind(f);
    int next[WRITERS] = {0};
    int lines = 0;
    char buf[2 * LINE_CAP];
    while (fgets(buf, sizeof(buf), f)) {
        json_error_t jerr;
        json_t *j = json_loads(buf, 0, &jerr);
        if (!j)
            fail_msg("line %d is not JSON: %s", lines, buf);
        int t = atoi(json_string_value(json_object_get(j, "tenant")) + 1);
        assert_true(t >= 0 && t < WRITERS);
        assert_int_equal(atoi(json_string_value(json_object_get(j, "request_id"))), next[t]);
        next[t]++;
        lines++;
        json_decref(j);
    }
    log_setup(LOG_FORMAT_JSON, LOG_LEVEL_INFO, true, log_pipe[1]);
    fclose(f);
    assert_int_equal(lines, WRITERS * LINES_EACH);
}

static void sampling_keeps_every_refusal_error_and_slow_request(void **state)
{
    (void)state;
    log_setup(LOG_FORMAT_JSON, LOG_LEVEL_INFO, true, log_pipe[1]);
    /* None of the successes, all of the rest. */
    log_sampling(0.0, 100000);
    for (int i = 0; i < 1000; i++) {
        assert_false(log_access_wanted(true, 99999));
        assert_true(log_access_wanted(false, 0));
        assert_true(log_access_wanted(true, 100000));
    }
    /* 0: no request counts as slow. */
    log_sampling(0.0, 0);
    assert_false(log_access_wanted(true, INT64_MAX));
    assert_true(log_access_wanted(false, 1));
    /* A quarter of the successes: 10,000 draws land within 5 % of 2,500 (11 standard
     * deviations); the refusals, all of them. */
    log_sampling(0.25, 0);
    int logged = 0;
    for (int i = 0; i < 10000; i++) {
        logged += log_access_wanted(true, 10);
        assert_true(log_access_wanted(false, 10));
    }
    assert_in_range(logged, 2000, 3000);
    /* 1 (the default): every request. */
    log_sampling(1.0, 0);
    for (int i = 0; i < 1000; i++)
        assert_true(log_access_wanted(true, 10));
    /* Access lines off: none, refusals included. */
    log_setup(LOG_FORMAT_JSON, LOG_LEVEL_WARN, true, log_pipe[1]);
    assert_false(log_access_wanted(false, 10));
    log_setup(LOG_FORMAT_JSON, LOG_LEVEL_INFO, true, log_pipe[1]);
}

static void mask_hides_every_password_form(void **state)
{
    (void)state;
    static const struct {
        const char *in, *out;
    } cases[] = {
        {"", ""},
        {"postgresql://app:s3cret@db:5432/app", "postgresql://app:****@db:5432/app"},
        {"postgres://app@db/app", "postgres://app@db/app"},
        {"postgresql://db/app", "postgresql://db/app"},
        {"postgresql://app:p@ss:w@db/app", "postgresql://app:****@db/app"},
        {"postgresql://app:pw@db/app?sslmode=require&password=two",
         "postgresql://app:****@db/app?sslmode=require&password=****"},
        {"host=db user=app password=s3cret dbname=app",
         "host=db user=app password=**** dbname=app"},
        {"host=db password = 'a b\\'c' dbname=app", "host=db password = **** dbname=app"},
        {"password=x", "password=****"},
        {"host=db PASSWORD=x", "host=db PASSWORD=****"},
        {"host=db passwordfile=/x", "host=db passwordfile=/x"},
        {"host=db mypassword=x", "host=db mypassword=x"},
        {"redis://127.0.0.1:6379", "redis://127.0.0.1:6379"},
        {"redis://:s3cret@redis:6379/2", "redis://:****@redis:6379/2"},
        {"redis://bulkhead:s3cret@redis", "redis://bulkhead:****@redis"},
        {"redis://user@redis", "redis://user@redis"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *m = log_mask_conn(cases[i].in);
        if (strcmp(m, cases[i].out))
            fail_msg("mask(%s) = %s, want %s", cases[i].in, m, cases[i].out);
        free(m);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(escapes_quotes_and_backslashes),
        cmocka_unit_test(escapes_every_control_byte_and_delete),
        cmocka_unit_test(escapes_bytes_above_ascii),
        cmocka_unit_test(stops_at_the_cap_without_splitting_an_escape),
        cmocka_unit_test(appends_after_what_is_there_and_honours_maxin),
        cmocka_unit_test(access_line_is_json_with_every_field),
        cmocka_unit_test(hostile_oversized_fields_keep_the_line_valid_and_complete),
        cmocka_unit_test(text_lines_stay_one_line),
        cmocka_unit_test(levels_and_access_switch_filter_lines),
        cmocka_unit_test(concurrent_access_lines_all_arrive_whole_and_in_order),
        cmocka_unit_test(sampling_keeps_every_refusal_error_and_slow_request),
        cmocka_unit_test(mask_hides_every_password_form),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
