/*
 * test_cpus: the CPU count behind HTTP_THREADS=0. cgroup v2 (cpu.max) and v1
 * (cpu.cfs_quota_us / cpu.cfs_period_us) quotas are read from files in a temporary directory laid
 * out like /sys/fs/cgroup, with a /proc/self/cgroup of our own: the quota is rounded up, never
 * below 1, the tightest of the cgroup and its ancestors wins, "max" and -1 mean no limit, and
 * anything unreadable is no limit rather than an error. cpus_usable on this machine is within
 * 1..online CPUs.
 */
#include "cpus.h"

#include <errno.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

static char tmp[64];        /* the test's temporary directory */
static char root[PATH_MAX]; /* a fresh fake /sys/fs/cgroup per test, in tmp */
static char self[PATH_MAX]; /* a fake /proc/self/cgroup, in tmp */

static int fresh(void **state)
{
    (void)state;
    snprintf(tmp, sizeof(tmp), "/tmp/test_cpus_XXXXXX");
    if (!mkdtemp(tmp))
        return -1;
    snprintf(root, sizeof(root), "%s/cgroup", tmp);
    snprintf(self, sizeof(self), "%s/self-cgroup", tmp);
    return mkdir(root, 0755);
}

static int cleanup(void **state)
{
    (void)state;
    char cmd[160];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmp);
    return system(cmd) == 0 ? 0 : -1;
}

