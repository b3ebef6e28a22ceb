/*
 * harness: what every integration test needs to drive the real binary.
 *
 * - PostgreSQL: the test run (scripts/test.sh) starts one shared cluster and exports
 *   BH_TEST_PG_PORT; h_db_create makes a fresh database in it (a copy of the "bulkhead"
 *   database with init-db.sql applied, BH_TEST_DB_TEMPLATE, named with BH_TEST_DB_PREFIX so that
 *   the passes running at once never share one). Tests that stop or restart PostgreSQL start
 *   a private cluster with h_pg_start.
 * - The server: h_server_start (hserver.h) runs $BULKHEAD_BIN (build/bulkhead, or a sanitizer
 *   build) on a free port with the given environment, waits until /health answers, and logs to
 *   a file.
 * - A suite: h_suite_start makes the database and starts the one server most test files need
 *   (with a tier file and more environment if asked); h_suite_stop stops it.
 * - HTTP: blocking requests (h_request) and bursts of concurrent ones (h_burst) with libcurl;
 *   h_url is the one URL builder; h_metric reads /metrics/bulkheads.
 * - Waiting: H_WAIT(expr, ms) and h_wait_until poll a real condition with a deadline; no test
 *   sleeps blindly.
 */
#ifndef BULKHEAD_TEST_HARNESS_H
#define BULKHEAD_TEST_HARNESS_H

#include "hserver.h"

#include <jansson.h>
#include <libpq-fe.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* ---- PostgreSQL ------------------------------------------------------------------------ */

struct h_pg {
    char dir[256];
    int port;
    char url[300]; /* postgresql://... of database "bulkhead" */
};

/* A private cluster (initdb from the run's template copy). 0 or -1. */
int h_pg_start(struct h_pg *pg);
int h_pg_stop(struct h_pg *pg);     /* fast shutdown, keeps the data */
int h_pg_resume(struct h_pg *pg);   /* start again after h_pg_stop */
void h_pg_destroy(struct h_pg *pg); /* stop and delete */

/* A new database in the shared cluster, initialised by init-db.sql; url receives its URL. */
int h_db_create(const char *name, char *url, size_t urllen);

/* One-shot SQL against url: returns the first column of the first row as an integer, or
 * INT64_MIN on error. */
int64_t h_sql_int(const char *url, const char *sql);
/* Run SQL; 0 or -1. */
int h_sql_exec(const char *url, const char *sql);

/* ---- around the server (hserver.h): its binary, files and URLs ---------------------------- */

/* The project's root (BH_ROOT, default ".") and this test's work folder (BH_TEST_WORK, default
 * /tmp). */
const char *h_root(void);
const char *h_work(void);
/* Run a shell command with its stderr merged into its stdout; the whole output into *out (caller
 * frees; out may be NULL). Its exit status, or -1 (no exit, or popen failed). */
int h_run(const char *cmd, char **out);
/* Print each line of text as a TAP diagnostic ("# line"). */
void h_diag(const char *text);
/* The absolute path of the binary under test ($BULKHEAD_BIN, relative to BH_ROOT; default
 * build/bulkhead), in a static buffer. */
const char *h_bin(void);
/* The seed's tiers, but free's 100 requests are per hour rather than per minute: a test that
 * counts admissions over seconds sees no refill. */
#define H_TIERS_HOURLY                                                                             \
    "{\"free\": {\"workers\": 10, \"queue_max\": 20, \"db_max\": 5, \"rate_limit\": 100,"          \
    " \"rate_window_s\": 3600, \"tenant_share_pct\": 50, \"tenant_queue_pct\": 50},"               \
    " \"pro\": {\"workers\": 30, \"queue_max\": 60, \"db_max\": 20, \"rate_limit\": 1000},"        \
    " \"enterprise\": {\"workers\": 60, \"queue_max\": 240, \"db_max\": 50}}"

/* Write json to file name in the test's work folder and put "TIERS_FILE=<path>" into env.
 * 0 or -1. */
int h_tiers_env(const char *name, const char *json, char *env, size_t envlen);
/* s->base + path, in one of a few per-thread rotating buffers (valid for a handful of calls). */
const char *h_url(const struct h_server *s, const char *path);
/* The whole file, NUL-terminated (caller frees), or NULL. */
char *h_read_file(const char *path);

/* ---- a suite: one database and one server --------------------------------------------------- */

