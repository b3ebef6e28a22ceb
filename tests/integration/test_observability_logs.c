/*
 * test_observability_logs: the logs operators read, against the real binary and a real
 * PostgreSQL (fixture: obsfx).
 *
 * - Access log: one JSON line per request with the right values, the request id the client got;
 *   LOG_FORMAT=text, LOG_LEVEL=warn, ACCESS_LOG=false, X-Request-Id validation;
 *   ACCESS_LOG_SAMPLE=0 drops the successes' lines and keeps every refusal's, error's and slow
 *   request's.
 * - Lifecycle events (ready, breaker_open, shutdown) logged once each, with their cause.
 */
#include "obsfx.h"
#include "harness.h"
#include "../promtext.h"

#include <ctype.h>
#include <math.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

/* obsfx's suite under a database name of its own: the test files of one pass run at once. */
static int setup(void **state)
{
    obfx_suite.name = "observability_logs";
    return obfx_setup(state);
}

/* ---- server logs ---------------------------------------------------------------------- */

/* Every line of the log parsed as JSON (an array); lines that do not parse are counted. */
static json_t *log_lines(const struct h_server *s, int *not_json)
{
    json_t *out = json_array();
    *not_json = 0;
    char *text = h_read_file(s->log);
    if (!text)
        return out;
    for (char *line = text; *line;) {
        char *nl = strchr(line, '\n');
        if (nl)
            *nl = '\0';
        if (*line) {
            json_t *j = json_loads(line, 0, NULL);
            if (json_is_object(j))
                json_array_append_new(out, j);
            else {
                fprintf(stderr, "not a JSON log line: %s\n", line);
                json_decref(j);
                (*not_json)++;
            }
        }
        if (!nl)
            break;
        line = nl + 1;
    }
    free(text);
    return out;
}

static const char *jstr(const json_t *o, const char *key)
{
    return json_string_value(json_object_get(o, key));
}

/* The access lines with this request id. */
static int access_lines_for(const struct h_server *s, const char *rid, json_t **first)
{
    int bad;
    json_t *all = log_lines(s, &bad);
    int n = 0;
    size_t i;
    json_t *l;
    json_array_foreach(all, i, l)
    {
        const char *t = jstr(l, "type"), *id = jstr(l, "request_id");
        if (t && !strcmp(t, "access") && id && !strcmp(id, rid)) {
            if (n++ == 0 && first)
                *first = json_incref(l);
        }
    }
    json_decref(all);
    return n;
}

/* Events named ev whose msg contains needle (NULL: any). */
static int event_count(const struct h_server *s, const char *ev, const char *needle)
{
    int bad;
    json_t *all = log_lines(s, &bad);
    int n = 0;
    size_t i;
    json_t *l;
    json_array_foreach(all, i, l)
    {
        const char *t = jstr(l, "type"), *e = jstr(l, "event"), *m = jstr(l, "msg");
        if (t && !strcmp(t, "event") && e && !strcmp(e, ev) &&
            (!needle || (m && strstr(m, needle))))
            n++;
    }
    json_decref(all);
    return n;
}

static bool wait_log(const struct h_server *s, const char *needle)
{
    return H_WAIT(h_server_log_has(s, needle), 10000);
}

/* ---- fixtures ------------------------------------------------------------------------- */

/* Another server on the suite's database and tiers, with one more variable (or none). */
/* A server of its own on the suite's database, with one or two more settings (more2 may be
 * NULL). */
static int start_with2(struct h_server *s, const char *extra, const char *more2)
{
    char tiers_env[500];
    snprintf(tiers_env, sizeof(tiers_env), "TIERS_FILE=%s", obfx_suite.tiers_path);
    const char *env[] = {tiers_env, extra, more2, NULL};
    return h_server_start(s, obfx_suite.db_url, env);
}

static int start_with(struct h_server *s, const char *extra)
{
    return start_with2(s, extra, NULL);
}

/* ---- access log ---------------------------------------------------------------------- */

/* Wait for the request's line; return it (exactly one must exist). */
static json_t *access_line(const struct h_server *s, const char *rid)
{
    assert_true(H_WAIT(access_lines_for(s, rid, NULL) > 0, 10000));
    json_t *l = NULL;
    int n = access_lines_for(s, rid, &l);
    if (n != 1)
        fprintf(stderr, "request %s: %d access lines\n", rid, n);
    assert_int_equal(n, 1);
    return l;
}

