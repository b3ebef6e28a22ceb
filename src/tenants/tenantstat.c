/*
 * tenantstat: per-tenant accounting over the last minute, bounded (see tenantstat.h).
 *
 * A stripe is a small array scanned linearly: TENANTSTAT_STRIPE_KEYS entries of which the hash
 * is compared first, so a record costs one lock and at most that many compares of 64-bit
 * words, and a tenant taken in costs one more scan for the least weight (a min-heap would make
 * that O(log n), for a table this small a scan is cheaper). So a stripe is not a hash table
 * (htable.h): it takes only the keyed hash from there, to pick the stripe, since clients choose
 * the keys.
 */
#include "tenantstat.h"
#include "htable.h"
#include "xalloc.h"

#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct ts_entry {
    uint64_t hash;                 /* htable_hash of key */
    int64_t err;                   /* the weight inherited when taken in */
    int64_t entered;               /* the minute it was taken in */
    struct tenantstat_counts cur;  /* this minute (the stripe's) */
    struct tenantstat_counts prev; /* the minute before */
    char key[TENANTSTAT_KEY_MAX + 1];
};

struct ts_stripe {
    pthread_mutex_t mutex;                          /* guards every field below */
    int64_t minute;                                 /* the minute cur counts (now / window) */
    unsigned n;                                     /* entries in use, e[0..n-1] */
    struct tenantstat_counts total_cur, total_prev; /* every tenant of the stripe */
    struct ts_entry e[TENANTSTAT_STRIPE_KEYS];
};

struct tenantstat {
    size_t ntiers;
    struct ts_stripe *stripes; /* owned: ntiers * TENANTSTAT_STRIPES, tier-major */
};

static const char *const ts_reason_names[TENANTSTAT_REASONS] = {
    [TENANTSTAT_RATE_LIMITED] = "rate_limited",
    [TENANTSTAT_DB_TIME_EXHAUSTED] = "db_time_exhausted",
    [TENANTSTAT_SHED] = "shed",
    [TENANTSTAT_BULKHEAD_FULL] = "bulkhead_full",
    [TENANTSTAT_QUEUE_TIMEOUT] = "queue_timeout",
    [TENANTSTAT_POOL_TIMEOUT] = "pool_timeout",
    [TENANTSTAT_CIRCUIT_OPEN] = "circuit_open",
};

const char *tenantstat_reason_name(enum tenantstat_reason r)
{
    return r < TENANTSTAT_REASONS ? ts_reason_names[r] : "none";
}

int tenantstat_field_by_name(const char *name)
{
    static const struct {
        const char *name;
        int field;
    } by[] = {{"db_time", TENANTSTAT_DB_US},
              {"queue_wait", TENANTSTAT_QUEUE_US},
              {"pool_wait", TENANTSTAT_POOL_US},
              {"requests", TENANTSTAT_REQUESTS},
              {"refused", TENANTSTAT_REFUSED}};
    for (size_t i = 0; i < sizeof(by) / sizeof(by[0]); i++)
        if (!strcmp(name, by[i].name))
            return by[i].field;
    return -1;
}

struct tenantstat *tenantstat_create(size_t ntiers)
{
    struct tenantstat *ts = xcalloc(1, sizeof(*ts));
    ts->ntiers = ntiers;
    ts->stripes = xcalloc(ntiers * TENANTSTAT_STRIPES, sizeof(*ts->stripes));
    for (size_t i = 0; i < ntiers * TENANTSTAT_STRIPES; i++)
        pthread_mutex_init(&ts->stripes[i].mutex, NULL);
    return ts;
}

void tenantstat_destroy(struct tenantstat *ts)
{
    if (!ts)
        return;
    for (size_t i = 0; i < ts->ntiers * TENANTSTAT_STRIPES; i++)
        pthread_mutex_destroy(&ts->stripes[i].mutex);
    free(ts->stripes);
    free(ts);
}

/* The share of the previous minute still within the last window at now, as num / W. */
static int64_t ts_prev_num(int64_t now_us)
{
    return TENANTSTAT_WINDOW_US - now_us % TENANTSTAT_WINDOW_US;
}

