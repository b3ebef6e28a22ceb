/*
 * admin: the breaker controls of admin.h.
 */
#include "admin.h"
#include "apierr.h"
#include "breaker.h"
#include "log.h"
#include "mclock.h"
#include "params.h"
#include "request.h"
#include "tierset.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void admin_handle(struct tierset *tiers, const char *token, struct request *r)
{
    if (!token[0]) {
        apierr_replyf(r, APIERR_NOT_FOUND,
                      "admin endpoints are off (set ADMIN_TOKEN to enable them)");
        return;
    }
    const char *given = params_bearer(request_header(r, MHD_HTTP_HEADER_AUTHORIZATION));
    if (!given || !params_equal_ct(given, token)) {
        apierr_replyf(r, APIERR_UNAUTHORIZED,
                      "admin endpoints need Authorization: Bearer <ADMIN_TOKEN>");
        return;
    }
    if (r->method != METHOD_POST) {
        apierr_replyf(r, APIERR_METHOD_NOT_ALLOWED, "allowed methods: POST");
        request_add_header(r, MHD_HTTP_HEADER_ALLOW, "POST");
        return;
    }
    /* /admin/breaker/<tier>/<action> */
    char tier[TIERS_NAME_MAX + 1], action[16];
    const char *p = r->url + strlen("/admin/");
    int n = 0;
    if (sscanf(p, "breaker/%32[a-z0-9_-]/%15[a-z]%n", tier, action, &n) != 2 || p[n] != '\0') {
        apierr_replyf(r, APIERR_NOT_FOUND, "use POST /admin/breaker/<tier>/(open|disable|reset)");
        return;
    }
    struct tier_rt *t = tierset_find(tiers, tier);
    if (!t) {
        apierr_reply(r, APIERR_UNKNOWN_TIER);
        return;
    }
    enum breaker_mode mode;
    if (!strcmp(action, "open"))
        mode = BREAKER_FORCED_OPEN;
    else if (!strcmp(action, "disable"))
        mode = BREAKER_DISABLED;
    else if (!strcmp(action, "reset"))
        mode = BREAKER_AUTO;
    else {
        apierr_replyf(r, APIERR_NOT_FOUND, "actions: open, disable, reset");
        return;
    }
    int64_t now = mclock_now_us();
    breaker_force(t->breaker, mode, true, now);
    struct breaker_snapshot s;
    breaker_snapshot(t->breaker, now, &s);
    json_t *o = json_pack("{s:s, s:s, s:s}", "tier", tier, "state", breaker_state_name(s.state),
                          "mode", breaker_mode_name(s.mode));
    char *text = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    request_reply_owned(r, MHD_HTTP_OK, OUTCOME_OK, text, strlen(text), free, text);
}
