/*
 * auth: the key table and its refresher thread (see auth.h).
 *
 * The table is an htable (htable.h) over the binary SHA-256 of each key: that hash is uniformly
 * distributed and beyond a client's choosing, so its first 8 bytes are the table's hash and no
 * keyed hash is needed over it. The refresher holds one
 * connection (dbconn.h) that LISTENs on AUTH_NOTIFY_CHANNEL and waits on it with poll(),
 * bounded by the TTL; a self-pipe ends the wait, and any wait of the connection, at shutdown.
 * libpq reads a notification that arrives during a reload together with the reload's
 * results and queues it (PQnotifies), where poll() on the socket would never see it: so after
 * every reload the queue is read, and anything in it means a reload again. The table also
 * counts each tier's tenants and overrides, once per load, for the metrics. If the database
 * cannot be read, the last table stays in force (availability over freshness) and the failure
 * is logged and counted.
 */
#include "auth.h"
#include "compiler.h"
#include "dbconn.h"
#include "htable.h"
#include "log.h"
#include "mclock.h"
#include "params.h"
#include "xalloc.h"

#include <errno.h>
#include <fcntl.h>
#include <libpq-fe.h>
#include <openssl/evp.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

struct auth_entry {
    struct htable_node node; /* in its table's index */
    unsigned char hash[32];  /* SHA-256 of the key */
    char tenant[AUTH_TENANT_MAX + 1];
    char tier[33];
    int64_t rate_limit; /* the tenant's own rate limit; -1: the tier's */
    int64_t db_time;    /* its own db_time_ms_per_min; -1: the tier's */
};

/* How many tenants of one tier the table holds (for metrics). */
struct auth_tier_count {
    char tier[33];
    size_t tenants, overrides;
};

struct auth_table {
    struct auth_entry *entries; /* owned: keys of them */
    struct htable index;        /* the entries by hash */
    size_t keys;
    struct auth_tier_count tiers[AUTH_TIERS_COUNTED]; /* by tier, in the order met */
    size_t ntiers;
};

struct auth {
    char *conninfo; /* owned */
    int64_t ttl_us;
    pthread_t thread;
    int stop_pipe[2];      /* writing to [1] ends the refresher and its connection's waits */
    struct dbconn *listen; /* the refresher's (auth_start's before it runs); NULL when lost */

    pthread_rwlock_t lock;    /* guards table */
    struct auth_table *table; /* owned; NULL until the first load */

    atomic_uint_least64_t reloads, reload_failures, accepted, rejected;
    atomic_int_least64_t loaded_wall_us;
};

void auth_hash_key(const char *key, char out[65])
{
    unsigned char md[32];
    unsigned int mdlen = 0;
    EVP_Digest(key, strlen(key), md, &mdlen, EVP_sha256(), NULL);
    static const char hex[] = "0123456789abcdef";
    for (int i = 0; i < 32; i++) {
        out[2 * i] = hex[md[i] >> 4];
        out[2 * i + 1] = hex[md[i] & 15];
    }
    out[64] = '\0';
}

int auth_new_key(char out[AUTH_KEY_LEN + 1])
{
    unsigned char raw[32];
    if (getrandom(raw, sizeof(raw), 0) != (ssize_t)sizeof(raw))
        return -EIO;
    unsigned char b64[48];
    EVP_EncodeBlock(b64, raw, sizeof(raw)); /* 44 chars with one '=' of padding */
    memcpy(out, "bh_", 3);
    size_t n = 3;
    for (size_t i = 0; i < 44 && b64[i] != '=' && n < AUTH_KEY_LEN; i++) {
        char c = (char)b64[i];
        out[n++] = c == '+' ? '-' : c == '/' ? '_' : c;
    }
    out[n] = '\0';
    return n == AUTH_KEY_LEN ? 0 : -EIO;
}

static int auth_hex_to_bin(const char *hex, unsigned char out[32])
{
    if (strlen(hex) != 64)
        return -EINVAL;
    for (int i = 0; i < 32; i++) {
        unsigned v = 0;
        for (int j = 0; j < 2; j++) {
            char c = hex[2 * i + j];
            v <<= 4;
            if (c >= '0' && c <= '9')
                v |= (unsigned)(c - '0');
            else if (c >= 'a' && c <= 'f')
                v |= (unsigned)(c - 'a' + 10);
            else
                return -EINVAL;
        }
        out[i] = (unsigned char)v;
    }
    return 0;
}

