/*
 * params: strict value parsers (see params.h).
 */
#include "params.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

int params_int(const char *s, int64_t min, int64_t max, int64_t *out)
{
    if (!s || !*s)
        return -EINVAL;
    int64_t v = 0;
    size_t n = 0;
    for (; s[n]; n++) {
        if (s[n] < '0' || s[n] > '9' || n >= 18)
            return -EINVAL; /* 18 digits cannot overflow int64 */
        v = v * 10 + (s[n] - '0');
    }
    if (v < min || v > max)
        return -EINVAL;
    *out = v;
    return 0;
}

int params_bool(const char *s, bool *out)
{
    if (!s)
        return -EINVAL;
    if (!strcmp(s, "true") || !strcmp(s, "1")) {
        *out = true;
        return 0;
    }
    if (!strcmp(s, "false") || !strcmp(s, "0")) {
        *out = false;
        return 0;
    }
    return -EINVAL;
}

bool params_tenant_valid(const char *s)
{
    size_t n = 0;
    for (; s[n]; n++) {
        char c = s[n];
        if (n >= PARAMS_TENANT_MAX || !((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                                        (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-'))
            return false;
    }
    return n > 0;
}

bool params_media_type_is(const char *header, const char *want)
{
    if (!header)
        return false;
    while (*header == ' ' || *header == '\t')
        header++;
    size_t wl = strlen(want);
    if (strncasecmp(header, want, wl) != 0)
        return false;
    const char *rest = header + wl;
    while (*rest == ' ' || *rest == '\t')
        rest++;
    return *rest == '\0' || *rest == ';';
}

const char *params_bearer(const char *authorization)
{
    if (!authorization || strncasecmp(authorization, "Bearer ", 7) != 0)
        return NULL;
    const char *t = authorization + 7;
    while (*t == ' ')
        t++;
    return *t ? t : NULL;
}

bool params_equal_ct(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    /* Walk the expected string's length whatever the input, so timing reveals nothing but
     * the length of the secret, which is not secret. */
    unsigned char diff = (unsigned char)(la != lb);
    for (size_t i = 0; i < lb; i++)
        diff |= (unsigned char)(b[i] ^ (i < la ? a[i] : 0));
    return diff == 0;
}

int params_payload(const char *body, size_t len, char **payload_json, char *why, size_t whylen)
{
    *payload_json = NULL;
    if (!body || len == 0) {
        snprintf(why, whylen, "the body is empty");
        return -EINVAL;
    }
    json_error_t jerr;
    json_t *root = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) {
        snprintf(why, whylen, "invalid JSON at line %d column %d: %s", jerr.line, jerr.column,
                 jerr.text);
        return -EINVAL;
    }
    json_t *payload = json_object_get(root, "payload");
    if (!json_is_object(root) || !json_is_object(payload) || json_object_size(root) != 1) {
        json_decref(root);
        snprintf(why, whylen, "the body must be {\"payload\": {...}}");
        return -EINVAL;
    }
    *payload_json = json_dumps(payload, JSON_COMPACT | JSON_ENSURE_ASCII);
    json_decref(root);
    if (!*payload_json) {
        snprintf(why, whylen, "the payload cannot be encoded");
        return -EINVAL;
    }
    return 0;
}
