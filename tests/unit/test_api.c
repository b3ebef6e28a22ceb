/*
 * test_api: the endpoints (api.h) in process, over real HTTP (the http module and libcurl), on
 * a fake tier set with no database: its pools point where nothing listens, so a request that
 * reaches a worker fails to connect at once.
 *
 * Covered: the invalid_tier reply lists the set's tiers; unknown paths are 404; the rate limit
 * answers 429 with Retry-After and RateLimit-* headers; a request refused before its turn is
 * held by the tarpit and admitted again when its turn comes, in arrival order, holding no
 * capacity slot while held (capctl's in_progress); an open breaker answers circuit_open
 * with the time until a trial; a worker that cannot connect answers database_unavailable and
 * the breaker counts it; /metrics/bulkheads and /metrics render the set; admin needs the token
 * and knows the tiers, and checks tenant requests before the database; and replies stay right while
 * the main thread publishes new settings (under ThreadSanitizer: reload and the HTTP threads do not
 * race).
 */
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

static struct {
    struct config cfg;
    struct tierset *ts;
    struct history *history;
    struct metrics_tier untiered;
    atomic_int in_flight;
    atomic_bool draining;
    struct request_hooks hooks;
    struct report_sources sources;
    struct api_deps deps;
    struct admin *admin;
    struct capctl *capacity;
    struct tarpit *tarpit;
    struct http *http;
    char base[64];
} t;

/* ---- the server under test ------------------------------------------------------------- */

static void hook_begin(void *ctx)
{
    (void)ctx;
    atomic_fetch_add(&t.in_flight, 1);
}

static void hook_done(void *ctx, const struct request *r, int64_t total_us)
{
    (void)ctx;
    const struct datareq *q = datareq_of(r);
    struct tier_rt *tier = q ? q->tier : NULL;
    metrics_observe(tier ? &tier->m : &t.untiered, r->outcome, (int)r->status, total_us,
                    r->queue_us, r->query_us);
    if (q && q->cap_entered_us) /* as the server does */
        capctl_leave(t.capacity, tier->index, q->cap_entered_us, mclock_now_us());
}

