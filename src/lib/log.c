/*
 * log: format a line on the stack, hand it to one writer (see log.h).
 *
 * Lines are capped at LOG_LINE_MAX bytes and user-supplied fields (path, tenant, request id)
 * are escaped and truncated, so a client cannot break the line format or make lines huge.
 *
 * An access line is written for every request (or the sample log_sampling asks for), on the
 * HTTP threads: it is built with plain copies (no printf), the escaper copies runs of safe bytes
 * at once, and each thread keeps the formatted date of the current second. The sample is drawn
 * per request from each thread's own generator (xorshift, seeded from the clock and the thread),
 * so sampling takes no lock and a pattern in the traffic cannot line up with it as a counter's
 * every-Nth could.
 *
 * A line is formatted on the caller's stack and handed whole to logwriter, the one output
 * (access lines batched by its writer thread, events written before log_event returns).
 */
#include "log.h"
#include "logwriter.h"
#include "xalloc.h"

#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>
#include <time.h>

#define LOG_LINE_MAX  4000 /* below PIPE_BUF, so a line is written atomically to a pipe */
#define LOG_FIELD_MAX 512  /* longest user-supplied field kept in a line */
#define LOG_FIELD_OUT 600  /* most bytes one field takes once escaped (6 per byte at worst) */
/* Escaped text stops this far before the end of the line, so what follows it (closing quotes,
 * the status, the outcome, the timings, the closing brace) always fits and a line cut short
 * is still well-formed. */
#define LOG_TEXT_CAP (LOG_LINE_MAX - 256)

/* Set once by log_setup before threads start; read-only afterwards. */
static struct {
    enum log_format fmt;
    enum log_level level;
    bool access;
    uint64_t sample_below; /* a success is logged when a draw is below this; UINT64_MAX: all */
    int64_t slow_us;       /* always log requests this slow; 0: none is */
} log_cfg = {LOG_FORMAT_JSON, LOG_LEVEL_INFO, true, UINT64_MAX, 0};

static const char *const log_level_names[] = {"debug", "info", "warn", "error"};

void log_setup(enum log_format fmt, enum log_level level, bool access, int fd)
{
    /* Lines already handed on go to the old output first. */
    logwriter_setup(fd);
    log_cfg.fmt = fmt;
    log_cfg.level = level;
    log_cfg.access = access;
}

void log_flush(void)
{
    logwriter_flush();
}

bool log_access_enabled(void)
{
    return log_cfg.access && log_cfg.level <= LOG_LEVEL_INFO;
}

void log_sampling(double fraction, int64_t slow_us)
{
    /* 2^64 * fraction, with 1 (and anything above) meaning every draw. */
    log_cfg.sample_below = fraction >= 1.0  ? UINT64_MAX
                           : fraction <= 0. ? 0
                                            : (uint64_t)(fraction * 18446744073709551616.0);
    log_cfg.slow_us = slow_us > 0 ? slow_us : 0;
}

/* This thread's next pseudo-random draw (xorshift64*). Per thread by nature, not per loop:
 * workers and the janitor log too, and a draw must take no lock. */
static uint64_t log_draw(void)
{
    static _Thread_local uint64_t state;
    if (!state) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        state = ((uint64_t)ts.tv_nsec << 32) ^ (uint64_t)ts.tv_sec ^ (uint64_t)(uintptr_t)&state;
        if (!state)
            state = 0x9e3779b97f4a7c15ull;
    }
    state ^= state >> 12;
    state ^= state << 25;
    state ^= state >> 27;
    return state * 0x2545f4914f6cdd1dull;
}

bool log_access_wanted(bool success, int64_t total_us)
{
    if (!log_access_enabled())
        return false;
    if (!success || log_cfg.sample_below == UINT64_MAX ||
        (log_cfg.slow_us && total_us >= log_cfg.slow_us))
        return true;
    return log_cfg.sample_below && log_draw() < log_cfg.sample_below;
}

/* Bytes copied as they are into a JSON string: printable ASCII except '"' and '\\'. */
static inline bool log_plain(unsigned char c)
{
    return c >= 0x20 && c < 0x7f && c != '"' && c != '\\';
}

void log_json_escape(char *dst, size_t cap, size_t *len, const char *s, size_t maxin)
{
    static const char hex[] = "0123456789abcdef";
    size_t n = *len;
    size_t i = 0;
    while (i < maxin && s[i]) {
        /* A run of plain bytes in one copy, as far as it fits (one byte stays for the NUL). */
        size_t j = i;
        while (j < maxin && log_plain((unsigned char)s[j]))
            j++;
        if (j > i) {
            size_t room = n + 1 < cap ? cap - n - 1 : 0;
            size_t run = j - i < room ? j - i : room;
            memcpy(dst + n, s + i, run);
            n += run;
            if (run < j - i)
                break;
            i = j;
            continue;
        }
        unsigned char c = (unsigned char)s[i];
        char esc[7];
        size_t elen;
        if (c == '"' || c == '\\') {
            esc[0] = '\\';
            esc[1] = (char)c;
            elen = 2;
        } else {
            /* Control bytes, DEL and bytes above ASCII are shown as \u00XX, so the line stays
             * valid UTF-8 JSON. */
            memcpy(esc, "\\u00", 4);
            esc[4] = hex[c >> 4];
            esc[5] = hex[c & 15];
            elen = 6;
        }
        if (n + elen + 1 > cap)
            break;
        memcpy(dst + n, esc, elen);
        n += elen;
        i++;
    }
    if (n < cap)
        dst[n] = '\0';
    *len = n;
}

