/*
 * test_quickstart: the README's first steps, on a scratch copy of the tree. `cp .env.example
 * .env && make run` (make run's own script, scripts/run.sh, with the binary under test) starts a
 * private PostgreSQL, serves /health 200 and real data, and stops cleanly on SIGTERM (server
 * first, then the cluster; exit status 0). The copied .env's empty DATABASE_URL= counts as unset;
 * a DATABASE_URL written in .env is used instead, and no cluster starts; a broken .env stops
 * run.sh before any PostgreSQL starts, with the server's own message. Ports are free ones, never
 * 8080/5433 (the copied .env says API_PORT=8080; the environment wins).
 */
#include "harness.h"

#include <errno.h>
#include <fcntl.h>
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

static char scratch[400]; /* the copy of the tree */

struct run {
    pid_t pid; /* scripts/run.sh, leader of its own process group */
    int port;
    char base[64];
    char log[500];
};

static int sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int sh(const char *fmt, ...)
{
    char cmd[2000];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof(cmd), fmt, ap);
    va_end(ap);
    int rc = system(cmd);
    if (rc != 0)
        fprintf(stderr, "test_quickstart: \"%s\" failed (%d)\n", cmd, rc);
    return rc;
}

/* A copy of the tree without build output, git data, run state or a developer's .env. */
static int setup(void **state)
{
    (void)state;
    snprintf(scratch, sizeof(scratch), "%s/quickstart-%d", getenv("BH_TEST_WORK"), (int)getpid());
    return sh("rm -rf '%s' && mkdir -p '%s' && tar -C '%s' --exclude=./build --exclude=./.git "
              "--exclude=./.run --exclude=./.env -cf - . | tar -C '%s' -xf -",
              scratch, scratch, getenv("BH_ROOT"), scratch);
}

static int teardown(void **state)
{
    (void)state;
    /* A cluster left by a failed test: stop it, then drop the copy. */
    char pid[600];
    snprintf(pid, sizeof(pid), "%s/.run/pg/data/postmaster.pid", scratch);
    if (access(pid, F_OK) == 0)
        sh("'%s/scripts/pg.sh' stop '%s/.run/pg' >/dev/null 2>&1", scratch, scratch);
    return sh("rm -rf '%s'", scratch);
}

/* scripts/run.sh in the scratch tree, as `make run` runs it, on free ports. */
static void run_start(struct run *r, const char *name)
{
    r->port = h_free_port();
    int pg_port = h_free_port();
    snprintf(r->base, sizeof(r->base), "http://127.0.0.1:%d", r->port);
    snprintf(r->log, sizeof(r->log), "%s/server-quickstart-%s.log", getenv("BH_TEST_WORK"), name);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        setpgid(0, 0);
        char port[16], pgp[16];
        snprintf(port, sizeof(port), "%d", r->port);
        snprintf(pgp, sizeof(pgp), "%d", pg_port);
        unsetenv("DATABASE_URL");
        setenv("API_PORT", port, 1);
        setenv("PG_PORT", pgp, 1);
        setenv("BULKHEAD_BIN", h_bin(), 1);
        int fd = open(r->log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
            close(fd);
        }
        if (chdir(scratch) != 0)
            _exit(126);
        execl("/bin/bash", "bash", "scripts/run.sh", (char *)NULL);
        _exit(127);
    }
    r->pid = pid;
}

struct ready {
    struct run *r;
    long status;
    bool exited;
};

static bool health_200(void *arg)
{
    struct ready *w = arg;
    int st;
    if (waitpid(w->r->pid, &st, WNOHANG) == w->r->pid) {
        w->exited = true;
        w->r->pid = 0;
        return true;
    }
    char u[128];
    snprintf(u, sizeof(u), "%s/health", w->r->base);
    struct h_resp resp;
    h_get(u, NULL, &resp);
    w->status = resp.status;
    h_resp_free(&resp);
    return w->status == 200;
}

/* Wait for /health 200 (initdb and the first start take a few seconds). */
static void run_wait_healthy(struct run *r)
{
    struct ready w = {.r = r};
    bool ok = h_wait_until(health_200, &w, 120000);
    if (!ok || w.exited) {
        char *log = h_read_file(r->log);
        fail_msg("make run did not serve /health 200 (last status %ld%s); its output:\n%s",
                 w.status, w.exited ? ", it exited" : "", log ? log : "(none)");
    }
}

/* Wait up to timeout_ms for run.sh to exit; its exit status (128+signal if killed), or -1 when
 * it is still running (then it is killed with its group). */
