/*
 * logwriter: the log's one output. log.c formats a line on the caller's stack and hands it here
 * whole, so lines never interleave: an access line is copied into one pending buffer that a
 * writer thread writes out in batches of whole lines a few ms later (an HTTP thread never waits
 * on the output unless the buffer is full); an event is written, after whatever is pending,
 * before logwriter_put returns. It knows nothing of what a line says. DESIGN: see logwriter.c.
 */
#ifndef BULKHEAD_LOGWRITER_H
#define BULKHEAD_LOGWRITER_H

#include <stdbool.h>
#include <stddef.h>

/* Write to fd from now on, after the lines handed on so far have gone to the old one; the
 * first call starts the writer thread (without one, every caller writes its own lines). */
void logwriter_setup(int fd);

/* Any thread: hand on line[0..len), which ends with its newline and is at most PIPE_BUF
 * bytes. sync false (an access line): batched; sync true (an event): written, after what is
 * pending, before this returns. */
void logwriter_put(const char *line, size_t len, bool sync);

/* Returns once every line handed on so far is written. */
void logwriter_flush(void);

#endif
