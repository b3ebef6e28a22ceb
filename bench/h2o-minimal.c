/*
 * h2o-minimal: the smallest responder on h2o's library (Debian's libh2o-evloop 2.2.5, h2o's
 * own HTTP/1 on its own event loop), the h2o column of bench/conns.sh (issue 32). It answers
 * every GET like bulkhead's /health (200, application/json, X-Request-Id, the same body) and
 * does nothing else. One thread, one event loop, h2o's defaults otherwise (a request head of
 * at most H2O_MAX_REQLEN).
 *
 *   h2o-minimal PORT [REQ_TIMEOUT_S]
 *
 * REQ_TIMEOUT_S sets h2o's http1 request timeout (default 10 s), which bounds both an idle
 * keep-alive connection and the time a request head may take.
 */
#define H2O_USE_LIBUV 0
#include <h2o.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

static const char h2o_min_body[] = "{\"status\":\"healthy\"}";
static h2o_globalconf_t h2o_min_config;
static h2o_context_t h2o_min_ctx;
static h2o_accept_ctx_t h2o_min_accept;

static int h2o_min_on_req(h2o_handler_t *self, h2o_req_t *req)
{
    (void)self;
    if (!h2o_memis(req->method.base, req->method.len, H2O_STRLIT("GET")))
        return -1;
    req->res.status = 200;
    req->res.reason = "OK";
    req->res.content_length = sizeof(h2o_min_body) - 1;
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL,
                   H2O_STRLIT("application/json"));
    h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("x-request-id"), 0, NULL,
                          H2O_STRLIT("0123abcd-1f"));
    h2o_send_inline(req, h2o_min_body, sizeof(h2o_min_body) - 1);
    return 0;
}

static void h2o_min_on_accept(h2o_socket_t *listener, const char *err)
{
    if (err)
        return;
    h2o_socket_t *sock = h2o_evloop_socket_accept(listener);
    if (sock)
        h2o_accept(&h2o_min_accept, sock);
}

int main(int argc, char **argv)
{
    if (argc != 2 && argc != 3) {
        fprintf(stderr, "usage: h2o-minimal PORT [REQ_TIMEOUT_S]\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    h2o_config_init(&h2o_min_config);
    if (argc == 3)
        h2o_min_config.http1.req_timeout = (uint64_t)atoi(argv[2]) * 1000;
    h2o_hostconf_t *host =
        h2o_config_register_host(&h2o_min_config, h2o_iovec_init(H2O_STRLIT("default")), 65535);
    h2o_pathconf_t *path = h2o_config_register_path(host, "/", 0);
    h2o_handler_t *handler = h2o_create_handler(path, sizeof(*handler));
    handler->on_req = h2o_min_on_req;
    h2o_context_init(&h2o_min_ctx, h2o_evloop_create(), &h2o_min_config);
    h2o_min_accept.ctx = &h2o_min_ctx;
    h2o_min_accept.hosts = h2o_min_config.hosts;

    struct sockaddr_in addr = {.sin_family = AF_INET,
                               .sin_addr.s_addr = htonl(INADDR_LOOPBACK),
                               .sin_port = htons((uint16_t)atoi(argv[1]))};
    int one = 1, fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) ||
        bind(fd, (struct sockaddr *)&addr, sizeof(addr)) || listen(fd, 1024)) {
        perror("h2o-minimal: listen");
        return 1;
    }
    h2o_socket_t *listener =
        h2o_evloop_socket_create(h2o_min_ctx.loop, fd, H2O_SOCKET_FLAG_DONT_READ);
    h2o_socket_read_start(listener, h2o_min_on_accept);
    while (h2o_evloop_run(h2o_min_ctx.loop, INT32_MAX) == 0)
        ;
    return 0;
}
