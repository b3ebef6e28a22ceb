/*
 * evloop: a probe for issue 17, not part of bulkhead. It measures how fast GET /api/data can be
 * when the data path runs the event-loop way: no hand-off to a worker thread, no thread blocked
 * on PostgreSQL. bench/evloop.sh runs it beside bulkhead and pgbench.
 *
 * DESIGN. N event threads share nothing. Each owns one libmicrohttpd daemon in external epoll
 * mode (all bound to the same port with SO_REUSEPORT: the kernel spreads new connections over
 * them), K non-blocking libpq connections with the bench's statement prepared, and one epoll
 * set holding MHD's epoll fd and the K PostgreSQL sockets. A request takes an idle connection
 * of its thread (or waits FIFO on its thread), sends the prepared statement and suspends its
 * HTTP connection; when the result is read on that thread, the reply (the result's memory as
 * the body, freed by PQclear once sent) is built and the connection resumed. Everything a
 * thread touches is its own: no locks, no atomics except the stop flag.
 * With -p DEPTH (> 1) each connection runs in libpq pipeline mode and carries up to DEPTH
 * statements at once; waiting requests are sent together, with one Sync.
 *
 * It does not do what bulkhead does around the query: no tiers, no tenant or header checks, no
 * rate limiter, no fair queue, no breaker, no deadlines, no metrics, no access log, no
 * reconnection (a broken connection is dropped), no parameters (the statement is bench/run.sh's
 * query.sql, literal).
 *
 *   evloop [-p DEPTH] PORT DATABASE_URL [THREADS [CONNS_PER_THREAD]]
 */
#include <arpa/inet.h>
#include <errno.h>
#include <libpq-fe.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#define EV_MAX_DEPTH  64   /* statements in flight on one connection, pipeline mode */
#define EV_PAGE_LIMIT "10" /* the statement's LIMIT: a full page gets X-Next-Cursor */

/* bench/run.sh's query.sql, the statement bulkhead prepares for an enterprise page of 10. */
static const char ev_sql[] =
    "SELECT coalesce(json_agg(r ORDER BY r.id), '[]')::text, max(r.id), count(*) FROM (SELECT "
    "id, tier, tenant, payload, created_at FROM tenant_data WHERE tier = 'enterprise' AND id > 0 "
    "ORDER BY id LIMIT 10) r";
/* bulkhead's session settings (src/api/datastmt.c), so the body is the same bytes. */
static const char ev_session_sql[] =
    "SET TimeZone = 'UTC'; SET plan_cache_mode = force_generic_plan";
static const char ev_health_body[] = "{\"status\":\"healthy\"}";
static const char ev_error_body[] = "{\"error\":\"database_error\"}";
static const char ev_missing_body[] = "{\"error\":\"not_found\"}";

static atomic_bool ev_stopping;

/* Where a request is; the event thread of its daemon moves it on. */
enum evreq_state {
    EVREQ_NEW,     /* head read, not yet dispatched */
    EVREQ_WAITING, /* suspended: on its thread's queue or in flight on a connection */
    EVREQ_READY,   /* resp built, connection resumed; the next handler call queues it */
    EVREQ_SENT,    /* reply queued with libmicrohttpd */
};

struct evthread;

struct evreq {
    struct MHD_Connection *mc; /* the HTTP connection, suspended while WAITING */
    struct evthread *t;        /* the thread (daemon) it arrived on */
    struct MHD_Response *resp; /* the reply once READY; owned until queued */
    unsigned status;           /* the reply's status once READY */
    enum evreq_state state;
    struct evreq *next; /* the thread's wait queue */
};

struct evconn {
    PGconn *pg;                       /* owned; finished at exit */
    struct evthread *t;               /* the thread it belongs to */
    struct evreq *ring[EV_MAX_DEPTH]; /* in flight, oldest first (n of them from head) */
    unsigned head, n;                 /* ring position and count */
    unsigned syncs;                   /* pipeline mode: Syncs sent, their results not yet read */
    bool want_out;                    /* EPOLLOUT armed: libpq has unsent output */
    bool dead;                        /* broken and out of the epoll set */
    struct evconn *next_idle;         /* the idle stack, when n == 0 */
    bool idle;                        /* on the idle stack */
};

