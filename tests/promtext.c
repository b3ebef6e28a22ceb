/*
 * promtext: the parser of promtext.h.
 */
#include "promtext.h"

#include <ctype.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void prom_free(struct prom_doc *d)
{
    free(d->fam);
    free(d->s);
    memset(d, 0, sizeof(*d));
}

static bool prom_name_start(char c)
{
    return isalpha((unsigned char)c) || c == '_' || c == ':';
}

static bool prom_name_char(char c)
{
    return isalnum((unsigned char)c) || c == '_' || c == ':';
}

/* metric name [a-zA-Z_:][a-zA-Z0-9_:]*, or label name [a-zA-Z_][a-zA-Z0-9_]* when label. */
static bool prom_read_name(const char **p, char *out, size_t cap, bool label)
{
    const char *s = *p;
    size_t n = 0;
    if (!prom_name_start(s[0]) || (label && s[0] == ':'))
        return false;
    while (prom_name_char(s[n]) && !(label && s[n] == ':')) {
        if (n + 1 >= cap)
            return false;
        out[n] = s[n];
        n++;
    }
    out[n] = '\0';
    *p = s + n;
    return true;
}

/* "..." with \\, \" and \n escapes; no raw newline. */
static bool prom_read_label_value(const char **p, char *out, size_t cap)
{
    const char *s = *p;
    if (*s++ != '"')
        return false;
    size_t n = 0;
    for (;;) {
        char c = *s++;
        if (c == '\0' || c == '\n')
            return false;
        if (c == '"')
            break;
        if (c == '\\') {
            char e = *s++;
            if (e == '\\' || e == '"')
                c = e;
            else if (e == 'n')
                c = '\n';
            else
                return false;
        }
        if (n + 1 >= cap)
            return false;
        out[n++] = c;
    }
    out[n] = '\0';
    *p = s;
    return true;
}

/* A Go ParseFloat-style value as Prometheus writes it: decimal or exponent, +Inf, -Inf, NaN. */
bool prom_parse_float(const char *tok, double *out)
{
    if (!strcmp(tok, "+Inf") || !strcmp(tok, "Inf")) {
        *out = INFINITY;
        return true;
    }
    if (!strcmp(tok, "-Inf")) {
        *out = -INFINITY;
        return true;
    }
    if (!strcmp(tok, "NaN")) {
        *out = NAN;
        return true;
    }
    for (const char *c = tok; *c; c++)
        if (!isdigit((unsigned char)*c) && !strchr("+-.eE", *c))
            return false;
    char *end = NULL;
    *out = strtod(tok, &end);
    return end != tok && *end == '\0';
}

static int prom_family_find(const struct prom_doc *d, const char *name)
{
    for (size_t i = 0; i < d->nfam; i++)
        if (!strcmp(d->fam[i].name, name))
            return (int)i;
    return -1;
}

static size_t prom_family_get(struct prom_doc *d, const char *name)
{
    int i = prom_family_find(d, name);
    if (i >= 0)
        return (size_t)i;
    d->fam = realloc(d->fam, (d->nfam + 1) * sizeof(*d->fam));
    memset(&d->fam[d->nfam], 0, sizeof(*d->fam));
    snprintf(d->fam[d->nfam].name, sizeof(d->fam[d->nfam].name), "%s", name);
    return d->nfam++;
}

/* The family a sample belongs to: its own name, or a histogram/summary's _bucket/_sum/_count. */
static int prom_sample_family(const struct prom_doc *d, const char *name)
{
    int f = prom_family_find(d, name);
    if (f >= 0 && d->fam[f].types)
        return f;
    static const char *const sfx[] = {"_bucket", "_sum", "_count"};
    size_t nl = strlen(name);
    for (size_t i = 0; i < 3; i++) {
        size_t sl = strlen(sfx[i]);
        if (nl <= sl || strcmp(name + nl - sl, sfx[i]))
            continue;
        char base[PROM_NAME_MAX];
        snprintf(base, sizeof(base), "%.*s", (int)(nl - sl), name);
        int b = prom_family_find(d, base);
        if (b >= 0 &&
            (!strcmp(d->fam[b].type, "histogram") || (i > 0 && !strcmp(d->fam[b].type, "summary"))))
            return b;
    }
    return -1;
}

