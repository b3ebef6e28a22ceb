/*
 * tenantreq: the checks of tenantreq.h. Each field has one checker, called for its JSON value
 * and for its text alike, so the two front ends cannot drift apart.
 */
#include "tenantreq.h"

#include <jansson.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#define TENANTREQ_QUOTE_MAX 64 /* longest piece of the input quoted in a message */

void tenantreq_init(struct tenantreq *req)
{
    memset(req, 0, sizeof(*req));
    req->rate_limit_op = TENANTREQ_KEEP;
    req->db_time_op = TENANTREQ_KEEP;
}

/* " (got \"...\")" for a string, " (got a JSON number)" for anything else. */
static void tenantreq_got(char *buf, size_t len, const char *text, const char *json_type)
{
    if (text)
        snprintf(buf, len, " (got \"%.*s\")", TENANTREQ_QUOTE_MAX, text);
    else
        snprintf(buf, len, " (got a JSON %s)", json_type);
}

/* text: the value, or NULL when it is a JSON value of json_type that is not a string. */
static enum tenantreq_error tenantreq_name(struct tenantreq *req, const char *text,
                                           const char *json_type, char *why, size_t whylen)
{
    if (!text || !params_tenant_valid(text)) {
        char got[TENANTREQ_QUOTE_MAX + 16];
        tenantreq_got(got, sizeof(got), text, json_type);
        snprintf(why, whylen, "name must be 1 to 64 characters of A-Z a-z 0-9 . _ -%s", got);
        return TENANTREQ_BAD_NAME;
    }
    snprintf(req->name, sizeof(req->name), "%s", text);
    return TENANTREQ_OK;
}

static enum tenantreq_error tenantreq_tier(struct tenantreq *req, const char *text,
                                           const char *json_type, const struct tier_table *tiers,
                                           char *why, size_t whylen)
{
    if (!text || tiers_find(tiers, text) < 0) {
        char names[TIERS_MAX * (TIERS_NAME_MAX + 2)], got[TENANTREQ_QUOTE_MAX + 16];
        tiers_names(tiers, names, sizeof(names));
        tenantreq_got(got, sizeof(got), text, json_type);
        snprintf(why, whylen, "unknown tier%s; tiers: %s", got, names);
        return TENANTREQ_BAD_TIER;
    }
    snprintf(req->tier, sizeof(req->tier), "%s", text);
    return TENANTREQ_OK;
}

/* The overrides: a name, its bound, what 0 means, and where it goes in a request. */
struct tenantreq_knob {
    const char *field;
    int64_t max;
    const char *zero;
    size_t op_off, value_off;
};

static const struct tenantreq_knob tenantreq_knobs[] = {
    {"rate_limit", TENANTREQ_RATE_LIMIT_MAX, "unlimited", offsetof(struct tenantreq, rate_limit_op),
     offsetof(struct tenantreq, rate_limit)},
    {"db_time_ms_per_min", TENANTREQ_DB_TIME_MAX, "no budget",
     offsetof(struct tenantreq, db_time_op), offsetof(struct tenantreq, db_time)},
};
#define TENANTREQ_KNOBS (sizeof(tenantreq_knobs) / sizeof(tenantreq_knobs[0]))

static const struct tenantreq_knob *tenantreq_knob(const char *field)
{
    for (size_t i = 0; i < TENANTREQ_KNOBS; i++)
        if (!strcmp(field, tenantreq_knobs[i].field))
            return &tenantreq_knobs[i];
    return NULL;
}

static enum tenantreq_error tenantreq_bad_number(const struct tenantreq_knob *k, const char *got,
                                                 char *why, size_t whylen)
{
    snprintf(why, whylen,
             "%s must be an integer from 0 to %lld (0: %s), or null (none) to use the "
             "tier's%s",
             k->field, (long long)k->max, k->zero, got);
    return TENANTREQ_BAD_NUMBER;
}

static void tenantreq_set_op(struct tenantreq *req, const struct tenantreq_knob *k,
                             enum tenantreq_override op)
{
    *(enum tenantreq_override *)(void *)((char *)req + k->op_off) = op;
}

static enum tenantreq_error tenantreq_override(struct tenantreq *req,
                                               const struct tenantreq_knob *k, int64_t v, char *why,
                                               size_t whylen)
{
    if (v < 0 || v > k->max) {
        char got[40];
        snprintf(got, sizeof(got), " (got %lld)", (long long)v);
        return tenantreq_bad_number(k, got, why, whylen);
    }
    tenantreq_set_op(req, k, TENANTREQ_SET);
    *(int64_t *)(void *)((char *)req + k->value_off) = v;
    return TENANTREQ_OK;
}

static const char *tenantreq_json_type(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        return "object";
    case JSON_ARRAY:
        return "array";
    case JSON_STRING:
        return "string";
    case JSON_INTEGER:
    case JSON_REAL:
        return "number";
    case JSON_TRUE:
    case JSON_FALSE:
        return "boolean";
    case JSON_NULL:
        return "null";
    }
    return "value";
}

