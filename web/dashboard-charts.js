/*
 * dashboard-charts.js: the charts of the last five minutes on canvases: the scope selector (all
 * tiers or one), the time-series frame and its drawing (stacked bands, lines on a log scale, the
 * shared hover cursor, tooltips, legends), the three charts (throughput by outcome, rejections by
 * reason, latency p50/p99 with the event loops' lag) and the tier cards' sparklines.
 * Needs: st, $, el, the formatters, the constants and sample helpers (dashboard-state.js);
 * render (dashboard-page.js), which setScope calls.
 */
'use strict';

/* ---- scope selector --------------------------------------------------------------------- */
function buildScope() {
  const box = $('scope');
  box.textContent = '';
  for (const name of ['all'].concat(st.tiers)) {
    const b = el('button', '', name === 'all' ? 'All tiers' : name);
    b.dataset.scope = name;
    b.setAttribute('role', 'tab');
    b.addEventListener('click', () => setScope(name));
    box.append(b);
  }
}
function setScope(name) {
  st.scope = name;
  render();
}

/* ---- canvas drawing --------------------------------------------------------------------- */
function prepCanvas(cv) {
  const dpr = window.devicePixelRatio || 1;
  const w = cv.clientWidth, h = cv.clientHeight;
  if (cv.width !== Math.round(w * dpr) || cv.height !== Math.round(h * dpr)) {
    cv.width = Math.round(w * dpr);
    cv.height = Math.round(h * dpr);
  }
  const ctx = cv.getContext('2d');
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, w, h);
  return { ctx, w, h };
}

function niceStep(raw) {
  const p = Math.pow(10, Math.floor(Math.log10(raw)));
  const f = raw / p;
  return (f <= 1 ? 1 : f <= 2 ? 2 : f <= 2.5 ? 2.5 : f <= 5 ? 5 : 10) * p;
}

/* Split sample indices into runs without gaps (a missing second or more breaks a line). */
function segments(xs) {
  const out = [];
  let a = 0;
  for (let i = 1; i <= xs.length; i++) {
    if (i === xs.length || xs[i] - xs[i - 1] > 2500) {
      out.push([a, i - 1]);
      a = i;
    }
  }
  return xs.length ? out : [];
}

function hexA(hex, a) {
  const n = parseInt(hex.slice(1), 16);
  return 'rgba(' + (n >> 16) + ',' + ((n >> 8) & 255) + ',' + (n & 255) + ',' + a + ')';
}

