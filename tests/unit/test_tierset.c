/*
 * test_tierset: the tier set's contract (tierset.h).
 *
 * Names never change and are found by name; a snapshot is a whole table that stays readable
 * and unchanged after newer settings are published; a reload's table is matched to the set's
 * order, and one that adds or drops a tier is refused. Last, reader threads take snapshots
 * while the main thread publishes, and every snapshot they see is one whole table (under
 * ThreadSanitizer this is also the proof that reload and readers do not race).
 */
#include "tiers.h"
#include "tierset.h"

#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

static struct tier_table table(const char *json)
{
    struct tier_table t;
    char err[300];
    if (tiers_parse(json, strlen(json), &t, err, sizeof(err))) {
        fprintf(stderr, "%s\n", err);
        abort();
    }
    return t;
}

static const char seed[] = "{\"free\": {\"workers\": 10}, \"pro\": {\"workers\": 30},"
                           " \"enterprise\": {\"workers\": 60}}";

static void names_are_fixed_and_found_by_name(void **state)
{
    (void)state;
    struct tier_table t = table(seed);
    struct tierset *ts;
    assert_int_equal(tierset_create(&t, &ts), 0);
    assert_int_equal(tierset_count(ts), 3);
    assert_ptr_equal(tierset_find(ts, "pro"), tierset_tier(ts, 1));
    assert_string_equal(tierset_tier(ts, 1)->name, "pro");
    assert_string_equal(tierset_tier(ts, 1)->appname, "bulkhead-pro");
    assert_int_equal(tierset_tier(ts, 2)->index, 2);
    assert_null(tierset_find(ts, "gold"));
    assert_int_equal(tierset_cfg(tierset_find(ts, "enterprise"))->workers, 60);
    char names[128], json[128];
    tierset_names(ts, names, sizeof(names));
    assert_string_equal(names, "free, pro, enterprise");
    tierset_names_json(ts, json, sizeof(json));
    assert_string_equal(json, "[\"free\",\"pro\",\"enterprise\"]");
    tierset_destroy(ts);
}

static void an_empty_table_is_refused(void **state)
{
    (void)state;
    struct tier_table t = {0};
    struct tierset *ts = NULL;
    assert_int_equal(tierset_create(&t, &ts), -EINVAL);
    assert_null(ts);
}

static void a_snapshot_outlives_the_settings_that_replace_it(void **state)
{
    (void)state;
    struct tier_table t = table(seed), next;
    struct tierset *ts;
    assert_int_equal(tierset_create(&t, &ts), 0);
    const struct tier_table *before = tierset_snapshot(ts);
    char err[200];
    /* The file lists the tiers in another order: matched by name. */
    struct tier_table reload =
        table("{\"enterprise\": {\"workers\": 6}, \"free\": {\"workers\": 1},"
              " \"pro\": {\"workers\": 3}}");
    assert_int_equal(tierset_match(ts, &reload, &next, err, sizeof(err)), 0);
    tierset_publish(ts, &next);
    const struct tier_table *after = tierset_snapshot(ts);
    assert_ptr_not_equal(before, after);
    assert_int_equal(before->tiers[0].workers, 10); /* the old table, untouched */
    assert_int_equal(after->tiers[0].workers, 1);
    assert_string_equal(after->tiers[0].name, "free");
    assert_int_equal(after->tiers[2].workers, 6);
    assert_int_equal(tierset_cfg(tierset_find(ts, "pro"))->workers, 3);
    tierset_destroy(ts);
}

static void a_reload_cannot_add_or_drop_a_tier(void **state)
{
    (void)state;
    struct tier_table t = table(seed), out;
    struct tierset *ts;
    assert_int_equal(tierset_create(&t, &ts), 0);
    char err[200] = "";
    struct tier_table fewer = table("{\"free\": {}, \"pro\": {}}");
    assert_int_equal(tierset_match(ts, &fewer, &out, err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "added or removed"));
    struct tier_table renamed = table("{\"free\": {}, \"pro\": {}, \"gold\": {\"rate_limit\": 0}}");
    assert_int_equal(tierset_match(ts, &renamed, &out, err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "gold"));
    assert_int_equal(tierset_cfg(tierset_tier(ts, 0))->workers, 10);
    tierset_destroy(ts);
}

/* ---- readers against a publisher ---------------------------------------------------------- */

#define GENERATIONS 2000

struct reader {
    struct tierset *ts;
    atomic_bool *stop;
    long torn;  /* snapshots whose tiers disagree */
    long reads; /* snapshots taken */
};

/* Every published table gives all three tiers the same worker count: a snapshot whose tiers
 * disagree was torn. */
static void *reader_main(void *arg)
{
    struct reader *r = arg;
    while (!atomic_load(r->stop)) {
        const struct tier_table *s = tierset_snapshot(r->ts);
        int64_t w = s->tiers[0].workers;
        r->torn += s->tiers[1].workers != w || s->tiers[2].workers != w;
        r->torn += tierset_find(r->ts, "pro") != tierset_tier(r->ts, 1);
        r->reads++;
    }
    return NULL;
}

static void readers_never_see_a_torn_table(void **state)
{
    (void)state;
    struct tier_table t = table("{\"free\": {\"workers\": 1}, \"pro\": {\"workers\": 1},"
                                " \"enterprise\": {\"workers\": 1}}");
    struct tierset *ts;
    assert_int_equal(tierset_create(&t, &ts), 0);
    atomic_bool stop = false;
    struct reader rd[2] = {{ts, &stop, 0, 0}, {ts, &stop, 0, 0}};
    pthread_t th[2];
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_create(&th[i], NULL, reader_main, &rd[i]), 0);
    for (int g = 2; g <= GENERATIONS; g++) {
        struct tier_table next = t;
        for (size_t i = 0; i < next.count; i++)
            next.tiers[i].workers = g;
        tierset_publish(ts, &next);
    }
    atomic_store(&stop, true);
    for (int i = 0; i < 2; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(rd[i].torn, 0);
    }
    assert_int_equal(tierset_cfg(tierset_tier(ts, 2))->workers, GENERATIONS);
    tierset_destroy(ts);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(names_are_fixed_and_found_by_name),
        cmocka_unit_test(an_empty_table_is_refused),
        cmocka_unit_test(a_snapshot_outlives_the_settings_that_replace_it),
        cmocka_unit_test(a_reload_cannot_add_or_drop_a_tier),
        cmocka_unit_test(readers_never_see_a_torn_table),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