static int prom_fail(char *err, size_t errlen, int line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int prom_fail(char *err, size_t errlen, int line, const char *fmt, ...)
{
    int n = snprintf(err, errlen, "line %d: ", line);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err + n, errlen - (size_t)n, fmt, ap);
    va_end(ap);
    return -1;
}

static int prom_parse_comment(struct prom_doc *d, const char *line, int ln, char *err,
                              size_t errlen)
{
    const char *p = line + 1;
    bool help = !strncmp(p, " HELP ", 6), type = !strncmp(p, " TYPE ", 6);
    if (!help && !type)
        return 0; /* any other comment is allowed and ignored */
    p += 6;
    char name[PROM_NAME_MAX];
    if (!prom_read_name(&p, name, sizeof(name), false))
        return prom_fail(err, errlen, ln, "bad metric name in %s", line);
    size_t f = prom_family_get(d, name);
    struct prom_family *fam = &d->fam[f];
    if (fam->nsamples)
        return prom_fail(err, errlen, ln, "%s of %s after its samples", help ? "HELP" : "TYPE",
                         name);
    if (help) {
        if (*p != ' ' || !p[1])
            return prom_fail(err, errlen, ln, "HELP of %s has no text", name);
        /* Docstring escapes: only \\ and \n. */
        for (const char *c = p + 1; *c; c++)
            if (*c == '\\' && c[1] != '\\' && c[1] != 'n')
                return prom_fail(err, errlen, ln, "bad escape in HELP of %s", name);
            else if (*c == '\\')
                c++;
        if (++fam->helps > 1)
            return prom_fail(err, errlen, ln, "second HELP for %s", name);
        return 0;
    }
    if (*p != ' ')
        return prom_fail(err, errlen, ln, "TYPE of %s has no type", name);
    p++;
    static const char *const types[] = {"counter", "gauge", "histogram", "summary", "untyped"};
    bool known = false;
    for (size_t i = 0; i < 5; i++)
        known = known || !strcmp(p, types[i]);
    if (!known)
        return prom_fail(err, errlen, ln, "unknown type \"%s\" for %s", p, name);
    if (++fam->types > 1)
        return prom_fail(err, errlen, ln, "second TYPE for %s", name);
    snprintf(fam->type, sizeof(fam->type), "%s", p);
    return 0;
}

static int prom_parse_sample(struct prom_doc *d, const char *line, int ln, int *current, char *err,
                             size_t errlen)
{
    struct prom_sample s;
    memset(&s, 0, sizeof(s));
    const char *p = line;
    if (!prom_read_name(&p, s.name, sizeof(s.name), false))
        return prom_fail(err, errlen, ln, "bad metric name: %s", line);
    if (*p == '{') {
        p++;
        while (*p != '}') {
            if (s.nlabels == PROM_MAX_LABELS)
                return prom_fail(err, errlen, ln, "too many labels");
            if (!prom_read_name(&p, s.lname[s.nlabels], PROM_NAME_MAX, true) || *p++ != '=' ||
                !prom_read_label_value(&p, s.lval[s.nlabels], PROM_VALUE_MAX))
                return prom_fail(err, errlen, ln, "bad label in %s", line);
            for (size_t i = 0; i < s.nlabels; i++)
                if (!strcmp(s.lname[i], s.lname[s.nlabels]))
                    return prom_fail(err, errlen, ln, "label %s twice", s.lname[i]);
            s.nlabels++;
            if (*p == ',')
                p++;
            else if (*p != '}')
                return prom_fail(err, errlen, ln, "expected , or } in %s", line);
        }
        p++;
    }
    if (*p++ != ' ')
        return prom_fail(err, errlen, ln, "expected a space before the value: %s", line);
    char tok[64];
    size_t n = strcspn(p, " ");
    if (n == 0 || n >= sizeof(tok))
        return prom_fail(err, errlen, ln, "missing value: %s", line);
    memcpy(tok, p, n);
    tok[n] = '\0';
    if (!prom_parse_float(tok, &s.value))
        return prom_fail(err, errlen, ln, "bad value \"%s\"", tok);
    p += n;
    if (*p == ' ') { /* optional timestamp: an integer of milliseconds */
        p++;
        if (*p == '-')
            p++;
        if (!isdigit((unsigned char)*p))
            return prom_fail(err, errlen, ln, "bad timestamp: %s", line);
        while (isdigit((unsigned char)*p))
            p++;
    }
    if (*p)
        return prom_fail(err, errlen, ln, "trailing text: %s", line);

    int f = prom_sample_family(d, s.name);
    if (f < 0)
        return prom_fail(err, errlen, ln, "sample %s has no # TYPE before it", s.name);
    struct prom_family *fam = &d->fam[f];
    if (fam->helps != 1 || fam->types != 1)
        return prom_fail(err, errlen, ln, "sample %s: family %s lacks # HELP or # TYPE", s.name,
                         fam->name);
    if (f != *current && fam->nsamples)
        return prom_fail(err, errlen, ln, "samples of %s are not together", fam->name);
    *current = f;
    fam->nsamples++;
    s.family = (size_t)f;
    /* One series per name and label set. */
    for (size_t i = 0; i < d->ns; i++) {
        const struct prom_sample *o = &d->s[i];
        if (strcmp(o->name, s.name) || o->nlabels != s.nlabels)
            continue;
        bool same = true;
        for (size_t a = 0; a < s.nlabels && same; a++) {
            bool found = false;
            for (size_t b = 0; b < o->nlabels; b++)
                found =
                    found || (!strcmp(s.lname[a], o->lname[b]) && !strcmp(s.lval[a], o->lval[b]));
            same = found;
        }
        if (same)
            return prom_fail(err, errlen, ln, "duplicate series: %s", line);
    }
    if (d->ns == d->cap) {
        d->cap = d->cap ? 2 * d->cap : 64;
        d->s = realloc(d->s, d->cap * sizeof(*d->s));
    }
    d->s[d->ns++] = s;
    return 0;
}

