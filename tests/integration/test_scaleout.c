/*
 * test_scaleout: scale-out without Docker. A real redis-server, two server instances with
 * RATE_LIMIT_BACKEND=redis, and a real nginx running the shipped deploy/nginx.conf and
 * deploy/proxy.conf (only addresses and paths rewritten for loopback) balancing round-robin
 * over both. Proves: 110 requests of one free tenant through nginx admit exactly 100 with
 * RateLimit headers; another tenant and the other tiers are unaffected; after one instance is
 * SIGKILLed every tier is still served through nginx, and the shared limit still holds.
 *
 * As in test_redis, free's window is an hour (100 per 3600 s) so the count of 100 does not
 * depend on how fast the requests go.
 */
#include "harness.h"

#include "../redisproc.h"

#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#define NGINX_BIN "/usr/sbin/nginx"

static char db_url[300];
static struct redisproc redis;
static struct h_server inst[2];

static struct {
    pid_t pid;
    int port;
    char dir[300];
    char base[64];
    char errlog[400];
} nginx;

/* Replace the one occurrence of from in *text with to; -1 (and a message) if it is missing. */
static int replace_once(char **text, const char *from, const char *to)
{
    char *at = strstr(*text, from);
    if (!at) {
        fprintf(stderr, "test_scaleout: deploy/nginx.conf no longer contains \"%s\"\n", from);
        return -1;
    }
    size_t pre = (size_t)(at - *text), fl = strlen(from), tl = strlen(to);
    size_t rest = strlen(at + fl);
    char *out = malloc(pre + tl + rest + 1);
    memcpy(out, *text, pre);
    memcpy(out + pre, to, tl);
    memcpy(out + pre + tl, at + fl, rest + 1);
    free(*text);
    *text = out;
    return 0;
}

/* deploy/nginx.conf with loopback addresses, test paths, and root workers. */
static int nginx_write_config(const char *path)
{
    const char *root = getenv("BH_ROOT");
    char src[400];
    snprintf(src, sizeof(src), "%s/deploy/nginx.conf", root ? root : ".");
    char *conf = h_read_file(src);
    if (!conf)
        return -1;
    char a[64], b[64], listen[64], include[400], temps[2000];
    snprintf(a, sizeof(a), "server 127.0.0.1:%d ", inst[0].port);
    snprintf(b, sizeof(b), "server 127.0.0.1:%d ", inst[1].port);
    snprintf(listen, sizeof(listen), "listen 127.0.0.1:%d;", nginx.port);
    snprintf(include, sizeof(include), "%s/deploy/proxy.conf", root ? root : ".");
    snprintf(temps, sizeof(temps),
             "http {\n    client_body_temp_path %s/body;\n    proxy_temp_path %s/proxy;\n"
             "    fastcgi_temp_path %s/fastcgi;\n    uwsgi_temp_path %s/uwsgi;\n"
             "    scgi_temp_path %s/scgi;\n",
             nginx.dir, nginx.dir, nginx.dir, nginx.dir, nginx.dir);
    int rc = replace_once(&conf, "server api:8080 ", a) ||
             replace_once(&conf, "server api-2:8080 ", b) ||
             replace_once(&conf, "listen 80;", listen) ||
             replace_once(&conf, "/etc/nginx/bulkhead-proxy.conf", include) ||
             replace_once(&conf, "http {\n", temps);
    if (rc == 0) {
        FILE *f = fopen(path, "w");
        if (!f) {
            rc = -1;
        } else {
            /* The tests run as root: workers as root too, so they can reach the work dir. */
            if (geteuid() == 0)
                fputs("user root;\n", f);
            fputs(conf, f);
            fclose(f);
        }
    }
    free(conf);
    return rc ? -1 : 0;
}

static bool nginx_ready(void *arg)
{
    (void)arg;
    int status;
    if (waitpid(nginx.pid, &status, WNOHANG) == nginx.pid) {
        nginx.pid = 0;
        return true;
    }
    char u[128];
    snprintf(u, sizeof(u), "%s/health", nginx.base);
    struct h_resp r;
    h_get(u, NULL, &r);
    bool ok = r.status == 200;
    h_resp_free(&r);
    return ok;
}

