/*
 * apifx: the endpoint tests' fixture (see apifx.h).
 */
#include "apifx.h"

#include "admin.h"
#include "api.h"
#include "admission.h"
#include "datapath.h"
#include "datareq.h"
#include "breaker.h"
#include "capctl.h"
#include "config.h"
#include "fakeset.h"
#include "history.h"
#include "http.h"
#include "log.h"
#include "mclock.h"
#include "report.h"
#include "ratelimit.h"
#include "request.h"
#include "tarpit.h"
#include "tierset.h"

#include "../promtext.h"

#include <curl/curl.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <cmocka.h>

/* free: the seed's; tiny: 2 requests per hour, paced: 2 per 2 s (one more each second), with
 * breakers that never open by themselves. */
static const char tiers_json[] =
    "{\"free\": {\"workers\": 2, \"db_max\": 1, \"breaker_min_calls\": 1000},"
    " \"tiny\": {\"workers\": 1, \"db_max\": 1, \"rate_limit\": 2, \"rate_window_s\": 3600,"
    "            \"breaker_min_calls\": 1000},"
    " \"paced\": {\"workers\": 2, \"db_max\": 1, \"rate_limit\": 2, \"rate_window_s\": 2,"
    "             \"breaker_min_calls\": 1000}}";

struct apifx_server apifx_srv;

/* ---- the server under test ------------------------------------------------------------- */

static void hook_begin(void *ctx)
{
    (void)ctx;
    atomic_fetch_add(&apifx_srv.in_flight, 1);
}

static void hook_done(void *ctx, const struct request *r, int64_t total_us)
{
    (void)ctx;
    const struct datareq *q = datareq_of(r);
    struct tier_rt *tier = q ? q->tier : NULL;
    metrics_observe(tier ? &tier->m : &apifx_srv.untiered, r->outcome, (int)r->status, total_us,
                    r->queue_us, r->query_us);
    if (q && q->cap_entered_us) /* as the server does */
        capctl_leave(apifx_srv.capacity, tier->index, q->cap_entered_us, mclock_now_us());
}

static void hook_freed(void *ctx)
{
    (void)ctx;
    atomic_fetch_sub(&apifx_srv.in_flight, 1);
}

static bool dispatch(void *ctx, struct request *r)
{
    return api_dispatch(ctx, r);
}

static const char *cfg_get(const char *name, void *ctx)
{
    (void)ctx;
    if (!strcmp(name, "API_BIND"))
        return "127.0.0.1";
    if (!strcmp(name, "HTTP_THREADS"))
        return "2";
    return NULL;
}

int apifx_setup(void **state)
{
    (void)state;
    char err[200];
    log_setup(LOG_FORMAT_JSON, LOG_LEVEL_ERROR, false, open("/dev/null", O_WRONLY));
    if (config_load_from(&apifx_srv.cfg, cfg_get, NULL, err, sizeof(err)))
        return -1;
    apifx_srv.cfg.api_port = 0; /* any free port */
    struct workpool_ops ops = datapath_ops_template;
    ops.ctx = &apifx_srv.deps.data;
    apifx_srv.ts = fakeset_create(tiers_json, &ops);
    apifx_srv.history = history_create(apifx_srv.ts);
    apifx_srv.hooks = (struct request_hooks){
        .instance_id = "test", .begin = hook_begin, .done = hook_done, .freed = hook_freed};
    apifx_srv.sources = (struct report_sources){.tiers = apifx_srv.ts,
                                                .untiered = &apifx_srv.untiered,
                                                .in_flight = &apifx_srv.in_flight,
                                                .draining = &apifx_srv.draining,
                                                .instance_id = "test"};
    /* The admin worker's database is where nothing listens: tenant requests that pass every
     * check reach it and are answered 503 database_unavailable. */
    const struct admin_cfg ac = {.token = "secret",
                                 .conninfo = "host=127.0.0.1 port=1 connect_timeout=2",
                                 .tiers = apifx_srv.ts};
    if (admin_create(&ac, &apifx_srv.admin))
        return -1;
    /* The capacity controller counts what is in progress (it never gates here: nothing ticks
     * it); the tarpit holds refusals up to a minute, longer than any test runs. */
    const struct capctl_cfg cc = {.enabled = true,
                                  .active_us = 1000000,
                                  .level_us = 60000000,
                                  .recovery_us = 1000000,
                                  .min_samples = 8,
                                  .decrease = 0.5};
    if (capctl_create(&cc, tierset_count(apifx_srv.ts), &apifx_srv.capacity))
        return -1;
    for (size_t i = 0; i < tierset_count(apifx_srv.ts); i++) {
        struct capctl_tier_cfg tc = {
            .priority = (int64_t)i, .max = 2, .floor = 0.1, .tolerance = 1.0};
        capctl_configure(apifx_srv.capacity, i, &tc);
    }
    const struct tarpit_cfg tc = {.max_clients = 1000,
                                  .max_held = 16,
                                  .max_hold_us = 60000000,
                                  .release = admission_release_held};
    if (tarpit_create(&tc, &apifx_srv.tarpit))
        return -1;
    apifx_srv.deps = (struct api_deps){.tiers = apifx_srv.ts,
                                       .metrics = &apifx_srv.sources,
                                       .history = apifx_srv.history,
                                       .admin = apifx_srv.admin,
                                       .capacity = apifx_srv.capacity,
                                       .tarpit = apifx_srv.tarpit,
                                       .test_params = true,
                                       .ipv6_prefix = 64};
    struct http_opts ho = {.set = config_http_settings(&apifx_srv.cfg),
                           .hooks = &apifx_srv.hooks,
                           .draining = &apifx_srv.draining,
                           .dispatch = dispatch,
                           .ctx = &apifx_srv.deps};
    if (http_start(&ho, &apifx_srv.http))
        return -1;
    snprintf(apifx_srv.base, sizeof(apifx_srv.base), "http://127.0.0.1:%u",
             http_port(apifx_srv.http));
    curl_global_init(CURL_GLOBAL_DEFAULT);
    return 0;
}

