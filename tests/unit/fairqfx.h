/*
 * fairqfx: the tier queue tests' fixture (test_fairq, test_fairq_share, test_fairq_take,
 * test_fairq_cost): a test item that records who pushed it, and push/pop helpers with explicit
 * times. fairq is single-threaded by contract, so nothing here locks.
 */
#ifndef BULKHEAD_TESTS_FAIRQFX_H
#define BULKHEAD_TESTS_FAIRQFX_H

#include "fairq.h"

#include <stddef.h>
#include <stdint.h>

#define FQFX_BIG 100000 /* a bound that never binds */

/* A test item: the embedded fairq_item plus who pushed it and in which order. */
struct fqfx_job {
    struct fairq_item item;
    char tenant[FAIRQ_KEY_MAX + 1];
    int seq; /* push order within its tenant */
};

/* Push one job for tenant at now; returns fairq_push's verdict. */
int fqfx_push(struct fairq *q, struct fqfx_job *j, const char *tenant, int seq, int64_t now);

/* Pop and return the job (NULL when nothing may be served). */
struct fqfx_job *fqfx_pop(struct fairq *q, int64_t now);

/* Pop one job and finish it at once, returning its tenant's first letter. */
char fqfx_pop_done(struct fairq *q, int64_t now);

/* A queue with the old positional bounds: a pool too big to bind (BIG workers) and no
 * reserve, so only the queue bounds, the share and the linger act. */
void fqfx_qinit(struct fairq *q, size_t queue_max, size_t tenant_queue_max, size_t share,
                int64_t linger);

#endif
