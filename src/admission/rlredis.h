/*
 * rlredis: the shared rate limiter's wire to Redis (rlsync.c decides; this module moves hits).
 *
 * Redis holds one GCRA "theoretical arrival time" (TAT) per tenant, bulkhead:rl:<tier>:<key>,
 * as integer microseconds of Redis's clock, expiring when it passes. rlredis_charge adds a batch
 * of tenants' hits to their TATs in one round trip (one EVALSHA per RLREDIS_KEYS_PER_CALL
 * tenants, pipelined) and returns how far ahead of Redis's now each TAT stands: that is all an
 * instance needs to know of what the whole fleet has spent. The script never refuses: whether a
 * hit was allowed is decided before it is sent, and a TAT past the limit is a debt the tenant
 * waits off. Keys are the seed's, so instances of either version share counts.
 *
 * One connection, used by one thread at a time (rlsync's syncer); every connect and call is
 * bounded by REDIS_TIMEOUT_MS. REDIS_URL may carry credentials (managed Redis with ACLs):
 * redis://user:password@host sends AUTH user password on every new connection,
 * redis://:password@host AUTH password (the default user, requirepass). A refused AUTH is an
 * unavailable Redis like any other, reported with Redis's reason; the password is never logged.
 */
#ifndef BULKHEAD_RLREDIS_H
#define BULKHEAD_RLREDIS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct rlredis;

/* A parsed REDIS_URL: redis://[[user]:password@]host[:port][/db]. */
struct rlredis_url {
    char host[256];     /* a host name or IPv4 address */
    int port;           /* 1..65535, default 6379 */
    int db;             /* 0..999, default 0 */
    char user[128];     /* ACL user, percent-decoded; "" = the default user */
    char password[256]; /* percent-decoded; "" = no AUTH */
};

#define RLREDIS_KEYS_PER_CALL 128 /* tenants per EVALSHA: bounds how long one call blocks Redis */
#define RLREDIS_KEY_MAX                                                                            \
    128 /* bytes of a charge's key with its NUL: tier (32), ':', tenant (80)                       \
         */

/* One tenant's hits, and what Redis answered. */
struct rlredis_charge {
    const char *key;     /* "<tier>:<tenant>" (< RLREDIS_KEY_MAX); Redis's: bulkhead:rl:<key> */
    int64_t interval_us; /* T = window / limit: how far one hit moves the TAT, >= 1 */
    int64_t hits;        /* admitted hits to add, >= 1 */
    int64_t ahead_us;    /* out: the TAT after them minus Redis's now (> 0) */
};

/* url: see struct rlredis_url. Fails only for a malformed URL (err names REDIS_URL, with the
 * password masked); an unreachable Redis or a refused AUTH is a runtime condition (fallback),
 * not a start-up error. Nothing is connected yet. */
int rlredis_create(const char *url, int64_t timeout_ms, struct rlredis **out, char *err,
                   size_t errlen) __attribute__((warn_unused_result));
void rlredis_destroy(struct rlredis *r);

/*
 * One thread at a time. Add every charge's hits to its tenant's TAT and fill ahead_us, in one
 * round trip. 0, or -EIO with the reason in err: then no ahead_us is filled, and the hits may
 * or may not have been counted (a connection lost after Redis ran a call). A connection that
 * had worked and fails is tried once more on a new one (after a Redis restart it is dead,
 * and Redis holds nothing to count twice); a script Redis no longer knows is loaded again.
 */
int rlredis_charge(struct rlredis *r, struct rlredis_charge *c, size_t n, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* One thread at a time. Connect if need be (AUTH, SELECT, SCRIPT LOAD) and PING: 0, or -EIO
 * with the reason in err. */
int rlredis_ping(struct rlredis *r, char *err, size_t errlen) __attribute__((warn_unused_result));

/*
 * Parse redis://[[user]:password@]host[:port][/db] (exposed for tests and fuzzing). The
 * userinfo ends at the last '@'; a password, when given, is not empty; user and password may
 * use %XX escapes (for '@', ':', '/', blanks), which are decoded (never to a NUL). Anything else
 * (query strings, fragments, IPv6 brackets, blanks, a user without a password, a field too long
 * for its buffer) is -EINVAL: refused rather than misread. out is filled only on 0.
 */
int rlredis_parse_url(const char *url, struct rlredis_url *out) __attribute__((warn_unused_result));

#endif