static int nginx_start(void)
{
    if (access(NGINX_BIN, X_OK) != 0) {
        fprintf(stderr, "test_scaleout: %s is missing (scripts/deps.sh test installs it)\n",
                NGINX_BIN);
        return -1;
    }
    nginx.port = h_free_port();
    snprintf(nginx.base, sizeof(nginx.base), "http://127.0.0.1:%d", nginx.port);
    snprintf(nginx.dir, sizeof(nginx.dir), "%s/nginx-%d", getenv("BH_TEST_WORK"), (int)getpid());
    char cmd[800];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s' && mkdir -p '%s'", nginx.dir, nginx.dir);
    if (system(cmd) != 0)
        return -1;
    char conf[400], out[400], g[1000];
    snprintf(conf, sizeof(conf), "%s/nginx.conf", nginx.dir);
    snprintf(out, sizeof(out), "%s/nginx.out", nginx.dir);
    snprintf(nginx.errlog, sizeof(nginx.errlog), "%s/error.log", nginx.dir);
    if (nginx_write_config(conf))
        return -1;
    snprintf(g, sizeof(g), "daemon off; pid %s/nginx.pid; error_log %s info;", nginx.dir,
             nginx.errlog);
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        int fd = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
            close(fd);
        }
        execl(NGINX_BIN, NGINX_BIN, "-e", nginx.errlog, "-p", nginx.dir, "-c", conf, "-g", g,
              (char *)NULL);
        _exit(127);
    }
    nginx.pid = pid;
    if (!h_wait_until(nginx_ready, NULL, 20000) || nginx.pid == 0) {
        fprintf(stderr, "test_scaleout: nginx did not come up; see %s and %s\n", out, nginx.errlog);
        return -1;
    }
    return 0;
}

static void nginx_stop(void)
{
    if (nginx.pid <= 0)
        return;
    kill(nginx.pid, SIGTERM);
    int64_t end = h_now_ms() + 10000;
    while (waitpid(nginx.pid, NULL, WNOHANG) != nginx.pid) {
        if (h_now_ms() >= end) {
            kill(nginx.pid, SIGKILL);
            waitpid(nginx.pid, NULL, 0);
            break;
        }
        struct timespec ts = {0, 10 * 1000000L};
        nanosleep(&ts, NULL);
    }
    nginx.pid = 0;
}

static int setup(void **state)
{
    (void)state;
    if (h_db_create("scaleout", db_url, sizeof(db_url)))
        return -1;
    if (redisproc_start(&redis))
        return -1;
    static char tiers_env[400], redis_env[120];
    if (h_tiers_env("tiers-scaleout.json", H_TIERS_HOURLY, tiers_env, sizeof(tiers_env)))
        return -1;
    snprintf(redis_env, sizeof(redis_env), "REDIS_URL=%s", redis.url);
    static const char *env[] = {"RATE_LIMIT_BACKEND=redis", redis_env, tiers_env, NULL};
    for (int i = 0; i < 2; i++)
        if (h_server_start(&inst[i], db_url, env))
            return -1;
    return nginx_start();
}

static int teardown(void **state)
{
    (void)state;
    nginx_stop();
    for (int i = 0; i < 2; i++)
        if (inst[i].pid > 0)
            h_server_stop(&inst[i], SIGTERM, 20000);
    redisproc_stop(&redis);
    return 0;
}

static long via_nginx(const char *tier, const char *tenant, struct h_resp *r)
{
    char u[200], tr[64], ten[120];
    snprintf(u, sizeof(u), "%s/api/data?limit=1", nginx.base);
    snprintf(tr, sizeof(tr), "X-Tenant-Tier: %s", tier);
    snprintf(ten, sizeof(ten), "X-Tenant-Id: %s", tenant);
    const char *h[] = {tr, ten, NULL};
    h_get(u, h, r);
    return r->status;
}

static long long free_allowed(int i)
{
    return h_metric(inst[i].base, "free", "rateLimiter", "allowed");
}