/* A time-series frame: x is sample time (the newest sample at the right edge), y linear or log. */
function frame(cv, yMax, opts) {
  const { ctx, w, h } = prepCanvas(cv);
  const pad = { l: PAD_L, r: PAD_R, t: 8, b: 22 };
  const pw = Math.max(10, w - pad.l - pad.r), ph = Math.max(10, h - pad.t - pad.b);
  const tEnd = st.samples.length ? st.samples[st.samples.length - 1].t : Date.now();
  const tStart = tEnd - WINDOW_MS;
  const f = { ctx, w, h, pad, pw, ph, tStart, tEnd, log: !!opts.log };
  f.x = (t) => pad.l + ((t - tStart) / WINDOW_MS) * pw;
  if (opts.log) {
    f.lmin = opts.lmin;
    f.lmax = opts.lmax;
    f.y = (v) => pad.t + ph - ((Math.log10(v) - f.lmin) / (f.lmax - f.lmin)) * ph;
  } else {
    f.yMax = yMax;
    f.y = (v) => pad.t + ph - (v / yMax) * ph;
  }
  ctx.font = '11px ' + getComputedStyle(document.body).getPropertyValue('--mono');
  ctx.textBaseline = 'middle';
  /* Horizontal grid and y labels. */
  const ticks = [];
  if (opts.log) {
    for (let d = Math.floor(f.lmin); d <= Math.ceil(f.lmax); d++) {
      for (const m of f.lmax - f.lmin <= 2 ? [1, 2, 5] : [1]) {
        const v = m * Math.pow(10, d), lv = Math.log10(v);
        if (lv >= f.lmin - 1e-9 && lv <= f.lmax + 1e-9) ticks.push([v, fmtAxisMs(v)]);
      }
    }
  } else {
    const step = opts.step;
    for (let v = 0; v <= yMax + 1e-9; v += step) ticks.push([v, v >= 1000 ? (v / 1000).toFixed(v % 1000 ? 1 : 0) + 'k' : String(+v.toFixed(2))]);
  }
  ctx.textAlign = 'right';
  for (const [v, label] of ticks) {
    const y = Math.round(f.y(v)) + 0.5;
    ctx.strokeStyle = v === 0 && !opts.log ? '#2a3a5e' : '#1b2640';
    ctx.lineWidth = 1;
    ctx.beginPath();
    ctx.moveTo(pad.l, y);
    ctx.lineTo(pad.l + pw, y);
    ctx.stroke();
    ctx.fillStyle = '#6d7a96';
    ctx.fillText(label, pad.l - 7, y);
  }
  /* Vertical minute lines and relative time labels. */
  ctx.textAlign = 'center';
  ctx.textBaseline = 'alphabetic';
  for (let m = 4; m >= 0; m--) {
    const t = tEnd - m * 60000;
    const x = Math.round(f.x(t)) + 0.5;
    ctx.strokeStyle = '#17213a';
    ctx.beginPath();
    ctx.moveTo(x, pad.t);
    ctx.lineTo(x, pad.t + ph);
    ctx.stroke();
    ctx.fillStyle = '#6d7a96';
    ctx.textAlign = m === 0 ? 'right' : 'center';
    ctx.fillText(m === 0 ? 'now' : '−' + m + ' min', x, h - 6);
  }
  return f;
}

function emptyNote(f, text, color) {
  const { ctx } = f;
  ctx.fillStyle = color || '#6d7a96';
  ctx.font = '13px ' + getComputedStyle(document.body).fontFamily;
  ctx.textAlign = 'center';
  ctx.textBaseline = 'middle';
  ctx.fillText(text, f.pad.l + f.pw / 2, f.pad.t + f.ph / 2);
}

function drawStack(f, xs, series) {
  const { ctx } = f;
  const n = xs.length;
  let base = new Float64Array(n);
  for (const s of series) {
    const top = new Float64Array(n);
    for (let i = 0; i < n; i++) top[i] = base[i] + s.values[i];
    for (const [a, b] of segments(xs)) {
      const half = b === a ? Math.max(1, f.pw / 600) : 0;
      const grad = ctx.createLinearGradient(0, f.pad.t, 0, f.pad.t + f.ph);
      grad.addColorStop(0, hexA(s.color, 0.78));
      grad.addColorStop(1, hexA(s.color, 0.42));
      ctx.fillStyle = grad;
      ctx.beginPath();
      ctx.moveTo(f.x(xs[a]) - half, f.y(top[a]));
      for (let i = a; i <= b; i++) ctx.lineTo(f.x(xs[i]), f.y(top[i]));
      ctx.lineTo(f.x(xs[b]) + half, f.y(top[b]));
      ctx.lineTo(f.x(xs[b]) + half, f.y(base[b]));
      for (let i = b; i >= a; i--) ctx.lineTo(f.x(xs[i]), f.y(base[i]));
      ctx.lineTo(f.x(xs[a]) - half, f.y(base[a]));
      ctx.closePath();
      ctx.fill();
      /* An edge on top of the band, only where the series has something (else it would
       * trace the band below). */
      ctx.strokeStyle = s.color;
      ctx.lineWidth = 1.2;
      ctx.beginPath();
      const v = s.values;
      for (let i = a; i <= b; i++) {
        const from = i > a && (v[i - 1] > 0 || v[i] > 0); /* draw (i-1) -> i */
        const to = i < b && (v[i] > 0 || v[i + 1] > 0);   /* draw i -> (i+1) */
        if (from) ctx.lineTo(f.x(xs[i]), f.y(top[i]));
        else if (to) ctx.moveTo(f.x(xs[i]), f.y(top[i]));
      }
      ctx.stroke();
    }
    base = top;
  }
}

