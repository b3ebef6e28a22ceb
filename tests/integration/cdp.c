/*
 * cdp: a DevTools protocol client over --remote-debugging-pipe (see cdp.h).
 */
#include "cdp.h"
#include "harness.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
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

const char *cdp_chromium_bin(void)
{
    const char *b = getenv("BH_CHROMIUM");
    return b && *b ? b : "chromium";
}

/* The browser binary on PATH (or as given), so a missing one fails with a clear message. */
bool cdp_chromium_present(void)
{
    const char *bin = cdp_chromium_bin();
    if (strchr(bin, '/'))
        return access(bin, X_OK) == 0;
    const char *path = getenv("PATH");
    char dir[4096];
    for (const char *p = path ? path : "/usr/bin:/bin"; *p;) {
        size_t n = strcspn(p, ":");
        snprintf(dir, sizeof(dir), "%.*s/%s", (int)n, p, bin);
        if (access(dir, X_OK) == 0)
            return true;
        p += n + (p[n] == ':');
    }
    return false;
}

int cdp_start(struct cdp *c)
{
    memset(c, 0, sizeof(*c));
    const char *work = getenv("BH_TEST_WORK") ? getenv("BH_TEST_WORK") : "/tmp";
    snprintf(c->profile, sizeof(c->profile), "%s/chromium-XXXXXX", work);
    if (!mkdtemp(c->profile))
        return -1;
    snprintf(c->log, sizeof(c->log), "%s/chromium-%d.log", work, (int)getpid());
    char profile_arg[340];
    snprintf(profile_arg, sizeof(profile_arg), "--user-data-dir=%s", c->profile);
    char size_arg[64];
    snprintf(size_arg, sizeof(size_arg), "--window-size=%d,%d", CDP_VIEW_W, CDP_VIEW_H);

    int cmd[2], res[2];
    if (pipe(cmd) || pipe(res))
        return -1;
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        setpgid(0, 0);
        int lfd = open(c->log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (lfd >= 0) {
            dup2(lfd, 1);
            dup2(lfd, 2);
        }
        /* Move the browser's pipe ends out of the way, then onto 3 and 4. */
        int in = fcntl(cmd[0], F_DUPFD, 100), out = fcntl(res[1], F_DUPFD, 100);
        dup2(in, 3);
        dup2(out, 4);
        for (int fd = 5; fd < 1024; fd++)
            close(fd);
        /* Nothing of the browser's goes to the real home directory. */
        setenv("HOME", c->profile, 1);
        setenv("XDG_CONFIG_HOME", c->profile, 1);
        setenv("XDG_CACHE_HOME", c->profile, 1);
        const char *argv[] = {cdp_chromium_bin(),
                              "--headless",
                              "--no-sandbox",
                              "--disable-gpu",
                              "--disable-background-networking",
                              "--disable-component-update",
                              "--disable-sync",
                              "--disable-extensions",
                              "--disable-dev-shm-usage",
                              "--no-first-run",
                              "--no-default-browser-check",
                              "--mute-audio",
                              "--hide-scrollbars",
                              profile_arg,
                              size_arg,
                              "--remote-debugging-pipe",
                              "about:blank",
                              NULL};
        execvp(argv[0], (char *const *)argv);
        _exit(127);
    }
    close(cmd[0]);
    close(res[1]);
    c->pid = pid;
    c->wfd = cmd[1];
    c->rfd = res[0];
    return 0;
}

/* Read until one complete message is buffered; returns it (owned) or NULL on EOF/timeout. */
static json_t *cdp_read_message(struct cdp *c, int64_t deadline_ms)
{
    for (;;) {
        char *nul = c->len ? memchr(c->buf, '\0', c->len) : NULL;
        if (nul) {
            size_t n = (size_t)(nul - c->buf);
            json_t *m = json_loadb(c->buf, n, 0, NULL);
            memmove(c->buf, nul + 1, c->len - n - 1);
            c->len -= n + 1;
            if (m)
                return m;
            continue;
        }
        int64_t left = deadline_ms - h_now_ms();
        if (left <= 0)
            return NULL;
        struct pollfd p = {.fd = c->rfd, .events = POLLIN};
        int pr = poll(&p, 1, (int)left);
        if (pr < 0 && errno == EINTR)
            continue;
        if (pr <= 0)
            return NULL;
        if (c->cap - c->len < 65536) {
            c->cap = c->cap ? c->cap * 2 : 262144;
            c->buf = realloc(c->buf, c->cap);
        }
        ssize_t r = read(c->rfd, c->buf + c->len, c->cap - c->len);
        if (r <= 0)
            return NULL; /* the browser is gone */
        c->len += (size_t)r;
    }
}

/* Call method (params stolen; may be NULL) on the browser or the page session; the result
 * object (owned), or NULL on error, timeout or a closed pipe. */
