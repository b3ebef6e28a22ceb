/*
 * fleet: the exchange of tier states between instances through one PostgreSQL table (see
 * fleet.h for why and what). The thread connects, makes sure the table exists, then every
 * interval upserts this instance's row and reads the live rows of the others in one statement.
 */
#include "fleet.h"

#include "dbconn.h"
#include "log.h"
#include "mclock.h"
#include "xalloc.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define FLEET_CONNECT_TIMEOUT_MS 2000
#define FLEET_STOP_DELETE_MS     500 /* the last delete at stop waits no longer */

/* Instances starting together take turns (CREATE TABLE IF NOT EXISTS races otherwise); the
 * notices of "already exists" are noise. */
static const char fleet_sql_table[] =
    "BEGIN; SELECT pg_advisory_xact_lock(hashtext('bulkhead fleet table')); "
    "CREATE UNLOGGED TABLE IF NOT EXISTS bulkhead_fleet (instance text PRIMARY KEY, "
    "state jsonb NOT NULL, seen timestamptz NOT NULL); COMMIT";

/* One round trip: this instance's row in, rows of ten minutes ago out, the others' live rows
 * back. Data-modifying CTEs run to completion whether or not the SELECT reads them; it sees
 * the table as it was before them, which is why it excludes this instance explicitly. */
static const char fleet_sql_exchange[] =
    "WITH me AS (INSERT INTO bulkhead_fleet (instance, state, seen) VALUES ($1, $2::jsonb, now()) "
    "ON CONFLICT (instance) DO UPDATE SET state = EXCLUDED.state, seen = EXCLUDED.seen), "
    "gone AS (DELETE FROM bulkhead_fleet WHERE seen < now() - interval '10 minutes') "
    "SELECT instance, state::text FROM bulkhead_fleet WHERE instance <> $1 "
    "AND seen > now() - make_interval(secs => $3::float8 / 1000) ORDER BY instance LIMIT $4";

static const char fleet_sql_leave[] = "DELETE FROM bulkhead_fleet WHERE instance = $1";

/* With fleet budgets the exchange is a transaction under one advisory lock: between reading
 * the others' claims and writing its own, no other instance grants from the same free room.
 * Four round trips per interval (lock, read, write, commit), still none per request. */
static const char fleet_sql_lock[] =
    "BEGIN; SELECT pg_advisory_xact_lock(hashtext('bulkhead fleet budgets'))";
static const char fleet_sql_read[] =
    "SELECT instance, state::text FROM bulkhead_fleet WHERE instance <> $1 "
    "AND seen > statement_timestamp() - make_interval(secs => $2::float8 / 1000) "
    "ORDER BY instance LIMIT $3";
static const char fleet_sql_write[] =
    "WITH gone AS (DELETE FROM bulkhead_fleet WHERE seen < now() - interval '10 minutes') "
    "INSERT INTO bulkhead_fleet (instance, state, seen) VALUES ($1, $2::jsonb, "
    "statement_timestamp()) ON CONFLICT (instance) DO UPDATE SET state = EXCLUDED.state, "
    "seen = EXCLUDED.seen";
static const char fleet_sql_commit[] = "COMMIT";

/* The tiers of one other instance, as read at the last exchange. */
struct fleet_peer {
    struct fleet_tier tiers[FLEET_MAX_TIERS];
    size_t ntiers;
};

struct fleet {
    char *conninfo;    /* owned */
    char *instance_id; /* owned */
    int64_t interval_us, ttl_us;
    int stop_pipe[2]; /* the write end is written once, by fleet_stop */
    pthread_t thread;
    struct dbconn *db; /* the thread's connection, or NULL; only the thread touches it */

    pthread_mutex_t mutex; /* guards everything below */
    struct fleet_tier mine[FLEET_MAX_TIERS];
    size_t nmine;
    struct fleet_peer *peers; /* FLEET_MAX_INSTANCES, owned */
    size_t npeers;
    int64_t last_ok_us; /* monotonic time of the last successful exchange, 0: none */
    struct fleet_stats stats;
    struct fleet_lease lease[FLEET_MAX_TIERS]; /* mine[i]'s fleet budget, as last granted */
};

/* ---- the state JSON ---------------------------------------------------------------------- */

