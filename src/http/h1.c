/*
 * h1: libhttp-parser glue (see h1.h). The callbacks record offsets; nothing is copied.
 */
#include "h1.h"
#include "xalloc.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static struct h1 *h1_of(http_parser *p)
{
    return p->data;
}

static int h1_on_begin(http_parser *p)
{
    h1_of(p)->began = true;
    return 0;
}

static int h1_on_url(http_parser *p, const char *at, size_t len)
{
    struct h1 *h = h1_of(p);
    if (!h->url_len)
        h->url = (uint32_t)(at - h->buf);
    h->url_len += (uint32_t)len;
    return 0;
}

/* Fields after the head are a chunked body's trailer: not kept (RFC 9112 7.1.2 lets a
 * recipient discard them). They could not be: the body's bytes are dropped from the buffer as
 * they are parsed (h1_compact), so a trailer's offsets would not stay right, and the head's
 * field table is read by the request while the body arrives. */
static bool h1_in_trailer(const struct h1 *h)
{
    return h->head_len != 0;
}

static int h1_on_field(http_parser *p, const char *at, size_t len)
{
    struct h1 *h = h1_of(p);
    if (h1_in_trailer(h))
        return 0;
    if (h->in_value || h->nfields == 0) {
        if (h->nfields == H1_MAX_FIELDS) {
            /* The table is the head's only cost beyond its bytes: 16 bytes a field, and a
             * 16 KiB head of "a:" lines would be 4,000 of them. */
            h->too_many = true;
            return 1;
        }
        if (h->nfields == h->fields_cap) {
            h->fields_cap = h->fields_cap ? 2 * h->fields_cap : 16;
            h->fields = xrealloc(h->fields, h->fields_cap * sizeof(h->fields[0]));
        }
        h->fields[h->nfields++] = (struct h1_field){.name = (uint32_t)(at - h->buf)};
        h->in_value = false;
    }
    h->fields[h->nfields - 1].name_len += (uint32_t)len;
    return 0;
}

static int h1_on_value(http_parser *p, const char *at, size_t len)
{
    struct h1 *h = h1_of(p);
    if (h1_in_trailer(h))
        return 0;
    struct h1_field *f = &h->fields[h->nfields - 1];
    if (h->in_value && (size_t)(at - h->buf) != (size_t)f->value + f->value_len) {
        /* A value that goes on after a line break (obs-fold, RFC 9112 5.2): refused, as a
         * field the server would read differently from a proxy in front of it. */
        h->folded = true;
        return 1;
    }
    if (!h->in_value) {
        f->value = (uint32_t)(at - h->buf);
        h->in_value = true;
        h->te_seen |= f->name_len == 17 && !strncasecmp(h->buf + f->name, "Transfer-Encoding", 17);
    }
    f->value_len += (uint32_t)len;
    return 0;
}

/* The head is complete: terminate the strings in place (each is followed by a byte of the
 * head's syntax, ' ', ':' or CR, that the parser has taken, or by the value's trailing
 * whitespace) and stop. A value's trailing whitespace is not part of it (RFC 9110 5.5: OWS
 * around a value is excluded; the parser drops the leading only): "pro " is "pro". */
/* An absolute-form target ("http://api.example/health?x=1", RFC 9112 3.2.2: a server must
 * accept it) becomes its origin form ("/health?x=1") in place; with no path ("http://a?x=1"),
 * the authority's last byte becomes the "/" the path is. The authority is not used (nor is
 * Host: routing is by path). Other targets are left as they are. */
static void h1_origin_form(struct h1 *h)
{
    char *t = h->buf + h->url;
    size_t skip;
    if (!strncasecmp(t, "http://", 7))
        skip = 7;
    else if (!strncasecmp(t, "https://", 8))
        skip = 8;
    else
        return;
    size_t auth = strcspn(t + skip, "/?#");
    if (auth == 0)
        return; /* no authority: left to fail as any other odd target */
    size_t at = skip + auth;
    if (t[at] != '/')
        t[--at] = '/';
    h->url += (uint32_t)at;
    h->url_len -= (uint32_t)at;
}

static int h1_on_headers_complete(http_parser *p)
{
    struct h1 *h = h1_of(p);
    h->buf[h->url + h->url_len] = '\0';
    h1_origin_form(h);
    if (h->method_len)
        h->buf[h->method_len] = '\0'; /* the space after it */
    for (unsigned i = 0; i < h->nfields; i++) {
        struct h1_field *f = &h->fields[i];
        while (f->value_len && (h->buf[f->value + f->value_len - 1] == ' ' ||
                                h->buf[f->value + f->value_len - 1] == '\t'))
            f->value_len--;
        h->buf[f->name + f->name_len] = '\0';
        if (!f->value_len)
            f->value = f->name + f->name_len; /* an empty value: the name's NUL */
        else
            h->buf[f->value + f->value_len] = '\0';
    }
    /* The parser counts content_length down as the body arrives: keep what was declared. */
    if (p->flags & F_CHUNKED)
        h->declared = -1;
    else if (p->content_length == ULLONG_MAX)
        h->declared = 0;
    else
        h->declared = p->content_length > INT64_MAX ? INT64_MAX : (int64_t)p->content_length;
    http_parser_pause(p, 1);
    return 0;
}

