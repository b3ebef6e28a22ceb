/*
 * breakerfx: the circuit breaker tests' fixture (see breakerfx.h).
 */
#include "breakerfx.h"

#include "harness.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>
#include <libpq-fe.h>

struct h_suite brfx_suite = {.name = "breaker"}; /* a server with the seed defaults */

struct h_server brfx_fast; /* another one, with short breaker timings from a tiers file */

int brfx_setup(void **state)
{
    (void)state;
    if (h_suite_start(&brfx_suite))
        return -1;
    char env[400];
    if (h_tiers_env("tiers-fast.json", BRFX_FAST_TIERS, env, sizeof(env)))
        return -1;
    /* No tarpit: a burst's refusals are answered at once (held, they cost 5 s a round). */
    const char *e[] = {env, "TARPIT=false", NULL};
    return h_server_start(&brfx_fast, brfx_suite.db_url, e);
}

int brfx_teardown(void **state)
{
    (void)state;
    h_suite_stop(&brfx_suite);
    h_server_stop(&brfx_fast, SIGTERM, 20000);
    return 0;
}

json_t *brfx_tier_section(const struct h_server *s, const char *tier, const char *section)
{
    return h_metric_section(s->base, tier, section);
}

long brfx_get(const struct h_server *s, const char *path, const char *tier, const char *tenant)
{
    char th[64], tn[96];
    snprintf(th, sizeof(th), "X-Tenant-Tier: %s", tier);
    snprintf(tn, sizeof(tn), "X-Tenant-Id: %s", tenant);
    const char *h[] = {th, tn, NULL};
    struct h_resp r;
    h_get(h_url(s, path), h, &r);
    long st = r.status;
    h_resp_free(&r);
    return st;
}
