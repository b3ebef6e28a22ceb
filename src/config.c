/*
 * config: one declarative table of environment settings, and the code that reads it.
 *
 * Each row gives the variable's name, type, default, bounds or choices, help text and where the
 * parsed value goes in struct config. Loading walks the table once; a bad value is refused with
 * the variable's name and the reason, and nothing else is started. An empty value counts as
 * unset, in the environment and in .env alike, so `.env.example` copied as is (every line
 * `NAME=` or `NAME=<default>`) changes nothing. The type also says how `config --effective`
 * prints a value: secrets masked.
 */
#include "config.h"
#include "dotenv.h"
#include "xalloc.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

enum cfg_type {
    CFG_STR,    /* text, printed as is */
    CFG_CONN,   /* a connection URL or libpq string: text, its password printed masked */
    CFG_SECRET, /* text printed masked */
    CFG_INT,
    CFG_ENUM,
    CFG_BOOL,
    CFG_FRACTION, /* a decimal from 0 to 1, stored as a double */
};

/* Strings: every text type owns a char * in struct config. */
static bool cfg_is_text(enum cfg_type t)
{
    return t == CFG_STR || t == CFG_CONN || t == CFG_SECRET;
}

struct cfg_def {
    const char *name;    /* environment variable */
    enum cfg_type type;  /* how the value is parsed */
    const char *def;     /* default, as it would be written in the environment */
    int64_t min, max;    /* CFG_INT bounds, inclusive; CFG_SECRET: min, its shortest length
                            unless empty */
    const char *choices; /* CFG_ENUM: values separated by '|', in enum order */
    const char *help;    /* one line for --help and the README */
    size_t offset;       /* where the value lives in struct config */
};

#define OFF(field) offsetof(struct config, field)