char *fleet_encode(const struct fleet_tier *tiers, size_t n)
{
    json_t *arr = json_array();
    for (size_t i = 0; i < n; i++) {
        const struct fleet_tier *t = &tiers[i];
        json_t *o = json_pack("{s:s, s:b, s:b, s:b, s:f, s:f, s:I, s:I}", "name", t->name, "active",
                              t->active, "threatened", t->threatened, "pressing", t->pressing,
                              "pressure", t->pressure, "usage", t->usage, "in_progress",
                              (json_int_t)t->in_progress, "shed", (json_int_t)t->shed);
        if (t->claim_workers > 0 || t->claim_conns > 0) /* a fleet-scoped budget */
            json_object_update_new(o, json_pack("{s:I, s:I, s:I}", "demand", (json_int_t)t->demand,
                                                "claim_workers", (json_int_t)t->claim_workers,
                                                "claim_conns", (json_int_t)t->claim_conns));
        json_array_append_new(arr, o);
    }
    json_t *doc = json_pack("{s:i, s:o}", "v", 1, "tiers", arr);
    char *s = json_dumps(doc, JSON_COMPACT);
    json_decref(doc);
    if (!s)
        abort(); /* jansson fails only when out of memory */
    return s;
}

/* A number another instance sent, within 0..FLEET_NUMBER_MAX: summed over FLEET_MAX_INSTANCES
 * rows it cannot overflow. */
#define FLEET_NUMBER_MAX 1000000000
static int64_t fleet_clamp(json_int_t v)
{
    return v <= 0 ? 0 : v > FLEET_NUMBER_MAX ? FLEET_NUMBER_MAX : (int64_t)v;
}

/* One tier of another instance's row, or false if it is not one. */
static bool fleet_decode_tier(json_t *o, struct fleet_tier *t)
{
    const char *name = NULL;
    int active = 0, threatened = 0, pressing = 0;
    double usage = 0, pressure = 0;
    json_int_t in_progress = 0, shed = 0, demand = 0, cw = 0, cc = 0;
    if (json_unpack(o, "{s:s, s:b, s:b, s:b, s:F, s:F, s:I, s:I, s?I, s?I, s?I}", "name", &name,
                    "active", &active, "threatened", &threatened, "pressing", &pressing, "pressure",
                    &pressure, "usage", &usage, "in_progress", &in_progress, "shed", &shed,
                    "demand", &demand, "claim_workers", &cw, "claim_conns", &cc) ||
        !name[0] || strlen(name) >= FLEET_NAME_MAX)
        return false;
    memset(t, 0, sizeof(*t));
    memcpy(t->name, name, strlen(name));
    t->active = active;
    t->threatened = threatened;
    t->pressing = pressing;
    t->usage = usage > 0 ? usage : 0;
    t->pressure = pressure > 0 ? pressure : 0;
    t->in_progress = in_progress > 0 ? (int64_t)in_progress : 0;
    t->shed = shed > 0 ? (uint64_t)shed : 0;
    t->demand = fleet_clamp(demand);
    t->claim_workers = fleet_clamp(cw);
    t->claim_conns = fleet_clamp(cc);
    return true;
}

int fleet_decode(const char *json, struct fleet_tier *out, size_t max)
{
    json_t *doc = json_loads(json, 0, NULL);
    json_t *arr = doc ? json_object_get(doc, "tiers") : NULL;
    if (!json_is_array(arr)) {
        json_decref(doc);
        return -EINVAL;
    }
    size_t n = 0;
    for (size_t i = 0; i < json_array_size(arr) && n < max; i++)
        if (fleet_decode_tier(json_array_get(arr, i), &out[n]))
            n++;
    json_decref(doc);
    return (int)n;
}

/* ---- the thread -------------------------------------------------------------------------- */

static bool fleet_stopping(struct fleet *f)
{
    struct pollfd pfd = {.fd = f->stop_pipe[0], .events = POLLIN};
    return poll(&pfd, 1, 0) > 0;
}

