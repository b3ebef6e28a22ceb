/*
 * faultkit: load and fault injection for the fault tests and the soak (see faultkit.h).
 */
#include "faultkit.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* ---- /proc --------------------------------------------------------------------------------- */

/* A "Name:   value" field of /proc/<pid>/status (kB for VmRSS), or -1. */
static long fk_proc_status(pid_t pid, const char *field)
{
    char path[64], line[256];
    snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    long v = -1;
    size_t n = strlen(field);
    while (fgets(line, sizeof(line), f)) {
        if (!strncmp(line, field, n) && line[n] == ':') {
            v = strtol(line + n + 1, NULL, 10);
            break;
        }
    }
    fclose(f);
    return v;
}

long fk_rss_kb(pid_t pid)
{
    return fk_proc_status(pid, "VmRSS");
}

long fk_threads(pid_t pid)
{
    return fk_proc_status(pid, "Threads");
}

int fk_fd_count(pid_t pid)
{
    return fk_fd_count_below(pid, INT_MAX);
}

int fk_fd_count_below(pid_t pid, int limit)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/fd", (int)pid);
    DIR *d = opendir(path);
    if (!d)
        return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        n += e->d_name[0] != '.' && atoi(e->d_name) < limit;
    closedir(d);
    return n;
}

/* The TCP socket with this inode in pid's network namespace: "127.0.0.1:port -> :port STATE"
 * into out; false when it is not a TCP socket. */
static bool fk_tcp_describe(pid_t pid, unsigned long inode, char *out, size_t len)
{
    static const char *const states[] = {"?",          "ESTABLISHED", "SYN_SENT",  "SYN_RECV",
                                         "FIN_WAIT1",  "FIN_WAIT2",   "TIME_WAIT", "CLOSE",
                                         "CLOSE_WAIT", "LAST_ACK",    "LISTEN",    "CLOSING"};
    const char *files[] = {"tcp", "tcp6"};
    for (int f = 0; f < 2; f++) {
        char path[64], line[512];
        snprintf(path, sizeof(path), "/proc/%d/net/%s", (int)pid, files[f]);
        FILE *fp = fopen(path, "r");
        if (!fp)
            continue;
        while (fgets(line, sizeof(line), fp)) {
            char local[64], remote[64];
            unsigned st;
            unsigned long ino;
            if (sscanf(line, " %*d: %63s %63s %x %*s %*s %*s %*d %*d %lu", local, remote, &st,
                       &ino) != 4 ||
                ino != inode)
                continue;
            const char *lp = strrchr(local, ':'), *rp = strrchr(remote, ':');
            snprintf(out, len, "tcp :%lu -> :%lu %s", lp ? strtoul(lp + 1, NULL, 16) : 0,
                     rp ? strtoul(rp + 1, NULL, 16) : 0, st < 12 ? states[st] : "?");
            fclose(fp);
            return true;
        }
        fclose(fp);
    }
    return false;
}

int fk_fd_count_to_port(pid_t pid, int port)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/fd", (int)pid);
    DIR *d = opendir(path);
    if (!d)
        return -1;
    char want[32];
    snprintf(want, sizeof(want), "-> :%d ", port);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        char link[400], target[256] = "", what[128];
        snprintf(link, sizeof(link), "%s/%s", path, e->d_name);
        ssize_t len = readlink(link, target, sizeof(target) - 1);
        target[len > 0 ? len : 0] = '\0';
        unsigned long ino;
        n += sscanf(target, "socket:[%lu]", &ino) == 1 &&
             fk_tcp_describe(pid, ino, what, sizeof(what)) && strstr(what, want);
    }
    closedir(d);
    return n;
}

void fk_fd_dump(pid_t pid, FILE *out)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/fd", (int)pid);
    DIR *d = opendir(path);
    if (!d)
        return;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        char link[400], target[256] = "", what[128];
        snprintf(link, sizeof(link), "%s/%s", path, e->d_name);
        ssize_t n = readlink(link, target, sizeof(target) - 1);
        target[n > 0 ? n : 0] = '\0';
        unsigned long ino;
        if (sscanf(target, "socket:[%lu]", &ino) == 1 &&
            fk_tcp_describe(pid, ino, what, sizeof(what)))
            fprintf(out, "  fd %s: %s\n", e->d_name, what);
        else
            fprintf(out, "  fd %s: %s\n", e->d_name, target);
    }
    closedir(d);
}

