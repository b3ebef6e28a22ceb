/*
 * redisproc: a private redis-server for a test (see redisproc.h).
 */
#include "redisproc.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define REDISPROC_BIN "/usr/bin/redis-server"

long long redisproc_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int redisproc_free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(sa);
    int port = -1;
    if (fd >= 0 && !bind(fd, (struct sockaddr *)&sa, sizeof(sa)) &&
        !getsockname(fd, (struct sockaddr *)&sa, &len))
        port = ntohs(sa.sin_port);
    if (fd >= 0)
        close(fd);
    return port;
}

/* A fresh connection, authenticated when password is not empty; NULL on failure. */
static redisContext *redisproc_connect(int port, const char *password, int timeout_s)
{
    struct timeval tv = {.tv_sec = timeout_s, .tv_usec = 0};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", port, tv);
    if (c && !c->err && password && password[0]) {
        redisReply *rep = redisCommand(c, "AUTH %s", password);
        bool ok = rep && rep->type == REDIS_REPLY_STATUS;
        freeReplyObject(rep);
        if (!ok) {
            redisFree(c);
            return NULL;
        }
    }
    if (c && c->err) {
        redisFree(c);
        return NULL;
    }
    return c;
}

/* PING on a fresh connection: true when the server answers PONG. */
static bool redisproc_ping(int port, const char *password)
{
    redisContext *c = redisproc_connect(port, password, 1);
    bool ok = false;
    if (c) {
        redisReply *rep = redisCommand(c, "PING");
        ok = rep && rep->type == REDIS_REPLY_STATUS && !strcmp(rep->str, "PONG");
        freeReplyObject(rep);
        redisFree(c);
    }
    return ok;
}

static long long redisproc_run(int port, const char *password, const char *cmd)
{
    redisContext *c = redisproc_connect(port, password, 2);
    long long v = -1;
    if (c) {
        redisReply *rep = redisCommand(c, cmd);
        if (rep && rep->type == REDIS_REPLY_INTEGER)
            v = rep->integer;
        else if (rep && rep->type == REDIS_REPLY_STATUS)
            v = 0;
        freeReplyObject(rep);
    }
    if (c)
        redisFree(c);
    return v;
}

long long redisproc_int(int port, const char *cmd)
{
    return redisproc_run(port, NULL, cmd);
}

long long redisproc_cmd(const struct redisproc *r, const char *cmd)
{
    return redisproc_run(r->port, r->password, cmd);
}

int redisproc_start(struct redisproc *r)
{
    if (access(REDISPROC_BIN, X_OK) != 0) {
        fprintf(stderr, "redisproc: %s is missing (scripts/deps.sh test installs it)\n",
                REDISPROC_BIN);
        return -1;
    }
    if (r->port <= 0) {
        r->port = redisproc_free_port();
        const char *work = getenv("BH_TEST_WORK");
        snprintf(r->dir, sizeof(r->dir), "%s/redis-%d-%d", work ? work : "/tmp", (int)getpid(),
                 r->port);
        mkdir(r->dir, 0755);
    }
    snprintf(r->url, sizeof(r->url), "redis://127.0.0.1:%d", r->port);
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        char port[16], log[300];
        snprintf(port, sizeof(port), "%d", r->port);
        snprintf(log, sizeof(log), "%s/redis.log", r->dir);
        int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
            close(fd);
        }
        if (r->password[0])
            execl(REDISPROC_BIN, REDISPROC_BIN, "--port", port, "--bind", "127.0.0.1", "--save", "",
                  "--appendonly", "no", "--dir", r->dir, "--daemonize", "no", "--requirepass",
                  r->password, (char *)NULL);
        else
            execl(REDISPROC_BIN, REDISPROC_BIN, "--port", port, "--bind", "127.0.0.1", "--save", "",
                  "--appendonly", "no", "--dir", r->dir, "--daemonize", "no", (char *)NULL);
        _exit(127);
    }
    r->pid = pid;
    long long end = redisproc_now_ms() + 15000;
    while (redisproc_now_ms() < end) {
        int status;
        if (waitpid(pid, &status, WNOHANG) == pid) {
            fprintf(stderr, "redisproc: redis-server exited at start; see %s/redis.log\n", r->dir);
            r->pid = 0;
            return -1;
        }
        if (redisproc_ping(r->port, r->password))
            return 0;
        struct timespec ts = {0, 10 * 1000000L};
        nanosleep(&ts, NULL);
    }
    fprintf(stderr, "redisproc: redis-server did not answer PING in 15 s\n");
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    r->pid = 0;
    return -1;
}

void redisproc_stop(struct redisproc *r)
{
    if (r->pid <= 0)
        return;
    kill(r->pid, SIGCONT); /* in case a test left it stopped */
    kill(r->pid, SIGTERM);
    long long end = redisproc_now_ms() + 10000;
    for (;;) {
        if (waitpid(r->pid, NULL, WNOHANG) == r->pid)
            break;
        if (redisproc_now_ms() >= end) {
            kill(r->pid, SIGKILL);
            waitpid(r->pid, NULL, 0);
            break;
        }
        struct timespec ts = {0, 10 * 1000000L};
        nanosleep(&ts, NULL);
    }
    r->pid = 0;
}
