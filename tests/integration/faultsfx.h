/*
 * faultsfx: the fixture of the fault tests under load (test_faults, test_faults_conns): the
 * tiers they run (short breaker resets, a one-worker "stall" tier, a "limited" one), the suite's
 * database and tier file, and a load: per tier, reader and writer clients of faultkit, warmed
 * up, stopped and checked for answers the contract allows. The file that includes this includes
 * cmocka.h first.
 */
#ifndef BULKHEAD_TESTS_FAULTSFX_H
#define BULKHEAD_TESTS_FAULTSFX_H

#include "faultkit.h"
#include "harness.h"

#include <stdatomic.h>
#include <stdint.h>

extern char ftfx_db_url[300]; /* the suite's database, in the shared cluster */

extern char ftfx_tiers_env[400]; /* "TIERS_FILE=..." of FTFX_FAULT_TIERS */

/* Short breaker resets so that recovery is quick; no rate limits except on "limited". The
 * three load tiers' breaker_timeout_ms (also their connect timeout) is 10 s: beside the whole
 * suite a PostgreSQL connect once took over 3 s (the default), and a timed-out connect with
 * nothing busy fails every waiter (583 reads in one run): these tests are about kills, not
 * about connect speed. */
#define FTFX_FAULT_TIERS                                                                           \
    "{\"free\": {\"workers\": 4, \"queue_max\": 40, \"db_max\": 2, \"rate_limit\": 0,"             \
    " \"breaker_reset_ms\": 1000, \"breaker_timeout_ms\": 10000},"                                 \
    " \"pro\": {\"workers\": 6, \"queue_max\": 60, \"db_max\": 3, \"rate_limit\": 0,"              \
    " \"breaker_reset_ms\": 1000,"                                                                 \
    " \"breaker_timeout_ms\": 10000},"                                                             \
    " \"enterprise\": {\"workers\": 8, \"queue_max\": 80, \"db_max\": 4, \"breaker_reset_ms\": "   \
    "1000, \"breaker_timeout_ms\": 10000},"                                                        \
    " \"stall\": {\"workers\": 1, \"queue_max\": 4, \"db_max\": 1, \"rate_limit\": 0,"             \
    " \"breaker_timeout_ms\": 500},"                                                               \
    " \"limited\": {\"workers\": 2, \"db_max\": 1, \"rate_limit\": 100000}}"

extern const char *const ftfx_tiers3[];

/* The suite's database (db, in the shared cluster: each test file its own, since the files of one
 * pass run at once) into ftfx_db_url, and the tier file FTFX_FAULT_TIERS into ftfx_tiers_env.
 * 0 or -1. */
int ftfx_setup(const char *db);

long ftfx_tier_get(const struct h_server *s, const char *tier, const char *path);

/* A group of clients: per tier `readers` GET loops and `writers` POST loops. */
struct ftfx_load {
    struct fk_client c[32];
    int n;
    struct fk_tier_stat ts[3];
    atomic_bool stop;
    atomic_llong mark;
};

void ftfx_load_start(struct ftfx_load *l, const struct h_server *s, int readers, int writers,
                     int read_rate, int write_rate, const char *tag);

void ftfx_load_stop(struct ftfx_load *l);

void ftfx_load_free(struct ftfx_load *l);

struct ftfx_served_ctx {
    struct ftfx_load *l;
    long want;
};

int64_t ftfx_sum_metric(const struct h_server *s, const char *section, const char *field);

/* Wait until the load runs on every tier, then reset the gap counters. */
void ftfx_load_warm(struct ftfx_load *l, long per_tier);

/* Every response of the load was an answer the contract allows, the server never dropped one. */
void ftfx_expect_clean_answers(struct ftfx_load *l);

#endif
