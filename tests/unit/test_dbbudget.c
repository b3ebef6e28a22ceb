/*
 * test_dbbudget: database-time budgets (dbbudget.h), on explicit times.
 *
 * A fresh tenant may use its whole budget at once; a statement is charged after it ran, so
 * the tenant may run into debt, and is refused until the refill has paid it back, told
 * exactly when; the bucket refills at the budget per minute; a full table charges nothing
 * (and so refuses nobody); a tenant whose bucket is full again is swept.
 */
#include "dbbudget.h"

#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#define MS 1000ll
#define S  1000000ll
#define T0 (100 * S)

static void a_tenant_in_debt_is_refused_until_the_refill_paid_it_back(void **state)
{
    (void)state;
    struct dbbudget *b = dbbudget_create(16);
    struct dbbudget_verdict v;
    /* 600 ms per minute: a fresh tenant holds all of it. */
    dbbudget_check(b, "id:a", 600, T0, &v);
    assert_true(v.allowed);
    assert_int_equal(v.remaining_ms, 600);
    /* 500 ms: 100 left, still allowed. */
    assert_int_equal(dbbudget_charge(b, "id:a", 600, 500 * MS, T0), 0);
    dbbudget_check(b, "id:a", 600, T0, &v);
    assert_true(v.allowed);
    assert_int_equal(v.remaining_ms, 100);
    /* A 400 ms statement that was admitted runs it 300 ms into debt. */
    assert_int_equal(dbbudget_charge(b, "id:a", 600, 400 * MS, T0), 0);
    dbbudget_check(b, "id:a", 600, T0, &v);
    assert_false(v.allowed);
    assert_int_equal(v.remaining_ms, 0);
    /* 300 ms at 600 ms per minute take 30 s to pay back; full again 30 s + 60 s from now. */
    assert_int_equal(v.retry_after_us, 30 * S + 1);
    assert_int_equal(v.full_us, 90 * S);
    dbbudget_check(b, "id:a", 600, T0 + 30 * S, &v);
    assert_false(v.allowed);
    dbbudget_check(b, "id:a", 600, T0 + 30 * S + 1, &v);
    assert_true(v.allowed);
    /* Another tenant is untouched. */
    dbbudget_check(b, "id:b", 600, T0, &v);
    assert_true(v.allowed);
    assert_int_equal(v.remaining_ms, 600);
    struct dbbudget_stats st;
    dbbudget_stats(b, &st);
    assert_int_equal(st.charges, 2);
    assert_int_equal(st.charged_us, 900 * MS);
    assert_int_equal(st.keys, 1);
    dbbudget_destroy(b);
}

static void the_bucket_refills_at_the_budget_per_minute(void **state)
{
    (void)state;
    struct dbbudget_verdict v;
    int64_t full_at = dbbudget_after_charge(1000, 0, 1000 * MS, T0); /* all of it */
    dbbudget_step(1000, full_at, T0, &v);
    assert_true(!v.allowed || v.remaining_ms == 0);
    dbbudget_step(1000, full_at, T0 + 30 * S, &v);
    assert_true(v.allowed);
    assert_int_equal(v.remaining_ms, 500);
    dbbudget_step(1000, full_at, T0 + 60 * S, &v);
    assert_int_equal(v.remaining_ms, 1000);
    assert_int_equal(v.full_us, 0);
    /* A charge never starts before now: an idle tenant does not bank refill. */
    assert_int_equal(dbbudget_after_charge(1000, T0 - 100 * S, 1 * MS, T0), T0 + 60 * MS);
}

static void a_full_table_charges_nothing_and_full_buckets_are_swept(void **state)
{
    (void)state;
    struct dbbudget *b = dbbudget_create(1);
    assert_int_equal(dbbudget_charge(b, "id:a", 100, 10 * MS, T0), 0);
    assert_int_equal(dbbudget_charge(b, "id:b", 100, 500 * MS, T0), -ENOSPC);
    struct dbbudget_verdict v;
    dbbudget_check(b, "id:b", 100, T0, &v);
    assert_true(v.allowed); /* untracked: never refused */
    struct dbbudget_stats st;
    dbbudget_stats(b, &st);
    assert_int_equal(st.untracked, 1);
    /* 10 ms of 100 per minute: full again 6 s later, then swept. */
    assert_int_equal(dbbudget_sweep(b, T0 + 5 * S), 0);
    assert_int_equal(dbbudget_sweep(b, T0 + 6 * S), 1);
    assert_int_equal(dbbudget_charge(b, "id:b", 100, 10 * MS, T0 + 6 * S), 0);
    dbbudget_destroy(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(a_tenant_in_debt_is_refused_until_the_refill_paid_it_back),
        cmocka_unit_test(the_bucket_refills_at_the_budget_per_minute),
        cmocka_unit_test(a_full_table_charges_nothing_and_full_buckets_are_swept),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
