/*
 * dashboard-tenants.js: the "Who uses this tier" panel: every two seconds GET
 * /metrics/tenants?limit=5, a table per tier of its heaviest tenants by database time over the
 * last minute. Independent of the main poll; pollWho is started by dashboard-page.js.
 * Needs: $, el, fmtInt and getJSON (dashboard-state.js).
 */
'use strict';

/* Who uses this tier: every tier's five heaviest tenants by database time over the last
   minute (/metrics/tenants), the rest as "others". Tenant names are the clients': text only. */
const WHO_MS = 2000;
function whoTable(tier, t) {
  const tb = el('table');
  tb.dataset.tier = tier;
  const cap = el('caption', '', tier + (t.db_time_ms_per_min ? ' · budget ' + fmtInt(t.db_time_ms_per_min) + ' ms/min' : '') +
    (t.rate_limit_shadow || t.db_time_shadow ? ' · shadow' : ''));
  const head = el('tr');
  for (const h of ['tenant', 'db s', 'req', 'refused', 'wait ms']) head.append(el('th', '', h));
  tb.append(cap, head);
  const row = (name, r) => {
    const tr = el('tr');
    tr.append(el('td', '', name), el('td', '', (r.db_time_ms / 1000).toFixed(2)), el('td', '', fmtInt(r.requests)),
      el('td', '', fmtInt(r.refused)), el('td', '', fmtInt(Math.round(r.queue_wait_ms + r.pool_wait_ms))));
    return tr;
  };
  for (const r of t.tenants) tb.append(row(r.tenant, r));
  if (t.other.requests > 0) tb.append(row('others', t.other));
  if (!t.tenants.length) tb.append(el('tr', '', ''));
  return tb;
}
async function pollWho() {
  try {
    const { body } = await getJSON('/metrics/tenants?limit=5');
    const grid = $('who-grid');
    grid.replaceChildren(...Object.keys(body.tiers).map((tier) => whoTable(tier, body.tiers[tier])));
  } catch (e) {
    /* The main poll shows the server's state; this panel keeps its last reading. */
  }
  setTimeout(pollWho, WHO_MS);
}
