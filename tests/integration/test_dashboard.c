/*
 * test_dashboard: the live dashboard in a real headless Chromium, against the real binary
 * (fixture: dashfx).
 *
 * The server runs five tiers (a TIERS_FILE adds "gold" and "silver"); the test sends traffic
 * that leaves marks (a rate-limited burst and failing calls that open free's breaker) and keeps
 * light traffic flowing while the page is open. Chromium is driven over the DevTools protocol
 * on a pipe (the module cdp), so the test reads the page's state in real time: every tier
 * shown, free's breaker as /metrics/bulkheads reports it, each tier's heaviest tenants, the
 * counters growing as samples arrive, "disconnected" once the server is gone. Before the
 * browser, the page's parts: each file of web/ it names is served under /dashboard/ with its
 * type, as it is in the checkout, and nothing else is. A 1440x900 screenshot is written to
 * $BH_TEST_ARTIFACTS/dashboard.png. The page behind a balancer and the Fleet panel are
 * test_dashboard_fleet's.
 *
 * Chromium is required (scripts/deps.sh test installs it): without it the test fails.
 */
#include "dashfx.h"
#include "cdp.h"
#include "harness.h"
#include "nginxproc.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

/* The tiers the background traffic uses; "silver" is left to behind_a_balancer_..., which
 * counts every request of it (the page and the servers keep five minutes, and a slow run can
 * take longer than that to get there: traffic of its own stays countable). */
static const char *const tiers[] = {"free", "pro", "enterprise", "gold"};
#define NTIERS 4

static void *traffic_main(void *arg)
{
    (void)arg;
    int64_t end = h_now_ms() + 180000;
    for (int i = 0; i < 6000 && h_now_ms() < end; i++) {
        char th[64], tn[64];
        const char *tier = tiers[i % NTIERS];
        snprintf(th, sizeof(th), "X-Tenant-Tier: %s", tier);
        snprintf(tn, sizeof(tn), "X-Tenant-ID: steady-%d", i % 37);
        const char *h[] = {th, tn, NULL};
        struct h_resp r;
        h_get(h_url(&dsfx_suite.srv, "/api/data?limit=5"), h,
              &r); /* h_url's buffers are per thread */
        h_resp_free(&r);
        dsfx_traffic.sent++;
        /* About 40 requests a second; the stop flag ends the wait at once. */
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 25 * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_mutex_lock(&dsfx_traffic.mutex);
        if (!dsfx_traffic.stop)
            pthread_cond_timedwait(&dsfx_traffic.cond, &dsfx_traffic.mutex, &ts);
        bool stop = dsfx_traffic.stop;
        pthread_mutex_unlock(&dsfx_traffic.mutex);
        if (stop)
            break;
    }
    return NULL;
}

/* ---- tests ---------------------------------------------------------------------------- */

/* Nothing is loaded from anywhere else: no URL with a scheme, no @import, url() only to
 * fragments of the page itself (an SVG gradient). */
static void assert_loads_nothing_from_elsewhere(const char *text)
{
    assert_null(strstr(text, "http://"));
    assert_null(strstr(text, "https://"));
    assert_null(strstr(text, "@import"));
    for (const char *u = strstr(text, "url("); u; u = strstr(u + 4, "url("))
        assert_int_equal(u[4], '#');
}

/* The value of attribute `name` in the tag starting at tag (up to its '>'), or false. */
static bool tag_attr(const char *tag, const char *name, char *out, size_t len)
{
    const char *end = strchr(tag, '>');
    char key[32];
    snprintf(key, sizeof(key), " %s=\"", name);
    const char *v = strstr(tag, key);
    if (!end || !v || v > end)
        return false;
    v += strlen(key);
    const char *q = strchr(v, '"');
    if (!q || q > end || (size_t)(q - v) >= len)
        return false;
    memcpy(out, v, (size_t)(q - v));
    out[q - v] = '\0';
    return true;
}

#define MAX_PARTS 16

/* The parts the page names, in its order: <link rel="stylesheet" href> and <script src>. Every
 * <script> has a src: the page is markup only. */