static const struct cfg_def cfg_table[] = {
    {"DATABASE_URL", CFG_CONN, "", 0, 0, NULL,
     "PostgreSQL connection URL or libpq string (empty: libpq defaults, PG* variables)",
     OFF(database_url)},
    {"API_PORT", CFG_INT, "8080", 1, 65535, NULL, "TCP port the API listens on", OFF(api_port)},
    {"API_BIND", CFG_STR, "0.0.0.0", 0, 0, NULL, "address the API listens on (IPv4 or IPv6)",
     OFF(api_bind)},
    {"OPS_PORT", CFG_INT, "0", 0, 65535, NULL,
     "operators' port (on API_BIND): /metrics, /metrics/bulkheads, /dashboard and /admin answer "
     "there and 404 on API_PORT; the probes answer on both (0: off, one port for everything)",
     OFF(ops_port)},
    {"TIERS_FILE", CFG_STR, "", 0, 0, NULL,
     "JSON tier table replacing the built-in one (see config/tiers.json)", OFF(tiers_file)},
    {"HTTP_THREADS", CFG_INT, "0", 0, 64, NULL,
     "HTTP event threads (0: one per usable CPU, container CPU quota rounded up)",
     OFF(http_threads)},
    {"HTTP_MAX_CONNECTIONS", CFG_INT, "65536", 1, 1000000, NULL,
     "client connections served at once (all the event loops together); at the cap the oldest idle "
     "keep-alive connection is closed for a new client, and with none idle the new one waits in "
     "the listen backlog until one closes",
     OFF(http_max_conns)},
    {"HTTP_MAX_CONNECTIONS_PER_ADDRESS", CFG_INT, "0", 0, 1000000, NULL,
     "connections one client address (the socket's) may hold; the next gets 429 "
     "too_many_connections and is closed. TRUSTED_PROXIES are exempt (0: no cap)",
     OFF(http_max_per_addr)},
    {"HTTP_IDLE_TIMEOUT_S", CFG_INT, "30", 1, 3600, NULL,
     "seconds an idle keep-alive connection is kept (and a reply's write may stall)",
     OFF(http_idle_timeout)},
    {"HTTP_HEAD_TIMEOUT_MS", CFG_INT, "10000", 100, 600000, NULL,
     "time a request head (request line and headers) has from its first byte: 408 and closed "
     "after it, however steadily the bytes trickle; a new connection that sends nothing is "
     "closed this long after its accept",
     OFF(http_head_timeout)},
    {"HTTP_BODY_TIMEOUT_MS", CFG_INT, "30000", 100, 600000, NULL,
     "time a request body has from the end of its head: 408 and closed after it",
     OFF(http_body_timeout)},
    {"HTTP_CONNECTION_MEMORY", CFG_INT, "16384", 4096, 1048576, NULL,
     "largest request head (request line and headers) served: 431 or 414 above; a connection's "
     "read buffer grows to it while a head arrives and is given back when the request ends",
     OFF(http_conn_memory)},
    {"HTTP_MAX_BODY_BYTES", CFG_INT, "65536", 256, 16777216, NULL,
     "largest request body accepted; larger ones get 413 before they are read", OFF(http_max_body)},
    {"SHUTDOWN_TIMEOUT_MS", CFG_INT, "10000", 0, 600000, NULL,
     "time in-flight requests get to finish after SIGTERM/SIGINT", OFF(shutdown_timeout)},
    {"HEALTH_INTERVAL_MS", CFG_INT, "1000", 50, 60000, NULL,
     "how often the database is probed for /health", OFF(health_interval)},
    {"RATE_LIMIT_BACKEND", CFG_ENUM, "memory", 0, 0, "memory|redis",
     "where rate-limit counters live: this process, or Redis shared by all instances",
     OFF(rl_backend)},
    {"REDIS_URL", CFG_CONN, "redis://127.0.0.1:6379", 0, 0, NULL,
     "Redis for RATE_LIMIT_BACKEND=redis: redis://[[user]:password@]host[:port][/db]",
     OFF(redis_url)},
    {"REDIS_TIMEOUT_MS", CFG_INT, "50", 1, 10000, NULL,
     "timeout of every Redis connect and call; past it the local limiter takes over",
     OFF(redis_timeout)},
    {"RATE_LIMIT_LEASE_PCT", CFG_INT, "10", 0, 100, NULL,
     "redis backend: a tenant's lease, the % of its limit (at least 1 request) an instance "
     "admits before Redis has counted them; N instances admit at most limit + (N-1) x lease",
     OFF(rl_lease_pct)},
    {"RATE_LIMIT_SYNC_MS", CFG_INT, "20", 1, 1000, NULL,
     "redis backend: admitted requests reach Redis within this many ms, all of an instance's "
     "in one batch (at once when a tenant's lease is used up); the bound does not depend on it",
     OFF(rl_sync_ms)},
    {"RATE_LIMIT_MAX_KEYS", CFG_INT, "100000", 16, 100000000, NULL,
     "rate-limit keys tracked per tier; new keys past it share their address's overflow bucket",
     OFF(rl_max_keys)},
    {"AUTH_MODE", CFG_ENUM, "header", 0, 0, "header|apikey",
     "header: trust X-Tenant-Tier (behind a trusted gateway); apikey: tier from the API key",
     OFF(auth_mode)},
    {"TEST_PARAMS", CFG_ENUM, "auto", 0, 0, "auto|on|off",
     "accept the test parameters force_error and delay_ms on /api/data (auto: in AUTH_MODE=header "
     "only; refused with 400 when off)",
     OFF(test_params)},
    /* A reload reads the whole key table: 1000 ms at least (auth.h's AUTH_TTL_MIN_MS). */
    {"AUTH_CACHE_TTL_MS", CFG_INT, "5000", 1000, 3600000, NULL,
     "API keys are reloaded at least this often; a notified change (every change made by the "
     "admin API or the CLI) is seen at once",
     OFF(auth_cache_ttl)},
    {"ADMIN_TOKEN", CFG_SECRET, "", 32, 0, NULL,
     "bearer token for /admin endpoints (empty: admin endpoints are off); failed attempts are "
     "limited per client address",
     OFF(admin_token)},
    {"LOG_FORMAT", CFG_ENUM, "json", 0, 0, "json|text", "log line format on stdout/stderr",
     OFF(log_format)},
    {"LOG_LEVEL", CFG_ENUM, "info", 0, 0, "debug|info|warn|error",
     "least severe event logged (access lines are info)", OFF(log_level)},
    {"ACCESS_LOG", CFG_BOOL, "true", 0, 0, NULL, "one access line per request on stdout",
     OFF(access_log)},
    {"ACCESS_LOG_SAMPLE", CFG_FRACTION, "1", 0, 0, NULL,
     "fraction of successful requests given an access line; refusals, errors and slow requests "
     "always get one",
     OFF(access_log_sample)},
    {"ACCESS_LOG_SLOW_MS", CFG_INT, "100", 0, 3600000, NULL,
     "a request slower than this (ms, from its loop's wake-up to the reply sent) is always "
     "logged, whatever ACCESS_LOG_SAMPLE (0: none counts as slow)",
     OFF(access_log_slow_ms)},
    {"DB_READ_RETRIES", CFG_INT, "2", 0, 3, NULL,
     "times an idempotent read is retried on a fresh connection after a dead one",
     OFF(retry_reads)},
    {"DB_PIPELINE_DEPTH", CFG_INT, "8", 1, 32, NULL,
     "a tenant's reads in flight on one connection at most (pipelined; 1: one per connection)",
     OFF(pipeline_depth)},
    {"DB_PIPELINE_JOIN_MS", CFG_INT, "2", 0, 60000, NULL,
     "a read joins a pipelined connection only if its oldest statement was sent less than "
     "this many ms ago",
     OFF(pipeline_join_ms)},
    {"TRUSTED_PROXIES", CFG_STR, "", 0, 0, NULL,
     "load balancers (IPs or CIDRs, comma-separated) whose X-Forwarded-For names the client",
     OFF(trusted_proxies)},
    {"CLIENT_IPV6_PREFIX", CFG_INT, "64", 0, 128, NULL,
     "an IPv6 client is its network of this many leading bits for address-keyed limits and holds",
     OFF(client_ipv6_prefix)},
    {"CAPACITY_CONTROL", CFG_BOOL, "true", 0, 0, NULL,
     "limit lower-priority tiers while a higher tier's latency threatens its objective",
     OFF(capacity_control)},
    {"CAPACITY_INTERVAL_MS", CFG_INT, "100", 10, 10000, NULL,
     "how often the capacity controller decides (one verdict per interval)",
     OFF(capacity_interval)},
    {"CAPACITY_BASELINE_S", CFG_INT, "60", 10, 86400, NULL,
     "how slowly a tier's latency level (its baseline) rises while a lower tier presses: the "
     "time constant, in seconds",
     OFF(capacity_baseline)},
    {"FLEET", CFG_BOOL, "true", 0, 0, NULL,
     "share each tier's state with the other instances on the same database (table "
     "bulkhead_fleet), so a tier is limited while a higher tier is active or threatened on any "
     "instance; false: each instance controls its tiers alone",
     OFF(fleet)},
    {"FLEET_INTERVAL_MS", CFG_INT, "250", 20, 10000, NULL,
     "how often an instance exchanges its tiers' states with the others (one statement); an "
     "instance not heard from for four intervals (at least 1 s) is gone",
     OFF(fleet_interval)},
    {"TARPIT", CFG_BOOL, "true", 0, 0, NULL,
     "hold a rate-limited request until its turn, and a client's refusal when it is back before "
     "its Retry-After; then admit it again",
     OFF(tarpit)},
    {"TENANT_ACCOUNTING", CFG_BOOL, "true", 0, 0, NULL,
     "count each tenant's database time, waits, requests and refusals per tier over the last "
     "minute (/metrics/tenants, the top tenants' Prometheus series, /admin/tenants/NAME/usage)",
     OFF(tenant_accounting)},
    {"TARPIT_MAX_HELD", CFG_INT, "1024", 1, 1000000, NULL,
     "requests held at once; past it, refusals are answered at once", OFF(tarpit_max_held)},
    {"TARPIT_MAX_HOLD_MS", CFG_INT, "5000", 1, 600000, NULL,
     "longest a request is held, whatever its turn or Retry-After", OFF(tarpit_max_hold)},
    {"TARPIT_MAX_CLIENTS", CFG_INT, "100000", 16, 100000000, NULL,
     "clients remembered with a Retry-After, and with turns; past it, new clients are not held",
     OFF(tarpit_max_clients)},
};

