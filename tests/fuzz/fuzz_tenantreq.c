/*
 * fuzz_tenantreq: tenantreq_parse_json, the admin API's tenant bodies, on arbitrary bytes, as a
 * create and as an update. It accepts exactly the bodies an independent reading here accepts
 * (a JSON object of known fields: a valid name, one of the built-in tiers, a rate limit and a
 * database-time budget in range or null; what each kind requires), and what it returns is what the
 * body said; a refusal always says why. An accepted request written back as JSON parses to the same
 * one.
 */
#include "fuzz.h"
#include "tenantreq.h"

#include <jansson.h>

static struct tier_table tiers;

/* The independent reading: whether kind accepts root, and the request it means. */
static bool expect(enum tenantreq_kind kind, json_t *root, struct tenantreq *want)
{
    tenantreq_init(want);
    if (!json_is_object(root))
        return false;
    const char *key;
    json_t *v;
    json_object_foreach(root, key, v)
    {
        if (!strcmp(key, "name") && kind == TENANTREQ_CREATE && json_is_string(v) &&
            params_tenant_valid(json_string_value(v)))
            snprintf(want->name, sizeof(want->name), "%s", json_string_value(v));
        else if (!strcmp(key, "tier") && json_is_string(v) &&
                 tiers_find(&tiers, json_string_value(v)) >= 0)
            snprintf(want->tier, sizeof(want->tier), "%s", json_string_value(v));
        else if (!strcmp(key, "rate_limit") && json_is_null(v))
            want->rate_limit_op = TENANTREQ_CLEAR;
        else if (!strcmp(key, "rate_limit") && json_is_integer(v) && json_integer_value(v) >= 0 &&
                 json_integer_value(v) <= TENANTREQ_RATE_LIMIT_MAX) {
            want->rate_limit_op = TENANTREQ_SET;
            want->rate_limit = json_integer_value(v);
        } else if (!strcmp(key, "db_time_ms_per_min") && json_is_null(v))
            want->db_time_op = TENANTREQ_CLEAR;
        else if (!strcmp(key, "db_time_ms_per_min") && json_is_integer(v) &&
                 json_integer_value(v) >= 0 && json_integer_value(v) <= TENANTREQ_DB_TIME_MAX) {
            want->db_time_op = TENANTREQ_SET;
            want->db_time = json_integer_value(v);
        } else
            return false;
    }
    if (kind == TENANTREQ_CREATE)
        return want->name[0] && want->tier[0];
    return want->tier[0] || want->rate_limit_op != TENANTREQ_KEEP ||
           want->db_time_op != TENANTREQ_KEEP;
}

static bool same(const struct tenantreq *a, const struct tenantreq *b)
{
    return !strcmp(a->name, b->name) && !strcmp(a->tier, b->tier) &&
           a->rate_limit_op == b->rate_limit_op &&
           (a->rate_limit_op != TENANTREQ_SET || a->rate_limit == b->rate_limit) &&
           a->db_time_op == b->db_time_op &&
           (a->db_time_op != TENANTREQ_SET || a->db_time == b->db_time);
}

/* req as a body again. */
static char *write_back(const struct tenantreq *req)
{
    json_t *o = json_object();
    if (req->name[0])
        json_object_set_new(o, "name", json_string(req->name));
    if (req->tier[0])
        json_object_set_new(o, "tier", json_string(req->tier));
    if (req->rate_limit_op == TENANTREQ_SET)
        json_object_set_new(o, "rate_limit", json_integer(req->rate_limit));
    if (req->rate_limit_op == TENANTREQ_CLEAR)
        json_object_set_new(o, "rate_limit", json_null());
    if (req->db_time_op == TENANTREQ_SET)
        json_object_set_new(o, "db_time_ms_per_min", json_integer(req->db_time));
    if (req->db_time_op == TENANTREQ_CLEAR)
        json_object_set_new(o, "db_time_ms_per_min", json_null());
    char *text = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    return text;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!tiers.count)
        tiers_builtin(&tiers);
    const char *body = (const char *)data;
    json_error_t jerr;
    json_t *root = json_loadb(body, size, JSON_REJECT_DUPLICATES, &jerr);
    for (int k = 0; k < 2; k++) {
        enum tenantreq_kind kind = k ? TENANTREQ_UPDATE : TENANTREQ_CREATE;
        struct tenantreq got, want, again;
        char why[300];
        why[0] = '\0';
        enum tenantreq_error rc =
            tenantreq_parse_json(kind, body, size, &tiers, &got, why, sizeof(why));
        FUZZ_CHECK(rc >= TENANTREQ_OK && rc <= TENANTREQ_BAD_NUMBER);
        bool ok = root && expect(kind, root, &want);
        FUZZ_CHECK((rc == TENANTREQ_OK) == ok);
        if (rc != TENANTREQ_OK) {
            FUZZ_CHECK(why[0] != '\0');
            continue;
        }
        FUZZ_CHECK(same(&got, &want));
        char *text = write_back(&got);
        FUZZ_CHECK(text != NULL);
        FUZZ_CHECK(tenantreq_parse_json(kind, text, strlen(text), &tiers, &again, why,
                                        sizeof(why)) == TENANTREQ_OK);
        FUZZ_CHECK(same(&got, &again));
        free(text);
    }
    json_decref(root);
    return 0;
}
