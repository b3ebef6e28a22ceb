/*
 * test_api_tarpit: the tarpit on the request path (api.h, tarpit.h), in process over real HTTP
 * on apifx's fake tier set: a request refused before its turn is held by the tarpit and
 * admitted again when its turn comes, in arrival order, holding no capacity slot while held
 * (capctl's in_progress); one whose client left during the hold is finished at its turn without
 * being admitted (the limiter and the workers never see it again).
 */
#include "apifx.h"
#include "admin.h"
#include "api.h"
#include "admission.h"
#include "datapath.h"
#include "datareq.h"
#include "breaker.h"
#include "capctl.h"
#include "config.h"
#include "fakeset.h"
#include "history.h"
#include "http.h"
#include "log.h"
#include "mclock.h"
#include "report.h"
#include "ratelimit.h"
#include "request.h"
#include "tarpit.h"
#include "tierset.h"

#include "../promtext.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

/* ---- the tarpit and the capacity gate ---------------------------------------------------- */

struct bg_fetch {
    const char *tier, *tenant;
    struct apifx_reply r;
    pthread_t th;
};

static void *bg_fetch_main(void *arg)
{
    struct bg_fetch *b = arg;
    char th[64], tn[64];
    snprintf(th, sizeof(th), "X-Tenant-Tier: %s", b->tier);
    snprintf(tn, sizeof(tn), "X-Tenant-Id: %s", b->tenant);
    apifx_fetch("GET", "/api/data", th, tn, &b->r);
    return NULL;
}

static size_t holding(void)
{
    struct tarpit_stats st;
    tarpit_stats(apifx_srv.tarpit, &st);
    return st.holding;
}

static uint64_t held(void)
{
    struct tarpit_stats st;
    tarpit_stats(apifx_srv.tarpit, &st);
    return st.held;
}

static void wait_holding(size_t n)
{
    for (int i = 0; i < 30000 && holding() != n; i++)
        usleep(1000);
    assert_int_equal(holding(), n);
}

static struct ratelimit_stats limiter(const char *tier)
{
    struct ratelimit_stats st;
    ratelimit_stats(tierset_find(apifx_srv.ts, tier)->rl, &st);
    return st;
}

static void a_request_early_for_its_turn_is_held_and_admitted_then(void **state)
{
    (void)state;
    /* paced: 2 per 2 s, one more each second. The tenant's burst, each request admitted (and
     * failing to connect: there is no database). */
    struct apifx_reply r;
    char code[64];
    for (int i = 0; i < 2; i++) {
        apifx_fetch("GET", "/api/data", "X-Tenant-Tier: paced", "X-Tenant-Id: turns", &r);
        assert_int_equal(r.status, 503);
    }
    struct ratelimit_stats before = limiter("paced");
    uint64_t held0 = held();
    /* Three more at once: each refused by the limiter is held until its turn, one second after
     * the one before, and admitted then. None is answered 429. */
    struct bg_fetch b[3];
    for (int i = 0; i < 3; i++) {
        b[i] = (struct bg_fetch){.tier = "paced", .tenant = "turns"};
        assert_int_equal(pthread_create(&b[i].th, NULL, bg_fetch_main, &b[i]), 0);
    }
    for (int i = 0; i < 3; i++) {
        pthread_join(b[i].th, NULL);
        assert_int_equal(b[i].r.status, 503);
        assert_string_equal(apifx_error_code(&b[i].r, code, sizeof(code)), "database_unavailable");
        assert_int_equal(apifx_header_int(&b[i].r, "RateLimit-Limit"), 2);
    }
    /* Each was admitted exactly once; every refusal was held, and admitted when its turn came
     * (the turns themselves, to the microsecond: test_tarpit). */
    struct ratelimit_stats after = limiter("paced");
    assert_int_equal(after.allowed, before.allowed + 3);
    assert_true(held() > held0);
    assert_int_equal(held() - held0, after.rejected - before.rejected);
}

static uint64_t left(void)
{
    struct tarpit_stats st;
    tarpit_stats(apifx_srv.tarpit, &st);
    return st.left;
}