#define CFG_COUNT (sizeof(cfg_table) / sizeof(cfg_table[0]))
_Static_assert(CFG_COUNT <= CONFIG_SETTINGS_MAX, "raise CONFIG_SETTINGS_MAX");

/* Index of value in a '|'-separated choice list, or -1. */
static int cfg_choice_index(const char *choices, const char *value)
{
    size_t vlen = strlen(value);
    int idx = 0;
    for (const char *p = choices; *p;) {
        const char *bar = strchr(p, '|');
        size_t len = bar ? (size_t)(bar - p) : strlen(p);
        if (len == vlen && strncmp(p, value, len) == 0)
            return idx;
        idx++;
        if (!bar)
            break;
        p = bar + 1;
    }
    return -1;
}

/* Strict decimal fraction from 0 to 1: digits, at most one '.', nothing else ("0.01", "1", ".5").
 */
static int cfg_parse_fraction(const char *s, double *out)
{
    size_t digits = 0, dots = 0;
    for (const char *p = s; *p; p++) {
        if (isdigit((unsigned char)*p))
            digits++;
        else if (*p == '.' && !dots)
            dots++;
        else
            return -EINVAL;
    }
    if (!digits)
        return -EINVAL;
    char *end = NULL;
    double v = strtod(s, &end);
    if (*end || !(v >= 0.0 && v <= 1.0))
        return -EINVAL;
    *out = v;
    return 0;
}

