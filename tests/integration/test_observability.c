/*
 * test_observability: what operators read, against the real binary and a real PostgreSQL.
 *
 * - /metrics: the whole exposition is parsed by a parser of the Prometheus text format 0.0.4
 *   written here (comments, names, escaped label values, float values with +Inf/NaN), then
 *   checked family by family: one # HELP and one # TYPE before the samples, counters ending in
 *   _total, histograms well formed, units in seconds, a series per tier, and counters moving by
 *   exactly the traffic sent.
 * - Access log: one JSON line per request with the right values, the request id the client got;
 *   LOG_FORMAT=text, LOG_LEVEL=warn, X-Request-Id validation; ACCESS_LOG_SAMPLE=0 drops the
 *   successes' lines and keeps every refusal's, error's and slow request's.
 * - The event loops' lag: a histogram per HTTP thread in /metrics, and in the dashboard's data.
 * - Lifecycle events (ready, breaker_open, shutdown) logged once each, with their cause.
 */
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

/* free: 2 requests per minute per tenant, a breaker that stays open once it opens. */
static struct h_suite suite = {.name = "observability",
                               .tiers_json =
                                   "{\"free\": {\"workers\": 4, \"db_max\": 2, \"rate_limit\": 2,"
                                   " \"breaker_reset_ms\": 600000, \"breaker_min_calls\": 5},"
                                   " \"pro\": {\"workers\": 8, \"db_max\": 4},"
                                   " \"enterprise\": {\"workers\": 8, \"db_max\": 4}}"};

static const char *const tier_names[] = {"free", "pro", "enterprise"};
#define NTIERS 3

/* ---- the scrape ------------------------------------------------------------------------ */

static int scrape(const struct h_server *s, struct prom_doc *d)
{
    struct h_resp r;
    if (h_get(h_url(s, "/metrics"), NULL, &r) || r.status != 200) {
        h_resp_free(&r);
        return -1;
    }
    char err[512];
    int rc = prom_parse(r.body, d, err, sizeof(err));
    if (rc)
        fprintf(stderr, "prometheus parse error: %s\n", err);
    h_resp_free(&r);
    return rc;
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
    snprintf(tiers_env, sizeof(tiers_env), "TIERS_FILE=%s", suite.tiers_path);
    const char *env[] = {tiers_env, extra, more2, NULL};
    return h_server_start(s, suite.db_url, env);
}

static int start_with(struct h_server *s, const char *extra)
{
    return start_with2(s, extra, NULL);
}

static int setup(void **state)
{
    (void)state;
    return h_suite_start(&suite);
}

static int teardown(void **state)
{
    (void)state;
    h_suite_stop(&suite);
    return 0;
}

/* One request; returns the status and copies the X-Request-Id the server sent back. */
static long request_as(const struct h_server *s, const char *path, const char *tier,
                       const char *tenant, const char *rid, char *rid_out, size_t rid_len)
{
    char th[64], tn[96], rh[200];
    const char *h[4];
    size_t n = 0;
    if (tier) {
        snprintf(th, sizeof(th), "X-Tenant-Tier: %s", tier);
        h[n++] = th;
    }
    if (tenant) {
        snprintf(tn, sizeof(tn), "X-Tenant-ID: %s", tenant);
        h[n++] = tn;
    }
    if (rid) {
        snprintf(rh, sizeof(rh), "X-Request-Id: %s", rid);
        h[n++] = rh;
    }
    h[n] = NULL;
    struct h_resp r;
    if (h_get(h_url(s, path), h, &r)) {
        h_resp_free(&r);
        return 0;
    }
    if (rid_out && !h_header(&r, "X-Request-Id", rid_out, rid_len))
        rid_out[0] = '\0';
    long st = r.status;
    h_resp_free(&r);
    return st;
}

/* ---- /metrics ------------------------------------------------------------------------- */

