/*
 * test_dashboard_fleet: the live dashboard across instances, in a real headless Chromium
 * (fixture: dashfx). Behind the shipped load balancer (nginx over the suite's server and a
 * second one, tests/integration/nginxproc), where the polls alternate between instances, the
 * page keeps both histories and shows their sum (every request of both, exactly), the worst
 * breaker, and never loses samples. The Fleet panel, on two instances of their own database
 * with pro's budget a fleet total: the medium up, 2 instances, pro's 9 of 20 workers and 4 of
 * 10 connections as a lease, enterprise busy on the other instance shown active there; the
 * fleet's table locked: local control with its reason and pro at its minimum, then up again;
 * with FLEET=false, "Not configured".
 *
 * Chromium is required (scripts/deps.sh test installs it): without it the test fails.
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

/* dashfx's suite on a database of its own, with the browser on its dashboard (in test_dashboard
 * page_loads_and_shows_every_tier opens it, and the tests here take it over). */
static int setup(void **state)
{
    dsfx_suite.name = "dashboard_fleet";
    if (dsfx_setup(state))
        return -1;
    dsfx_browser_open();
    return 0;
}

/* The ok requests of silver in a server's own history (its /dashboard/data from the start). */
static long long silver_ok_in_history(const char *base)
{
    char u[200];
    snprintf(u, sizeof(u), "%s/dashboard/data?since=0", base);
    json_t *h = h_get_json(u);
    if (!h)
        return -1;
    long long n = 0;
    size_t i;
    json_t *smp;
    json_array_foreach(json_object_get(h, "samples"), i, smp)
    {
        json_t *silver = json_object_get(json_object_get(smp, "tiers"), "silver");
        n += (long long)json_integer_value(
            json_object_get(json_object_get(silver, "outcomes"), "ok"));
    }
    json_decref(h);
    return n;
}

struct sums {
    const struct h_server *a, *b;
    long long want, page;
};

/* Both servers' histories, and the page's sum over its merged samples, agree. */
static bool page_sums_both_histories(void *arg)
{
    struct sums *w = arg;
    long long a = silver_ok_in_history(w->a->base), b = silver_ok_in_history(w->b->base);
    w->want = a + b;
    w->page = cdp_eval_int(&dsfx_browser, "st.samples.reduce((n, s) => n + ((s.tiers.silver && "
                                          "s.tiers.silver.outcomes.ok) || 0), 0)");
    return a >= 0 && b >= 0 && w->page == w->want;
}

struct history_wait {
    const struct h_server *s;
    long long want;
};

static bool history_has(void *arg)
{
    struct history_wait *w = arg;
    return silver_ok_in_history(w->s->base) == w->want;
}