json_t *cdp_call(struct cdp *c, const char *method, json_t *params, bool on_page)
{
    int id = ++c->next_id;
    json_t *m = json_pack("{s:i, s:s, s:o}", "id", id, "method", method, "params",
                          params ? params : json_object());
    if (on_page)
        json_object_set_new(m, "sessionId", json_string(c->session));
    char *text = json_dumps(m, JSON_COMPACT);
    json_decref(m);
    size_t n = strlen(text) + 1; /* with the NUL that ends a message */
    size_t off = 0;
    while (off < n) {
        ssize_t w = write(c->wfd, text + off, n - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            free(text);
            return NULL;
        }
        off += (size_t)w;
    }
    free(text);
    int64_t deadline = h_now_ms() + 30000;
    for (;;) {
        json_t *r = cdp_read_message(c, deadline);
        if (!r)
            return NULL;
        if (json_integer_value(json_object_get(r, "id")) != id) {
            json_decref(r); /* an event, or a reply to someone else */
            continue;
        }
        json_t *err = json_object_get(r, "error");
        if (err) {
            char *e = json_dumps(err, JSON_COMPACT);
            fprintf(stderr, "cdp %s: %s\n", method, e);
            free(e);
            json_decref(r);
            return NULL;
        }
        json_t *result = json_incref(json_object_get(r, "result"));
        json_decref(r);
        return result;
    }
}

/* Evaluate a JavaScript expression in the page (promises awaited); its value (owned). */
json_t *cdp_eval(struct cdp *c, const char *expr)
{
    json_t *r = cdp_call(
        c, "Runtime.evaluate",
        json_pack("{s:s, s:b, s:b}", "expression", expr, "returnByValue", 1, "awaitPromise", 1),
        true);
    if (!r)
        return NULL;
    json_t *v = NULL;
    if (!json_object_get(r, "exceptionDetails"))
        v = json_incref(json_object_get(json_object_get(r, "result"), "value"));
    json_decref(r);
    return v;
}

/* An expression's value as a string (empty when missing). */
void cdp_eval_str(struct cdp *c, const char *expr, char *out, size_t len)
{
    json_t *v = cdp_eval(c, expr);
    snprintf(out, len, "%s", json_is_string(v) ? json_string_value(v) : "");
    json_decref(v);
}

long long cdp_eval_int(struct cdp *c, const char *expr)
{
    json_t *v = cdp_eval(c, expr);
    long long n = json_is_number(v) ? (long long)json_number_value(v) : -1;
    json_decref(v);
    return n;
}

/* Open a page target, attach to it flat, size it, go to url. 0 or -1. */
int cdp_open(struct cdp *c, const char *page_url)
{
    json_t *t = cdp_call(c, "Target.createTarget", json_pack("{s:s}", "url", "about:blank"), false);
    if (!t)
        return -1;
    json_t *a = cdp_call(
        c, "Target.attachToTarget",
        json_pack("{s:O, s:b}", "targetId", json_object_get(t, "targetId"), "flatten", 1), false);
    json_decref(t);
    if (!a)
        return -1;
    snprintf(c->session, sizeof(c->session), "%s",
             json_string_value(json_object_get(a, "sessionId")));
    json_decref(a);
    json_t *r = cdp_call(c, "Emulation.setDeviceMetricsOverride",
                         json_pack("{s:i, s:i, s:i, s:b}", "width", CDP_VIEW_W, "height",
                                   CDP_VIEW_H, "deviceScaleFactor", 1, "mobile", 0),
                         true);
    if (!r)
        return -1;
    json_decref(r);
    r = cdp_call(c, "Page.navigate", json_pack("{s:s}", "url", page_url), true);
    if (!r)
        return -1;
    json_decref(r);
    return 0;
}

/* Load another URL in the page already open. */
int cdp_navigate(struct cdp *c, const char *page_url)
{
    json_t *r = cdp_call(c, "Page.navigate", json_pack("{s:s}", "url", page_url), true);
    if (!r)
        return -1;
    json_decref(r);
    return 0;
}

void cdp_stop(struct cdp *c)
{
    if (c->pid > 0) {
        json_decref(cdp_call(c, "Browser.close", NULL, false));
        int status;
        int64_t end = h_now_ms() + 10000;
        while (waitpid(c->pid, &status, WNOHANG) == 0 && h_now_ms() < end) {
            struct pollfd p = {.fd = -1};
            poll(&p, 0, 20);
        }
        /* Whatever is left of the browser's process group. */
        kill(-c->pid, SIGKILL);
        waitpid(c->pid, &status, WNOHANG);
        c->pid = 0;
    }
    if (c->wfd > 0)
        close(c->wfd);
    if (c->rfd > 0)
        close(c->rfd);
    c->wfd = c->rfd = -1;
    free(c->buf);
    c->buf = NULL;
    if (c->profile[0]) {
        char cmd[400];
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", c->profile);
        if (system(cmd) != 0)
            fprintf(stderr, "could not remove %s\n", c->profile);
        c->profile[0] = '\0';
    }
}
