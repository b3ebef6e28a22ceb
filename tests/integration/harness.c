/*
 * harness: PostgreSQL clusters, suites, HTTP and bounded waits for the integration tests (see
 * harness.h; the server processes are hserver.c's).
 */
#include "harness.h"
#include "../promtext.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

/* BH_TEST_FILTER="<glob>": run only the tests of this binary whose name matches (cmocka's
 * filter), e.g. to repeat one test under a sanitizer. */
__attribute__((constructor)) static void h_test_filter(void)
{
    const char *f = getenv("BH_TEST_FILTER");
    if (f && *f)
        cmocka_set_test_filter(f);
}

int64_t h_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void h_nap_ms(int ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

bool h_wait_until(bool (*cond)(void *ctx), void *ctx, int timeout_ms)
{
    int64_t end = h_now_ms() + timeout_ms;
    for (;;) {
        if (cond(ctx))
            return true;
        if (h_now_ms() >= end)
            return false;
        h_nap_ms(10);
    }
}

int h_free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(sa);
    if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) ||
        getsockname(fd, (struct sockaddr *)&sa, &len)) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    close(fd);
    return ntohs(sa.sin_port);
}

static int h_cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

double h_median(double *v, int n)
{
    if (n <= 0)
        return 0;
    qsort(v, (size_t)n, sizeof(*v), h_cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

const char *h_root(void)
{
    const char *r = getenv("BH_ROOT");
    return r ? r : ".";
}

const char *h_work(void)
{
    const char *w = getenv("BH_TEST_WORK");
    return w ? w : "/tmp";
}

int h_run(const char *cmd, char **out)
{
    size_t flen = strlen(cmd) + 16;
    char *full = malloc(flen);
    snprintf(full, flen, "(%s) 2>&1", cmd);
    FILE *p = popen(full, "r");
    free(full);
    if (!p) {
        if (out)
            *out = strdup("");
        return -1;
    }
    size_t len = 0, cap = 8192;
    char *buf = malloc(cap);
    size_t n;
    while ((n = fread(buf + len, 1, cap - len - 1, p)) > 0) {
        len += n;
        if (cap - len < 4096)
            buf = realloc(buf, cap *= 2);
    }
    buf[len] = '\0';
    int st = pclose(p);
    if (out)
        *out = buf;
    else
        free(buf);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

void h_diag(const char *text)
{
    for (const char *p = text; *p;) {
        size_t n = strcspn(p, "\n");
        printf("# %.*s\n", (int)n, p);
        p += n + (p[n] == '\n');
    }
}

static int h_system(const char *cmd)
{
    int rc = system(cmd);
    return rc == 0 ? 0 : -1;
}

/* ---- PostgreSQL ------------------------------------------------------------------------ */

int h_pg_start(struct h_pg *pg)
{
    const char *tmpl = getenv("BH_TEST_PG_TEMPLATE");
    const char *work = getenv("BH_TEST_WORK");
    if (!tmpl || !work) {
        fprintf(stderr,
                "harness: BH_TEST_PG_TEMPLATE/BH_TEST_WORK not set (run scripts/test.sh)\n");
        return -1;
    }
    pg->port = h_free_port();
    snprintf(pg->dir, sizeof(pg->dir), "%s/pg-%d-%d", work, (int)getpid(), pg->port);
    char cmd[1024];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s' && mkdir -p '%s' && cp -a '%s' '%s/data'", pg->dir,
             pg->dir, tmpl, pg->dir);
    if (h_system(cmd))
        return -1;
    return h_pg_resume(pg);
}

int h_pg_resume(struct h_pg *pg)
{
    char cmd[1024];
    snprintf(cmd, sizeof(cmd), "%s/scripts/pg.sh start '%s' %d >/dev/null", h_root(), pg->dir,
             pg->port);
    if (h_system(cmd))
        return -1;
    snprintf(pg->url, sizeof(pg->url), "postgresql://postgres@127.0.0.1:%d/bulkhead", pg->port);
    return 0;
}

int h_pg_stop(struct h_pg *pg)
{
    char cmd[1024];
    snprintf(cmd, sizeof(cmd), "%s/scripts/pg.sh stop '%s'", h_root(), pg->dir);
    return h_system(cmd);
}

void h_pg_destroy(struct h_pg *pg)
{
    if (!pg->dir[0])
        return;
    h_pg_stop(pg);
    char cmd[600];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", pg->dir);
    h_system(cmd);
    pg->dir[0] = '\0';
}

int h_db_create(const char *name, char *url, size_t urllen)
{
    const char *port = getenv("BH_TEST_PG_PORT");
    if (!port) {
        fprintf(stderr, "harness: BH_TEST_PG_PORT not set (run scripts/test.sh)\n");
        return -1;
    }
    /* Test binaries of several passes run at once in one cluster: each pass has its prefix. */
    const char *prefix = getenv("BH_TEST_DB_PREFIX");
    /* A copy of "bulkhead" nobody connects to: CREATE DATABASE refuses a template in use. */
    const char *tmpl = getenv("BH_TEST_DB_TEMPLATE");
    char db[128], admin[200], sql[300];
    snprintf(db, sizeof(db), "%s%s", prefix ? prefix : "", name);
    snprintf(admin, sizeof(admin), "postgresql://postgres@127.0.0.1:%s/postgres", port);
    snprintf(sql, sizeof(sql), "DROP DATABASE IF EXISTS \"%s\" WITH (FORCE)", db);
    if (h_sql_exec(admin, sql))
        return -1;
    snprintf(sql, sizeof(sql), "CREATE DATABASE \"%s\" TEMPLATE \"%s\"", db,
             tmpl ? tmpl : "bulkhead");
    if (h_sql_exec(admin, sql))
        return -1;
    snprintf(url, urllen, "postgresql://postgres@127.0.0.1:%s/%s", port, db);
    return 0;
}

int64_t h_sql_int(const char *url, const char *sql)
{
    PGconn *pg = PQconnectdb(url);
    int64_t v = INT64_MIN;
    if (PQstatus(pg) == CONNECTION_OK) {
        PGresult *res = PQexec(pg, sql);
        if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) > 0 && !PQgetisnull(res, 0, 0))
            v = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
        else if (PQresultStatus(res) != PGRES_TUPLES_OK)
            fprintf(stderr, "harness: %s: %s", sql, PQresultErrorMessage(res));
        PQclear(res);
    } else {
        fprintf(stderr, "harness: connect %s: %s", url, PQerrorMessage(pg));
    }
    PQfinish(pg);
    return v;
}

