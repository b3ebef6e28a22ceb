/*
 * minimal: the smallest libmicrohttpd server of the same shape as bulkhead's HTTP layer, the
 * yardstick for `make bench`. Same daemon flags (epoll, one event thread per CPU,
 * suspend/resume, inter-thread channel), same two-call pattern, a fresh response per request
 * with the same headers. GET /api/data answers what bulkhead's 429 path answers (status,
 * headers, a JSON body of the same size); every other path answers like /health.
 * It does nothing else: no routing table, no metrics, no logging, no rate limiter.
 *
 *   minimal PORT [CONNECTION_LIMIT]
 *
 * CONNECTION_LIMIT is libmicrohttpd's cap (4096 by default, bulkhead's HTTP_MAX_CONNECTIONS);
 * bench/conns.sh raises it to hold 10,000 idle connections.
 */
#include <microhttpd.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char health_body[] = "{\"status\":\"healthy\"}";
static const char limited_body[] =
    "{\"error\":\"rate_limited\",\"message\":\"tier free allows 100 requests per 60 s per "
    "tenant\",\"request_id\":\"0123abcd-1f\",\"retry_after_s\":1}";

static enum MHD_Result minimal_access(void *cls, struct MHD_Connection *c, const char *url,
                                      const char *method, const char *version, const char *upload,
                                      size_t *upload_size, void **state)
{
    (void)cls;
    (void)method;
    (void)version;
    (void)upload;
    (void)upload_size;
    static int first;
    if (!*state) {
        *state = &first; /* queue on the second call, as bulkhead does */
        return MHD_YES;
    }
    bool limited = !strcmp(url, "/api/data");
    const char *body = limited ? limited_body : health_body;
    size_t len = limited ? sizeof(limited_body) - 1 : sizeof(health_body) - 1;
    struct MHD_Response *r =
        MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_PERSISTENT);
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    MHD_add_response_header(r, "X-Request-Id", "0123abcd-1f");
    if (limited) {
        MHD_add_response_header(r, "RateLimit-Limit", "100");
        MHD_add_response_header(r, "RateLimit-Remaining", "0");
        MHD_add_response_header(r, "RateLimit-Reset", "60");
        MHD_add_response_header(r, MHD_HTTP_HEADER_RETRY_AFTER, "1");
    }
    enum MHD_Result ret = MHD_queue_response(c, limited ? 429 : 200, r);
    MHD_destroy_response(r);
    return ret;
}

int main(int argc, char **argv)
{
    if (argc != 2 && argc != 3) {
        fprintf(stderr, "usage: minimal PORT [CONNECTION_LIMIT]\n");
        return 2;
    }
    unsigned limit = argc == 3 ? (unsigned)atoi(argv[2]) : 4096u;
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    struct MHD_Daemon *d = MHD_start_daemon(
        MHD_USE_EPOLL_INTERNAL_THREAD | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ITC,
        (uint16_t)atoi(argv[1]), NULL, NULL, minimal_access, NULL, MHD_OPTION_THREAD_POOL_SIZE,
        (unsigned)(n > 1 ? n : 1), MHD_OPTION_CONNECTION_LIMIT, limit,
        MHD_OPTION_LISTEN_BACKLOG_SIZE, 1024u, MHD_OPTION_END);
    if (!d)
        return 1;
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigprocmask(SIG_BLOCK, &set, NULL);
    int sig;
    sigwait(&set, &sig);
    MHD_stop_daemon(d);
    return 0;
}
