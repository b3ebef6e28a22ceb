/*
 * dashboard-fleet.js: the Fleet panel (<section id="fleet" data-fleet data-instances>): the fleet
 * medium's state and the instances it sees, then a row <tr data-tier> per tier with its activity
 * elsewhere in the fleet, its budget and this instance's share, as the instance that answered
 * the last poll reports them. Needs: st, $, el and the formatters (dashboard-state.js).
 */
'use strict';

/* As the instance that answered the last poll sees it: the medium from its /dashboard/data
   (server.fleet: null when FLEET is off), each tier from its own /metrics/bulkheads (a share is
   an instance's own: behind a balancer the merged reading would mix instances). */
function fleetLive() {
  const mine = st.lives.get(st.instance);
  return mine ? mine.live : st.live;
}
function pct(part, whole) { return whole > 0 ? Math.round((part / whole) * 100) + '%' : '–'; }
function plural(n, one, many) { return fmtInt(n) + ' ' + (n === 1 ? one : many); }

function renderFleet() {
  const box = $('fleet');
  const fl = st.server ? st.server.fleet : undefined;
  const stateText = $('fleet-state').querySelector('span');
  const inst = $('fleet-instances');
  const count = $('fleet-count');
  if (fl === undefined) {
    box.dataset.fleet = '';
    return;
  }
  if (fl === null) {
    box.dataset.fleet = 'off';
    box.dataset.instances = 1;
    stateText.textContent = 'Not configured (FLEET=false): this instance controls its tiers alone';
    inst.textContent = '';
    count.textContent = '';
    $('fleet-tiers').textContent = '';
    return;
  }
  const joining = !fl.up && !fl.exchanges && !fl.reason;
  box.dataset.fleet = fl.up ? 'up' : joining ? 'joining' : 'local';
  if (fl.up)
    stateText.textContent = 'Medium up · PostgreSQL (bulkhead_fleet) · exchange ' + fmtMs(fl.exchangeMs);
  else if (joining)
    stateText.textContent = 'Local control · joining: no exchange yet';
  else
    stateText.textContent = 'Local control · ' + (fl.reason || 'the medium does not answer');
  $('fleet-state').title = stateText.textContent;
  /* "instances" counts the others; the page names the total, this one included. */
  inst.textContent = '';
  if (fl.up) {
    const total = fl.instances + 1;
    box.dataset.instances = total;
    inst.append(el('b', '', fmtInt(total)), document.createTextNode(
      (total === 1 ? ' instance (this one alone)' : ' instances (this one and ' + plural(fl.instances, 'other', 'others') + ')') +
      (st.instance ? ' · seen from ' + st.instance : '')));
  } else {
    box.dataset.instances = '';
    inst.textContent = 'instances unknown without the medium' +
      (fl.changedMs > 0 ? ' · since ' + fmtClock(fl.changedMs) : '');
  }
  count.textContent = plural(fl.exchanges, 'exchange', 'exchanges') + ' · ' + plural(fl.failures, 'failure', 'failures');

  const live = fleetLive();
  const rows = [];
  for (const name of st.tiers) {
    const t = live && live[name];
    if (!t) continue;
    const cap = t.capacity || {};
    const b = t.budget || {};
    const tr = el('tr');
    tr.dataset.tier = name;
    let elsewhere = '–', hot = false;
    if (fl.up) {
      hot = !!cap.fleetThreatened;
      elsewhere = cap.fleetThreatened ? 'active, threatened' : cap.fleetActive ? 'active' : 'idle';
      if (cap.fleetPressing) elsewhere += ' · pressing';
    }
    const fleetScoped = b.scope === 'fleet';
    const budget = fleetScoped
      ? 'fleet: ' + plural(b.fleetWorkers, 'worker', 'workers') + ' · ' + plural(b.fleetConnections, 'connection', 'connections') +
        (b.leased ? ' over ' + plural(b.instances, 'instance', 'instances') : '')
      : 'per instance: ' + plural(b.fleetWorkers, 'worker', 'workers') + ' · ' + plural(b.fleetConnections, 'connection', 'connections');
    const share = fleetScoped
      ? plural(b.workers, 'worker', 'workers') + ' · ' + plural(b.connections, 'connection', 'connections') +
        ' (' + pct(b.workers, b.fleetWorkers) + ' · ' + pct(b.connections, b.fleetConnections) + ')'
      : 'all of its own';
    const held = fleetScoped ? (b.leased ? 'lease' : 'minimum (no lease)') : '–';
    const tdE = el('td', hot ? 'hot' : fl.up ? '' : 'quiet', elsewhere);
    tr.append(el('td', '', name), tdE, el('td', '', budget), el('td', fleetScoped ? '' : 'quiet', share),
      el('td', fleetScoped && !b.leased ? 'hot' : fleetScoped ? '' : 'quiet', held));
    rows.push(tr);
  }
  $('fleet-tiers').replaceChildren(...rows);
}