int h_sql_exec(const char *url, const char *sql)
{
    PGconn *pg = PQconnectdb(url);
    int rc = -1;
    if (PQstatus(pg) == CONNECTION_OK) {
        PGresult *res = PQexec(pg, sql);
        ExecStatusType st = PQresultStatus(res);
        rc = (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) ? 0 : -1;
        if (rc)
            fprintf(stderr, "harness: %s: %s", sql, PQresultErrorMessage(res));
        PQclear(res);
    } else {
        fprintf(stderr, "harness: connect %s: %s", url, PQerrorMessage(pg));
    }
    PQfinish(pg);
    return rc;
}

/* ---- the server ------------------------------------------------------------------------ */

const char *h_bin(void)
{
    static char path[600];
    const char *bin = getenv("BULKHEAD_BIN");
    if (!bin)
        bin = "build/bulkhead";
    if (bin[0] != '/')
        snprintf(path, sizeof(path), "%s/%s", h_root(), bin);
    else
        snprintf(path, sizeof(path), "%s", bin);
    return path;
}

int h_tiers_env(const char *name, const char *json, char *env, size_t envlen)
{
    char path[300];
    snprintf(path, sizeof(path), "%s/%s", getenv("BH_TEST_WORK"), name);
    FILE *f = fopen(path, "w");
    if (!f)
        return -1;
    int bad = fputs(json, f) < 0;
    bad |= fclose(f) != 0;
    int n = snprintf(env, envlen, "TIERS_FILE=%s", path);
    return bad || n < 0 || (size_t)n >= envlen ? -1 : 0;
}

int h_suite_start(struct h_suite *s)
{
    if (h_db_create(s->name, s->db_url, sizeof(s->db_url)))
        return -1;
    if (s->prepare && s->prepare(s->db_url))
        return -1;
    char tiers_env[400];
    const char *env[sizeof(s->env) / sizeof(s->env[0]) + 2];
    size_t n = 0;
    if (s->tiers_json) {
        char name[200];
        snprintf(name, sizeof(name), "tiers-%s.json", s->name);
        if (h_tiers_env(name, s->tiers_json, tiers_env, sizeof(tiers_env)))
            return -1;
        snprintf(s->tiers_path, sizeof(s->tiers_path), "%s", tiers_env + strlen("TIERS_FILE="));
        env[n++] = tiers_env;
    }
    for (size_t i = 0; i < sizeof(s->env) / sizeof(s->env[0]) && s->env[i]; i++)
        env[n++] = s->env[i];
    env[n] = NULL;
    return h_server_start(&s->srv, s->db_url, env);
}

