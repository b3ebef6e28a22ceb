/*
 * dbidle: a pool's idle connections (dbpool.h), most recently released first, and the reaper
 * that finds those the server closed or that idled too long.
 *
 * The list has no lock of its own: the caller holds the pool's lock for every call but
 * dbidle_probe, which runs with no lock held on a snapshot (dbidle_snapshot) of the list; what
 * the probe condemns is unlinked (dbidle_unlink_seen) only if still idle as it was seen. Which
 * connection the pool may hand out (alive, current) stays the pool's decision.
 */
#ifndef BULKHEAD_DBIDLE_H
#define BULKHEAD_DBIDLE_H

#include "dbconn.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The caller holds the pool's lock for every field. */
struct dbidle {
    struct dbconn *head; /* idle connections linked by next, most recently released first */
    size_t n;            /* how many */
};

/* An idle connection as the reaper saw it: it is closed only if it is still on the idle list,
 * released at the same time (not taken and given back since; one closed meanwhile and another
 * allocated at its address would need the same released_us, to the microsecond). */
struct dbidle_seen {
    struct dbconn *c;    /* compared, never dereferenced unless found idle again */
    int64_t released_us; /* its released_us then */
    int fd;              /* its socket then, or -1 */
    bool dead;           /* its socket was readable, or it was not usable */
};

/* Put c first (its released_us set by the caller). */
void dbidle_push(struct dbidle *l, struct dbconn *c);

/* Take the first connection off the list (next cleared), or NULL. */
struct dbconn *dbidle_pop(struct dbidle *l);

/* Take every connection off the list: the list (linked by next); *n how many. */
struct dbconn *dbidle_take_all(struct dbidle *l, size_t *n);

/* Copy the list as it is now (a connection not usable is marked dead already): an owned array
 * (*out, NULL when empty) of the returned count. */
size_t dbidle_snapshot(const struct dbidle *l, struct dbidle_seen **out);

/* No lock held: poll every socket of seen[0..n) at once (an idle connection has nothing to read
 * unless the server closed or killed it) and keep, at the front of seen, those found dead or
 * idle since before now_us - idle_timeout_us (when idle_timeout_us > 0). Returns how many. */
size_t dbidle_probe(struct dbidle_seen *seen, size_t n, int64_t now_us, int64_t idle_timeout_us);

/* Unlink the connections of seen[0..n) still idle as seen onto *dead (linked by next). Returns
 * how many were unlinked, *ndead how many of them were seen dead (the others idled too long). */
size_t dbidle_unlink_seen(struct dbidle *l, const struct dbidle_seen *seen, size_t n,
                          struct dbconn **dead, size_t *ndead);

#endif