function drawLines(f, xs, lines) {
  const { ctx } = f;
  for (const ln of lines) {
    ctx.strokeStyle = ln.color;
    ctx.lineWidth = ln.width || 1.6;
    ctx.setLineDash(ln.dash ? [4, 3] : []);
    ctx.globalAlpha = ln.alpha || 1;
    ctx.lineJoin = 'round';
    ctx.beginPath();
    let pen = false;
    for (let i = 0; i < xs.length; i++) {
      const v = ln.values[i];
      const gap = i > 0 && xs[i] - xs[i - 1] > 2500;
      if (!(v > 0) || gap) pen = false;
      if (!(v > 0)) continue;
      const x = f.x(xs[i]), y = f.y(Math.min(Math.max(v, Math.pow(10, f.lmin)), Math.pow(10, f.lmax)));
      if (pen) {
        ctx.lineTo(x, y);
      } else {
        ctx.moveTo(x, y);
        /* A lone point still shows as a short tick. */
        ctx.lineTo(x + 0.01, y);
        pen = true;
      }
    }
    ctx.stroke();
    ctx.setLineDash([]);
    ctx.globalAlpha = 1;
  }
}

function drawHover(f, xs) {
  if (st.hoverT === null || !xs.length) return -1;
  let best = -1, bd = Infinity;
  for (let i = 0; i < xs.length; i++) {
    const d = Math.abs(xs[i] - st.hoverT);
    if (d < bd) { bd = d; best = i; }
  }
  if (best < 0 || bd > 2000) return -1;
  const x = Math.round(f.x(xs[best])) + 0.5;
  f.ctx.strokeStyle = 'rgba(231,236,246,0.55)';
  f.ctx.lineWidth = 1;
  f.ctx.setLineDash([3, 3]);
  f.ctx.beginPath();
  f.ctx.moveTo(x, f.pad.t);
  f.ctx.lineTo(x, f.pad.t + f.ph);
  f.ctx.stroke();
  f.ctx.setLineDash([]);
  return best;
}

function showTip(cv, f, idx, title, rows) {
  const tip = cv.parentElement.querySelector('.tip');
  if (idx < 0) {
    tip.style.display = 'none';
    return;
  }
  tip.textContent = '';
  tip.append(el('div', 't', title));
  for (const [label, color, value] of rows) {
    const r = el('div', 'r');
    const l = el('span');
    const sw = el('i');
    sw.style.background = color;
    l.append(sw, document.createTextNode(label));
    r.append(l, el('b', '', value));
    tip.append(r);
  }
  tip.style.display = 'block';
  const x = f.x(st.samples[idx].t);
  const left = x + 14 + tip.offsetWidth > f.w ? x - 14 - tip.offsetWidth : x + 14;
  tip.style.left = Math.max(0, left) + 'px';
  tip.style.top = '6px';
}

function legend(id, items) {
  const box = $(id);
  box.textContent = '';
  for (const it of items) {
    const s = el('span', it.zero ? 'zero' : '');
    const sw = el('i', it.dash ? 'dash' : '');
    if (it.dash) sw.style.borderColor = it.color; else sw.style.background = it.color;
    s.append(sw, document.createTextNode(it.label));
    if (it.value !== undefined) s.append(el('b', '', it.value));
    box.append(s);
  }
}