void h_suite_stop(struct h_suite *s)
{
    if (s->srv.pid > 0)
        h_server_stop(&s->srv, SIGTERM, 30000);
}

double h_prom(const char *base, const char *name, const char *label)
{
    char u[400];
    snprintf(u, sizeof(u), "%s/metrics", base);
    struct h_resp r;
    double v = NAN;
    if (h_get(u, NULL, &r) == 0 && r.status == 200 && r.body) {
        struct prom_doc d;
        char err[200];
        if (prom_parse(r.body, &d, err, sizeof(err)) == 0) {
            for (size_t i = 0; i < d.ns; i++) {
                const struct prom_sample *s = &d.s[i];
                if (strcmp(s->name, name))
                    continue;
                char lab[PROM_NAME_MAX + PROM_VALUE_MAX + 4] = "";
                if (s->nlabels == 1)
                    snprintf(lab, sizeof(lab), "%s=\"%s\"", s->lname[0], s->lval[0]);
                if (label ? s->nlabels == 1 && !strcmp(lab, label) : s->nlabels == 0) {
                    v = s->value;
                    break;
                }
            }
            prom_free(&d);
        }
    }
    h_resp_free(&r);
    return v;
}

int64_t h_metric(const char *base, const char *tier, const char *section, const char *field)
{
    json_t *sec = h_metric_section(base, tier, section);
    json_t *v = json_object_get(sec, field);
    int64_t r = json_is_integer(v) ? (int64_t)json_integer_value(v) : INT64_MIN;
    json_decref(sec);
    return r;
}

const char *h_metric_text(const char *base, const char *tier, const char *section,
                          const char *field, char *buf, size_t len)
{
    json_t *sec = h_metric_section(base, tier, section);
    const char *v = json_string_value(json_object_get(sec, field));
    snprintf(buf, len, "%s", v ? v : "");
    json_decref(sec);
    return buf;
}

json_t *h_metric_section(const char *base, const char *tier, const char *section)
{
    char u[400];
    snprintf(u, sizeof(u), "%s/metrics/bulkheads", base);
    json_t *m = h_get_json(u);
    json_t *sec = json_incref(json_object_get(json_object_get(m, tier), section));
    json_decref(m);
    return sec;
}

const char *h_url(const struct h_server *s, const char *path)
{
    static _Thread_local char buf[8][512];
    static _Thread_local int i;
    i = (i + 1) % 8;
    snprintf(buf[i], sizeof(buf[i]), "%s%s", s->base, path);
    return buf[i];
}

char *h_read_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    size_t got = fread(buf, 1, (size_t)n, f);
    buf[got] = '\0';
    fclose(f);
    return buf;
}

/* ---- HTTP --------------------------------------------------------------------------------- */

struct h_buf {
    char *data;
    size_t len;
};

static size_t h_collect(char *ptr, size_t size, size_t nmemb, void *ud)
{
    struct h_buf *b = ud;
    size_t n = size * nmemb;
    b->data = realloc(b->data, b->len + n + 1);
    memcpy(b->data + b->len, ptr, n);
    b->len += n;
    b->data[b->len] = '\0';
    return n;
}

static struct curl_slist *h_headers(const char *const *headers)
{
    struct curl_slist *l = NULL;
    for (const char *const *h = headers; h && *h; h++)
        l = curl_slist_append(l, *h);
    return l;
}

int h_request(const char *method, const char *url, const char *const *headers, const char *body,
              struct h_resp *out)
{
    memset(out, 0, sizeof(*out));
    CURL *c = curl_easy_init();
    struct h_buf b = {0}, h = {0};
    struct curl_slist *hl = h_headers(headers);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    if (!strcmp(method, "HEAD"))
        curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hl);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, h_collect);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, h_collect);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, &h);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 60000L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    if (body) {
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
    }
    CURLcode rc = curl_easy_perform(c);
    if (rc == CURLE_OK)
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &out->status);
    curl_easy_getinfo(c, CURLINFO_TOTAL_TIME, &out->seconds);
    out->body = b.data ? b.data : calloc(1, 1);
    out->len = b.len;
    out->headers = h.data ? h.data : calloc(1, 1);
    curl_slist_free_all(hl);
    curl_easy_cleanup(c);
    return rc == CURLE_OK ? 0 : -1;
}

