/*
 * logwriter: the log's one output (see logwriter.h).
 *
 * DESIGN: a write(2) per line from every HTTP thread made them queue on the file's locks in the
 * kernel, which cost more than everything else about logging. So an access line, once
 * formatted, is appended whole to one pending buffer under logwriter_out.mutex (a memcpy), and
 * a writer thread (started by logwriter_setup, every signal blocked) swaps that buffer out and
 * writes it in chunks of whole lines no larger than PIPE_BUF, so a line is never split even on
 * a pipe. The writer lets lines gather for LOGWRITER_GATHER_US after the first one, so under
 * load it wakes once per batch, not once per line; an access line reaches the output within a
 * few ms. Events are rare and tests and operators read them at once: an event (sync) writes
 * what is pending and its own line before it returns, under the mutex, so order is kept. A
 * caller waits only when the pending buffer is full (the output is slower than the lines: the
 * back-pressure a blocking write gave). exit() drains the buffer (atexit). Lock order:
 * logwriter_out.mutex only.
 */
#include "logwriter.h"

#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define LOGWRITER_BUF_SIZE  (256 * 1024) /* pending access lines before callers wait */
#define LOGWRITER_GATHER_US 5000         /* the writer lets lines gather this long before a batch */

/* The pending lines and the writer thread; see DESIGN above. */
static struct {
    pthread_mutex_t mutex; /* guards everything below */
    pthread_cond_t work;   /* the writer waits here for lines (or stop) */
    pthread_cond_t idle;   /* callers wait here for room, or for the writer to finish a batch */
    char *pending;         /* lines not yet taken by the writer: one of logwriter_bufs */
    char *spare;           /* the other one, written by the writer between swaps */
    size_t len;            /* bytes in pending */
    bool writing;          /* the writer is writing spare outside the lock */
    bool running;          /* the writer thread exists; false: callers write directly */
    bool stop;             /* exit: drain and end */
    pthread_t thread;
    int fd; /* the output; changed only with the mutex held and the writer not writing */
} logwriter_out = {.mutex = PTHREAD_MUTEX_INITIALIZER,
                   .work = PTHREAD_COND_INITIALIZER,
                   .idle = PTHREAD_COND_INITIALIZER,
                   .fd = 1};
static char logwriter_bufs[2][LOGWRITER_BUF_SIZE]; /* pending and spare, swapped by the writer */

/* Write all of buf to fd (any thread); errors are dropped, there is nowhere to report them. */
static void logwriter_write_all(const char *buf, size_t len)
{
    while (len > 0) {
        ssize_t w = write(logwriter_out.fd, buf, len);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && errno == EAGAIN) {
            struct pollfd p = {.fd = logwriter_out.fd, .events = POLLOUT};
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
static void logwriter_write_lines(const char *buf, size_t len)
{
    while (len > 0) {
        size_t n = len;
        if (n > PIPE_BUF) {
            const char *nl = memrchr(buf, '\n', PIPE_BUF);
            n = nl ? (size_t)(nl - buf) + 1 : PIPE_BUF;
        }
        logwriter_write_all(buf, n);
        buf += n;
        len -= n;
    }
}

/* Writer thread: take the pending lines, write them outside the lock, until stopped. */
static void *logwriter_main(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&logwriter_out.mutex);
    for (;;) {
        while (!logwriter_out.len && !logwriter_out.stop)
            pthread_cond_wait(&logwriter_out.work, &logwriter_out.mutex);
        if (!logwriter_out.len && logwriter_out.stop)
            break; /* stopped and drained */
        /* Let a batch gather: one wake-up and a few writes for many lines, not one each. A
         * half-full buffer or stop ends the wait early. */
        struct timespec until;
        clock_gettime(CLOCK_MONOTONIC, &until);
        until.tv_nsec += LOGWRITER_GATHER_US * 1000L;
        if (until.tv_nsec >= 1000000000L) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000L;
        }
        while (!logwriter_out.stop && logwriter_out.len > 0 &&
               logwriter_out.len < LOGWRITER_BUF_SIZE / 2)
            if (pthread_cond_timedwait(&logwriter_out.work, &logwriter_out.mutex, &until) ==
                ETIMEDOUT)
                break;
        if (!logwriter_out.len)
            continue; /* an event wrote them meanwhile */
        char *batch = logwriter_out.pending;
        size_t n = logwriter_out.len;
        logwriter_out.pending = logwriter_out.spare;
        logwriter_out.spare = batch;
        logwriter_out.len = 0;
        logwriter_out.writing = true;
        pthread_cond_broadcast(&logwriter_out.idle); /* room again */
        pthread_mutex_unlock(&logwriter_out.mutex);
        logwriter_write_lines(batch, n);
        pthread_mutex_lock(&logwriter_out.mutex);
        logwriter_out.writing = false;
        pthread_cond_broadcast(&logwriter_out.idle);
    }
    pthread_mutex_unlock(&logwriter_out.mutex);
    return NULL;
}

