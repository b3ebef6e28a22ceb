/*
 * fuzz_params: the header and query parsers of params.c on arbitrary bytes. Each result is
 * checked against the documented grammar: a value is accepted exactly when it is well-formed,
 * and what is returned is what the bytes say.
 */
#include "fuzz.h"
#include "params.h"

#include <errno.h>
#include <strings.h>

static bool is_blank(char c)
{
    return c == ' ' || c == '\t';
}

static void check_int(const char *s, size_t len)
{
    bool digits = len >= 1 && len <= 18;
    int64_t want = 0;
    for (size_t i = 0; i < len && digits; i++) {
        digits = s[i] >= '0' && s[i] <= '9';
        want = want * 10 + (s[i] - '0');
    }
    int64_t v = -7;
    int rc = params_int(s, 0, INT64_MAX, &v);
    FUZZ_CHECK(rc == 0 || rc == -EINVAL);
    FUZZ_CHECK((rc == 0) == digits);
    FUZZ_CHECK(rc == 0 ? v == want : v == -7);
    /* Bounds are inclusive and a refused value leaves *out alone. */
    v = -7;
    rc = params_int(s, 100, 5000, &v);
    bool in = digits && want >= 100 && want <= 5000;
    FUZZ_CHECK((rc == 0) == in);
    FUZZ_CHECK(in ? v == want : v == -7);
}

static void check_bool(const char *s)
{
    bool t = !strcmp(s, "true") || !strcmp(s, "1");
    bool f = !strcmp(s, "false") || !strcmp(s, "0");
    bool b = !t;
    int rc = params_bool(s, &b);
    FUZZ_CHECK((rc == 0) == (t || f));
    FUZZ_CHECK(rc == 0 ? b == t : b == !t);
}

static void check_tenant(const char *s, size_t len)
{
    bool want = len >= 1 && len <= PARAMS_TENANT_MAX;
    for (size_t i = 0; i < len && want; i++) {
        char c = s[i];
        want = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
               c == '.' || c == '_' || c == '-';
    }
    FUZZ_CHECK(params_tenant_valid(s) == want);
}

static void check_media_type(const char *s)
{
    static const char want[] = "application/json";
    const char *p = s;
    while (is_blank(*p))
        p++;
    bool ok = strncasecmp(p, want, sizeof(want) - 1) == 0;
    if (ok) {
        p += sizeof(want) - 1;
        while (is_blank(*p))
            p++;
        ok = *p == '\0' || *p == ';';
    }
    FUZZ_CHECK(params_media_type_is(s, want) == ok);
    FUZZ_CHECK(params_media_type_is(s, "APPLICATION/JSON") == ok);
    FUZZ_CHECK(!params_media_type_is(NULL, want));
}

static void check_bearer(const char *s, size_t len)
{
    const char *t = params_bearer(s);
    if (t) {
        FUZZ_CHECK(strncasecmp(s, "bearer ", 7) == 0);
        FUZZ_CHECK(t >= s + 7 && t < s + len);
        for (const char *p = s + 7; p < t; p++)
            FUZZ_CHECK(*p == ' ');
        FUZZ_CHECK(*t != ' ' && *t != '\0');
    } else {
        /* Refused: wrong scheme, or nothing but spaces after it. */
        bool scheme = len >= 7 && strncasecmp(s, "bearer ", 7) == 0;
        if (scheme)
            FUZZ_CHECK(strspn(s + 7, " ") == len - 7);
    }
}

static void check_equal_ct(const char *s, size_t len)
{
    FUZZ_CHECK(params_equal_ct(s, s));
    /* Split at the middle: two strings that may or may not be equal. */
    char *a = malloc(len / 2 + 1);
    FUZZ_CHECK(a != NULL);
    memcpy(a, s, len / 2);
    a[len / 2] = '\0';
    const char *b = s + len / 2;
    FUZZ_CHECK(params_equal_ct(a, b) == (strcmp(a, b) == 0));
    FUZZ_CHECK(params_equal_ct(b, a) == (strcmp(a, b) == 0));
    free(a);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s = fuzz_cstr(data, size);
    size_t len = strlen(s);
    check_int(s, len);
    check_bool(s);
    check_tenant(s, len);
    check_media_type(s);
    check_bearer(s, len);
    check_equal_ct(s, len);
    free(s);
    return 0;
}