static void hook_freed(void *ctx)
{
    (void)ctx;
    atomic_fetch_sub(&t.in_flight, 1);
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

static int setup(void **state)
{
    (void)state;
    char err[200];
    log_setup(LOG_FORMAT_JSON, LOG_LEVEL_ERROR, false, open("/dev/null", O_WRONLY));
    if (config_load_from(&t.cfg, cfg_get, NULL, err, sizeof(err)))
        return -1;
    t.cfg.api_port = 0; /* any free port */
    struct workpool_ops ops = datapath_ops_template;
    ops.ctx = &t.deps.data;
    t.ts = fakeset_create(tiers_json, &ops);
    t.history = history_create(t.ts);
    t.hooks = (struct request_hooks){
        .instance_id = "test", .begin = hook_begin, .done = hook_done, .freed = hook_freed};
    t.sources = (struct report_sources){.tiers = t.ts,
                                        .untiered = &t.untiered,
                                        .in_flight = &t.in_flight,
                                        .draining = &t.draining,
                                        .instance_id = "test"};
    /* The admin worker's database is where nothing listens: tenant requests that pass every
     * check reach it and are answered 503 database_unavailable. */
    const struct admin_cfg ac = {
        .token = "secret", .conninfo = "host=127.0.0.1 port=1 connect_timeout=2", .tiers = t.ts};
    if (admin_create(&ac, &t.admin))
        return -1;
    /* The capacity controller counts what is in progress (it never gates here: nothing ticks
     * it); the tarpit holds refusals up to a minute, longer than any test runs. */
    const struct capctl_cfg cc = {.enabled = true,
                                  .active_us = 1000000,
                                  .level_us = 60000000,
                                  .recovery_us = 1000000,
                                  .min_samples = 8,
                                  .decrease = 0.5};
    if (capctl_create(&cc, tierset_count(t.ts), &t.capacity))
        return -1;
    for (size_t i = 0; i < tierset_count(t.ts); i++) {
        struct capctl_tier_cfg tc = {
            .priority = (int64_t)i, .max = 2, .floor = 0.1, .tolerance = 1.0};
        capctl_configure(t.capacity, i, &tc);
    }
    const struct tarpit_cfg tc = {.max_clients = 1000,
                                  .max_held = 16,
                                  .max_hold_us = 60000000,
                                  .release = admission_release_held};
    if (tarpit_create(&tc, &t.tarpit))
        return -1;
    t.deps = (struct api_deps){.tiers = t.ts,
                               .metrics = &t.sources,
                               .history = t.history,
                               .admin = t.admin,
                               .capacity = t.capacity,
                               .tarpit = t.tarpit,
                               .test_params = true,
                               .ipv6_prefix = 64};
    struct http_opts ho = {.set = config_http_settings(&t.cfg),
                           .hooks = &t.hooks,
                           .draining = &t.draining,
                           .dispatch = dispatch,
                           .ctx = &t.deps};
    if (http_start(&ho, &t.http))
        return -1;
    snprintf(t.base, sizeof(t.base), "http://127.0.0.1:%u", http_port(t.http));
    curl_global_init(CURL_GLOBAL_DEFAULT);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    admin_stop(t.admin);
    tarpit_stop(t.tarpit); /* held requests are answered before the HTTP threads go */
    http_stop(t.http);
    tarpit_destroy(t.tarpit);
    capctl_destroy(t.capacity);
    admin_destroy(t.admin);
    fakeset_destroy(t.ts);
    history_destroy(t.history);
    config_free(&t.cfg);
    curl_global_cleanup();
    return 0;
}

/* ---- a client ----------------------------------------------------------------------------- */

struct reply {
    long status;
    char body[1 << 17];
    size_t len;
    char headers[4096];
    size_t hlen;
};

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
    struct reply *r = ud;
    return append(r->body, sizeof(r->body), &r->len, p, size * n);
}

static size_t on_header(char *p, size_t size, size_t n, void *ud)
{
    struct reply *r = ud;
    return append(r->headers, sizeof(r->headers), &r->hlen, p, size * n);
}

