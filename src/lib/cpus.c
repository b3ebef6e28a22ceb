/*
 * cpus: the CPUs the process may use, from its affinity mask and its cgroup's CPU quota
 * (see cpus.h). Read once at start, on the main thread.
 */
#include "cpus.h"
#include "fileio.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <sched.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The quota one cgroup directory sets, rounded up; 0 when it sets none or cannot be read. */
static unsigned cpus_dir_quota(const char *dir, bool v2)
{
    char path[PATH_MAX];
    char *text = NULL;
    size_t len = 0;
    long long quota = 0, period = 0;
    if (v2) {
        /* "max 100000" (no limit) or "150000 100000": quota and period in microseconds. */
        snprintf(path, sizeof(path), "%s/cpu.max", dir);
        if (fileio_read(path, 4096, &text, &len) != 0)
            return 0;
        if (sscanf(text, "%lld %lld", &quota, &period) != 2)
            quota = 0;
        free(text);
    } else {
        snprintf(path, sizeof(path), "%s/cpu.cfs_quota_us", dir);
        if (fileio_read(path, 4096, &text, &len) != 0)
            return 0;
        if (sscanf(text, "%lld", &quota) != 1) /* -1: no limit */
            quota = 0;
        free(text);
        snprintf(path, sizeof(path), "%s/cpu.cfs_period_us", dir);
        if (fileio_read(path, 4096, &text, &len) != 0)
            return 0;
        if (sscanf(text, "%lld", &period) != 1)
            period = 0;
        free(text);
    }
    if (quota <= 0 || period <= 0)
        return 0;
    long long n = (quota + period - 1) / period;
    return n < 1 ? 1 : n > UINT_MAX ? UINT_MAX : (unsigned)n;
}

/* The tightest quota from base + path up to base; 0 when none. */
static unsigned cpus_walk(const char *base, const char *path, bool v2)
{
    char dir[PATH_MAX];
    if ((size_t)snprintf(dir, sizeof(dir), "%s%s", base, path) >= sizeof(dir))
        return 0;
    size_t floor = strlen(base);
    unsigned best = 0;
    for (;;) {
        size_t n = strlen(dir);
        while (n > floor && dir[n - 1] == '/')
            dir[--n] = '\0';
        unsigned q = cpus_dir_quota(dir, v2);
        if (q && (!best || q < best))
            best = q;
        char *slash = strrchr(dir + floor, '/');
        if (!slash)
            break;
        *slash = '\0';
    }
    return best;
}

/* Whether the comma-separated controller list names "cpu". */
static bool cpus_has_cpu_controller(const char *list, size_t len)
{
    for (const char *p = list; p < list + len;) {
        const char *comma = memchr(p, ',', (size_t)(list + len - p));
        size_t n = comma ? (size_t)(comma - p) : (size_t)(list + len - p);
        if (n == 3 && !strncmp(p, "cpu", 3))
            return true;
        p += n + 1;
    }
    return false;
}

int cpus_cgroup_limit(const char *cgroup_root, const char *self_cgroup, unsigned *cpus)
{
    char *text = NULL;
    size_t len = 0;
    if (fileio_read(self_cgroup, 1 << 16, &text, &len) != 0)
        return -ENOENT;
    unsigned best = 0;
    char base[PATH_MAX];
    for (char *line = text, *next; line && *line; line = next) {
        next = strchr(line, '\n');
        if (next)
            *next++ = '\0';
        /* hierarchy-id:controllers:path */
        char *c1 = strchr(line, ':');
        char *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
        if (!c2 || c2[1] != '/')
            continue;
        const char *path = c2 + 1;
        unsigned q = 0;
        if (c1 == line + 1 && line[0] == '0' && c2 == c1 + 1) {
            q = cpus_walk(cgroup_root, path, true); /* v2: "0::/path" */
        } else if (cpus_has_cpu_controller(c1 + 1, (size_t)(c2 - c1 - 1))) {
            /* v1: mounted as <root>/cpu,cpuacct (the list as written) or <root>/cpu. */
            snprintf(base, sizeof(base), "%s/%.*s", cgroup_root, (int)(c2 - c1 - 1), c1 + 1);
            q = cpus_walk(base, path, false);
            snprintf(base, sizeof(base), "%s/cpu", cgroup_root);
            unsigned q2 = cpus_walk(base, path, false);
            if (q2 && (!q || q2 < q))
                q = q2;
        }
        if (q && (!best || q < best))
            best = q;
    }
    free(text);
    if (!best)
        return -ENOENT;
    *cpus = best;
    return 0;
}

unsigned cpus_usable(void)
{
    long n = 0;
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof(set), &set) == 0)
        n = CPU_COUNT(&set);
    if (n <= 0)
        n = sysconf(_SC_NPROCESSORS_ONLN);
    if (n <= 0)
        n = 1;
    unsigned quota;
    if (cpus_cgroup_limit("/sys/fs/cgroup", "/proc/self/cgroup", &quota) == 0 &&
        quota < (unsigned long)n)
        n = (long)quota;
    return (unsigned)n;
}
