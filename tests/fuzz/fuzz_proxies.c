/*
 * fuzz_proxies: TRUSTED_PROXIES lists and X-Forwarded-For values (params.c) on arbitrary
 * bytes. The input is split at its first newline: a proxy list, then a forwarded-for value.
 * Invariants: a list is accepted only when every entry is an address with an in-range prefix;
 * every parsed network contains its own address; the client found behind the proxies is a
 * canonical address that is not itself trusted, and it appears in the header; its key
 * (params_client_key) is a network that contains it, or the address itself.
 */
#include "fuzz.h"
#include "params.h"

#include <arpa/inet.h>
#include <errno.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s = fuzz_cstr(data, size);
    char *nl = strchr(s, '\n');
    const char *xff = "";
    if (nl) {
        *nl = '\0';
        xff = nl + 1;
    }
    struct params_cidr set[PARAMS_CIDRS_MAX];
    size_t n = 99;
    char why[160] = "";
    int rc = params_parse_cidrs(s, set, PARAMS_CIDRS_MAX, &n, why, sizeof(why));
    FUZZ_CHECK(rc == 0 || rc == -EINVAL);
    if (rc) {
        FUZZ_CHECK(why[0] != '\0');
        n = 0;
    }
    FUZZ_CHECK(n <= PARAMS_CIDRS_MAX);
    for (size_t i = 0; i < n; i++) {
        FUZZ_CHECK(set[i].family == AF_INET || set[i].family == AF_INET6);
        FUZZ_CHECK(set[i].prefix <= (set[i].family == AF_INET ? 32u : 128u));
        char text[INET6_ADDRSTRLEN];
        FUZZ_CHECK(inet_ntop(set[i].family, set[i].addr, text, sizeof(text)) != NULL);
        FUZZ_CHECK(params_cidr_contains(&set[i], 1, text));
    }
    char client[INET6_ADDRSTRLEN];
    if (params_forwarded_client(xff, set, n, client, sizeof(client))) {
        FUZZ_CHECK(!params_cidr_contains(set, n, client));
        struct params_cidr one[1];
        size_t m = 0;
        FUZZ_CHECK(params_parse_cidrs(client, one, 1, &m, why, sizeof(why)) == 0 && m == 1);
        unsigned prefix = size ? data[0] % 130u : 64;
        char key[PARAMS_CLIENT_KEY_MAX];
        params_client_key(client, prefix, key, sizeof(key));
        FUZZ_CHECK(strlen(key) < sizeof(key) - 1);
        struct params_cidr net[1];
        FUZZ_CHECK(params_parse_cidrs(key, net, 1, &m, why, sizeof(why)) == 0 && m == 1);
        FUZZ_CHECK(params_cidr_contains(net, 1, client) ||
                   (one[0].family == AF_INET6 && net[0].family == AF_INET)); /* ::ffff:a.b.c.d */
    }
    free(s);
    return 0;
}