/* method path with up to two headers (or NULL) and a body (or NULL); the reply in *r. */
static void fetch_body(const char *method, const char *path, const char *h1, const char *h2,
                       const char *body, struct reply *r)
{
    memset(r, 0, sizeof(*r));
    char url[256];
    snprintf(url, sizeof(url), "%s%s", t.base, path);
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
static void fetch(const char *method, const char *path, const char *h1, const char *h2,
                  struct reply *r)
{
    fetch_body(method, path, h1, h2, !strcmp(method, "POST") ? "" : NULL, r);
}

/* A header's value (case-insensitive name) as an integer, or -1. */
static long header_int(const struct reply *r, const char *name)
{
    size_t n = strlen(name);
    for (const char *p = r->headers; *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : "") {
        if (!strncasecmp(p, name, n) && p[n] == ':')
            return strtol(p + n + 1, NULL, 10);
    }
    return -1;
}

static const char *error_code(const struct reply *r, char *buf, size_t len)
{
    json_t *j = json_loads(r->body, 0, NULL);
    const char *code = json_string_value(json_object_get(j, "error"));
    snprintf(buf, len, "%s", code ? code : "");
    json_decref(j);
    return buf;
}

/* ---- tests -------------------------------------------------------------------------------- */

static void a_missing_tier_is_refused_with_the_valid_tiers(void **state)
{
    (void)state;
    struct reply r;
    fetch("GET", "/api/data", NULL, NULL, &r);
    assert_int_equal(r.status, 400);
    json_t *j = json_loads(r.body, 0, NULL);
    assert_string_equal(json_string_value(json_object_get(j, "error")), "invalid_tier");
    assert_string_equal(json_string_value(json_object_get(j, "message")),
                        "missing X-Tenant-Tier header; valid tiers: free, tiny, paced");
    json_t *valid = json_object_get(j, "valid_tiers");
    assert_int_equal(json_array_size(valid), 3);
    assert_string_equal(json_string_value(json_array_get(valid, 1)), "tiny");
    assert_non_null(json_string_value(json_object_get(j, "request_id")));
    json_decref(j);
}

static void an_unknown_path_is_not_found(void **state)
{
    (void)state;
    struct reply r;
    char code[64];
    fetch("GET", "/nope", NULL, NULL, &r);
    assert_int_equal(r.status, 404);
    assert_string_equal(error_code(&r, code, sizeof(code)), "not_found");
    fetch("DELETE", "/health", NULL, NULL, &r);
    assert_int_equal(r.status, 405);
    assert_string_equal(error_code(&r, code, sizeof(code)), "method_not_allowed");
}

static void the_rate_limit_answers_429_with_retry_after(void **state)
{
    (void)state;
    struct reply r;
    char code[64];
    for (int i = 0; i < 2; i++) {
        fetch("GET", "/api/data", "X-Tenant-Tier: tiny", "X-Tenant-Id: rl", &r);
        assert_int_equal(r.status, 503); /* admitted; no database behind it */
    }
    fetch("GET", "/api/data", "X-Tenant-Tier: tiny", "X-Tenant-Id: rl", &r);
    assert_int_equal(r.status, 429);
    assert_string_equal(error_code(&r, code, sizeof(code)), "rate_limited");
    assert_true(header_int(&r, "Retry-After") >= 1);
    assert_int_equal(header_int(&r, "RateLimit-Limit"), 2);
    assert_int_equal(header_int(&r, "RateLimit-Remaining"), 0);
    char want[96];
    snprintf(want, sizeof(want), "RateLimit: \"tiny\";r=0;t=%ld\r\n",
             header_int(&r, "Retry-After"));
    assert_non_null(strstr(r.headers, want));
    assert_non_null(strstr(r.headers, "RateLimit-Policy: \"tiny\";q=2;w="));
}

/* ---- the tarpit and the capacity gate ---------------------------------------------------- */

struct bg_fetch {
    const char *tier, *tenant;
    struct reply r;
    pthread_t th;
};

static void *bg_fetch_main(void *arg)
{
    struct bg_fetch *b = arg;
    char th[64], tn[64];
    snprintf(th, sizeof(th), "X-Tenant-Tier: %s", b->tier);
    snprintf(tn, sizeof(tn), "X-Tenant-Id: %s", b->tenant);
    fetch("GET", "/api/data", th, tn, &b->r);
    return NULL;
}

static size_t holding(void)
{
    struct tarpit_stats st;
    tarpit_stats(t.tarpit, &st);
    return st.holding;
}

static uint64_t held(void)
{
    struct tarpit_stats st;
    tarpit_stats(t.tarpit, &st);
    return st.held;
}

static void wait_holding(size_t n)
{
    for (int i = 0; i < 30000 && holding() != n; i++)
        usleep(1000);
    assert_int_equal(holding(), n);
}

static struct ratelimit_stats limiter(const char *tier)
{
    struct ratelimit_stats st;
    ratelimit_stats(tierset_find(t.ts, tier)->rl, &st);
    return st;
}

static void a_request_early_for_its_turn_is_held_and_admitted_then(void **state)
{
    (void)state;
    /* paced: 2 per 2 s, one more each second. The tenant's burst, each request admitted (and
     * failing to connect: there is no database). */
    struct reply r;
    char code[64];
    for (int i = 0; i < 2; i++) {
        fetch("GET", "/api/data", "X-Tenant-Tier: paced", "X-Tenant-Id: turns", &r);
        assert_int_equal(r.status, 503);
    }
    struct ratelimit_stats before = limiter("paced");
    uint64_t held0 = held();
    /* Three more at once: each refused by the limiter is held until its turn, one second after
     * the one before, and admitted then. None is answered 429. */
    struct bg_fetch b[3];
    for (int i = 0; i < 3; i++) {
        b[i] = (struct bg_fetch){.tier = "paced", .tenant = "turns"};
        assert_int_equal(pthread_create(&b[i].th, NULL, bg_fetch_main, &b[i]), 0);
    }
    for (int i = 0; i < 3; i++) {
        pthread_join(b[i].th, NULL);
        assert_int_equal(b[i].r.status, 503);
        assert_string_equal(error_code(&b[i].r, code, sizeof(code)), "database_unavailable");
        assert_int_equal(header_int(&b[i].r, "RateLimit-Limit"), 2);
    }
    /* Each was admitted exactly once; every refusal was held, and admitted when its turn came
     * (the turns themselves, to the microsecond: test_tarpit). */
    struct ratelimit_stats after = limiter("paced");
    assert_int_equal(after.allowed, before.allowed + 3);
    assert_true(held() > held0);
    assert_int_equal(held() - held0, after.rejected - before.rejected);
}

static void a_held_refusal_keeps_no_capacity_slot(void **state)
{
    (void)state;
    /* tiny: 2 per hour. Spent, then refused at once (its turn is half an hour away)... */
    struct reply r;
    for (int i = 0; i < 2; i++) {
        fetch("GET", "/api/data", "X-Tenant-Tier: tiny", "X-Tenant-Id: hog", &r);
        assert_int_equal(r.status, 503);
    }
    fetch("GET", "/api/data", "X-Tenant-Tier: tiny", "X-Tenant-Id: hog", &r);
    assert_int_equal(r.status, 429);
    /* ...and back at once: held, for up to a minute. It passed the capacity gate before the
     * limiter refused it, and left it at the refusal: tiny has nothing in progress. */
    size_t tiny = tierset_find(t.ts, "tiny")->index;
    struct bg_fetch b = {.tier = "tiny", .tenant = "hog"};
    assert_int_equal(pthread_create(&b.th, NULL, bg_fetch_main, &b), 0);
    wait_holding(1);
    uint64_t held1 = held();
    struct capctl_tier_stats cs;
    capctl_stats(t.capacity, tiny, &cs);
    assert_int_equal(holding(), 1); /* still held when the gate was read */
    assert_int_equal(held(), held1);
    assert_int_equal(cs.in_progress, 0);
    /* Stopping the tarpit admits the held request again: refused, answered at once. The
     * tarpit takes no more holds from here on (the tests after this one need none). */
    tarpit_stop(t.tarpit);
    pthread_join(b.th, NULL);
    char code[64];
    assert_int_equal(b.r.status, 429);
    assert_string_equal(error_code(&b.r, code, sizeof(code)), "rate_limited");
    assert_true(header_int(&b.r, "Retry-After") > 1000); /* its turn, half an hour away */
    capctl_stats(t.capacity, tiny, &cs);
    assert_int_equal(cs.in_progress, 0);
}

static void an_open_breaker_answers_circuit_open(void **state)
{
    (void)state;
    struct breaker *b = tierset_find(t.ts, "free")->breaker;
    breaker_force(b, BREAKER_FORCED_OPEN, false, 0);
    struct reply r;
    char code[64];
    fetch("GET", "/api/data", "X-Tenant-Tier: free", NULL, &r);
    assert_int_equal(r.status, 503);
    assert_string_equal(error_code(&r, code, sizeof(code)), "circuit_open");
    assert_int_equal(header_int(&r, "Retry-After"), 10); /* free's breaker_reset_ms */
    breaker_force(b, BREAKER_AUTO, true, 0);
}

static void a_worker_that_cannot_connect_answers_database_unavailable(void **state)
{
    (void)state;
    struct breaker_snapshot before, after;
    struct breaker *b = tierset_find(t.ts, "free")->breaker;
    breaker_snapshot(b, 0, &before);
    struct reply r;
    char code[64];
    fetch("GET", "/api/data", "X-Tenant-Tier: free", "X-Tenant-Id: w", &r);
    assert_int_equal(r.status, 503);
    assert_string_equal(error_code(&r, code, sizeof(code)), "database_unavailable");
    assert_int_equal(header_int(&r, "Retry-After"), 1);
    breaker_snapshot(b, 0, &after);
    assert_int_equal(after.failures, before.failures + 1); /* recorded before the reply */
}

static void metrics_render_the_fake_set(void **state)
{
    (void)state;
    struct reply r;
    fetch("GET", "/metrics/bulkheads", NULL, NULL, &r);
    assert_int_equal(r.status, 200);
    json_t *j = json_loads(r.body, 0, NULL);
    assert_int_equal(json_object_size(j), 3);
    assert_int_equal(json_integer_value(json_object_get(
                         json_object_get(json_object_get(j, "tiny"), "threadPool"), "poolSize")),
                     1);
    json_decref(j);
    fetch("GET", "/metrics", NULL, NULL, &r);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.headers, "version=0.0.4"));
    struct prom_doc d;
    char err[300] = "";
    assert_int_equal(prom_parse(r.body, &d, err, sizeof(err)), 0);
    assert_true(prom_value(&d, "bulkhead_workers", 1, "tier", "free") == 2);
    prom_free(&d);
    fetch("GET", "/dashboard/data?since=0", NULL, NULL, &r);
    assert_int_equal(r.status, 200);
}