double fk_cpu_seconds(pid_t pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    /* Fields after the command name (which may hold spaces) start after the last ')'. */
    char *p = strrchr(buf, ')');
    if (!p)
        return -1;
    unsigned long utime = 0, stime = 0;
    if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &utime, &stime) != 2)
        return -1;
    return (double)(utime + stime) / (double)sysconf(_SC_CLK_TCK);
}

bool fk_alive(pid_t pid)
{
    char path[64], buf[512];
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return false;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *p = strrchr(buf, ')');
    return p && p[1] == ' ' && p[2] != 'Z' && p[2] != 'X';
}

/* ---- PostgreSQL faults --------------------------------------------------------------------- */

int fk_pg_ctl(const struct h_pg *pg, const char *action)
{
    char cmd[1200];
    snprintf(cmd, sizeof(cmd),
             "%s /usr/lib/postgresql/15/bin/pg_ctl -D '%s/data' -l '%s/log' -w -t 60 %s "
             ">/dev/null",
             getuid() == 0 ? "runuser -u postgres --" : "", pg->dir, pg->dir, action);
    return system(cmd) == 0 ? 0 : -1;
}

int64_t fk_kill_tier_backends(const char *url)
{
    int64_t n = h_sql_int(url, "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                               "WHERE datname = current_database() AND application_name LIKE "
                               "'bulkhead-%' AND application_name <> 'bulkhead-health'");
    return n == INT64_MIN ? -1 : n;
}

int fk_backend_pid(const char *url, const char *appname)
{
    char sql[300];
    snprintf(sql, sizeof(sql),
             "SELECT min(pid) FROM pg_stat_activity WHERE datname = current_database() AND "
             "application_name = '%s'",
             appname);
    int64_t v = h_sql_int(url, sql);
    return v == INT64_MIN ? -1 : (int)v;
}

/* ---- metrics --------------------------------------------------------------------------------- */

long fk_status(const char *base, const char *path, const char *const *headers)
{
    char u[400];
    snprintf(u, sizeof(u), "%s%s", base, path);
    struct h_resp r;
    h_get(u, headers, &r);
    long st = r.status;
    h_resp_free(&r);
    return st;
}

/* ---- clients ------------------------------------------------------------------------------- */

static const char *const fk_code_names[FK_NCODES] = {"200", "201", "429",   "4xx",      "500",
                                                     "503", "504", "other", "transport"};

/* In the order of enum fk_err. */
static const char *const fk_err_names[FK_NERR] = {
    "circuit_open", "database_unavailable", "pool_timeout", "queue_timeout", "bulkhead_full",
    "timeout",      "database_error",       "rate_limited", "shutting_down", "other"};

/* A response body, truncated to the buffer (error bodies and 201s are small). */
struct fk_body {
    char buf[8192];
    size_t len;
};

static size_t fk_write_cb(char *p, size_t size, size_t nmemb, void *ud)
{
    struct fk_body *b = ud;
    size_t n = size * nmemb;
    size_t room = sizeof(b->buf) - 1 - b->len;
    size_t take = n < room ? n : room;
    memcpy(b->buf + b->len, p, take);
    b->len += take;
    b->buf[b->len] = '\0';
    return n;
}

static void fk_note_error(struct fk_client *c, const char *body)
{
    const char *e = strstr(body, "\"error\":\"");
    size_t k = FK_NERR - 1;
    if (e) {
        e += 9;
        for (size_t i = 0; i + 1 < FK_NERR; i++) {
            size_t len = strlen(fk_err_names[i]);
            if (!strncmp(e, fk_err_names[i], len) && e[len] == '"') {
                k = i;
                break;
            }
        }
    }
    atomic_fetch_add(&c->err[k], 1);
}

static void fk_note_ok(struct fk_client *c)
{
    if (!c->ts)
        return;
    long long now = h_now_ms();
    long long prev = atomic_exchange(&c->ts->last_ok_ms, now);
    long long gap = prev ? now - prev : 0;
    long long m = atomic_load(&c->ts->max_gap_ms);
    while (gap > m && !atomic_compare_exchange_weak(&c->ts->max_gap_ms, &m, gap))
        ;
    long long mark = c->mark_ms ? atomic_load(c->mark_ms) : 0;
    long long zero = 0;
    if (mark && now >= mark)
        atomic_compare_exchange_strong(&c->ts->first_ok_ms, &zero, now);
}