static void metrics_is_prometheus_text_0_0_4(void **state)
{
    (void)state;
    struct h_resp r;
    assert_int_equal(h_get(h_url(&suite.srv, "/metrics"), NULL, &r), 0);
    assert_int_equal(r.status, 200);
    char ct[128];
    assert_non_null(h_header(&r, "Content-Type", ct, sizeof(ct)));
    assert_true(!strncmp(ct, "text/plain", 10));
    assert_non_null(strstr(ct, "version=0.0.4"));
    struct prom_doc d;
    char err[512] = "";
    int rc = prom_parse(r.body, &d, err, sizeof(err));
    if (rc)
        fprintf(stderr, "%s\n", err);
    assert_int_equal(rc, 0);
    h_resp_free(&r);
    assert_true(d.ns > 100);
    /* Every family that was declared has samples (no dangling HELP/TYPE). */
    for (size_t i = 0; i < d.nfam; i++) {
        if (!d.fam[i].nsamples || d.fam[i].helps != 1 || d.fam[i].types != 1)
            fprintf(stderr, "family %s: %zu samples, %d HELP, %d TYPE\n", d.fam[i].name,
                    d.fam[i].nsamples, d.fam[i].helps, d.fam[i].types);
        assert_true(d.fam[i].nsamples > 0);
        assert_int_equal(d.fam[i].helps, 1);
        assert_int_equal(d.fam[i].types, 1);
    }
    prom_free(&d);
}

static void metric_names_follow_prometheus_conventions(void **state)
{
    (void)state;
    struct prom_doc d;
    assert_int_equal(scrape(&suite.srv, &d), 0);
    for (size_t i = 0; i < d.nfam; i++) {
        const struct prom_family *f = &d.fam[i];
        size_t nl = strlen(f->name);
        /* Counters end in _total, and only counters do. */
        bool total = nl > 6 && !strcmp(f->name + nl - 6, "_total");
        if (total != !strcmp(f->type, "counter"))
            fprintf(stderr, "family %s of type %s\n", f->name, f->type);
        assert_true(total == !strcmp(f->type, "counter"));
        /* Base units: seconds, never milli- or microseconds. */
        assert_null(strstr(f->name, "_ms"));
        assert_null(strstr(f->name, "millis"));
        assert_null(strstr(f->name, "micro"));
        assert_null(strstr(f->name, "_us_"));
        if (!strcmp(f->type, "histogram") || strstr(f->name, "duration") ||
            strstr(f->name, "wait") || strstr(f->name, "latency") || strstr(f->name, "_time_") ||
            (nl > 5 && !strcmp(f->name + nl - 5, "_time"))) {
            if (!strstr(f->name, "_seconds"))
                fprintf(stderr, "family %s measures time without _seconds\n", f->name);
            assert_non_null(strstr(f->name, "_seconds"));
        }
        /* A name is snake_case under the project's prefix (or the standard process_ one). */
        assert_true(!strncmp(f->name, "bulkhead_", 9) || !strncmp(f->name, "process_", 8));
        for (const char *c = f->name; *c; c++)
            assert_true(islower((unsigned char)*c) || isdigit((unsigned char)*c) || *c == '_');
    }
    prom_free(&d);
}

struct counts_wait {
    double want;
    const char *tier;
    const char *outcome;
};

static bool outcome_reached(void *arg)
{
    struct counts_wait *w = arg;
    struct prom_doc d;
    if (scrape(&suite.srv, &d))
        return false;
    double v = prom_value(&d, "bulkhead_requests_total", 2, "tier", w->tier, "outcome", w->outcome);
    prom_free(&d);
    return v >= w->want;
}

