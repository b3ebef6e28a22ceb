/*
 * reportdef: the one description of what a report holds. reportdef_fields has a row per tier
 * metric: where its value sits in struct report_tier, its JSON section and key, its Prometheus
 * family, label, type and help, and whether the dashboard samples it; reportdef_proc_fields the
 * same for the process-wide Prometheus series in struct report_process. report.c's renderers
 * (JSON, Prometheus, the dashboard's samples) walk these tables and nothing else, so a new
 * metric is one row here. Constant data: any thread.
 */
#ifndef BULKHEAD_REPORTDEF_H
#define BULKHEAD_REPORTDEF_H

#include "report.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* How a field's value is stored in struct report_tier, and rendered. */
enum reportdef_kind {
    REPORTDEF_U64,      /* uint64_t */
    REPORTDEF_SIZE,     /* size_t */
    REPORTDEF_I64,      /* int64_t (a setting) */
    REPORTDEF_LIMIT,    /* int64_t; JSON null when 0 (unlimited) */
    REPORTDEF_RATIO,    /* double, 0..1 */
    REPORTDEF_REAL,     /* double */
    REPORTDEF_BOOL,     /* bool: JSON true/false, Prometheus 1/0 */
    REPORTDEF_TIME,     /* int64_t Unix us; JSON ISO-8601 text, null when 0 */
    REPORTDEF_STATE,    /* enum breaker_state: JSON its name; Prometheus one gauge per state */
    REPORTDEF_MODE,     /* enum breaker_mode: JSON its name */
    REPORTDEF_TEXT,     /* const char * */
    REPORTDEF_HIST,     /* struct metrics_hist_snap: JSON {p50,p99,mean,count} in ms */
    REPORTDEF_OUTCOMES, /* uint64_t[OUTCOME_COUNT], by outcome (and tier "none" in Prometheus) */
    REPORTDEF_STATUSES, /* uint64_t[METRICS_STATUS_COUNT], by status code (and tier "none") */
    REPORTDEF_BUSIEST,  /* the busiest tenants: a JSON array */
};

struct reportdef_field {
    const char *section; /* JSON object under the tier, or NULL: the tier's own object */
    const char *key;     /* JSON key (camelCase), or NULL: not in the JSON */
    enum reportdef_kind kind;
    size_t offset;       /* of the value in struct report_tier */
    const char *prom;    /* Prometheus family, or NULL: not exported */
    const char *label;   /* the series' label besides tier ("result=\"success\""), or NULL */
    const char *type;    /* Prometheus type */
    const char *help;    /* Prometheus help */
    bool sampled;        /* in the dashboard's per-second samples */
    const char *old_key; /* sampled: the flat key samples carried before (deprecated), or NULL */
};

/* Process-wide Prometheus series: one value each, from struct report_process. */
struct reportdef_proc_field {
    const char *prom, *label, *type, *help;
    size_t offset; /* of a uint64_t (or int64_t time) in struct report_process */
    int needs;     /* REPORTDEF_NEEDS_*: shown only when that source exists */
    int unit;      /* REPORTDEF_UNIT_*: how the value is written */
};

enum {
    REPORTDEF_ALWAYS,
    REPORTDEF_NEEDS_REDIS,
    REPORTDEF_NEEDS_AUTH,
    REPORTDEF_NEEDS_TARPIT,
    REPORTDEF_NEEDS_ADMIN,
    REPORTDEF_NEEDS_FLEET
};
enum {
    REPORTDEF_UNIT_COUNT,   /* an integer, as is */
    REPORTDEF_UNIT_SECONDS, /* microseconds, written in seconds */
    REPORTDEF_UNIT_ONE      /* always 1 (an info metric: the labels are the information) */
};

extern const struct reportdef_field reportdef_fields[];
extern const size_t reportdef_nfields;
extern const struct reportdef_proc_field reportdef_proc_fields[];
extern const size_t reportdef_nproc;

/* Where field f's value sits in t. */
const void *reportdef_at(const struct report_tier *t, const struct reportdef_field *f);

/* Whether a field is one number that reportdef_u64 can read (and a sample can hold). */
bool reportdef_integral(enum reportdef_kind k);

/* An integral field as an unsigned integer (0 for the others). */
uint64_t reportdef_u64(const struct report_tier *t, const struct reportdef_field *f);

#endif
