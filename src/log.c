/*
 * log: format a line on the stack, write it with one write(2) (see log.h).
 *
 * Lines are capped at LOG_LINE_MAX bytes and user-supplied fields (path, tenant, request id)
 * are escaped and truncated, so a client cannot break the line format or make lines huge.
 */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define LOG_LINE_MAX  4000 /* below PIPE_BUF, so a line is written atomically to a pipe */
#define LOG_FIELD_MAX 512  /* longest user-supplied field kept in a line */
#define LOG_FIELD_OUT 600  /* most bytes one field takes once escaped (6 per byte at worst) */
/* Escaped text stops this far before the end of the line, so what follows it (closing quotes,
 * the status, the outcome, the timings, the closing brace) always fits and a line cut short
 * is still well-formed. */
#define LOG_TEXT_CAP (LOG_LINE_MAX - 256)

/* Set once by log_setup before threads start; read-only afterwards. */
static struct {
    enum config_logfmt fmt;
    enum config_loglevel level;
    bool access;
    int fd;
} log_cfg = {CONFIG_LOG_JSON, CONFIG_LOG_INFO, true, 1};

static const char *const log_level_names[] = {"debug", "info", "warn", "error"};

void log_setup(enum config_logfmt fmt, enum config_loglevel level, bool access, int fd)
{
    log_cfg.fmt = fmt;
    log_cfg.level = level;
    log_cfg.access = access;
    log_cfg.fd = fd;
}

bool log_access_enabled(void)
{
    return log_cfg.access && log_cfg.level <= CONFIG_LOG_INFO;
}

void log_json_escape(char *dst, size_t cap, size_t *len, const char *s, size_t maxin)
{
    static const char hex[] = "0123456789abcdef";
    size_t n = *len;
    for (size_t i = 0; s[i] && i < maxin; i++) {
        unsigned char c = (unsigned char)s[i];
        char esc[7];
        size_t elen;
        if (c == '"' || c == '\\') {
            esc[0] = '\\';
            esc[1] = (char)c;
            elen = 2;
        } else if (c < 0x20 || c == 0x7f) {
            memcpy(esc, "\\u00", 4);
            esc[4] = hex[c >> 4];
            esc[5] = hex[c & 15];
            elen = 6;
        } else if (c >= 0x80) {
            /* Bytes above ASCII are shown as \u00XX so the line stays valid UTF-8 JSON. */
            memcpy(esc, "\\u00", 4);
            esc[4] = hex[c >> 4];
            esc[5] = hex[c & 15];
            elen = 6;
        } else {
            esc[0] = (char)c;
            elen = 1;
        }
        if (n + elen + 1 > cap)
            break;
        memcpy(dst + n, esc, elen);
        n += elen;
    }
    if (n < cap)
        dst[n] = '\0';
    *len = n;
}

/* "2026-11-28T07:01:02.345Z" */
static size_t log_timestamp(char *buf, size_t cap)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    size_t n = strftime(buf, cap, "%Y-%m-%dT%H:%M:%S", &tm);
    int m = snprintf(buf + n, cap - n, ".%03ldZ", ts.tv_nsec / 1000000);
    return n + (m > 0 ? (size_t)m : 0);
}

static void log_write(char *line, size_t len)
{
    if (len >= LOG_LINE_MAX - 1)
        len = LOG_LINE_MAX - 2;
    line[len++] = '\n';
    ssize_t w = write(log_cfg.fd, line, len);
    (void)w; /* nowhere to report a failed log write */
}

/* Append printf output, clamped to the line buffer. */
static void log_append(char *buf, size_t *len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void log_append(char *buf, size_t *len, const char *fmt, ...)
{
    if (*len >= LOG_LINE_MAX)
        return;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf + *len, LOG_LINE_MAX - *len, fmt, ap);
    va_end(ap);
    if (n > 0)
        *len = (*len + (size_t)n < LOG_LINE_MAX) ? *len + (size_t)n : LOG_LINE_MAX - 1;
}

/* Each field gets its own share of the line, so one hostile field cannot crowd out the fields
 * after it. */
static void log_append_field(char *buf, size_t *len, const char *val)
{
    size_t cap = *len + LOG_FIELD_OUT + 1;
    log_json_escape(buf, cap < LOG_TEXT_CAP ? cap : LOG_TEXT_CAP, len, val, LOG_FIELD_MAX);
}

static void log_append_str(char *buf, size_t *len, const char *key, const char *val)
{
    if (log_cfg.fmt == CONFIG_LOG_JSON) {
        if (!val) {
            log_append(buf, len, ",\"%s\":null", key);
            return;
        }
        log_append(buf, len, ",\"%s\":\"", key);
        log_append_field(buf, len, val);
        log_append(buf, len, "\"");
    } else {
        log_append(buf, len, " %s=", key);
        /* Text lines escape the same way, without quotes: no newline can enter a line. */
        log_append_field(buf, len, val ? val : "-");
    }
}

void log_event(enum config_loglevel level, const char *event, const char *fmt, ...)
{
    if (level < log_cfg.level)
        return;
    char msg[LOG_LINE_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);

    char line[LOG_LINE_MAX];
    size_t len = 0;
    char ts[40];
    log_timestamp(ts, sizeof(ts));
    if (log_cfg.fmt == CONFIG_LOG_JSON) {
        log_append(line, &len, "{\"time\":\"%s\",\"level\":\"%s\",\"type\":\"event\"", ts,
                   log_level_names[level]);
        log_append_str(line, &len, "event", event);
        log_append(line, &len, ",\"msg\":\"");
        log_json_escape(line, LOG_TEXT_CAP, &len, msg, LOG_LINE_MAX);
        log_append(line, &len, "\"}");
    } else {
        log_append(line, &len, "%s %-5s %s: ", ts, log_level_names[level], event);
        log_json_escape(line, LOG_TEXT_CAP, &len, msg, LOG_LINE_MAX);
    }
    log_write(line, len);
}

void log_access(const struct log_access *a)
{
    if (!log_access_enabled())
        return;
    char line[LOG_LINE_MAX];
    size_t len = 0;
    char ts[40];
    log_timestamp(ts, sizeof(ts));
    if (log_cfg.fmt == CONFIG_LOG_JSON) {
        log_append(line, &len, "{\"time\":\"%s\",\"level\":\"info\",\"type\":\"access\"", ts);
        log_append_str(line, &len, "request_id", a->request_id);
        log_append_str(line, &len, "tier", a->tier);
        log_append_str(line, &len, "tenant", a->tenant);
        log_append_str(line, &len, "method", a->method);
        log_append_str(line, &len, "path", a->path);
        log_append(line, &len, ",\"status\":%d", a->status);
        log_append_str(line, &len, "outcome", a->outcome);
        log_append(line, &len, ",\"total_ms\":%.3f,\"queue_ms\":%.3f,\"query_ms\":%.3f}",
                   a->total_ms, a->queue_ms, a->query_ms);
    } else {
        log_append(line, &len, "%s info  access %d", ts, a->status);
        log_append_str(line, &len, "method", a->method);
        log_append_str(line, &len, "path", a->path);
        log_append_str(line, &len, "tier", a->tier);
        log_append_str(line, &len, "tenant", a->tenant);
        log_append_str(line, &len, "outcome", a->outcome);
        log_append_str(line, &len, "request_id", a->request_id);
        log_append(line, &len, " total_ms=%.3f queue_ms=%.3f query_ms=%.3f", a->total_ms,
                   a->queue_ms, a->query_ms);
    }
    log_write(line, len);
}
