/*
 * params: strict value parsers (see params.h).
 */
#include "params.h"

#include <arpa/inet.h>
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

/* Parse one address (no prefix) into c; 0 or -EINVAL. */
static int params_addr(const char *text, struct params_cidr *c)
{
    memset(c, 0, sizeof(*c));
    if (inet_pton(AF_INET, text, c->addr) == 1) {
        c->family = AF_INET;
        c->prefix = 32;
        return 0;
    }
    if (inet_pton(AF_INET6, text, c->addr) == 1) {
        c->family = AF_INET6;
        c->prefix = 128;
        return 0;
    }
    return -EINVAL;
}

int params_parse_cidrs(const char *list, struct params_cidr *out, size_t max, size_t *n, char *why,
                       size_t whylen)
{
    *n = 0;
    const char *p = list ? list : "";
    for (;;) {
        while (*p == ' ' || *p == '\t' || *p == ',')
            p++;
        if (!*p)
            return 0;
        size_t len = strcspn(p, ", \t");
        char item[64];
        if (len >= sizeof(item)) {
            snprintf(why, whylen, "entry too long: \"%.20s...\"", p);
            return -EINVAL;
        }
        memcpy(item, p, len);
        item[len] = '\0';
        p += len;
        if (*n >= max) {
            snprintf(why, whylen, "more than %zu entries", max);
            return -EINVAL;
        }
        char *slash = strchr(item, '/');
        if (slash)
            *slash = '\0';
        struct params_cidr c;
        if (params_addr(item, &c)) {
            snprintf(why, whylen, "\"%s\" is not an IPv4 or IPv6 address", item);
            return -EINVAL;
        }
        if (slash) {
            int64_t bits;
            if (params_int(slash + 1, 0, c.family == AF_INET ? 32 : 128, &bits)) {
                snprintf(why, whylen, "bad prefix length in \"%s/%s\"", item, slash + 1);
                return -EINVAL;
            }
            c.prefix = (unsigned)bits;
        }
        out[(*n)++] = c;
    }
}

static bool params_in(const struct params_cidr *net, const struct params_cidr *a)
{
    if (net->family != a->family)
        return false;
    unsigned full = net->prefix / 8, rest = net->prefix % 8;
    if (memcmp(net->addr, a->addr, full) != 0)
        return false;
    if (!rest)
        return true;
    unsigned char mask = (unsigned char)(0xff << (8 - rest));
    return (net->addr[full] & mask) == (a->addr[full] & mask);
}

bool params_cidr_contains(const struct params_cidr *set, size_t n, const char *addr)
{
    struct params_cidr a;
    if (!addr || params_addr(addr, &a))
        return false;
    for (size_t i = 0; i < n; i++)
        if (params_in(&set[i], &a))
            return true;
    return false;
}

void params_client_key(const char *addr, unsigned v6_prefix, char *out, size_t outlen)
{
    static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    struct params_cidr a;
    if (!outlen)
        return;
    if (!addr || params_addr(addr, &a) || a.family != AF_INET6) {
        snprintf(out, outlen, "%s", addr ? addr : "");
        return;
    }
    if (!memcmp(a.addr, mapped, sizeof(mapped))) {
        if (!inet_ntop(AF_INET, a.addr + 12, out, (socklen_t)outlen))
            out[0] = '\0';
        return;
    }
    unsigned bits = v6_prefix < 128 ? v6_prefix : 128;
    for (unsigned i = 0; i < 16; i++) {
        unsigned keep = bits > 8 * i ? bits - 8 * i : 0;
        if (keep < 8)
            a.addr[i] &= (unsigned char)(0xff00u >> keep);
    }
    char text[INET6_ADDRSTRLEN];
    if (!inet_ntop(AF_INET6, a.addr, text, sizeof(text)))
        text[0] = '\0';
    if (bits == 128)
        snprintf(out, outlen, "%s", text);
    else
        snprintf(out, outlen, "%s/%u", text, bits);
}

bool params_forwarded_client(const char *xff, const struct params_cidr *set, size_t n, char *out,
                             size_t outlen)
{
    if (!xff)
        return false;
    size_t end = strlen(xff);
    while (end > 0) {
        /* The entry ending at end: back to the previous comma. */
        size_t start = end;
        while (start > 0 && xff[start - 1] != ',')
            start--;
        size_t a = start, b = end;
        while (a < b && (xff[a] == ' ' || xff[a] == '\t'))
            a++;
        while (b > a && (xff[b - 1] == ' ' || xff[b - 1] == '\t'))
            b--;
        char item[64];
        if (b - a == 0 || b - a >= sizeof(item))
            return false; /* malformed: trust nothing further left */
        memcpy(item, xff + a, b - a);
        item[b - a] = '\0';
        struct params_cidr c;
        if (params_addr(item, &c))
            return false;
        bool trusted = false;
        for (size_t i = 0; i < n && !trusted; i++)
            trusted = params_in(&set[i], &c);
        if (!trusted)
            return inet_ntop(c.family, c.addr, out, (socklen_t)outlen) != NULL;
        end = start > 0 ? start - 1 : 0;
    }
    return false;
}
