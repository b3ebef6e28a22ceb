/*
 * admin: the breaker controls of admin.h.
 */
#include "admin.h"
#include "breaker.h"
#include "log.h"
#include "mclock.h"
#include "params.h"
#include "request.h"
#include "server.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void admin_handle(struct server *srv, struct request *r)
{
    if (!srv->cfg.admin_token[0]) {
        request_reply_error(r, MHD_HTTP_NOT_FOUND, OUTCOME_CLIENT_ERROR, "not_found",
                            "admin endpoints are off (set ADMIN_TOKEN to enable them)", 0);
        return;
    }
    const char *token = params_bearer(request_header(r, MHD_HTTP_HEADER_AUTHORIZATION));
    if (!token || !params_equal_ct(token, srv->cfg.admin_token)) {
        request_reply_error(r, MHD_HTTP_UNAUTHORIZED, OUTCOME_CLIENT_ERROR, "unauthorized",
                            "admin endpoints need Authorization: Bearer <ADMIN_TOKEN>", 0);
        request_add_header(r, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer");
        return;
    }
    if (r->method != METHOD_POST) {
        request_reply_error(r, MHD_HTTP_METHOD_NOT_ALLOWED, OUTCOME_CLIENT_ERROR,
                            "method_not_allowed", "allowed methods: POST", 0);
        request_add_header(r, MHD_HTTP_HEADER_ALLOW, "POST");
        return;
    }
    /* /admin/breaker/<tier>/<action> */
    char tier[TIERS_NAME_MAX + 1], action[16];
    const char *p = r->url + strlen("/admin/");
    int n = 0;
    if (sscanf(p, "breaker/%32[a-z0-9_-]/%15[a-z]%n", tier, action, &n) != 2 || p[n] != '\0') {
        request_reply_error(r, MHD_HTTP_NOT_FOUND, OUTCOME_CLIENT_ERROR, "not_found",
                            "use POST /admin/breaker/<tier>/(open|disable|reset)", 0);
        return;
    }
    struct tier_rt *t = server_tier(srv, tier);
    if (!t) {
        request_reply_error(r, MHD_HTTP_NOT_FOUND, OUTCOME_CLIENT_ERROR, "unknown_tier",
                            "no such tier", 0);
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
        request_reply_error(r, MHD_HTTP_NOT_FOUND, OUTCOME_CLIENT_ERROR, "not_found",
                            "actions: open, disable, reset", 0);
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
