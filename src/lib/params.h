/*
 * params: strict parsers for what clients send (query arguments, header values).
 *
 * Each returns 0 or -EINVAL and never reads past the string. They are pure functions, fuzzed by
 * tests/fuzz/fuzz_params.c: whatever the bytes, they either accept a well-formed value or
 * refuse it.
 */
#ifndef BULKHEAD_PARAMS_H
#define BULKHEAD_PARAMS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PARAMS_TENANT_MAX 64 /* longest tenant id */

/* A plain decimal integer in [min, max]: digits only (no sign, spaces, or leading '+'). */
int params_int(const char *s, int64_t min, int64_t max, int64_t *out)
    __attribute__((warn_unused_result));

/* "true"/"false"/"1"/"0". */
int params_bool(const char *s, bool *out) __attribute__((warn_unused_result));

/* A tenant id: 1..64 characters of A-Z a-z 0-9 . _ - */
bool params_tenant_valid(const char *s);

/* A media type equal to want, ignoring case and any ";parameters" ("application/json;
 * charset=utf-8" matches "application/json"). */
bool params_media_type_is(const char *header, const char *want);

/* The token of "Bearer <token>" (case-insensitive scheme), or NULL. */
const char *params_bearer(const char *authorization);

/*
 * The body of POST /api/data: exactly {"payload": {...}} (an object with one key whose value
 * is an object). On 0, *payload_json is the payload re-encoded as compact ASCII JSON (malloc'd,
 * caller frees); on -EINVAL, why says what is wrong.
 */
int params_payload(const char *body, size_t len, char **payload_json, char *why, size_t whylen)
    __attribute__((warn_unused_result));

/* A network: an IPv4 or IPv6 address and a prefix length (a single address is /32 or /128). */
struct params_cidr {
    int family;             /* AF_INET or AF_INET6 */
    unsigned char addr[16]; /* network byte order; 4 bytes used for IPv4 */
    unsigned prefix;        /* leading bits that must match */
};

#define PARAMS_CIDRS_MAX 32

/* "10.0.0.0/8, 127.0.0.1, ::1": up to max networks, separated by commas and blanks. An empty
 * list gives n = 0. -EINVAL on anything else (why says which entry). */
int params_parse_cidrs(const char *list, struct params_cidr *out, size_t max, size_t *n, char *why,
                       size_t whylen) __attribute__((warn_unused_result));

/* Whether the textual address addr (IPv4 or IPv6) lies in one of the n networks. */
bool params_cidr_contains(const struct params_cidr *set, size_t n, const char *addr);

/*
 * The client address behind trusted proxies, from an X-Forwarded-For value: the rightmost
 * valid address that is not itself a trusted proxy (entries left of it were written by the
 * client and cannot be trusted). Written to out in canonical form; false when there is none.
 */
bool params_forwarded_client(const char *xff, const struct params_cidr *set, size_t n, char *out,
                             size_t outlen);

#define PARAMS_CLIENT_KEY_MAX 48 /* params_client_key's longest text, with its NUL */

/*
 * The name under which a client address is limited and held: an IPv4 address as it is; an IPv6
 * address as its network of v6_prefix leading bits, "2001:db8:1:2::/64" (one host is commonly
 * handed a whole /64 and could rotate through it), or as it is at 128; an IPv4-mapped IPv6
 * address (::ffff:192.0.2.1, an IPv4 client of a dual-stack listener) as the IPv4 address, so
 * that IPv4 clients are never lumped into one network. Anything that is not an address is
 * copied as is (cut to outlen). v6_prefix above 128 counts as 128.
 */
void params_client_key(const char *addr, unsigned v6_prefix, char *out, size_t outlen);

/* Compare two strings in time independent of where they differ. */
bool params_equal_ct(const char *a, const char *b);

#endif
