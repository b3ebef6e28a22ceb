/*
 * tiersfx: the tier table tests' fixture (see tiersfx.h).
 */
#include "tiersfx.h"

#include "tiers.h"

#include "../tierkeys.h"

#include <errno.h>
#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

int64_t tsfx_field(const struct tier_cfg *c, const char *key)
{
    for (size_t i = 0; i < TIERKEYS_COUNT; i++) {
        if (!strcmp(tierkeys[i].name, key)) {
            int64_t v;
            memcpy(&v, (const char *)c + tierkeys[i].offset, sizeof(v));
            return v;
        }
    }
    fail_msg("no field for key %s", key);
    return -1;
}

size_t tsfx_help_rows(struct tsfx_key_row *rows, size_t max)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    assert_non_null(f);
    tiers_print_help(f, true);
    fclose(f);
    size_t n = 0;
    char *save = NULL;
    for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        struct tsfx_key_row r = {.required = false};
        if (sscanf(line, "| `%63[^`]` | required | %" SCNd64 "..%" SCNd64 " |", r.name, &r.min,
                   &r.max) == 3)
            r.required = true;
        else if (sscanf(line, "| `%63[^`]` | %" SCNd64 " | %" SCNd64 "..%" SCNd64 " |", r.name,
                        &r.def, &r.min, &r.max) != 4)
            continue;
        assert_true(n < max);
        rows[n++] = r;
    }
    free(text);
    return n;
}

int tsfx_parse(const char *json, struct tier_table *t, char *err, size_t errlen)
{
    err[0] = '\0';
    return tiers_parse(json, strlen(json), t, err, errlen);
}

/* Parse and expect refusal with err containing want; the table is left empty. */
void tsfx_refused(const char *json, const char *want)
{
    struct tier_table t;
    char err[400];
    if (tsfx_parse(json, &t, err, sizeof(err)) != -EINVAL)
        fail_msg("accepted %s", json);
    if (!strstr(err, want))
        fail_msg("%s: \"%s\" does not contain \"%s\"", json, err, want);
    assert_int_equal(t.count, 0);
}