/* Strict decimal integer: optional '-', digits only, no overflow. */
static int cfg_parse_int(const char *s, int64_t *out)
{
    if (!*s || (!isdigit((unsigned char)*s) && *s != '-'))
        return -EINVAL;
    errno = 0;
    char *end = NULL;
    long long v = strtoll(s, &end, 10);
    if (errno || *end || end == s)
        return -EINVAL;
    *out = v;
    return 0;
}

static int cfg_set(struct config *cfg, const struct cfg_def *d, const char *value, char *err,
                   size_t errlen)
{
    char *base = (char *)cfg;
    switch (d->type) {
    case CFG_SECRET:
        /* Never the value itself in the message: it is a secret, even a bad one. */
        if (value[0] && (int64_t)strlen(value) < d->min) {
            snprintf(err, errlen,
                     "%s: must be empty or at least %" PRId64
                     " characters long (got %zu); generate one with: openssl rand -hex 32",
                     d->name, d->min, strlen(value));
            return -EINVAL;
        }
        /* fall through */
    case CFG_STR:
    case CFG_CONN: {
        char **slot = (char **)(void *)(base + d->offset);
        free(*slot);
        *slot = xstrdup(value);
        return 0;
    }
    case CFG_INT: {
        int64_t v;
        if (cfg_parse_int(value, &v) || v < d->min || v > d->max) {
            snprintf(err, errlen,
                     "%s: must be an integer from %" PRId64 " to %" PRId64 " (got \"%s\")", d->name,
                     d->min, d->max, value);
            return -EINVAL;
        }
        *(int64_t *)(void *)(base + d->offset) = v;
        return 0;
    }
    case CFG_ENUM: {
        int idx = cfg_choice_index(d->choices, value);
        if (idx < 0) {
            snprintf(err, errlen, "%s: must be one of %s (got \"%s\")", d->name, d->choices, value);
            return -EINVAL;
        }
        /* Every enum in struct config is an int-sized enum. */
        *(int *)(void *)(base + d->offset) = idx;
        return 0;
    }
    case CFG_FRACTION: {
        double v;
        if (cfg_parse_fraction(value, &v)) {
            snprintf(err, errlen, "%s: must be a decimal from 0 to 1 (got \"%s\")", d->name, value);
            return -EINVAL;
        }
        *(double *)(void *)(base + d->offset) = v;
        return 0;
    }
    case CFG_BOOL: {
        bool v;
        if (!strcmp(value, "true") || !strcmp(value, "1") || !strcmp(value, "yes") ||
            !strcmp(value, "on"))
            v = true;
        else if (!strcmp(value, "false") || !strcmp(value, "0") || !strcmp(value, "no") ||
                 !strcmp(value, "off"))
            v = false;
        else {
            snprintf(err, errlen, "%s: must be true or false (got \"%s\")", d->name, value);
            return -EINVAL;
        }
        *(bool *)(void *)(base + d->offset) = v;
        return 0;
    }
    }
    return -EINVAL;
}

