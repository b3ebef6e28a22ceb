/*
 * procstat: the process's own figures for /metrics (see procstat.h).
 */
#include "procstat.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

int procstat_parse_threads(const char *stat_line, uint64_t *threads)
{
    /* The command name is the only field that may hold spaces: skip past its last ')'. */
    const char *p = strrchr(stat_line, ')');
    if (!p)
        return -EINVAL;
    p++;
    /* Fields 3 (state) .. 20 (num_threads): 18 fields, the last one wanted. */
    for (int field = 3; field < 20; field++) {
        while (*p == ' ')
            p++;
        while (*p && *p != ' ')
            p++;
        if (!*p)
            return -EINVAL;
    }
    char *end = NULL;
    errno = 0;
    unsigned long long v = strtoull(p, &end, 10);
    if (errno || end == p || (*end && *end != ' ' && *end != '\n'))
        return -EINVAL;
    *threads = v;
    return 0;
}

/* The first line of path into buf. 0 or a negative errno. */
static int procstat_line(const char *path, char *buf, size_t len)
{
    FILE *f = fopen(path, "re");
    if (!f)
        return -errno;
    int rc = fgets(buf, (int)len, f) ? 0 : -EIO;
    fclose(f);
    return rc;
}

static int procstat_memory(struct procstat *out)
{
    char line[256];
    int rc = procstat_line("/proc/self/statm", line, sizeof(line));
    if (rc)
        return rc;
    unsigned long long size = 0, resident = 0;
    if (sscanf(line, "%llu %llu", &size, &resident) != 2)
        return -EINVAL;
    long page = sysconf(_SC_PAGESIZE);
    out->vsize_bytes = size * (uint64_t)page;
    out->rss_bytes = resident * (uint64_t)page;
    return 0;
}

/* Descriptors open now, less the one the listing itself holds. */
static int procstat_fds(uint64_t *out)
{
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        return -errno;
    uint64_t n = 0;
    const struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    *out = n > 0 ? n - 1 : 0;
    return 0;
}

void procstat_read(struct procstat *out)
{
    memset(out, 0, sizeof(*out));
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) == 0)
        out->cpu_us = (uint64_t)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000000u +
                      (uint64_t)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec);
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0)
        out->max_fds = rl.rlim_cur;
    char line[1024];
    if (procstat_memory(out) != 0)
        out->rss_bytes = out->vsize_bytes = 0;
    if (procstat_fds(&out->open_fds) != 0)
        out->open_fds = 0;
    if (procstat_line("/proc/self/stat", line, sizeof(line)) != 0 ||
        procstat_parse_threads(line, &out->threads) != 0)
        out->threads = 0;
}