static void behind_a_balancer_the_page_keeps_every_instance(void **state)
{
    (void)state;
    assert_true(dsfx_browser.pid > 0);
    dsfx_traffic_stop(); /* from here on, only the requests below */
    /* free's breaker open on the first instance only (the page must show the worst). */
    assert_true(dsfx_open_free_breaker() >= 5);
    char env[500];
    snprintf(env, sizeof(env), "TIERS_FILE=%s", dsfx_suite.tiers_path);
    const char *e[] = {env, "ACCESS_LOG=false", NULL};
    struct h_server srv2;
    assert_int_equal(h_server_start(&srv2, dsfx_suite.db_url, e), 0);
    /* 17 requests of silver on the new instance, a few more on the old one. */
    for (int i = 0; i < 17; i++) {
        char u[200];
        snprintf(u, sizeof(u), "%s/api/data?limit=1", srv2.base);
        const char *h[] = {"X-Tenant-Tier: silver", "X-Tenant-ID: behind-lb", NULL};
        struct h_resp r;
        h_get(u, h, &r);
        assert_int_equal(r.status, 200);
        h_resp_free(&r);
    }
    for (int i = 0; i < 5; i++)
        assert_int_equal(dsfx_get_as("/api/data", "silver", "behind-lb"), 200);
    struct history_wait hw = {&srv2, 17};
    assert_true(h_wait_until(history_has, &hw, 30000)); /* sampled by srv2's janitor */

    struct nginxproc lb = {.pid = 0};
    assert_int_equal(nginxproc_start(&lb, dsfx_suite.srv.port, srv2.port), 0);
    char page[200];
    snprintf(page, sizeof(page), "%s/dashboard", lb.ops_base);
    assert_int_equal(cdp_navigate(&dsfx_browser, page), 0);
    assert_true(dsfx_wait_page("document.body.dataset.state === 'live' && "
                               "+document.body.dataset.instances === 2",
                               30000));
    /* Every request of both instances is on the page, exactly: no history was wiped because
     * the other instance answered a poll. */
    struct sums w = {&dsfx_suite.srv, &srv2, 0, 0};
    bool same = h_wait_until(page_sums_both_histories, &w, 30000);
    printf("# behind nginx: the page shows %lld silver requests, the two histories hold %lld\n",
           w.page, w.want);
    assert_true(same);
    assert_true(w.want >= 22);
    /* Over several polls (which alternate between the instances) nothing is lost. */
    long long prev = cdp_eval_int(&dsfx_browser, "+document.body.dataset.samples");
    for (int k = 0; k < 6; k++) {
        long long u0 = cdp_eval_int(&dsfx_browser, "+document.body.dataset.updates");
        char expr[128];
        snprintf(expr, sizeof(expr), "+document.body.dataset.updates >= %lld", u0 + 1);
        assert_true(dsfx_wait_page(expr, 20000));
        long long n = cdp_eval_int(&dsfx_browser, "+document.body.dataset.samples");
        assert_true(n >= prev || prev >= 300);
        assert_int_equal(cdp_eval_int(&dsfx_browser, "+document.body.dataset.instances"), 2);
        prev = n;
    }
    assert_true(page_sums_both_histories(&w));
    /* free's breaker is open on the first instance only: the page shows the worst, steadily. */
    char st[32];
    assert_string_equal(dsfx_breaker_state("free", st, sizeof(st)), "OPEN");
    assert_true(dsfx_wait_page("document.querySelector('article[data-tier=\"free\"]')"
                               ".dataset.breaker === 'OPEN'",
                               10000));
    char s[256];
    cdp_eval_str(&dsfx_browser, "document.getElementById('updated').textContent", s, sizeof(s));
    assert_non_null(strstr(s, "2 instances, summed"));

    /* Back to the first server alone, for the tests that follow. */
    assert_int_equal(cdp_navigate(&dsfx_browser, h_url(&dsfx_suite.srv, "/dashboard")), 0);
    assert_true(dsfx_wait_page("document.body.dataset.state === 'live' && "
                               "+document.body.dataset.instances === 1",
                               30000));
    nginxproc_stop(&lb);
    assert_int_equal(h_server_stop(&srv2, SIGTERM, 20000), 0);
}

/* ---- the fleet panel (issue 28 item 4) ------------------------------------------------- */

/* pro's workers and connections are fleet totals: two idle instances hold 9 and 4 each
 * (README: Fleet budgets; test_fleet checks the rule, this test what the page says of it). */
#define FLEET_TIERS                                                                                \
    "{\"free\": {\"rate_limit\": 0},"                                                              \
    " \"pro\": {\"budget_scope\": \"fleet\", \"workers\": 20, \"db_max\": 10},"                    \
    " \"enterprise\": {}}"

static int start_fleet_instance(struct h_server *s, const char *db_url, const char *tiers_env)
{
    const char *env[] = {tiers_env,      "FLEET=true",       "FLEET_INTERVAL_MS=50",
                         "TARPIT=false", "ACCESS_LOG=false", NULL};
    return h_server_start(s, db_url, env);
}

/* The fleet panel's text (innerText: what is on screen), or its row of tier. */
static void fleet_text(const char *tier, char *out, size_t len)
{
    char expr[200];
    if (tier)
        snprintf(expr, sizeof(expr),
                 "document.querySelector('#fleet tr[data-tier=\"%s\"]').innerText", tier);
    else
        snprintf(expr, sizeof(expr), "document.getElementById('fleet').innerText");
    cdp_eval_str(&dsfx_browser, expr, out, len);
}

