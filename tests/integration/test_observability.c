/*
 * test_observability: the metrics operators read, against the real binary and a real
 * PostgreSQL (fixture: obsfx).
 *
 * - /metrics: the whole exposition is parsed by a parser of the Prometheus text format 0.0.4
 *   written here (comments, names, escaped label values, float values with +Inf/NaN), then
 *   checked family by family: one # HELP and one # TYPE before the samples, counters ending in
 *   _total, histograms well formed, units in seconds, a series per tier, and counters moving by
 *   exactly the traffic sent; every status code has its label.
 * - The event loops' lag: a histogram per HTTP thread in /metrics, and in the dashboard's data.
 * The access log and the lifecycle events are test_observability_logs's.
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

/* ---- /metrics ------------------------------------------------------------------------- */

static void metrics_is_prometheus_text_0_0_4(void **state)
{
    (void)state;
    struct h_resp r;
    assert_int_equal(h_get(h_url(&obfx_suite.srv, "/metrics"), NULL, &r), 0);
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
    assert_int_equal(scrape(&obfx_suite.srv, &d), 0);
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
    if (scrape(&obfx_suite.srv, &d))
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
        assert_int_equal(
            obfx_request_as(&obfx_suite.srv, "/api/data", "enterprise", "hist", NULL, NULL, 0),
            200);
    /* A request is counted when it completes, just after its response went out. */
    struct counts_wait w = {3, "enterprise", "ok"};
    assert_true(h_wait_until(outcome_reached, &w, 10000));
    struct prom_doc d;
    assert_int_equal(scrape(&obfx_suite.srv, &d), 0);
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
    assert_int_equal(scrape(&obfx_suite.srv, &d), 0);
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
    assert_int_equal(scrape(&obfx_suite.srv, &a), 0);
    double pro_ok = prom_value(&a, "bulkhead_requests_total", 2, "tier", "pro", "outcome", "ok");
    double free_rl =
        prom_value(&a, "bulkhead_requests_total", 2, "tier", "free", "outcome", "rate_limited");

    for (int i = 0; i < 3; i++)
        assert_int_equal(
            obfx_request_as(&obfx_suite.srv, "/api/data", "pro", "counter-pro", NULL, NULL, 0),
            200);
    assert_int_equal(obfx_request_as(&obfx_suite.srv, "/api/data?limit=zero", "pro", "counter-pro",
                                     NULL, NULL, 0),
                     400);
    /* free allows 2 per tenant per minute: the third is refused. */
    assert_int_equal(
        obfx_request_as(&obfx_suite.srv, "/api/data", "free", "counter-free", NULL, NULL, 0), 200);
    assert_int_equal(
        obfx_request_as(&obfx_suite.srv, "/api/data", "free", "counter-free", NULL, NULL, 0), 200);
    assert_int_equal(
        obfx_request_as(&obfx_suite.srv, "/api/data", "free", "counter-free", NULL, NULL, 0), 429);

    /* A request is counted when it completes, just after its response went out. */
    struct counts_wait w1 = {pro_ok + 3, "pro", "ok"}, w2 = {free_rl + 1, "free", "rate_limited"};
    assert_true(h_wait_until(outcome_reached, &w1, 10000));
    assert_true(h_wait_until(outcome_reached, &w2, 10000));
    struct counts_wait w3 = {
        prom_value(&a, "bulkhead_requests_total", 2, "tier", "pro", "outcome", "client_error") + 1,
        "pro", "client_error"};
    assert_true(h_wait_until(outcome_reached, &w3, 10000));
    assert_int_equal(scrape(&obfx_suite.srv, &b), 0);

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
    assert_int_equal(scrape(&obfx_suite.srv, &d), 0);
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
    if (scrape(&obfx_suite.srv, &d))
        return false;
    double v = prom_value(&d, "bulkhead_event_loop_lag_seconds_count", 1, "loop", "0");
    prom_free(&d);
    return v >= *(double *)arg;
}

/* The dashboard has a sample (one a second). */
static bool has_samples(void *arg)
{
    (void)arg;
    json_t *hist = h_get_json(h_url(&obfx_suite.srv, "/dashboard/data?since=0"));
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
    assert_int_equal(scrape(&obfx_suite.srv, &d), 0);
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
    json_t *hist = h_get_json(h_url(&obfx_suite.srv, "/dashboard/data?since=0"));
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
    if (scrape(&obfx_suite.srv, &d))
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
    static const char *const codes[] = {"200", "201", "204", "400", "401", "403", "404", "405",
                                        "408", "409", "411", "413", "414", "415", "417", "429",
                                        "431", "499", "500", "503", "504", "505"};
    for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); i++)
        assert_false(isnan(responses("none", codes[i])));
    double before = responses("none", "411"), other = responses("none", "other");
    const char *const hdrs[] = {"X-Tenant-Tier: free", "Content-Type: application/json",
                                "Transfer-Encoding: chunked", NULL};
    struct h_resp r;
    assert_int_equal(
        h_request("POST", h_url(&obfx_suite.srv, "/api/data"), hdrs, "{\"payload\":{}}", &r), 0);
    assert_int_equal(r.status, 411);
    h_resp_free(&r);
    assert_true(H_WAIT(responses("none", "411") == before + 1, 10000));
    assert_true(responses("none", "other") == other);
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
    };
    return cmocka_run_group_tests(tests, obfx_setup, obfx_teardown);
}
