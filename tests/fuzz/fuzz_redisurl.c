/*
 * fuzz_redisurl: rlredis_parse_url on arbitrary bytes, with host buffers of exact sizes so any
 * write past them is caught. An accepted URL yields a non-empty host of host-name characters
 * copied from right after "redis://", a port 1..65535 and a db 0..999, and the canonical URL
 * built from them parses back to the same values.
 */
#include "fuzz.h"
#include "rlredis.h"

#include <errno.h>

static void check(const char *url, size_t hostlen)
{
    char *host = malloc(hostlen);
    FUZZ_CHECK(host != NULL);
    int port = -1, db = -1;
    int rc = rlredis_parse_url(url, host, hostlen, &port, &db);
    FUZZ_CHECK(rc == 0 || rc == -EINVAL);
    if (rc == 0) {
        size_t n = strlen(host);
        FUZZ_CHECK(n >= 1 && n < hostlen);
        FUZZ_CHECK(strncmp(url, "redis://", 8) == 0);
        FUZZ_CHECK(memcmp(url + 8, host, n) == 0);
        FUZZ_CHECK(
            strspn(host, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_") == n);
        FUZZ_CHECK(url[8 + n] == '\0' || url[8 + n] == ':' || url[8 + n] == '/');
        FUZZ_CHECK(port >= 1 && port <= 65535);
        FUZZ_CHECK(db >= 0 && db <= 999);
        char canon[300], host2[256];
        snprintf(canon, sizeof(canon), "redis://%s:%d/%d", host, port, db);
        int port2 = -1, db2 = -1;
        FUZZ_CHECK(rlredis_parse_url(canon, host2, sizeof(host2), &port2, &db2) == 0);
        FUZZ_CHECK(strcmp(host, host2) == 0 && port == port2 && db == db2);
    }
    free(host);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *url = fuzz_cstr(data, size);
    check(url, 256); /* rlredis's own field */
    check(url, 1 + size % 16);
    free(url);
    return 0;
}