static size_t page_parts(const char *html, char parts[MAX_PARTS][64])
{
    size_t n = 0;
    char v[64];
    for (const char *p = strchr(html, '<'); p; p = strchr(p + 1, '<')) {
        bool link = !strncmp(p, "<link ", 6), script = !strncmp(p, "<script", 7);
        if (link && tag_attr(p, "rel", v, sizeof(v)) && !strcmp(v, "stylesheet"))
            assert_true(tag_attr(p, "href", parts[n], sizeof(parts[n])));
        else if (script)
            assert_true(tag_attr(p, "src", parts[n], sizeof(parts[n])));
        else
            continue;
        assert_true(++n < MAX_PARTS);
    }
    return n;
}

static void the_page_is_markup_and_serves_every_part_it_names(void **state)
{
    (void)state;
    struct h_resp r;
    char v[128];
    assert_int_equal(h_get(h_url(&dsfx_suite.srv, "/dashboard"), NULL, &r), 0);
    assert_int_equal(r.status, 200);
    assert_non_null(h_header(&r, "Content-Type", v, sizeof(v)));
    assert_string_equal(v, "text/html; charset=utf-8");
    assert_non_null(h_header(&r, "Cache-Control", v, sizeof(v)));
    assert_string_equal(v, "no-store");
    assert_null(strstr(r.body, "<style"));
    assert_loads_nothing_from_elsewhere(r.body);
    char parts[MAX_PARTS][64];
    size_t n = page_parts(r.body, parts);
    h_resp_free(&r);

    /* Exactly the other files of web/, each once, from the server itself. */
    char dir[400];
    snprintf(dir, sizeof(dir), "%s/web", h_root());
    size_t files = 0;
    DIR *d = opendir(dir);
    assert_non_null(d);
    for (struct dirent *e; (e = readdir(d));)
        if (e->d_name[0] != '.' && strcmp(e->d_name, "dashboard.html"))
            files++;
    closedir(d);
    assert_int_equal(n, files);
    size_t css = 0, js = 0;
    for (size_t i = 0; i < n; i++) {
        for (size_t j = 0; j < i; j++)
            assert_string_not_equal(parts[i], parts[j]);
        assert_true(!strncmp(parts[i], "/dashboard/", 11));
        const char *name = parts[i] + 11;
        const char *dot = strrchr(name, '.');
        assert_non_null(dot);
        bool is_css = !strcmp(dot, ".css");
        assert_true(is_css || !strcmp(dot, ".js"));
        if (is_css)
            css++;
        else
            js++;
        char path[500];
        snprintf(path, sizeof(path), "%s/%s", dir, name);
        char *want = h_read_file(path);
        assert_non_null(want);
        size_t len = strlen(want);
        for (int head = 0; head < 2; head++) {
            assert_int_equal(
                h_request(head ? "HEAD" : "GET", h_url(&dsfx_suite.srv, parts[i]), NULL, NULL, &r),
                0);
            if (r.status != 200)
                fail_msg("%s %s: %ld", head ? "HEAD" : "GET", parts[i], r.status);
            assert_non_null(h_header(&r, "Content-Type", v, sizeof(v)));
            assert_string_equal(v, is_css ? "text/css; charset=utf-8"
                                          : "text/javascript; charset=utf-8");
            assert_non_null(h_header(&r, "Cache-Control", v, sizeof(v)));
            assert_string_equal(v, "no-store");
            if (!head) {
                /* The file of the checkout, byte for byte. */
                assert_int_equal(r.len, len);
                assert_memory_equal(r.body, want, len);
                assert_loads_nothing_from_elsewhere(r.body);
            }
            h_resp_free(&r);
        }
        free(want);
    }
    assert_int_equal(css, 1);
    assert_true(js >= 1);
    printf("# /dashboard names %zu parts (%zu style, %zu scripts), each served with its type\n", n,
           css, js);

    /* Anything else under /dashboard/ is a 404 JSON as any unknown path, whatever the method;
     * a part answers GET and HEAD only. */
    static const struct {
        const char *method, *path;
        long status;
    } other[] = {
        {"GET", "/dashboard/", 404},
        {"GET", "/dashboard/nothing.js", 404},
        {"GET", "/dashboard/dashboard.html", 404},
        {"GET", "/dashboard/data/x", 404},
        {"POST", "/dashboard/nothing.js", 404},
        {"POST", "/dashboard/dashboard.css", 405},
    };
    for (size_t i = 0; i < sizeof(other) / sizeof(other[0]); i++) {
        assert_int_equal(h_request(other[i].method, h_url(&dsfx_suite.srv, other[i].path), NULL,
                                   other[i].method[0] == 'P' ? "" : NULL, &r),
                         0);
        if (r.status != other[i].status)
            fail_msg("%s %s: %ld", other[i].method, other[i].path, r.status);
        json_t *b = h_json(&r);
        assert_non_null(b);
        assert_string_equal(json_string_value(json_object_get(b, "error")),
                            other[i].status == 404 ? "not_found" : "method_not_allowed");
        if (other[i].status == 405) {
            assert_non_null(h_header(&r, "Allow", v, sizeof(v)));
            assert_string_equal(v, "GET, HEAD");
        }
        json_decref(b);
        h_resp_free(&r);
    }
}