struct evthread {
    struct MHD_Daemon *d; /* owned: stopped when the loop ends */
    int ep;               /* epoll set: MHD's epoll fd, the PostgreSQL sockets, the stop fd */
    int stop_fd;          /* shared eventfd, readable once stopping */
    struct evconn *conns; /* K of them, owned */
    unsigned nconns, live;
    unsigned depth;                /* statements per connection at once (1: no pipeline) */
    struct evconn *idle;           /* connections with nothing in flight */
    struct evreq *q_head, *q_tail; /* requests waiting for a connection, FIFO */
    unsigned suspended;            /* HTTP connections suspended (WAITING) */
    pthread_t tid;
};

static void ev_pqclear(void *res)
{
    PQclear(res);
}

static struct MHD_Response *ev_static(const char *body, size_t len)
{
    struct MHD_Response *r =
        MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_PERSISTENT);
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    return r;
}

/* Build r's reply from res (which it takes) and resume it (event thread). */
static void evreq_complete(struct evreq *r, PGresult *res)
{
    struct MHD_Response *resp;
    if (res && PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1) {
        size_t len = (size_t)PQgetlength(res, 0, 0);
        bool full = !PQgetisnull(res, 0, 1) && !strcmp(PQgetvalue(res, 0, 2), EV_PAGE_LIMIT);
        char next[32] = "";
        if (full)
            snprintf(next, sizeof(next), "%s", PQgetvalue(res, 0, 1));
        resp = MHD_create_response_from_buffer_with_free_callback_cls(len, PQgetvalue(res, 0, 0),
                                                                      ev_pqclear, res);
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
        MHD_add_response_header(resp, "X-Request-Id", "0123abcd-1"); /* bulkhead's head, fixed */
        if (next[0])
            MHD_add_response_header(resp, "X-Next-Cursor", next);
        r->status = MHD_HTTP_OK;
    } else {
        if (res)
            fprintf(stderr, "evloop: %s", PQresultErrorMessage(res));
        PQclear(res);
        resp = ev_static(ev_error_body, sizeof(ev_error_body) - 1);
        r->status = MHD_HTTP_SERVICE_UNAVAILABLE;
    }
    r->resp = resp;
    r->state = EVREQ_READY;
    r->t->suspended--;
    MHD_resume_connection(r->mc);
}

static void evconn_watch(struct evconn *c, bool out)
{
    struct epoll_event ev = {.events = EPOLLIN | (out ? EPOLLOUT : 0u), .data.ptr = c};
    epoll_ctl(c->t->ep, EPOLL_CTL_MOD, PQsocket(c->pg), &ev);
    c->want_out = out;
}

/* A broken connection: its requests fail, it leaves the epoll set for good. */
static void evconn_fail(struct evconn *c)
{
    fprintf(stderr, "evloop: connection lost: %s", PQerrorMessage(c->pg));
    epoll_ctl(c->t->ep, EPOLL_CTL_DEL, PQsocket(c->pg), NULL);
    c->dead = true;
    c->t->live--;
    for (; c->n; c->n--, c->head = (c->head + 1) % EV_MAX_DEPTH)
        evreq_complete(c->ring[c->head], NULL);
    struct evthread *t = c->t;
    while (!t->live && t->q_head) { /* nothing left to wait for */
        struct evreq *r = t->q_head;
        t->q_head = r->next;
        evreq_complete(r, NULL);
    }
    if (!t->q_head)
        t->q_tail = NULL;
}

/* Send whatever libpq holds; arm EPOLLOUT while some is left. false: the connection broke. */
static bool evconn_flush(struct evconn *c)
{
    int rc = PQflush(c->pg);
    if (rc < 0)
        return false;
    if ((rc == 1) != c->want_out)
        evconn_watch(c, rc == 1);
    return true;
}

/* Put r on c (no Sync in pipeline mode: evconn_commit ends a batch). */
static bool evconn_send(struct evconn *c, struct evreq *r)
{
    c->ring[(c->head + c->n) % EV_MAX_DEPTH] = r;
    c->n++;
    return PQsendQueryPrepared(c->pg, "q", 0, NULL, NULL, NULL, 0) == 1;
}

static bool evconn_commit(struct evconn *c)
{
    if (c->t->depth > 1) {
        if (PQpipelineSync(c->pg) != 1)
            return false;
        c->syncs++;
    }
    return evconn_flush(c);
}