static void histograms_are_cumulative_and_end_at_inf(void **state)
{
    (void)state;
    /* Some traffic so the buckets are not all zero. */
    for (int i = 0; i < 3; i++)
        assert_int_equal(request_as(&suite.srv, "/api/data", "enterprise", "hist", NULL, NULL, 0),
                         200);
    /* A request is counted when it completes, just after its response went out. */
    struct counts_wait w = {3, "enterprise", "ok"};
    assert_true(h_wait_until(outcome_reached, &w, 10000));
    struct prom_doc d;
    assert_int_equal(scrape(&suite.srv, &d), 0);
    int histograms = 0, series_checked = 0;
    for (size_t f = 0; f < d.nfam; f++) {
        if (strcmp(d.fam[f].type, "histogram"))
            continue;
        histograms++;
        char bucket[PROM_NAME_MAX + 8], sum[PROM_NAME_MAX + 8], count[PROM_NAME_MAX + 8];
        snprintf(bucket, sizeof(bucket), "%s_bucket", d.fam[f].name);
        snprintf(sum, sizeof(sum), "%s_sum", d.fam[f].name);
        snprintf(count, sizeof(count), "%s_count", d.fam[f].name);
        /* Walk the family's samples series by series (labels other than le). */
        for (size_t i = 0; i < d.ns; i++) {
            const struct prom_sample *s = &d.s[i];
            if (s->family != f)
                continue;
            /* Only _bucket, _sum, _count belong to a histogram family. */
            assert_true(!strcmp(s->name, bucket) || !strcmp(s->name, sum) ||
                        !strcmp(s->name, count));
            if (strcmp(s->name, bucket) || !prom_label(s, "le"))
                continue;
            char key[512];
            prom_series_key(s, key, sizeof(key));
            /* Start of a series: the first bucket with this key. */
            bool seen = false;
            for (size_t j = 0; j < i && !seen; j++) {
                char k2[512];
                if (d.s[j].family == f && !strcmp(d.s[j].name, bucket)) {
                    prom_series_key(&d.s[j], k2, sizeof(k2));
                    seen = !strcmp(k2, key);
                }
            }
            if (seen)
                continue;
            double prev_le = -INFINITY, prev_v = 0, inf_v = NAN, count_v = NAN, sum_v = NAN;
            int nb = 0;
            for (size_t j = i; j < d.ns; j++) {
                const struct prom_sample *b = &d.s[j];
                if (b->family != f)
                    continue;
                char k2[512];
                prom_series_key(b, k2, sizeof(k2));
                if (strcmp(k2, key))
                    continue;
                if (!strcmp(b->name, bucket)) {
                    double le;
                    assert_true(prom_parse_float(prom_label(b, "le"), &le));
                    assert_true(le > prev_le);       /* strictly increasing bounds */
                    assert_true(b->value >= prev_v); /* cumulative */
                    assert_true(isnan(inf_v));       /* nothing after +Inf */
                    prev_le = le;
                    prev_v = b->value;
                    nb++;
                    if (isinf(le))
                        inf_v = b->value;
                } else if (!strcmp(b->name, count)) {
                    count_v = b->value;
                } else {
                    sum_v = b->value;
                }
            }
            assert_true(nb >= 2);
            assert_false(isnan(inf_v)); /* the last bucket is +Inf */
            assert_false(isnan(count_v));
            assert_true(count_v == inf_v);
            assert_false(isnan(sum_v));
            assert_true(sum_v >= 0);
            series_checked++;
        }
    }
    /* Total latency, queue wait and query time, per tier. */
    assert_true(histograms >= 3);
    assert_true(series_checked >= 3 * NTIERS);
    assert_true(
        prom_value(&d, "bulkhead_request_duration_seconds_count", 1, "tier", "enterprise") >= 3);
    prom_free(&d);
}

static void every_tier_has_its_series(void **state)
{
    (void)state;
    struct prom_doc d;
    assert_int_equal(scrape(&suite.srv, &d), 0);
    static const char *const per_tier[] = {
        "bulkhead_workers",
        "bulkhead_workers_busy",
        "bulkhead_queue_depth",
        "bulkhead_queue_limit",
        "bulkhead_db_connections_active",
        "bulkhead_db_connections_idle",
        "bulkhead_db_connections_max",
        "bulkhead_tenants_active",
        "bulkhead_breaker_opened_total",
        "bulkhead_request_duration_seconds_count",
        "bulkhead_queue_wait_seconds_count",
        "bulkhead_query_duration_seconds_count",
    };
    for (size_t t = 0; t < NTIERS; t++) {
        const char *tier = tier_names[t];
        for (size_t i = 0; i < sizeof(per_tier) / sizeof(per_tier[0]); i++) {
            if (isnan(prom_value(&d, per_tier[i], 1, "tier", tier)))
                fprintf(stderr, "missing %s{tier=\"%s\"}\n", per_tier[i], tier);
            assert_false(isnan(prom_value(&d, per_tier[i], 1, "tier", tier)));
        }
        static const char *const outcomes[] = {
            "ok",           "rate_limited", "bulkhead_full", "queue_timeout",
            "pool_timeout", "circuit_open", "error",         "timeout",
            "client_error", "unavailable",  "held",          "shed"};
        for (size_t o = 0; o < sizeof(outcomes) / sizeof(outcomes[0]); o++)
            assert_false(isnan(prom_value(&d, "bulkhead_requests_total", 2, "tier", tier, "outcome",
                                          outcomes[o])));
        assert_false(
            isnan(prom_value(&d, "bulkhead_responses_total", 2, "tier", tier, "code", "200")));
        /* The breaker state is one-hot. */
        double on = 0;
        static const char *const states[] = {"CLOSED", "OPEN", "HALF_OPEN"};
        for (size_t s = 0; s < 3; s++) {
            double v =
                prom_value(&d, "bulkhead_breaker_state", 2, "tier", tier, "state", states[s]);
            assert_true(v == 0 || v == 1);
            on += v;
        }
        assert_true(on == 1);
        /* The configured sizes, as set by the tiers file. */
        assert_true(prom_value(&d, "bulkhead_workers", 1, "tier", tier) == (t == 0 ? 4 : 8));
    }
    prom_free(&d);
}