/* The page as it is now, as a PNG in $BH_TEST_ARTIFACTS/<file> (for people: no assertion on
 * its pixels); its size in bytes, 0 on failure. */
static size_t save_screenshot(const char *file)
{
    json_t *r = cdp_call(&dsfx_browser, "Page.captureScreenshot",
                         json_pack("{s:s}", "format", "png"), true);
    const char *b64 = r ? json_string_value(json_object_get(r, "data")) : NULL;
    if (!b64) {
        json_decref(r);
        return 0;
    }
    unsigned char *png = malloc(strlen(b64));
    size_t n = dsfx_b64_decode(b64, png);
    json_decref(r);
    const char *dir = getenv("BH_TEST_ARTIFACTS");
    char path[400];
    snprintf(path, sizeof(path), "%s/%s", dir ? dir : "build/test-artifacts", file);
    FILE *f = fopen(path, "wb");
    bool ok = f && fwrite(png, 1, n, f) == n;
    if (f && fclose(f))
        ok = false;
    free(png);
    fprintf(stderr, "screenshot: %s (%zu bytes)\n", path, n);
    return ok ? n : 0;
}

struct elsewhere {
    const struct h_server *b;
};

/* One enterprise request on B, then: does the page on A show enterprise active elsewhere? */
static bool enterprise_shown_active_elsewhere(void *arg)
{
    struct elsewhere *w = arg;
    const char *h[] = {"X-Tenant-Tier: enterprise", "X-Tenant-ID: on-b", NULL};
    struct h_resp r;
    h_get(h_url(w->b, "/api/data?limit=1"), h, &r);
    h_resp_free(&r);
    return dsfx_page_true(&(struct dsfx_page_wait){
        "/^enterprise\\tactive/.test("
        "document.querySelector('#fleet tr[data-tier=\"enterprise\"]').innerText)"});
}

