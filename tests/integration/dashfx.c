/*
 * dashfx: the dashboard tests' fixture (see dashfx.h).
 */
#include "dashfx.h"

#include "cdp.h"
#include "harness.h"
#include "nginxproc.h"

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

/* free: 5 requests a minute per tenant, and a breaker that stays open for the test. */
struct h_suite dsfx_suite = {
    .name = "dashboard",
    .tiers_json =
        "{\"free\": {\"workers\": 4, \"queue_max\": 8, \"db_max\": 2, \"rate_limit\": 5,"
        " \"breaker_reset_ms\": 600000, \"breaker_min_calls\": 5},"
        " \"pro\": {\"workers\": 8, \"queue_max\": 16, \"db_max\": 4, \"rate_limit\": 1000},"
        " \"enterprise\": {\"workers\": 12, \"queue_max\": 48, \"db_max\": 6},"
        " \"gold\": {\"workers\": 6, \"queue_max\": 12, \"db_max\": 3, \"rate_limit\": 0},"
        " \"silver\": {\"workers\": 2, \"queue_max\": 4, \"db_max\": 1, \"rate_limit\": 0}}",
    .env = {"ACCESS_LOG=false"}};

struct cdp dsfx_browser; /* started by page_loads_and_shows_every_tier */

/* ---- background traffic --------------------------------------------------------------- */

/* Light steady traffic on every tier while the page is open: bounded in count and time. */
struct dsfx_traffic dsfx_traffic = {.mutex = PTHREAD_MUTEX_INITIALIZER,
                                    .cond = PTHREAD_COND_INITIALIZER};

void dsfx_traffic_stop(void)
{
    if (!dsfx_traffic.running)
        return;
    pthread_mutex_lock(&dsfx_traffic.mutex);
    dsfx_traffic.stop = true;
    pthread_cond_signal(&dsfx_traffic.cond);
    pthread_mutex_unlock(&dsfx_traffic.mutex);
    pthread_join(dsfx_traffic.thread, NULL);
    dsfx_traffic.running = false;
}

/* ---- fixtures ------------------------------------------------------------------------- */

long dsfx_get_as(const char *path, const char *tier, const char *tenant)
{
    char th[64], tn[64];
    snprintf(th, sizeof(th), "X-Tenant-Tier: %s", tier);
    snprintf(tn, sizeof(tn), "X-Tenant-ID: %s", tenant);
    const char *h[] = {th, tn, NULL};
    struct h_resp r;
    h_get(h_url(&dsfx_suite.srv, path), h, &r);
    long st = r.status;
    h_resp_free(&r);
    return st;
}

const char *dsfx_breaker_state(const char *tier, char *buf, size_t len)
{
    return h_metric_text(dsfx_suite.srv.base, tier, "circuitBreaker", "state", buf, len);
}

int dsfx_open_free_breaker(void)
{
    char st[32] = "";
    int failed = 0;
    for (int i = 0; i < 30 && strcmp(dsfx_breaker_state("free", st, sizeof(st)), "OPEN"); i++) {
        char tenant[32];
        snprintf(tenant, sizeof(tenant), "failing-%d", i);
        failed += dsfx_get_as("/api/data?force_error=true", "free", tenant) == 500;
    }
    return failed;
}

int dsfx_setup(void **state)
{
    (void)state;
    signal(SIGPIPE, SIG_IGN); /* a browser that died must not kill the test */
    return h_suite_start(&dsfx_suite);
}

int dsfx_teardown(void **state)
{
    (void)state;
    dsfx_traffic_stop();
    cdp_stop(&dsfx_browser);
    h_suite_stop(&dsfx_suite);
    return 0;
}

bool dsfx_page_true(void *arg)
{
    struct dsfx_page_wait *w = arg;
    json_t *v = cdp_eval(&dsfx_browser, w->expr);
    bool ok = json_is_true(v);
    json_decref(v);
    return ok;
}

bool dsfx_wait_page(const char *expr, int timeout_ms)
{
    struct dsfx_page_wait w = {expr};
    return h_wait_until(dsfx_page_true, &w, timeout_ms);
}

size_t dsfx_b64_decode(const char *in, unsigned char *out)
{
    static signed char map[256];
    static bool init;
    if (!init) {
        memset(map, -1, sizeof(map));
        const char *a = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        for (int i = 0; a[i]; i++)
            map[(unsigned char)a[i]] = (signed char)i;
        init = true;
    }
    size_t n = 0;
    unsigned acc = 0;
    int bits = 0;
    for (const char *p = in; *p && *p != '='; p++) {
        int v = map[(unsigned char)*p];
        if (v < 0)
            continue;
        acc = (acc << 6) | (unsigned)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[n++] = (unsigned char)(acc >> bits);
        }
    }
    return n;
}

void dsfx_browser_open(void)
{
    if (!cdp_chromium_present())
        fail_msg("%s not found: the dashboard test needs Chromium (scripts/deps.sh test)",
                 cdp_chromium_bin());
    assert_int_equal(cdp_start(&dsfx_browser), 0);
    json_t *v = cdp_call(&dsfx_browser, "Browser.getVersion", NULL, false);
    if (!v)
        fail_msg("%s did not answer on --remote-debugging-pipe; see %s", cdp_chromium_bin(),
                 dsfx_browser.log);
    json_decref(v);
    assert_int_equal(cdp_open(&dsfx_browser, h_url(&dsfx_suite.srv, "/dashboard")), 0);
}