static bool valid_request_id(const char *s)
{
    size_t n = strlen(s);
    if (n < 1 || n > 64)
        return false;
    for (const char *c = s; *c; c++)
        if (!isalnum((unsigned char)*c) && !strchr("._:-", *c))
            return false;
    return true;
}

static void assert_access(json_t *l, const char *rid, const char *tier, const char *tenant,
                          const char *path, long status, const char *outcome)
{
    static const char *const fields[] = {"time",     "level",    "type",    "request_id", "tier",
                                         "tenant",   "method",   "path",    "status",     "outcome",
                                         "total_ms", "queue_ms", "query_ms"};
    for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
        if (!json_object_get(l, fields[i]))
            fprintf(stderr, "access line lacks %s\n", fields[i]);
        assert_non_null(json_object_get(l, fields[i]));
    }
    /* 2026-11-28T07:01:02.345Z */
    const char *t = jstr(l, "time");
    assert_non_null(t);
    assert_int_equal(strlen(t), 24);
    assert_true(t[4] == '-' && t[10] == 'T' && t[19] == '.' && t[23] == 'Z');
    assert_string_equal(jstr(l, "level"), "info");
    assert_string_equal(jstr(l, "type"), "access");
    assert_string_equal(jstr(l, "request_id"), rid);
    if (tier)
        assert_string_equal(jstr(l, "tier"), tier);
    else
        assert_true(json_is_null(json_object_get(l, "tier")));
    if (tenant)
        assert_string_equal(jstr(l, "tenant"), tenant);
    assert_string_equal(jstr(l, "method"), "GET");
    assert_string_equal(jstr(l, "path"), path);
    assert_int_equal(json_integer_value(json_object_get(l, "status")), status);
    assert_string_equal(jstr(l, "outcome"), outcome);
    double total = json_number_value(json_object_get(l, "total_ms"));
    double queue = json_number_value(json_object_get(l, "queue_ms"));
    double query = json_number_value(json_object_get(l, "query_ms"));
    assert_true(json_is_number(json_object_get(l, "total_ms")) && total >= 0);
    assert_true(json_is_number(json_object_get(l, "queue_ms")) && queue >= 0);
    assert_true(json_is_number(json_object_get(l, "query_ms")) && query >= 0);
    assert_true(queue + query <= total + 0.01);
    if (!strcmp(outcome, "ok") && path && !strcmp(path, "/api/data"))
        assert_true(query > 0); /* it ran a statement */
    else
        assert_true(query == 0);
}

static void each_request_logs_one_json_access_line(void **state)
{
    (void)state;
    char got[128];
    /* Admitted, answered by PostgreSQL. */
    assert_int_equal(
        obfx_request_as(&obfx_suite.srv, "/api/data", "pro", "acme", "obs-ok-1", got, sizeof(got)),
        200);
    assert_string_equal(got, "obs-ok-1");
    json_t *l = access_line(&obfx_suite.srv, "obs-ok-1");
    assert_access(l, "obs-ok-1", "pro", "acme", "/api/data", 200, "ok");
    json_decref(l);

    /* Refused by the rate limiter: free allows a tenant 2 requests a minute. */
    char rid[32] = "";
    long st = 0;
    for (int i = 0; i < 4 && st != 429; i++) {
        snprintf(rid, sizeof(rid), "obs-limited-%d", i);
        st = obfx_request_as(&obfx_suite.srv, "/api/data", "free", "log-free", rid, got,
                             sizeof(got));
    }
    assert_int_equal(st, 429);
    l = access_line(&obfx_suite.srv, rid);
    assert_access(l, rid, "free", "log-free", "/api/data", 429, "rate_limited");
    json_decref(l);

    /* No tier at all: tier is null. */
    assert_int_equal(obfx_request_as(&obfx_suite.srv, "/api/data", "platinum", NULL, "obs-400", got,
                                     sizeof(got)),
                     400);
    l = access_line(&obfx_suite.srv, "obs-400");
    assert_access(l, "obs-400", NULL, NULL, "/api/data", 400, "client_error");
    json_decref(l);

    /* Not an API path. */
    assert_int_equal(
        obfx_request_as(&obfx_suite.srv, "/nowhere", NULL, NULL, "obs-404", got, sizeof(got)), 404);
    l = access_line(&obfx_suite.srv, "obs-404");
    assert_access(l, "obs-404", NULL, NULL, "/nowhere", 404, "client_error");
    json_decref(l);

    /* Every line the server wrote is a JSON object with a time, a level and a type. */
    int bad;
    json_t *all = log_lines(&obfx_suite.srv, &bad);
    assert_int_equal(bad, 0);
    size_t i;
    json_array_foreach(all, i, l)
    {
        assert_non_null(jstr(l, "time"));
        assert_non_null(jstr(l, "level"));
        assert_non_null(jstr(l, "type"));
    }
    json_decref(all);
}

