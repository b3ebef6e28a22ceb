/*
 * test_prometheus: deploy/prometheus/ and deploy/grafana/ against a real Prometheus (Debian's
 * prometheus package, on loopback, its data in the test's work folder):
 * - promtool accepts the rules and the configuration, and the rules' unit tests pass
 *   (rules.test.yml); the unit tests fail when a rule is broken (a negative control);
 * - Prometheus scrapes two real instances on their operators' port (OPS_PORT), sharing Redis as
 *   in deploy/kubernetes, with the shipped rules loaded; their `for:` durations are cut from
 *   minutes to seconds (everything else runs as shipped) so that the test takes seconds;
 * - a breaker forced open (POST /admin/breaker/free/open, ADMIN_TOKEN) makes
 *   BulkheadBreakerOpen fire for that instance and tier, seen through /api/v1/alerts, and
 *   resolve when it is reset;
 * - every query of the Grafana dashboard returns data from that Prometheus (a query that
 *   returns nothing fails), and every panel reads the provisioned data source.
 * Scrape and evaluation run every second; every wait is on a condition, bounded.
 */
#include "harness.h"

#include "../redisproc.h"

#include <curl/curl.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#define PROMETHEUS_BIN "/usr/bin/prometheus"

static char db_url[300];
static struct redisproc redis;
static struct h_server inst[2];
static char ops[2][64];        /* http://127.0.0.1:OPS_PORT of each instance */
static char ops_target[2][32]; /* 127.0.0.1:OPS_PORT, Prometheus' instance label */
static pid_t prom_pid;
static char prom[64]; /* http://127.0.0.1:PORT */
static char prom_log[460];

static bool prom_ready(void *arg)
{
    (void)arg;
    int status;
    if (waitpid(prom_pid, &status, WNOHANG) == prom_pid) {
        prom_pid = 0;
        return true;
    }
    char u[128];
    snprintf(u, sizeof(u), "%s/-/ready", prom);
    struct h_resp r;
    h_get(u, NULL, &r);
    bool ok = r.status == 200;
    h_resp_free(&r);
    return ok;
}

/* The shipped rules with `for: Nm` as `for: Ns`, and a configuration scraping both instances
 * every second; then Prometheus itself. */
static int prom_start(void)
{
    char dir[400], cmd[2400];
    snprintf(dir, sizeof(dir), "%s/prometheus-%d", h_work(), (int)getpid());
    snprintf(cmd, sizeof(cmd),
             "rm -rf '%s' && mkdir -p '%s/data' && "
             "sed 's/^\\( *for: [0-9][0-9]*\\)m$/\\1s/' '%s/deploy/prometheus/rules.yml' "
             ">'%s/rules.yml' && grep -q 'for: 2s$' '%s/rules.yml'",
             dir, dir, h_root(), dir, dir);
    if (h_run(cmd, NULL) != 0) {
        fprintf(stderr, "test_prometheus: cannot prepare %s (rules.yml's for: lines?)\n", dir);
        return -1;
    }
    char conf[500];
    snprintf(conf, sizeof(conf), "%s/prometheus.yml", dir);
    FILE *f = fopen(conf, "w");
    if (!f)
        return -1;
    fprintf(f,
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n"
            "rule_files:\n  - %s/rules.yml\n"
            "scrape_configs:\n  - job_name: bulkhead\n    static_configs:\n"
            "      - targets: ['%s', '%s']\n",
            dir, ops_target[0], ops_target[1]);
    fclose(f);
    int port = h_free_port();
    snprintf(prom, sizeof(prom), "http://127.0.0.1:%d", port);
    snprintf(prom_log, sizeof(prom_log), "%s/prometheus.log", dir);
    char listen[64], storage[500], config[600];
    snprintf(listen, sizeof(listen), "--web.listen-address=127.0.0.1:%d", port);
    snprintf(storage, sizeof(storage), "--storage.tsdb.path=%s/data", dir);
    snprintf(config, sizeof(config), "--config.file=%s", conf);
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        int fd = open(prom_log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
            close(fd);
        }
        execl(PROMETHEUS_BIN, PROMETHEUS_BIN, config, storage, listen, "--log.level=warn",
              (char *)NULL);
        _exit(127);
    }
    prom_pid = pid;
    if (!h_wait_until(prom_ready, NULL, 30000) || prom_pid == 0) {
        fprintf(stderr, "test_prometheus: Prometheus did not come up; see %s\n", prom_log);
        return -1;
    }
    return 0;
}