static void traffic_leaves_marks(void **state)
{
    (void)state;
    for (int t = 0; t < NTIERS; t++)
        for (int i = 0; i < 3; i++)
            assert_int_equal(dsfx_get_as("/api/data", tiers[t], "warmup"), 200);
    /* A burst from one free tenant: past 5 a minute it is refused. */
    int limited = 0;
    for (int i = 0; i < 8; i++)
        limited += dsfx_get_as("/api/data", "free", "burst") == 429;
    assert_true(limited >= 1);
    /* Failing calls from distinct tenants open free's breaker once they are half its calls. */
    char st[32] = "";
    assert_true(dsfx_open_free_breaker() >= 5);
    assert_string_equal(dsfx_breaker_state("free", st, sizeof(st)), "OPEN");
    assert_string_equal(dsfx_breaker_state("pro", st, sizeof(st)), "CLOSED");
    assert_int_equal(dsfx_get_as("/api/data", "free", "after"), 503); /* circuit_open */

    dsfx_traffic.stop = false;
    assert_int_equal(pthread_create(&dsfx_traffic.thread, NULL, traffic_main, NULL), 0);
    dsfx_traffic.running = true;
}

static void page_loads_and_shows_every_tier(void **state)
{
    (void)state;
    dsfx_browser_open();

    /* Live: the first poll of both endpoints succeeded and was drawn. */
    assert_true(dsfx_wait_page("document.body.dataset.state === 'live' && "
                               "+document.body.dataset.updates >= 1",
                               30000));
    char s[1024]; /* a card's text is longer than 256 */
    cdp_eval_str(&dsfx_browser, "document.title", s, sizeof(s));
    assert_non_null(strstr(s, "bulkhead"));
    /* Every tier of the table, in its order, as a card and as a chart scope. */
    cdp_eval_str(&dsfx_browser, "document.body.dataset.tiers", s, sizeof(s));
    assert_string_equal(s, "free,pro,enterprise,gold,silver");
    cdp_eval_str(&dsfx_browser,
                 "[...document.querySelectorAll('article[data-tier]')]"
                 ".map(e => e.dataset.tier).join(',')",
                 s, sizeof(s));
    assert_string_equal(s, "free,pro,enterprise,gold,silver");
    cdp_eval_str(
        &dsfx_browser,
        "[...document.querySelectorAll('#scope button')].map(b => b.textContent).join(',')", s,
        sizeof(s));
    assert_string_equal(s, "All tiers,free,pro,enterprise,gold,silver");
    /* The cards show their numbers: gauges as the server has them configured. */
    for (int t = 0; t < NTIERS; t++) {
        char expr[300];
        snprintf(expr, sizeof(expr),
                 "document.querySelector('article[data-tier=\"%s\"]').innerText", tiers[t]);
        cdp_eval_str(&dsfx_browser, expr, s, sizeof(s));
        assert_non_null(strstr(s, tiers[t]));
        assert_non_null(strstr(s, "Workers busy"));
        assert_non_null(strstr(s, "DB connections"));
        assert_non_null(strstr(s, "Queue"));
        assert_non_null(strstr(s, "Tenants"));
        assert_non_null(strstr(s, "Objective"));
    }
    assert_int_equal(cdp_eval_int(&dsfx_browser, "+document.querySelector('[data-tier=\"gold\"]')"
                                                 ".dataset.threads"),
                     6);
    /* The capacity controller's limit: gold's max (its db_max), nothing shed at rest. The
     * traffic of the test before may have left gold cut on a busy machine: at rest it grows
     * back within a few of the controller's intervals, and the page shows it. */
    assert_true(
        dsfx_wait_page("+document.querySelector('[data-tier=\"gold\"]').dataset.capacityLimit "
                       "=== 3 && +document.querySelector('[data-tier=\"gold\"]')"
                       ".dataset.shedding === 0",
                       10000));
    /* Its objective: a tenth of its call timeout (3 s, the default), not threatened. */
    assert_int_equal(cdp_eval_int(&dsfx_browser, "+document.querySelector('[data-tier=\"gold\"]')"
                                                 ".dataset.objectiveMs"),
                     300);
    assert_true(dsfx_wait_page(
        "+document.querySelector('[data-tier=\"gold\"]').dataset.threatened === 0", 10000));
    assert_int_equal(cdp_eval_int(&dsfx_browser,
                                  "+document.querySelector('[data-tier=\"enterprise\"]')"
                                  ".dataset.threads"),
                     12);
    /* "Who uses this tier" (its own poll of /metrics/tenants): a table per tier, the steady
     * traffic's tenants in them. */
    assert_true(dsfx_wait_page("document.querySelectorAll('#who-grid table[data-tier]').length "
                               "=== 5 && document.getElementById('who-grid').textContent"
                               ".includes('steady-')",
                               10000));
}

