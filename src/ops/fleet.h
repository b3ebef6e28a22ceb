/*
 * fleet: what the other instances' tiers are doing, exchanged through PostgreSQL.
 *
 * Every instance defends only itself unless it knows the others: with enterprise's clients on
 * instance A and a free storm on B, B saw no enterprise request and never gated free, while both
 * shared the database and the CPUs (enterprise kept 0.63 of its figure beside a sink). So each
 * instance publishes, every controller interval, each tier's state (active, threatening its
 * objective, pressing its limit, usage, in progress, shed) as one row of an unlogged table, and
 * reads the rows of the others in the same statement: one round trip per interval and instance
 * (four, in one short transaction, while a tier has a fleet budget), never one per request. The
 * capacity controller then gates a tier while a higher tier is active anywhere, and cuts it while a
 * higher tier is threatened anywhere (fleet_view).
 *
 * Why PostgreSQL and not Redis: every deployment has it (Redis is optional), and it is the
 * resource being defended, so a fleet that cannot reach it has nothing left to share. The table
 * (bulkhead_fleet, created on first use) is unlogged: the rows are seconds old state, not data.
 * A row not refreshed within ttl is ignored (its instance is gone); rows older than ten minutes
 * are deleted by the next exchange; an instance that stops deletes its own.
 *
 * Without the medium (connect or exchange failed, or no answer within ttl) the view is empty and
 * `up` false: each instance falls back to local control, logs fleet_medium_down once, and logs
 * fleet_medium_up when an exchange succeeds again.
 *
 * Fleet budgets (a tier's budget_scope "fleet"): the tier's workers and db_max are totals for
 * the fleet. Each instance publishes, per such tier, its demand (requests in progress and
 * queued) and its claim (the share it was granted, or what its pools hold if more: a shrink
 * takes effect as work is returned). At each exchange, under one advisory lock so that no two
 * instances grant from the same free room, it reads the others' live claims and demands and
 * takes its share (fleet_share): at least the minimum, its demand's part of what the minimums
 * leave, and never more than the total less the others' claims and one minimum kept for a
 * newcomer. The share is a lease: valid for ttl less one interval from the start of the
 * exchange that granted it, after which (the medium lost) the instance falls back to its
 * minimum, before the others (which wait out the full ttl) stop counting its claim. A new instance
 * takes its minimum at once; a dead instance's claim stops counting when its row is older than ttl.
 *
 * DESIGN: one thread of its own (blocking libpq, every wait bounded by a deadline and by the stop
 * pipe). fleet_publish (janitor thread) and fleet_view / fleet_stats / fleet_leases (any
 * thread) take the mutex, which guards the published copy, the parsed rows of the others, the
 * leases and the counters; the thread holds it only to copy in and out and to compute the
 * shares, never across a database call (the advisory lock of a budget exchange is a database
 * lock, held by the thread's transaction across its read and write, not by the mutex).
 */
#ifndef BULKHEAD_FLEET_H
#define BULKHEAD_FLEET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define FLEET_NAME_MAX      33  /* a tier name and its NUL (tiers.h: at most 32 characters) */
#define FLEET_MAX_TIERS     16  /* tiers published per instance */
#define FLEET_MAX_INSTANCES 256 /* rows read per exchange; more are counted as dropped */
#define FLEET_KEEP_MINUTES  10  /* rows older than this are deleted */

struct fleet;

/* One tier's state on one instance. */
struct fleet_tier {
    char name[FLEET_NAME_MAX];
    bool active;         /* had a request within the capacity controller's active time */
    bool threatened;     /* its last verdict threatens its latency objective, blaming the
                            tiers below (capctl.h) */
    bool pressing;       /* uses enough of its limit that it may be cut */
    double pressure;     /* when threatened, its measured latency / objective (> 1) */
    double usage;        /* requests in progress, on average, recently */
    int64_t in_progress; /* requests admitted and not finished */
    uint64_t shed;       /* requests the capacity controller refused, in total */
    /* Fleet budgets: zero for a tier whose budget is per instance (budget_scope "instance"). */
    int64_t budget_workers, budget_conns; /* the fleet's totals (workers, db_max); published by
                                             this instance, never sent */
    int64_t min_workers, min_conns;       /* the least shares (tiers_min_share; never sent) */
    int64_t demand;                       /* requests in progress and queued */
    int64_t held_workers, held_conns;     /* this instance's pools now (never sent) */
    int64_t claim_workers, claim_conns;   /* sent: max(the share granted, what is held) */
};