/* The medium went down or came back: say so once per change. Mutex held. */
static void fleet_set_up(struct fleet *f, bool up, const char *why)
{
    if (f->stats.up == up)
        return;
    f->stats.up = up;
    f->stats.changed_wall_us = mclock_wall_us();
    if (up)
        log_info("fleet_medium_up", "the fleet view is back: %zu other instances",
                 f->stats.instances);
    else
        log_warn("fleet_medium_down",
                 "the fleet view is lost (%s): every tier is controlled by this instance alone "
                 "until it is back",
                 why);
}

static void fleet_failed(struct fleet *f, const char *why)
{
    if (f->db) {
        dbconn_close(f->db);
        f->db = NULL;
    }
    pthread_mutex_lock(&f->mutex);
    f->stats.failures++;
    f->npeers = 0;
    snprintf(f->stats.reason, sizeof(f->stats.reason), "%s", why);
    fleet_set_up(f, false, why);
    pthread_mutex_unlock(&f->mutex);
}

/* Connect and make sure the table exists. */
static int fleet_connect(struct fleet *f, char *err, size_t errlen)
{
    const struct dbconn_params p = {.conninfo = f->conninfo,
                                    .appname = "bulkhead-fleet",
                                    .statement_timeout_ms = f->ttl_us / 1000,
                                    .setup_sql = "SET client_min_messages = warning",
                                    .stop_fd = &f->stop_pipe[0]};
    int rc =
        dbconn_open(&p, mclock_now_us() + FLEET_CONNECT_TIMEOUT_MS * 1000ll, &f->db, err, errlen);
    if (rc)
        return rc;
    PGresult *res = NULL;
    rc = dbconn_query(f->db, fleet_sql_table, 0, NULL, mclock_now_us() + f->ttl_us, &res, err,
                      errlen);
    if (!rc && PQresultStatus(res) != PGRES_COMMAND_OK) {
        snprintf(err, errlen, "%s", PQresultErrorMessage(res));
        rc = -EIO;
    }
    PQclear(res);
    return rc;
}

/* The rows read, parsed into peers (mutex held by the caller). */
static void fleet_read_rows(struct fleet *f, PGresult *res)
{
    f->npeers = 0;
    for (int r = 0; r < PQntuples(res); r++) {
        if (f->npeers == FLEET_MAX_INSTANCES) {
            f->stats.dropped += (uint64_t)(PQntuples(res) - r);
            break;
        }
        struct fleet_peer *p = &f->peers[f->npeers];
        int n = fleet_decode(PQgetvalue(res, r, 1), p->tiers, FLEET_MAX_TIERS);
        if (n < 0) {
            f->stats.dropped++;
            continue;
        }
        p->ntiers = (size_t)n;
        f->npeers++;
    }
    f->stats.instances = f->npeers;
}

/* One exchange: publish, read the others. */
static int fleet_exchange(struct fleet *f, char *err, size_t errlen)
{
    pthread_mutex_lock(&f->mutex);
    char *state = fleet_encode(f->mine, f->nmine);
    pthread_mutex_unlock(&f->mutex);
    char ttl[24], lim[24];
    snprintf(ttl, sizeof(ttl), "%lld", (long long)(f->ttl_us / 1000));
    snprintf(lim, sizeof(lim), "%d", FLEET_MAX_INSTANCES + 1);
    const char *v[] = {f->instance_id, state, ttl, lim};
    PGresult *res = NULL;
    int64_t t0 = mclock_now_us();
    int rc = dbconn_query(f->db, fleet_sql_exchange, 4, v, t0 + f->ttl_us, &res, err, errlen);
    free(state);
    if (!rc && PQresultStatus(res) != PGRES_TUPLES_OK) {
        snprintf(err, errlen, "%s", PQresultErrorMessage(res));
        rc = -EIO;
    }
    if (!rc) {
        int64_t now = mclock_now_us();
        pthread_mutex_lock(&f->mutex);
        fleet_read_rows(f, res);
        f->last_ok_us = now;
        f->stats.exchanges++;
        f->stats.rtt_us = now - t0;
        fleet_set_up(f, true, NULL);
        pthread_mutex_unlock(&f->mutex);
    }
    PQclear(res);
    return rc;
}

/* ---- fleet budgets ------------------------------------------------------------------------ */