/* Give c as many waiting requests as it has room for, in one batch. */
static void evthread_fill(struct evthread *t, struct evconn *c)
{
    bool sent = false, ok = true;
    while (ok && t->q_head && c->n < t->depth) {
        struct evreq *r = t->q_head;
        t->q_head = r->next;
        if (!t->q_head)
            t->q_tail = NULL;
        ok = evconn_send(c, r);
        sent = true;
    }
    if (sent && ok)
        ok = evconn_commit(c);
    if (!ok) {
        evconn_fail(c);
        return;
    }
    if (c->n == 0 && !c->idle) {
        c->idle = true;
        c->next_idle = t->idle;
        t->idle = c;
    }
}

/* A connection for a new request: an idle one, else (pipeline mode) the least loaded. */
static struct evconn *evthread_pick(struct evthread *t)
{
    while (t->idle) {
        struct evconn *c = t->idle;
        t->idle = c->next_idle;
        c->idle = false;
        if (!c->dead)
            return c;
    }
    struct evconn *best = NULL;
    if (t->depth > 1)
        for (unsigned i = 0; i < t->nconns; i++) {
            struct evconn *c = &t->conns[i];
            if (!c->dead && c->n < t->depth && (!best || c->n < best->n))
                best = c;
        }
    return best;
}

/* A suspended request enters the data path (event thread, inside the access handler). */
static void evthread_submit(struct evthread *t, struct evreq *r)
{
    if (!t->live) {
        evreq_complete(r, NULL);
        return;
    }
    r->next = NULL;
    if (t->q_tail)
        t->q_tail->next = r;
    else
        t->q_head = r;
    t->q_tail = r;
    struct evconn *c = evthread_pick(t);
    if (c)
        evthread_fill(t, c);
}

/* PostgreSQL's socket is ready: read every result there is, then refill the connection. */
static void evconn_ready(struct evconn *c, uint32_t events)
{
    if (c->dead) /* dropped earlier in the same batch of events */
        return;
    if ((events & EPOLLOUT) && !evconn_flush(c)) {
        evconn_fail(c);
        return;
    }
    if (!(events & (EPOLLIN | EPOLLERR | EPOLLHUP)))
        return;
    if (!PQconsumeInput(c->pg)) {
        evconn_fail(c);
        return;
    }
    PGresult *first = NULL; /* the head request's result; later ones of the same query dropped */
    while ((c->n || c->syncs) && !PQisBusy(c->pg)) {
        PGresult *res = PQgetResult(c->pg);
        if (!res) { /* the head query is over */
            if (!c->n)
                break;
            struct evreq *r = c->ring[c->head];
            c->head = (c->head + 1) % EV_MAX_DEPTH;
            c->n--;
            evreq_complete(r, first);
            first = NULL;
        } else if (PQresultStatus(res) == PGRES_PIPELINE_SYNC) {
            c->syncs--;
            PQclear(res);
        } else if (!first) {
            first = res;
        } else {
            PQclear(res);
        }
    }
    if (first) { /* not reachable: libpq returns NULL before the next query's results */
        PQclear(first);
    }
    if (PQstatus(c->pg) == CONNECTION_BAD) {
        evconn_fail(c);
        return;
    }
    evthread_fill(c->t, c);
}

