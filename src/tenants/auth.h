/*
 * auth: API keys (AUTH_MODE=apikey). A key identifies a tenant; the tenant's tier comes from
 * the database, never from a request header.
 *
 * Keys are 256 random bits from the OS, shown once at creation; only their SHA-256 is stored
 * (tenants.key_hash). The server keeps an in-memory table of every live key's hash, rebuilt by
 * a background thread from the database every AUTH_CACHE_TTL_MS and at once when a change is
 * signalled (LISTEN/NOTIFY: tenantdb notifies in every change's transaction, whichever
 * instance or CLI made it), so every instance follows the database within the TTL. A request costs
 * one SHA-256 and one hash lookup on the HTTP thread: no query per request, so a flood of bad keys
 * cannot reach the database, and the lookup's timing depends only on the key's hash, never on how
 * much of a real key it matches.
 *
 * The refresher never waits on the database without a bound: its connection has TCP keepalives
 * and tcp_user_timeout, a connect gives up after AUTH_CONNECT_TIMEOUT_MS, a reload's statement
 * ends at AUTH_STATEMENT_TIMEOUT_MS in the server and is given up AUTH_ANSWER_GRACE_MS later
 * (the previous table stays in force), and auth_stop ends any wait at once.
 *
 * DESIGN: the refresher thread builds a new table and swaps it in under a write lock; HTTP
 * threads look up under the read lock. The refresher's connection is its own; auth_stop writes
 * a stop pipe that the refresher's sleep and every wait of that connection poll.
 */
#ifndef BULKHEAD_AUTH_H
#define BULKHEAD_AUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define AUTH_KEY_LEN    46 /* "bh_" + 43 base64url characters */
#define AUTH_TENANT_MAX 64

struct auth;

struct auth_identity {
    char tenant[AUTH_TENANT_MAX + 1];
    char tier[33];
    bool own_rate_limit; /* the tenant has its own rate limit, which wins over the tier's */
    int64_t rate_limit;  /* with own_rate_limit: requests per the tier's window, 0 = unlimited */
    bool own_db_time;    /* the tenant has its own database-time budget, which wins */
    int64_t db_time_ms_per_min; /* with own_db_time: ms per minute, 0 = no budget */
};

struct auth_stats {
    size_t keys; /* live keys in the table */
    uint64_t reloads, reload_failures, accepted, rejected;
    int64_t loaded_wall_us; /* when the table was last loaded */
};

#define AUTH_TTL_MIN_MS           1000  /* AUTH_CACHE_TTL_MS at least: a reload reads every key */
#define AUTH_CONNECT_TIMEOUT_MS   5000  /* the refresher's connect and its set-up */
#define AUTH_STATEMENT_TIMEOUT_MS 30000 /* a reload's SELECT, ended by the server */
#define AUTH_ANSWER_GRACE_MS      2000  /* then given up without an answer */

/* Load the table once (failing start-up if the database cannot be read), then start the
 * refresher, which reloads every ttl_ms (AUTH_TTL_MIN_MS at least) and on notification. */
int auth_start(const char *conninfo, int64_t ttl_ms, struct auth **out, char *err, size_t errlen)
    __attribute__((warn_unused_result));
void auth_stop(struct auth *a);

/* HTTP thread: 0 and *out for a live key, -EACCES for a missing or unknown key, -EAGAIN when
 * no table could be loaded yet. */
int auth_identify(struct auth *a, const char *authorization, const char *x_api_key,
                  struct auth_identity *out) __attribute__((warn_unused_result));

void auth_stats(struct auth *a, struct auth_stats *out);

/* Live keys of tier, and how many of those tenants carry an override (any thread). Counted
 * for the first AUTH_TIERS_COUNTED tier names met in the table. */
#define AUTH_TIERS_COUNTED 32
void auth_tier_counts(struct auth *a, const char *tier, size_t *tenants, size_t *overrides);

/* A new key ("bh_..."), from getrandom(2). 0 or a negative errno. */
int auth_new_key(char out[AUTH_KEY_LEN + 1]) __attribute__((warn_unused_result));

/* Lowercase hex SHA-256 of key. */
void auth_hash_key(const char *key, char out[65]);

/* The channel every tenant change notifies (tenantdb). */
#define AUTH_NOTIFY_CHANNEL "bulkhead_tenants"

#endif