static void fk_note_ack(struct fk_client *c, const char *body, int seq)
{
    const char *p = strstr(body, "\"id\":");
    if (!p)
        return;
    if (c->nacked == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 256;
        struct fk_ack *a = realloc(c->acked, cap * sizeof(*a));
        if (!a) {
            /* A lost acknowledgement would make the durability checks pass vacuously. */
            fprintf(stderr, "faultkit: out of memory for acknowledged writes\n");
            abort();
        }
        c->acked = a;
        c->cap = cap;
    }
    c->acked[c->nacked++] =
        (struct fk_ack){.id = strtoll(p + 5, NULL, 10), .client = c->id, .seq = seq};
}

/* Client sockets are close-on-exec: a PostgreSQL restarted by the test (pg_ctl forks from it)
 * must not inherit them and keep them open after the client closed them. */
static curl_socket_t fk_open_socket(void *ctx, curlsocktype purpose, struct curl_sockaddr *a)
{
    (void)ctx;
    (void)purpose;
    return socket(a->family, a->socktype | SOCK_CLOEXEC, a->protocol);
}

static enum fk_code fk_code_of(long status)
{
    switch (status) {
    case 0:
        return FK_TRANSPORT;
    case 200:
        return FK_200;
    case 201:
        return FK_201;
    case 429:
        return FK_429;
    case 500:
        return FK_500;
    case 503:
        return FK_503;
    case 504:
        return FK_504;
    default:
        return status >= 400 && status < 500 ? FK_4XX : FK_OTHER;
    }
}

/* Client thread: the request loop, until *c->stop (or a transport failure with
 * stop_on_transport). */
static void *fk_client_main(void *arg)
{
    struct fk_client *c = arg;
    CURL *h = curl_easy_init();
    char get_url[400], post_url[300], th[80], tn[120], body[200];
    snprintf(get_url, sizeof(get_url), "%s%s", c->base, c->path ? c->path : "/api/data?limit=5");
    snprintf(post_url, sizeof(post_url), "%s/api/data", c->base);
    snprintf(th, sizeof(th), "X-Tenant-Tier: %s", c->tier);
    struct fk_body b;
    int64_t t0 = h_now_ms();
    for (int seq = 0; !atomic_load(c->stop); seq++) {
        if (c->rate > 0) {
            int64_t due = t0 + (int64_t)seq * 1000 / c->rate;
            int64_t wait = due - h_now_ms();
            if (wait > 0)
                h_nap_ms((int)wait);
        }
        if (c->cycle_tenant)
            snprintf(tn, sizeof(tn), "X-Tenant-Id: %s-%d", c->tenant, seq);
        else if (c->tenants > 0)
            snprintf(tn, sizeof(tn), "X-Tenant-Id: %s-%d", c->tenant, seq % c->tenants);
        else
            snprintf(tn, sizeof(tn), "X-Tenant-Id: %s", c->tenant);
        bool post = c->post_every > 0 && seq % c->post_every == 0;
        struct curl_slist *hl = curl_slist_append(NULL, th);
        hl = curl_slist_append(hl, tn);
        curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(h, CURLOPT_OPENSOCKETFUNCTION, fk_open_socket);
        curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, 30000L);
        curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, 5000L);
        curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, fk_write_cb);
        curl_easy_setopt(h, CURLOPT_WRITEDATA, &b);
        if (post) {
            hl = curl_slist_append(hl, "Content-Type: application/json");
            snprintf(body, sizeof(body), "{\"payload\": {\"run\": \"%s\", \"c\": %d, \"n\": %d}}",
                     c->tag ? c->tag : "", c->id, seq);
            curl_easy_setopt(h, CURLOPT_URL, post_url);
            curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
            curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
        } else {
            curl_easy_setopt(h, CURLOPT_URL, get_url);
            curl_easy_setopt(h, CURLOPT_HTTPGET, 1L);
        }
        curl_easy_setopt(h, CURLOPT_HTTPHEADER, hl);
        b.len = 0;
        b.buf[0] = '\0';
        atomic_fetch_add(&c->sent, 1);
        CURLcode rc = curl_easy_perform(h);
        long st = 0;
        if (rc == CURLE_OK)
            curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &st);
        curl_slist_free_all(hl);
        enum fk_code k = fk_code_of(st);
        atomic_fetch_add(&c->n[k], 1);
        if (k != FK_200 && k != FK_201 && k != FK_429 && c->quiet_after_ms &&
            h_now_ms() >= atomic_load(c->quiet_after_ms))
            atomic_fetch_add(&c->quiet_errors, 1);
        if (st == 200 || st == 201)
            fk_note_ok(c);
        else if (st >= 400)
            fk_note_error(c, b.buf);
        if (st == 201) {
            fk_note_ack(c, b.buf, seq);
            atomic_fetch_add(&c->created, 1);
        }
        if (k == FK_TRANSPORT) {
            /* Even "could not connect" may follow a send: curl retries a request whose reused
             * connection died before any answer on a new one, and reports only the retry. */
            if (post)
                c->cut_off++;
            if (c->stop_on_transport)
                break;
        }
    }
    curl_easy_cleanup(h);
    return NULL;
}