static void breaker_state_matches_the_server(void **state)
{
    (void)state;
    assert_true(dsfx_browser.pid > 0);
    for (int t = 0; t < NTIERS; t++) {
        char want[32], expr[300], shown[64];
        dsfx_breaker_state(tiers[t], want, sizeof(want));
        snprintf(expr, sizeof(expr),
                 "document.querySelector('article[data-tier=\"%s\"]').dataset.breaker === '%s'",
                 tiers[t], want);
        assert_true(dsfx_wait_page(expr, 10000));
        /* The state is written on the card, not only in an attribute. */
        snprintf(expr, sizeof(expr),
                 "document.querySelector('article[data-tier=\"%s\"] .b-state').textContent",
                 tiers[t]);
        cdp_eval_str(&dsfx_browser, expr, shown, sizeof(shown));
        assert_true(!strncmp(shown, !strcmp(want, "HALF_OPEN") ? "HALF-OPEN" : want, strlen(want)));
    }
    char s[256];
    cdp_eval_str(&dsfx_browser,
                 "document.querySelector('article[data-tier=\"free\"]').dataset.breaker", s,
                 sizeof(s));
    assert_string_equal(s, "OPEN");
    cdp_eval_str(&dsfx_browser, "document.getElementById('health').textContent", s, sizeof(s));
    assert_non_null(strstr(s, "breaker open: free"));
}

static void page_updates_about_every_second(void **state)
{
    (void)state;
    assert_true(dsfx_browser.pid > 0);
    long long u0 = cdp_eval_int(&dsfx_browser, "+document.body.dataset.updates");
    long long q0 = cdp_eval_int(&dsfx_browser, "+document.body.dataset.lastSeq");
    long long n0 = cdp_eval_int(&dsfx_browser, "+document.body.dataset.samples");
    assert_true(u0 >= 1 && q0 >= 1 && n0 >= 1);
    int64_t t0 = h_now_ms();
    char expr[256];
    snprintf(expr, sizeof(expr),
             "+document.body.dataset.updates >= %lld && +document.body.dataset.lastSeq >= %lld",
             u0 + 4, q0 + 3);
    assert_true(dsfx_wait_page(expr, 30000));
    /* Four polls take about four seconds: generous bounds, no tight timing. */
    int64_t spent = h_now_ms() - t0;
    assert_true(spent >= 2000 && spent < 30000);
    assert_true(cdp_eval_int(&dsfx_browser, "+document.body.dataset.samples") > n0);
    assert_int_equal(cdp_eval_int(&dsfx_browser, "+document.body.dataset.failures"), 0);

    /* The charts hold every sample and show the traffic: requests, and the rejections and
     * failures sent before the page opened. */
    assert_true(dsfx_wait_page("+document.getElementById('c-throughput').dataset.points === "
                               "+document.body.dataset.samples",
                               5000));
    assert_true(
        cdp_eval_int(&dsfx_browser, "+document.getElementById('c-throughput').dataset.max") > 0);
    assert_true(
        cdp_eval_int(&dsfx_browser, "+document.getElementById('c-rejections').dataset.max") > 0);
    assert_true(
        cdp_eval_int(&dsfx_browser, "+document.getElementById('c-latency').dataset.points") > 0);
    char s[512];
    cdp_eval_str(&dsfx_browser, "document.getElementById('lg-rejections').innerText", s, sizeof(s));
    assert_non_null(strstr(s, "rate limited"));
    assert_non_null(strstr(s, "circuit open"));
    /* Pixels of the "ok" colour were painted in the throughput chart. */
    long long green = cdp_eval_int(
        &dsfx_browser,
        "(() => { const c = document.getElementById('c-throughput');"
        " const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
        " let n = 0; for (let i = 0; i < d.length; i += 4)"
        " if (d[i + 3] > 0 && d[i + 1] > d[i] + 60 && d[i + 1] > 120) n++; return n; })()");
    assert_true(green > 50);
}