static void request_id_is_generated_or_replaced_when_invalid(void **state)
{
    (void)state;
    char got[128];
    /* None sent: one is generated, returned and logged. */
    assert_int_equal(
        obfx_request_as(&obfx_suite.srv, "/health", NULL, NULL, NULL, got, sizeof(got)), 200);
    assert_true(valid_request_id(got));
    json_t *l = access_line(&obfx_suite.srv, got);
    assert_access(l, got, NULL, NULL, "/health", 200, "ok");
    json_decref(l);

    static const char *const invalid[] = {
        "has space", "quote\"inside", "semi;colon",
        "01234567890123456789012345678901234567890123456789012345678901234", /* 65 chars */
    };
    char seen[4][128];
    for (size_t i = 0; i < sizeof(invalid) / sizeof(invalid[0]); i++) {
        assert_int_equal(
            obfx_request_as(&obfx_suite.srv, "/health", NULL, NULL, invalid[i], got, sizeof(got)),
            200);
        assert_string_not_equal(got, invalid[i]);
        assert_true(valid_request_id(got));
        snprintf(seen[i], sizeof(seen[i]), "%s", got);
        for (size_t j = 0; j < i; j++)
            assert_string_not_equal(seen[j], got); /* a fresh id each time */
        l = access_line(&obfx_suite.srv, got);
        json_decref(l);
        /* The rejected value never reaches the log. */
        assert_int_equal(access_lines_for(&obfx_suite.srv, invalid[i], NULL), 0);
    }
    assert_false(h_server_log_has(&obfx_suite.srv, "has space"));
    assert_false(h_server_log_has(&obfx_suite.srv,
                                  "0123456789012345678901234567890123456789012345678901234"
                                  "567890123"));

    /* The longest valid id (64 characters) is kept as is. */
    const char *max = "A123456789012345678901234567890123456789012345678901234567890123";
    assert_int_equal(strlen(max), 64);
    assert_int_equal(obfx_request_as(&obfx_suite.srv, "/health", NULL, NULL, max, got, sizeof(got)),
                     200);
    assert_string_equal(got, max);
    l = access_line(&obfx_suite.srv, max);
    json_decref(l);
}

static void text_format_writes_text_lines(void **state)
{
    (void)state;
    struct h_server s;
    assert_int_equal(start_with(&s, "LOG_FORMAT=text"), 0);
    char got[128];
    assert_int_equal(obfx_request_as(&s, "/api/data", "pro", "texter", "txt-1", got, sizeof(got)),
                     200);
    assert_true(wait_log(&s, "request_id=txt-1"));
    assert_int_equal(h_server_log_count(&s, "request_id=txt-1"), 1);
    char *text = h_read_file(s.log);
    assert_non_null(text);
    const char *line = strstr(text, "request_id=txt-1");
    while (line > text && line[-1] != '\n')
        line--;
    const char *end = strchr(line, '\n');
    char buf[1024];
    snprintf(buf, sizeof(buf), "%.*s", (int)(end ? end - line : (long)strlen(line)), line);
    /* 2026-11-28T07:01:02.345Z info  access 200 method=GET path=/api/data tier=pro ... */
    assert_true(isdigit((unsigned char)buf[0]));
    assert_non_null(strstr(buf, " access 200 "));
    assert_non_null(strstr(buf, " method=GET"));
    assert_non_null(strstr(buf, " path=/api/data"));
    assert_non_null(strstr(buf, " tier=pro"));
    assert_non_null(strstr(buf, " tenant=texter"));
    assert_non_null(strstr(buf, " outcome=ok"));
    assert_non_null(strstr(buf, " total_ms="));
    assert_non_null(strstr(buf, " queue_ms="));
    assert_non_null(strstr(buf, " query_ms="));
    /* No line is JSON; events are text too. */
    for (const char *p = text; *p;) {
        assert_true(*p != '{');
        const char *nl = strchr(p, '\n');
        if (!nl)
            break;
        p = nl + 1;
    }
    assert_non_null(strstr(text, " ready: bulkhead"));
    free(text);
    assert_int_equal(h_server_stop(&s, SIGTERM, 20000), 0);
}