static int run_wait_exit(struct run *r, int timeout_ms)
{
    int64_t end = h_now_ms() + timeout_ms;
    int st = 0;
    while (waitpid(r->pid, &st, WNOHANG) != r->pid) {
        if (h_now_ms() > end) {
            kill(-r->pid, SIGKILL);
            waitpid(r->pid, &st, 0);
            r->pid = 0;
            return -1;
        }
        struct timespec ts = {0, 20 * 1000000L};
        nanosleep(&ts, NULL);
    }
    r->pid = 0;
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* SIGTERM to run.sh, as Ctrl-C's handler does; its exit status. */
static int run_stop(struct run *r)
{
    assert_int_equal(kill(r->pid, SIGTERM), 0);
    int status = run_wait_exit(r, 90000);
    if (status < 0)
        fail_msg("make run did not stop within 90 s of SIGTERM");
    return status;
}

static bool log_has(const struct run *r, const char *needle)
{
    char *log = h_read_file(r->log);
    bool has = log && strstr(log, needle);
    free(log);
    return has;
}

static void env_example_copied_as_is_runs_a_private_postgresql_and_serves(void **state)
{
    (void)state;
    assert_int_equal(sh("cd '%s' && cp .env.example .env", scratch), 0);
    struct run r;
    run_start(&r, "example");
    run_wait_healthy(&r);
    assert_true(log_has(&r, "make run: starting a private PostgreSQL in .run/pg"));
    char pidfile[600];
    snprintf(pidfile, sizeof(pidfile), "%s/.run/pg/data/postmaster.pid", scratch);
    assert_int_equal(access(pidfile, F_OK), 0);

    struct h_resp resp;
    char u[160];
    snprintf(u, sizeof(u), "%s/health", r.base);
    assert_int_equal(h_get(u, NULL, &resp), 0);
    assert_int_equal(resp.status, 200);
    assert_string_equal(resp.body, "{\"status\":\"healthy\"}");
    h_resp_free(&resp);
    /* The private database has init-db.sql's rows. */
    snprintf(u, sizeof(u), "%s/api/data?limit=1", r.base);
    const char *h[] = {"X-Tenant-Tier: free", NULL};
    h_get(u, h, &resp);
    assert_int_equal(resp.status, 200);
    assert_int_equal(resp.body[0], '[');
    h_resp_free(&resp);

    int status = run_stop(&r);
    char *log = h_read_file(r.log);
    printf("# make run with .env.example as .env: /health 200, stopped with status %d\n", status);
    if (status != 0)
        fail_msg("make run exited %d:\n%s", status, log ? log : "");
    free(log);
    assert_true(log_has(&r, "make run: stopping the private PostgreSQL"));
    assert_int_equal(access(pidfile, F_OK), -1); /* the cluster is down */
    snprintf(u, sizeof(u), "%s/health", r.base);
    h_get(u, NULL, &resp);
    assert_int_equal(resp.status, 0); /* nothing listens any more */
    h_resp_free(&resp);
}

static void a_database_url_in_dotenv_is_used_and_no_postgresql_starts(void **state)
{
    (void)state;
    char url[300];
    assert_int_equal(h_db_create("quickstart", url, sizeof(url)), 0);
    assert_int_equal(sh("cd '%s' && sed 's|^DATABASE_URL=$|DATABASE_URL=%s|' .env.example >.env "
                        "&& rm -rf .run && grep -q '^DATABASE_URL=postgresql://' .env",
                        scratch, url),
                     0);
    struct run r;
    run_start(&r, "dotenv-url");
    run_wait_healthy(&r);
    assert_false(log_has(&r, "starting a private PostgreSQL"));
    char dir[600];
    snprintf(dir, sizeof(dir), "%s/.run/pg", scratch);
    assert_int_equal(access(dir, F_OK), -1);
    assert_int_equal(run_stop(&r), 0);
    assert_false(log_has(&r, "stopping the private PostgreSQL"));
}

static void a_broken_dotenv_stops_make_run_before_postgresql(void **state)
{
    (void)state;
    assert_int_equal(sh("cd '%s' && rm -rf .run && printf 'API_PORT=8080\\nnot an assignment\\n' "
                        ">.env",
                        scratch),
                     0);
    struct run r;
    run_start(&r, "broken");
    assert_int_equal(run_wait_exit(&r, 30000), 1);
    assert_true(log_has(&r, "bulkhead: configuration refused: .env: line 2: expected NAME=VALUE"));
    assert_false(log_has(&r, "starting a private PostgreSQL"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(env_example_copied_as_is_runs_a_private_postgresql_and_serves),
        cmocka_unit_test(a_database_url_in_dotenv_is_used_and_no_postgresql_starts),
        cmocka_unit_test(a_broken_dotenv_stops_make_run_before_postgresql),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