int apifx_teardown(void **state)
{
    (void)state;
    admin_stop(apifx_srv.admin);
    tarpit_stop(apifx_srv.tarpit); /* held requests are answered before the HTTP threads go */
    http_stop(apifx_srv.http);
    tarpit_destroy(apifx_srv.tarpit);
    capctl_destroy(apifx_srv.capacity);
    admin_destroy(apifx_srv.admin);
    fakeset_destroy(apifx_srv.ts);
    history_destroy(apifx_srv.history);
    config_free(&apifx_srv.cfg);
    curl_global_cleanup();
    return 0;
}

/* Append what curl hands over to buf[*len..cap), cut (never overrun) at cap. */
static size_t append(char *buf, size_t cap, size_t *len, const char *p, size_t n)
{
    size_t room = cap - 1 - *len, take = n < room ? n : room;
    memcpy(buf + *len, p, take);
    *len += take;
    buf[*len] = '\0';
    return n;
}

static size_t on_body(char *p, size_t size, size_t n, void *ud)
{
    struct apifx_reply *r = ud;
    return append(r->body, sizeof(r->body), &r->len, p, size * n);
}

static size_t on_header(char *p, size_t size, size_t n, void *ud)
{
    struct apifx_reply *r = ud;
    return append(r->headers, sizeof(r->headers), &r->hlen, p, size * n);
}

/* method path with up to two headers (or NULL) and a body (or NULL); the reply in *r. */
void apifx_fetch_body(const char *method, const char *path, const char *h1, const char *h2,
                      const char *body, struct apifx_reply *r)
{
    memset(r, 0, sizeof(*r));
    char url[256];
    snprintf(url, sizeof(url), "%s%s", apifx_srv.base, path);
    CURL *c = curl_easy_init();
    struct curl_slist *hs = NULL;
    if (h1)
        hs = curl_slist_append(hs, h1);
    if (h2)
        hs = curl_slist_append(hs, h2);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    if (body)
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hs);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, r);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 30L);
    if (curl_easy_perform(c) == CURLE_OK)
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r->status);
    curl_slist_free_all(hs);
    curl_easy_cleanup(c);
}

/* The same with no body (an empty one for POST). */
void apifx_fetch(const char *method, const char *path, const char *h1, const char *h2,
                 struct apifx_reply *r)
{
    apifx_fetch_body(method, path, h1, h2, !strcmp(method, "POST") ? "" : NULL, r);
}

/* A header's value (case-insensitive name) as an integer, or -1. */
long apifx_header_int(const struct apifx_reply *r, const char *name)
{
    size_t n = strlen(name);
    for (const char *p = r->headers; *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : "") {
        if (!strncasecmp(p, name, n) && p[n] == ':')
            return strtol(p + n + 1, NULL, 10);
    }
    return -1;
}

const char *apifx_error_code(const struct apifx_reply *r, char *buf, size_t len)
{
    json_t *j = json_loads(r->body, 0, NULL);
    const char *code = json_string_value(json_object_get(j, "error"));
    snprintf(buf, len, "%s", code ? code : "");
    json_decref(j);
    return buf;
}