/* force_error calls from distinct tenants (free allows 2 per tenant) until free's breaker
 * opens; returns the number sent. */
static int open_free_breaker(const struct h_server *s)
{
    int sent = 0;
    for (int i = 0; i < 5; i++) {
        char tenant[32];
        snprintf(tenant, sizeof(tenant), "failing-%d", i);
        long st = obfx_request_as(s, "/api/data?force_error=true", "free", tenant, NULL, NULL, 0);
        assert_int_equal(st, 500);
        sent++;
    }
    return sent;
}

static const char *breaker_of(const struct h_server *s, const char *tier, char *buf, size_t len)
{
    return h_metric_text(s->base, tier, "circuitBreaker", "state", buf, len);
}

static void warn_level_suppresses_access_lines(void **state)
{
    (void)state;
    struct h_server s;
    assert_int_equal(start_with(&s, "LOG_LEVEL=warn"), 0);
    for (int i = 0; i < 3; i++) {
        char rid[32];
        snprintf(rid, sizeof(rid), "warn-%d", i);
        assert_int_equal(obfx_request_as(&s, "/api/data", "pro", "quiet", rid, NULL, 0), 200);
    }
    open_free_breaker(&s);
    /* A warning still gets through, so the log is being written... */
    assert_true(wait_log(&s, "\"event\":\"breaker_open\""));
    char st[32];
    assert_string_equal(breaker_of(&s, "free", st, sizeof(st)), "OPEN");
    /* ...but no access line, and no info event. */
    assert_false(h_server_log_has(&s, "warn-0"));
    assert_false(h_server_log_has(&s, "warn-2"));
    assert_false(h_server_log_has(&s, "\"type\":\"access\""));
    assert_false(h_server_log_has(&s, "\"level\":\"info\""));
    assert_int_equal(event_count(&s, "breaker_open", NULL), 1);
    assert_int_equal(h_server_stop(&s, SIGTERM, 20000), 0);
}

static void access_log_false_writes_no_access_lines(void **state)
{
    (void)state;
    struct h_server s;
    assert_int_equal(start_with(&s, "ACCESS_LOG=false"), 0);
    assert_int_equal(obfx_request_as(&s, "/api/data", "pro", "quiet", "noaccess-1", NULL, 0), 200);
    assert_int_equal(h_server_stop(&s, SIGTERM, 20000), 0);
    /* Stopped: every line is written. Events are there, access lines are not. */
    assert_int_equal(event_count(&s, "ready", NULL), 1);
    assert_false(h_server_log_has(&s, "noaccess-1"));
    assert_false(h_server_log_has(&s, "\"type\":\"access\""));
}