/* Write text to root/rel (creating directories). */
static void put(const char *rel, const char *text)
{
    char path[PATH_MAX + 256];
    snprintf(path, sizeof(path), "%s/%s", root, rel);
    for (char *p = path + strlen(root) + 1; (p = strchr(p, '/')); p++) {
        *p = '\0';
        mkdir(path, 0755);
        *p = '/';
    }
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static void self_is(const char *text)
{
    FILE *f = fopen(self, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static int limit(unsigned *n)
{
    *n = 0;
    return cpus_cgroup_limit(root, self, n);
}

static void v2_quota_is_rounded_up_and_never_below_one(void **state)
{
    (void)state;
    static const struct {
        const char *max;
        int rc;
        unsigned want;
    } cases[] = {
        {"150000 100000\n", 0, 2}, {"200000 100000\n", 0, 2},    {"200001 100000\n", 0, 3},
        {"50000 100000\n", 0, 1},  {"1000 100000\n", 0, 1},      {"100000 100000", 0, 1},
        {"800000 50000\n", 0, 16}, {"max 100000\n", -ENOENT, 0}, {"\n", -ENOENT, 0},
        {"junk", -ENOENT, 0},      {"0 100000\n", -ENOENT, 0},   {"100000 0\n", -ENOENT, 0},
    };
    self_is("0::/kubepods/pod1/ctr\n");
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        put("kubepods/pod1/ctr/cpu.max", cases[i].max);
        unsigned n;
        int rc = limit(&n);
        if (rc != cases[i].rc || (rc == 0 && n != cases[i].want))
            fail_msg("cpu.max \"%s\": rc %d n %u, want rc %d n %u", cases[i].max, rc, n,
                     cases[i].rc, cases[i].want);
    }
}

static void v2_the_tightest_of_the_cgroup_and_its_ancestors_wins(void **state)
{
    (void)state;
    self_is("0::/kubepods/pod1/ctr\n");
    put("kubepods/pod1/ctr/cpu.max", "max 100000\n");
    put("kubepods/pod1/cpu.max", "300000 100000\n");
    put("kubepods/cpu.max", "max 100000\n");
    unsigned n;
    assert_int_equal(limit(&n), 0);
    assert_int_equal(n, 3); /* the pod's limit holds its container */
    put("kubepods/pod1/ctr/cpu.max", "100000 100000\n");
    assert_int_equal(limit(&n), 0);
    assert_int_equal(n, 1);
    put("kubepods/pod1/ctr/cpu.max", "900000 100000\n");
    assert_int_equal(limit(&n), 0);
    assert_int_equal(n, 3);
}

static void v2_in_a_cgroup_namespace_reads_the_mount_root(void **state)
{
    (void)state;
    /* Docker with cgroupns: the container sees itself as "/", its limit at the root. */
    self_is("0::/\n");
    put("cpu.max", "250000 100000\n");
    unsigned n;
    assert_int_equal(limit(&n), 0);
    assert_int_equal(n, 3);
    put("cpu.max", "max 100000\n");
    assert_int_equal(limit(&n), -ENOENT);
}

static void v1_quota_and_period_from_the_cpu_controller(void **state)
{
    (void)state;
    /* Docker on cgroup v1: the path names the host's view, the mount is the container's own. */
    self_is("12:memory:/docker/abc\n4:cpu,cpuacct:/docker/abc\n1:name=systemd:/docker/abc\n");
    put("cpu,cpuacct/cpu.cfs_quota_us", "250000\n");
    put("cpu,cpuacct/cpu.cfs_period_us", "100000\n");
    unsigned n;
    assert_int_equal(limit(&n), 0);
    assert_int_equal(n, 3);
    /* A nested cgroup's own quota, tighter. */
    put("cpu,cpuacct/docker/abc/cpu.cfs_quota_us", "50000\n");
    put("cpu,cpuacct/docker/abc/cpu.cfs_period_us", "100000\n");
    assert_int_equal(limit(&n), 0);
    assert_int_equal(n, 1);
    /* -1 is no limit anywhere. */
    put("cpu,cpuacct/docker/abc/cpu.cfs_quota_us", "-1\n");
    put("cpu,cpuacct/cpu.cfs_quota_us", "-1\n");
    assert_int_equal(limit(&n), -ENOENT);
}

static void v1_under_the_plain_cpu_mount(void **state)
{
    (void)state;
    self_is("3:cpuacct:/\n2:cpu:/\n0::/\n");
    put("cpu/cpu.cfs_quota_us", "400000\n");
    put("cpu/cpu.cfs_period_us", "100000\n");
    unsigned n;
    assert_int_equal(limit(&n), 0);
    assert_int_equal(n, 4);
    /* "cpuacct" or "cpuset" alone is not the cpu controller. */
    self_is("3:cpuacct:/\n5:cpuset:/\n");
    assert_int_equal(limit(&n), -ENOENT);
}

static void nothing_readable_is_no_limit(void **state)
{
    (void)state;
    unsigned n = 7;
    assert_int_equal(cpus_cgroup_limit(root, "/nonexistent/cgroup", &n), -ENOENT);
    assert_int_equal(n, 7); /* untouched */
    self_is("");
    assert_int_equal(limit(&n), -ENOENT);
    self_is("garbage\n::\n0:\n0::relative\n");
    assert_int_equal(limit(&n), -ENOENT);
    self_is("0::/not/there\n");
    assert_int_equal(limit(&n), -ENOENT);
    /* A path that would not fit is ignored, not overflowed. */
    static char big[PATH_MAX + 100] = "0::/";
    memset(big + 4, 'a', PATH_MAX + 50);
    self_is(big);
    assert_int_equal(limit(&n), -ENOENT);
}

static void usable_is_between_one_and_the_online_cpus(void **state)
{
    (void)state;
    unsigned n = cpus_usable();
    long online = sysconf(_SC_NPROCESSORS_ONLN);
    printf("# cpus_usable() = %u of %ld online\n", n, online);
    assert_true(n >= 1);
    assert_true((long)n <= online);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(v2_quota_is_rounded_up_and_never_below_one, fresh, cleanup),
        cmocka_unit_test_setup_teardown(v2_the_tightest_of_the_cgroup_and_its_ancestors_wins, fresh,
                                        cleanup),
        cmocka_unit_test_setup_teardown(v2_in_a_cgroup_namespace_reads_the_mount_root, fresh,
                                        cleanup),
        cmocka_unit_test_setup_teardown(v1_quota_and_period_from_the_cpu_controller, fresh,
                                        cleanup),
        cmocka_unit_test_setup_teardown(v1_under_the_plain_cpu_mount, fresh, cleanup),
        cmocka_unit_test_setup_teardown(nothing_readable_is_no_limit, fresh, cleanup),
        cmocka_unit_test(usable_is_between_one_and_the_online_cpus),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
