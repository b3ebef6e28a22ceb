/*
 * dashboard-state.js: the live dashboard's state and its polling (the first of the page's classic
 * scripts, which share one global scope; web/dashboard.html loads them in order). Holds the
 * constants, the state `st`, the DOM helpers $ and el, number and time formatting, and the data
 * path: every second GET /dashboard/data?since=N and /metrics/bulkheads, one history per instance
 * behind a balancer, merged into one sample per second (ingest, mergeSamples, mergeLive).
 * Needs from the others, called only once all are loaded: buildTiers (dashboard-tiers.js),
 * buildScope (dashboard-charts.js) and render (dashboard-page.js).
 */
'use strict';

const WINDOW_MS = 300 * 1000;
const MAX_SAMPLES = 300;
const POLL_MS = 1000;
const FETCH_TIMEOUT_MS = 3000;
const STALE_MS = 15000; /* an instance not heard from for this long no longer steers polls */
const PAD_L = 54, PAD_R = 10; /* chart plot insets: room for the y labels */

/* Every way a request can be turned away or fail; the order is the request path's. */
const REASONS = [
  ['shed', 'shed (higher tier first)', '#fde047'],
  ['rate_limited', 'rate limited', '#facc15'],
  ['held', 'held (retried early)', '#eab308'],
  ['bulkhead_full', 'bulkhead full', '#fb923c'],
  ['queue_timeout', 'queue timeout', '#f472b6'],
  ['pool_timeout', 'pool timeout', '#a78bfa'],
  ['circuit_open', 'circuit open', '#ef4444'],
  ['error', 'error', '#38bdf8'],
  ['timeout', 'timeout', '#cbd5e1'],
];
/* Throughput groups: ok, failed in the tier, shed by a bulkhead layer, the client's fault. */
const GROUPS = [
  ['ok', 'ok', '#34d399', ['ok']],
  ['failed', 'failed', '#38bdf8', ['error', 'timeout']],
  ['rejected', 'rejected', '#fb923c',
   ['shed', 'rate_limited', 'held', 'bulkhead_full', 'queue_timeout', 'pool_timeout', 'circuit_open',
    'unavailable']],
  ['client', 'client errors', '#64748b', ['client_error']],
];
const TIER_COLORS = ['#7dd3fc', '#c4b5fd', '#fcd34d', '#f9a8d4', '#86efac', '#fdba74', '#a5b4fc', '#5eead4'];

const st = {
  inst: new Map(), // instance id -> { last: newest seq held, samples: [], seen: Date.now() }
  lives: new Map(), // instance id -> { live: its last /metrics/bulkheads, seen }
  instance: null,  // the instance that answered the last poll
  last: 0,         // newest sample seq held, of any instance
  samples: [],     // merged over instances, one per second, oldest first, at most MAX_SAMPLES
  tiers: [],       // names, in table order
  live: null,      // /metrics/bulkheads merged over the instances heard from lately
  server: null,    // last server block of /dashboard/data
  updates: 0,      // successful polls
  failures: 0,     // polls failed in a row
  scope: 'all',    // 'all' or a tier name
  hoverT: null,    // sample time under the mouse, shared by the three charts
  lastOk: 0,       // Date.now() of the last successful poll
};

const $ = (id) => document.getElementById(id);
const el = (tag, cls, text) => {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
};

/* ---- formatting ------------------------------------------------------------------------- */
function fmtInt(v) { return Math.round(v).toLocaleString('en-US'); }
function fmtRate(v) {
  if (v >= 100) return fmtInt(v);
  if (v >= 10) return v.toFixed(0);
  return v === 0 ? '0' : v.toFixed(1).replace(/\.0$/, '');
}
function fmtMs(v) {
  if (!(v > 0)) return '–';
  if (v >= 1000) return (v / 1000).toFixed(v >= 10000 ? 0 : 2) + ' s';
  if (v >= 100) return v.toFixed(0) + ' ms';
  if (v >= 10) return v.toFixed(1) + ' ms';
  if (v >= 1) return v.toFixed(2) + ' ms';
  return (v * 1000).toFixed(0) + ' µs';
}
function fmtMsShort(v) {
  if (!(v > 0)) return '–';
  if (v >= 1000) return (v / 1000).toFixed(v >= 10000 ? 0 : 1) + 's';
  if (v >= 10) return v.toFixed(0);
  if (v >= 1) return v.toFixed(1);
  return v.toFixed(2);
}
/* Axis labels of the latency chart: 1-2-5 values, so no decimals beyond what they need. */
function fmtAxisMs(v) {
  if (v >= 1000) return +(v / 1000).toPrecision(3) + ' s';
  if (v >= 1) return +v.toPrecision(3) + ' ms';
  return +(v * 1000).toPrecision(3) + ' µs';
}
function fmtDuration(ms) {
  let s = Math.max(0, Math.floor(ms / 1000));
  const d = Math.floor(s / 86400); s -= d * 86400;
  const h = Math.floor(s / 3600); s -= h * 3600;
  const m = Math.floor(s / 60); s -= m * 60;
  if (d) return d + 'd ' + h + 'h';
  if (h) return h + 'h ' + String(m).padStart(2, '0') + 'm';
  if (m) return m + 'm ' + String(s).padStart(2, '0') + 's';
  return s + 's';
}
function fmtClock(t) {
  const d = new Date(t);
  return [d.getHours(), d.getMinutes(), d.getSeconds()].map((x) => String(x).padStart(2, '0')).join(':');
}

