/*
 * configfx: the settings tests' fixture (test_config, test_config_env): the settings table as
 * config_print_help documents it in Markdown, read back row by row.
 */
#ifndef BULKHEAD_TESTS_CONFIGFX_H
#define BULKHEAD_TESTS_CONFIGFX_H

#include <stddef.h>

struct cfgfx_row {
    char name[64];
    char def[128];
    char allowed[128];
};

size_t cfgfx_table_rows(struct cfgfx_row *rows, size_t max);

#endif