static const char *cfg_getenv(const char *name, void *ctx)
{
    (void)ctx;
    return getenv(name);
}

int config_load(struct config *cfg, char *err, size_t errlen)
{
    return config_load_from(cfg, cfg_getenv, NULL, err, errlen);
}

int config_load_from(struct config *cfg, const char *(*get)(const char *name, void *ctx), void *ctx,
                     char *err, size_t errlen)
{
    memset(cfg, 0, sizeof(*cfg));
    for (size_t i = 0; i < CFG_COUNT; i++) {
        const struct cfg_def *d = &cfg_table[i];
        const char *v = get(d->name, ctx);
        if (cfg_set(cfg, d, d->def, err, errlen) != 0)
            goto fail; /* a broken default is a programming error, caught by the unit tests */
        if (v && *v && cfg_set(cfg, d, v, err, errlen) != 0)
            goto fail;
    }
    if (cfg->ops_port && cfg->ops_port == cfg->api_port) {
        snprintf(err, errlen, "OPS_PORT: must differ from API_PORT (both %" PRId64 ")",
                 cfg->api_port);
        goto fail;
    }
    return 0;
fail:
    config_free(cfg);
    return -EINVAL;
}

void config_free(struct config *cfg)
{
    for (size_t i = 0; i < CFG_COUNT; i++) {
        if (cfg_is_text(cfg_table[i].type)) {
            char **slot = (char **)(void *)((char *)cfg + cfg_table[i].offset);
            free(*slot);
            *slot = NULL;
        }
    }
}

void config_print_help(FILE *out, bool markdown)
{
    if (markdown)
        fprintf(out, "| variable | default | allowed | meaning |\n|---|---|---|---|\n");
    for (size_t i = 0; i < CFG_COUNT; i++) {
        const struct cfg_def *d = &cfg_table[i];
        char allowed[64];
        switch (d->type) {
        case CFG_INT:
            snprintf(allowed, sizeof(allowed), "%" PRId64 "..%" PRId64, d->min, d->max);
            break;
        case CFG_ENUM:
            snprintf(allowed, sizeof(allowed), "%s", d->choices);
            break;
        case CFG_BOOL:
            snprintf(allowed, sizeof(allowed), "true|false");
            break;
        case CFG_FRACTION:
            snprintf(allowed, sizeof(allowed), "0.0..1.0");
            break;
        case CFG_STR:
        case CFG_CONN:
            snprintf(allowed, sizeof(allowed), "text");
            break;
        case CFG_SECRET:
            if (d->min > 0)
                snprintf(allowed, sizeof(allowed), "empty, or %" PRId64 "+ characters", d->min);
            else
                snprintf(allowed, sizeof(allowed), "text");
            break;
        }
        /* A '|' would split a Markdown table cell. */
        for (char *p = allowed; markdown && *p; p++)
            if (*p == '|')
                *p = '/';
        if (markdown) {
            fprintf(out, "| `%s` | `%s` | %s | %s |\n", d->name, d->def[0] ? d->def : "(empty)",
                    allowed, d->help);
        } else {
            fprintf(out, "  %-24s %s\n  %-24s default: %s; allowed: %s\n", d->name, d->help, "",
                    d->def[0] ? d->def : "(empty)", allowed);
        }
    }
}