static uint64_t auth_index_hash(const unsigned char hash[32])
{
    uint64_t h;
    memcpy(&h, hash, sizeof(h));
    return h;
}

static void auth_table_free(struct auth_table *t)
{
    if (!t)
        return;
    htable_destroy(&t->index);
    free(t->entries);
    free(t);
}

/* Count e in its tier's row of t. */
static void auth_count(struct auth_table *t, const struct auth_entry *e)
{
    size_t i = 0;
    while (i < t->ntiers && strcmp(t->tiers[i].tier, e->tier))
        i++;
    if (i == AUTH_TIERS_COUNTED)
        return;
    if (i == t->ntiers)
        memcpy(t->tiers[t->ntiers++].tier, e->tier, sizeof(e->tier));
    t->tiers[i].tenants++;
    t->tiers[i].overrides += e->rate_limit >= 0;
}

/* Read every live key. NULL on failure (err says why, *lost whether the connection must be
 * closed: gone, silent, or stopped mid-statement). */
static struct auth_table *auth_load(struct dbconn *db, bool *lost, char *err, size_t errlen)
{
    PGresult *res = NULL;
    int64_t deadline =
        mclock_now_us() + (AUTH_STATEMENT_TIMEOUT_MS + AUTH_ANSWER_GRACE_MS) * 1000ll;
    int rc = dbconn_query(db,
                          "SELECT key_hash, name, tier, coalesce(rate_limit, -1), "
                          "coalesce(db_time_ms_per_min, -1) FROM tenants "
                          "WHERE revoked_at IS NULL",
                          0, NULL, deadline, &res, err, errlen);
    *lost = rc != 0 || PQstatus(db->pg) != CONNECTION_OK;
    if (rc)
        return NULL;
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        snprintf(err, errlen, "%s", PQresultErrorMessage(res));
        PQclear(res);
        return NULL;
    }
    int rows = PQntuples(res);
    struct auth_table *t = xcalloc(1, sizeof(*t));
    t->entries = xcalloc(rows ? (size_t)rows : 1, sizeof(*t->entries));
    htable_init(&t->index, (size_t)rows);
    for (int i = 0; i < rows; i++) {
        unsigned char hash[32];
        if (auth_hex_to_bin(PQgetvalue(res, i, 0), hash))
            continue; /* not a hash this server wrote: such a row can match no key */
        struct auth_entry *e = &t->entries[t->keys];
        memcpy(e->hash, hash, 32);
        htable_insert(&t->index, &e->node, auth_index_hash(hash));
        snprintf(e->tenant, sizeof(e->tenant), "%s", PQgetvalue(res, i, 1));
        snprintf(e->tier, sizeof(e->tier), "%s", PQgetvalue(res, i, 2));
        e->rate_limit = strtoll(PQgetvalue(res, i, 3), NULL, 10);
        e->db_time = strtoll(PQgetvalue(res, i, 4), NULL, 10);
        auth_count(t, e);
        t->keys++;
    }
    PQclear(res);
    return t;
}

/* A connection that LISTENs on AUTH_NOTIFY_CHANNEL, or NULL (err says why). */
static struct dbconn *auth_connect(struct auth *a, char *err, size_t errlen)
{
    const struct dbconn_params p = {.conninfo = a->conninfo,
                                    .appname = "bulkhead-auth",
                                    .statement_timeout_ms = AUTH_STATEMENT_TIMEOUT_MS,
                                    .stop_fd = &a->stop_pipe[0]};
    struct dbconn *db = NULL;
    if (dbconn_open(&p, mclock_now_us() + AUTH_CONNECT_TIMEOUT_MS * 1000ll, &db, err, errlen))
        return NULL;
    PGresult *res = NULL;
    int rc =
        dbconn_query(db, "LISTEN " AUTH_NOTIFY_CHANNEL, 0, NULL,
                     mclock_now_us() + (AUTH_STATEMENT_TIMEOUT_MS + AUTH_ANSWER_GRACE_MS) * 1000ll,
                     &res, err, errlen);
    if (!rc && PQresultStatus(res) != PGRES_COMMAND_OK) {
        snprintf(err, errlen, "%s", PQresultErrorMessage(res));
        rc = -EIO;
    }
    PQclear(res);
    if (rc) {
        dbconn_close(db);
        return NULL;
    }
    return db;
}

