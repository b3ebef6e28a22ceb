/*
 * redisproc: a private redis-server for a test (unit or integration), from Debian's
 * redis-server package: loopback only, no persistence, in its own directory under
 * BH_TEST_WORK (or /tmp). It lives in tests/, not tests/integration/, because the unit tests
 * use it too: the Makefile links redisproc.o into both.
 *
 * redisproc_start waits until the server answers PING (bounded); redisproc_stop sends SIGTERM
 * and reaps it. Starting again with the same port brings a restarted, empty Redis back. With a
 * password set before the start, the server requires it (--requirepass) and redisproc_cmd
 * authenticates with it.
 */
#ifndef BULKHEAD_TEST_REDISPROC_H
#define BULKHEAD_TEST_REDISPROC_H

#include <sys/types.h>

struct redisproc {
    pid_t pid;         /* 0 when not running */
    int port;          /* kept across stop/start */
    char dir[256];     /* its working directory and log */
    char url[64];      /* redis://127.0.0.1:PORT (no credentials) */
    char password[64]; /* set before redisproc_start: --requirepass; "" = none */
};

/* Start (or restart, when r->port is already set) a redis-server. 0 or -1. */
int redisproc_start(struct redisproc *r);
/* Stop it (SIGTERM; SIGKILL after 10 s) and reap it; SIGCONT first, in case a test left it
 * stopped. */
void redisproc_stop(struct redisproc *r);
/* One command on a fresh connection to 127.0.0.1:port; the integer reply (0 for a status
 * reply), or -1. */
long long redisproc_int(int port, const char *cmd);
/* One command on a fresh connection, after AUTH with r->password when it has one; the integer
 * reply (0 for a status reply), or -1. */
long long redisproc_cmd(const struct redisproc *r, const char *cmd);
/* Milliseconds on the monotonic clock. */
long long redisproc_now_ms(void);

#endif