/* cur and prev (counted in minute smin) seen at minute m: the last window's figures. */
static void ts_view(const struct tenantstat_counts *cur, const struct tenantstat_counts *prev,
                    int64_t smin, int64_t m, int64_t num, struct tenantstat_counts *out)
{
    for (int f = 0; f < TENANTSTAT_FIELDS; f++) {
        int64_t c = 0, p = 0;
        if (smin == m) {
            c = cur->v[f];
            p = prev->v[f];
        } else if (smin == m - 1) {
            p = cur->v[f];
        }
        /* p * num / W, in two halves: p may be minutes of microseconds times 6e7. */
        out->v[f] = c + p / TENANTSTAT_WINDOW_US * num +
                    (p % TENANTSTAT_WINDOW_US) * num / TENANTSTAT_WINDOW_US;
    }
}

static int64_t ts_weight_now(const struct ts_entry *e, int64_t smin, int64_t m, int64_t num)
{
    int64_t c = smin == m ? e->cur.v[TENANTSTAT_WEIGHT] : 0;
    int64_t p = smin == m ? e->prev.v[TENANTSTAT_WEIGHT]
                          : (smin == m - 1 ? e->cur.v[TENANTSTAT_WEIGHT] : 0);
    return c + p / TENANTSTAT_WINDOW_US * num +
           (p % TENANTSTAT_WINDOW_US) * num / TENANTSTAT_WINDOW_US;
}

/* Move the stripe to minute m: the current minute becomes the previous one (or both are gone
 * when more than a minute passed), and tenants with nothing left in the window leave. Stripe
 * mutex held. */
static void ts_roll(struct ts_stripe *s, int64_t m)
{
    if (s->minute == m)
        return;
    bool adjacent = s->minute == m - 1;
    s->total_prev = adjacent ? s->total_cur : (struct tenantstat_counts){0};
    memset(&s->total_cur, 0, sizeof(s->total_cur));
    unsigned kept = 0;
    for (unsigned i = 0; i < s->n; i++) {
        struct ts_entry *e = &s->e[i];
        if (!adjacent || e->cur.v[TENANTSTAT_WEIGHT] == 0)
            continue;
        e->prev = e->cur;
        memset(&e->cur, 0, sizeof(e->cur));
        if (kept != i)
            s->e[kept] = *e;
        kept++;
    }
    s->n = kept;
    s->minute = m;
}

static void ts_add(struct tenantstat_counts *c, const struct tenantstat_sample *smp, int64_t w)
{
    c->v[TENANTSTAT_DB_US] += smp->db_us;
    c->v[TENANTSTAT_QUEUE_US] += smp->queue_us;
    c->v[TENANTSTAT_POOL_US] += smp->pool_us;
    c->v[TENANTSTAT_REQUESTS]++;
    if (smp->refused < TENANTSTAT_REASONS) {
        c->v[TENANTSTAT_REFUSED]++;
        c->v[TENANTSTAT_REFUSED_BY + smp->refused]++;
    }
    for (int r = 0; r < TENANTSTAT_REASONS; r++)
        if (smp->shadow & (1u << r))
            c->v[TENANTSTAT_SHADOW_BY + r]++;
    c->v[TENANTSTAT_WEIGHT] += w;
}

/* The entry of key in s, taken in when absent (space-saving). Stripe mutex held. */
static struct ts_entry *ts_entry_of(struct ts_stripe *s, uint64_t h, const char *key, int64_t m,
                                    int64_t num)
{
    for (unsigned i = 0; i < s->n; i++)
        if (s->e[i].hash == h && !strcmp(s->e[i].key, key))
            return &s->e[i];
    struct ts_entry *e;
    int64_t inherit = 0;
    if (s->n < TENANTSTAT_STRIPE_KEYS) {
        e = &s->e[s->n++];
    } else {
        e = &s->e[0];
        inherit = ts_weight_now(e, m, m, num);
        for (unsigned i = 1; i < s->n; i++) {
            int64_t w = ts_weight_now(&s->e[i], m, m, num);
            if (w < inherit) {
                inherit = w;
                e = &s->e[i];
            }
        }
    }
    memset(e, 0, offsetof(struct ts_entry, key));
    e->hash = h;
    e->err = inherit;
    e->entered = m;
    e->cur.v[TENANTSTAT_WEIGHT] = inherit;
    snprintf(e->key, sizeof(e->key), "%s", key);
    return e;
}

