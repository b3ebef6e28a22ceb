/*
 * request: the head's lookups, reply building, the hand-off and the end-of-request bookkeeping
 * (see request.h for who owns a request when).
 */
#include "request.h"
#include "conn.h"
#include "evloop.h"
#include "h1.h"
#include "log.h"
#include "mclock.h"
#include "xalloc.h"

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

static int request_hex(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Decode %XX (and '+' as a space when plus) in place; a malformed escape stays as it is.
 * Returns whether a %00 was decoded (the string then ends there for C). */
static bool request_unescape(char *s, bool plus)
{
    bool nul = false;
    char *w = s;
    for (char *p = s; *p; p++) {
        int hi, lo;
        if (*p == '%' && (hi = request_hex(p[1])) >= 0 && (lo = request_hex(p[2])) >= 0) {
            *w = (char)(hi * 16 + lo);
            nul |= *w == '\0';
            w++;
            p += 2;
        } else {
            *w++ = plus && *p == '+' ? ' ' : *p;
        }
    }
    *w = '\0';
    return nul;
}

/* "a=1&b&c=%20" into r->args (one allocation: the array, then the text). */
static void request_parse_query(struct request *r, const char *q)
{
    size_t qlen = strlen(q);
    unsigned n = 1;
    for (const char *p = q; *p; p++)
        n += *p == '&';
    char *block = xmalloc(n * sizeof(struct request_arg) + qlen + 1);
    struct request_arg *args = (struct request_arg *)(void *)block;
    char *text = block + n * sizeof(struct request_arg);
    memcpy(text, q, qlen + 1);
    unsigned k = 0;
    for (char *p = text; p;) {
        char *amp = strchr(p, '&');
        if (amp)
            *amp = '\0';
        if (*p) {
            char *eq = strchr(p, '=');
            if (eq)
                *eq = '\0';
            request_unescape(p, true);
            args[k] = (struct request_arg){.name = p};
            if (eq) {
                args[k].nul = request_unescape(eq + 1, true);
                args[k].value = eq + 1;
            }
            k++;
        }
        p = amp ? amp + 1 : NULL;
    }
    r->query = block;
    r->args = args;
    r->nargs = k;
}

struct request *request_new(const struct request_hooks *hooks, struct conn *conn,
                            const struct h1 *head, const char *client_addr)
{
    struct request *r = xcalloc(1, sizeof(*r));
    r->hooks = hooks;
    r->conn = conn;
    r->loop = evloop_current();
    r->head = head;
    r->client_addr = client_addr;
    r->url = "-";
    r->method_name = "-";
    r->method = METHOD_OTHER;
    if (head) {
        /* The target is the connection's, and this request its only reader: split and
         * decoded in place. */
        char *target = head->buf + head->url;
        char *q = strchr(target, '?');
        if (q) {
            *q = '\0';
            request_parse_query(r, q + 1);
        }
        request_unescape(target, false);
        r->url = target;
        r->method_name = h1_method(head);
        if (!strcmp(r->method_name, "GET"))
            r->method = METHOD_GET;
        else if (!strcmp(r->method_name, "HEAD"))
            r->method = METHOD_HEAD;
        else if (!strcmp(r->method_name, "POST"))
            r->method = METHOD_POST;
    }
    /* From when its loop's turn woke: the time it waited for the loop counts, as the client
     * sees it. */
    r->t_start_us = r->loop ? evloop_turn_us(r->loop) : mclock_now_us();
    r->queue_us = -1;
    r->query_us = -1;
    r->status = 500;
    r->outcome = OUTCOME_ERROR;
    const char *rid = request_header(r, "X-Request-Id");
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
    const struct h1 *h = r->head;
    if (!h)
        return NULL;
    for (unsigned i = 0; i < h->nfields; i++)
        if (!strcasecmp(h1_str(h, h->fields[i].name), name))
            return h1_str(h, h->fields[i].value);
    return NULL;
}

char *request_header_list(const struct request *r, const char *name)
{
    const struct h1 *h = r->head;
    char *out = NULL;
    size_t len = 0;
    for (unsigned i = 0; h && i < h->nfields; i++) {
        if (strcasecmp(h1_str(h, h->fields[i].name), name))
            continue;
        size_t n = h->fields[i].value_len;
        out = xrealloc(out, len + n + 3);
        if (len) {
            memcpy(out + len, ", ", 2);
            len += 2;
        }
        memcpy(out + len, h1_str(h, h->fields[i].value), n);
        len += n;
        out[len] = '\0';
    }
    return out;
}

int request_arg(const struct request *r, const char *name, const char **value)
{
    *value = NULL;
    for (unsigned i = 0; i < r->nargs; i++) {
        if (strcasecmp(r->args[i].name, name))
            continue;
        *value = r->args[i].value;
        return r->args[i].nul ? -EINVAL : 0;
    }
    return -ENOENT;
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

/* The reply's body is let go (a later verdict replaces it, or the request ends). */
static void request_drop_body(struct request *r)
{
    if (r->out_free)
        r->out_free(r->out_cls);
    r->out_free = NULL;
    r->out_body = NULL;
    r->out_len = 0;
}

static void request_set(struct request *r, unsigned status, enum metrics_outcome outcome,
                        const char *content_type, const char *body, size_t len,
                        void (*free_cb)(void *), void *cls)
{
    request_drop_body(r); /* a later verdict replaces an earlier one */
    r->has_reply = true;
    r->close = false;
    r->fields_len = 0;
    r->out_body = body;
    r->out_len = len;
    r->out_free = free_cb;
    r->out_cls = cls;
    r->content_type = content_type;
    r->status = status;
    r->outcome = outcome;
    r->error = 0; /* apierr sets these after the reply it builds */
    r->reply_retry_s = 0;
    request_add_header(r, "X-Request-Id", r->request_id);
    if (r->handler_ops && r->handler_ops->reply_headers)
        r->handler_ops->reply_headers(r, r->handler);
}

void request_reply_json(struct request *r, unsigned status, enum metrics_outcome outcome,
                        const char *json, size_t len)
{
    char *copy = xmalloc(len + 1);
    memcpy(copy, json, len);
    copy[len] = '\0';
    request_set(r, status, outcome, "application/json", copy, len, free, copy);
}

void request_reply_static(struct request *r, unsigned status, enum metrics_outcome outcome,
                          const char *content_type, const char *body, size_t len)
{
    request_set(r, status, outcome, content_type, body, len, NULL, NULL);
}

void request_reply_owned(struct request *r, unsigned status, enum metrics_outcome outcome,
                         const char *body, size_t len, void (*free_cb)(void *), void *cls)
{
    request_set(r, status, outcome, "application/json", body, len, free_cb, cls);
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
        request_add_header(r, "Retry-After", request_i64(num, sizeof(num), retry_after_s));
}

void request_set_handler(struct request *r, const struct request_handler_ops *ops, void *state)
{
    r->handler_ops = ops;
    r->handler = state;
}

/* Append s (n bytes) to the growable text *buf (*len of *cap used). */
static void request_append(char **buf, size_t *len, size_t *cap, const char *s, size_t n)
{
    if (*len + n + 1 > *cap) {
        size_t c = *cap ? *cap : 256;
        while (c < *len + n + 1)
            c *= 2;
        *buf = xrealloc(*buf, c);
        *cap = c;
    }
    memcpy(*buf + *len, s, n);
    *len += n;
    (*buf)[*len] = '\0';
}

void request_add_header(struct request *r, const char *name, const char *value)
{
    if (!r->has_reply)
        return;
    if (!strcasecmp(name, "Connection")) {
        r->close |= !strcasecmp(value, "close");
        return; /* the connection writes its own */
    }
    request_append(&r->fields, &r->fields_len, &r->fields_cap, name, strlen(name));
    request_append(&r->fields, &r->fields_len, &r->fields_cap, ": ", 2);
    request_append(&r->fields, &r->fields_len, &r->fields_cap, value, strlen(value));
    request_append(&r->fields, &r->fields_len, &r->fields_cap, "\r\n", 2);
}

void request_set_content_type(struct request *r, const char *content_type)
{
    r->content_type = content_type;
}

static const char *request_reason(unsigned status)
{
    switch (status) {
    case 200:
        return "OK";
    case 201:
        return "Created";
    case 204:
        return "No Content";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 408:
        return "Request Timeout";
    case 409:
        return "Conflict";
    case 411:
        return "Length Required";
    case 413:
        return "Content Too Large";
    case 414:
        return "URI Too Long";
    case 415:
        return "Unsupported Media Type";
    case 429:
        return "Too Many Requests";
    case 431:
        return "Request Header Fields Too Large";
    case 500:
        return "Internal Server Error";
    case 502:
        return "Bad Gateway";
    case 503:
        return "Service Unavailable";
    case 504:
        return "Gateway Timeout";
    case 505:
        return "HTTP Version Not Supported";
    default:
        return "Unknown";
    }
}

void request_wire(struct request *r, bool keep_alive, bool http10_keep_alive, const char *date,
                  size_t *body_len)
{
    char line[64], num[24];
    size_t cap = 0;
    r->wire_len = 0;
    free(r->wire);
    r->wire = NULL;
    int n =
        snprintf(line, sizeof(line), "HTTP/1.1 %u %s\r\n", r->status, request_reason(r->status));
    request_append(&r->wire, &r->wire_len, &cap, line, (size_t)n);
    bool no_content = r->status == 204 || r->status == 304;
    if (r->content_type && !no_content) {
        request_append(&r->wire, &r->wire_len, &cap, "Content-Type: ", 14);
        request_append(&r->wire, &r->wire_len, &cap, r->content_type, strlen(r->content_type));
        request_append(&r->wire, &r->wire_len, &cap, "\r\n", 2);
    }
    if (r->fields_len)
        request_append(&r->wire, &r->wire_len, &cap, r->fields, r->fields_len);
    if (!no_content) {
        const char *len = request_i64(num, sizeof(num), (int64_t)r->out_len);
        request_append(&r->wire, &r->wire_len, &cap, "Content-Length: ", 16);
        request_append(&r->wire, &r->wire_len, &cap, len, strlen(len));
        request_append(&r->wire, &r->wire_len, &cap, "\r\n", 2);
    }
    request_append(&r->wire, &r->wire_len, &cap, date, strlen(date));
    if (!keep_alive)
        request_append(&r->wire, &r->wire_len, &cap, "Connection: close\r\n", 19);
    else if (http10_keep_alive)
        request_append(&r->wire, &r->wire_len, &cap, "Connection: Keep-Alive\r\n", 24);
    request_append(&r->wire, &r->wire_len, &cap, "\r\n", 2);
    *body_len = r->method == METHOD_HEAD || no_content ? 0 : r->out_len;
}

void request_defer(struct request *r)
{
    atomic_store_explicit(&r->state, REQUEST_DEFERRED, memory_order_relaxed);
}

void request_resume(struct request *r)
{
    struct conn *c = r->conn;
    /* From here on the loop thread owns r again; this is the last touch. Unless its loop has
     * stopped meanwhile (conn_close_all made it REQUEST_ORPHANED): nobody will send the reply,
     * and r and its connection's memory (its head lives there) end here. */
    if (atomic_exchange_explicit(&r->state, REQUEST_READY, memory_order_acq_rel) ==
        REQUEST_ORPHANED) {
        request_finish(r, false);
        conn_orphan_free(c);
        return;
    }
    conn_resume(c);
}

bool request_client_left(const struct request *r)
{
    return r->conn && r->conn->client_left;
}

void request_finish(struct request *r, bool sent)
{
    const struct request_hooks *hooks = r->hooks;
    int64_t total = mclock_now_us() - r->t_start_us;
    if (!sent && atomic_load_explicit(&r->state, memory_order_relaxed) != REQUEST_SENT) {
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
    request_drop_body(r);
    if (r->handler_ops && r->handler_ops->free)
        r->handler_ops->free(r->handler);
    free(r->fields);
    free(r->wire);
    free(r->query);
    free(r->body);
    free(r);
    hooks->freed(hooks->ctx);
}