int fk_client_start(struct fk_client *c)
{
    return pthread_create(&c->thread, NULL, fk_client_main, c) ? -1 : 0;
}

void fk_client_join(struct fk_client *c)
{
    pthread_join(c->thread, NULL);
}

void fk_client_free(struct fk_client *c)
{
    free(c->acked);
    c->acked = NULL;
    c->nacked = c->cap = 0;
}

long fk_sum(struct fk_client *cs, int n, const char *tier, enum fk_code code)
{
    long s = 0;
    for (int i = 0; i < n; i++)
        if (!tier || !strcmp(cs[i].tier, tier))
            s += atomic_load(&cs[i].n[code]);
    return s;
}

long fk_sum_created(struct fk_client *cs, int n)
{
    long s = 0;
    for (int i = 0; i < n; i++)
        s += atomic_load(&cs[i].created);
    return s;
}

void fk_print_tally(const char *label, struct fk_client *cs, int n, const char *const *tiers,
                    int ntiers)
{
    for (int t = 0; t < ntiers; t++) {
        char line[1024];
        int off = snprintf(line, sizeof(line), "# %s %s:", label, tiers[t]);
        for (int k = 0; k < FK_NCODES; k++) {
            long v = fk_sum(cs, n, tiers[t], (enum fk_code)k);
            if (v)
                off += snprintf(line + off, sizeof(line) - (size_t)off, " %s=%ld", fk_code_names[k],
                                v);
        }
        bool first = true;
        for (size_t e = 0; e < FK_NERR; e++) {
            long v = 0;
            for (int i = 0; i < n; i++)
                if (!strcmp(cs[i].tier, tiers[t]))
                    v += atomic_load(&cs[i].err[e]);
            if (v) {
                off += snprintf(line + off, sizeof(line) - (size_t)off, "%s%s=%ld",
                                first ? " (" : ", ", fk_err_names[e], v);
                first = false;
            }
        }
        if (!first)
            snprintf(line + off, sizeof(line) - (size_t)off, ")");
        printf("%s\n", line);
    }
    fflush(stdout);
}

int64_t fk_acked_present(const char *url, struct fk_client *cs, int n, const char *tag,
                         int64_t *acked_out)
{
    size_t total = 0;
    for (int i = 0; i < n; i++)
        total += cs[i].nacked;
    *acked_out = (int64_t)total;
    if (!total)
        return 0;
    size_t cap = 256 + total * 48;
    char *sql = malloc(cap);
    if (!sql)
        return -1;
    size_t off = (size_t)snprintf(sql, cap, "SELECT count(*) FROM tenant_data d JOIN (VALUES ");
    bool first = true;
    for (int i = 0; i < n; i++) {
        for (size_t k = 0; k < cs[i].nacked; k++) {
            const struct fk_ack *a = &cs[i].acked[k];
            off += (size_t)snprintf(sql + off, cap - off, "%s(%" PRId64 "::bigint,%d,%d)",
                                    first ? "" : ",", a->id, a->client, a->seq);
            first = false;
        }
    }
    snprintf(sql + off, cap - off,
             ") v(id, c, n) ON d.id = v.id AND d.payload->>'run' = '%s' AND "
             "(d.payload->>'c')::int = v.c AND (d.payload->>'n')::int = v.n",
             tag);
    int64_t found = h_sql_int(url, sql);
    free(sql);
    return found == INT64_MIN ? -1 : found;
}
