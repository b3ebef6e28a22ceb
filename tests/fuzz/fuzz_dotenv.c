/*
 * fuzz_dotenv: dotenv_parse on arbitrary bytes. Whatever it accepts must be well-formed
 * assignments (a valid name, a value without newline or NUL), no more than one per line, and
 * writing them back as quoted lines must parse to the same assignments. A refusal names a line
 * that exists.
 */
#include "dotenv.h"
#include "fuzz.h"

#include <ctype.h>
#include <errno.h>
#include <stdbool.h>

struct pairs {
    char **names, **values;
    size_t n;
};

static void collect(const char *name, const char *value, void *ctx)
{
    struct pairs *p = ctx;
    p->names = realloc(p->names, (p->n + 1) * sizeof(char *));
    p->values = realloc(p->values, (p->n + 1) * sizeof(char *));
    FUZZ_CHECK(p->names && p->values);
    p->names[p->n] = strdup(name);
    p->values[p->n] = strdup(value);
    FUZZ_CHECK(p->names[p->n] && p->values[p->n]);
    p->n++;
}

static void pairs_free(struct pairs *p)
{
    for (size_t i = 0; i < p->n; i++) {
        free(p->names[i]);
        free(p->values[i]);
    }
    free(p->names);
    free(p->values);
}

static bool valid_name(const char *s)
{
    if (!(isalpha((unsigned char)*s) || *s == '_'))
        return false;
    for (; *s; s++)
        if (!(isalnum((unsigned char)*s) || *s == '_'))
            return false;
    return true;
}

/* Write the assignments back as NAME='value' (or "value") lines; NULL if a value holds both
 * quote characters and so cannot be written in this syntax. */
static char *serialise(const struct pairs *p, size_t *len)
{
    size_t cap = 1;
    for (size_t i = 0; i < p->n; i++)
        cap += strlen(p->names[i]) + strlen(p->values[i]) + 5;
    char *out = malloc(cap);
    FUZZ_CHECK(out != NULL);
    size_t n = 0;
    for (size_t i = 0; i < p->n; i++) {
        char q = strchr(p->values[i], '\'') ? '"' : '\'';
        if (strchr(p->values[i], q)) {
            free(out);
            return NULL;
        }
        n += (size_t)sprintf(out + n, "%s=%c%s%c\n", p->names[i], q, p->values[i], q);
    }
    out[n] = '\0';
    *len = n;
    return out;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *text = (const char *)data;
    size_t lines = 1;
    for (size_t i = 0; i < size; i++)
        lines += text[i] == '\n';
    struct pairs p = {0};
    char err[200];
    err[0] = '\0';
    int rc = dotenv_parse(text, size, collect, &p, err, sizeof(err));
    FUZZ_CHECK(rc == 0 || rc == -EINVAL);
    if (rc) {
        unsigned line = 0;
        FUZZ_CHECK(sscanf(err, "line %u: ", &line) == 1);
        FUZZ_CHECK(line >= 1 && line <= lines);
        FUZZ_CHECK(p.n < line); /* only lines before the bad one were read */
        if (memchr(text, '\0', size))
            FUZZ_CHECK(strstr(err, "contains a NUL byte") && p.n == 0);
        pairs_free(&p);
        return 0;
    }
    FUZZ_CHECK(memchr(text, '\0', size) == NULL);
    FUZZ_CHECK(p.n <= lines);
    for (size_t i = 0; i < p.n; i++) {
        FUZZ_CHECK(valid_name(p.names[i]));
        FUZZ_CHECK(strchr(p.values[i], '\n') == NULL);
    }
    size_t len = 0;
    char *again = serialise(&p, &len);
    if (again) {
        struct pairs q = {0};
        FUZZ_CHECK(dotenv_parse(again, len, collect, &q, err, sizeof(err)) == 0);
        FUZZ_CHECK(q.n == p.n);
        for (size_t i = 0; i < p.n; i++) {
            FUZZ_CHECK(strcmp(p.names[i], q.names[i]) == 0);
            FUZZ_CHECK(strcmp(p.values[i], q.values[i]) == 0);
        }
        pairs_free(&q);
        free(again);
    }
    pairs_free(&p);
    return 0;
}
