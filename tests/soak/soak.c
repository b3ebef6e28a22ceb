/*
 * soak: `make soak` (scripts/soak.sh). The real server under mixed load on every tier for
 * SOAK_SECONDS (default 600), with faults at intervals: every tier connection killed, bursts of
 * bad input, PostgreSQL stopped and started, PostgreSQL crash-restarted. Reports the answers by
 * tier (and the failures outside the fault windows, which should be none), acknowledged writes
 * against the database, and the server's RSS, descriptors and threads before and after.
 *
 * Phases: warm-up under load with one fault of each kind; load paused, every worker put to work
 * at once (so every pool opens all its connections), snapshot A (RSS, open descriptors, threads,
 * pooled database connections) of the idle server; the soak with faults; load stopped, every
 * worker put to work again, snapshot B. Comparing two idle snapshots taken in the same state
 * keeps client connections and the pools' fill level out of the numbers; database connections
 * still open in the pools are subtracted from the descriptor counts.
 *
 * Environment (set by scripts/soak.sh): SOAK_SECONDS, SOAK_PG_DIR and SOAK_PG_PORT (a cluster
 * started with scripts/pg.sh), BH_ROOT, BH_TEST_WORK, BULKHEAD_BIN. Exit status 0 when every
 * check passed.
 */
#include "faultkit.h"
#include "harness.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#define SOAK_QUIET_MS 15000 /* a failure this long after a fault ended counts against the soak */

static const char *const tiers[] = {"free", "pro", "enterprise"};
#define NTIERS 3

struct soak {
    struct h_pg pg;
    struct h_server srv;
    struct fk_client c[16];
    int n;
    struct fk_tier_stat ts[NTIERS];
    atomic_bool stop;
    atomic_llong quiet_after;
    int kill_rounds, bursts, restarts, crash_restarts;
    int64_t killed;
    long bad_sent, bad_4xx, bad_other;
};

/* Per tier: two paced readers, one paced writer; on free one more reader with a new tenant id
 * per request; on pro one reader of slow queries. About 400 requests per second in all. */
static void soak_load_start(struct soak *s, int round)
{
    s->n = 0;
    atomic_store(&s->stop, false);
    for (int t = 0; t < NTIERS; t++) {
        s->ts[t].tier = tiers[t];
        int kinds = t == 0 || t == 1 ? 4 : 3;
        for (int k = 0; k < kinds; k++) {
            struct fk_client *c = &s->c[s->n];
            memset(c, 0, sizeof(*c));
            c->base = s->srv.base;
            c->tier = tiers[t];
            snprintf(c->tenant, sizeof(c->tenant), "soak%d-%d", round, s->n);
            c->tenants = 60; /* 60 ids per client keep every tenant under its rate limit */
            c->tag = "soak";
            c->id = round * 100 + s->n;
            c->stop = &s->stop;
            c->quiet_after_ms = &s->quiet_after;
            c->ts = &s->ts[t];
            if (k < 2) {
                c->rate = 50;
            } else if (k == 2) {
                c->post_every = 1;
                c->rate = 10;
            } else if (t == 0) {
                c->cycle_tenant = true;
                c->rate = 50;
            } else {
                c->path = "/api/data?delay_ms=200&limit=5";
                c->rate = 5;
            }
            if (fk_client_start(c)) {
                fprintf(stderr, "soak: cannot start a client thread\n");
                exit(1);
            }
            s->n++;
        }
    }
}

static void soak_load_stop(struct soak *s)
{
    atomic_store(&s->stop, true);
    for (int i = 0; i < s->n; i++)
        fk_client_join(&s->c[i]);
}

/* The server at rest: numbers of the process, and database connections held by the pools. */
struct snapshot {
    long rss_kb, threads;
    int fds;
    int64_t db_conns; /* descriptors that are TCP connections to PostgreSQL */
    int64_t pooled;   /* active + idle in every pool, plus the health prober's one */
};

