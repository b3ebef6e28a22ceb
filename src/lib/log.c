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
 * DESIGN: a write(2) per line from every HTTP thread made them queue on the file's locks in the
 * kernel, which cost more than everything else about logging. So an access line, once
 * formatted, is appended whole to one pending buffer under log_out.mutex (a memcpy), and a
 * writer thread (started by log_setup, every signal blocked) swaps that buffer out and writes
 * it in chunks of whole lines no larger than PIPE_BUF, so a line is never split even on a pipe.
 * The writer lets lines gather for LOG_GATHER_US after the first one, so under load it wakes
 * once per batch, not once per line; an access line reaches the output within a few ms.
 * Events are rare and tests and operators read them at once: log_event writes what is pending
 * and its own line before it returns, under the mutex, so order is kept. A caller waits only
 * when the pending buffer is full (the output is slower than the lines: the back-pressure a
 * blocking write gave). exit() drains the buffer (atexit). Lock order: log_out.mutex only.
 */
#include "log.h"
#include "xalloc.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define LOG_LINE_MAX  4000 /* below PIPE_BUF, so a line is written atomically to a pipe */
#define LOG_FIELD_MAX 512  /* longest user-supplied field kept in a line */
#define LOG_FIELD_OUT 600  /* most bytes one field takes once escaped (6 per byte at worst) */
#define LOG_BUF_SIZE  (256 * 1024) /* pending access lines before callers wait */
#define LOG_GATHER_US 5000         /* the writer lets lines gather this long before a batch */
/* Escaped text stops this far before the end of the line, so what follows it (closing quotes,
 * the status, the outcome, the timings, the closing brace) always fits and a line cut short
 * is still well-formed. */
#define LOG_TEXT_CAP (LOG_LINE_MAX - 256)

/* Set once by log_setup before threads start; read-only afterwards. */
static struct {
    enum log_format fmt;
    enum log_level level;
    bool access;
    int fd;
    uint64_t sample_below; /* a success is logged when a draw is below this; UINT64_MAX: all */
    int64_t slow_us;       /* always log requests this slow; 0: none is */
} log_cfg = {LOG_FORMAT_JSON, LOG_LEVEL_INFO, true, 1, UINT64_MAX, 0};

/* The pending lines and the writer thread; see DESIGN above. */
static struct {
    pthread_mutex_t mutex; /* guards everything below */
    pthread_cond_t work;   /* the writer waits here for lines (or stop) */
    pthread_cond_t idle;   /* callers wait here for room, or for the writer to finish a batch */
    char *pending;         /* lines not yet taken by the writer: one of log_bufs */
    char *spare;           /* the other one, written by the writer between swaps */
    size_t len;            /* bytes in pending */
    bool writing;          /* the writer is writing spare outside the lock */
    bool running;          /* the writer thread exists; false: callers write directly */
    bool stop;             /* exit: drain and end */
    pthread_t thread;
} log_out = {.mutex = PTHREAD_MUTEX_INITIALIZER,
             .work = PTHREAD_COND_INITIALIZER,
             .idle = PTHREAD_COND_INITIALIZER};
static char log_bufs[2][LOG_BUF_SIZE]; /* pending and spare, swapped by the writer */

static const char *const log_level_names[] = {"debug", "info", "warn", "error"};

/* Write all of buf to fd (any thread); errors are dropped, there is nowhere to report them. */
static void log_write_all(const char *buf, size_t len)
{
    while (len > 0) {
        ssize_t w = write(log_cfg.fd, buf, len);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && errno == EAGAIN) {
            struct pollfd p = {.fd = log_cfg.fd, .events = POLLOUT};
            poll(&p, 1, 1000);
            continue;
        }
        if (w <= 0)
            return;
        buf += w;
        len -= (size_t)w;
    }
}

/* Write whole lines, at most PIPE_BUF bytes a call, so no line is split on a pipe. */
static void log_write_lines(const char *buf, size_t len)
{
    while (len > 0) {
        size_t n = len;
        if (n > PIPE_BUF) {
            const char *nl = memrchr(buf, '\n', PIPE_BUF);
            n = nl ? (size_t)(nl - buf) + 1 : PIPE_BUF;
        }
        log_write_all(buf, n);
        buf += n;
        len -= n;
    }
}

