/*
 * adminfx: the admin API tests' fixture (test_admin, test_admin_auth): two instances of the real
 * binary on one database and one Redis (AUTH_MODE=apikey, ADMIN_TOKEN set, keys cached for
 * ADFX_TTL_MS), admin requests to either (with the token, or another Authorization, from a
 * client address named in X-Forwarded-For), tenants created through the API and calls with
 * their keys. The file that includes this includes cmocka.h first.
 */
#ifndef BULKHEAD_TESTS_ADMINFX_H
#define BULKHEAD_TESTS_ADMINFX_H

#include "harness.h"

#include <stddef.h>

#define ADFX_TOKEN  "admin-secret-for-tests-0123456789"
#define ADFX_TTL_MS 2000
/* How long a change may take to reach an instance: the cache lifetime, plus room for a reload
 * that starts just before the change and a slow (sanitizer) build. A notified change is seen
 * far sooner; the bound is only there so that a broken path fails rather than hangs. */
#define ADFX_SEEN_WITHIN_MS (3 * ADFX_TTL_MS)

extern char adfx_db_url[300];

extern struct h_server adfx_inst[2];

extern char adfx_tiers_env[400];

/* The seed's tiers with free's 100 per hour: no refill while a test counts. */
/* Behind a "load balancer" at 127.0.0.1: a test names the client in X-Forwarded-For, so that
 * the failed authentications of one test do not limit the next one's requests. */
extern const char *const adfx_base_env[];

/* env[] gets adfx_base_env and adfx_tiers_env (cap: env's size, which must leave room for them
 * and a NULL); returns how many, so the caller appends its own and then NULL. */
size_t adfx_env(const char **env, size_t cap);

/* The suite's database name ("admin"; each test file its own: the files of a pass run at once). */
extern const char *adfx_db;

/* A cmocka group setup: the database adfx_db, a Redis, two instances on them (adfx_inst). */
int adfx_setup(void **state);

int adfx_teardown(void **state);

/* An admin request to server s with the token (or `auth` instead when not NULL), from client
 * address `from` (X-Forwarded-For; NULL: 127.0.0.1 itself); the reply in *out when out is not
 * NULL. Returns the status. */
long adfx_admin_from(const struct h_server *s, const char *from, const char *method,
                     const char *path, const char *body, const char *auth, struct h_resp *out);

long adfx_admin_on(const struct h_server *s, const char *method, const char *path, const char *body,
                   const char *auth, struct h_resp *out);

long adfx_admin(int i, const char *method, const char *path, const char *body, struct h_resp *out);

/* The "error" of a JSON error reply into buf ("" when there is none). */
const char *adfx_error_code(const struct h_resp *r, char *buf, size_t len);

/* Create tenant name of tier (with rate_limit >= 0 as its override) on instance i; its key
 * into key. */
void adfx_create(int i, const char *name, const char *tier, long rate_limit, char *key,
                 size_t keylen);

/* GET /api/data on server s with key: the status, and RateLimit-Limit into *limit (-1 when
 * the reply has none). */
long adfx_call_on(const struct h_server *s, const char *key, long *limit);

#endif
