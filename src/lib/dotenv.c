/*
 * dotenv: a .env file read into the environment, the way the bulkhead command starts
 * (config_load_all). It knows nothing of the settings table: it parses KEY=VALUE lines and
 * sets what the environment leaves unset or empty.
 */
#include "dotenv.h"
#include "fileio.h"
#include "xalloc.h"

#include <ctype.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Strip surrounding blanks in place; returns the new start. */
static char *dotenv_trim(char *s)
{
    while (*s == ' ' || *s == '\t')
        s++;
    size_t n = strlen(s);
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r'))
        s[--n] = '\0';
    return s;
}

static int dotenv_line(char *line, unsigned lineno, void (*set)(const char *, const char *, void *),
                       void *ctx, char *err, size_t errlen)
{
    char *s = dotenv_trim(line);
    if (!*s || *s == '#')
        return 0;
    if (!strncmp(s, "export", 6) && (s[6] == ' ' || s[6] == '\t'))
        s = dotenv_trim(s + 7);
    char *eq = strchr(s, '=');
    if (!eq) {
        snprintf(err, errlen, "line %u: expected NAME=VALUE", lineno);
        return -EINVAL;
    }
    *eq = '\0';
    char *name = dotenv_trim(s);
    char *value = dotenv_trim(eq + 1);
    if (!*name || !(isalpha((unsigned char)*name) || *name == '_')) {
        snprintf(err, errlen, "line %u: a variable name starts with a letter or '_'", lineno);
        return -EINVAL;
    }
    for (const char *p = name; *p; p++) {
        if (!isalnum((unsigned char)*p) && *p != '_') {
            snprintf(err, errlen, "line %u: invalid character in variable name", lineno);
            return -EINVAL;
        }
    }
    if (value[0] == '"' || value[0] == '\'') {
        /* A quoted value ends at the first matching quote; only a comment may follow it. */
        char *close = strchr(value + 1, value[0]);
        if (!close) {
            snprintf(err, errlen, "line %u: unterminated quoted value", lineno);
            return -EINVAL;
        }
        const char *rest = close + 1;
        while (*rest == ' ' || *rest == '\t')
            rest++;
        if (*rest && *rest != '#') {
            snprintf(err, errlen, "line %u: text after the closing quote", lineno);
            return -EINVAL;
        }
        *close = '\0';
        value++;
    } else {
        /* Unquoted values end at an inline comment: a '#' first or after a blank. */
        for (char *p = value; *p; p++) {
            if (*p == '#' && (p == value || p[-1] == ' ' || p[-1] == '\t')) {
                *p = '\0';
                break;
            }
        }
        value = dotenv_trim(value);
    }
    set(name, value, ctx);
    return 0;
}

int dotenv_parse(const char *text, size_t len, void (*set)(const char *, const char *, void *),
                 void *ctx, char *err, size_t errlen)
{
    const char *nul = memchr(text, '\0', len);
    if (nul) {
        unsigned nul_line = 1;
        for (const char *p = text; p < nul; p++)
            nul_line += *p == '\n';
        snprintf(err, errlen, "line %u: contains a NUL byte", nul_line);
        return -EINVAL;
    }
    char *copy = xstrndup(text, len);
    int rc = 0;
    unsigned lineno = 0;
    for (char *line = copy; line && rc == 0;) {
        char *nl = strchr(line, '\n');
        if (nl)
            *nl = '\0';
        lineno++;
        rc = dotenv_line(line, lineno, set, ctx, err, errlen);
        line = nl ? nl + 1 : NULL;
    }
    free(copy);
    return rc;
}

struct dotenv_pending {
    char **names, **values;
    size_t n;
};

static void dotenv_collect(const char *name, const char *value, void *ctx)
{
    struct dotenv_pending *p = ctx;
    p->names = xrealloc(p->names, (p->n + 1) * sizeof(char *));
    p->values = xrealloc(p->values, (p->n + 1) * sizeof(char *));
    p->names[p->n] = xstrdup(name);
    p->values[p->n] = xstrdup(value);
    p->n++;
}

int dotenv_load(const char *path, char *err, size_t errlen)
{
    char *text = NULL;
    size_t len = 0;
    int rc = fileio_read(path, 1 << 20, &text, &len);
    if (rc) {
        snprintf(err, errlen, "%s: %s", path, rc == -EFBIG ? "larger than 1 MiB" : strerror(-rc));
        return rc;
    }
    struct dotenv_pending p = {0};
    char why[200];
    rc = dotenv_parse(text, len, dotenv_collect, &p, why, sizeof(why));
    if (rc)
        snprintf(err, errlen, "%s: %s", path, why);
    for (size_t i = 0; i < p.n; i++) {
        /* Within the file the last assignment of a name wins, as in Node's dotenv. */
        bool last = true;
        for (size_t j = i + 1; j < p.n && last; j++)
            last = strcmp(p.names[i], p.names[j]) != 0;
        /* Only what the environment leaves unset or empty, and only with a value: an empty
         * line in .env is the same as no line. */
        const char *now = getenv(p.names[i]);
        if (rc == 0 && last && (!now || !*now) && p.values[i][0])
            setenv(p.names[i], p.values[i], 1);
        free(p.names[i]);
        free(p.values[i]);
    }
    free(p.names);
    free(p.values);
    free(text);
    return rc;
}
