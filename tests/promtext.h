/*
 * promtext: a parser of the Prometheus text exposition format 0.0.4, strict enough to hold
 * /metrics to the format: comments, metric and label names, escaped label values, float values
 * with +Inf/-Inf/NaN, optional timestamps; one # HELP and one # TYPE per family before its
 * samples, a family's samples together, no duplicate series, histogram _bucket/_sum/_count
 * under their family. Used by test_report (the renderer alone) and test_observability (the
 * real server's /metrics).
 */
#ifndef BULKHEAD_TEST_PROMTEXT_H
#define BULKHEAD_TEST_PROMTEXT_H

#include <stdbool.h>
#include <stddef.h>

#define PROM_MAX_LABELS 8
#define PROM_NAME_MAX   128
#define PROM_VALUE_MAX  256

struct prom_sample {
    char name[PROM_NAME_MAX];
    size_t nlabels;
    char lname[PROM_MAX_LABELS][PROM_NAME_MAX];
    char lval[PROM_MAX_LABELS][PROM_VALUE_MAX];
    double value;
    size_t family; /* index in prom_doc.fam */
};

struct prom_family {
    char name[PROM_NAME_MAX];
    char type[16]; /* counter, gauge, histogram, summary, untyped */
    int helps, types;
    size_t nsamples;
};

struct prom_doc {
    struct prom_family *fam;
    size_t nfam;
    struct prom_sample *s;
    size_t ns, cap; /* cap: room in s (it doubles: a sample is about 3 KB) */
};

/* Parse the whole text into d; 0, or -1 with the first problem (and its line) in err. */
int prom_parse(const char *text, struct prom_doc *d, char *err, size_t errlen);
void prom_free(struct prom_doc *d);

/* A value as Prometheus writes it (Go ParseFloat style: decimal or exponent, +Inf, -Inf, NaN). */
bool prom_parse_float(const char *tok, double *out);
/* The value of label name of s, or NULL. */
const char *prom_label(const struct prom_sample *s, const char *name);
/* The value of the series name{k1="v1",...} with exactly these npairs label pairs (name,
 * value, ...), or NAN. */
double prom_value(const struct prom_doc *d, const char *name, size_t npairs, ...);
/* The labels of s except le, as "k=v,k=v," in document order: a histogram series' key. */
void prom_series_key(const struct prom_sample *s, char *out, size_t cap);

#endif
