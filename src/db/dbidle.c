/*
 * dbidle: the idle list of a pool and its reaper's three steps (see dbidle.h).
 *
 * The reaper holds the pool's lock only to copy the list and to unlink from it: the poll of
 * every idle socket runs between, with no lock held, so requests are never held up by it. A
 * connection taken meanwhile (its socket possibly readable with its statement's result) is no
 * longer idle as seen, and is left alone.
 */
#include "dbidle.h"
#include "xalloc.h"

#include <poll.h>
#include <stdlib.h>

void dbidle_push(struct dbidle *l, struct dbconn *c)
{
    c->next = l->head;
    l->head = c;
    l->n++;
}

struct dbconn *dbidle_pop(struct dbidle *l)
{
    struct dbconn *c = l->head;
    if (c) {
        l->head = c->next;
        c->next = NULL;
        l->n--;
    }
    return c;
}

struct dbconn *dbidle_take_all(struct dbidle *l, size_t *n)
{
    struct dbconn *list = l->head;
    *n = l->n;
    l->head = NULL;
    l->n = 0;
    return list;
}

size_t dbidle_snapshot(const struct dbidle *l, struct dbidle_seen **out)
{
    *out = NULL;
    if (l->n == 0)
        return 0;
    struct dbidle_seen *seen = xcalloc(l->n, sizeof(*seen));
    size_t i = 0;
    for (struct dbconn *c = l->head; c && i < l->n; c = c->next, i++) {
        seen[i] = (struct dbidle_seen){.c = c,
                                       .released_us = c->released_us,
                                       .fd = PQsocket(c->pg),
                                       .dead = PQstatus(c->pg) != CONNECTION_OK};
        if (seen[i].fd < 0)
            seen[i].dead = true;
    }
    *out = seen;
    return i;
}

size_t dbidle_probe(struct dbidle_seen *seen, size_t n, int64_t now_us, int64_t idle_timeout_us)
{
    struct pollfd *fds = xcalloc(n, sizeof(*fds));
    for (size_t i = 0; i < n; i++)
        fds[i] = (struct pollfd){.fd = seen[i].fd, .events = POLLIN};
    int ready = poll(fds, (nfds_t)n, 0);
    size_t k = 0;
    for (size_t j = 0; j < n; j++) {
        seen[j].dead = seen[j].dead || (ready > 0 && fds[j].revents != 0);
        bool expired = idle_timeout_us > 0 && now_us - seen[j].released_us >= idle_timeout_us;
        if (seen[j].dead || expired)
            seen[k++] = seen[j];
    }
    free(fds);
    return k;
}

size_t dbidle_unlink_seen(struct dbidle *l, const struct dbidle_seen *seen, size_t n,
                          struct dbconn **dead, size_t *ndead)
{
    size_t unlinked = 0;
    *ndead = 0;
    for (struct dbconn **pp = &l->head; *pp;) {
        struct dbconn *c = *pp;
        const struct dbidle_seen *s = NULL;
        for (size_t i = 0; i < n && !s; i++)
            if (seen[i].c == c && seen[i].released_us == c->released_us)
                s = &seen[i];
        if (!s) {
            pp = &c->next;
            continue;
        }
        *pp = c->next;
        l->n--;
        c->next = *dead;
        *dead = c;
        unlinked++;
        *ndead += s->dead;
    }
    return unlinked;
}
