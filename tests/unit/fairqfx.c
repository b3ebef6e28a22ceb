/*
 * fairqfx: the tier queue tests' fixture (see fairqfx.h).
 */
#include "fairqfx.h"

#include "compiler.h"
#include "fairq.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

static struct fqfx_job *fqfx_job_of(struct fairq_item *it)
{
    return container_of(it, struct fqfx_job, item);
}

/* Push one job for tenant at now; returns fairq_push's verdict. */
int fqfx_push(struct fairq *q, struct fqfx_job *j, const char *tenant, int seq, int64_t now)
{
    snprintf(j->tenant, sizeof(j->tenant), "%s", tenant);
    j->seq = seq;
    return fairq_push(q, tenant, &j->item, now, 0);
}

/* Pop and return the job (NULL when nothing may be served). */
struct fqfx_job *fqfx_pop(struct fairq *q, int64_t now)
{
    struct fairq_item *it = fairq_pop(q, now);
    return it ? fqfx_job_of(it) : NULL;
}

/* Pop one job and finish it at once, returning its tenant's first letter. */
char fqfx_pop_done(struct fairq *q, int64_t now)
{
    struct fairq_item *it = fairq_pop(q, now);
    assert_non_null(it);
    fairq_done(q, it->tenant, now);
    return fqfx_job_of(it)->tenant[0];
}

/* A queue with the old positional bounds: a pool too big to bind (BIG workers) and no
 * reserve, so only the queue bounds, the share and the linger act. */
void fqfx_qinit(struct fairq *q, size_t queue_max, size_t tenant_queue_max, size_t share,
                int64_t linger)
{
    struct fairq_limits l = {.queue_max = queue_max,
                             .tenant_queue_max = tenant_queue_max,
                             .slots = {.size = FQFX_BIG, .cap = share, .reserve = 0},
                             .linger_us = linger};
    fairq_init(q, &l);
}