static void sampled_access_log_keeps_every_refusal_error_and_slow_request(void **state)
{
    (void)state;
    struct h_server s;
    /* Slow means 1 s here: on a machine busy with other tests, a plain read (the first one
     * opens a connection) took 232 ms and was rightly logged as slow. */
    assert_int_equal(start_with2(&s, "ACCESS_LOG_SAMPLE=0", "ACCESS_LOG_SLOW_MS=1000"), 0);
    char rid[32];
    for (int i = 0; i < 5; i++) {
        snprintf(rid, sizeof(rid), "sampled-ok-%d", i);
        assert_int_equal(obfx_request_as(&s, "/api/data", "pro", "sampled", rid, NULL, 0), 200);
    }
    /* free allows a tenant 2 requests a minute: 2 successes, then 2 refusals. */
    long want[] = {200, 200, 429, 429};
    for (int i = 0; i < 4; i++) {
        snprintf(rid, sizeof(rid), "sampled-free-%d", i);
        assert_int_equal(obfx_request_as(&s, "/api/data", "free", "sampled", rid, NULL, 0),
                         want[i]);
    }
    assert_int_equal(obfx_request_as(&s, "/nowhere", NULL, NULL, "sampled-404", NULL, 0), 404);
    assert_int_equal(
        obfx_request_as(&s, "/api/data?force_error=true", "pro", "sampled", "sampled-500", NULL, 0),
        500);
    /* Slower than ACCESS_LOG_SLOW_MS: a 1,050 ms statement cannot be faster. */
    assert_int_equal(
        obfx_request_as(&s, "/api/data?delay_ms=1050", "pro", "sampled", "sampled-slow", NULL, 0),
        200);
    assert_int_equal(h_server_stop(&s, SIGTERM, 20000), 0);
    /* Stopped: every line is written. */
    for (int i = 0; i < 5; i++) {
        snprintf(rid, sizeof(rid), "sampled-ok-%d", i);
        assert_int_equal(access_lines_for(&s, rid, NULL), 0);
    }
    assert_int_equal(access_lines_for(&s, "sampled-free-0", NULL), 0);
    assert_int_equal(access_lines_for(&s, "sampled-free-1", NULL), 0);
    const char *kept[] = {"sampled-free-2", "sampled-free-3", "sampled-404", "sampled-500",
                          "sampled-slow"};
    for (size_t i = 0; i < sizeof(kept) / sizeof(kept[0]); i++)
        if (access_lines_for(&s, kept[i], NULL) != 1)
            fail_msg("no access line (or more than one) for %s", kept[i]);
    assert_int_equal(h_server_log_count(&s, "\"type\":\"access\""), 5);
}

static void lifecycle_events_are_logged_once_with_their_cause(void **state)
{
    (void)state;
    struct h_server s;
    assert_int_equal(start_with(&s, NULL), 0);
    open_free_breaker(&s);
    char st[32];
    assert_string_equal(breaker_of(&s, "free", st, sizeof(st)), "OPEN");
    /* More calls are refused by the open breaker; it does not open again. */
    for (int i = 0; i < 3; i++) {
        char tenant[32];
        snprintf(tenant, sizeof(tenant), "after-%d", i);
        assert_int_equal(obfx_request_as(&s, "/api/data", "free", tenant, NULL, NULL, 0), 503);
    }
    assert_int_equal(h_server_stop(&s, SIGTERM, 20000), 0);

    assert_int_equal(event_count(&s, "ready", NULL), 1);
    assert_int_equal(event_count(&s, "breaker_open", NULL), 1);
    /* The cause: which tier, and the failures that tripped it. */
    assert_int_equal(event_count(&s, "breaker_open", "free"), 1);
    assert_int_equal(event_count(&s, "breaker_open", "5 of 5 calls failed"), 1);
    assert_int_equal(event_count(&s, "shutdown", "SIGTERM received"), 1);
    assert_int_equal(event_count(&s, "shutdown", "stopped cleanly"), 1);
    assert_int_equal(event_count(&s, "breaker_closed", NULL), 0);
    /* breaker_open is a warning; ready and shutdown are info. */
    int bad;
    json_t *all = log_lines(&s, &bad);
    assert_int_equal(bad, 0);
    size_t i;
    json_t *l;
    json_array_foreach(all, i, l)
    {
        const char *e = jstr(l, "event");
        if (!e)
            continue;
        if (!strcmp(e, "breaker_open"))
            assert_string_equal(jstr(l, "level"), "warn");
        if (!strcmp(e, "ready") || !strcmp(e, "shutdown"))
            assert_string_equal(jstr(l, "level"), "info");
    }
    json_decref(all);
    /* The order of a life: ready before breaker_open before shutdown. */
    char *text = h_read_file(s.log);
    const char *ready = strstr(text, "\"event\":\"ready\"");
    const char *open = strstr(text, "\"event\":\"breaker_open\"");
    const char *down = strstr(text, "SIGTERM received");
    assert_true(ready && open && down && ready < open && open < down);
    free(text);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(each_request_logs_one_json_access_line),
        cmocka_unit_test(request_id_is_generated_or_replaced_when_invalid),
        cmocka_unit_test(text_format_writes_text_lines),
        cmocka_unit_test(warn_level_suppresses_access_lines),
        cmocka_unit_test(access_log_false_writes_no_access_lines),
        cmocka_unit_test(sampled_access_log_keeps_every_refusal_error_and_slow_request),
        cmocka_unit_test(lifecycle_events_are_logged_once_with_their_cause),
    };
    return cmocka_run_group_tests(tests, setup, obfx_teardown);
}