static int setup(void **state)
{
    (void)state;
    if (access(PROMETHEUS_BIN, X_OK) != 0) {
        fprintf(stderr, "test_prometheus: %s is missing (scripts/deps.sh test installs it)\n",
                PROMETHEUS_BIN);
        return -1;
    }
    if (h_db_create("prometheus", db_url, sizeof(db_url)) || redisproc_start(&redis))
        return -1;
    static char redis_env[120], ops_env[2][32];
    snprintf(redis_env, sizeof(redis_env), "REDIS_URL=%s", redis.url);
    for (int i = 0; i < 2; i++) {
        int port = h_free_port();
        snprintf(ops_env[i], sizeof(ops_env[i]), "OPS_PORT=%d", port);
        snprintf(ops[i], sizeof(ops[i]), "http://127.0.0.1:%d", port);
        snprintf(ops_target[i], sizeof(ops_target[i]), "127.0.0.1:%d", port);
        const char *env[] = {"RATE_LIMIT_BACKEND=redis", redis_env, ops_env[i],
                             "ADMIN_TOKEN=prom-secret-0123456789abcdefghijklm", NULL};
        if (h_server_start(&inst[i], db_url, env))
            return -1;
    }
    return prom_start();
}

static int teardown(void **state)
{
    (void)state;
    if (prom_pid > 0) {
        kill(prom_pid, SIGTERM);
        int64_t end = h_now_ms() + 10000;
        while (waitpid(prom_pid, NULL, WNOHANG) != prom_pid && h_now_ms() < end)
            h_nap_ms(10);
        if (kill(prom_pid, 0) == 0) {
            kill(prom_pid, SIGKILL);
            waitpid(prom_pid, NULL, 0);
        }
    }
    for (int i = 0; i < 2; i++)
        if (inst[i].pid > 0)
            h_server_stop(&inst[i], SIGTERM, 20000);
    redisproc_stop(&redis);
    return 0;
}

/* ---- Prometheus' HTTP API ----------------------------------------------------------------- */

/* GET prom + path (path already encoded); the "data" member (caller json_decref), or NULL. */
static json_t *api_get(const char *path)
{
    char u[4200];
    snprintf(u, sizeof(u), "%s%s", prom, path);
    json_t *doc = h_get_json(u);
    json_t *data = NULL;
    if (doc && !strcmp(json_string_value(json_object_get(doc, "status")) ?: "", "success"))
        data = json_incref(json_object_get(doc, "data"));
    json_decref(doc);
    return data;
}

/* An instant query's result vector (caller json_decref), or NULL on an error. */
static json_t *query(const char *promql)
{
    CURL *c = curl_easy_init();
    char *q = curl_easy_escape(c, promql, 0);
    char path[4000];
    snprintf(path, sizeof(path), "/api/v1/query?query=%s", q);
    curl_free(q);
    curl_easy_cleanup(c);
    json_t *data = api_get(path);
    json_t *result = data ? json_incref(json_object_get(data, "result")) : NULL;
    json_decref(data);
    return result;
}

static size_t query_count(const char *promql)
{
    json_t *r = query(promql);
    size_t n = json_array_size(r);
    json_decref(r);
    return n;
}

/* ---- promtool ---------------------------------------------------------------------------- */

static void promtool_accepts_the_rules_the_config_and_the_rule_unit_tests(void **state)
{
    (void)state;
    static const char *const cmds[] = {
        "promtool check rules deploy/prometheus/rules.yml",
        "promtool check config deploy/prometheus/prometheus.yml",
        "promtool test rules deploy/prometheus/rules.test.yml",
    };
    for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++) {
        char cmd[1200], *out = NULL;
        snprintf(cmd, sizeof(cmd), "cd '%s' && %s", h_root(), cmds[i]);
        int rc = h_run(cmd, &out);
        printf("# %s: %s", cmds[i], strstr(out, "SUCCESS") ? "SUCCESS\n" : out);
        if (rc != 0)
            fail_msg("%s failed:\n%s", cmds[i], out);
        free(out);
    }
}

/* Each broken copy of rules.yml (a sed script) must make `promtool test rules` fail. */
static void the_rule_unit_tests_fail_when_a_rule_is_broken(void **state)
{
    (void)state;
    static const char *const breaks[] = {
        "s/state=\"OPEN\"}) == 1/state=\"CLOSED\"}) == 1/",    /* the breaker alert */
        "s/code=~\"5..\"/code=~\"4..\"/",                      /* the error ratio */
        "s/histogram_quantile(0.99,/histogram_quantile(0.9,/", /* p99 */
        "s/bulkhead_ratelimit_backend_up == 0/bulkhead_ratelimit_backend_up == 2/",
    };
    for (size_t i = 0; i < sizeof(breaks) / sizeof(breaks[0]); i++) {
        char dir[400], cmd[2400], *out = NULL;
        snprintf(dir, sizeof(dir), "%s/promtool-broken-%zu", h_work(), i);
        snprintf(cmd, sizeof(cmd),
                 "rm -rf '%s' && mkdir -p '%s' && cp '%s/deploy/prometheus/rules.test.yml' '%s/' "
                 "&& sed '%s' '%s/deploy/prometheus/rules.yml' >'%s/rules.yml' && "
                 "! cmp -s '%s/rules.yml' '%s/deploy/prometheus/rules.yml'",
                 dir, dir, h_root(), dir, breaks[i], h_root(), dir, dir, h_root());
        if (h_run(cmd, NULL) != 0)
            fail_msg("the break \"%s\" changed nothing in rules.yml", breaks[i]);
        snprintf(cmd, sizeof(cmd), "cd '%s' && promtool test rules rules.test.yml", dir);
        int rc = h_run(cmd, &out);
        if (rc == 0)
            fail_msg("promtool test rules passed with \"%s\":\n%s", breaks[i], out);
        free(out);
    }
    printf("# %zu broken rules, each caught by rules.test.yml\n",
           sizeof(breaks) / sizeof(breaks[0]));
}

