/*
 * cdp: a client of Chromium's DevTools protocol over --remote-debugging-pipe (NUL-separated
 * JSON on the browser's fds 3 and 4), for the dashboard test: start a headless browser with a
 * fresh profile, open a page of CDP_VIEW_W x CDP_VIEW_H in a flat session, call methods, evaluate
 * JavaScript in the page, stop the browser and remove its profile. One test thread drives it;
 * every read has a deadline. The file that includes this includes cmocka.h first (a failed
 * call fails the test).
 */
#ifndef BULKHEAD_TEST_CDP_H
#define BULKHEAD_TEST_CDP_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define CDP_VIEW_W 1440 /* the page's size: the screenshot's */
#define CDP_VIEW_H 900

/* A browser and its one page. */
struct cdp {
    pid_t pid; /* the browser; its own process group */
    int wfd;   /* commands: the browser's fd 3 */
    int rfd;   /* replies and events: the browser's fd 4 */
    char *buf; /* bytes read and not yet consumed */
    size_t len, cap;
    int next_id;
    char session[128]; /* the page's flat session */
    char profile[300]; /* fresh --user-data-dir, removed at the end */
    char log[300];     /* the browser's stdout/stderr */
};

const char *cdp_chromium_bin(void);

/* The browser binary on PATH (or as given), so a missing one fails with a clear message. */
bool cdp_chromium_present(void);

int cdp_start(struct cdp *c);

/* Read until one complete message is buffered; returns it (owned) or NULL on EOF/timeout. */
/* Call method (params stolen; may be NULL) on the browser or the page session; the result
 * object (owned), or NULL on error, timeout or a closed pipe. */
json_t *cdp_call(struct cdp *c, const char *method, json_t *params, bool on_page);

/* Evaluate a JavaScript expression in the page (promises awaited); its value (owned). */
json_t *cdp_eval(struct cdp *c, const char *expr);

/* An expression's value as a string (empty when missing). */
void cdp_eval_str(struct cdp *c, const char *expr, char *out, size_t len);

long long cdp_eval_int(struct cdp *c, const char *expr);

/* Open a page target, attach to it flat, size it, go to url. 0 or -1. */
int cdp_open(struct cdp *c, const char *page_url);

/* Load another URL in the page already open. */
int cdp_navigate(struct cdp *c, const char *page_url);

void cdp_stop(struct cdp *c);

#endif
