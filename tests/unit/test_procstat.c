/*
 * test_procstat: the process figures behind /metrics' process_* series. The thread count is
 * parsed from /proc/<pid>/stat lines whose command name holds spaces and parentheses, and a
 * broken line is refused; on this process: opening a descriptor adds exactly one to open_fds,
 * a new thread adds one to threads, CPU time grows while spinning (waited for, not timed),
 * max_fds is the soft RLIMIT_NOFILE, resident memory is non-zero and below virtual memory.
 */
#include "procstat.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cmocka.h>

static void the_thread_count_is_field_20_whatever_the_command_name(void **state)
{
    (void)state;
    uint64_t n = 0;
    assert_int_equal(procstat_parse_threads("42 (bulkhead) S 1 42 42 0 -1 4194560 1 0 0 0 3 4 0 0"
                                            " 20 0 106 0 1000 1 2",
                                            &n),
                     0);
    assert_int_equal(n, 106);
    /* A name with spaces and a ')' of its own: only the last ')' ends it. */
    assert_int_equal(procstat_parse_threads("7 (a) b (c)) R 1 7 7 0 -1 0 0 0 0 0 1 1 0 0 20 0 3 0"
                                            " 5\n",
                                            &n),
                     0);
    assert_int_equal(n, 3);
}

static void a_broken_stat_line_is_refused(void **state)
{
    (void)state;
    uint64_t n = 99;
    assert_int_equal(procstat_parse_threads("", &n), -EINVAL);
    assert_int_equal(procstat_parse_threads("42 bulkhead S 1 2", &n), -EINVAL);
    assert_int_equal(procstat_parse_threads("42 (x) S 1 2 3", &n), -EINVAL);
    assert_int_equal(
        procstat_parse_threads("42 (x) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 x 1", &n), -EINVAL);
    assert_int_equal(n, 99);
}

static void an_open_descriptor_counts_one(void **state)
{
    (void)state;
    struct procstat a, b;
    procstat_read(&a);
    int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    assert_true(fd >= 0);
    procstat_read(&b);
    close(fd);
    assert_true(a.open_fds >= 3); /* stdin, stdout, stderr at least */
    assert_int_equal(b.open_fds, a.open_fds + 1);
    struct rlimit rl;
    assert_int_equal(getrlimit(RLIMIT_NOFILE, &rl), 0);
    assert_int_equal(b.max_fds, rl.rlim_cur);
}

static atomic_bool stop;

static void *idle_thread(void *arg)
{
    (void)arg;
    while (!atomic_load(&stop))
        usleep(1000);
    return NULL;
}

static void a_new_thread_counts_one(void **state)
{
    (void)state;
    struct procstat a, b;
    procstat_read(&a);
    pthread_t t;
    atomic_store(&stop, false);
    assert_int_equal(pthread_create(&t, NULL, idle_thread, NULL), 0);
    procstat_read(&b);
    atomic_store(&stop, true);
    pthread_join(t, NULL);
    assert_true(a.threads >= 1);
    assert_int_equal(b.threads, a.threads + 1);
}

static void cpu_time_grows_while_spinning_and_memory_is_plausible(void **state)
{
    (void)state;
    struct procstat a, b;
    procstat_read(&a);
    volatile uint64_t x = 0;
    do {
        for (int i = 0; i < 1000000; i++)
            x += (uint64_t)i;
        procstat_read(&b);
    } while (b.cpu_us <= a.cpu_us);
    assert_true(b.cpu_us > a.cpu_us);
    assert_true(b.rss_bytes > 0);
    assert_true(b.rss_bytes < b.vsize_bytes);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(the_thread_count_is_field_20_whatever_the_command_name),
        cmocka_unit_test(a_broken_stat_line_is_refused),
        cmocka_unit_test(an_open_descriptor_counts_one),
        cmocka_unit_test(a_new_thread_counts_one),
        cmocka_unit_test(cpu_time_grows_while_spinning_and_memory_is_plausible),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
