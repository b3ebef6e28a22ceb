/*
 * test_dbidle: a pool's idle list and its reaper's steps (dbidle.h) alone, no database. The
 * list is most recently released first; the snapshot marks a connection with no usable PGconn
 * dead; the probe keeps the connections whose socket is readable (the server closed them) or
 * that idled past the timeout, and drops the rest; only connections still idle as they were
 * seen are unlinked (one taken and given back since is left alone). Connections here are bare
 * structs (pg NULL: libpq reports it CONNECTION_BAD, socket -1); sockets are socketpairs.
 */
#include "dbidle.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

static void the_list_gives_back_the_most_recently_released_first(void **state)
{
    (void)state;
    struct dbidle l = {0};
    struct dbconn a = {0}, b = {0}, c = {0};
    dbidle_push(&l, &a);
    dbidle_push(&l, &b);
    dbidle_push(&l, &c);
    assert_int_equal(l.n, 3);
    assert_ptr_equal(dbidle_pop(&l), &c);
    assert_null(c.next);
    assert_int_equal(l.n, 2);
    size_t n = 0;
    struct dbconn *all = dbidle_take_all(&l, &n);
    assert_int_equal(n, 2);
    assert_ptr_equal(all, &b);
    assert_ptr_equal(b.next, &a);
    assert_null(a.next);
    assert_int_equal(l.n, 0);
    assert_null(l.head);
    assert_null(dbidle_pop(&l));
}

static void the_probe_keeps_the_closed_and_the_expired_and_drops_the_rest(void **state)
{
    (void)state;
    int closed[2], quiet[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, closed), 0);
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, quiet), 0);
    assert_int_equal(write(closed[1], "x", 1), 1); /* as a server's goodbye */
    struct dbconn a = {0}, b = {0}, c = {0}, d = {0};
    const int64_t now = 1000000000, timeout = 60000000;
    struct dbidle_seen seen[] = {
        {.c = &a, .released_us = now, .fd = closed[0]},          /* readable: dead */
        {.c = &b, .released_us = now - timeout, .fd = quiet[0]}, /* idled past the timeout */
        {.c = &c, .released_us = now - 1, .fd = quiet[1]},       /* alive and fresh: dropped */
        {.c = &d, .released_us = now, .fd = -1, .dead = true},   /* not usable when seen */
    };
    struct dbidle_seen again[4];
    memcpy(again, seen, sizeof(seen));

    assert_int_equal(dbidle_probe(seen, 4, now, timeout), 3);
    assert_ptr_equal(seen[0].c, &a);
    assert_true(seen[0].dead);
    assert_ptr_equal(seen[1].c, &b);
    assert_false(seen[1].dead);
    assert_ptr_equal(seen[2].c, &d);
    assert_true(seen[2].dead);
    /* No idle timeout: only the dead. */
    assert_int_equal(dbidle_probe(again, 4, now, 0), 2);
    assert_ptr_equal(again[0].c, &a);
    assert_ptr_equal(again[1].c, &d);
    for (int i = 0; i < 2; i++) {
        close(closed[i]);
        close(quiet[i]);
    }
}

static void a_connection_taken_and_given_back_since_the_snapshot_is_left_alone(void **state)
{
    (void)state;
    struct dbidle l = {0};
    struct dbconn a = {.released_us = 1}, b = {.released_us = 2}, c = {.released_us = 3};
    dbidle_push(&l, &a);
    dbidle_push(&l, &b);
    dbidle_push(&l, &c);
    struct dbidle_seen *seen = NULL;
    assert_int_equal(dbidle_snapshot(&l, &seen), 3);
    for (size_t i = 0; i < 3; i++) /* no PGconn: not usable */
        assert_true(seen[i].dead && seen[i].fd == -1);
    /* c taken and given back, b taken and still held. */
    assert_ptr_equal(dbidle_pop(&l), &c);
    assert_ptr_equal(dbidle_pop(&l), &b);
    c.released_us = 10;
    dbidle_push(&l, &c);

    struct dbconn *dead = NULL;
    size_t ndead = 0;
    assert_int_equal(dbidle_unlink_seen(&l, seen, 3, &dead, &ndead), 1);
    assert_int_equal(ndead, 1);
    assert_ptr_equal(dead, &a);
    assert_null(a.next);
    assert_int_equal(l.n, 1);
    assert_ptr_equal(l.head, &c);
    assert_null(c.next);
    free(seen);
}

static void an_empty_list_snapshots_nothing(void **state)
{
    (void)state;
    struct dbidle l = {0};
    struct dbidle_seen one, *seen = &one; /* overwritten */
    assert_int_equal(dbidle_snapshot(&l, &seen), 0);
    assert_null(seen);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(the_list_gives_back_the_most_recently_released_first),
        cmocka_unit_test(the_probe_keeps_the_closed_and_the_expired_and_drops_the_rest),
        cmocka_unit_test(a_connection_taken_and_given_back_since_the_snapshot_is_left_alone),
        cmocka_unit_test(an_empty_list_snapshots_nothing),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