/* Whether auth_stop has begun. */
static bool auth_stopping(struct auth *a)
{
    struct pollfd pfd = {.fd = a->stop_pipe[0], .events = POLLIN};
    return poll(&pfd, 1, 0) > 0;
}

/* Refresher thread (and start-up): rebuild the table. */
static int auth_reload(struct auth *a)
{
    char err[300] = "";
    bool lost = false;
    if (!a->listen)
        a->listen = auth_connect(a, err, sizeof(err));
    struct auth_table *t = a->listen ? auth_load(a->listen, &lost, err, sizeof(err)) : NULL;
    if (!t) {
        if (lost) {
            dbconn_close(a->listen);
            a->listen = NULL;
        }
        if (auth_stopping(a))
            return -ECANCELED; /* abandoned, not failed */
        size_t n = strlen(err);
        while (n && err[n - 1] == '\n')
            err[--n] = '\0';
        atomic_fetch_add(&a->reload_failures, 1);
        log_warn("auth_reload", "cannot reload API keys (keeping the previous table): %s", err);
        return -EIO;
    }
    pthread_rwlock_wrlock(&a->lock);
    struct auth_table *old = a->table;
    a->table = t;
    pthread_rwlock_unlock(&a->lock);
    auth_table_free(old);
    atomic_fetch_add(&a->reloads, 1);
    atomic_store(&a->loaded_wall_us, mclock_wall_us());
    log_debug("auth_reload", "%zu API keys loaded", t->keys);
    return 0;
}

/* Refresher thread: whether a change was notified since the last look (the notifications read
 * from the socket now, and those libpq read along with a reload's results), or the connection
 * was lost (then it is closed: the reload reconnects, and reads what it missed). */
static bool auth_notified(struct auth *a)
{
    if (!a->listen)
        return false;
    PQconsumeInput(a->listen->pg);
    bool notified = false;
    PGnotify *n;
    while ((n = PQnotifies(a->listen->pg))) {
        notified = true;
        PQfreemem(n);
    }
    if (PQstatus(a->listen->pg) != CONNECTION_OK) {
        dbconn_close(a->listen);
        a->listen = NULL;
        notified = true;
    }
    return notified;
}

static void *auth_main(void *arg)
{
    struct auth *a = arg;
    int64_t next = mclock_now_us() + a->ttl_us;
    bool reload = auth_notified(a); /* a change made during auth_start's load */
    for (;;) {
        if (reload) {
            /* Until no change was notified during the last reload: each one may have committed
             * after that reload's snapshot. */
            do
                auth_reload(a);
            while (!auth_stopping(a) && auth_notified(a));
            next = mclock_now_us() + a->ttl_us;
        }
        struct pollfd pfd[2] = {{.fd = a->stop_pipe[0], .events = POLLIN},
                                {.fd = a->listen ? PQsocket(a->listen->pg) : -1, .events = POLLIN}};
        int64_t left = next - mclock_now_us();
        int ms = left > 0 ? (int)((left + 999) / 1000) : 0;
        int r = poll(pfd, 2, ms);
        if (r > 0 && pfd[0].revents)
            break;
        reload = (r > 0 && pfd[1].revents && auth_notified(a)) || mclock_now_us() >= next;
    }
    return NULL;
}

int auth_start(const char *conninfo, int64_t ttl_ms, struct auth **out, char *err, size_t errlen)
{
    struct auth *a = xcalloc(1, sizeof(*a));
    a->conninfo = xstrdup(conninfo);
    a->ttl_us = (ttl_ms > AUTH_TTL_MIN_MS ? ttl_ms : AUTH_TTL_MIN_MS) * 1000;
    pthread_rwlock_init(&a->lock, NULL);
    if (pipe2(a->stop_pipe, O_CLOEXEC)) {
        snprintf(err, errlen, "pipe: %s", strerror(errno));
        goto fail;
    }
    if (auth_reload(a)) {
        snprintf(err, errlen,
                 "AUTH_MODE=apikey: cannot read the tenants table (is init-db.sql "
                 "applied?)");
        goto fail_pipe;
    }
    if (pthread_create(&a->thread, NULL, auth_main, a)) {
        snprintf(err, errlen, "cannot start the API-key refresher thread");
        goto fail_pipe;
    }
    pthread_setname_np(a->thread, "auth");
    *out = a;
    return 0;
fail_pipe:
    close(a->stop_pipe[0]);
    close(a->stop_pipe[1]);
fail:
    dbconn_close(a->listen);
    auth_table_free(a->table);
    pthread_rwlock_destroy(&a->lock);
    free(a->conninfo);
    free(a);
    return -EIO;
}

