/*
 * obsfx: the observability tests' fixture (see obsfx.h).
 */
#include "obsfx.h"

#include "harness.h"
#include "../promtext.h"

#include <ctype.h>
#include <math.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

/* free: 2 requests per minute per tenant, a breaker that stays open once it opens. */
struct h_suite obfx_suite = {.name = "observability",
                             .tiers_json =
                                 "{\"free\": {\"workers\": 4, \"db_max\": 2, \"rate_limit\": 2,"
                                 " \"breaker_reset_ms\": 600000, \"breaker_min_calls\": 5},"
                                 " \"pro\": {\"workers\": 8, \"db_max\": 4},"
                                 " \"enterprise\": {\"workers\": 8, \"db_max\": 4}}"};

int obfx_setup(void **state)
{
    (void)state;
    return h_suite_start(&obfx_suite);
}

int obfx_teardown(void **state)
{
    (void)state;
    h_suite_stop(&obfx_suite);
    return 0;
}

/* One request; returns the status and copies the X-Request-Id the server sent back. */
long obfx_request_as(const struct h_server *s, const char *path, const char *tier,
                     const char *tenant, const char *rid, char *rid_out, size_t rid_len)
{
    char th[64], tn[96], rh[200];
    const char *h[4];
    size_t n = 0;
    if (tier) {
        snprintf(th, sizeof(th), "X-Tenant-Tier: %s", tier);
        h[n++] = th;
    }
    if (tenant) {
        snprintf(tn, sizeof(tn), "X-Tenant-ID: %s", tenant);
        h[n++] = tn;
    }
    if (rid) {
        snprintf(rh, sizeof(rh), "X-Request-Id: %s", rid);
        h[n++] = rh;
    }
    h[n] = NULL;
    struct h_resp r;
    if (h_get(h_url(s, path), h, &r)) {
        h_resp_free(&r);
        return 0;
    }
    if (rid_out && !h_header(&r, "X-Request-Id", rid_out, rid_len))
        rid_out[0] = '\0';
    long st = r.status;
    h_resp_free(&r);
    return st;
}
