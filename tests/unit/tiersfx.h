/*
 * tiersfx: the tier table tests' fixture (test_tiers, test_tiers_refused): the keys as
 * tiers_print_help documents them, a parse of a JSON text, a field by its key, and the check
 * that a table is refused with a given message. The file that includes this includes cmocka.h
 * first.
 */
#ifndef BULKHEAD_TESTS_TIERSFX_H
#define BULKHEAD_TESTS_TIERSFX_H

#include "tiers.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

int64_t tsfx_field(const struct tier_cfg *c, const char *key);

/* The keys as tiers_print_help documents them (name, default, min, max). */
struct tsfx_key_row {
    char name[64];
    bool required; /* no default: a tier of a new name must state it */
    int64_t def, min, max;
};

size_t tsfx_help_rows(struct tsfx_key_row *rows, size_t max);

int tsfx_parse(const char *json, struct tier_table *t, char *err, size_t errlen);

/* Parse and expect refusal with err containing want; the table is left empty. */
void tsfx_refused(const char *json, const char *want);

#endif
