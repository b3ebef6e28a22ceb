/*
 * configfx: the settings tests' fixture (see configfx.h).
 */
#include "configfx.h"

#include "config.h"
#include "dotenv.h"

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

size_t cfgfx_table_rows(struct cfgfx_row *rows, size_t max)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    assert_non_null(f);
    config_print_help(f, true);
    fclose(f);
    size_t n = 0;
    char *save = NULL;
    for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        struct cfgfx_row r;
        if (sscanf(line, "| `%63[^`]` | `%127[^`]` | %127[^|] |", r.name, r.def, r.allowed) != 3)
            continue;
        char *end = r.allowed + strlen(r.allowed);
        while (end > r.allowed && end[-1] == ' ')
            *--end = '\0';
        if (!strcmp(r.def, "(empty)"))
            r.def[0] = '\0';
        assert_true(n < max);
        rows[n++] = r;
    }
    free(text);
    return n;
}