static int h1_on_body(http_parser *p, const char *at, size_t len)
{
    struct h1 *h = h1_of(p);
    if (h->body)
        h->body(h->body_ctx, at, len);
    return 0;
}

static int h1_on_message_complete(http_parser *p)
{
    struct h1 *h = h1_of(p);
    h->done = true;
    http_parser_pause(p, 1);
    return 0;
}

static const http_parser_settings h1_settings = {
    .on_message_begin = h1_on_begin,
    .on_url = h1_on_url,
    .on_header_field = h1_on_field,
    .on_header_value = h1_on_value,
    .on_headers_complete = h1_on_headers_complete,
    .on_body = h1_on_body,
    .on_message_complete = h1_on_message_complete,
};

void h1_global_init(size_t max_head)
{
    http_parser_set_max_header_size((uint32_t)max_head);
}

void h1_init(struct h1 *h, char *buf, size_t len, size_t cap)
{
    memset(h, 0, sizeof(*h));
    http_parser_init(&h->parser, HTTP_REQUEST);
    h->parser.data = h;
    h->buf = buf;
    h->len = len;
    h->cap = cap;
}

void h1_free(struct h1 *h)
{
    free(h->fields);
    h->fields = NULL;
}

void h1_rebuffer(struct h1 *h, char *buf, size_t cap)
{
    h->buf = buf;
    h->cap = cap;
}

/* RFC 9110 5.6.2's tchar. */
static bool h1_tchar(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c && strchr("!#$%&'*+-.^_`|~", c));
}

static bool h1_known_method(const char *m, size_t len)
{
    for (int i = 0;; i++) {
        const char *s = http_method_str((enum http_method)i);
        if (!strcmp(s, "<unknown>"))
            return false;
        if (strlen(s) == len && !memcmp(s, m, len))
            return true;
    }
}

/*
 * The parser knows a fixed list of methods and refuses any other, where HTTP lets a server
 * answer an unknown method (405 with Allow, as the endpoints do). A request line that starts
 * with another token is given to the parser as "GET" followed by the rest of the line from the
 * buffer: every offset still points into the buffer, and h1_method names the real method.
 * False while the token is not complete yet (it waits for more bytes).
 */
static bool h1_method_token(struct h1 *h)
{
    if (h->line_seen)
        return true;
    size_t k = 0;
    while (k < h->len && k < 32 && h1_tchar(h->buf[k]))
        k++;
    if (k == h->len && k < 32)
        return false;
    h->line_seen = true;
    if (k == 0 || k >= 32 || h->buf[k] != ' ' || h1_known_method(h->buf, k))
        return true; /* the parser's to judge as it is */
    static const char get[] = "GET";
    http_parser_execute(&h->parser, &h1_settings, get, 3);
    h->method_len = (uint32_t)k;
    h->fed = k;
    return true;
}

enum h1_result h1_parse(struct h1 *h)
{
    if (h->error)
        return H1_ERROR;
    if (h->done)
        return H1_DONE;
    if (h->fed == h->len || !h1_method_token(h))
        return H1_MORE;
    size_t n = http_parser_execute(&h->parser, &h1_settings, h->buf + h->fed, h->len - h->fed);
    h->fed += n;
    enum http_errno e = HTTP_PARSER_ERRNO(&h->parser);
    if (e == HPE_PAUSED) {
        if (h->done)
            return H1_DONE;
        /* Paused at the head's end: the parser has not taken its last LF yet, and takes it
         * again when it goes on. */
        h->head_len = h->fed + 1;
        if (h->parser.http_major != 1) {
            h->error = H1_VERSION;
            return H1_ERROR;
        }
        return H1_HEAD;
    }
    if (e == HPE_OK && h->fed < h->len)
        e = HPE_UNKNOWN; /* an upgrade (CONNECT, Upgrade:): not served */
    if (e != HPE_OK) {
        h->error = e == HPE_HEADER_OVERFLOW || h->too_many ? H1_HEAD_TOO_LARGE
                   : e == HPE_UNEXPECTED_CONTENT_LENGTH    ? H1_AMBIGUOUS
                   : h->head_len                           ? H1_BODY_FRAMING
                                                           : H1_MALFORMED;
        return H1_ERROR;
    }
    return H1_MORE;
}

void h1_resume(struct h1 *h)
{
    http_parser_pause(&h->parser, 0);
}

void h1_compact(struct h1 *h)
{
    if (!h->head_len || h->fed <= h->head_len)
        return;
    memmove(h->buf + h->head_len, h->buf + h->fed, h->len - h->fed);
    h->len -= h->fed - h->head_len;
    h->fed = h->head_len;
}

bool h1_target_is_long(const struct h1 *h)
{
    return !h->too_many && (h->nfields == 0 || h->url_len > h->len / 2);
}

const char *h1_error_text(const struct h1 *h)
{
    if (h->folded)
        return "a header field value folded over lines (obs-fold)";
    return http_errno_description(HTTP_PARSER_ERRNO(&h->parser));
}

const char *h1_method(const struct h1 *h)
{
    if (h->method_len)
        return h->buf;
    return http_method_str((enum http_method)h->parser.method);
}

unsigned h1_minor(const struct h1 *h)
{
    return h->parser.http_minor;
}

bool h1_keep_alive(const struct h1 *h)
{
    return http_should_keep_alive(&h->parser) != 0;
}

int64_t h1_body_length(const struct h1 *h)
{
    return h->declared;
}