struct h_suite {
    /* Set by the test. */
    const char *name;       /* the database's name; the tier file is tiers-<name>.json */
    const char *tiers_json; /* the server's TIERS_FILE contents, or NULL: the built-in tiers */
    const char *env[8];     /* more "NAME=value" for the server, NULL-terminated */
    int (*prepare)(const char *db_url); /* runs after the database exists, before the server
                                           starts (may be NULL); 0 or -1 */
    /* Filled by h_suite_start. */
    char db_url[300];     /* the suite's database */
    char tiers_path[400]; /* the tier file, when tiers_json is set (rewrite it, then SIGHUP) */
    struct h_server srv;  /* the server */
};

/* Make the database, write the tier file, start the server: a cmocka group setup in one call.
 * 0 or -1. */
int h_suite_start(struct h_suite *s);
/* Stop the server (SIGTERM, 30 s at most). */
void h_suite_stop(struct h_suite *s);

/* ---- HTTP --------------------------------------------------------------------------------- */

struct h_resp {
    long status; /* 0 when the request failed at the transport level */
    char *body;  /* NUL-terminated, owned */
    size_t len;
    char *headers;  /* raw header block, owned */
    double seconds; /* total time */
};

/* method "GET"/"POST"/...; headers NULL-terminated "Name: value"; body may be NULL. */
int h_request(const char *method, const char *url, const char *const *headers, const char *body,
              struct h_resp *out);
int h_get(const char *url, const char *const *headers, struct h_resp *out);
void h_resp_free(struct h_resp *r);
/* Value of a response header (case-insensitive), copied into buf; NULL if absent. */
const char *h_header(const struct h_resp *r, const char *name, char *buf, size_t len);
/* The body parsed as JSON (caller json_decref), or NULL. */
json_t *h_json(const struct h_resp *r);
/* GET url and return the JSON body (NULL on any failure). */
json_t *h_get_json(const char *url);

/* A burst: n requests sent at once (up to `parallel` in flight), statuses[i] and latency[i]
 * (seconds) filled per request. Returns 0 when every transfer completed. */
int h_burst(const char *method, const char *url, const char *const *headers, int n, int parallel,
            long *statuses, double *latency);

/* Count statuses equal to code. */
int h_count(const long *statuses, int n, long code);

/* ---- /metrics/bulkheads ----------------------------------------------------------------- */

/* The one reader of /metrics/bulkheads; base is a server's http://host:port. */
/* tier.section.field as an integer; INT64_MIN when absent, not an integer, or no answer. */
int64_t h_metric(const char *base, const char *tier, const char *section, const char *field);
/* The same field as text into buf; "" when absent or not a string. */
const char *h_metric_text(const char *base, const char *tier, const char *section,
                          const char *field, char *buf, size_t len);
/* tier.section as a JSON object (caller json_decref), or NULL. */
json_t *h_metric_section(const char *base, const char *tier, const char *section);

/* ---- /metrics --------------------------------------------------------------------------- */

/* The value of an unlabelled series (or name{label} given as "name" and label "k=\"v\"" in
 * the document's exact form) from base's /metrics; NAN when absent or no answer. */
double h_prom(const char *base, const char *name, const char *label);

/* ---- waiting ---------------------------------------------------------------------------- */

/* Poll cond(ctx) every few milliseconds until it is true or timeout_ms passes. */
bool h_wait_until(bool (*cond)(void *ctx), void *ctx, int timeout_ms);

/* Evaluate expr every few milliseconds until it is true or timeout_ms passes; the macro's value
 * is the last result (a GNU statement expression, so the condition can be written in place). */
#define H_WAIT(expr, timeout_ms)                                                                   \
    __extension__({                                                                                \
        int64_t h_wait_end_ = h_now_ms() + (timeout_ms);                                           \
        bool h_wait_ok_;                                                                           \
        while (!(h_wait_ok_ = (expr)) && h_now_ms() < h_wait_end_)                                 \
            h_nap_ms(10);                                                                          \
        h_wait_ok_;                                                                                \
    })

/* Sleep ms (only H_WAIT's polling interval and pacing; never to wait for a condition). */
void h_nap_ms(int ms);

/* Milliseconds on the monotonic clock. */
int64_t h_now_ms(void);

/* A free TCP port on 127.0.0.1. */
int h_free_port(void);

/* Median of n doubles (the array is sorted in place). */
double h_median(double *v, int n);

#endif
