/*
 * log: lifecycle/error events and per-request access lines, one line each on stdout.
 *
 * Lines are JSON (LOG_FORMAT=json, the default: one object per line, easy to ship) or text. A
 * line is formatted on the caller's stack, then handed on whole to logwriter (logwriter.h), so
 * lines never interleave: an access line is batched by a writer thread a few ms later, so an
 * HTTP thread never waits on the output (unless the buffer is full); an event is written,
 * after whatever is pending, before log_event returns. Access lines can be sampled (log_sampling):
 * a fraction of the successful requests get one, every refusal, error and slow request does. The
 * log settings are the process's one global state: set by log_setup and log_sampling before the
 * threads that log start, read-only afterwards. DESIGN: see log.c and logwriter.c.
 */
#ifndef BULKHEAD_LOG_H
#define BULKHEAD_LOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* LOG_FORMAT and LOG_LEVEL (config.c parses the settings into these). */
enum log_format { LOG_FORMAT_JSON, LOG_FORMAT_TEXT };
enum log_level { LOG_LEVEL_DEBUG, LOG_LEVEL_INFO, LOG_LEVEL_WARN, LOG_LEVEL_ERROR };

/* What an access line reports; every string may be NULL (logged as null / "-"). */
struct log_access {
    const char *request_id;
    const char *tier;
    const char *tenant;
    const char *method;
    const char *path;
    const char *outcome; /* ok, rate_limited, bulkhead_full, ... */
    int status;
    double total_ms, queue_ms, query_ms;
};

/* Where and how lines go; the first call starts the writer thread. Lines handed on before a
 * later call are written to the old fd first. */
void log_setup(enum log_format fmt, enum log_level level, bool access, int fd);

/* Access lines reach the output a few ms after log_access returns; events before log_event
 * returns. log_flush returns once everything handed on so far is written. */
void log_flush(void);

/* An event: event is a short machine name ("pool_connect"), the message says what and why. */
void log_event(enum log_level level, const char *event, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define log_debug(ev, ...) log_event(LOG_LEVEL_DEBUG, ev, __VA_ARGS__)
#define log_info(ev, ...)  log_event(LOG_LEVEL_INFO, ev, __VA_ARGS__)
#define log_warn(ev, ...)  log_event(LOG_LEVEL_WARN, ev, __VA_ARGS__)
#define log_error(ev, ...) log_event(LOG_LEVEL_ERROR, ev, __VA_ARGS__)

void log_access(const struct log_access *a);

/* True when access lines are written (callers skip building the record otherwise). */
bool log_access_enabled(void);

/* Which requests get an access line: a fraction (0..1) of the successful ones, drawn at random
 * per request; a request that is not a success, or took slow_us or more (0: none is slow),
 * always. Before the threads that log start; the default is every request. */
void log_sampling(double fraction, int64_t slow_us);

/* Any thread: whether a finished request gets an access line (log_access_enabled and the
 * sampling above). success: a 2xx answer. */
bool log_access_wanted(bool success, int64_t total_us);

/*
 * Append s to dst[*len..cap) as a JSON string body (no quotes), escaping what JSON requires.
 * Stops cleanly when cap is reached; dst stays NUL-terminated. Also builds reply bodies
 * (request_reply_error) and is exposed for tests.
 */
void log_json_escape(char *dst, size_t cap, size_t *len, const char *s, size_t maxin);

/*
 * A copy of a connection URL or libpq string with its password replaced by "****": the
 * password of scheme://user:password@host, and the value of every password=... parameter
 * (keyword form, quoted or not, and URL query). Caller frees.
 */
char *log_mask_conn(const char *value);

#endif
