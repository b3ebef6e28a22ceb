/*
 * procstat: this process's resource use as the Prometheus client libraries report it
 * (process_cpu_seconds_total, process_resident_memory_bytes, process_open_fds, ...), read from
 * getrusage, getrlimit and /proc/self. Linux only, like the rest of the server. A value that
 * cannot be read is left at 0 and the others are still filled.
 */
#ifndef BULKHEAD_PROCSTAT_H
#define BULKHEAD_PROCSTAT_H

#include <stdint.h>

struct procstat {
    uint64_t cpu_us;      /* user + system CPU time, microseconds */
    uint64_t rss_bytes;   /* resident memory */
    uint64_t vsize_bytes; /* virtual memory */
    uint64_t open_fds;    /* descriptors open now */
    uint64_t max_fds;     /* RLIMIT_NOFILE (soft) */
    uint64_t threads;     /* OS threads */
};

/* Any thread: read the process's current figures; one that cannot be read stays 0 (a scrape
 * shows what it can rather than nothing). */
void procstat_read(struct procstat *out);

/* The thread count in a /proc/<pid>/stat line (field 20, after the command name in
 * parentheses, which may itself hold spaces and parentheses). 0 or -EINVAL. */
int procstat_parse_threads(const char *stat_line, uint64_t *threads)
    __attribute__((warn_unused_result));

#endif
