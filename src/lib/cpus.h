/*
 * cpus: how many CPUs this process may really use, for HTTP_THREADS=0 (one event thread each).
 *
 * A container limited with `--cpus 2` (Kubernetes: resources.limits.cpu) still sees every CPU
 * of the host in sysconf and sched_getaffinity; the limit is a CFS quota in its cgroup. So the
 * count is the CPUs in the affinity mask, lowered to the quota rounded up (1.5 CPUs: 2 threads),
 * never below 1. The quota is read from cgroup v2 (cpu.max) or v1 (cpu.cfs_quota_us and
 * cpu.cfs_period_us), in the process's own cgroup and every ancestor up to the mount point: the
 * tightest one applies.
 */
#ifndef BULKHEAD_CPUS_H
#define BULKHEAD_CPUS_H

/* The CPUs this process may use: affinity, lowered to the cgroup quota; at least 1. */
unsigned cpus_usable(void);

/*
 * The CPU limit the cgroup quota sets, rounded up and at least 1, in *cpus. cgroup_root is where
 * cgroupfs is mounted ("/sys/fs/cgroup"), self_cgroup a file in the format of /proc/self/cgroup
 * (both are parameters so tests can use files in a temporary directory). Returns 0, or -ENOENT
 * when no quota applies (no cgroup found, "max", or -1).
 */
int cpus_cgroup_limit(const char *cgroup_root, const char *self_cgroup, unsigned *cpus)
    __attribute__((warn_unused_result));

#endif
