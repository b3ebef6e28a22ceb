/*
 * deployfx: the deployment tests' fixture (test_deploy, test_deploy_compose): the project's
 * root, a shell command's whole output, a project file's text, and the variables with their
 * defaults that `bulkhead config` prints. The file that includes this includes cmocka.h first.
 */
#ifndef BULKHEAD_TESTS_DEPLOYFX_H
#define BULKHEAD_TESTS_DEPLOYFX_H

#include <stddef.h>

const char *dpfx_root(void);

/* Whole output of a shell command (caller frees); NULL if it failed. */
char *dpfx_run(const char *cmd);

char *dpfx_read_file(const char *rel);

#define DPFX_VARS_MAX 64

struct dpfx_vars {
    char name[DPFX_VARS_MAX][64];
    char value[DPFX_VARS_MAX][256];
    int n;
};

/* The variables and defaults `bulkhead config` prints (text form, up to the per-tier keys). */
void dpfx_config_vars(struct dpfx_vars *v);

#endif
