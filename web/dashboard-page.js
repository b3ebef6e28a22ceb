/*
 * dashboard-page.js: the page as a whole, and its start (the last of the page's scripts): the
 * header (health pill, totals, the machine-readable <body data-state ...> the tests read),
 * render (every tier card, the fleet panel, the header, the charts), the charts' shared hover
 * cursor and redraw on resize; then it renders once and starts poll (dashboard-state.js) and
 * pollWho (dashboard-tenants.js). Needs every other script loaded before it.
 */
'use strict';

function renderHeader() {
  const body = document.body;
  const connected = st.failures === 0 && st.updates > 0;
  body.dataset.state = connected ? 'live' : st.updates === 0 && st.failures === 0 ? 'connecting' : 'disconnected';
  body.dataset.updates = st.updates;
  body.dataset.failures = st.failures;
  body.dataset.samples = st.samples.length;
  body.dataset.lastSeq = st.last;
  body.dataset.instances = [...st.inst.values()].filter((x) => x.samples.length).length;
  const pill = $('health');
  const text = pill.querySelector('span');
  const open = st.tiers.filter((t) => cards.get(t) && cards.get(t).c.dataset.breaker === 'OPEN');
  const half = st.tiers.filter((t) => cards.get(t) && cards.get(t).c.dataset.breaker === 'HALF_OPEN');
  if (!connected && st.failures) {
    pill.className = 'pill bad';
    text.textContent = 'Disconnected · retrying' + (st.failures > 1 ? ' (' + st.failures + ' attempts)' : '');
  } else if (!st.server) {
    pill.className = 'pill';
    text.textContent = 'Connecting…';
  } else if (st.server.draining) {
    pill.className = 'pill warn';
    text.textContent = 'Shutting down: finishing in-flight requests';
  } else if (!st.server.healthy) {
    pill.className = 'pill bad';
    text.textContent = 'Database unreachable' + (st.server.reason ? ': ' + st.server.reason : '');
  } else if (open.length) {
    pill.className = 'pill warn';
    text.textContent = 'Healthy · breaker open: ' + open.join(', ');
  } else if (half.length) {
    pill.className = 'pill warn';
    text.textContent = 'Healthy · breaker testing: ' + half.join(', ');
  } else {
    pill.className = 'pill ok';
    text.textContent = 'Healthy · database probe ' + (st.server.dbProbeMs > 0 ? fmtMs(st.server.dbProbeMs) : 'ok');
  }
  pill.title = text.textContent;
  const lastS = st.samples[st.samples.length - 1];
  if (lastS) {
    const t = total(lastS, st.tiers);
    const ok = sumOutcomes(lastS, st.tiers, ['ok']);
    const rej = sumOutcomes(lastS, st.tiers, REASONS.map((r) => r[0]).concat(['unavailable']));
    $('s-rps').textContent = fmtRate(t);
    $('s-ok').textContent = t ? Math.floor((ok / t) * 1000) / 10 + '%' : '–';
    $('s-rej').textContent = fmtRate(rej);
  }
  if (st.server) {
    $('s-inflight').textContent = fmtInt(st.server.inFlight);
    $('s-lag').textContent = lastS && lastS.eventLoops ? fmtMs(lastS.eventLoops.lagMs.p99) : '–';
    $('s-uptime').textContent = fmtDuration(st.server.nowMs - st.server.startedMs);
    $('s-version').textContent = st.server.version;
  }
  $('updated').textContent = st.lastOk
    ? (connected ? 'live · ' : 'last data ') + fmtClock(st.lastOk) + ' · ' + st.samples.length + ' samples · ' +
      (+body.dataset.instances > 1 ? body.dataset.instances + ' instances, summed' : 'instance ' + st.instance)
    : 'waiting for the first sample…';
  for (const b of $('scope').children) b.classList.toggle('on', b.dataset.scope === st.scope);
}

function renderCharts() {
  drawThroughput();
  drawRejections();
  drawLatency();
}

function render() {
  for (const name of st.tiers) renderTier(name);
  renderFleet();
  renderHeader();
  renderCharts();
}

/* Hover: one time cursor shared by the three charts. */
for (const id of ['c-throughput', 'c-rejections', 'c-latency']) {
  const cv = $(id);
  cv.addEventListener('mousemove', (ev) => {
    if (!st.samples.length) return;
    const r = cv.getBoundingClientRect();
    const pw = r.width - PAD_L - PAD_R;
    const tEnd = st.samples[st.samples.length - 1].t;
    st.hoverT = tEnd - WINDOW_MS + ((ev.clientX - r.left - PAD_L) / pw) * WINDOW_MS;
    renderCharts();
  });
  cv.addEventListener('mouseleave', () => {
    st.hoverT = null;
    renderCharts();
  });
}
let resizeTimer = 0;
window.addEventListener('resize', () => {
  clearTimeout(resizeTimer);
  resizeTimer = setTimeout(render, 100);
});

render();
poll();
pollWho();