/* The date and time to the second, formatted once a second per thread: gmtime_r takes a
 * process-wide lock and strftime is slow, and every access line needs a timestamp. Per thread
 * by nature (any thread logs), so a thread-local, not per-loop storage. */
static _Thread_local struct {
    time_t sec;    /* the second text describes; 0 = nothing cached yet */
    char text[24]; /* "2026-11-28T07:01:02" */
    size_t len;
} log_ts_cache;

/* "2026-11-28T07:01:02.345Z" */
static size_t log_timestamp(char *buf, size_t cap)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    if (ts.tv_sec != log_ts_cache.sec || !log_ts_cache.len) {
        struct tm tm;
        gmtime_r(&ts.tv_sec, &tm);
        log_ts_cache.len =
            strftime(log_ts_cache.text, sizeof(log_ts_cache.text), "%Y-%m-%dT%H:%M:%S", &tm);
        log_ts_cache.sec = ts.tv_sec;
    }
    size_t n = log_ts_cache.len;
    if (cap < n + 6)
        return 0;
    memcpy(buf, log_ts_cache.text, n);
    long ms = ts.tv_nsec / 1000000;
    buf[n++] = '.';
    buf[n++] = (char)('0' + ms / 100);
    buf[n++] = (char)('0' + ms / 10 % 10);
    buf[n++] = (char)('0' + ms % 10);
    buf[n++] = 'Z';
    buf[n] = '\0';
    return n;
}

/* End the line and hand it on (any thread): an access line (sync false) is batched, an event
 * (sync true) written before this returns (logwriter.h). */
