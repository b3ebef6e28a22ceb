/*
 * dbwaitq: the FIFO of a pool's waiters and the list of answers to run (see dbwaitq.h).
 *
 * A waiter is in the FIFO until it is answered or gives up, then on nothing (a blocking one)
 * or on the answered list until its callback runs (an asynchronous one, linked by next again:
 * its prev is NULL there). Every call runs under the pool's lock.
 */
#include "dbwaitq.h"
#include "compiler.h"

#include <stdio.h>

void dbwaitq_push(struct dbwaitq *q, struct dbpool_wait *w)
{
    w->next = NULL;
    w->prev = q->tail;
    if (q->tail)
        q->tail->next = w;
    else
        q->head = w;
    q->tail = w;
    q->n++;
}

void dbwaitq_unlink(struct dbwaitq *q, struct dbpool_wait *w)
{
    if (w->prev)
        w->prev->next = w->next;
    else
        q->head = w->next;
    if (w->next)
        w->next->prev = w->prev;
    else
        q->tail = w->prev;
    w->next = w->prev = NULL;
    q->n--;
}

void dbwaitq_wake(struct dbwaitq *q, struct dbpool_wait *w)
{
    w->answered = true;
    dbwaitq_unlink(q, w);
    if (w->done) {
        w->next = q->answered;
        q->answered = w;
    } else {
        pthread_cond_signal(&container_of(w, struct dbwaitq_sync, w)->cond);
    }
}

void dbwaitq_fail_all(struct dbwaitq *q, int rc, const char *err)
{
    while (q->head) {
        struct dbpool_wait *w = q->head;
        w->rc = rc;
        snprintf(w->err, sizeof(w->err), "%s", err);
        dbwaitq_wake(q, w);
    }
}

struct dbpool_wait *dbwaitq_take_answered(struct dbwaitq *q)
{
    struct dbpool_wait *list = q->answered;
    q->answered = NULL;
    return list;
}