static void fleet_panel_shows_the_instances_the_medium_and_a_fleet_share(void **state)
{
    (void)state;
    assert_true(dsfx_browser.pid > 0);
    dsfx_traffic_stop();
    char db_url[300], tiers_env[600];
    assert_int_equal(h_db_create("dashfleet", db_url, sizeof(db_url)), 0);
    assert_int_equal(h_tiers_env("dashfleet", FLEET_TIERS, tiers_env, sizeof(tiers_env)), 0);
    struct h_server a = {.pid = 0}, b = {.pid = 0};
    assert_int_equal(start_fleet_instance(&a, db_url, tiers_env), 0);
    assert_int_equal(start_fleet_instance(&b, db_url, tiers_env), 0);
    assert_int_equal(cdp_navigate(&dsfx_browser, h_url(&a, "/dashboard")), 0);

    /* The medium up, the two instances, pro's share of the fleet totals as a lease. */
    assert_true(dsfx_wait_page("document.getElementById('fleet').dataset.fleet === 'up' && "
                               "document.getElementById('fleet').dataset.instances === '2' && "
                               "/9 workers · 4 connections.*\\tlease$/.test(document.querySelector("
                               "'#fleet tr[data-tier=\"pro\"]').innerText)",
                               30000));
    char s[2048];
    fleet_text(NULL, s, sizeof(s));
    h_diag("the fleet panel on A:");
    h_diag(s);
    assert_non_null(strstr(s, "FLEET")); /* the heading, as shown (upper case) */
    assert_non_null(strstr(s, "Medium up · PostgreSQL (bulkhead_fleet)"));
    assert_non_null(strstr(s, "2 instances (this one and 1 other)"));
    fleet_text("pro", s, sizeof(s));
    assert_string_equal(s, "pro\tidle\tfleet: 20 workers · 10 connections over 2 instances\t"
                           "9 workers · 4 connections (45% · 40%)\tlease");
    /* A tier whose budget is its own: the seed's free, 10 workers and 5 connections. */
    fleet_text("free", s, sizeof(s));
    assert_non_null(strstr(s, "per instance: 10 workers · 5 connections\tall of its own\t–"));

    /* Enterprise busy on B only: A's page says it is active elsewhere in the fleet. */
    struct elsewhere w = {&b};
    assert_true(h_wait_until(enterprise_shown_active_elsewhere, &w, 20000));
    json_decref(cdp_eval(&dsfx_browser, "document.getElementById('fleet').scrollIntoView()"));
    assert_true(save_screenshot("dashboard-fleet.png") > 0);

    /* The medium lost (its table locked by another session: every exchange waits out its
     * deadline): local control, with the reason; back up once the lock goes. */
    PGconn *lock = PQconnectdb(db_url);
    PGresult *res = PQexec(lock, "BEGIN; LOCK TABLE bulkhead_fleet IN ACCESS EXCLUSIVE MODE");
    bool locked = PQresultStatus(res) == PGRES_COMMAND_OK;
    PQclear(res);
    bool local = locked && dsfx_wait_page(
                               "document.getElementById('fleet').dataset.fleet === 'local'", 30000);
    char down[2048] = "", pro_down[512] = "";
    if (local) {
        fleet_text(NULL, down, sizeof(down));
        /* The lease lapses one interval before the ttl: pro is back at its minimum. */
        dsfx_wait_page("/minimum \\(no lease\\)$/.test(document.querySelector("
                       "'#fleet tr[data-tier=\"pro\"]').innerText)",
                       30000);
        fleet_text("pro", pro_down, sizeof(pro_down));
    }
    res = PQexec(lock, "COMMIT");
    PQclear(res);
    PQfinish(lock);
    h_diag("the medium lost:");
    h_diag(down);
    h_diag(pro_down);
    assert_true(locked);
    assert_true(local);
    assert_non_null(strstr(down, "Local control · "));
    assert_null(strstr(down, "Local control · the medium does not answer")); /* a reason */
    assert_non_null(strstr(down, "instances unknown without the medium"));
    assert_non_null(strstr(pro_down, "fleet: 20 workers · 10 connections\t2 workers · 1 "
                                     "connection (10% · 10%)\tminimum (no lease)"));
    assert_true(dsfx_wait_page("document.getElementById('fleet').dataset.fleet === 'up' && "
                               "document.getElementById('fleet').dataset.instances === '2'",
                               30000));

    assert_int_equal(h_server_stop(&b, SIGTERM, 20000), 0);
    assert_int_equal(h_server_stop(&a, SIGTERM, 20000), 0);
}

static void fleet_panel_says_when_the_fleet_is_off(void **state)
{
    (void)state;
    assert_true(dsfx_browser.pid > 0);
    char env[500];
    snprintf(env, sizeof(env), "TIERS_FILE=%s", dsfx_suite.tiers_path);
    const char *e[] = {env, "FLEET=false", "ACCESS_LOG=false", NULL};
    struct h_server alone = {.pid = 0};
    assert_int_equal(h_server_start(&alone, dsfx_suite.db_url, e), 0);
    assert_int_equal(cdp_navigate(&dsfx_browser, h_url(&alone, "/dashboard")), 0);
    assert_true(dsfx_wait_page("document.getElementById('fleet').dataset.fleet === 'off'", 30000));
    char s[1024];
    fleet_text(NULL, s, sizeof(s));
    h_diag("FLEET=false:");
    h_diag(s);
    assert_non_null(strstr(s, "Not configured (FLEET=false)"));
    assert_null(strstr(s, "Medium up"));
    assert_null(strstr(s, "lease"));
    assert_int_equal(h_server_stop(&alone, SIGTERM, 20000), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(behind_a_balancer_the_page_keeps_every_instance),
        cmocka_unit_test(fleet_panel_shows_the_instances_the_medium_and_a_fleet_share),
        cmocka_unit_test(fleet_panel_says_when_the_fleet_is_off),
    };
    return cmocka_run_group_tests(tests, setup, dsfx_teardown);
}