int h_get(const char *url, const char *const *headers, struct h_resp *out)
{
    return h_request("GET", url, headers, NULL, out);
}

void h_resp_free(struct h_resp *r)
{
    free(r->body);
    free(r->headers);
    r->body = r->headers = NULL;
}

const char *h_header(const struct h_resp *r, const char *name, char *buf, size_t len)
{
    size_t nl = strlen(name);
    for (const char *line = r->headers; line && *line;) {
        const char *end = strstr(line, "\r\n");
        if (!end)
            end = line + strlen(line);
        if ((size_t)(end - line) > nl && !strncasecmp(line, name, nl) && line[nl] == ':') {
            const char *v = line + nl + 1;
            while (*v == ' ')
                v++;
            size_t vl = (size_t)(end - v);
            if (vl >= len)
                vl = len - 1;
            memcpy(buf, v, vl);
            buf[vl] = '\0';
            return buf;
        }
        line = *end ? end + 2 : NULL;
    }
    return NULL;
}

json_t *h_json(const struct h_resp *r)
{
    if (!r->body)
        return NULL;
    return json_loadb(r->body, r->len, 0, NULL);
}

json_t *h_get_json(const char *url)
{
    struct h_resp r;
    if (h_get(url, NULL, &r) || r.status != 200) {
        h_resp_free(&r);
        return NULL;
    }
    json_t *j = h_json(&r);
    h_resp_free(&r);
    return j;
}

static size_t h_discard(char *ptr, size_t size, size_t nmemb, void *ud)
{
    (void)ptr;
    (void)ud;
    return size * nmemb;
}

int h_burst(const char *method, const char *url, const char *const *headers, int n, int parallel,
            long *statuses, double *latency)
{
    CURLM *m = curl_multi_init();
    curl_multi_setopt(m, CURLMOPT_MAX_TOTAL_CONNECTIONS, (long)parallel);
    curl_multi_setopt(m, CURLMOPT_MAX_HOST_CONNECTIONS, (long)parallel);
    struct curl_slist *hl = h_headers(headers);
    CURL **e = calloc((size_t)n, sizeof(*e));
    for (int i = 0; i < n; i++) {
        e[i] = curl_easy_init();
        curl_easy_setopt(e[i], CURLOPT_URL, url);
        curl_easy_setopt(e[i], CURLOPT_CUSTOMREQUEST, method);
        curl_easy_setopt(e[i], CURLOPT_HTTPHEADER, hl);
        curl_easy_setopt(e[i], CURLOPT_WRITEFUNCTION, h_discard);
        curl_easy_setopt(e[i], CURLOPT_TIMEOUT_MS, 120000L);
        curl_easy_setopt(e[i], CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(e[i], CURLOPT_PRIVATE, (void *)(intptr_t)i);
        curl_multi_add_handle(m, e[i]);
        statuses[i] = 0;
        if (latency)
            latency[i] = 0;
    }
    int running = 1, failed = 0;
    while (running) {
        curl_multi_perform(m, &running);
        int q;
        CURLMsg *msg;
        while ((msg = curl_multi_info_read(m, &q))) {
            if (msg->msg != CURLMSG_DONE)
                continue;
            void *priv = NULL;
            curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, &priv);
            int i = (int)(intptr_t)priv;
            if (msg->data.result == CURLE_OK)
                curl_easy_getinfo(msg->easy_handle, CURLINFO_RESPONSE_CODE, &statuses[i]);
            else
                failed++;
            if (latency)
                curl_easy_getinfo(msg->easy_handle, CURLINFO_TOTAL_TIME, &latency[i]);
        }
        if (running)
            curl_multi_poll(m, NULL, 0, 100, NULL);
    }
    for (int i = 0; i < n; i++) {
        curl_multi_remove_handle(m, e[i]);
        curl_easy_cleanup(e[i]);
    }
    free(e);
    curl_slist_free_all(hl);
    curl_multi_cleanup(m);
    return failed ? -1 : 0;
}

int h_count(const long *statuses, int n, long code)
{
    int c = 0;
    for (int i = 0; i < n; i++)
        c += statuses[i] == code;
    return c;
}
