/*
 * hserver: the server under test as a child process (see hserver.h).
 */
#include "hserver.h"
#include "harness.h"

#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

struct h_ready_ctx {
    const struct h_server *s;
    bool healthy;
};

static bool h_server_ready(void *arg)
{
    struct h_ready_ctx *c = arg;
    int status;
    if (waitpid(c->s->pid, &status, WNOHANG) == c->s->pid)
        return true; /* exited: stop waiting, the caller sees it */
    char url[128];
    snprintf(url, sizeof(url), "%s/health", c->s->base);
    struct h_resp r;
    h_get(url, NULL, &r);
    bool ok = c->healthy ? r.status == 200 : r.status != 0;
    h_resp_free(&r);
    return ok;
}

int h_server_start(struct h_server *s, const char *database_url, const char *const *env)
{
    return h_server_start_ex(s, database_url, env, true);
}

int h_server_start_ex(struct h_server *s, const char *database_url, const char *const *env,
                      bool wait_ready)
{
    static int seq;
    const char *work = getenv("BH_TEST_WORK");
    if (!work)
        work = "/tmp";
    memset(s, 0, sizeof(*s));
    s->port = h_free_port();
    bool v6 = false; /* API_BIND an IPv6 address (::, ::1): reached on ::1 */
    for (const char *const *e = env; e && *e; e++)
        v6 |= !strncmp(*e, "API_BIND=", 9) && strchr(*e + 9, ':');
    snprintf(s->base, sizeof(s->base), v6 ? "http://[::1]:%d" : "http://127.0.0.1:%d", s->port);
    snprintf(s->log, sizeof(s->log), "%s/server-%d-%d-%d.log", work, (int)getpid(), s->port, seq++);
    char abs_bin[600];
    snprintf(abs_bin, sizeof(abs_bin), "%s", h_bin());

    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        /* If the test process dies, its server must not outlive it (it would hold ports and
         * any lock the test run holds). */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() == 1)
            _exit(125);
        char port[16];
        snprintf(port, sizeof(port), "%d", s->port);
        setenv("API_PORT", port, 1);
        setenv("API_BIND", "127.0.0.1", 1);
        setenv("DATABASE_URL", database_url ? database_url : "", 1);
        /* The fleet exchange (one more connection and four statements a second per server) is
         * off unless a test asks for it (test_fleet does): the suite
         * runs dozens of servers in one cluster at once, and at its start connects already took
         * over 3 s there. */
        setenv("FLEET", "false", 0);
        for (const char *const *e = env; e && *e; e++)
            putenv((char *)*e);
        int fd = open(s->log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
            close(fd);
        }
        /* Run where no .env file can change the settings under test. */
        if (chdir(work) != 0)
            _exit(126);
        execl(abs_bin, abs_bin, (char *)NULL);
        _exit(127);
    }
    s->pid = pid;
    struct h_ready_ctx c = {.s = s, .healthy = wait_ready};
    if (!h_wait_until(h_server_ready, &c, 20000) || kill(pid, 0) != 0) {
        fprintf(stderr, "harness: server did not come up; log %s\n", s->log);
        return -1;
    }
    int status;
    if (waitpid(pid, &status, WNOHANG) == pid) {
        fprintf(stderr, "harness: server exited at start; log %s\n", s->log);
        s->pid = 0;
        return -1;
    }
    return 0;
}

int h_server_stop(struct h_server *s, int sig, int timeout_ms)
{
    if (s->pid <= 0)
        return -1;
    kill(s->pid, sig);
    int64_t end = h_now_ms() + timeout_ms;
    int status = 0;
    for (;;) {
        pid_t r = waitpid(s->pid, &status, WNOHANG);
        if (r == s->pid)
            break;
        if (h_now_ms() >= end) {
            kill(s->pid, SIGKILL);
            waitpid(s->pid, &status, 0);
            s->pid = 0;
            return -1;
        }
        h_nap_ms(10);
    }
    s->pid = 0;
    if (WIFEXITED(status))
        return WEXITSTATUS(status);
    return 128 + WTERMSIG(status);
}

bool h_server_log_has(const struct h_server *s, const char *needle)
{
    return h_server_log_count(s, needle) > 0;
}

int h_server_log_count(const struct h_server *s, const char *needle)
{
    char *text = h_read_file(s->log);
    if (!text)
        return 0;
    int n = 0;
    for (char *line = text; line && *line;) {
        char *nl = strchr(line, '\n');
        if (nl)
            *nl = '\0';
        if (strstr(line, needle))
            n++;
        line = nl ? nl + 1 : NULL;
    }
    free(text);
    return n;
}