/* Every call is on the daemon's own event thread. */
static enum MHD_Result ev_access(void *cls, struct MHD_Connection *mc, const char *url,
                                 const char *method, const char *version, const char *upload,
                                 size_t *upload_size, void **state)
{
    (void)version;
    (void)upload;
    struct evthread *t = cls;
    struct evreq *r = *state;
    if (!r) {
        /* Reply on a later call: a reply queued on the first one closes keep-alive. */
        r = calloc(1, sizeof(*r));
        if (!r)
            return MHD_NO;
        r->mc = mc;
        r->t = t;
        *state = r;
        return MHD_YES;
    }
    if (*upload_size) {
        *upload_size = 0; /* bodies are ignored */
        return MHD_YES;
    }
    if (r->state == EVREQ_NEW) {
        bool data = !strcmp(url, "/api/data") && !strcmp(method, "GET");
        if (data && !atomic_load(&ev_stopping)) {
            r->state = EVREQ_WAITING;
            t->suspended++;
            MHD_suspend_connection(mc);
            evthread_submit(t, r);
            return MHD_YES;
        }
        if (data) {
            r->resp = ev_static(ev_error_body, sizeof(ev_error_body) - 1);
            r->status = MHD_HTTP_SERVICE_UNAVAILABLE;
        } else if (!strcmp(url, "/health")) {
            r->resp = ev_static(ev_health_body, sizeof(ev_health_body) - 1);
            r->status = MHD_HTTP_OK;
        } else {
            r->resp = ev_static(ev_missing_body, sizeof(ev_missing_body) - 1);
            r->status = MHD_HTTP_NOT_FOUND;
        }
        r->state = EVREQ_READY;
    }
    if (r->state != EVREQ_READY)
        return MHD_YES; /* resumed only once READY: not reached */
    r->state = EVREQ_SENT;
    enum MHD_Result ret = MHD_queue_response(mc, r->status, r->resp);
    MHD_destroy_response(r->resp);
    r->resp = NULL;
    return ret;
}

static void ev_completed(void *cls, struct MHD_Connection *mc, void **state,
                         enum MHD_RequestTerminationCode toe)
{
    (void)cls;
    (void)mc;
    (void)toe;
    struct evreq *r = *state;
    if (!r)
        return;
    if (r->resp)
        MHD_destroy_response(r->resp);
    free(r);
    *state = NULL;
}

static void *evthread_run(void *arg)
{
    struct evthread *t = arg;
    struct epoll_event evs[64];
    bool stop_seen = false;
    for (;;) {
        if (stop_seen && !t->suspended)
            break;
        MHD_UNSIGNED_LONG_LONG to;
        int ms = -1;
        if (MHD_get_timeout(t->d, &to) == MHD_YES)
            ms = to > 1000 ? 1000 : (int)to;
        int n = epoll_wait(t->ep, evs, 64, ms);
        if (n < 0 && errno != EINTR) {
            perror("evloop: epoll_wait");
            break;
        }
        bool run = n <= 0;
        for (int i = 0; i < n; i++) {
            void *p = evs[i].data.ptr;
            if (!p) {
                run = true;
            } else if (p == t) {
                stop_seen = true;
                epoll_ctl(t->ep, EPOLL_CTL_DEL, t->stop_fd, NULL);
            } else {
                evconn_ready(p, evs[i].events);
                run = true; /* requests may have been resumed */
            }
        }
        if (run)
            MHD_run(t->d);
    }
    return NULL;
}

static int evthread_connect(struct evthread *t, struct evconn *c, const char *dburl)
{
    c->t = t;
    c->pg = PQconnectdb(dburl);
    if (PQstatus(c->pg) != CONNECTION_OK)
        goto fail;
    PGresult *res = PQexec(c->pg, ev_session_sql);
    bool ok = PQresultStatus(res) == PGRES_COMMAND_OK;
    PQclear(res);
    if (!ok)
        goto fail;
    res = PQprepare(c->pg, "q", ev_sql, 0, NULL);
    ok = PQresultStatus(res) == PGRES_COMMAND_OK;
    PQclear(res);
    if (!ok || PQsetnonblocking(c->pg, 1) != 0)
        goto fail;
    if (t->depth > 1 && PQenterPipelineMode(c->pg) != 1)
        goto fail;
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
    if (epoll_ctl(t->ep, EPOLL_CTL_ADD, PQsocket(c->pg), &ev) != 0)
        goto fail;
    c->idle = true;
    c->next_idle = t->idle;
    t->idle = c;
    t->live++;
    return 0;
fail:
    fprintf(stderr, "evloop: PostgreSQL: %s", PQerrorMessage(c->pg));
    return -1;
}