static int64_t soak_pooled(const struct soak *s)
{
    int64_t n = 1;
    for (int t = 0; t < NTIERS; t++)
        n += h_metric(s->srv.base, tiers[t], "connectionPool", "active") +
             h_metric(s->srv.base, tiers[t], "connectionPool", "idle");
    return n;
}

static struct snapshot soak_settle(struct soak *s);

static int64_t soak_others(const struct snapshot *x)
{
    return x->fds - x->db_conns;
}

/* Copy /proc/<pid>/smaps to BH_TEST_WORK/<name>: where the RSS is, mapping by mapping. */
static void soak_save_smaps(pid_t pid, const char *name)
{
    char src[64], dst[400], buf[65536];
    snprintf(src, sizeof(src), "/proc/%d/smaps", (int)pid);
    snprintf(dst, sizeof(dst), "%s/%s", getenv("BH_TEST_WORK"), name);
    FILE *in = fopen(src, "r"), *out = fopen(dst, "w");
    size_t n;
    while (in && out && (n = fread(buf, 1, sizeof(buf), in)) > 0)
        fwrite(buf, 1, n, out);
    if (in)
        fclose(in);
    if (out)
        fclose(out);
}

/* Wait until the client connections are gone (the count of other descriptors holds still);
 * with a baseline, also until that count is back to the baseline's, for at most
 * HTTP_IDLE_TIMEOUT_S (30 s) and a margin: a connection a client abandoned is closed by then.
 * *waited_ms tells how long that took. The list of descriptors goes to BH_TEST_WORK/fds-<name>,
 * the memory maps to BH_TEST_WORK/smaps-<name>. */
static struct snapshot soak_snapshot(struct soak *s, const char *name,
                                     const struct snapshot *baseline, int64_t *waited_ms)
{
    struct snapshot r = soak_settle(s);
    int64_t t0 = h_now_ms();
    while (baseline && soak_others(&r) > soak_others(baseline) && h_now_ms() - t0 < 40000) {
        h_nap_ms(500);
        r = soak_settle(s);
    }
    if (waited_ms)
        *waited_ms = h_now_ms() - t0;
    char path[400];
    snprintf(path, sizeof(path), "%s/fds-%s", getenv("BH_TEST_WORK"), name);
    FILE *f = fopen(path, "w");
    if (f) {
        fk_fd_dump(s->srv.pid, f);
        fclose(f);
    }
    snprintf(path, sizeof(path), "smaps-%s", name);
    soak_save_smaps(s->srv.pid, path);
    return r;
}

static struct snapshot soak_settle(struct soak *s)
{
    struct snapshot a = {0}, b;
    for (int i = 0; i < 50; i++) {
        h_nap_ms(200);
        b.pooled = soak_pooled(s);
        b.db_conns = fk_fd_count_to_port(s->srv.pid, s->pg.port);
        b.fds = fk_fd_count(s->srv.pid);
        b.rss_kb = fk_rss_kb(s->srv.pid);
        b.threads = fk_threads(s->srv.pid);
        if (i > 0 && b.fds - b.db_conns == a.fds - a.db_conns && b.threads == a.threads)
            return b;
        a = b;
    }
    return b;
}

static void soak_kill_connections(struct soak *s)
{
    /* The window opens before the kill: requests fail as soon as the backends get the signal,
     * before the query that sent it has returned here. */
    atomic_store(&s->quiet_after, INT64_MAX);
    int64_t k = fk_kill_tier_backends(s->pg.url);
    if (k > 0)
        s->killed += k;
    s->kill_rounds++;
    atomic_store(&s->quiet_after, h_now_ms() + SOAK_QUIET_MS);
}

/* Garbage on a raw connection: the server must drop it or answer 4xx. (A client that
 * half-closes after a partial request line keeps its server connection until
 * HTTP_IDLE_TIMEOUT_S: the server cannot tell it from one that waits for the answer.) */
