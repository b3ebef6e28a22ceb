/*
 * test_loadtest: load-test.sh's verdict arithmetic, without a load (issue 33). The script's
 * pure functions are sourced with LOAD_TEST_LIB=1: the rate offered to enterprise is a fraction
 * of what the same run measured it can serve; a baseline that did not get what it was offered
 * (the 17,385 req/s of an earlier run offered to a machine serving 10,164, 101 errors) is
 * recognised as a calibration failure rather than passed on to judge isolation against; a
 * scenario passes only with its throughput kept, no error and its p99 within the limit.
 */
#include "harness.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include <cmocka.h>

/* Run `call` with load-test.sh's functions sourced; its output in out, its exit status. */
static int lt(const char *call, char *out, size_t outlen)
{
    const char *root = getenv("BH_ROOT") ? getenv("BH_ROOT") : ".";
    char cmd[1200];
    snprintf(cmd, sizeof(cmd), "cd '%s' && LOAD_TEST_LIB=1 bash -c '. ./load-test.sh && %s' 2>&1",
             root, call);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    size_t n = fread(out, 1, outlen - 1, p);
    out[n] = '\0';
    int rc = pclose(p);
    assert_true(WIFEXITED(rc));
    return WEXITSTATUS(rc);
}

static void the_rate_offered_is_a_fraction_of_what_the_run_measured(void **state)
{
    (void)state;
    char out[256];
    assert_int_equal(lt("offer_rate 20329 0.5", out, sizeof(out)), 0);
    assert_string_equal(out, "10164\n");
    assert_int_equal(lt("offer_rate 7000 0.25", out, sizeof(out)), 0);
    assert_string_equal(out, "1750\n");
    /* Nothing measured (the calibration failed): a small rate, not zero. */
    assert_int_equal(lt("offer_rate 0 0.5", out, sizeof(out)), 0);
    assert_string_equal(out, "50\n");
}

static void a_baseline_that_did_not_get_its_rate_is_a_calibration_failure(void **state)
{
    (void)state;
    char out[256];
    /* The run: 17,385 offered, 10,164 served, 101 errors. */
    assert_int_equal(lt("baseline_ok 17385 10164 101", out, sizeof(out)), 1);
    assert_int_equal(lt("baseline_ok 10000 9950 1", out, sizeof(out)), 1);
    assert_int_equal(lt("baseline_ok 10000 8000 0", out, sizeof(out)), 1);
    assert_int_equal(lt("baseline_ok 10000 9950 0", out, sizeof(out)), 0);
    assert_int_equal(lt("baseline_ok 10000 9000 0", out, sizeof(out)), 0);
}

static void a_scenario_passes_with_its_throughput_no_error_and_its_p99(void **state)
{
    (void)state;
    char out[256];
    assert_int_equal(lt("verdict 9900 4 0 10000 2 0.9 5 25", out, sizeof(out)), 0);
    assert_string_equal(out, "PASS ratio=0.990 p99=4.00ms (limit 25.00ms) errors=0");
    /* One error fails it, whatever the ratio. */
    assert_int_equal(lt("verdict 10000 4 1 10000 2 0.9 5 25", out, sizeof(out)), 0);
    assert_string_equal(out, "FAIL ratio=1.000 p99=4.00ms (limit 25.00ms) errors=1");
    /* Throughput lost. */
    assert_int_equal(lt("verdict 8000 4 0 10000 2 0.9 5 25", out, sizeof(out)), 0);
    assert_string_equal(out, "FAIL ratio=0.800 p99=4.00ms (limit 25.00ms) errors=0");
    /* p99 over 5x the baseline's, above the floor. */
    assert_int_equal(lt("verdict 10000 61 0 10000 12 0.9 5 25", out, sizeof(out)), 0);
    assert_string_equal(out, "FAIL ratio=1.000 p99=61.00ms (limit 60.00ms) errors=0");
}

static void without_ent_rate_the_script_calibrates_and_says_so(void **state)
{
    (void)state;
    const char *root = getenv("BH_ROOT") ? getenv("BH_ROOT") : ".";
    char path[600];
    snprintf(path, sizeof(path), "%s/load-test.sh", root);
    char *s = h_read_file(path);
    assert_non_null(s);
    assert_non_null(strstr(s, "ENT_RATE=${ENT_RATE:-auto}"));
    assert_non_null(strstr(s, "echo \"calibration: $CALIBRATION\""));
    free(s);
    snprintf(path, sizeof(path), "%s/bench/run.sh", root);
    s = h_read_file(path);
    assert_non_null(s);
    /* make bench leaves the rate to the script's own calibration. */
    assert_null(strstr(s, "ENT_RATE=$ENT_RATE ./load-test.sh"));
    free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(the_rate_offered_is_a_fraction_of_what_the_run_measured),
        cmocka_unit_test(a_baseline_that_did_not_get_its_rate_is_a_calibration_failure),
        cmocka_unit_test(a_scenario_passes_with_its_throughput_no_error_and_its_p99),
        cmocka_unit_test(without_ent_rate_the_script_calibrates_and_says_so),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