/* ---- data ------------------------------------------------------------------------------- */
function oc(sample, tier, key) {
  const t = sample.tiers[tier];
  return t && t.outcomes ? t.outcomes[key] || 0 : 0;
}
function scopeTiers() { return st.scope === 'all' ? st.tiers : [st.scope]; }
function sumOutcomes(sample, tiers, keys) {
  let n = 0;
  for (const t of tiers) for (const k of keys) n += oc(sample, t, k);
  return n;
}
function total(sample, tiers) {
  let n = 0;
  for (const t of tiers) {
    const o = sample.tiers[t] && sample.tiers[t].outcomes;
    if (o) for (const k in o) n += o[k];
  }
  return n;
}
function tierColor(name) {
  const i = st.tiers.indexOf(name);
  return TIER_COLORS[(i < 0 ? 0 : i) % TIER_COLORS.length];
}

/* The JSON body, and the answering instance: the prefix of the server's own X-Request-Id
   ("<instance>-<counter>"; the page sends none). */
async function getJSON(url) {
  const ctl = new AbortController();
  const timer = setTimeout(() => ctl.abort(), FETCH_TIMEOUT_MS);
  try {
    const r = await fetch(url, { cache: 'no-store', signal: ctl.signal });
    if (!r.ok) throw new Error(url + ': HTTP ' + r.status);
    const rid = r.headers.get('X-Request-Id') || '';
    return { body: await r.json(), inst: rid.split('-')[0] };
  } finally {
    clearTimeout(timer);
  }
}

/* The since= of the next poll: the oldest "newest sample" of the instances heard from lately,
   so whichever of them answers sends everything the page lacks of it. 0 at first. */
function sinceParam() {
  const now = Date.now();
  let since = null;
  for (const it of st.inst.values())
    if (now - it.seen < STALE_MS) since = since === null ? it.last : Math.min(since, it.last);
  return since === null ? 0 : since;
}

const BREAKER_RANK = { CLOSED: 0, HALF_OPEN: 1, OPEN: 2 };
function worseBreaker(a, b) { return (BREAKER_RANK[b] || 0) > (BREAKER_RANK[a] || 0) ? b : a; }

/* Latencies: the worst instance's, not a sum. */
const MAXED = new Set(['latencyMs.p50', 'latencyMs.p99', 'p50_ms', 'p99_ms']);

/* Add sample src into d, field by field: counts and gauges add up, latencies take the maximum,
   a breaker state the worse, anything else (text) is kept. */
function mergeInto(d, src, path) {
  for (const k in src) {
    const v = src[k];
    if (v && typeof v === 'object') d[k] = mergeInto(d[k] || {}, v, path + k + '.');
    else if (typeof v === 'number') d[k] = MAXED.has(path + k) ? Math.max(d[k] || 0, v) : (d[k] || 0) + v;
    else if (k === 'state' || k === 'breaker') d[k] = d[k] === undefined ? v : worseBreaker(d[k], v);
    else d[k] = v;
  }
  return d;
}

/* One sample per second over every instance (mergeInto). An instance puts at most one sample
   in a second (its next one goes to the next second). */
function mergeSamples() {
  const byKey = new Map();
  for (const it of st.inst.values()) {
    let prev = -Infinity;
    for (const s of it.samples) {
      let key = Math.round(s.t / 1000);
      if (key <= prev) key = prev + 1;
      prev = key;
      let m = byKey.get(key);
      if (!m) {
        m = { t: key * 1000, seq: s.seq, tiers: {} };
        byKey.set(key, m);
      }
      for (const name in s.tiers) m.tiers[name] = mergeInto(m.tiers[name] || {}, s.tiers[name], '');
      /* The loops' lag: the worst instance's. */
      const lag = (s.eventLoops && s.eventLoops.lagMs) || { p50: 0, p99: 0 };
      const ml = m.eventLoops ? m.eventLoops.lagMs : { p50: 0, p99: 0 };
      m.eventLoops = { lagMs: { p50: Math.max(ml.p50, lag.p50), p99: Math.max(ml.p99, lag.p99) } };
    }
  }
  const merged = [...byKey.values()].sort((a, b) => a.t - b.t);
  st.samples = merged.slice(-MAX_SAMPLES);
}

