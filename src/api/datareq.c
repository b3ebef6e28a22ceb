/*
 * datareq: an /api/data request's own state (see datareq.h).
 */
#include "datareq.h"
#include "admission.h"
#include "xalloc.h"

#include <stdlib.h>

static void datareq_free(void *state)
{
    struct datareq *q = state;
    free(q->args.payload);
    free(q);
}

static const struct request_handler_ops datareq_ops = {
    .reply_headers = admission_reply_headers,
    .free = datareq_free,
};

struct datareq *datareq_new(struct request *r)
{
    struct datareq *q = xcalloc(1, sizeof(*q));
    q->r = r;
    request_set_handler(r, &datareq_ops, q);
    return q;
}

struct datareq *datareq_of(const struct request *r)
{
    return r->handler_ops == &datareq_ops ? r->handler : NULL;
}