/* ---- a real Prometheus ------------------------------------------------------------------- */

static bool both_targets_up(void *arg)
{
    (void)arg;
    return query_count("up{job=\"bulkhead\"} == 1") == 2;
}

static void prometheus_scrapes_both_instances_on_their_operators_port(void **state)
{
    (void)state;
    bool up = h_wait_until(both_targets_up, NULL, 30000);
    json_t *data = api_get("/api/v1/targets?state=active");
    json_t *targets = json_object_get(data, "activeTargets");
    size_t i;
    json_t *t;
    json_array_foreach(targets, i, t)
    {
        printf("# target %s: %s %s\n", json_string_value(json_object_get(t, "scrapeUrl")),
               json_string_value(json_object_get(t, "health")),
               json_string_value(json_object_get(t, "lastError")));
    }
    json_decref(data);
    assert_true(up);
    /* The rules loaded: every group, no rule in error. */
    data = api_get("/api/v1/rules");
    json_t *groups = json_object_get(data, "groups");
    size_t rules = 0;
    json_array_foreach(groups, i, t)
    {
        size_t j;
        json_t *rule;
        json_array_foreach(json_object_get(t, "rules"), j, rule)
        {
            rules++;
            const char *health = json_string_value(json_object_get(rule, "health"));
            if (health && !strcmp(health, "err"))
                fail_msg("rule %s: %s", json_string_value(json_object_get(rule, "name")),
                         json_string_value(json_object_get(rule, "lastError")));
        }
    }
    json_decref(data);
    printf("# Prometheus scrapes both instances' operators' ports; %zu rules loaded\n", rules);
    assert_true(rules >= 18);
}

/* The BulkheadBreakerOpen alert of tier free in state `want` ("firing", "pending"), for which
 * instance (its label) into inst_label. */
static bool breaker_alert(const char *want, char *inst_label, size_t len)
{
    json_t *data = api_get("/api/v1/alerts");
    json_t *alerts = json_object_get(data, "alerts");
    bool found = false;
    size_t i;
    json_t *a;
    json_array_foreach(alerts, i, a)
    {
        json_t *l = json_object_get(a, "labels");
        if (!strcmp(json_string_value(json_object_get(l, "alertname")) ?: "",
                    "BulkheadBreakerOpen") &&
            !strcmp(json_string_value(json_object_get(l, "tier")) ?: "", "free") &&
            !strcmp(json_string_value(json_object_get(a, "state")) ?: "", want)) {
            found = true;
            if (inst_label)
                snprintf(inst_label, len, "%s",
                         json_string_value(json_object_get(l, "instance")) ?: "");
        }
    }
    json_decref(data);
    return found;
}

static bool firing(void *arg)
{
    char *label = arg;
    return breaker_alert("firing", label, 64);
}

static bool no_breaker_alert(void *arg)
{
    (void)arg;
    return !breaker_alert("firing", NULL, 0) && !breaker_alert("pending", NULL, 0);
}

static long admin(int i, const char *action)
{
    char u[200];
    snprintf(u, sizeof(u), "%s/admin/breaker/free/%s", ops[i], action);
    const char *h[] = {"Authorization: Bearer prom-secret-0123456789abcdefghijklm", NULL};
    struct h_resp r;
    h_request("POST", u, h, "", &r);
    long st = r.status;
    h_resp_free(&r);
    return st;
}

static void a_breaker_forced_open_fires_the_alert_through_prometheus(void **state)
{
    (void)state;
    assert_true(no_breaker_alert(NULL));
    int64_t t0 = h_now_ms();
    assert_int_equal(admin(0, "open"), 200);
    char label[64] = "";
    bool fired = h_wait_until(firing, label, 30000);
    int64_t t1 = h_now_ms();
    printf("# breaker of free forced open on instance %s: BulkheadBreakerOpen firing after "
           "%.1f s (for: 2s here, 2m shipped), instance label %s\n",
           ops_target[0], (double)(t1 - t0) / 1000.0, label);
    assert_true(fired);
    assert_string_equal(label, ops_target[0]); /* that instance, not the other */
    assert_int_equal(admin(0, "reset"), 200);
    bool resolved = h_wait_until(no_breaker_alert, NULL, 30000);
    printf("# reset: the alert resolved after %.1f s\n", (double)(h_now_ms() - t1) / 1000.0);
    assert_true(resolved);
}

