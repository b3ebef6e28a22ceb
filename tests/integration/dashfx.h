/*
 * dashfx: the dashboard tests' fixture (test_dashboard, test_dashboard_fleet): the suite (a
 * server of five tiers whose free breaker stays open once it opens), the browser (cdp) and how
 * it is opened on the suite's dashboard, the background traffic's state, waits on an expression
 * of the page, and base64 decoding for screenshots. The file that includes this includes
 * cmocka.h first.
 */
#ifndef BULKHEAD_TESTS_DASHFX_H
#define BULKHEAD_TESTS_DASHFX_H

#include "cdp.h"
#include "harness.h"

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>

/* free: 5 requests a minute per tenant, and a breaker that stays open for the test. */
extern struct h_suite dsfx_suite;

extern struct cdp dsfx_browser;

/* Light steady traffic on every tier while the page is open: bounded in count and time. */
/* Light steady traffic on every tier while the page is open (test_dashboard starts it). */
struct dsfx_traffic {
    pthread_t thread;
    pthread_mutex_t mutex;
    pthread_cond_t cond;
    bool stop; /* guarded by mutex */
    bool running;
    int sent;
};
extern struct dsfx_traffic dsfx_traffic;

void dsfx_traffic_stop(void);

long dsfx_get_as(const char *path, const char *tier, const char *tenant);

const char *dsfx_breaker_state(const char *tier, char *buf, size_t len);

/* Open free's breaker on the suite's server (it stays open: breaker_reset_ms is ten minutes):
 * failing calls from distinct tenants until it is OPEN, 30 at most. Returns how many failed. */
int dsfx_open_free_breaker(void);

int dsfx_setup(void **state);

int dsfx_teardown(void **state);

struct dsfx_page_wait {
    const char *expr; /* a boolean expression */
};

bool dsfx_page_true(void *arg);

bool dsfx_wait_page(const char *expr, int timeout_ms);

size_t dsfx_b64_decode(const char *in, unsigned char *out);

/* Start the browser and open the suite's dashboard in it; the test fails, saying why, when
 * Chromium is missing or does not answer. */
void dsfx_browser_open(void);

#endif