int64_t fleet_share(const struct fleet_share_in *in)
{
    int64_t n = (int64_t)in->others + 1;
    int64_t spare = in->total - (n + 1) * in->min;
    int64_t target = in->min;
    if (spare > 0) {
        int64_t d = in->demand + in->others_demand;
        target += d > 0 ? (int64_t)((double)spare * (double)in->demand / (double)d) : spare / n;
    }
    int64_t room = in->total - in->min - in->others_claims;
    int64_t share = target < room ? target : room;
    return share > in->min ? share : in->min;
}

struct fleet_lease fleet_lease_at(const struct fleet_lease *granted, const struct fleet_tier *t,
                                  int64_t now_us, int64_t valid_us)
{
    if (t->budget_workers <= 0)
        return (struct fleet_lease){0};
    if (granted->granted_us > 0 && now_us - granted->granted_us <= valid_us)
        return *granted;
    return (struct fleet_lease){.workers = t->min_workers, .conns = t->min_conns, .instances = 1};
}

/* Whether any tier published has a fleet budget (mutex held). */
static bool fleet_has_budgets(const struct fleet *f)
{
    for (size_t i = 0; i < f->nmine; i++)
        if (f->mine[i].budget_workers > 0)
            return true;
    return false;
}

/* This instance's shares from the others' rows just read, into pending[], and the claims its
 * row will carry: the share, or what its pools hold if more (mutex held). */
static void fleet_grant(struct fleet *f, struct fleet_lease *pending, int64_t t0)
{
    for (size_t i = 0; i < f->nmine; i++) {
        struct fleet_tier *m = &f->mine[i];
        pending[i] = (struct fleet_lease){0};
        m->claim_workers = m->claim_conns = 0;
        if (m->budget_workers <= 0)
            continue;
        struct fleet_share_in w = {
            .total = m->budget_workers, .min = m->min_workers, .demand = m->demand};
        struct fleet_share_in c = {
            .total = m->budget_conns, .min = m->min_conns, .demand = m->demand};
        for (size_t p = 0; p < f->npeers; p++) {
            for (size_t j = 0; j < f->peers[p].ntiers; j++) {
                const struct fleet_tier *o = &f->peers[p].tiers[j];
                if (strcmp(o->name, m->name) || (o->claim_workers == 0 && o->claim_conns == 0))
                    continue;
                w.others++;
                c.others++;
                w.others_demand += o->demand;
                c.others_demand += o->demand;
                w.others_claims += o->claim_workers;
                c.others_claims += o->claim_conns;
            }
        }
        pending[i] = (struct fleet_lease){.workers = fleet_share(&w),
                                          .conns = fleet_share(&c),
                                          .instances = w.others + 1,
                                          .granted_us = t0};
        m->claim_workers =
            pending[i].workers > m->held_workers ? pending[i].workers : m->held_workers;
        m->claim_conns = pending[i].conns > m->held_conns ? pending[i].conns : m->held_conns;
    }
}

/* Run one statement of the budget transaction and check its status. */
static int fleet_step(struct fleet *f, const char *sql, int n, const char *const *v,
                      int64_t deadline, ExecStatusType want, PGresult **keep, char *err,
                      size_t errlen)
{
    PGresult *res = NULL;
    int rc = dbconn_query(f->db, sql, n, v, deadline, &res, err, errlen);
    if (!rc && PQresultStatus(res) != want) {
        snprintf(err, errlen, "%s", PQresultErrorMessage(res));
        rc = -EIO;
    }
    if (!rc && keep)
        *keep = res;
    else
        PQclear(res);
    return rc;
}

/* One exchange with fleet budgets: lock, read the others, grant, write, commit. A failure
 * leaves the transaction open: the caller closes the connection, which rolls it back. */
