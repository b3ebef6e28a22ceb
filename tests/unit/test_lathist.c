/*
 * test_lathist: the quarter-octave latency histogram's arithmetic (lathist.h).
 *
 * A latency lands in the bucket whose bounds hold it (powers of two start a bucket, out of
 * range clamps to the ends); a bucket's middle lies within it; a rank reads the bucket that
 * holds it; the typical latency is the mean of the fastest nine tenths, so one slow outlier in
 * ten does not move it.
 */
#include "lathist.h"

#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

static void a_latency_lands_in_the_bucket_that_holds_it(void **state)
{
    (void)state;
    assert_int_equal(lathist_bucket(0), 0);
    assert_int_equal(lathist_bucket(-5), 0);
    assert_int_equal(lathist_bucket(1), 0);
    assert_int_equal(lathist_bucket(1024), 40); /* 2^10: the first quarter of octave 10 */
    assert_int_equal(lathist_bucket(2047), 43);
    assert_int_equal(lathist_bucket(2048), 44);
    assert_int_equal(lathist_bucket(INT64_MAX), LATHIST_BUCKETS - 1);
    for (int64_t us = 1; us < 30000000; us = us * 3 / 2 + 1) {
        size_t k = lathist_bucket(us);
        assert_true(exp2((double)k / 4.0) <= (double)us * 1.0001);
        assert_true((double)us < exp2((double)(k + 1) / 4.0) * 1.0001);
        double mid = lathist_mid(k);
        assert_true(mid >= exp2((double)k / 4.0) && mid < exp2((double)(k + 1) / 4.0));
    }
}

static void a_rank_reads_the_bucket_that_holds_it(void **state)
{
    (void)state;
    uint64_t d[LATHIST_BUCKETS] = {0};
    d[lathist_bucket(1000)] = 90;
    d[lathist_bucket(50000)] = 10;
    assert_true(lathist_rank(d, 1) == lathist_mid(lathist_bucket(1000)));
    assert_true(lathist_rank(d, 90) == lathist_mid(lathist_bucket(1000)));
    assert_true(lathist_rank(d, 91) == lathist_mid(lathist_bucket(50000)));
    assert_true(lathist_rank(d, 1000) == lathist_mid(LATHIST_BUCKETS - 1));
}

static void the_typical_latency_leaves_out_the_slowest_tenth(void **state)
{
    (void)state;
    uint64_t d[LATHIST_BUCKETS] = {0};
    assert_true(lathist_typical(d, 0) == 0);
    d[lathist_bucket(1000)] = 90;
    d[lathist_bucket(5000000)] = 10;
    assert_true(lathist_typical(d, 100) == lathist_mid(lathist_bucket(1000)));
    d[lathist_bucket(5000000)] = 11; /* one more slow one than a tenth: it counts */
    assert_true(lathist_typical(d, 101) > lathist_mid(lathist_bucket(1000)));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(a_latency_lands_in_the_bucket_that_holds_it),
        cmocka_unit_test(a_rank_reads_the_bucket_that_holds_it),
        cmocka_unit_test(the_typical_latency_leaves_out_the_slowest_tenth),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