/* atexit: write what is pending and end the writer. */
static void logwriter_stop(void)
{
    pthread_mutex_lock(&logwriter_out.mutex);
    if (!logwriter_out.running) {
        pthread_mutex_unlock(&logwriter_out.mutex);
        return;
    }
    logwriter_out.stop = true;
    pthread_cond_signal(&logwriter_out.work);
    pthread_mutex_unlock(&logwriter_out.mutex);
    pthread_join(logwriter_out.thread, NULL);
    pthread_mutex_lock(&logwriter_out.mutex);
    /* A line appended while the writer was ending, and callers waiting for room. */
    logwriter_write_lines(logwriter_out.pending, logwriter_out.len);
    logwriter_out.len = 0;
    logwriter_out.running = false;
    pthread_cond_broadcast(&logwriter_out.idle);
    pthread_mutex_unlock(&logwriter_out.mutex);
}

/* With logwriter_out.mutex held: write every line handed on so far, in order (the batch the writer
 * took is older than what is pending, so it finishes first). */
static void logwriter_drain_locked(void)
{
    while (logwriter_out.writing)
        pthread_cond_wait(&logwriter_out.idle, &logwriter_out.mutex);
    logwriter_write_lines(logwriter_out.pending, logwriter_out.len);
    logwriter_out.len = 0;
    pthread_cond_broadcast(&logwriter_out.idle);
}

void logwriter_flush(void)
{
    pthread_mutex_lock(&logwriter_out.mutex);
    logwriter_drain_locked();
    pthread_mutex_unlock(&logwriter_out.mutex);
}

void logwriter_setup(int fd)
{
    /* Lines already handed on go to the old output; the writer reads fd only while it writes,
     * which the drain waits out, so the change is made under the mutex. */
    pthread_mutex_lock(&logwriter_out.mutex);
    logwriter_drain_locked();
    logwriter_out.fd = fd;
    pthread_mutex_unlock(&logwriter_out.mutex);
    if (logwriter_out.running)
        return;
    logwriter_out.pending = logwriter_bufs[0];
    logwriter_out.spare = logwriter_bufs[1];
    /* The writer's gathering wait runs on the monotonic clock. */
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_destroy(&logwriter_out.work);
    pthread_cond_init(&logwriter_out.work, &ca);
    pthread_condattr_destroy(&ca);
    /* The writer must never take a signal meant for the main thread's sigwait. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int rc = pthread_create(&logwriter_out.thread, NULL, logwriter_main, NULL);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0)
        return; /* no writer: every caller writes its own lines */
    pthread_setname_np(logwriter_out.thread, "log");
    logwriter_out.running = true;
    static bool registered;
    if (!registered && atexit(logwriter_stop) == 0)
        registered = true;
}

void logwriter_put(const char *line, size_t len, bool sync)
{
    pthread_mutex_lock(&logwriter_out.mutex);
    /* Room for an access line, unless there is no writer to make it. */
    while (!sync && logwriter_out.running && logwriter_out.len + len > LOGWRITER_BUF_SIZE)
        pthread_cond_wait(&logwriter_out.idle, &logwriter_out.mutex);
    if (!logwriter_out.running) {
        /* Before log_setup, after exit began, or no writer thread: write it here. */
        logwriter_write_all(line, len);
        pthread_mutex_unlock(&logwriter_out.mutex);
        return;
    }
    if (sync) {
        logwriter_drain_locked();
        logwriter_write_all(line, len);
        pthread_mutex_unlock(&logwriter_out.mutex);
        return;
    }
    size_t before = logwriter_out.len;
    memcpy(logwriter_out.pending + logwriter_out.len, line, len);
    logwriter_out.len += len;
    /* Wake the writer for the first line of a batch, and when the batch is half full. */
    if (before == 0 ||
        (before < LOGWRITER_BUF_SIZE / 2 && logwriter_out.len >= LOGWRITER_BUF_SIZE / 2))
        pthread_cond_signal(&logwriter_out.work);
    pthread_mutex_unlock(&logwriter_out.mutex);
}
