/*
 * config: the server's settings, from the environment (and an optional .env file).
 *
 * Every setting is one row of a declarative table in config.c (name, type, default, bounds,
 * help). The parser, the validation, `bulkhead --help` and the README's configuration table all
 * come from that table, so they cannot disagree. Per-tier numbers live in tiers.c, not here.
 */
#ifndef BULKHEAD_CONFIG_H
#define BULKHEAD_CONFIG_H

#include "http.h"
#include "log.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

enum config_backend { CONFIG_BACKEND_MEMORY, CONFIG_BACKEND_REDIS };
enum config_auth { CONFIG_AUTH_HEADER, CONFIG_AUTH_APIKEY };
enum config_test_params { CONFIG_TEST_PARAMS_AUTO, CONFIG_TEST_PARAMS_ON, CONFIG_TEST_PARAMS_OFF };

/* The parsed settings. Strings are owned by the struct (config_free releases them). */
struct config {
    char *database_url;        /* libpq connection string or URL; "" = libpq defaults */
    int64_t api_port;          /* TCP port to listen on */
    char *api_bind;            /* listen address (IPv4 or IPv6 literal) */
    int64_t ops_port;          /* the operators' port; 0 = operator endpoints on api_port */
    char *tiers_file;          /* JSON tier table; "" = the built-in seed table */
    int64_t http_threads;      /* libmicrohttpd event threads; 0 = one per CPU */
    int64_t http_max_conns;    /* concurrent client connections before refusing */
    int64_t http_idle_timeout; /* seconds before an idle or slow client is dropped */
    int64_t http_conn_memory;  /* largest request head; libmicrohttpd gets twice this */
    int64_t http_max_body;     /* largest request body accepted (413 above) */
    int64_t shutdown_timeout;  /* ms to finish in-flight requests on SIGTERM */
    int64_t health_interval;   /* ms between database health probes */
    enum config_backend rl_backend;
    char *redis_url;       /* redis://host:port[/db] for the shared rate limiter */
    int64_t redis_timeout; /* ms for any Redis connect or call */
    int64_t rl_lease_pct;  /* % of a tenant's limit an instance admits before Redis counts it */
    int64_t rl_sync_ms;    /* ms at most between admitted hits and their batch to Redis */
    int64_t rl_max_keys;   /* tracked rate-limit keys per tier before the overflow bucket */
    enum config_auth auth_mode;
    enum config_test_params test_params; /* force_error, delay_ms: auto = in header mode */
    int64_t auth_cache_ttl;              /* ms an API-key lookup is trusted */
    char *admin_token;                   /* bearer token for /admin; "" = admin endpoints off */
    enum log_format log_format;
    enum log_level log_level;
    bool access_log;            /* one line per request on stdout */
    double access_log_sample;   /* fraction of successful requests logged, 0..1 */
    int64_t access_log_slow_ms; /* slower requests are always logged; 0 = none is slow */
    int64_t retry_reads;        /* retries of an idempotent read on a dead connection */
    int64_t pipeline_depth;     /* a tenant's reads in flight on one connection at most */
    int64_t pipeline_join_ms;   /* a pipelined connection is joined while its oldest is younger */
    char *trusted_proxies;      /* proxies whose X-Forwarded-For names the client ("" = none) */
    int64_t client_ipv6_prefix; /* bits of an IPv6 client's address that name it */
    bool capacity_control;      /* the capacity controller shapes lower tiers */
    int64_t capacity_interval;  /* ms between its verdicts */
    int64_t capacity_baseline;  /* s: time constant of a level's rise */
    bool fleet;                 /* exchange tier states with the other instances (fleet.h) */
    int64_t fleet_interval;     /* ms between exchanges */
    bool tarpit;                /* hold refusals of clients that ignore Retry-After */
    bool tenant_accounting;     /* per-tenant accounting (tenantstat.h) */
    int64_t tarpit_max_held;    /* refusals held at once */
    int64_t tarpit_max_hold;    /* ms, longest hold */
    int64_t tarpit_max_clients; /* clients remembered */
};

/*
 * Fill cfg from the environment (getenv). Returns 0, or -EINVAL with a message naming the
 * variable and the reason in err. cfg holds defaults for anything unset or empty (an empty value
 * counts as unset).
 */
int config_load(struct config *cfg, char *err, size_t errlen) __attribute__((warn_unused_result));

/* Same, with a caller-supplied lookup (tests). */
int config_load_from(struct config *cfg, const char *(*get)(const char *name, void *ctx), void *ctx,
                     char *err, size_t errlen) __attribute__((warn_unused_result));

void config_free(struct config *cfg);

/* Print the settings table: as plain text for --help, or as a Markdown table for the README. */
void config_print_help(FILE *out, bool markdown);

#define CONFIG_SETTINGS_MAX 48 /* rows of the settings table, at most */

/* Where a setting's value came from. */
enum config_source { CONFIG_SRC_DEFAULT, CONFIG_SRC_DOTENV, CONFIG_SRC_ENV };

struct config_origin {
    enum config_source source[CONFIG_SETTINGS_MAX]; /* by row of the settings table */
};

/*
 * What the bulkhead command does before anything else: the .env file at dotenv_path fills in
 * what the environment leaves unset or empty (no file is fine), then config_load. origin, when
 * not NULL, receives where each setting's value came from. Returns 0, or a negative errno with
 * "path: line N: reason" (the .env file) or "NAME: reason" (a value) in err.
 */
int config_load_all(struct config *cfg, const char *dotenv_path, struct config_origin *origin,
                    char *err, size_t errlen) __attribute__((warn_unused_result));

/*
 * `bulkhead config --effective`: every setting in force as a .env line with its source
 * ("DATABASE_URL=postgresql://app:****@db/app   # environment"). ADMIN_TOKEN prints as ****,
 * and the password of DATABASE_URL and REDIS_URL is masked (log_mask_conn).
 */
void config_print_effective(FILE *out, const struct config *cfg,
                            const struct config_origin *origin);

/* The HTTP layer's settings (API_BIND, HTTP_*) as http.h takes them; bind points into cfg. */
struct http_settings config_http_settings(const struct config *cfg);

#endif