/* ---- the three charts ------------------------------------------------------------------- */
function drawThroughput() {
  const cv = $('c-throughput');
  const tiers = scopeTiers();
  const xs = st.samples.map((s) => s.t);
  const series = GROUPS.map(([key, label, color, keys]) => ({
    key, label, color, values: st.samples.map((s) => sumOutcomes(s, tiers, keys)),
  }));
  let max = 0;
  for (let i = 0; i < xs.length; i++) max = Math.max(max, series.reduce((a, s) => a + s.values[i], 0));
  const step = niceStep(Math.max(max, 4) / 4);
  const f = frame(cv, Math.ceil(Math.max(max, 1) * 1.05 / step) * step, { step });
  drawStack(f, xs, series);
  if (max === 0) emptyNote(f, st.samples.length ? 'No requests in the last 5 minutes' : 'Waiting for samples…');
  const idx = drawHover(f, xs);
  const n = xs.length - 1;
  legend('lg-throughput', series.map((s) => ({
    label: s.label, color: s.color, value: n >= 0 ? fmtRate(s.values[n]) + '/s' : '–', zero: n < 0 || !s.values.some((v) => v > 0),
  })));
  showTip(cv, f, idx, idx >= 0 ? fmtClock(xs[idx]) + ' · ' + (st.scope === 'all' ? 'all tiers' : st.scope) : '',
    idx >= 0 ? series.map((s) => [s.label, s.color, fmtInt(s.values[idx]) + '/s']) : []);
  cv.dataset.points = xs.length;
  cv.dataset.max = max;
}

function drawRejections() {
  const cv = $('c-rejections');
  const tiers = scopeTiers();
  const xs = st.samples.map((s) => s.t);
  const series = REASONS.map(([key, label, color]) => ({
    key, label, color, values: st.samples.map((s) => sumOutcomes(s, tiers, [key])),
  }));
  let max = 0;
  for (let i = 0; i < xs.length; i++) max = Math.max(max, series.reduce((a, s) => a + s.values[i], 0));
  const step = niceStep(Math.max(max, 4) / 4);
  const f = frame(cv, Math.ceil(Math.max(max, 1) * 1.05 / step) * step, { step });
  drawStack(f, xs, series);
  if (max === 0)
    emptyNote(f, st.samples.length ? 'No rejections: every request was admitted' : 'Waiting for samples…',
      st.samples.length ? '#5fbf9a' : null);
  const idx = drawHover(f, xs);
  legend('lg-rejections', series.map((s) => {
    const sum = s.values.reduce((a, v) => a + v, 0);
    return { label: s.label, color: s.color, value: fmtInt(sum), zero: sum === 0 };
  }));
  showTip(cv, f, idx, idx >= 0 ? fmtClock(xs[idx]) + ' · ' + (st.scope === 'all' ? 'all tiers' : st.scope) : '',
    idx >= 0 ? series.filter((s) => s.values[idx] > 0).map((s) => [s.label, s.color, fmtInt(s.values[idx]) + '/s'])
      .concat(series.every((s) => !s.values[idx]) ? [['none', '#334155', '0']] : []) : []);
  cv.dataset.points = xs.length;
  cv.dataset.max = max;
}