static double delta(const struct prom_doc *a, const struct prom_doc *b, const char *name,
                    const char *tier, const char *k2, const char *v2)
{
    double x =
        k2 ? prom_value(a, name, 2, "tier", tier, k2, v2) : prom_value(a, name, 1, "tier", tier);
    double y =
        k2 ? prom_value(b, name, 2, "tier", tier, k2, v2) : prom_value(b, name, 1, "tier", tier);
    return y - x;
}

static void counters_move_by_exactly_the_traffic_sent(void **state)
{
    (void)state;
    struct prom_doc a, b;
    assert_int_equal(scrape(&suite.srv, &a), 0);
    double pro_ok = prom_value(&a, "bulkhead_requests_total", 2, "tier", "pro", "outcome", "ok");
    double free_rl =
        prom_value(&a, "bulkhead_requests_total", 2, "tier", "free", "outcome", "rate_limited");

    for (int i = 0; i < 3; i++)
        assert_int_equal(request_as(&suite.srv, "/api/data", "pro", "counter-pro", NULL, NULL, 0),
                         200);
    assert_int_equal(
        request_as(&suite.srv, "/api/data?limit=zero", "pro", "counter-pro", NULL, NULL, 0), 400);
    /* free allows 2 per tenant per minute: the third is refused. */
    assert_int_equal(request_as(&suite.srv, "/api/data", "free", "counter-free", NULL, NULL, 0),
                     200);
    assert_int_equal(request_as(&suite.srv, "/api/data", "free", "counter-free", NULL, NULL, 0),
                     200);
    assert_int_equal(request_as(&suite.srv, "/api/data", "free", "counter-free", NULL, NULL, 0),
                     429);

    /* A request is counted when it completes, just after its response went out. */
    struct counts_wait w1 = {pro_ok + 3, "pro", "ok"}, w2 = {free_rl + 1, "free", "rate_limited"};
    assert_true(h_wait_until(outcome_reached, &w1, 10000));
    assert_true(h_wait_until(outcome_reached, &w2, 10000));
    struct counts_wait w3 = {
        prom_value(&a, "bulkhead_requests_total", 2, "tier", "pro", "outcome", "client_error") + 1,
        "pro", "client_error"};
    assert_true(h_wait_until(outcome_reached, &w3, 10000));
    assert_int_equal(scrape(&suite.srv, &b), 0);

    assert_true(delta(&a, &b, "bulkhead_requests_total", "pro", "outcome", "ok") == 3);
    assert_true(delta(&a, &b, "bulkhead_requests_total", "pro", "outcome", "client_error") == 1);
    assert_true(delta(&a, &b, "bulkhead_requests_total", "pro", "outcome", "rate_limited") == 0);
    assert_true(delta(&a, &b, "bulkhead_responses_total", "pro", "code", "200") == 3);
    assert_true(delta(&a, &b, "bulkhead_responses_total", "pro", "code", "400") == 1);
    assert_true(delta(&a, &b, "bulkhead_request_duration_seconds_count", "pro", NULL, NULL) == 4);
    /* Only the three admitted requests waited in the queue and ran a query. */
    assert_true(delta(&a, &b, "bulkhead_queue_wait_seconds_count", "pro", NULL, NULL) == 3);
    assert_true(delta(&a, &b, "bulkhead_query_duration_seconds_count", "pro", NULL, NULL) == 3);
    assert_true(delta(&a, &b, "bulkhead_query_duration_seconds_sum", "pro", NULL, NULL) > 0);

    assert_true(delta(&a, &b, "bulkhead_requests_total", "free", "outcome", "ok") == 2);
    assert_true(delta(&a, &b, "bulkhead_requests_total", "free", "outcome", "rate_limited") == 1);
    assert_true(delta(&a, &b, "bulkhead_responses_total", "free", "code", "429") == 1);
    assert_true(delta(&a, &b, "bulkhead_ratelimit_decisions_total", "free", "result", "allowed") ==
                2);
    assert_true(delta(&a, &b, "bulkhead_ratelimit_decisions_total", "free", "result", "rejected") ==
                1);
    /* enterprise saw nothing. */
    assert_true(
        delta(&a, &b, "bulkhead_request_duration_seconds_count", "enterprise", NULL, NULL) == 0);
    prom_free(&a);
    prom_free(&b);
}