static void soak_raw_garbage(const struct soak *s, const char *bytes, size_t len)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)s->srv.port)};
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    if (fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0) {
        if (write(fd, bytes, len) < 0)
            perror("soak: write");
        shutdown(fd, SHUT_WR);
        char buf[512];
        struct timeval tv = {.tv_sec = 2};
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        while (read(fd, buf, sizeof(buf)) > 0)
            ;
    }
    if (fd >= 0)
        close(fd);
}

/* 100 malformed requests of several kinds; each must get a 4xx. */
static void soak_bad_input(struct soak *s)
{
    static const struct {
        const char *method, *path, *tier, *ctype, *body;
    } bad[] = {
        {"POST", "/api/data", "pro", "application/json", "{\"payload\": {\"a\": 1}"},
        {"POST", "/api/data", "pro", "application/json", "{\"payload\": [1, 2]}"},
        {"POST", "/api/data", "free", "text/plain", "{\"payload\": {}}"},
        {"GET", "/api/data?delay_ms=-5", "enterprise", NULL, NULL},
        {"GET", "/api/data?limit=99999", "free", NULL, NULL},
        {"GET", "/api/data", "platinum", NULL, NULL},
        {"GET", "/api/data?cursor=%00", "pro", NULL, NULL},
        {"DELETE", "/api/data", "pro", NULL, NULL},
        {"GET", "/no/such/path", "pro", NULL, NULL},
        {"POST", "/api/data", "enterprise", "application/json", "\xff\xfe{\"payload\": 1}"},
    };
    for (int i = 0; i < 100; i++) {
        size_t k = (size_t)i % (sizeof(bad) / sizeof(bad[0]));
        char u[300], th[64], ct[96];
        snprintf(u, sizeof(u), "%s%s", s->srv.base, bad[k].path);
        snprintf(th, sizeof(th), "X-Tenant-Tier: %s", bad[k].tier);
        snprintf(ct, sizeof(ct), "Content-Type: %s", bad[k].ctype ? bad[k].ctype : "text/plain");
        const char *h[] = {th, "X-Tenant-Id: bad-input", ct, NULL};
        struct h_resp r;
        h_request(bad[k].method, u, h, bad[k].body, &r);
        s->bad_sent++;
        if (r.status >= 400 && r.status < 500)
            s->bad_4xx++;
        else
            s->bad_other++;
        h_resp_free(&r);
    }
    static const char tls[] = "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 not http\r\n\r\n";
    static const char huge[] = "GET /api/data HTTP/1.1\r\nHost: x\r\nX-Tenant-Tier: pro\r\n"
                               "Content-Length: 99999999999999999999\r\n\r\n";
    static const char version[] = "GET / HTTP/9.9\r\n\r\n";
    soak_raw_garbage(s, tls, sizeof(tls) - 1);
    soak_raw_garbage(s, huge, sizeof(huge) - 1);
    soak_raw_garbage(s, version, sizeof(version) - 1);
    s->bursts++;
}

/* Clean stop (fast shutdown), three seconds down, start. */
static void soak_pg_restart(struct soak *s)
{
    atomic_store(&s->quiet_after, INT64_MAX);
    if (h_pg_stop(&s->pg))
        fprintf(stderr, "soak: PostgreSQL did not stop\n");
    h_nap_ms(3000);
    if (h_pg_resume(&s->pg))
        fprintf(stderr, "soak: PostgreSQL did not start again\n");
    /* The breakers' reset time (10 s with the built-in tiers) plus a margin. */
    atomic_store(&s->quiet_after, h_now_ms() + 10000 + SOAK_QUIET_MS);
    s->restarts++;
}

static void soak_pg_crash(struct soak *s)
{
    atomic_store(&s->quiet_after, INT64_MAX);
    if (fk_pg_ctl(&s->pg, "-m immediate restart"))
        fprintf(stderr, "soak: pg_ctl restart -m immediate failed\n");
    atomic_store(&s->quiet_after, h_now_ms() + 10000 + SOAK_QUIET_MS);
    s->crash_restarts++;
}

