/*
 * fuzz_logescape: log_json_escape on arbitrary bytes, caps and starting offsets. The output
 * must stay inside the cap with its NUL, leave what was before it alone, be printable ASCII made
 * of whole JSON escapes, decode to a prefix of the input, and stop only when the next escape
 * would not fit.
 */
#include "fuzz.h"
#include "log.h"

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

/* Bytes log_json_escape writes for input byte c. */
static size_t escaped_len(unsigned char c)
{
    if (c == '"' || c == '\\')
        return 2;
    if (c < 0x20 || c >= 0x7f)
        return 6;
    return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 3)
        return 0;
    size_t cap = 1 + (size_t)data[0];                   /* 1..256 bytes of buffer */
    size_t start = (size_t)data[1] % cap;               /* what is already in it */
    size_t maxin = data[2] == 255 ? SIZE_MAX : data[2]; /* input bytes to consider */
    char *s = fuzz_cstr(data + 3, size - 3);
    size_t slen = strlen(s);

    char *dst = malloc(cap);
    FUZZ_CHECK(dst != NULL);
    memset(dst, 'p', start);
    dst[start] = '\0';
    size_t len = start;
    log_json_escape(dst, cap, &len, s, maxin);

    FUZZ_CHECK(len >= start && len < cap);
    FUZZ_CHECK(dst[len] == '\0');
    for (size_t i = 0; i < start; i++)
        FUZZ_CHECK(dst[i] == 'p');
    /* Decode what was written: every byte printable, every escape whole. */
    size_t k = 0; /* input bytes the output stands for */
    for (size_t i = start; i < len; k++) {
        FUZZ_CHECK(k < slen);
        unsigned char c = (unsigned char)dst[i];
        FUZZ_CHECK(c >= 0x20 && c < 0x7f);
        unsigned char in = (unsigned char)s[k];
        if (c != '\\') {
            FUZZ_CHECK(c != '"');
            FUZZ_CHECK(c == in);
            i++;
            continue;
        }
        FUZZ_CHECK(i + 1 < len);
        if (dst[i + 1] == '"' || dst[i + 1] == '\\') {
            FUZZ_CHECK(in == (unsigned char)dst[i + 1]);
            i += 2;
            continue;
        }
        FUZZ_CHECK(i + 5 < len);
        FUZZ_CHECK(dst[i + 1] == 'u' && dst[i + 2] == '0' && dst[i + 3] == '0');
        int hi = hexval(dst[i + 4]), lo = hexval(dst[i + 5]);
        FUZZ_CHECK(hi >= 0 && lo >= 0);
        FUZZ_CHECK(in == (unsigned char)(hi * 16 + lo));
        FUZZ_CHECK(in < 0x20 || in >= 0x7f); /* only what must be escaped is */
        i += 6;
    }
    /* It stopped at the end of the input, at maxin, or because the next escape did not fit. */
    size_t limit = slen < maxin ? slen : maxin;
    FUZZ_CHECK(k <= limit);
    if (k < limit)
        FUZZ_CHECK(len + escaped_len((unsigned char)s[k]) + 1 > cap);
    free(dst);
    free(s);
    return 0;
}
