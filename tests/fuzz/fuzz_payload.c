/*
 * fuzz_payload: params_payload, the POST /api/data body check, on arbitrary bytes. It accepts
 * exactly the documents that are {"payload": {...}} (decoded independently here), and what it
 * returns is compact ASCII JSON without control bytes equal to the payload that was sent.
 */
#include "fuzz.h"
#include "params.h"

#include <errno.h>
#include <jansson.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *body = (const char *)data;
    /* The independent reading: the same decoder, the shape checked here. */
    json_error_t jerr;
    json_t *root = json_loadb(body, size, JSON_REJECT_DUPLICATES, &jerr);
    json_t *want = NULL;
    if (root && json_is_object(root) && json_object_size(root) == 1 &&
        json_is_object(json_object_get(root, "payload")))
        want = json_object_get(root, "payload");

    char *out = (char *)1;
    char why[200];
    why[0] = '\0';
    int rc = params_payload(body, size, &out, why, sizeof(why));
    FUZZ_CHECK(rc == 0 || rc == -EINVAL);
    FUZZ_CHECK((rc == 0) == (want != NULL));
    if (rc) {
        FUZZ_CHECK(out == NULL);
        FUZZ_CHECK(why[0] != '\0');
    } else {
        FUZZ_CHECK(out != NULL);
        for (const char *p = out; *p; p++)
            FUZZ_CHECK(*p >= 0x20 && (unsigned char)*p < 0x80); /* ASCII, no control bytes */
        FUZZ_CHECK(out[0] == '{');
        json_t *back = json_loads(out, JSON_REJECT_DUPLICATES, &jerr);
        FUZZ_CHECK(back != NULL);
        FUZZ_CHECK(json_equal(back, want));
        /* Compact: encoding it again gives the same bytes. */
        char *again = json_dumps(back, JSON_COMPACT | JSON_ENSURE_ASCII);
        FUZZ_CHECK(again && strcmp(again, out) == 0);
        free(again);
        json_decref(back);
        free(out);
    }
    json_decref(root);
    return 0;
}