/* One tier over the other instances (this one excluded): how many of them see it so. */
struct fleet_sum {
    size_t active, threatened, pressing;
    double pressure; /* the worst among the instances where it threatens its objective */
    double usage;
    int64_t in_progress;
    uint64_t shed;
};

struct fleet_stats {
    bool up;                 /* the last exchange succeeded within ttl */
    size_t instances;        /* other live instances seen at the last exchange */
    uint64_t exchanges;      /* successful exchanges */
    uint64_t failures;       /* failed connects and exchanges */
    uint64_t dropped;        /* rows ignored (malformed, or past FLEET_MAX_INSTANCES) */
    int64_t rtt_us;          /* the last exchange's round trip */
    int64_t changed_wall_us; /* when `up` last changed (wall clock) */
    char reason[160];        /* while not up: the last failure ("" before the first exchange) */
};

/* One tier's fleet budget on this instance: the share in force and how many share it. */
struct fleet_lease {
    int64_t workers, conns; /* this instance's share */
    size_t instances;       /* instances sharing the totals, this one included */
    int64_t granted_us;     /* monotonic start of the exchange that granted it, 0: none */
};

/* The share rule, for one total (README: Fleet budgets). */
struct fleet_share_in {
    int64_t total;         /* the fleet's total */
    int64_t min;           /* the least share (tiers_min_share) */
    int64_t demand;        /* this instance's demand */
    int64_t others_demand; /* the other live instances' demands, summed */
    int64_t others_claims; /* ... and their claims */
    size_t others;         /* other live instances sharing the total */
};

struct fleet_cfg {
    const char *conninfo;    /* DATABASE_URL; copied */
    const char *instance_id; /* this instance's id, unique in the fleet; copied */
    int64_t interval_us;     /* one exchange this often */
    int64_t ttl_us;          /* a row older than this is ignored; the view too */
};

/* Start the thread (it connects in the background). 0, -EINVAL or -ENOMEM. */
int fleet_start(const struct fleet_cfg *cfg, struct fleet **out)
    __attribute__((warn_unused_result));
/* Stop the thread (within about a second whatever the database does), delete this instance's
 * row if the database answers at once, and free. NULL is a no-op. */
void fleet_stop(struct fleet *f);

/* Janitor thread: this instance's tiers, sent at the next exchange (n at most FLEET_MAX_TIERS). */
void fleet_publish(struct fleet *f, const struct fleet_tier *tiers, size_t n);

/* The other instances' state of each of the n tiers named (by name), into out[n]. Returns
 * whether the view is live; if not, out is all zeros (local control). Any thread. */
bool fleet_view(struct fleet *f, const char *const *names, size_t n, struct fleet_sum *out);

void fleet_stats(struct fleet *f, struct fleet_stats *out);

/* The share, shared by N = others + 1 instances with one minimum kept for a newcomer:
 * spare = total - (N + 1) x min; target = min + spare x demand / (demand + others_demand)
 * (spare / N when nobody has demand; min when spare <= 0); share = max(min, min(target,
 * total - min - others_claims)). */
int64_t fleet_share(const struct fleet_share_in *in);

/* The lease of the n tiers named, as of now (mclock): a tier's share when its lease was granted
 * within ttl, else its minimum (instances 1). Tiers not fleet-scoped in the last publish read
 * zeros. Any thread. */
void fleet_leases(struct fleet *f, const char *const *names, size_t n, struct fleet_lease *out);
/* The same rule at now_us, for one lease and its tier (exposed for the unit test). */
struct fleet_lease fleet_lease_at(const struct fleet_lease *granted, const struct fleet_tier *t,
                                  int64_t now_us, int64_t ttl_us);

/* The state JSON one instance publishes (malloc'd), and its parse: exposed for the unit test.
 * fleet_decode returns the number of tiers read into out (at most max), or -EINVAL. */
char *fleet_encode(const struct fleet_tier *tiers, size_t n);
int fleet_decode(const char *json, struct fleet_tier *out, size_t max);

#endif