void auth_stop(struct auth *a)
{
    if (!a)
        return;
    ssize_t w = write(a->stop_pipe[1], "x", 1);
    (void)w;
    pthread_join(a->thread, NULL);
    close(a->stop_pipe[0]);
    close(a->stop_pipe[1]);
    dbconn_close(a->listen);
    auth_table_free(a->table);
    pthread_rwlock_destroy(&a->lock);
    free(a->conninfo);
    free(a);
}

/* Constant-time equality of two 32-byte hashes. */
static bool auth_hash_equal(const unsigned char *x, const unsigned char *y)
{
    unsigned char d = 0;
    for (int i = 0; i < 32; i++)
        d |= (unsigned char)(x[i] ^ y[i]);
    return d == 0;
}

int auth_identify(struct auth *a, const char *authorization, const char *x_api_key,
                  struct auth_identity *out)
{
    const char *key = params_bearer(authorization);
    if (!key)
        key = x_api_key;
    /* Anything that is not shaped like a key cannot be one; hashing it would be wasted. */
    if (!key || strlen(key) != AUTH_KEY_LEN || strncmp(key, "bh_", 3) != 0) {
        atomic_fetch_add_explicit(&a->rejected, 1, memory_order_relaxed);
        return -EACCES;
    }
    unsigned char md[32];
    unsigned int mdlen = 0;
    EVP_Digest(key, AUTH_KEY_LEN, md, &mdlen, EVP_sha256(), NULL);
    int rc = -EACCES;
    pthread_rwlock_rdlock(&a->lock);
    const struct auth_table *t = a->table;
    if (!t) {
        rc = -EAGAIN;
    } else {
        uint64_t h = auth_index_hash(md);
        for (struct htable_node *n = htable_first(&t->index, h); n; n = htable_next(n, h)) {
            const struct auth_entry *e = container_of(n, struct auth_entry, node);
            if (auth_hash_equal(e->hash, md)) {
                memcpy(out->tenant, e->tenant, sizeof(out->tenant));
                memcpy(out->tier, e->tier, sizeof(out->tier));
                out->own_rate_limit = e->rate_limit >= 0;
                out->rate_limit = e->rate_limit;
                out->own_db_time = e->db_time >= 0;
                out->db_time_ms_per_min = e->db_time;
                rc = 0;
                break;
            }
        }
    }
    pthread_rwlock_unlock(&a->lock);
    atomic_fetch_add_explicit(rc == 0 ? &a->accepted : &a->rejected, 1, memory_order_relaxed);
    return rc;
}

void auth_stats(struct auth *a, struct auth_stats *out)
{
    pthread_rwlock_rdlock(&a->lock);
    out->keys = a->table ? a->table->keys : 0;
    pthread_rwlock_unlock(&a->lock);
    out->reloads = atomic_load(&a->reloads);
    out->reload_failures = atomic_load(&a->reload_failures);
    out->accepted = atomic_load(&a->accepted);
    out->rejected = atomic_load(&a->rejected);
    out->loaded_wall_us = atomic_load(&a->loaded_wall_us);
}

void auth_tier_counts(struct auth *a, const char *tier, size_t *tenants, size_t *overrides)
{
    *tenants = *overrides = 0;
    pthread_rwlock_rdlock(&a->lock);
    const struct auth_table *t = a->table;
    for (size_t i = 0; t && i < t->ntiers; i++) {
        if (!strcmp(t->tiers[i].tier, tier)) {
            *tenants = t->tiers[i].tenants;
            *overrides = t->tiers[i].overrides;
            break;
        }
    }
    pthread_rwlock_unlock(&a->lock);
}
