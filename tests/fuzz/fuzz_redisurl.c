/*
 * fuzz_redisurl: rlredis_parse_url on arbitrary bytes. An accepted URL yields a non-empty host
 * of host-name characters that appears verbatim right after "redis://" or after the last '@', a
 * port 1..65535, a db 0..999, and credentials that are either both empty or a non-empty
 * password (a user only with a password), with no NUL inside their buffers; the canonical URL
 * built from them (credentials percent-encoded) parses back to the same values. A refused URL
 * leaves the output untouched.
 */
#include "fuzz.h"
#include "rlredis.h"

#include <errno.h>

/* Every byte as %XX: whatever the credential holds, the canonical URL carries it safely. */
static void encode(const char *in, char *out)
{
    static const char hex[] = "0123456789ABCDEF";
    for (; *in; in++) {
        unsigned char ch = (unsigned char)*in;
        *out++ = '%';
        *out++ = hex[ch >> 4];
        *out++ = hex[ch & 15];
    }
    *out = '\0';
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *url = fuzz_cstr(data, size);
    struct rlredis_url u, untouched;
    memset(&u, 0xA5, sizeof(u));
    memcpy(&untouched, &u, sizeof(u));
    int rc = rlredis_parse_url(url, &u);
    FUZZ_CHECK(rc == 0 || rc == -EINVAL);
    if (rc) {
        FUZZ_CHECK(memcmp(&u, &untouched, sizeof(u)) == 0);
        free(url);
        return 0;
    }
    FUZZ_CHECK(strncmp(url, "redis://", 8) == 0);
    FUZZ_CHECK(memchr(u.host, '\0', sizeof(u.host)) != NULL);
    FUZZ_CHECK(memchr(u.user, '\0', sizeof(u.user)) != NULL);
    FUZZ_CHECK(memchr(u.password, '\0', sizeof(u.password)) != NULL);
    size_t n = strlen(u.host);
    FUZZ_CHECK(n >= 1);
    FUZZ_CHECK(
        strspn(u.host, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_") == n);
    const char *at = strrchr(url + 8, '@');
    const char *hostpos = at ? at + 1 : url + 8;
    FUZZ_CHECK(memcmp(hostpos, u.host, n) == 0);
    FUZZ_CHECK(hostpos[n] == '\0' || hostpos[n] == ':' || hostpos[n] == '/');
    FUZZ_CHECK(u.port >= 1 && u.port <= 65535);
    FUZZ_CHECK(u.db >= 0 && u.db <= 999);
    FUZZ_CHECK(at ? u.password[0] != '\0' : u.password[0] == '\0' && u.user[0] == '\0');
    static char canon[3 * 512 + 400];
    char user[3 * sizeof(u.user)], pass[3 * sizeof(u.password)];
    encode(u.user, user);
    encode(u.password, pass);
    if (u.password[0])
        snprintf(canon, sizeof(canon), "redis://%s:%s@%s:%d/%d", user, pass, u.host, u.port, u.db);
    else
        snprintf(canon, sizeof(canon), "redis://%s:%d/%d", u.host, u.port, u.db);
    struct rlredis_url again;
    FUZZ_CHECK(rlredis_parse_url(canon, &again) == 0);
    FUZZ_CHECK(memcmp(&u, &again, sizeof(u)) == 0); /* zero-filled past each NUL, both */
    free(url);
    return 0;
}