/* Parse the whole text; 0, or -1 with the first problem in err. */
int prom_parse(const char *text, struct prom_doc *d, char *err, size_t errlen)
{
    memset(d, 0, sizeof(*d));
    size_t len = strlen(text);
    if (len == 0 || text[len - 1] != '\n')
        return prom_fail(err, errlen, 0, "the exposition must end with a newline");
    int current = -1;
    int ln = 0;
    for (const char *line = text; *line;) {
        const char *nl = strchr(line, '\n');
        size_t n = (size_t)(nl - line);
        char *buf = malloc(n + 1);
        memcpy(buf, line, n);
        buf[n] = '\0';
        ln++;
        int rc = 0;
        if (n == 0)
            rc = 0; /* blank lines are allowed */
        else if (buf[0] == '#')
            rc = prom_parse_comment(d, buf, ln, err, errlen);
        else
            rc = prom_parse_sample(d, buf, ln, &current, err, errlen);
        free(buf);
        if (rc)
            return rc;
        line = nl + 1;
    }
    return 0;
}

const char *prom_label(const struct prom_sample *s, const char *name)
{
    for (size_t i = 0; i < s->nlabels; i++)
        if (!strcmp(s->lname[i], name))
            return s->lval[i];
    return NULL;
}

/* The value of the series name{k1="v1",...} with exactly these labels, or NAN. */
double prom_value(const struct prom_doc *d, const char *name, size_t npairs, ...)
{
    const char *k[PROM_MAX_LABELS], *v[PROM_MAX_LABELS];
    va_list ap;
    va_start(ap, npairs);
    for (size_t i = 0; i < npairs; i++) {
        k[i] = va_arg(ap, const char *);
        v[i] = va_arg(ap, const char *);
    }
    va_end(ap);
    for (size_t i = 0; i < d->ns; i++) {
        const struct prom_sample *s = &d->s[i];
        if (strcmp(s->name, name) || s->nlabels != npairs)
            continue;
        bool ok = true;
        for (size_t j = 0; j < npairs && ok; j++) {
            const char *l = prom_label(s, k[j]);
            ok = l && !strcmp(l, v[j]);
        }
        if (ok)
            return s->value;
    }
    return NAN;
}

/* The labels of s except le, as "k=v,k=v" in document order: a histogram series' key. */
void prom_series_key(const struct prom_sample *s, char *out, size_t cap)
{
    size_t n = 0;
    out[0] = '\0';
    for (size_t i = 0; i < s->nlabels; i++) {
        if (!strcmp(s->lname[i], "le"))
            continue;
        int w = snprintf(out + n, cap - n, "%s=%s,", s->lname[i], s->lval[i]);
        if (w > 0)
            n += (size_t)w < cap - n ? (size_t)w : cap - n - 1;
    }
}