function drawLatency() {
  const cv = $('c-latency');
  const tiers = scopeTiers();
  const xs = st.samples.map((s) => s.t);
  const lines = [];
  const single = tiers.length === 1;
  for (const t of tiers) {
    const color = tierColor(t);
    const p50 = st.samples.map((s) => (s.tiers[t] ? s.tiers[t].latencyMs.p50 : 0));
    const p99 = st.samples.map((s) => (s.tiers[t] ? s.tiers[t].latencyMs.p99 : 0));
    lines.push({ tier: t, q: 'p99', color: single ? '#f472b6' : color, values: p99, width: 1.8 });
    lines.push({ tier: t, q: 'p50', color: single ? '#7dd3fc' : color, values: p50, width: 1.2, dash: true, alpha: single ? 0.9 : 0.55 });
  }
  /* The process's: how late the event loops read what became ready, counted in no request. */
  const lagValues = st.samples.map((s) => (s.eventLoops ? s.eventLoops.lagMs.p99 : 0));
  lines.push({ tier: null, q: 'lag', color: '#8d9ab5', values: lagValues, width: 1.2, alpha: 0.8 });
  let lo = Infinity, hi = 0;
  for (const ln of lines) for (const v of ln.values) if (v > 0) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
  const any = hi > 0;
  const lmin = any ? Math.floor(Math.log10(lo)) : -1;
  let lmax = any ? Math.ceil(Math.log10(hi)) : 2;
  if (lmax <= lmin) lmax = lmin + 1;
  const f = frame(cv, 0, { log: true, lmin, lmax });
  drawLines(f, xs, lines);
  if (!any) emptyNote(f, st.samples.length ? 'No requests in the last 5 minutes' : 'Waiting for samples…');
  const idx = drawHover(f, xs);
  const lastOf = (vals) => {
    for (let i = vals.length - 1; i >= 0; i--) if (vals[i] > 0) return vals[i];
    return 0;
  };
  const lagLine = lines[lines.length - 1];
  const lagItem = { label: 'loop lag p99', color: lagLine.color, value: fmtMs(lastOf(lagValues)), zero: !lastOf(lagValues) };
  if (single) {
    legend('lg-latency', lines.filter((ln) => ln !== lagLine).map((ln) => ({ label: ln.q, color: ln.color, dash: ln.dash, value: fmtMs(lastOf(ln.values)), zero: !lastOf(ln.values) })).concat([lagItem]));
  } else {
    const items = [];
    for (const t of tiers) {
      const p99 = lines.find((l) => l.tier === t && l.q === 'p99');
      const p50 = lines.find((l) => l.tier === t && l.q === 'p50');
      items.push({ label: t, color: tierColor(t), value: fmtMsShort(lastOf(p50.values)) + ' / ' + fmtMsShort(lastOf(p99.values)) + ' ms', zero: !lastOf(p99.values) });
    }
    items.push(lagItem);
    legend('lg-latency', items);
  }
  showTip(cv, f, idx, idx >= 0 ? fmtClock(xs[idx]) + ' · p50 / p99' : '',
    idx >= 0 ? tiers.map((t) => {
      const s = st.samples[idx].tiers[t];
      return [t, single ? '#f472b6' : tierColor(t), s && s.latencyMs.p99 > 0 ? fmtMsShort(s.latencyMs.p50) + ' / ' + fmtMs(s.latencyMs.p99) : 'idle'];
    }).concat([['loop lag p99', lagLine.color, fmtMs(lagValues[idx])]]) : []);
  cv.dataset.points = xs.length;
}

function drawSpark(cv, tier) {
  const { ctx, w, h } = prepCanvas(cv);
  if (!st.samples.length) return;
  const tEnd = st.samples[st.samples.length - 1].t;
  const x = (t) => ((t - (tEnd - WINDOW_MS)) / WINDOW_MS) * w;
  let max = 1;
  const ok = [], bad = [];
  for (const s of st.samples) {
    const o = sumOutcomes(s, [tier], ['ok']);
    const tt = total(s, [tier]);
    ok.push(o);
    bad.push(tt - o);
    max = Math.max(max, tt);
  }
  const xs = st.samples.map((s) => s.t);
  const y = (v) => h - 1 - (v / max) * (h - 3);
  const area = (lo, hi, color) => {
    for (const [a, b] of segments(xs)) {
      ctx.beginPath();
      ctx.moveTo(x(xs[a]), y(hi[a]));
      for (let i = a; i <= b; i++) ctx.lineTo(x(xs[i]), y(hi[i]));
      for (let i = b; i >= a; i--) ctx.lineTo(x(xs[i]), y(lo[i]));
      ctx.closePath();
      ctx.fillStyle = color;
      ctx.fill();
    }
  };
  const zero = ok.map(() => 0);
  const top = ok.map((v, i) => v + bad[i]);
  ctx.strokeStyle = '#1d2944';
  ctx.beginPath();
  ctx.moveTo(0, h - 0.5);
  ctx.lineTo(w, h - 0.5);
  ctx.stroke();
  area(zero, ok, 'rgba(52,211,153,0.55)');
  area(ok, top, 'rgba(251,146,60,0.75)');
}
