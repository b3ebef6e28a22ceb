/*
 * admission: whether an /api/data request may go to the database now, and the refusals: the
 * capacity gate, the rate limit (local or shared), the database-time budget, the breaker, and
 * a slot of the tier (datapath_submit); a refusal may be held by the tarpit and admitted again.
 * It also renders the limits' verdicts as RateLimit fields on every reply of such a request
 * (admission_reply_headers), and knows who the client is (behind trusted proxies).
 */
#ifndef BULKHEAD_ADMISSION_H
#define BULKHEAD_ADMISSION_H

#include <stdbool.h>
#include <stddef.h>

struct api_deps;
struct request;

/* HTTP thread, r an /api/data request whose tier and tenant are known (datareq.h): admit it
 * (from the capacity gate on; again after a hold). `suspended`: r is suspended already.
 * Returns false with r answered (resumed when it was suspended), or true when r was handed on
 * (to a worker, to the tarpit, or to the shared limiter until its verdict): from then on
 * whoever has it owns it, and the caller must not touch it. */
bool admission_admit(const struct api_deps *d, struct request *r, bool suspended);

/* The tarpit's release callback (tarpit_cfg.release; any thread): a held request's time has
 * come; it is posted to its event thread, which admits it again (served, held again, or
 * answered with its refusal), or, when its client left during the hold, finishes it unadmitted
 * (499; counted by tarpit_count_left). */
void admission_release_held(void *item, void *ctx);

/* r's client address (the rightmost untrusted X-Forwarded-For entry behind TRUSTED_PROXIES),
 * and its key "ip:<key>" (an IPv6 client is its network of CLIENT_IPV6_PREFIX bits). */
void admission_client_addr(const struct api_deps *d, struct request *r, char *out, size_t len);
void admission_client_key(const struct api_deps *d, struct request *r, char *out, size_t len);

/* request_handler_ops.reply_headers of an /api/data request (state: its datareq): the
 * RateLimit-Policy / RateLimit fields of its limits' verdicts, on every reply set. */
void admission_reply_headers(struct request *r, void *state);

#endif
