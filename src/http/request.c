/*
 * request: reply building, suspend/resume hand-off and the end-of-request bookkeeping
 * (see request.h for who owns a request when).
 */
#include "request.h"
#include "evloop.h"
#include "log.h"
#include "mclock.h"
#include "xalloc.h"

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static atomic_uint_least64_t request_seq;

/* X-Request-Id from a client is kept when it is 1..64 of [A-Za-z0-9._:-]. */
static bool request_id_valid(const char *s)
{
    size_t n = 0;
    for (; s[n]; n++) {
        char c = s[n];
        if (n >= REQUEST_ID_MAX ||
            !((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == ':' || c == '-'))
            return false;
    }
    return n > 0;
}

struct request *request_new(const struct request_hooks *hooks, struct MHD_Connection *conn,
                            const char *url, const char *method)
{
    struct request *r = xcalloc(1, sizeof(*r));
    r->hooks = hooks;
    r->conn = conn;
    r->loop = evloop_current();
    r->url = url;
    r->method_name = method;
    if (!strcmp(method, "GET"))
        r->method = METHOD_GET;
    else if (!strcmp(method, "HEAD"))
        r->method = METHOD_HEAD;
    else if (!strcmp(method, "POST"))
        r->method = METHOD_POST;
    else
        r->method = METHOD_OTHER;
    /* From when its loop's turn woke: the time it waited for the loop counts, as the client
     * sees it (the nearest libmicrohttpd lets us get to when its bytes became readable). */
    r->t_start_us = r->loop ? evloop_turn_us(r->loop) : mclock_now_us();
    r->queue_us = -1;
    r->query_us = -1;
    r->status = 500;
    r->outcome = OUTCOME_ERROR;
    const char *rid = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "X-Request-Id");
    if (rid && request_id_valid(rid)) {
        snprintf(r->request_id, sizeof(r->request_id), "%s", rid);
    } else {
        uint64_t n = atomic_fetch_add_explicit(&request_seq, 1, memory_order_relaxed);
        snprintf(r->request_id, sizeof(r->request_id), "%s-%" PRIx64, hooks->instance_id, n);
    }
    hooks->begin(hooks->ctx);
    return r;
}

bool request_body_append(struct request *r, const char *data, size_t len, size_t max)
{
    if (r->body_too_large || r->body_len + len > max) {
        r->body_too_large = true;
        return false;
    }
    if (r->body_len + len + 1 > r->body_cap) {
        size_t cap = r->body_cap ? r->body_cap : 1024;
        while (cap < r->body_len + len + 1)
            cap *= 2;
        r->body = xrealloc(r->body, cap);
        r->body_cap = cap;
    }
    memcpy(r->body + r->body_len, data, len);
    r->body_len += len;
    r->body[r->body_len] = '\0';
    return true;
}

const char *request_header(const struct request *r, const char *name)
{
    return MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, name);
}

struct request_join {
    const char *name;
    char *out; /* grown with xrealloc */
    size_t len;
};

static enum MHD_Result request_join_field(void *cls, enum MHD_ValueKind kind, const char *key,
                                          size_t key_size, const char *value, size_t value_size)
{
    (void)kind;
    (void)key_size;
    struct request_join *j = cls;
    if (strcasecmp(key, j->name) || !value)
        return MHD_YES;
    j->out = xrealloc(j->out, j->len + value_size + 3);
    if (j->len) {
        memcpy(j->out + j->len, ", ", 2);
        j->len += 2;
    }
    memcpy(j->out + j->len, value, value_size);
    j->len += value_size;
    j->out[j->len] = '\0';
    return MHD_YES;
}

char *request_header_list(const struct request *r, const char *name)
{
    struct request_join j = {.name = name};
    MHD_get_connection_values_n(r->conn, MHD_HEADER_KIND, request_join_field, &j);
    return j.out;
}

int request_arg(const struct request *r, const char *name, const char **value)
{
    size_t len = 0;
    *value = NULL;
    if (MHD_lookup_connection_value_n(r->conn, MHD_GET_ARGUMENT_KIND, name, strlen(name), value,
                                      &len) != MHD_YES)
        return -ENOENT;
    if (*value && strlen(*value) != len)
        return -EINVAL;
    return 0;
}

void request_put(char *buf, size_t cap, size_t *len, const char *s)
{
    size_t n = strlen(s);
    if (*len + n + 1 > cap)
        n = *len + 1 < cap ? cap - *len - 1 : 0;
    memcpy(buf + *len, s, n);
    *len += n;
    buf[*len] = '\0';
}

const char *request_i64(char *buf, size_t cap, int64_t v)
{
    char *p = buf + cap - 1;
    *p = '\0';
    uint64_t u = v < 0 ? 0u - (uint64_t)v : (uint64_t)v;
    do {
        *--p = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (v < 0)
        *--p = '-';
    return p;
}

static void request_set(struct request *r, unsigned status, enum metrics_outcome outcome,
                        struct MHD_Response *resp, const char *content_type)
{
    if (!resp) {
        fprintf(stderr, "bulkhead: libmicrohttpd could not allocate a response\n");
        abort();
    }
    if (r->resp)
        MHD_destroy_response(r->resp); /* a later verdict replaces an earlier one */
    r->resp = resp;
    r->status = status;
    r->outcome = outcome;
    r->error = 0; /* apierr sets these after the reply it builds */
    r->reply_retry_s = 0;
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
    MHD_add_response_header(resp, "X-Request-Id", r->request_id);
    if (r->handler_ops && r->handler_ops->reply_headers)
        r->handler_ops->reply_headers(r, r->handler);
}

void request_reply_json(struct request *r, unsigned status, enum metrics_outcome outcome,
                        const char *json, size_t len)
{
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(len, (void *)json, MHD_RESPMEM_MUST_COPY);
    request_set(r, status, outcome, resp, "application/json");
}

void request_reply_static(struct request *r, unsigned status, enum metrics_outcome outcome,
                          const char *content_type, const char *body, size_t len)
{
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_PERSISTENT);
    request_set(r, status, outcome, resp, content_type);
}