int config_load_all(struct config *cfg, const char *dotenv_path, struct config_origin *origin,
                    char *err, size_t errlen)
{
    bool from_env[CFG_COUNT];
    for (size_t i = 0; i < CFG_COUNT; i++) {
        const char *v = getenv(cfg_table[i].name);
        from_env[i] = v && *v;
    }
    int rc = dotenv_load(dotenv_path, err, errlen);
    if (rc && rc != -ENOENT)
        return rc;
    rc = config_load(cfg, err, errlen);
    if (rc || !origin)
        return rc;
    for (size_t i = 0; i < CFG_COUNT; i++) {
        const char *v = getenv(cfg_table[i].name);
        origin->source[i] = from_env[i] ? CONFIG_SRC_ENV
                            : v && *v   ? CONFIG_SRC_DOTENV
                                        : CONFIG_SRC_DEFAULT;
    }
    return 0;
}

/* The value of row d in cfg as it would be written in .env (caller frees); secrets masked. */
static char *cfg_value_text(const struct config *cfg, const struct cfg_def *d)
{
    const char *base = (const char *)cfg;
    char buf[64];
    switch (d->type) {
    case CFG_STR:
        return xstrdup(*(char *const *)(const void *)(base + d->offset));
    case CFG_CONN:
        return log_mask_conn(*(char *const *)(const void *)(base + d->offset));
    case CFG_SECRET:
        return xstrdup((*(char *const *)(const void *)(base + d->offset))[0] ? "****" : "");
    case CFG_INT:
        snprintf(buf, sizeof(buf), "%" PRId64, *(const int64_t *)(const void *)(base + d->offset));
        return xstrdup(buf);
    case CFG_ENUM: {
        int idx = *(const int *)(const void *)(base + d->offset);
        const char *p = d->choices;
        for (int k = 0; k < idx && strchr(p, '|'); k++)
            p = strchr(p, '|') + 1;
        return xstrndup(p, strcspn(p, "|"));
    }
    case CFG_BOOL:
        return xstrdup(*(const bool *)(const void *)(base + d->offset) ? "true" : "false");
    case CFG_FRACTION:
        snprintf(buf, sizeof(buf), "%g", *(const double *)(const void *)(base + d->offset));
        return xstrdup(buf);
    }
    return xstrdup("");
}

void config_print_effective(FILE *out, const struct config *cfg, const struct config_origin *origin)
{
    static const char *const source_name[] = {
        [CONFIG_SRC_DEFAULT] = "default",
        [CONFIG_SRC_DOTENV] = ".env",
        [CONFIG_SRC_ENV] = "environment",
    };
    for (size_t i = 0; i < CFG_COUNT; i++) {
        const struct cfg_def *d = &cfg_table[i];
        char *v = cfg_value_text(cfg, d);
        /* Quoted when .env would otherwise read it differently (blanks, '#', quotes). */
        const char *quote = "";
        if (strpbrk(v, " \t#'\""))
            quote = strchr(v, '\'') ? "\"" : "'";
        char *line = NULL;
        if (asprintf(&line, "%s=%s%s%s", d->name, quote, v, quote) < 0)
            abort();
        fprintf(out, "%-46s # %s\n", line, source_name[origin->source[i]]);
        free(line);
        free(v);
    }
}

struct http_settings config_http_settings(const struct config *cfg)
{
    return (struct http_settings){.bind = cfg->api_bind,
                                  .threads = cfg->http_threads,
                                  .max_conns = cfg->http_max_conns,
                                  .idle_timeout = cfg->http_idle_timeout,
                                  .head_timeout = cfg->http_head_timeout,
                                  .body_timeout = cfg->http_body_timeout,
                                  .max_per_addr = cfg->http_max_per_addr,
                                  .conn_memory = cfg->http_conn_memory,
                                  .max_body = cfg->http_max_body,
                                  .trusted_proxies = cfg->trusted_proxies,
                                  .ipv6_prefix = cfg->client_ipv6_prefix};
}