static int evthread_init(struct evthread *t, uint16_t port, const char *dburl, unsigned nconns,
                         unsigned depth, int stop_fd)
{
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons(port)};
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    t->depth = depth;
    t->stop_fd = stop_fd;
    t->ep = epoll_create1(EPOLL_CLOEXEC);
    if (t->ep < 0)
        return -1;
    t->d = MHD_start_daemon(
        MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ITC | MHD_USE_ERROR_LOG, port, NULL,
        NULL, ev_access, t, MHD_OPTION_SOCK_ADDR, &sin, MHD_OPTION_NOTIFY_COMPLETED, ev_completed,
        NULL, MHD_OPTION_CONNECTION_LIMIT, 4096u, MHD_OPTION_LISTEN_BACKLOG_SIZE, 1024u,
        MHD_OPTION_LISTENING_ADDRESS_REUSE, 1u, MHD_OPTION_END);
    if (!t->d)
        return -1;
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(t->d, MHD_DAEMON_INFO_EPOLL_FD);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
    if (!info || epoll_ctl(t->ep, EPOLL_CTL_ADD, info->epoll_fd, &ev) != 0)
        return -1;
    ev.data.ptr = t;
    if (epoll_ctl(t->ep, EPOLL_CTL_ADD, stop_fd, &ev) != 0)
        return -1;
    t->conns = calloc(nconns, sizeof(*t->conns));
    if (!t->conns)
        return -1;
    t->nconns = nconns;
    for (unsigned i = 0; i < nconns; i++)
        if (evthread_connect(t, &t->conns[i], dburl) != 0)
            return -1;
    return 0;
}

static void evthread_free(struct evthread *t)
{
    if (t->d)
        MHD_stop_daemon(t->d);
    for (unsigned i = 0; t->conns && i < t->nconns; i++)
        PQfinish(t->conns[i].pg);
    free(t->conns);
    if (t->ep >= 0)
        close(t->ep);
}

static unsigned ev_arg(const char *s, unsigned lo, unsigned hi, const char *what)
{
    char *end;
    unsigned long v = strtoul(s, &end, 10);
    if (*end || v < lo || v > hi) {
        fprintf(stderr, "evloop: %s must be %u..%u\n", what, lo, hi);
        exit(2);
    }
    return (unsigned)v;
}

int main(int argc, char **argv)
{
    unsigned depth = 1;
    int opt;
    while ((opt = getopt(argc, argv, "p:")) != -1) {
        if (opt != 'p')
            goto usage;
        depth = ev_arg(optarg, 1, EV_MAX_DEPTH, "pipeline depth");
    }
    argc -= optind;
    argv += optind;
    if (argc < 2 || argc > 4)
        goto usage;
    uint16_t port = (uint16_t)ev_arg(argv[0], 1, 65535, "PORT");
    unsigned nthreads = argc > 2 ? ev_arg(argv[2], 1, 64, "THREADS") : 2;
    unsigned nconns = argc > 3 ? ev_arg(argv[3], 1, 256, "CONNS_PER_THREAD") : 8;

    /* Signals go to sigwait below, not to the event threads. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &set, NULL);

    int rc = 1;
    int stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    struct evthread *ts = calloc(nthreads, sizeof(*ts));
    if (stop_fd < 0 || !ts)
        return 1;
    unsigned started = 0;
    for (unsigned i = 0; i < nthreads; i++)
        ts[i].ep = -1;
    for (unsigned i = 0; i < nthreads; i++) {
        if (evthread_init(&ts[i], port, argv[1], nconns, depth, stop_fd) != 0) {
            fprintf(stderr, "evloop: event thread %u could not start\n", i);
            goto out;
        }
    }
    for (; started < nthreads; started++)
        if (pthread_create(&ts[started].tid, NULL, evthread_run, &ts[started]) != 0)
            goto out;
    fprintf(stderr, "evloop: port %u, %u threads x %u connections, pipeline depth %u\n", port,
            nthreads, nconns, depth);
    int sig;
    do
        sigwait(&set, &sig);
    while (sig == SIGPIPE);
    rc = 0;
out:
    /* Stopping: new requests get 503, the threads end once nothing of theirs is suspended. */
    atomic_store(&ev_stopping, true);
    uint64_t one = 1;
    if (write(stop_fd, &one, sizeof(one)) != sizeof(one))
        rc = 1;
    for (unsigned i = 0; i < started; i++)
        pthread_join(ts[i].tid, NULL);
    for (unsigned i = 0; i < nthreads; i++)
        evthread_free(&ts[i]);
    free(ts);
    close(stop_fd);
    return rc;
usage:
    fprintf(stderr, "usage: evloop [-p DEPTH] PORT DATABASE_URL [THREADS [CONNS_PER_THREAD]]\n");
    return 2;
}