/* Every tier's breaker is CLOSED (the database is back and trial calls succeeded). */
static bool soak_breakers_closed(void *arg)
{
    const struct soak *s = arg;
    char b[32];
    for (int t = 0; t < NTIERS; t++)
        if (strcmp(h_metric_text(s->srv.base, tiers[t], "circuitBreaker", "state", b, sizeof(b)),
                   "CLOSED"))
            return false;
    return true;
}

/*
 * Every worker thread of every tier busy at once for about ms: one client per worker, each its
 * own tenant (so no tenant share caps it), sending slow reads. Idle workers park LIFO, so the
 * paced load keeps running on the same few threads; a worker first used during a fault would
 * then add its stack pages and malloc caches to the RSS in the middle of the soak, and look
 * like a leak (after the merge of LIFO parking, a 10-minute soak grew 16% so while heaptrack
 * showed the live heap flat). Run after each warm-up fault and before both snapshots, once the
 * breakers have closed again.
 */
static void soak_saturate(struct soak *s, int ms)
{
    static struct fk_client c[256];
    static int round;
    atomic_bool stop = false;
    int n = 0;
    if (!h_wait_until(soak_breakers_closed, s, 60000))
        fprintf(stderr, "soak: breakers still not CLOSED after 60 s\n");
    round++;
    for (int t = 0; t < NTIERS; t++) {
        int64_t workers = h_metric(s->srv.base, tiers[t], "threadPool", "poolSize");
        for (int64_t k = 0; k < workers && n < (int)(sizeof(c) / sizeof(c[0])); k++, n++) {
            memset(&c[n], 0, sizeof(c[n]));
            c[n].base = s->srv.base;
            c[n].tier = tiers[t];
            snprintf(c[n].tenant, sizeof(c[n].tenant), "saturate%d-%d", round, n);
            c[n].path = "/api/data?delay_ms=100&limit=5";
            c[n].stop = &stop;
            if (fk_client_start(&c[n])) {
                fprintf(stderr, "soak: cannot start a client thread\n");
                exit(1);
            }
        }
    }
    h_nap_ms(ms);
    atomic_store(&stop, true);
    for (int i = 0; i < n; i++) {
        fk_client_join(&c[i]);
        fk_client_free(&c[i]);
    }
}

static long soak_tier_sum(struct soak *s, int t, enum fk_code code)
{
    return fk_sum(s->c, s->n, tiers[t], code);
}