void tenantstat_record(struct tenantstat *ts, size_t tier, const char *key,
                       const struct tenantstat_sample *smp, int64_t now_us)
{
    if (tier >= ts->ntiers || !key[0])
        return;
    uint64_t h = htable_hash_str(key);
    struct ts_stripe *s = &ts->stripes[tier * TENANTSTAT_STRIPES + h % TENANTSTAT_STRIPES];
    int64_t m = now_us / TENANTSTAT_WINDOW_US, num = ts_prev_num(now_us);
    int64_t w = smp->db_us + smp->queue_us + smp->pool_us + 1000; /* 1 ms per request */
    pthread_mutex_lock(&s->mutex);
    ts_roll(s, m);
    ts_add(&ts_entry_of(s, h, key, m, num)->cur, smp, w);
    ts_add(&s->total_cur, smp, w);
    pthread_mutex_unlock(&s->mutex);
}

/* The row of e at minute m (stripe mutex held). */
static void ts_row(const struct ts_stripe *s, const struct ts_entry *e, int64_t m, int64_t num,
                   struct tenantstat_row *out)
{
    snprintf(out->key, sizeof(out->key), "%s", e->key);
    /* Two minutes after it was taken in, nothing it inherited is in the window any more. */
    out->err = m - e->entered >= 2 ? 0 : e->err;
    ts_view(&e->cur, &e->prev, s->minute, m, num, &out->c);
}

static int ts_cmp(const void *a, const void *b, void *ctx)
{
    const struct tenantstat_row *x = a, *y = b;
    int by = *(const int *)ctx;
    int64_t vx = x->c.v[by], vy = y->c.v[by];
    if (vx != vy)
        return vx > vy ? -1 : 1;
    return strcmp(x->key, y->key);
}

size_t tenantstat_top(struct tenantstat *ts, size_t tier, int by, size_t max, int64_t now_us,
                      struct tenantstat_row *out, struct tenantstat_counts *total, size_t *held)
{
    memset(total, 0, sizeof(*total));
    *held = 0;
    if (tier >= ts->ntiers || by < 0 || by >= TENANTSTAT_FIELDS)
        return 0;
    size_t cap = TENANTSTAT_STRIPES * TENANTSTAT_STRIPE_KEYS, n = 0;
    struct tenantstat_row *rows = xcalloc(cap, sizeof(*rows));
    int64_t m = now_us / TENANTSTAT_WINDOW_US, num = ts_prev_num(now_us);
    for (size_t i = 0; i < TENANTSTAT_STRIPES; i++) {
        struct ts_stripe *s = &ts->stripes[tier * TENANTSTAT_STRIPES + i];
        struct tenantstat_counts t;
        pthread_mutex_lock(&s->mutex);
        ts_view(&s->total_cur, &s->total_prev, s->minute, m, num, &t);
        for (unsigned j = 0; j < s->n; j++) {
            struct tenantstat_row *row = &rows[n];
            ts_row(s, &s->e[j], m, num, row);
            if (row->c.v[TENANTSTAT_REQUESTS] > 0)
                n++; /* one with nothing left in the window is not shown */
        }
        pthread_mutex_unlock(&s->mutex);
        for (int f = 0; f < TENANTSTAT_FIELDS; f++)
            total->v[f] += t.v[f];
    }
    qsort_r(rows, n, sizeof(*rows), ts_cmp, &by);
    *held = n;
    size_t k = n < max ? n : max;
    memcpy(out, rows, k * sizeof(*rows));
    free(rows);
    return k;
}

bool tenantstat_get(struct tenantstat *ts, size_t tier, const char *key, int64_t now_us,
                    struct tenantstat_row *out)
{
    if (tier >= ts->ntiers)
        return false;
    uint64_t h = htable_hash_str(key);
    struct ts_stripe *s = &ts->stripes[tier * TENANTSTAT_STRIPES + h % TENANTSTAT_STRIPES];
    int64_t m = now_us / TENANTSTAT_WINDOW_US, num = ts_prev_num(now_us);
    bool found = false;
    pthread_mutex_lock(&s->mutex);
    for (unsigned i = 0; i < s->n && !found; i++)
        if (s->e[i].hash == h && !strcmp(s->e[i].key, key)) {
            ts_row(s, &s->e[i], m, num, out);
            found = out->c.v[TENANTSTAT_REQUESTS] > 0;
        }
    pthread_mutex_unlock(&s->mutex);
    return found;
}