/* Writer thread: take the pending lines, write them outside the lock, until stopped. */
static void *log_writer_main(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&log_out.mutex);
    for (;;) {
        while (!log_out.len && !log_out.stop)
            pthread_cond_wait(&log_out.work, &log_out.mutex);
        if (!log_out.len && log_out.stop)
            break; /* stopped and drained */
        /* Let a batch gather: one wake-up and a few writes for many lines, not one each. A
         * half-full buffer or stop ends the wait early. */
        struct timespec until;
        clock_gettime(CLOCK_MONOTONIC, &until);
        until.tv_nsec += LOG_GATHER_US * 1000L;
        if (until.tv_nsec >= 1000000000L) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000L;
        }
        while (!log_out.stop && log_out.len > 0 && log_out.len < LOG_BUF_SIZE / 2)
            if (pthread_cond_timedwait(&log_out.work, &log_out.mutex, &until) == ETIMEDOUT)
                break;
        if (!log_out.len)
            continue; /* an event wrote them meanwhile */
        char *batch = log_out.pending;
        size_t n = log_out.len;
        log_out.pending = log_out.spare;
        log_out.spare = batch;
        log_out.len = 0;
        log_out.writing = true;
        pthread_cond_broadcast(&log_out.idle); /* room again */
        pthread_mutex_unlock(&log_out.mutex);
        log_write_lines(batch, n);
        pthread_mutex_lock(&log_out.mutex);
        log_out.writing = false;
        pthread_cond_broadcast(&log_out.idle);
    }
    pthread_mutex_unlock(&log_out.mutex);
    return NULL;
}

/* atexit: write what is pending and end the writer. */
static void log_writer_stop(void)
{
    pthread_mutex_lock(&log_out.mutex);
    if (!log_out.running) {
        pthread_mutex_unlock(&log_out.mutex);
        return;
    }
    log_out.stop = true;
    pthread_cond_signal(&log_out.work);
    pthread_mutex_unlock(&log_out.mutex);
    pthread_join(log_out.thread, NULL);
    pthread_mutex_lock(&log_out.mutex);
    /* A line appended while the writer was ending, and callers waiting for room. */
    log_write_lines(log_out.pending, log_out.len);
    log_out.len = 0;
    log_out.running = false;
    pthread_cond_broadcast(&log_out.idle);
    pthread_mutex_unlock(&log_out.mutex);
}

/* With log_out.mutex held: write every line handed on so far, in order (the batch the writer
 * took is older than what is pending, so it finishes first). */
static void log_drain_locked(void)
{
    while (log_out.writing)
        pthread_cond_wait(&log_out.idle, &log_out.mutex);
    log_write_lines(log_out.pending, log_out.len);
    log_out.len = 0;
    pthread_cond_broadcast(&log_out.idle);
}

void log_flush(void)
{
    pthread_mutex_lock(&log_out.mutex);
    log_drain_locked();
    pthread_mutex_unlock(&log_out.mutex);
}

void log_setup(enum log_format fmt, enum log_level level, bool access, int fd)
{
    /* Lines already handed on go to the old output; the writer reads log_cfg only while it
     * writes, which the drain waits out, so the change is made under the mutex. */
    pthread_mutex_lock(&log_out.mutex);
    log_drain_locked();
    log_cfg.fmt = fmt;
    log_cfg.level = level;
    log_cfg.access = access;
    log_cfg.fd = fd;
    pthread_mutex_unlock(&log_out.mutex);
    if (log_out.running)
        return;
    log_out.pending = log_bufs[0];
    log_out.spare = log_bufs[1];
    /* The writer's gathering wait runs on the monotonic clock. */
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_destroy(&log_out.work);
    pthread_cond_init(&log_out.work, &ca);
    pthread_condattr_destroy(&ca);
    /* The writer must never take a signal meant for the main thread's sigwait. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int rc = pthread_create(&log_out.thread, NULL, log_writer_main, NULL);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0)
        return; /* no writer: every caller writes its own lines */
    pthread_setname_np(log_out.thread, "log");
    log_out.running = true;
    static bool registered;
    if (!registered && atexit(log_writer_stop) == 0)
        registered = true;
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

/*
 * End the line and hand it on (any thread). An access line (sync false) is appended to the
 * pending buffer; an event (sync true) is written before this returns, after what is pending.
 */
static void log_write(char *line, size_t len, bool sync)
{
    if (len >= LOG_LINE_MAX - 1)
        len = LOG_LINE_MAX - 2;
    line[len++] = '\n';
    pthread_mutex_lock(&log_out.mutex);
    /* Room for an access line, unless there is no writer to make it. */
    while (!sync && log_out.running && log_out.len + len > LOG_BUF_SIZE)
        pthread_cond_wait(&log_out.idle, &log_out.mutex);
    if (!log_out.running) {
        /* Before log_setup, after exit began, or no writer thread: write it here. */
        log_write_all(line, len);
        pthread_mutex_unlock(&log_out.mutex);
        return;
    }
    if (sync) {
        log_drain_locked();
        log_write_all(line, len);
        pthread_mutex_unlock(&log_out.mutex);
        return;
    }
    size_t before = log_out.len;
    memcpy(log_out.pending + log_out.len, line, len);
    log_out.len += len;
    /* Wake the writer for the first line of a batch, and when the batch is half full. */
    if (before == 0 || (before < LOG_BUF_SIZE / 2 && log_out.len >= LOG_BUF_SIZE / 2))
        pthread_cond_signal(&log_out.work);
    pthread_mutex_unlock(&log_out.mutex);
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