/* bulkhead_build_info and the Prometheus client libraries' process_* metrics (issue 18). */
static void build_info_and_process_metrics_are_exported(void **state)
{
    (void)state;
    struct prom_doc d;
    assert_int_equal(scrape(&suite.srv, &d), 0);
    assert_true(prom_value(&d, "bulkhead_build_info", 1, "version", BULKHEAD_VERSION) == 1);
    double fds = prom_value(&d, "process_open_fds", 0), max = prom_value(&d, "process_max_fds", 0);
    assert_true(fds >= 3 && fds <= max);
    /* Every worker of the three tiers (4 + 8 + 8) is a thread, besides the HTTP ones. */
    assert_true(prom_value(&d, "process_threads", 0) > 20);
    double rss = prom_value(&d, "process_resident_memory_bytes", 0);
    assert_true(rss > 0 && rss < prom_value(&d, "process_virtual_memory_bytes", 0));
    assert_true(prom_value(&d, "process_cpu_seconds_total", 0) > 0);
    double start = prom_value(&d, "process_start_time_seconds", 0);
    double now = (double)time(NULL);
    assert_true(start > now - 3600 && start <= now + 1);
    prom_free(&d);
}

/* The lag probe of HTTP thread 0 has read its loop at least n times. */
static bool loop_probed(void *arg)
{
    struct prom_doc d;
    if (scrape(&suite.srv, &d))
        return false;
    double v = prom_value(&d, "bulkhead_event_loop_lag_seconds_count", 1, "loop", "0");
    prom_free(&d);
    return v >= *(double *)arg;
}

/* The dashboard has a sample (one a second). */
static bool has_samples(void *arg)
{
    (void)arg;
    json_t *hist = h_get_json(h_url(&suite.srv, "/dashboard/data?since=0"));
    bool ok = hist && json_array_size(json_object_get(hist, "samples")) > 0;
    json_decref(hist);
    return ok;
}

/* Each HTTP thread's loop probes its lag (every 10 ms): a histogram per loop in /metrics, and
 * the worst loop's p50/p99 per dashboard sample. */
static void each_event_loop_reports_its_lag(void **state)
{
    (void)state;
    double probes = 5;
    assert_true(h_wait_until(loop_probed, &probes, 10000));
    struct prom_doc d;
    assert_int_equal(scrape(&suite.srv, &d), 0);
    /* One series per HTTP thread, numbered from 0, each with probes. */
    int loops = 0;
    for (;; loops++) {
        char idx[16];
        snprintf(idx, sizeof(idx), "%d", loops);
        double n = prom_value(&d, "bulkhead_event_loop_lag_seconds_count", 1, "loop", idx);
        if (isnan(n))
            break;
        assert_true(n > 0);
    }
    assert_true(loops >= 1);
    prom_free(&d);
    assert_true(h_wait_until(has_samples, NULL, 10000));
    json_t *hist = h_get_json(h_url(&suite.srv, "/dashboard/data?since=0"));
    assert_non_null(hist);
    assert_int_equal(
        json_integer_value(json_object_get(json_object_get(hist, "server"), "eventLoops")), loops);
    json_t *samples = json_object_get(hist, "samples");
    assert_true(json_array_size(samples) > 0);
    size_t i;
    json_t *smp;
    json_array_foreach(samples, i, smp)
    {
        json_t *lag = json_object_get(json_object_get(smp, "eventLoops"), "lagMs");
        assert_true(json_is_number(json_object_get(lag, "p50")));
        assert_true(json_is_number(json_object_get(lag, "p99")));
        assert_true(json_number_value(json_object_get(lag, "p99")) >=
                    json_number_value(json_object_get(lag, "p50")));
    }
    json_decref(hist);
}

