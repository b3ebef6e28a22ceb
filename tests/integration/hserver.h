/*
 * hserver: the server under test as a child process of an integration test. h_server_start
 * runs $BULKHEAD_BIN (h_bin) on a free port with the given environment, in the test's work
 * folder (where no .env file can change the settings), logging to a file there, and waits until
 * /health answers; the child dies with the test process. h_server_stop signals it and reaps it;
 * h_server_log_has and h_server_log_count read its log. harness.h includes this, and this
 * module uses the harness's ports, waits and HTTP client.
 */
#ifndef BULKHEAD_TEST_HSERVER_H
#define BULKHEAD_TEST_HSERVER_H

#include <stdbool.h>
#include <sys/types.h>

struct h_server {
    pid_t pid;
    int port;
    char base[64]; /* http://127.0.0.1:PORT (http://[::1]:PORT for an IPv6 API_BIND in env) */
    char log[256]; /* its stdout/stderr */
};

/* env: NULL-terminated "NAME=value" strings added to the environment. Waits for /health to
 * answer (any status) within 20 s. 0 or -1. */
int h_server_start(struct h_server *s, const char *database_url, const char *const *env);
/* Same, but require_healthy=false also accepts a server that cannot reach its database. */
int h_server_start_ex(struct h_server *s, const char *database_url, const char *const *env,
                      bool wait_ready);
/* Send sig and wait up to timeout_ms for exit. Returns the exit status, 128+signal, or -1. */
int h_server_stop(struct h_server *s, int sig, int timeout_ms);
/* Whether the server's log contains needle (now). */
bool h_server_log_has(const struct h_server *s, const char *needle);
/* Count lines of the log containing needle. */
int h_server_log_count(const struct h_server *s, const char *needle);

#endif
