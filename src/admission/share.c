/*
 * share: the admission rule shared by the worker and connection pools (see share.h).
 */
#include "share.h"

struct share_policy share_policy_pct(size_t size, long share_pct, long reserve_pct)
{
    struct share_policy p = {.size = size};
    p.cap = share_pct > 0 ? size * (size_t)share_pct / 100 : size;
    if (p.cap < 1)
        p.cap = 1;
    if (reserve_pct > 0 && size > 1) {
        p.reserve = (size * (size_t)reserve_pct + 99) / 100;
        if (p.reserve < 1)
            p.reserve = 1;
        if (p.reserve > size - 1)
            p.reserve = size - 1;
    }
    return p;
}

bool share_may_take(const struct share_policy *p, size_t held, size_t in_use, bool others_active,
                    bool brief)
{
    if (in_use >= p->size)
        return false;
    if (held == 0)
        return true;
    if (others_active && held >= p->cap + (brief ? 1u : 0u))
        return false;
    return p->size - in_use > p->reserve;
}
