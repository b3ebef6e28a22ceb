/*
 * admin: operator actions, off unless ADMIN_TOKEN is set.
 *
 *   POST /admin/breaker/<tier>/open     force the tier's breaker OPEN (every call refused)
 *   POST /admin/breaker/<tier>/disable  force it closed: calls always pass, nothing trips it
 *   POST /admin/breaker/<tier>/reset    back to automatic, CLOSED, window cleared
 *
 * Requests must carry "Authorization: Bearer <ADMIN_TOKEN>" (compared in constant time).
 * The answer is the breaker's new state.
 */
#ifndef BULKHEAD_ADMIN_H
#define BULKHEAD_ADMIN_H

struct request;
struct tierset;

/* HTTP thread. token: ADMIN_TOKEN ("" = the admin endpoints do not exist). */
void admin_handle(struct tierset *tiers, const char *token, struct request *r);

#endif