static uint32_t be32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void screenshot_is_written_as_an_artefact(void **state)
{
    (void)state;
    assert_true(dsfx_browser.pid > 0);
    json_t *r = cdp_call(&dsfx_browser, "Page.captureScreenshot",
                         json_pack("{s:s}", "format", "png"), true);
    assert_non_null(r);
    const char *b64 = json_string_value(json_object_get(r, "data"));
    assert_non_null(b64);
    unsigned char *png = malloc(strlen(b64));
    size_t n = dsfx_b64_decode(b64, png);
    json_decref(r);

    static const unsigned char sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    assert_true(n > 33);
    assert_memory_equal(png, sig, 8);
    assert_memory_equal(png + 12, "IHDR", 4);
    assert_int_equal(be32(png + 16), CDP_VIEW_W);
    assert_int_equal(be32(png + 20), CDP_VIEW_H);
    /* A blank or error page compresses to a few kilobytes; the dashboard does not. */
    assert_true(n > 60000);

    const char *dir = getenv("BH_TEST_ARTIFACTS");
    char path[400];
    snprintf(path, sizeof(path), "%s/dashboard.png", dir ? dir : "build/test-artifacts");
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(png, 1, n, f), n);
    assert_int_equal(fclose(f), 0);
    free(png);
    struct stat sb;
    assert_int_equal(stat(path, &sb), 0);
    assert_int_equal((size_t)sb.st_size, n);
    fprintf(stderr, "dashboard screenshot: %s (%zu bytes)\n", path, n);
}

static void page_shows_disconnected_and_keeps_retrying(void **state)
{
    (void)state;
    assert_true(dsfx_browser.pid > 0);
    dsfx_traffic_stop();
    assert_true(dsfx_traffic.sent > 0);
    /* On the first server's page, whatever the test before left open. */
    assert_int_equal(cdp_navigate(&dsfx_browser, h_url(&dsfx_suite.srv, "/dashboard")), 0);
    assert_true(dsfx_wait_page("document.body.dataset.state === 'live' && "
                               "+document.body.dataset.instances === 1",
                               30000));
    assert_int_equal(h_server_stop(&dsfx_suite.srv, SIGTERM, 20000), 0);
    assert_true(dsfx_wait_page("document.body.dataset.state === 'disconnected'", 20000));
    char s[256];
    cdp_eval_str(&dsfx_browser, "document.getElementById('health').textContent", s, sizeof(s));
    assert_non_null(strstr(s, "Disconnected"));
    /* It tries again, and keeps what it had on screen. */
    assert_true(dsfx_wait_page("+document.body.dataset.failures >= 2", 20000));
    assert_true(cdp_eval_int(&dsfx_browser, "+document.body.dataset.samples") > 0);
    cdp_eval_str(&dsfx_browser, "document.body.dataset.tiers", s, sizeof(s));
    assert_string_equal(s, "free,pro,enterprise,gold,silver");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(the_page_is_markup_and_serves_every_part_it_names),
        cmocka_unit_test(traffic_leaves_marks),
        cmocka_unit_test(page_loads_and_shows_every_tier),
        cmocka_unit_test(breaker_state_matches_the_server),
        cmocka_unit_test(page_updates_about_every_second),
        cmocka_unit_test(screenshot_is_written_as_an_artefact),
        cmocka_unit_test(page_shows_disconnected_and_keeps_retrying),
    };
    return cmocka_run_group_tests(tests, dsfx_setup, dsfx_teardown);
}
