/*
 * fuzz_h1: the request parser's glue (h1.c) on arbitrary bytes, fed in pieces whose sizes the
 * first byte chooses, into a buffer that grows (moves) as a connection's does. Invariants: a
 * parse ends in one of its results; at the head's end every field and the target lie inside the
 * head and are NUL-terminated where their lengths say; a chunked trailer adds no field; the body
 * handed out never exceeds what the head declared; after the message, the bytes left are exactly
 * what was not parsed.
 */
#include "fuzz.h"
#include "h1.h"

#include <stdbool.h>

static size_t fuzz_body_bytes;

static void fuzz_body(void *ctx, const char *at, size_t len)
{
    (void)ctx;
    (void)at;
    fuzz_body_bytes += len;
}

static void fuzz_check_head(const struct h1 *h)
{
    FUZZ_CHECK(h->head_len > 0 && h->head_len <= h->len);
    FUZZ_CHECK(h->url + h->url_len < h->head_len);
    FUZZ_CHECK(h->buf[h->url + h->url_len] == '\0');
    for (unsigned i = 0; i < h->nfields; i++) {
        const struct h1_field *f = &h->fields[i];
        FUZZ_CHECK(f->name + f->name_len < h->head_len);
        FUZZ_CHECK(h->buf[f->name + f->name_len] == '\0');
        FUZZ_CHECK(f->value + f->value_len < h->head_len);
        FUZZ_CHECK(h->buf[f->value + f->value_len] == '\0');
    }
    FUZZ_CHECK(h1_method(h) != NULL);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static bool init;
    if (!init) {
        h1_global_init(1u << 20);
        init = true;
    }
    if (size == 0)
        return 0;
    size_t step = (size_t)(data[0] % 16) + 1;
    data++;
    size--;
    struct h1 h;
    h1_init(&h, malloc(4), 0, 4);
    h.body = fuzz_body;
    fuzz_body_bytes = 0;
    int64_t declared = 0;
    unsigned head_fields = 0;
    bool head = false, done = false;
    size_t off = 0;
    while (off < size && !done) {
        size_t k = size - off < step ? size - off : step;
        if (h.len + k > h.cap) {
            if (head) {
                h1_compact(&h); /* a connection empties body bytes before it reads more */
                if (h.len + k > h.cap)
                    break;
            } else {
                size_t cap = h.cap * 2 + k;
                char *nb = malloc(cap);
                memcpy(nb, h.buf, h.len);
                free(h.buf);
                h1_rebuffer(&h, nb, cap);
            }
        }
        memcpy(h.buf + h.len, data + off, k);
        h.len += k;
        off += k;
        for (;;) {
            enum h1_result r = h1_parse(&h);
            FUZZ_CHECK(r == H1_MORE || r == H1_HEAD || r == H1_DONE || r == H1_ERROR);
            if (r == H1_HEAD) {
                FUZZ_CHECK(!head);
                fuzz_check_head(&h);
                head = true;
                declared = h1_body_length(&h);
                head_fields = h.nfields;
                h1_resume(&h);
                continue;
            }
            if (r == H1_DONE) {
                FUZZ_CHECK(head);
                FUZZ_CHECK(h.fed <= h.len);
                done = true;
            }
            if (head)
                FUZZ_CHECK(h.nfields == head_fields); /* a trailer is not kept */
            if (head && declared >= 0)
                FUZZ_CHECK(fuzz_body_bytes <= (size_t)declared);
            if (r == H1_ERROR) {
                FUZZ_CHECK(h.error != H1_OK);
                done = true;
            }
            break;
        }
    }
    free(h.buf);
    h1_free(&h);
    return 0;
}