static void a_held_request_whose_client_left_is_not_admitted_again(void **state)
{
    (void)state;
    /* paced: the tenant's burst of two, then one early for its turn (a second away), held. */
    struct apifx_reply r;
    for (int i = 0; i < 2; i++) {
        apifx_fetch("GET", "/api/data", "X-Tenant-Tier: paced", "X-Tenant-Id: gone", &r);
        assert_int_equal(r.status, 503);
    }
    struct ratelimit_stats before = limiter("paced");
    struct workpool_stats wp0;
    workpool_stats(tierset_find(apifx_srv.ts, "paced")->pool, &wp0);
    uint64_t left0 = left();
    static const char req[] = "GET /api/data HTTP/1.1\r\nHost: x\r\nX-Tenant-Tier: paced\r\n"
                              "X-Tenant-Id: gone\r\n\r\n";
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in sa = {.sin_family = AF_INET,
                             .sin_port = htons((uint16_t)http_port(apifx_srv.http))};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(write(fd, req, sizeof(req) - 1), (ssize_t)(sizeof(req) - 1));
    wait_holding(1);
    /* The client leaves while it is held. At its turn it is finished (its connection drops the
     * reply: 499), never admitted again: no rate-limit verdict, no slot of its tier. */
    close(fd);
    for (int i = 0; i < 30000 && atomic_load(&apifx_srv.in_flight) != 0; i++)
        usleep(1000);
    assert_int_equal(atomic_load(&apifx_srv.in_flight), 0);
    struct ratelimit_stats after = limiter("paced");
    struct workpool_stats wp1;
    workpool_stats(tierset_find(apifx_srv.ts, "paced")->pool, &wp1);
    assert_int_equal(after.allowed, before.allowed);
    assert_int_equal(after.rejected, before.rejected + 1); /* its one refusal, before the hold */
    assert_int_equal(wp1.submitted, wp0.submitted);
    assert_int_equal(left(), left0 + 1);
    assert_int_equal(holding(), 0);
}

static void a_held_refusal_keeps_no_capacity_slot(void **state)
{
    (void)state;
    /* tiny: 2 per hour. Spent, then refused at once (its turn is half an hour away)... */
    struct apifx_reply r;
    for (int i = 0; i < 2; i++) {
        apifx_fetch("GET", "/api/data", "X-Tenant-Tier: tiny", "X-Tenant-Id: hog", &r);
        assert_int_equal(r.status, 503);
    }
    apifx_fetch("GET", "/api/data", "X-Tenant-Tier: tiny", "X-Tenant-Id: hog", &r);
    assert_int_equal(r.status, 429);
    /* ...and back at once: held, for up to a minute. It passed the capacity gate before the
     * limiter refused it, and left it at the refusal: tiny has nothing in progress. */
    size_t tiny = tierset_find(apifx_srv.ts, "tiny")->index;
    struct bg_fetch b = {.tier = "tiny", .tenant = "hog"};
    assert_int_equal(pthread_create(&b.th, NULL, bg_fetch_main, &b), 0);
    wait_holding(1);
    uint64_t held1 = held();
    struct capctl_tier_stats cs;
    capctl_stats(apifx_srv.capacity, tiny, &cs);
    assert_int_equal(holding(), 1); /* still held when the gate was read */
    assert_int_equal(held(), held1);
    assert_int_equal(cs.in_progress, 0);
    /* Stopping the tarpit admits the held request again: refused, answered at once. The
     * tarpit takes no more holds from here on (the tests after this one need none). */
    tarpit_stop(apifx_srv.tarpit);
    pthread_join(b.th, NULL);
    char code[64];
    assert_int_equal(b.r.status, 429);
    assert_string_equal(apifx_error_code(&b.r, code, sizeof(code)), "rate_limited");
    assert_true(apifx_header_int(&b.r, "Retry-After") > 1000); /* its turn, half an hour away */
    capctl_stats(apifx_srv.capacity, tiny, &cs);
    assert_int_equal(cs.in_progress, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(a_request_early_for_its_turn_is_held_and_admitted_then),
        cmocka_unit_test(a_held_request_whose_client_left_is_not_admitted_again),
        cmocka_unit_test(a_held_refusal_keeps_no_capacity_slot),
    };
    return cmocka_run_group_tests(tests, apifx_setup, apifx_teardown);
}