static int fleet_exchange_budgets(struct fleet *f, char *err, size_t errlen)
{
    int64_t t0 = mclock_now_us(), deadline = t0 + f->ttl_us;
    char ttl[24], lim[24];
    snprintf(ttl, sizeof(ttl), "%lld", (long long)(f->ttl_us / 1000));
    snprintf(lim, sizeof(lim), "%d", FLEET_MAX_INSTANCES + 1);
    const char *rv[] = {f->instance_id, ttl, lim};
    PGresult *res = NULL;
    int rc = fleet_step(f, fleet_sql_lock, 0, NULL, deadline, PGRES_TUPLES_OK, NULL, err, errlen);
    if (!rc)
        rc = fleet_step(f, fleet_sql_read, 3, rv, deadline, PGRES_TUPLES_OK, &res, err, errlen);
    if (rc)
        return rc;
    struct fleet_lease pending[FLEET_MAX_TIERS];
    pthread_mutex_lock(&f->mutex);
    fleet_read_rows(f, res);
    fleet_grant(f, pending, t0);
    size_t n = f->nmine;
    char *state = fleet_encode(f->mine, f->nmine);
    pthread_mutex_unlock(&f->mutex);
    PQclear(res);
    const char *wv[] = {f->instance_id, state};
    rc = fleet_step(f, fleet_sql_write, 2, wv, deadline, PGRES_COMMAND_OK, NULL, err, errlen);
    free(state);
    if (!rc)
        rc =
            fleet_step(f, fleet_sql_commit, 0, NULL, deadline, PGRES_COMMAND_OK, NULL, err, errlen);
    if (rc)
        return rc;
    int64_t now = mclock_now_us();
    pthread_mutex_lock(&f->mutex);
    memcpy(f->lease, pending, n * sizeof(pending[0]));
    f->last_ok_us = now;
    f->stats.exchanges++;
    f->stats.rtt_us = now - t0;
    fleet_set_up(f, true, NULL);
    pthread_mutex_unlock(&f->mutex);
    return 0;
}

/* Wait until next_us or the stop pipe; false once stopping. */
static bool fleet_wait(struct fleet *f, int64_t next_us)
{
    int64_t left = next_us - mclock_now_us();
    struct pollfd pfd = {.fd = f->stop_pipe[0], .events = POLLIN};
    int ms = left > 0 ? (int)((left + 999) / 1000) : 0;
    return poll(&pfd, 1, ms) == 0;
}

static void fleet_strip(char *err)
{
    size_t n = strlen(err);
    while (n && err[n - 1] == '\n')
        err[--n] = '\0';
}

static void *fleet_main(void *arg)
{
    struct fleet *f = arg;
    int64_t next = mclock_now_us();
    while (fleet_wait(f, next)) {
        next = mclock_now_us() + f->interval_us;
        char err[300] = "";
        int rc = f->db ? 0 : fleet_connect(f, err, sizeof(err));
        pthread_mutex_lock(&f->mutex);
        bool budgets = fleet_has_budgets(f);
        pthread_mutex_unlock(&f->mutex);
        if (!rc)
            rc = budgets ? fleet_exchange_budgets(f, err, sizeof(err))
                         : fleet_exchange(f, err, sizeof(err));
        if (rc && fleet_stopping(f) && f->db) {
            dbconn_close(f->db); /* ended mid-statement: fleet_leave opens a fresh one */
            f->db = NULL;
        } else if (rc) {
            fleet_strip(err);
            fleet_failed(f, err);
        }
    }
    return NULL;
}

/* ---- public ------------------------------------------------------------------------------ */

int fleet_start(const struct fleet_cfg *cfg, struct fleet **out)
{
    if (!cfg->conninfo || !cfg->instance_id || cfg->interval_us <= 0 ||
        cfg->ttl_us < cfg->interval_us)
        return -EINVAL;
    struct fleet *f = xcalloc(1, sizeof(*f));
    f->conninfo = xstrdup(cfg->conninfo);
    f->instance_id = xstrdup(cfg->instance_id);
    f->interval_us = cfg->interval_us;
    f->ttl_us = cfg->ttl_us;
    f->peers = xcalloc(FLEET_MAX_INSTANCES, sizeof(*f->peers));
    pthread_mutex_init(&f->mutex, NULL);
    int rc = pipe2(f->stop_pipe, O_CLOEXEC);
    if (rc) {
        rc = -errno;
        goto fail_pipe;
    }
    rc = -pthread_create(&f->thread, NULL, fleet_main, f);
    if (rc)
        goto fail_thread;
    *out = f;
    return 0;
fail_thread:
    close(f->stop_pipe[0]);
    close(f->stop_pipe[1]);
fail_pipe:
    pthread_mutex_destroy(&f->mutex);
    free(f->peers);
    free(f->instance_id);
    free(f->conninfo);
    free(f);
    return rc;
}

