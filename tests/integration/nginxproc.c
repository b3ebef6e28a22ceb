/*
 * nginxproc: the shipped load balancer on loopback (see nginxproc.h).
 */
#include "nginxproc.h"
#include "harness.h"

#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define NGINX_BIN "/usr/sbin/nginx"

/* Replace every occurrence (at least one) of from in *text with to; -1 (and a message) if it
 * is missing. */
static int nginxproc_replace(char **text, const char *from, const char *to)
{
    if (!strstr(*text, from)) {
        fprintf(stderr, "nginxproc: deploy/nginx.conf no longer contains \"%s\"\n", from);
        return -1;
    }
    char *at;
    size_t done = 0;
    while ((at = strstr(*text + done, from))) {
        size_t pre = (size_t)(at - *text), fl = strlen(from), tl = strlen(to);
        size_t rest = strlen(at + fl);
        char *out = malloc(pre + tl + rest + 1);
        memcpy(out, *text, pre);
        memcpy(out + pre, to, tl);
        memcpy(out + pre + tl, at + fl, rest + 1);
        free(*text);
        *text = out;
        done = pre + tl;
    }
    return 0;
}

static int nginxproc_write_config(const struct nginxproc *n, int port_a, int port_b,
                                  const char *path)
{
    const char *root = getenv("BH_ROOT");
    char src[400];
    snprintf(src, sizeof(src), "%s/deploy/nginx.conf", root ? root : ".");
    char *conf = h_read_file(src);
    if (!conf)
        return -1;
    char a[64], b[64], listen[64], ops[64], include[400], temps[2000];
    snprintf(a, sizeof(a), "server 127.0.0.1:%d ", port_a);
    snprintf(b, sizeof(b), "server 127.0.0.1:%d ", port_b);
    snprintf(listen, sizeof(listen), "listen 127.0.0.1:%d;", n->port);
    snprintf(ops, sizeof(ops), "listen 127.0.0.1:%d;", n->ops_port);
    snprintf(include, sizeof(include), "%s/deploy/proxy.conf", root ? root : ".");
    snprintf(temps, sizeof(temps),
             "http {\n    client_body_temp_path %s/body;\n    proxy_temp_path %s/proxy;\n"
             "    fastcgi_temp_path %s/fastcgi;\n    uwsgi_temp_path %s/uwsgi;\n"
             "    scgi_temp_path %s/scgi;\n",
             n->dir, n->dir, n->dir, n->dir, n->dir);
    int rc = nginxproc_replace(&conf, "server api:8080 resolve ", a) ||
             nginxproc_replace(&conf, "server api-2:8080 resolve ", b) ||
             nginxproc_replace(&conf, "listen 80;", listen) ||
             nginxproc_replace(&conf, "listen 8090;", ops) ||
             nginxproc_replace(&conf, "/etc/nginx/bulkhead-proxy.conf", include) ||
             nginxproc_replace(&conf, "http {\n", temps);
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

static bool nginxproc_ready(void *arg)
{
    struct nginxproc *n = arg;
    int status;
    if (waitpid(n->pid, &status, WNOHANG) == n->pid) {
        n->pid = 0;
        return true;
    }
    char u[128];
    snprintf(u, sizeof(u), "%s/health", n->base);
    struct h_resp r;
    h_get(u, NULL, &r);
    bool ok = r.status == 200;
    h_resp_free(&r);
    return ok;
}

int nginxproc_start(struct nginxproc *n, int port_a, int port_b)
{
    if (access(NGINX_BIN, X_OK) != 0) {
        fprintf(stderr, "nginxproc: %s is missing (scripts/deps.sh test installs it)\n", NGINX_BIN);
        return -1;
    }
    n->port = h_free_port();
    n->ops_port = h_free_port();
    snprintf(n->base, sizeof(n->base), "http://127.0.0.1:%d", n->port);
    snprintf(n->ops_base, sizeof(n->ops_base), "http://127.0.0.1:%d", n->ops_port);
    snprintf(n->dir, sizeof(n->dir), "%s/nginx-%d-%d", getenv("BH_TEST_WORK"), (int)getpid(),
             n->port);
    char cmd[800];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s' && mkdir -p '%s'", n->dir, n->dir);
    if (system(cmd) != 0)
        return -1;
    char conf[400], out[400], g[1000];
    snprintf(conf, sizeof(conf), "%s/nginx.conf", n->dir);
    snprintf(out, sizeof(out), "%s/nginx.out", n->dir);
    snprintf(n->errlog, sizeof(n->errlog), "%s/error.log", n->dir);
    if (nginxproc_write_config(n, port_a, port_b, conf))
        return -1;
    snprintf(g, sizeof(g), "daemon off; pid %s/nginx.pid; error_log %s info;", n->dir, n->errlog);
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
        execl(NGINX_BIN, NGINX_BIN, "-e", n->errlog, "-p", n->dir, "-c", conf, "-g", g,
              (char *)NULL);
        _exit(127);
    }
    n->pid = pid;
    if (!h_wait_until(nginxproc_ready, n, 20000) || n->pid == 0) {
        fprintf(stderr, "nginxproc: nginx did not come up; see %s and %s\n", out, n->errlog);
        return -1;
    }
    return 0;
}

void nginxproc_stop(struct nginxproc *n)
{
    if (n->pid <= 0)
        return;
    kill(n->pid, SIGTERM);
    int64_t end = h_now_ms() + 10000;
    while (waitpid(n->pid, NULL, WNOHANG) != n->pid) {
        if (h_now_ms() >= end) {
            kill(n->pid, SIGKILL);
            waitpid(n->pid, NULL, 0);
            break;
        }
        struct timespec ts = {0, 10 * 1000000L};
        nanosleep(&ts, NULL);
    }
    n->pid = 0;
}