void request_reply_owned(struct request *r, unsigned status, enum metrics_outcome outcome,
                         const char *body, size_t len, void (*free_cb)(void *), void *cls)
{
    struct MHD_Response *resp =
        MHD_create_response_from_buffer_with_free_callback_cls(len, (void *)body, free_cb, cls);
    request_set(r, status, outcome, resp, "application/json");
}

int64_t request_retry_seconds(int64_t us)
{
    int64_t s = (us + 999999) / 1000000;
    return s < 1 ? 1 : s;
}

/*
 * {"error":code,"message":message,"request_id":id[,"retry_after_s":n]}, built in place: every
 * rejection (a 429 flood most of all) passes here, and a jansson object costs a dozen
 * allocations. Strings go through log_json_escape, so any byte in message (which may quote
 * client input) still makes valid JSON; a message too long for the buffer is cut, never the
 * fields after it.
 */
void request_reply_error(struct request *r, unsigned status, enum metrics_outcome outcome,
                         const char *code, const char *message, const char *members,
                         int64_t retry_after_s)
{
    char body[2048], num[24];
    size_t len = 0;
    request_put(body, sizeof(body), &len, "{\"error\":\"");
    log_json_escape(body, 128, &len, code, SIZE_MAX);
    request_put(body, sizeof(body), &len, "\",\"message\":\"");
    log_json_escape(body, sizeof(body) - 160, &len, message, SIZE_MAX);
    request_put(body, sizeof(body), &len, "\"");
    if (members) {
        /* Cut whole only: a member cut short would not be JSON. */
        if (len + strlen(members) + 2 < sizeof(body) - 160) {
            request_put(body, sizeof(body), &len, ",");
            request_put(body, sizeof(body), &len, members);
        }
    }
    request_put(body, sizeof(body), &len, ",\"request_id\":\"");
    log_json_escape(body, sizeof(body) - 48, &len, r->request_id, SIZE_MAX);
    request_put(body, sizeof(body), &len, "\"");
    if (retry_after_s > 0) {
        request_put(body, sizeof(body), &len, ",\"retry_after_s\":");
        request_put(body, sizeof(body), &len, request_i64(num, sizeof(num), retry_after_s));
    }
    request_put(body, sizeof(body), &len, "}");
    request_reply_json(r, status, outcome, body, len);
    if (retry_after_s > 0)
        MHD_add_response_header(r->resp, MHD_HTTP_HEADER_RETRY_AFTER,
                                request_i64(num, sizeof(num), retry_after_s));
}

void request_set_handler(struct request *r, const struct request_handler_ops *ops, void *state)
{
    r->handler_ops = ops;
    r->handler = state;
}

void request_add_header(struct request *r, const char *name, const char *value)
{
    if (r->resp)
        MHD_add_response_header(r->resp, name, value);
}

void request_defer(struct request *r)
{
    r->state = REQUEST_DEFERRED;
    MHD_suspend_connection(r->conn);
}

void request_resume(struct request *r)
{
    struct MHD_Connection *c = r->conn;
    struct evloop_thread *loop = r->loop;
    r->state = REQUEST_READY;
    /* From here on the HTTP thread owns r again; resuming is the last touch. */
    MHD_resume_connection(c);
    if (loop)
        evloop_wake(loop); /* libmicrohttpd would not look at it before its next event */
}

enum MHD_Result request_send(struct request *r)
{
    r->state = REQUEST_SENT;
    enum MHD_Result ret = MHD_queue_response(r->conn, r->status, r->resp);
    MHD_destroy_response(r->resp);
    r->resp = NULL;
    return ret;
}

void request_finish(struct request *r, enum MHD_RequestTerminationCode toe)
{
    const struct request_hooks *hooks = r->hooks;
    int64_t total = mclock_now_us() - r->t_start_us;
    if (r->state != REQUEST_SENT && toe != MHD_REQUEST_TERMINATED_COMPLETED_OK) {
        /* The client left before a reply was sent. */
        r->status = 499;
        r->outcome = OUTCOME_CLIENT_ERROR;
    }
    hooks->done(hooks->ctx, r, total);
    bool success = r->outcome == OUTCOME_OK && r->status >= 200 && r->status < 300;
    if (log_access_wanted(success, total)) {
        struct log_access a = {
            .request_id = r->request_id,
            .tier = r->tier_name,
            .tenant = r->tenant_label,
            .method = r->method_name,
            .path = r->url,
            .outcome = metrics_outcome_name(r->outcome),
            .status = (int)r->status,
            .total_ms = (double)total / 1000.0,
            .queue_ms = r->queue_us > 0 ? (double)r->queue_us / 1000.0 : 0.0,
            .query_ms = r->query_us > 0 ? (double)r->query_us / 1000.0 : 0.0,
        };
        log_access(&a);
    }
    if (r->resp)
        MHD_destroy_response(r->resp);
    if (r->handler_ops && r->handler_ops->free)
        r->handler_ops->free(r->handler);
    free(r->body);
    free(r);
    hooks->freed(hooks->ctx);
}