/* One member of a JSON body. */
static enum tenantreq_error tenantreq_member(enum tenantreq_kind kind, struct tenantreq *req,
                                             const char *key, const json_t *v,
                                             const struct tier_table *tiers, char *why,
                                             size_t whylen)
{
    const char *type = tenantreq_json_type(v);
    if (!strcmp(key, "name") && kind == TENANTREQ_CREATE)
        return tenantreq_name(req, json_string_value(v), type, why, whylen);
    if (!strcmp(key, "tier"))
        return tenantreq_tier(req, json_string_value(v), type, tiers, why, whylen);
    const struct tenantreq_knob *k = tenantreq_knob(key);
    if (k) {
        if (json_is_null(v)) {
            tenantreq_set_op(req, k, TENANTREQ_CLEAR);
            return TENANTREQ_OK;
        }
        if (json_is_integer(v))
            return tenantreq_override(req, k, json_integer_value(v), why, whylen);
        char got[40];
        tenantreq_got(got, sizeof(got), NULL, type);
        return tenantreq_bad_number(k, got, why, whylen);
    }
    if (!strcmp(key, "name"))
        snprintf(why, whylen, "a tenant's name cannot be changed");
    else
        snprintf(why, whylen, "unknown field \"%.*s\"; fields: %s", TENANTREQ_QUOTE_MAX, key,
                 kind == TENANTREQ_CREATE ? "name, tier, rate_limit, db_time_ms_per_min"
                                          : "tier, rate_limit, db_time_ms_per_min");
    return TENANTREQ_BAD_BODY;
}

enum tenantreq_error tenantreq_parse_json(enum tenantreq_kind kind, const char *body, size_t len,
                                          const struct tier_table *tiers, struct tenantreq *out,
                                          char *why, size_t whylen)
{
    tenantreq_init(out);
    if (!body || len == 0) {
        snprintf(why, whylen, "the body is empty: send a JSON object");
        return TENANTREQ_BAD_BODY;
    }
    json_error_t jerr;
    json_t *root = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) {
        snprintf(why, whylen, "invalid JSON at line %d column %d: %s", jerr.line, jerr.column,
                 jerr.text);
        return TENANTREQ_BAD_BODY;
    }
    enum tenantreq_error rc = TENANTREQ_OK;
    if (!json_is_object(root)) {
        snprintf(why, whylen, "the body must be a JSON object");
        rc = TENANTREQ_BAD_BODY;
    }
    const char *key;
    json_t *v;
    json_object_foreach(root, key, v)
    {
        if (rc != TENANTREQ_OK)
            break;
        rc = tenantreq_member(kind, out, key, v, tiers, why, whylen);
    }
    json_decref(root);
    return rc != TENANTREQ_OK ? rc : tenantreq_complete(kind, out, why, whylen);
}

enum tenantreq_error tenantreq_set_text(struct tenantreq *req, const char *field, const char *value,
                                        const struct tier_table *tiers, char *why, size_t whylen)
{
    if (!strcmp(field, "name"))
        return tenantreq_name(req, value, "string", why, whylen);
    if (!strcmp(field, "tier"))
        return tenantreq_tier(req, value, "string", tiers, why, whylen);
    const struct tenantreq_knob *k = tenantreq_knob(field);
    if (k) {
        if (!strcmp(value, "none") || !strcmp(value, "null")) {
            tenantreq_set_op(req, k, TENANTREQ_CLEAR);
            return TENANTREQ_OK;
        }
        int64_t v; /* any integer here; the range is checked as for JSON, same message */
        if (params_int(value, 0, INT64_MAX, &v)) {
            char got[TENANTREQ_QUOTE_MAX + 16];
            tenantreq_got(got, sizeof(got), value, "string");
            return tenantreq_bad_number(k, got, why, whylen);
        }
        return tenantreq_override(req, k, v, why, whylen);
    }
    snprintf(why, whylen, "unknown field \"%.*s\"", TENANTREQ_QUOTE_MAX, field);
    return TENANTREQ_BAD_BODY;
}

enum tenantreq_error tenantreq_complete(enum tenantreq_kind kind, const struct tenantreq *req,
                                        char *why, size_t whylen)
{
    if (kind == TENANTREQ_CREATE && (!req->name[0] || !req->tier[0])) {
        snprintf(why, whylen, "a new tenant needs a name and a tier");
        return TENANTREQ_BAD_BODY;
    }
    if (kind == TENANTREQ_UPDATE && !req->tier[0] && req->rate_limit_op == TENANTREQ_KEEP &&
        req->db_time_op == TENANTREQ_KEEP) {
        snprintf(why, whylen,
                 "nothing to change: give tier, rate_limit, db_time_ms_per_min, or several");
        return TENANTREQ_BAD_BODY;
    }
    return TENANTREQ_OK;
}