/* Every "expr" of the dashboard, in order, with its panel's title. */
struct dash_query {
    char expr[600];
    char title[120];
};

static size_t dashboard_queries(json_t *dash, struct dash_query *q, size_t max, size_t *panels)
{
    size_t n = 0, i;
    json_t *p;
    *panels = 0;
    json_array_foreach(json_object_get(dash, "panels"), i, p)
    {
        json_t *targets = json_object_get(p, "targets");
        if (!json_array_size(targets))
            continue;
        (*panels)++;
        /* Every panel reads the provisioned data source. */
        const char *uid =
            json_string_value(json_object_get(json_object_get(p, "datasource"), "uid"));
        if (!uid || strcmp(uid, "bulkhead-prometheus"))
            fail_msg("panel \"%s\" reads data source %s, not bulkhead-prometheus",
                     json_string_value(json_object_get(p, "title")), uid ? uid : "(none)");
        size_t j;
        json_t *t;
        json_array_foreach(targets, j, t)
        {
            assert_true(n < max);
            snprintf(q[n].expr, sizeof(q[n].expr), "%s",
                     json_string_value(json_object_get(t, "expr")) ?: "");
            snprintf(q[n].title, sizeof(q[n].title), "%s",
                     json_string_value(json_object_get(p, "title")) ?: "");
            n++;
        }
    }
    return n;
}

static bool rates_recorded(void *arg)
{
    (void)arg;
    return query_count("tier:bulkhead_requests:rate1m > 0") == 3 &&
           query_count("tier:bulkhead_request_duration:p99 >= 0") == 3;
}

static void every_dashboard_query_returns_data_from_prometheus(void **state)
{
    (void)state;
    /* Traffic for every tier through both instances, a few refusals among it. */
    static const char *const tiers[] = {"free", "pro", "enterprise"};
    for (int i = 0; i < 2; i++) {
        for (size_t t = 0; t < 3; t++) {
            char u[200], tier[64];
            snprintf(u, sizeof(u), "%s/api/data?limit=1", inst[i].base);
            snprintf(tier, sizeof(tier), "X-Tenant-Tier: %s", tiers[t]);
            const char *h[] = {tier, "X-Tenant-Id: dash", NULL};
            long st[20];
            assert_int_equal(h_burst("GET", u, h, 20, 4, st, NULL), 0);
        }
    }
    bool recorded = h_wait_until(rates_recorded, NULL, 30000);
    if (!recorded)
        fail_msg("the recording rules have no rate for every tier within 30 s (see %s)", prom_log);

    char path[600];
    snprintf(path, sizeof(path), "%s/deploy/grafana/dashboards/bulkhead.json", h_root());
    json_error_t err;
    json_t *dash = json_load_file(path, 0, &err);
    if (!dash)
        fail_msg("%s: %s (line %d)", path, err.text, err.line);
    /* The provisioning names the uid the panels read. */
    snprintf(path, sizeof(path), "%s/deploy/grafana/provisioning/datasources/bulkhead.yaml",
             h_root());
    char *ds = h_read_file(path);
    assert_non_null(ds);
    assert_non_null(strstr(ds, "uid: bulkhead-prometheus\n"));
    free(ds);

    static struct dash_query q[64];
    size_t panels, n = dashboard_queries(dash, q, 64, &panels);
    assert_true(n >= 10);
    int empty = 0;
    for (size_t i = 0; i < n; i++) {
        json_t *r = query(q[i].expr);
        size_t series = json_array_size(r);
        printf("# %-36s %2zu series  %s\n", q[i].title, series, q[i].expr);
        if (!r) {
            printf("# ^ refused by Prometheus\n");
            empty++;
        } else if (series == 0) {
            empty++;
        }
        json_decref(r);
    }
    json_decref(dash);
    printf("# %zu panels, %zu queries: %d returned nothing\n", panels, n, empty);
    assert_int_equal(empty, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(promtool_accepts_the_rules_the_config_and_the_rule_unit_tests),
        cmocka_unit_test(the_rule_unit_tests_fail_when_a_rule_is_broken),
        cmocka_unit_test(prometheus_scrapes_both_instances_on_their_operators_port),
        cmocka_unit_test(a_breaker_forced_open_fires_the_alert_through_prometheus),
        cmocka_unit_test(every_dashboard_query_returns_data_from_prometheus),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