/* /metrics/bulkheads over the instances heard from lately: pools and queues add up, the
   breaker shown is the worst instance's, the rest (limits, settings) is the same everywhere. */
function mergeLive() {
  const now = Date.now();
  const fresh = [...st.lives.values()].filter((l) => now - l.seen < STALE_MS).map((l) => l.live);
  if (fresh.length <= 1) {
    st.live = fresh[0] || st.live;
    return;
  }
  const out = {};
  for (const name of Object.keys(fresh[0])) {
    const per = fresh.map((l) => l[name]).filter((t) => t && t.threadPool);
    if (!per.length) continue;
    const t = JSON.parse(JSON.stringify(per[0]));
    for (const o of per.slice(1)) {
      for (const k of ['active', 'poolSize', 'queued', 'queueLimit']) t.threadPool[k] += o.threadPool[k] || 0;
      for (const k of ['active', 'idle', 'max', 'pending']) t.connectionPool[k] += o.connectionPool[k] || 0;
      if ((BREAKER_RANK[o.circuitBreaker.state] || 0) > (BREAKER_RANK[t.circuitBreaker.state] || 0))
        t.circuitBreaker = o.circuitBreaker;
      const busy = (f) => (f.busiest && f.busiest[0] ? f.busiest[0].inFlight + f.busiest[0].queued : 0);
      if (busy(o.fairness) > busy(t.fairness)) t.fairness.busiest = o.fairness.busiest;
      t.fairness.activeTenants = Math.max(t.fairness.activeTenants, o.fairness.activeTenants);
    }
    out[name] = t;
  }
  st.live = out;
}

/* Returns true when the poll must be repeated at once: an instance answered that the page knew
   nothing of (or less than it was asked for), so its older samples are still to fetch. */
function ingest(hist, since, live, liveInst) {
  const now = Date.now();
  const id = (hist.server && hist.server.instance) || '?';
  let it = st.inst.get(id);
  if (!it) {
    it = { last: 0, samples: [], seen: now };
    st.inst.set(id, it);
  }
  it.seen = now;
  st.instance = id;
  st.server = hist.server;
  let again = false;
  if (since > it.last) {
    again = true; /* its samples after it.last and up to since were not sent */
  } else {
    for (const s of hist.samples) if (s.seq > it.last) it.samples.push(s);
    it.last = Math.max(it.last, hist.last);
  }
  /* Samples leave with the window; an instance with none left is forgotten. */
  let newest = 0;
  for (const x of st.inst.values()) if (x.samples.length) newest = Math.max(newest, x.samples[x.samples.length - 1].t);
  for (const [k, x] of st.inst) {
    while (x.samples.length && (x.samples.length > MAX_SAMPLES || x.samples[0].t < newest - WINDOW_MS)) x.samples.shift();
    if (!x.samples.length && now - x.seen > STALE_MS) st.inst.delete(k);
  }
  /* Only a prefix that names a known instance keys a live reading; else it replaces them all. */
  if (!st.inst.has(liveInst)) st.lives.clear();
  st.lives.set(st.inst.has(liveInst) ? liveInst : '?', { live, seen: now });
  for (const [k, l] of st.lives) if (now - l.seen > STALE_MS) st.lives.delete(k);
  st.last = 0;
  for (const x of st.inst.values()) st.last = Math.max(st.last, x.last);
  if (hist.tiers.join(',') !== st.tiers.join(',')) {
    st.tiers = hist.tiers.slice();
    if (st.scope !== 'all' && !st.tiers.includes(st.scope)) st.scope = 'all';
    buildTiers();
    buildScope();
  }
  mergeSamples();
  mergeLive();
  return again;
}

async function poll() {
  const began = performance.now();
  let again = false;
  try {
    const since = sinceParam();
    const [hist, live] = await Promise.all([
      getJSON('/dashboard/data?since=' + since),
      getJSON('/metrics/bulkheads'),
    ]);
    again = ingest(hist.body, since, live.body, live.inst);
    /* Behind a round-robin balancer the two requests of every update can fall into step, the
       history always from one instance and the live reading always from the other. When the
       live reading names an instance the page has no history of, one more history request
       (alone) both fetches it if it lands there and shifts the two out of step. */
    const known = st.inst.get(live.inst);
    if (live.inst && live.inst !== hist.inst && !(known && known.samples.length)) {
      const since2 = sinceParam();
      const hist2 = await getJSON('/dashboard/data?since=' + since2);
      again = ingest(hist2.body, since2, live.body, live.inst) || again;
    }
    st.updates++;
    st.failures = 0;
    st.lastOk = Date.now();
  } catch (e) {
    st.failures++;
  }
  try {
    render();
  } catch (e) {
    console.error(e);
  }
  const spent = performance.now() - began;
  const delay = again ? 0 : st.failures ? Math.min(5000, 1000 * st.failures) : Math.max(100, POLL_MS - spent);
  setTimeout(poll, delay);
}