/* Stop: delete this instance's row, on the thread's connection when it is idle, else on a
 * fresh one (the thread may have been stopped mid-exchange), within FLEET_STOP_DELETE_MS. */
static void fleet_leave(struct fleet *f)
{
    struct dbconn *db = f->db;
    f->db = NULL;
    int64_t deadline = mclock_now_us() + FLEET_STOP_DELETE_MS * 1000ll;
    char err[200];
    if (!db) {
        const struct dbconn_params p = {.conninfo = f->conninfo,
                                        .appname = "bulkhead-fleet",
                                        .statement_timeout_ms = FLEET_STOP_DELETE_MS};
        if (dbconn_open(&p, deadline, &db, err, sizeof(err)))
            return;
    }
    db->stop_fd = -1; /* the stop pipe is readable now: it would end the delete at once */
    PGresult *res = NULL;
    const char *v[] = {f->instance_id};
    if (dbconn_query(db, fleet_sql_leave, 1, v, deadline, &res, err, sizeof(err)) == 0)
        PQclear(res);
    dbconn_close(db);
}

void fleet_stop(struct fleet *f)
{
    if (!f)
        return;
    ssize_t w = write(f->stop_pipe[1], "x", 1);
    (void)w;
    pthread_join(f->thread, NULL);
    fleet_leave(f);
    close(f->stop_pipe[0]);
    close(f->stop_pipe[1]);
    pthread_mutex_destroy(&f->mutex);
    free(f->peers);
    free(f->instance_id);
    free(f->conninfo);
    free(f);
}

void fleet_publish(struct fleet *f, const struct fleet_tier *tiers, size_t n)
{
    if (n > FLEET_MAX_TIERS)
        n = FLEET_MAX_TIERS;
    pthread_mutex_lock(&f->mutex);
    memcpy(f->mine, tiers, n * sizeof(*tiers));
    f->nmine = n;
    pthread_mutex_unlock(&f->mutex);
}

/* Add one peer tier into a sum. */
static void fleet_add(struct fleet_sum *s, const struct fleet_tier *t)
{
    s->active += t->active;
    s->threatened += t->threatened;
    s->pressing += t->pressing;
    if (t->threatened && t->pressure > s->pressure)
        s->pressure = t->pressure;
    s->usage += t->usage;
    s->in_progress += t->in_progress;
    s->shed += t->shed;
}

bool fleet_view(struct fleet *f, const char *const *names, size_t n, struct fleet_sum *out)
{
    memset(out, 0, n * sizeof(*out));
    pthread_mutex_lock(&f->mutex);
    bool live = f->stats.up && f->last_ok_us && mclock_now_us() - f->last_ok_us <= f->ttl_us;
    for (size_t p = 0; live && p < f->npeers; p++)
        for (size_t j = 0; j < f->peers[p].ntiers; j++)
            for (size_t i = 0; i < n; i++)
                if (!strcmp(f->peers[p].tiers[j].name, names[i]))
                    fleet_add(&out[i], &f->peers[p].tiers[j]);
    pthread_mutex_unlock(&f->mutex);
    return live;
}

void fleet_leases(struct fleet *f, const char *const *names, size_t n, struct fleet_lease *out)
{
    memset(out, 0, n * sizeof(*out));
    pthread_mutex_lock(&f->mutex);
    /* Valid for ttl less one interval: the instance is back at its minimum before the others,
     * which wait out the full ttl, count its claim as gone. */
    int64_t now = mclock_now_us(), valid = f->ttl_us - f->interval_us;
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < f->nmine; j++)
            if (!strcmp(f->mine[j].name, names[i]))
                out[i] = fleet_lease_at(&f->lease[j], &f->mine[j], now, valid);
    pthread_mutex_unlock(&f->mutex);
}

void fleet_stats(struct fleet *f, struct fleet_stats *out)
{
    pthread_mutex_lock(&f->mutex);
    *out = f->stats;
    if (out->up && mclock_now_us() - f->last_ok_us > f->ttl_us) {
        out->up = false; /* the thread is stuck in a call: as good as down */
        snprintf(out->reason, sizeof(out->reason), "no exchange answered within %lld ms",
                 (long long)(f->ttl_us / 1000));
    } else if (out->up) {
        out->reason[0] = '\0';
    }
    pthread_mutex_unlock(&f->mutex);
}