static void admin_needs_the_token_and_knows_the_tiers(void **state)
{
    (void)state;
    struct reply r;
    char code[64];
    fetch("POST", "/admin/breaker/free/open", NULL, NULL, &r);
    assert_int_equal(r.status, 401);
    assert_string_equal(error_code(&r, code, sizeof(code)), "unauthorized");
    assert_non_null(strcasestr(r.headers, "WWW-Authenticate: Bearer"));
    fetch("POST", "/admin/breaker/gold/open", "Authorization: Bearer secret", NULL, &r);
    assert_int_equal(r.status, 404);
    assert_string_equal(error_code(&r, code, sizeof(code)), "unknown_tier");
    fetch("POST", "/admin/breaker/free/open", "Authorization: Bearer secret", NULL, &r);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "\"OPEN\""));
    fetch("POST", "/admin/breaker/free/reset", "Authorization: Bearer secret", NULL, &r);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "\"CLOSED\""));
}

/* Tenant requests are checked on the HTTP thread: each bad one has its 4xx and never reaches
 * the worker; a good one does, and meets the database that is not there. */
static void admin_tenant_requests_are_checked_before_the_database(void **state)
{
    (void)state;
    static const struct {
        const char *method, *path, *ctype, *body;
        long status;
        const char *code;
    } cases[] = {
        {"POST", "/admin/tenants", "application/json", "{\"name\":\"a b\",\"tier\":\"free\"}", 400,
         "invalid_tenant"},
        {"POST", "/admin/tenants", "application/json", "{\"name\":\"a\",\"tier\":\"gold\"}", 400,
         "invalid_tier"},
        {"POST", "/admin/tenants", "application/json",
         "{\"name\":\"a\",\"tier\":\"free\",\"rate_limit\":-5}", 400, "invalid_argument"},
        {"POST", "/admin/tenants", "application/json", "{\"name\":\"a\"", 400, "invalid_body"},
        {"POST", "/admin/tenants", "text/plain", "{\"name\":\"a\",\"tier\":\"free\"}", 415,
         "unsupported_media_type"},
        {"PATCH", "/admin/tenants/a", "application/json", "{}", 400, "invalid_body"},
        {"PATCH", "/admin/tenants", "application/json", "{\"tier\":\"free\"}", 405,
         "method_not_allowed"},
        {"PUT", "/admin/tenants/a", NULL, NULL, 405, "method_not_allowed"},
        {"GET", "/admin/tenants/bad%20name", NULL, NULL, 400, "invalid_tenant"},
        {"GET", "/admin/tenants/a/keys", NULL, NULL, 405, "method_not_allowed"},
        {"GET", "/admin/tenants/a/other", NULL, NULL, 404, "not_found"},
        {"GET", "/admin/tenants?limit=0", NULL, NULL, 400, "invalid_argument"},
        {"GET", "/admin/audit?before=x", NULL, NULL, 400, "invalid_argument"},
        {"DELETE", "/admin/tenants/a", "application/json", "{}", 400, "invalid_body"},
        {"GET", "/admin/elsewhere", NULL, NULL, 404, "not_found"},
        {"GET", "/admin/tenants/a", NULL, NULL, 503, "database_unavailable"},
        {"POST", "/admin/tenants", "application/json", "{\"name\":\"a\",\"tier\":\"free\"}", 503,
         "database_unavailable"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct reply r;
        char ctype[64], code[64];
        snprintf(ctype, sizeof(ctype), "Content-Type: %s", cases[i].ctype ? cases[i].ctype : "x/y");
        fetch_body(cases[i].method, cases[i].path, "Authorization: Bearer secret",
                   cases[i].ctype ? ctype : NULL, cases[i].body, &r);
        if (r.status != cases[i].status ||
            strcmp(error_code(&r, code, sizeof(code)), cases[i].code))
            fail_msg("%s %s: %ld %s", cases[i].method, cases[i].path, r.status, r.body);
    }
    struct reply r;
    fetch_body("POST", "/admin/tenants", "Content-Type: application/json", NULL,
               "{\"name\":\"a\",\"tier\":\"free\"}", &r);
    assert_int_equal(r.status, 401); /* the token comes first */
}

/* The main thread publishes new settings while a client reads them through the endpoints. */
static void *client_main(void *arg)
{
    atomic_bool *stop = arg;
    long wrong = 0;
    while (!atomic_load(stop)) {
        struct reply r;
        fetch("GET", "/api/data", "X-Tenant-Tier: gold", NULL, &r);
        wrong += r.status != 400;
        fetch("GET", "/metrics/bulkheads", NULL, NULL, &r);
        wrong += r.status != 200;
    }
    return (void *)wrong;
}

static void replies_stay_right_while_settings_are_reloaded(void **state)
{
    (void)state;
    atomic_bool stop = false;
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, client_main, &stop), 0);
    struct tier_table next = *tierset_snapshot(t.ts);
    for (int g = 0; g < 300; g++) {
        next.tiers[1].rate_window_s = 3600 + g;
        tierset_publish(t.ts, &next);
        struct reply r;
        fetch("GET", "/metrics/bulkheads", NULL, NULL, &r);
        assert_int_equal(r.status, 200);
    }
    atomic_store(&stop, true);
    void *wrong;
    pthread_join(th, &wrong);
    assert_null(wrong);
    assert_int_equal(tierset_cfg(tierset_find(t.ts, "tiny"))->rate_window_s, 3600 + 299);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(a_missing_tier_is_refused_with_the_valid_tiers),
        cmocka_unit_test(an_unknown_path_is_not_found),
        cmocka_unit_test(the_rate_limit_answers_429_with_retry_after),
        cmocka_unit_test(a_request_early_for_its_turn_is_held_and_admitted_then),
        cmocka_unit_test(a_held_refusal_keeps_no_capacity_slot),
        cmocka_unit_test(an_open_breaker_answers_circuit_open),
        cmocka_unit_test(a_worker_that_cannot_connect_answers_database_unavailable),
        cmocka_unit_test(metrics_render_the_fake_set),
        cmocka_unit_test(admin_needs_the_token_and_knows_the_tiers),
        cmocka_unit_test(admin_tenant_requests_are_checked_before_the_database),
        cmocka_unit_test(replies_stay_right_while_settings_are_reloaded),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