static double responses(const char *tier, const char *code)
{
    struct prom_doc d;
    if (scrape(&suite.srv, &d))
        return NAN;
    double v = prom_value(&d, "bulkhead_responses_total", 2, "tier", tier, "code", code);
    prom_free(&d);
    return v;
}

/* Every status the server answers has its own series; "other" stays empty. A chunked body
 * (411) and a client that leaves before its answer (499) used to land in "other". */
static void every_status_code_has_its_label(void **state)
{
    (void)state;
    static const char *const codes[] = {"200", "201", "204", "400", "401", "403", "404",
                                        "405", "408", "409", "411", "413", "414", "415",
                                        "429", "431", "499", "500", "503", "504", "505"};
    for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); i++)
        assert_false(isnan(responses("none", codes[i])));
    double before = responses("none", "411"), other = responses("none", "other");
    const char *const hdrs[] = {"X-Tenant-Tier: free", "Content-Type: application/json",
                                "Transfer-Encoding: chunked", NULL};
    struct h_resp r;
    assert_int_equal(
        h_request("POST", h_url(&suite.srv, "/api/data"), hdrs, "{\"payload\":{}}", &r), 0);
    assert_int_equal(r.status, 411);
    h_resp_free(&r);
    assert_true(H_WAIT(responses("none", "411") == before + 1, 10000));
    assert_true(responses("none", "other") == other);
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
        request_as(&suite.srv, "/api/data", "pro", "acme", "obs-ok-1", got, sizeof(got)), 200);
    assert_string_equal(got, "obs-ok-1");
    json_t *l = access_line(&suite.srv, "obs-ok-1");
    assert_access(l, "obs-ok-1", "pro", "acme", "/api/data", 200, "ok");
    json_decref(l);

    /* Refused by the rate limiter: free allows a tenant 2 requests a minute. */
    char rid[32] = "";
    long st = 0;
    for (int i = 0; i < 4 && st != 429; i++) {
        snprintf(rid, sizeof(rid), "obs-limited-%d", i);
        st = request_as(&suite.srv, "/api/data", "free", "log-free", rid, got, sizeof(got));
    }
    assert_int_equal(st, 429);
    l = access_line(&suite.srv, rid);
    assert_access(l, rid, "free", "log-free", "/api/data", 429, "rate_limited");
    json_decref(l);

    /* No tier at all: tier is null. */
    assert_int_equal(
        request_as(&suite.srv, "/api/data", "platinum", NULL, "obs-400", got, sizeof(got)), 400);
    l = access_line(&suite.srv, "obs-400");
    assert_access(l, "obs-400", NULL, NULL, "/api/data", 400, "client_error");
    json_decref(l);

    /* Not an API path. */
    assert_int_equal(request_as(&suite.srv, "/nowhere", NULL, NULL, "obs-404", got, sizeof(got)),
                     404);
    l = access_line(&suite.srv, "obs-404");
    assert_access(l, "obs-404", NULL, NULL, "/nowhere", 404, "client_error");
    json_decref(l);

    /* Every line the server wrote is a JSON object with a time, a level and a type. */
    int bad;
    json_t *all = log_lines(&suite.srv, &bad);
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
    assert_int_equal(request_as(&suite.srv, "/health", NULL, NULL, NULL, got, sizeof(got)), 200);
    assert_true(valid_request_id(got));
    json_t *l = access_line(&suite.srv, got);
    assert_access(l, got, NULL, NULL, "/health", 200, "ok");
    json_decref(l);

    static const char *const invalid[] = {
        "has space", "quote\"inside", "semi;colon",
        "01234567890123456789012345678901234567890123456789012345678901234", /* 65 chars */
    };
    char seen[4][128];
    for (size_t i = 0; i < sizeof(invalid) / sizeof(invalid[0]); i++) {
        assert_int_equal(
            request_as(&suite.srv, "/health", NULL, NULL, invalid[i], got, sizeof(got)), 200);
        assert_string_not_equal(got, invalid[i]);
        assert_true(valid_request_id(got));
        snprintf(seen[i], sizeof(seen[i]), "%s", got);
        for (size_t j = 0; j < i; j++)
            assert_string_not_equal(seen[j], got); /* a fresh id each time */
        l = access_line(&suite.srv, got);
        json_decref(l);
        /* The rejected value never reaches the log. */
        assert_int_equal(access_lines_for(&suite.srv, invalid[i], NULL), 0);
    }
    assert_false(h_server_log_has(&suite.srv, "has space"));
    assert_false(h_server_log_has(&suite.srv,
                                  "0123456789012345678901234567890123456789012345678901234"
                                  "567890123"));

    /* The longest valid id (64 characters) is kept as is. */
    const char *max = "A123456789012345678901234567890123456789012345678901234567890123";
    assert_int_equal(strlen(max), 64);
    assert_int_equal(request_as(&suite.srv, "/health", NULL, NULL, max, got, sizeof(got)), 200);
    assert_string_equal(got, max);
    l = access_line(&suite.srv, max);
    json_decref(l);
}