int main(void)
{
    static struct soak s;
    const char *secs = getenv("SOAK_SECONDS");
    int duration = secs ? atoi(secs) : 600;
    const char *dir = getenv("SOAK_PG_DIR");
    const char *port = getenv("SOAK_PG_PORT");
    if (duration < 60 || !dir || !port) {
        fprintf(stderr, "soak: run through scripts/soak.sh (SOAK_SECONDS >= 60)\n");
        return 2;
    }
    int warmup = duration / 10 < 60 ? 60 : duration / 10;
    snprintf(s.pg.dir, sizeof(s.pg.dir), "%s", dir);
    s.pg.port = atoi(port);
    snprintf(s.pg.url, sizeof(s.pg.url), "postgresql://postgres@127.0.0.1:%d/bulkhead", s.pg.port);
    curl_global_init(CURL_GLOBAL_ALL);

    const char *env[] = {"ACCESS_LOG=false", "HEALTH_INTERVAL_MS=500", NULL};
    if (h_server_start(&s.srv, s.pg.url, env)) {
        fprintf(stderr, "soak: the server did not start\n");
        return 1;
    }
    printf("soak: %d s (warm-up %d s), server pid %d, log %s\n", duration, warmup, (int)s.srv.pid,
           s.srv.log);
    fflush(stdout);

    /* Warm-up, with faults of each kind so that their first-time allocations are made before
     * snapshot A, then the idle snapshot A. The heap in use grows by a shrinking amount with
     * each PostgreSQL restart and then levels off (glibc malloc_stats under this load: 3.0,
     * 3.9, 4.2, 4.35, 4.35 MB after 0, 3, 6, 9, 12 restarts), likely per-thread state of the
     * worker threads that reconnect; so the warm-up restarts PostgreSQL three times, and after
     * each fault puts every worker to work at once (soak_saturate). */
    soak_load_start(&s, 0);
    int64_t w0 = h_now_ms();
    h_nap_ms(5000);
    atomic_store(&s.quiet_after, INT64_MAX); /* the warm-up's errors are not counted anyway */
    soak_saturate(&s, 3000);
    soak_bad_input(&s);
    soak_kill_connections(&s);
    soak_saturate(&s, 3000);
    soak_pg_restart(&s);
    soak_saturate(&s, 3000);
    soak_pg_crash(&s);
    soak_saturate(&s, 3000);
    soak_pg_restart(&s);
    soak_saturate(&s, 3000);
    int64_t left = w0 + warmup * 1000 - h_now_ms();
    h_nap_ms(left > 5000 ? (int)left : 5000);
    soak_load_stop(&s);
    soak_saturate(&s, 3000);
    struct snapshot a = soak_snapshot(&s, "start.txt", NULL, NULL);
    s.kill_rounds = s.bursts = s.restarts = s.crash_restarts = 0;
    s.killed = 0;
    s.bad_sent = s.bad_4xx = s.bad_other = 0;
    for (int i = 0; i < s.n; i++)
        fk_client_free(&s.c[i]);
    memset(s.c, 0, sizeof(s.c));

    /* The soak: load, and a fault schedule on a 1-second tick. */
    atomic_store(&s.quiet_after, h_now_ms() + 2000);
    soak_load_start(&s, 1);
    int64_t t0 = h_now_ms();
    int restart_at = duration / 2, crash_at = duration * 3 / 4;
    long peak_rss = 0;
    int peak_fds = 0;
    for (int sec = 1; sec <= duration; sec++) {
        int64_t wait = t0 + (int64_t)sec * 1000 - h_now_ms();
        if (wait > 0)
            h_nap_ms((int)wait);
        if (!fk_alive(s.srv.pid))
            break;
        long rss = fk_rss_kb(s.srv.pid);
        int fds = fk_fd_count(s.srv.pid);
        peak_rss = rss > peak_rss ? rss : peak_rss;
        peak_fds = fds > peak_fds ? fds : peak_fds;
        if (sec == restart_at)
            soak_pg_restart(&s);
        else if (sec == crash_at)
            soak_pg_crash(&s);
        else if (sec % 30 == 0)
            soak_kill_connections(&s);
        else if (sec % 20 == 10)
            soak_bad_input(&s);
        if (sec % 30 == 0) {
            long ok = 0, all = 0;
            for (int i = 0; i < s.n; i++)
                for (int k = 0; k < FK_NCODES; k++) {
                    long v = atomic_load(&s.c[i].n[k]);
                    all += v;
                    ok += k == FK_200 || k == FK_201 ? v : 0;
                }
            printf("t=%4ds  rss %ld kB  fds %d  threads %ld  requests %ld (%ld ok)\n", sec, rss,
                   fds, fk_threads(s.srv.pid), all, ok);
            fflush(stdout);
        }
    }
    bool alive = fk_alive(s.srv.pid);
    soak_load_stop(&s);
    if (alive)
        soak_saturate(&s, 3000);
    int64_t fd_wait = 0;
    struct snapshot b = alive ? soak_snapshot(&s, "end.txt", &a, &fd_wait) : (struct snapshot){0};

    /* Report. */
    printf("\nfaults: %d connection-kill rounds (%lld backends terminated), %d bad-input bursts "
           "(%ld requests: %ld answered 4xx, %ld otherwise), %d PostgreSQL stop/start, %d "
           "PostgreSQL crash restart\n",
           s.kill_rounds, (long long)s.killed, s.bursts, s.bad_sent, s.bad_4xx, s.bad_other,
           s.restarts, s.crash_restarts);
    long quiet = 0, bad_4xx = 0;
    for (int t = 0; t < NTIERS; t++) {
        long tq = 0, all = 0;
        for (int i = 0; i < s.n; i++)
            if (!strcmp(s.c[i].tier, tiers[t]))
                tq += atomic_load(&s.c[i].quiet_errors);
        for (int k = 0; k < FK_NCODES; k++)
            all += soak_tier_sum(&s, t, (enum fk_code)k);
        long errors = all - soak_tier_sum(&s, t, FK_200) - soak_tier_sum(&s, t, FK_201) -
                      soak_tier_sum(&s, t, FK_429);
        printf("tier %-10s %7ld requests, %6ld failed (%.2f%%), %ld outside fault windows, "
               "longest gap between successes %lld ms\n",
               tiers[t], all, errors, all ? 100.0 * (double)errors / (double)all : 0.0, tq,
               (long long)atomic_load(&s.ts[t].max_gap_ms));
        quiet += tq;
        bad_4xx += soak_tier_sum(&s, t, FK_4XX);
    }
    fk_print_tally("answers", s.c, s.n, tiers, NTIERS);
    int64_t acked = 0;
    int64_t present = alive ? fk_acked_present(s.pg.url, s.c, s.n, "soak", &acked) : -1;
    printf("writes: %lld acknowledged (201) in the soak phase, %lld of them in the database\n",
           (long long)acked, (long long)present);

    double growth = a.rss_kb > 0 ? 100.0 * (double)(b.rss_kb - a.rss_kb) / (double)a.rss_kb : 0;
    printf("server at rest after warm-up -> after the soak:\n"
           "  RSS      %ld kB -> %ld kB (%+.1f%%; peak under load %ld kB)\n"
           "  fds      %d -> %d (to PostgreSQL %lld -> %lld, the pools report %lld -> %lld with "
           "the health prober's; others %lld -> %lld after %.1f s at rest; peak %d)\n"
           "  threads  %ld -> %ld\n",
           a.rss_kb, b.rss_kb, growth, peak_rss, a.fds, b.fds, (long long)a.db_conns,
           (long long)b.db_conns, (long long)a.pooled, (long long)b.pooled,
           (long long)(a.fds - a.db_conns), (long long)(b.fds - b.db_conns),
           (double)fd_wait / 1000.0, peak_fds, a.threads, b.threads);

    if (alive && b.fds - b.db_conns > a.fds - a.db_conns)
        printf("  (descriptor lists: %s/fds-start.txt and fds-end.txt)\n", getenv("BH_TEST_WORK"));
    if (alive && b.rss_kb > a.rss_kb)
        printf("  (memory maps: %s/smaps-start.txt and smaps-end.txt)\n", getenv("BH_TEST_WORK"));
    int rc = alive ? h_server_stop(&s.srv, SIGTERM, 30000) : -1;
    printf("server exit status after SIGTERM: %d\n", rc);

    struct {
        const char *what;
        bool ok;
    } checks[] = {
        {"the server stayed up", alive},
        {"it exited 0 on SIGTERM", rc == 0},
        {"no failure outside the fault windows", quiet == 0},
        {"no 4xx other than 429 for well-formed requests", bad_4xx == 0},
        {"every bad input answered 4xx (or dropped)", s.bad_other == 0},
        {"every acknowledged write in the database", present == acked},
        {"RSS growth after warm-up under 5%", growth < 5.0},
        {"no descriptor leak", b.fds - b.db_conns <= a.fds - a.db_conns},
        {"every PostgreSQL socket belongs to a pool or the prober", b.db_conns <= b.pooled},
        {"no thread leak", b.threads == a.threads},
    };
    int failed = 0;
    for (size_t i = 0; i < sizeof(checks) / sizeof(checks[0]); i++) {
        printf("%s  %s\n", checks[i].ok ? "PASS" : "FAIL", checks[i].what);
        failed += !checks[i].ok;
    }
    printf("soak: %s\n", failed ? "FAILED" : "passed");
    for (int i = 0; i < s.n; i++)
        fk_client_free(&s.c[i]);
    curl_global_cleanup();
    return failed ? 1 : 0;
}
