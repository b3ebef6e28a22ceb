/*
 * dashboard-tiers.js: the tier cards, one <article data-tier> per tier: breaker light, req/s,
 * rejected/s, p99, gauges (workers, DB connections, queue, capacity), the objective and tenants
 * rows, and a sparkline. buildTiers makes them when the tier list changes, renderTier fills one.
 * Needs: st, $, el, the formatters, tierColor, total, sumOutcomes and REASONS
 * (dashboard-state.js); setScope and drawSpark (dashboard-charts.js).
 */
'use strict';

const cards = new Map();

function gauge(parent, label) {
  const g = el('div', 'gauge');
  const row = el('div', 'g-row');
  const l = el('span', '', label);
  const v = el('span', 'num');
  const extra = el('em');
  const right = el('span');
  right.append(v, extra);
  row.append(l, right);
  const bar = el('div', 'bar');
  const fill = el('div');
  bar.append(fill);
  g.append(row, bar);
  parent.append(g);
  return { v, bar, fill, extra };
}
function setGauge(g, val, max, extra) {
  g.v.textContent = fmtInt(val) + ' / ' + fmtInt(max);
  g.extra.textContent = extra || '';
  const f = max > 0 ? Math.min(1, val / max) : 0;
  g.fill.style.width = (f * 100).toFixed(1) + '%';
  g.bar.className = 'bar' + (f >= 0.9 ? ' high' : f >= 0.6 ? ' mid' : '');
}

function buildTiers() {
  const box = $('tiers');
  box.textContent = '';
  cards.clear();
  for (const name of st.tiers) {
    const c = el('article', 'tier');
    c.dataset.tier = name;
    c.dataset.breaker = '';
    c.style.setProperty('--tc', tierColor(name));
    c.title = 'Focus the charts on ' + name;
    c.addEventListener('click', () => setScope(st.scope === name ? 'all' : name));
    const head = el('div', 't-head');
    const nm = el('div', 't-name');
    nm.append(el('i'), document.createTextNode(name));
    const br = el('div', 'breaker');
    const light = el('span', 'light');
    const bstate = el('span', 'b-state', '…');
    br.append(light, bstate);
    head.append(nm, br);
    const sub = el('div', 't-sub', ' ');
    const kpis = el('div', 'kpis');
    const mk = (cls, label) => {
      const k = el('div', 'kpi ' + cls);
      const b = el('b', '', '–');
      k.append(b, el('span', '', label));
      kpis.append(k);
      return b;
    };
    const rps = mk('rps', 'req/s');
    const rej = mk('rej', 'rejected/s');
    const p99 = mk('p99', 'p99 ms');
    const gauges = el('div');
    const gw = gauge(gauges, 'Workers busy');
    const gd = gauge(gauges, 'DB connections');
    const gq = gauge(gauges, 'Queue');
    const gc = gauge(gauges, 'Capacity');
    /* The tier's objective: its p99 against it, its typical latency against the threshold over
     * its level, and the time it spent threatened (the capacity controller's verdicts). */
    const orow = el('div', 'g-row objective');
    const objective = el('span', 'tv');
    orow.append(el('span', '', 'Objective'), objective);
    gauges.append(orow);
    const trow = el('div', 'g-row tenants');
    const tenants = el('span', 'tv');
    trow.append(el('span', '', 'Tenants'), tenants);
    gauges.append(trow);
    const spark = el('canvas', 'spark');
    const foot = el('div', 't-foot');
    const bdet = el('span');
    foot.append(bdet, el('span', 'cap', 'last 5 min'));
    c.append(head, sub, kpis, gauges, spark, foot);
    box.append(c);
    cards.set(name, { c, br, bstate, sub, rps, rej, p99, gw, gd, gq, gc, orow, objective, spark, tenants, bdet });
  }
  document.body.dataset.tiers = st.tiers.join(',');
}

/* The newest sample in which the tier saw traffic, or null. */
function lastBusy(tier) {
  for (let i = st.samples.length - 1; i >= 0; i--) {
    const t = st.samples[i].tiers[tier];
    if (t && t.latencyMs.p99 > 0) return st.samples[i];
  }
  return null;
}