static void text_format_writes_text_lines(void **state)
{
    (void)state;
    struct h_server s;
    assert_int_equal(start_with(&s, "LOG_FORMAT=text"), 0);
    char got[128];
    assert_int_equal(request_as(&s, "/api/data", "pro", "texter", "txt-1", got, sizeof(got)), 200);
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
        long st = request_as(s, "/api/data?force_error=true", "free", tenant, NULL, NULL, 0);
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
        assert_int_equal(request_as(&s, "/api/data", "pro", "quiet", rid, NULL, 0), 200);
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
    assert_int_equal(request_as(&s, "/api/data", "pro", "quiet", "noaccess-1", NULL, 0), 200);
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
        assert_int_equal(request_as(&s, "/api/data", "pro", "sampled", rid, NULL, 0), 200);
    }
    /* free allows a tenant 2 requests a minute: 2 successes, then 2 refusals. */
    long want[] = {200, 200, 429, 429};
    for (int i = 0; i < 4; i++) {
        snprintf(rid, sizeof(rid), "sampled-free-%d", i);
        assert_int_equal(request_as(&s, "/api/data", "free", "sampled", rid, NULL, 0), want[i]);
    }
    assert_int_equal(request_as(&s, "/nowhere", NULL, NULL, "sampled-404", NULL, 0), 404);
    assert_int_equal(
        request_as(&s, "/api/data?force_error=true", "pro", "sampled", "sampled-500", NULL, 0),
        500);
    /* Slower than ACCESS_LOG_SLOW_MS: a 1,050 ms statement cannot be faster. */
    assert_int_equal(
        request_as(&s, "/api/data?delay_ms=1050", "pro", "sampled", "sampled-slow", NULL, 0), 200);
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
        assert_int_equal(request_as(&s, "/api/data", "free", tenant, NULL, NULL, 0), 503);
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
        cmocka_unit_test(metrics_is_prometheus_text_0_0_4),
        cmocka_unit_test(metric_names_follow_prometheus_conventions),
        cmocka_unit_test(histograms_are_cumulative_and_end_at_inf),
        cmocka_unit_test(every_tier_has_its_series),
        cmocka_unit_test(counters_move_by_exactly_the_traffic_sent),
        cmocka_unit_test(build_info_and_process_metrics_are_exported),
        cmocka_unit_test(each_event_loop_reports_its_lag),
        cmocka_unit_test(every_status_code_has_its_label),
        cmocka_unit_test(each_request_logs_one_json_access_line),
        cmocka_unit_test(request_id_is_generated_or_replaced_when_invalid),
        cmocka_unit_test(text_format_writes_text_lines),
        cmocka_unit_test(warn_level_suppresses_access_lines),
        cmocka_unit_test(access_log_false_writes_no_access_lines),
        cmocka_unit_test(sampled_access_log_keeps_every_refusal_error_and_slow_request),
        cmocka_unit_test(lifecycle_events_are_logged_once_with_their_cause),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