static void log_write(char *line, size_t len, bool sync)
{
    if (len >= LOG_LINE_MAX - 1)
        len = LOG_LINE_MAX - 2;
    line[len++] = '\n';
    logwriter_put(line, len, sync);
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

/* Append n bytes, clamped to the line buffer like log_append. */
static void log_put(char *buf, size_t *len, const char *s, size_t n)
{
    if (*len >= LOG_LINE_MAX - 1)
        return;
    size_t room = LOG_LINE_MAX - 1 - *len;
    if (n > room)
        n = room;
    memcpy(buf + *len, s, n);
    *len += n;
    buf[*len] = '\0';
}

#define log_put_lit(buf, len, lit) log_put(buf, len, lit, sizeof(lit) - 1)

/* "%d" */
static void log_put_int(char *buf, size_t *len, int v)
{
    char tmp[16];
    size_t n = sizeof(tmp);
    unsigned u = v < 0 ? 0u - (unsigned)v : (unsigned)v;
    do {
        tmp[--n] = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (v < 0)
        tmp[--n] = '-';
    log_put(buf, len, tmp + n, sizeof(tmp) - n);
}

/*
 * "%.3f", the same text printf makes. Durations come from whole microseconds, so v * 1000 is
 * within a hair of an integer and the digits are that integer's; anything else (or huge or not
 * finite) goes through printf.
 */
static void log_put_ms(char *buf, size_t *len, double v)
{
    double k = v * 1000.0;
    if (!(fabs(k) < 1e12)) {
        log_append(buf, len, "%.3f", v);
        return;
    }
    int64_t us = (int64_t)(k < 0 ? k - 0.5 : k + 0.5);
    if (fabs(k - (double)us) > 1e-6) {
        log_append(buf, len, "%.3f", v);
        return;
    }
    char tmp[32];
    size_t n = sizeof(tmp);
    bool neg = us < 0 || (us == 0 && signbit(v));
    uint64_t u = us < 0 ? 0u - (uint64_t)us : (uint64_t)us;
    for (int d = 0; d < 3; d++) {
        tmp[--n] = (char)('0' + u % 10);
        u /= 10;
    }
    tmp[--n] = '.';
    do {
        tmp[--n] = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (neg)
        tmp[--n] = '-';
    log_put(buf, len, tmp + n, sizeof(tmp) - n);
}

static void log_put_str(char *buf, size_t *len, const char *s)
{
    log_put(buf, len, s, strlen(s));
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
    if (log_cfg.fmt == LOG_FORMAT_JSON) {
        log_put_lit(buf, len, ",\"");
        log_put_str(buf, len, key);
        if (!val) {
            log_put_lit(buf, len, "\":null");
            return;
        }
        log_put_lit(buf, len, "\":\"");
        log_append_field(buf, len, val);
        log_put_lit(buf, len, "\"");
    } else {
        log_put_lit(buf, len, " ");
        log_put_str(buf, len, key);
        log_put_lit(buf, len, "=");
        /* Text lines escape the same way, without quotes: no newline can enter a line. */
        log_append_field(buf, len, val ? val : "-");
    }
}

void log_event(enum log_level level, const char *event, const char *fmt, ...)
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
    if (log_cfg.fmt == LOG_FORMAT_JSON) {
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
    log_write(line, len, true);
}

void log_access(const struct log_access *a)
{
    if (!log_access_enabled())
        return;
    char line[LOG_LINE_MAX];
    size_t len = 0;
    char ts[40];
    size_t tslen = log_timestamp(ts, sizeof(ts));
    if (log_cfg.fmt == LOG_FORMAT_JSON) {
        log_put_lit(line, &len, "{\"time\":\"");
        log_put(line, &len, ts, tslen);
        log_put_lit(line, &len, "\",\"level\":\"info\",\"type\":\"access\"");
        log_append_str(line, &len, "request_id", a->request_id);
        log_append_str(line, &len, "tier", a->tier);
        log_append_str(line, &len, "tenant", a->tenant);
        log_append_str(line, &len, "method", a->method);
        log_append_str(line, &len, "path", a->path);
        log_put_lit(line, &len, ",\"status\":");
        log_put_int(line, &len, a->status);
        log_append_str(line, &len, "outcome", a->outcome);
        log_put_lit(line, &len, ",\"total_ms\":");
        log_put_ms(line, &len, a->total_ms);
        log_put_lit(line, &len, ",\"queue_ms\":");
        log_put_ms(line, &len, a->queue_ms);
        log_put_lit(line, &len, ",\"query_ms\":");
        log_put_ms(line, &len, a->query_ms);
        log_put_lit(line, &len, "}");
    } else {
        log_put(line, &len, ts, tslen);
        log_put_lit(line, &len, " info  access ");
        log_put_int(line, &len, a->status);
        log_append_str(line, &len, "method", a->method);
        log_append_str(line, &len, "path", a->path);
        log_append_str(line, &len, "tier", a->tier);
        log_append_str(line, &len, "tenant", a->tenant);
        log_append_str(line, &len, "outcome", a->outcome);
        log_append_str(line, &len, "request_id", a->request_id);
        log_put_lit(line, &len, " total_ms=");
        log_put_ms(line, &len, a->total_ms);
        log_put_lit(line, &len, " queue_ms=");
        log_put_ms(line, &len, a->queue_ms);
        log_put_lit(line, &len, " query_ms=");
        log_put_ms(line, &len, a->query_ms);
    }
    log_write(line, len, false);
}

/* Replace text[from, to) by "****" in the heap string *text. */
static void log_mask_span(char **text, size_t from, size_t to)
{
    size_t len = strlen(*text);
    char *out = xmalloc(len - (to - from) + 5);
    memcpy(out, *text, from);
    memcpy(out + from, "****", 4);
    memcpy(out + from + 4, *text + to, len - to + 1);
    free(*text);
    *text = out;
}

char *log_mask_conn(const char *value)
{
    char *s = xstrdup(value);
    /* URL: scheme://user:password@host... The userinfo ends at the last '@', so a password with
     * an unencoded '@' is masked whole (more is masked rather than less). */
    const char *scheme = strstr(s, "://");
    if (scheme) {
        size_t start = (size_t)(scheme - s) + 3;
        const char *at = strrchr(s + start, '@');
        const char *colon = at ? memchr(s + start, ':', (size_t)(at - (s + start))) : NULL;
        if (colon && colon + 1 < at)
            log_mask_span(&s, (size_t)(colon + 1 - s), (size_t)(at - s));
    }
    /* libpq keyword form (password=... or password = '...') and URL parameters (?password=). */
    for (size_t i = 0; s[i]; i++) {
        if (strncasecmp(s + i, "password", 8) != 0 || (i > 0 && !strchr(" \t?&", s[i - 1])))
            continue;
        size_t j = i + 8;
        while (s[j] == ' ' || s[j] == '\t')
            j++;
        if (s[j] != '=')
            continue;
        j++;
        while (s[j] == ' ' || s[j] == '\t')
            j++;
        size_t end = j;
        if (s[j] == '\'') {
            for (end = j + 1; s[end] && s[end] != '\''; end++)
                if (s[end] == '\\' && s[end + 1])
                    end++;
            if (s[end])
                end++;
        } else {
            while (s[end] && !strchr(" \t&", s[end]))
                end++;
        }
        if (end > j) {
            log_mask_span(&s, j, end);
            i = j + 3;
        }
    }
    return s;
}
