/*
 * h1: one HTTP/1.x request read from a connection's buffer, through node's former parser
 * (libhttp-parser 2.9, Debian's libhttp-parser-dev: incremental, strict, callbacks).
 *
 * The connection reads into h->buf and calls h1_parse; the parser's callbacks only note where
 * the request line and fields lie (offsets: the buffer may grow while a head arrives, and a
 * field split over two reads is contiguous in it). h1_parse stops at the end of the head
 * (H1_HEAD: the fields are NUL-terminated in place and may be read as strings) and again at the
 * end of the message (H1_DONE), so the connection decides between the two (refuse before a body
 * is read) and never parses a pipelined request before the current one is answered. Body bytes
 * go to the body callback as they are parsed; h1_compact then drops them from the buffer, which
 * keeps the head (its strings stay put) and any bytes of the next request.
 *
 * Loop thread only; an h1 lives as long as one request on one connection.
 */
#ifndef BULKHEAD_H1_H
#define BULKHEAD_H1_H

#include <http_parser.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define H1_MAX_FIELDS 100 /* header fields a head may have (431 past it: Apache's default) */

/* A header field: offsets into the buffer (name and value, each NUL-terminated after H1_HEAD). */
struct h1_field {
    uint32_t name, name_len, value, value_len;
};

enum h1_result {
    H1_MORE,  /* every byte read is parsed: read more */
    H1_HEAD,  /* the head is complete (h1_resume, then h1_parse, for the body) */
    H1_DONE,  /* the message is complete; bytes after it (pipelined) stay in the buffer */
    H1_ERROR, /* not HTTP/1.x: h1_error says what (the connection answers and closes) */
};

enum h1_error {
    H1_OK,
    H1_MALFORMED,      /* 400: a request line or field the parser refuses, or a folded value */
    H1_VERSION,        /* 505: an HTTP version other than 1.x */
    H1_HEAD_TOO_LARGE, /* 431 (or 414 when the target is most of it): h1_head_full, or more
                          than H1_MAX_FIELDS fields (too_many) */
    H1_BODY_FRAMING,   /* 400: a body the parser cannot frame (a bad chunk, a bad length) */
    H1_AMBIGUOUS,      /* 400 ambiguous_request: Content-Length repeated, or beside
                          Transfer-Encoding (the parser refuses both) */
};

struct h1 {
    http_parser parser;
    char *buf;               /* owned by the connection; bytes read at [0, len) */
    size_t len, cap;         /* bytes in buf; its size */
    size_t fed;              /* bytes of buf the parser has taken */
    size_t head_len;         /* the head's size once H1_HEAD was returned, else 0 */
    uint32_t url, url_len;   /* the request target (offsets) */
    struct h1_field *fields; /* owned (xrealloc); nfields of them */
    unsigned nfields, fields_cap;
    bool in_value;       /* the last callback was a field value (a new name starts a field) */
    bool line_seen;      /* the method token was looked at (h1_method_token) */
    uint32_t method_len; /* a method the parser does not know (at offset 0), or 0 */
    int64_t declared;    /* the body declared by the head: Content-Length, -1 chunked, 0 none */
    bool te_seen;        /* a Transfer-Encoding field was seen (the ambiguity's message) */
    bool folded;         /* a field value went on over a line break (H1_MALFORMED) */
    bool too_many;       /* a field past H1_MAX_FIELDS began (H1_HEAD_TOO_LARGE) */
    bool began;          /* the parser saw the request's first byte */
    bool done;           /* H1_DONE was returned */
    enum h1_error error;
    /* Body bytes as they are parsed (set by the connection before h1_parse). */
    void (*body)(void *ctx, const char *at, size_t len);
    void *body_ctx;
};

/* Start reading a request into buf (cap bytes, len of them already read: pipelined bytes). */
void h1_init(struct h1 *h, char *buf, size_t len, size_t cap);
/* Free what h1 allocated (not the buffer). */
void h1_free(struct h1 *h);
/* The buffer moved (grown with realloc before the head was complete): offsets stay right. */
void h1_rebuffer(struct h1 *h, char *buf, size_t cap);

/* Parse what was read since the last call. */
enum h1_result h1_parse(struct h1 *h);
/* After H1_HEAD: go on with the body. */
void h1_resume(struct h1 *h);
/* After body bytes were handed to the body callback: drop them from the buffer. */
void h1_compact(struct h1 *h);

/* The buffer is full and the head is not complete: true when the request target is most of it
 * (414 rather than 431). */
bool h1_target_is_long(const struct h1 *h);
/* The parser's description of an H1_MALFORMED or H1_BODY_FRAMING error (a static string). */
const char *h1_error_text(const struct h1 *h);

/* After H1_HEAD: the method ("GET"), HTTP minor version, whether the connection may be kept,
 * the declared body (Content-Length, or chunked: -1; 0 for none). */
const char *h1_method(const struct h1 *h);
unsigned h1_minor(const struct h1 *h);
bool h1_keep_alive(const struct h1 *h);
int64_t h1_body_length(const struct h1 *h);
/* A string of the head (its offset), valid while the buffer is. */
static inline const char *h1_str(const struct h1 *h, uint32_t off)
{
    return h->buf + off;
}

/* Set once per process, before the first parse: the parser's own head limit (above any the
 * connections enforce with their buffers). */
void h1_global_init(size_t max_head);

#endif
