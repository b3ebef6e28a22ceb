/*
 * faultkit: load and fault injection shared by the fault tests (test_faults*.c) and the soak
 * (tests/soak/soak.c). Linked into every integration test and the soak with the harness.
 *
 * - Clients: threads that send /api/data requests to one tier in a loop over a keep-alive
 *   connection (GETs, POSTs or a mix, optionally paced, optionally a new tenant id each time),
 *   tally the statuses and error codes, remember the row ids of acknowledged (201) writes, and
 *   track per tier the longest gap between two successes and the first success after a mark.
 * - Faults: PostgreSQL restarts (pg_ctl, fast or immediate), killed tier connections
 *   (pg_terminate_backend), the backend pid serving a tier; a relay in front of PostgreSQL
 *   that can stop forwarding (the network drops every packet, as far as the server can tell):
 *   the module fkrelay, included here.
 * - /proc readings of the server: VmRSS, Threads, open descriptors, CPU time.
 *
 * DESIGN: a client thread owns its curl handle and its acked[] array (read by others only after
 * fk_client_join); its counters are atomics so the test thread can wait on them while it runs.
 * The per-tier stats are shared by that tier's clients and updated with atomics only.
 */
#ifndef BULKHEAD_TEST_FAULTKIT_H
#define BULKHEAD_TEST_FAULTKIT_H

#include "fkrelay.h"
#include "harness.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

/* ---- /proc --------------------------------------------------------------------------------- */

long fk_rss_kb(pid_t pid);  /* VmRSS in kB, or -1 */
long fk_threads(pid_t pid); /* threads, or -1 */
/* Open file descriptors of pid, or -1. */
int fk_fd_count(pid_t pid);
/* Open descriptors of pid numbered below limit (RLIMIT_NOFILE bounds the numbers, not the
 * count: a descriptor inherited with a higher number does not count against it), or -1. */
int fk_fd_count_below(pid_t pid, int limit);
/* Open descriptors of pid that are TCP connections to remote port `port`, or -1. */
int fk_fd_count_to_port(pid_t pid, int port);
/* Print pid's open descriptors, one line each (for a report when a count looks wrong). */
void fk_fd_dump(pid_t pid, FILE *out);
/* User + system CPU seconds used by pid so far, or -1. */
double fk_cpu_seconds(pid_t pid);
/* Whether pid is still running (not exited, not a zombie we have not reaped). */
bool fk_alive(pid_t pid);

/* ---- PostgreSQL faults --------------------------------------------------------------------- */

/* pg_ctl on a cluster of h_pg_start, as the postgres user: "-m immediate restart", say. 0 or
 * -1. */
int fk_pg_ctl(const struct h_pg *pg, const char *action);
/* Terminate every connection of the server's tier pools (not its health prober) in url's
 * database. Returns how many were signalled, or -1. */
int64_t fk_kill_tier_backends(const char *url);
/* The pid of the (one) backend with this application_name in url's database, or -1. */
int fk_backend_pid(const char *url, const char *appname);

/* ---- metrics and probes -------------------------------------------------------------------- */

/* (/metrics/bulkheads is read with the harness's h_metric.) */
/* GET base+path; the status (0 on a transport failure). */
long fk_status(const char *base, const char *path, const char *const *headers);

/* ---- clients ------------------------------------------------------------------------------- */

/* How a client's request ended, counted per client. */
enum fk_code {
    FK_200,
    FK_201,
    FK_429,
    FK_4XX, /* any other 4xx */
    FK_500,
    FK_503,
    FK_504,
    FK_OTHER,
    FK_TRANSPORT, /* no HTTP answer at all */
    FK_NCODES
};

/* The "error" field of JSON error bodies, counted by name (names in faultkit.c). */
enum fk_err {
    FK_E_CIRCUIT_OPEN,
    FK_E_DATABASE_UNAVAILABLE,
    FK_E_POOL_TIMEOUT,
    FK_E_QUEUE_TIMEOUT,
    FK_E_BULKHEAD_FULL,
    FK_E_TIMEOUT,
    FK_E_DATABASE_ERROR,
    FK_E_RATE_LIMITED,
    FK_E_SHUTTING_DOWN,
    FK_E_OTHER, /* no "error" field, or a name not listed */
    FK_NERR
};

/* Shared by the clients of one tier. */
struct fk_tier_stat {
    const char *tier;
    atomic_llong last_ok_ms;  /* monotonic ms of the latest 2xx; 0 = none yet */
    atomic_llong max_gap_ms;  /* longest time between two 2xx (since the last reset) */
    atomic_llong first_ok_ms; /* first 2xx at or after *mark_ms; 0 = none yet */
};

/* One acknowledged write: the row id from the 201 body and what the client wrote. */
struct fk_ack {
    int64_t id;
    int client, seq;
};

struct fk_client {
    /* Set by the caller before fk_client_start. */
    const char *base;  /* http://127.0.0.1:PORT */
    const char *tier;  /* X-Tenant-Tier */
    char tenant[48];   /* X-Tenant-Id, or the prefix of cycled ids */
    bool cycle_tenant; /* a new tenant id on every request */
    int tenants;       /* else, when > 0: cycle through this many ids (to stay under rate limits) */
    int post_every;    /* every Nth request is a POST (1: all; 0: none) */
    const char *path;  /* GET path and query, "/api/data?limit=5" when NULL */
    const char *tag;   /* "run" field of POST payloads */
    int id;            /* "c" field of POST payloads */
    int rate;          /* requests per second at most; 0: as fast as answered */
    bool stop_on_transport;      /* end at the first transport failure (the server died) */
    const atomic_bool *stop;     /* end when true */
    const atomic_llong *mark_ms; /* for first_ok_ms; may be NULL */
    /* Failures (5xx, transport, 4xx but 429) at or after this monotonic ms count as
     * quiet_errors: the caller moves it past each fault it injects. May be NULL. */
    const atomic_llong *quiet_after_ms;
    struct fk_tier_stat *ts; /* may be NULL */

    /* Results; the atomics may be read while it runs. */
    atomic_long n[FK_NCODES];
    atomic_long err[FK_NERR];
    atomic_long sent, created;
    atomic_long quiet_errors;
    long cut_off;         /* POSTs that got no answer at all (outcome unknown) */
    struct fk_ack *acked; /* owned, freed by fk_client_free; nacked entries, valid after join */
    size_t nacked, cap;
    pthread_t thread;
};

/* Start the client's thread (test thread). 0 or -1. */
int fk_client_start(struct fk_client *c);
/* Wait for it to end (after *c->stop was set, or a transport failure with stop_on_transport). */
void fk_client_join(struct fk_client *c);
/* Free the acknowledged-write list; after join. */
void fk_client_free(struct fk_client *c);

/* Sum of counter code over the clients of tier (every tier when tier is NULL). */
long fk_sum(struct fk_client *cs, int n, const char *tier, enum fk_code code);
/* Sum of the clients' 201s. */
long fk_sum_created(struct fk_client *cs, int n);
/* One line per tier: "# <label> <tier>: 200=.. 201=.. 503=.. (circuit_open=.. ...)". */
void fk_print_tally(const char *label, struct fk_client *cs, int n, const char *const *tiers,
                    int ntiers);
/* How many acknowledged writes of these clients (after join) are in the database at url, with
 * the payload the client sent ("run" = tag, "c", "n"); *acked_out receives how many were
 * acknowledged. Returns the count, or -1 on a query or allocation failure. */
int64_t fk_acked_present(const char *url, struct fk_client *cs, int n, const char *tag,
                         int64_t *acked_out);

#endif
