/*
 * deployfx: the deployment tests' fixture (see deployfx.h).
 */
#include "deployfx.h"

#include "dotenv.h"
#include "harness.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

const char *dpfx_root(void)
{
    const char *r = getenv("BH_ROOT");
    return r ? r : ".";
}

/* Whole output of a shell command (caller frees); NULL if it failed. */
char *dpfx_run(const char *cmd)
{
    FILE *p = popen(cmd, "r");
    if (!p)
        return NULL;
    size_t len = 0, cap = 4096;
    char *buf = malloc(cap);
    size_t n;
    while ((n = fread(buf + len, 1, cap - len - 1, p)) > 0) {
        len += n;
        if (cap - len < 1024)
            buf = realloc(buf, cap *= 2);
    }
    buf[len] = '\0';
    if (pclose(p) != 0) {
        fprintf(stderr, "test_deploy: \"%s\" failed:\n%s\n", cmd, buf);
        free(buf);
        return NULL;
    }
    return buf;
}

char *dpfx_read_file(const char *rel)
{
    char path[600];
    snprintf(path, sizeof(path), "%s/%s", dpfx_root(), rel);
    return h_read_file(path);
}

/* The variables and defaults `bulkhead config` prints (text form, up to the per-tier keys). */
void dpfx_config_vars(struct dpfx_vars *v)
{
    char cmd[700];
    snprintf(cmd, sizeof(cmd), "'%s' config", h_bin());
    char *out = dpfx_run(cmd);
    assert_non_null(out);
    memset(v, 0, sizeof(*v));
    for (char *line = strtok(out, "\n"); line; line = strtok(NULL, "\n")) {
        if (!strncmp(line, "Per-tier", 8))
            break;
        char name[64];
        if (line[0] == ' ' && line[1] == ' ' && line[2] >= 'A' && line[2] <= 'Z' &&
            sscanf(line, " %63s", name) == 1) {
            assert_true(v->n < DPFX_VARS_MAX);
            snprintf(v->name[v->n++], sizeof(v->name[0]), "%s", name);
            continue;
        }
        const char *d = strstr(line, "default: ");
        if (d && v->n > 0) {
            d += strlen("default: ");
            const char *end = strstr(d, "; allowed: ");
            assert_non_null(end);
            int len = (int)(end - d);
            snprintf(v->value[v->n - 1], sizeof(v->value[0]), "%.*s", len, d);
            if (!strcmp(v->value[v->n - 1], "(empty)"))
                v->value[v->n - 1][0] = '\0';
        }
    }
    free(out);
}