static void through_nginx_110_requests_of_one_tenant_admit_exactly_100(void **state)
{
    (void)state;
    char v[32];
    /* The first one, alone: a full bucket. */
    struct h_resp r;
    assert_int_equal(via_nginx("free", "lb-1", &r), 200);
    assert_string_equal(h_header(&r, "RateLimit-Limit", v, sizeof(v)), "100");
    assert_string_equal(h_header(&r, "RateLimit-Remaining", v, sizeof(v)), "99");
    assert_non_null(h_header(&r, "RateLimit-Reset", v, sizeof(v)));
    h_resp_free(&r);

    /* 108 more, four at a time, round-robin over both instances. */
    char u[200];
    snprintf(u, sizeof(u), "%s/api/data?limit=1", nginx.base);
    const char *h[] = {"X-Tenant-Tier: free", "X-Tenant-Id: lb-1", NULL};
    long st[108];
    assert_int_equal(h_burst("GET", u, h, 108, 4, st, NULL), 0);
    int ok = h_count(st, 108, 200), limited = h_count(st, 108, 429);

    /* The 110th: refused, with the headers that say when to come back. */
    assert_int_equal(via_nginx("free", "lb-1", &r), 429);
    assert_string_equal(h_header(&r, "RateLimit-Limit", v, sizeof(v)), "100");
    assert_string_equal(h_header(&r, "RateLimit-Remaining", v, sizeof(v)), "0");
    assert_non_null(h_header(&r, "RateLimit-Reset", v, sizeof(v)));
    assert_non_null(h_header(&r, "Retry-After", v, sizeof(v)));
    json_t *j = h_json(&r);
    assert_string_equal(json_string_value(json_object_get(j, "error")), "rate_limited");
    json_decref(j);
    h_resp_free(&r);

    long long a = free_allowed(0), b = free_allowed(1);
    printf("# 110 requests through nginx: %d admitted, %d rejected; instance A admitted %lld, "
           "instance B %lld\n",
           1 + ok, limited + 1, a, b);
    assert_int_equal(1 + ok, 100);
    assert_int_equal(limited + 1, 10);
    assert_int_equal(a + b, 100);
    assert_true(a > 0 && b > 0); /* both instances served: the limit really was shared */
}

static void another_tenant_and_other_tiers_are_unaffected(void **state)
{
    (void)state;
    char v[32];
    struct h_resp r;
    assert_int_equal(via_nginx("free", "lb-2", &r), 200);
    assert_string_equal(h_header(&r, "RateLimit-Remaining", v, sizeof(v)), "99");
    h_resp_free(&r);
    assert_int_equal(via_nginx("pro", "lb-1", &r), 200);
    assert_string_equal(h_header(&r, "RateLimit-Limit", v, sizeof(v)), "1000");
    h_resp_free(&r);
    assert_int_equal(via_nginx("enterprise", "lb-1", &r), 200);
    assert_null(h_header(&r, "RateLimit-Limit", v, sizeof(v))); /* unlimited */
    h_resp_free(&r);
}

static void a_killed_instance_costs_no_request_in_any_tier(void **state)
{
    (void)state;
    char needle[64];
    snprintf(needle, sizeof(needle), "127.0.0.1:%d", inst[1].port);
    assert_int_equal(h_server_stop(&inst[1], SIGKILL, 10000), 128 + SIGKILL);

    const char *tiers[] = {"free", "pro", "enterprise"};
    int served[3] = {0};
    for (int t = 0; t < 3; t++) {
        for (int k = 0; k < 12; k++) {
            char tenant[32];
            snprintf(tenant, sizeof(tenant), "after-kill-%d", k % 3);
            struct h_resp r;
            served[t] += via_nginx(tiers[t], tenant, &r) == 200;
            h_resp_free(&r);
        }
    }
    /* And a concurrent burst, which opens fresh upstream connections. */
    char u[200];
    snprintf(u, sizeof(u), "%s/api/data?limit=1", nginx.base);
    const char *h[] = {"X-Tenant-Tier: enterprise", "X-Tenant-Id: after-kill-burst", NULL};
    long st[30];
    assert_int_equal(h_burst("GET", u, h, 30, 6, st, NULL), 0);
    printf("# instance B killed: through nginx free %d/12, pro %d/12, enterprise %d/12 and "
           "%d/30 in a burst answered 200\n",
           served[0], served[1], served[2], h_count(st, 30, 200));
    for (int t = 0; t < 3; t++)
        assert_int_equal(served[t], 12);
    assert_int_equal(h_count(st, 30, 200), 30);

    /* nginx did meet the dead instance and moved on (proxy_next_upstream). */
    char *log = h_read_file(nginx.errlog);
    assert_non_null(log);
    assert_non_null(strstr(log, needle));
    free(log);

    /* The surviving instance still knows the tenant spent its 100: the count lives in Redis. */
    struct h_resp r;
    assert_int_equal(via_nginx("free", "lb-1", &r), 429);
    h_resp_free(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(through_nginx_110_requests_of_one_tenant_admit_exactly_100),
        cmocka_unit_test(another_tenant_and_other_tiers_are_unaffected),
        cmocka_unit_test(a_killed_instance_costs_no_request_in_any_tier),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