function renderTier(name) {
  const k = cards.get(name);
  const live = st.live && st.live[name];
  const lastS = st.samples.length ? st.samples[st.samples.length - 1] : null;
  const snap = lastS && lastS.tiers[name];
  /* Breaker: the live reading when there is one, else the last sample's. */
  let state = live ? live.circuitBreaker.state : snap ? snap.circuitBreaker.state : '';
  const mode = live ? live.circuitBreaker.mode : 'auto';
  k.c.dataset.breaker = state;
  k.bstate.textContent = state.replace('_', '-') + (mode === 'forced_open' ? ' · forced' : mode === 'disabled' ? ' · off' : '');
  k.br.className = 'breaker ' + (state === 'OPEN' ? 'open' : state === 'HALF_OPEN' ? 'half' : 'closed');
  k.c.classList.toggle('selected', st.scope === name);

  if (live) {
    const tp = live.threadPool, cp = live.connectionPool, rl = live.rateLimiter, cb = live.circuitBreaker;
    const fair = live.fairness;
    k.sub.textContent = (rl.limit ? fmtInt(rl.limit) + ' req / ' + rl.windowSeconds + ' s per tenant' : 'no rate limit') +
      ' · timeout ' + fmtInt(cb.timeoutMs) + ' ms';
    setGauge(k.gw, tp.active, tp.poolSize);
    setGauge(k.gd, cp.active, cp.max, cp.pending ? '+' + cp.pending + ' waiting' : '');
    setGauge(k.gq, tp.queued, tp.queueLimit);
    /* The capacity controller's limit for the tier (its max unless a higher tier needs room). */
    const cap = live.capacity;
    if (cap) {
      k.gc.v.textContent = (cap.limit < 1 ? cap.limit.toFixed(2) : fmtInt(cap.limit)) + ' / ' + fmtInt(cap.max);
      k.gc.extra.textContent = cap.shedding ? 'shedding for a higher tier' : cap.gated ? 'higher tier active' : '';
      const f = cap.max > 0 ? Math.min(1, cap.limit / cap.max) : 0;
      k.gc.fill.style.width = (f * 100).toFixed(1) + '%';
      k.gc.bar.className = 'bar' + (cap.shedding ? ' high' : '');
      k.c.dataset.capacityLimit = cap.limit;
      k.c.dataset.shedding = cap.shedding ? '1' : '0';
      k.objective.textContent = 'p99 ' + fmtMs(cap.latencyP99Ms) + ' of ' + fmtMs(cap.objectiveMs) +
        (cap.latencyMeanMs > 0 ? ' · typical ' + fmtMs(cap.latencyMeanMs) + ' (over ' + fmtMs(cap.thresholdMs) + ' threatens)' : '') +
        ' · threatened ' + (cap.threatenedSeconds > 0 ? fmtDuration(cap.threatenedSeconds * 1000) : 'never');
      k.orow.classList.toggle('threatened', !!cap.threatened);
      k.orow.title = cap.threatened ? 'Its latency threatens its objective: lower tiers that press are cut' : '';
      k.c.dataset.objectiveMs = cap.objectiveMs;
      k.c.dataset.threatened = cap.threatened ? '1' : '0';
      k.c.dataset.threatenedSeconds = cap.threatenedSeconds;
    }
    k.c.dataset.busy = tp.active;
    k.c.dataset.threads = tp.poolSize;
    k.c.dataset.queued = tp.queued;
    k.c.dataset.dbActive = cp.active;
    const busiest = fair.busiest && fair.busiest[0];
    k.tenants.textContent = (busiest && busiest.inFlight + busiest.queued > 1
      ? 'busiest ' + busiest.tenant.replace(/^(id|ip):/, '') + ' (' + (busiest.inFlight + busiest.queued) + ') · ' : '') +
      fmtInt(fair.activeTenants) + ' active';
    k.c.dataset.tenants = fair.activeTenants;
    if (state === 'OPEN' && cb.nextTrial) {
      const left = Date.parse(cb.nextTrial) - Date.now();
      k.bdet.textContent = 'Breaker open · trial call in ' + fmtDuration(Math.max(0, left) + 999);
    } else if (state === 'HALF_OPEN') {
      k.bdet.textContent = 'Breaker half-open · trial call running';
    } else {
      k.bdet.textContent = cb.windowCalls
        ? 'Failures ' + Math.round(cb.failureRate * 100) + '% of ' + fmtInt(cb.windowCalls) + ' calls · opens at ' + cb.errorThresholdPct + '%'
        : 'No calls lately · opens at ' + cb.errorThresholdPct + '% failures';
    }
  }
  if (snap) {
    const t = total(lastS, [name]);
    const rejected = sumOutcomes(lastS, [name], REASONS.map((r) => r[0]).concat(['unavailable']));
    k.rps.textContent = fmtRate(t);
    k.rej.textContent = fmtRate(rejected);
    k.rej.classList.toggle('hot', rejected > 0);
    const busy = lastBusy(name);
    k.p99.textContent = busy && lastS.t - busy.t < 10000 ? fmtMsShort(busy.tiers[name].latencyMs.p99) : '–';
  }
  drawSpark(k.spark, name);
}
