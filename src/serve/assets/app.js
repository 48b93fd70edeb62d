// Conductor's dashboard: plain JavaScript, no framework, no build step. The server computes
// every status (the run state is the engine's own reading of the log); this page fetches it,
// follows a run's server-sent events, draws the plan and the attempts on canvases, and sends
// the actions the command line would run.
'use strict';

const $ = (sel, root = document) => root.querySelector(sel);
const main = $('#main');
const STATUS_ORDER = ['running', 'retrying', 'waiting_decision', 'failed', 'queued', 'deferred',
  'pending', 'cancelled', 'skipped', 'completed'];

// ---------------------------------------------------------------------------------------
// Talking to the server

let token = sessionStorage.getItem('conductor-token') || '';

async function api(path, options = {}) {
  const headers = Object.assign({}, options.headers || {});
  if (token) headers['x-conductor-token'] = token;
  if (options.body !== undefined) headers['content-type'] = 'application/json';
  const res = await fetch('/api' + path, Object.assign({}, options, { headers }));
  const text = await res.text();
  let body = null;
  try { body = text ? JSON.parse(text) : null; } catch (_) { body = text; }
  if (res.status === 401) { askToken(); throw new Error('this dashboard needs its token'); }
  if (!res.ok) throw new Error((body && body.error) || res.statusText);
  return body;
}

function post(path, body) {
  return api(path, { method: 'POST', body: JSON.stringify(body || {}) });
}

function askToken() {
  stopAll();
  main.innerHTML = '';
  const form = el('form', { class: 'token-form panel' },
    el('h1', {}, 'Token'),
    el('p', { class: 'muted' }, 'This dashboard was started with --token. Enter it to continue.'),
    el('input', { type: 'password', name: 'token', autocomplete: 'off' }),
    el('button', { class: 'primary', type: 'submit' }, 'Continue'));
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    token = form.token.value.trim();
    sessionStorage.setItem('conductor-token', token);
    route();
  });
  main.append(form);
}

function toast(text, bad) {
  const t = $('#toast');
  t.textContent = text;
  t.className = bad ? 'bad' : '';
  t.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { t.hidden = true; }, bad ? 8000 : 3500);
}

// ---------------------------------------------------------------------------------------
// Small DOM helpers (text is always set as text: nothing from a run is parsed as HTML)

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

function badge(status) {
  return el('span', { class: 'status', 'data-s': status }, status.replace('_', ' '));
}

function ms(n) {
  if (n === null || n === undefined) return '-';
  if (n < 1000) return n + 'ms';
  if (n < 60000) return (n / 1000).toFixed(1) + 's';
  return Math.floor(n / 60000) + 'm' + Math.round((n % 60000) / 1000) + 's';
}

function time(t) { return t ? new Date(t).toLocaleTimeString() : '-'; }

function cssVar(name) {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
}

function statusColor(s) { return cssVar('--s-' + (s === 'in_progress' ? 'running' : s)) || '#ccc'; }

// ---------------------------------------------------------------------------------------
// Routing: #/runs?status=…&workflow=…, #/run/ID?pass=N&task=T, #/dlq, #/decisions

let stoppers = [];
function stopAll() { for (const s of stoppers) s(); stoppers = []; }
function every(msDelay, f) {
  let alive = true;
  const tick = async () => { if (!alive) return; try { await f(); } catch (_) { } if (alive) setTimeout(tick, msDelay); };
  tick();
  stoppers.push(() => { alive = false; });
}

function parseHash() {
  const h = location.hash.replace(/^#/, '') || '/runs';
  const [path, query] = h.split('?');
  return { parts: path.split('/').filter(Boolean).map(decodeURIComponent), query: new URLSearchParams(query || '') };
}

function setQuery(q) {
  const { parts } = parseHash();
  const s = q.toString();
  history.replaceState(null, '', '#/' + parts.map(encodeURIComponent).join('/') + (s ? '?' + s : ''));
}

async function route() {
  stopAll();
  closeDrawer(true);
  const { parts, query } = parseHash();
  for (const a of document.querySelectorAll('[data-nav]')) {
    a.classList.toggle('active', a.dataset.nav === (parts[0] === 'run' ? 'runs' : parts[0]));
  }
  main.innerHTML = '';
  try {
    if (parts[0] === 'run' && parts[1]) await runScreen(parts[1], query);
    else if (parts[0] === 'dlq') await dlqScreen();
    else if (parts[0] === 'decisions') await decisionsScreen();
    else await runsScreen(query);
  } catch (e) {
    main.append(el('p', { class: 'error' }, e.message));
  }
}

window.addEventListener('hashchange', route);

// Badges in the header: questions and dead letters anywhere in the store.
async function refreshBadges() {
  const [questions, letters] = await Promise.all([api('/decisions'), api('/dlq')]);
  const q = $('#badge-decisions'), d = $('#badge-dlq');
  q.textContent = questions.length; q.hidden = !questions.length; q.dataset.count = questions.length;
  d.textContent = letters.length; d.hidden = !letters.length; d.dataset.count = letters.length;
  d.classList.add('dlq');
}

// ---------------------------------------------------------------------------------------
// (a) Runs

async function runsScreen(query) {
  const status = el('select', { id: 'filter-status' },
    el('option', { value: '' }, 'any status'),
    ...['pending', 'in_progress', 'waiting', 'completed', 'failed', 'cancelled']
      .map((s) => el('option', { value: s }, s.replace('_', ' '))));
  status.value = query.get('status') || '';
  const workflow = el('input', { id: 'filter-workflow', placeholder: 'workflow', value: query.get('workflow') || '' });
  const body = el('tbody');
  const onFilter = () => {
    const q = new URLSearchParams();
    if (status.value) q.set('status', status.value);
    if (workflow.value.trim()) q.set('workflow', workflow.value.trim());
    setQuery(q);
    load();
  };
  status.addEventListener('change', onFilter);
  workflow.addEventListener('change', onFilter);
  main.append(el('h1', {}, 'Runs'),
    el('div', { class: 'filters' }, 'Filter', status, workflow),
    el('table', { id: 'runs' },
      el('thead', {}, el('tr', {}, ...['Run', 'Workflow', 'Status', 'Needs', 'Phase', 'Pass', 'Done / failed / tasks', 'Started', 'Duration'].map((h) => el('th', {}, h)))),
      body));
  const load = async () => {
    const q = new URLSearchParams();
    if (status.value) q.set('status', status.value);
    if (workflow.value.trim()) q.set('workflow', workflow.value.trim());
    const runs = await api('/runs?' + q.toString());
    body.replaceChildren(...runs.slice().reverse().map((r) => el('tr', { 'data-run': r.id, 'data-status': r.status },
      el('td', {}, el('a', { href: '#/run/' + encodeURIComponent(r.id) }, r.id)),
      el('td', {}, r.workflow),
      el('td', {}, badge(r.status)),
      el('td', {},
        r.waiting.length ? el('span', { class: 'badge badge-waiting', 'data-count': r.waiting.length, title: 'waiting for a decision on ' + r.waiting.join(', ') }, r.waiting.length + ' waiting') : null,
        ' ',
        r.dead_letters ? el('span', { class: 'badge dlq badge-dlq', 'data-count': r.dead_letters, title: 'dead letters' }, r.dead_letters + ' dead') : null),
      el('td', {}, r.phase || '-'),
      el('td', {}, r.loop),
      el('td', {}, `${r.completed} / ${r.failed} / ${r.tasks}`),
      el('td', {}, r.started_at.replace('T', ' ').replace(/\.\d+Z$/, 'Z')),
      el('td', {}, r.duration))));
    if (!runs.length) body.append(el('tr', {}, el('td', { colspan: 9, class: 'muted' }, 'no runs match')));
    main.dataset.loaded = 'runs';
  };
  every(1500, async () => { await load(); await refreshBadges(); });
}

// ---------------------------------------------------------------------------------------
// (b) A run

let view = null; // the run screen's model

async function runScreen(id, query) {
  const board = await api('/runs/' + encodeURIComponent(id) + '/board');
  view = makeView(board, query);
  renderRun();
  follow();
  stoppers.push(() => { if (view && view.source) view.source.close(); view = null; });
  every(3000, refreshBadges);
  const task = query.get('task');
  if (task) openDrawer(task);
}

function makeView(board, query) {
  const layout = board.layout;
  const nodeIndex = new Map();
  layout.nodes.forEach((n, i) => nodeIndex.set((n.kind === 'gate' ? 'gate:' : 'task:') + n.name, i));
  const preds = layout.nodes.map(() => []);
  for (const [a, b] of layout.edges) preds[b].push(a);
  const rows = new Map();
  board.tasks.forEach((r) => rows.set(r.name, r));
  const byNode = layout.nodes.map(() => []);
  const placed = new Set();
  for (const r of board.tasks) place(nodeIndex, byNode, placed, r);
  const passWanted = query.has('pass') ? Number(query.get('pass')) : null;
  return {
    board, layout, nodeIndex, preds, rows, byNode, placed,
    order: board.tasks.map((r) => r.name),
    orderIndex: new Map(board.tasks.map((r, i) => [r.name, i])),
    run: board.run,
    bars: board.timeline.attempts,
    seqs: [],
    lastSeq: board.run.last_seq,
    pass: passWanted !== null && passWanted < board.run.pass ? passWanted : null,
    dag: { scale: 1, x: 0, y: 0, fitted: false },
    dirty: true,
  };
}

// The status a node is drawn with in the pass shown.
function taskStatus(name) {
  const v = view;
  if (v.pass !== null) {
    const p = v.board.passes.find((p) => p.pass === v.pass);
    const i = v.orderIndex.get(name);
    return p && i !== undefined ? p.statuses[i] : 'pending';
  }
  const r = v.rows.get(name);
  return r ? r.status : 'pending';
}

function gateStatus(phase) {
  const pass = view.pass === null ? view.run.pass : view.pass;
  const g = view.board.timeline.gates.filter((g) => g.phase === phase && g.pass === pass).pop();
  return g ? (g.passed ? 'completed' : 'failed') : 'pending';
}

// A pending task whose predecessors are all done waits for an instance: `queued`.
function nodeStatus(i) {
  const n = view.layout.nodes[i];
  if (n.kind === 'gate') return { status: gateStatus(n.name), counts: null };
  const names = view.byNode[i];
  if (!names.length) return { status: 'pending', counts: null };
  const counts = {};
  for (const name of names) {
    let s = taskStatus(name);
    if (s === 'pending' && view.pass === null && isReady(i)) s = 'queued';
    counts[s] = (counts[s] || 0) + 1;
  }
  const status = STATUS_ORDER.find((s) => counts[s]) || 'pending';
  return { status, counts: names.length > 1 ? counts : null, total: names.length };
}

function isReady(i) {
  const n = view.layout.nodes[i];
  if (view.run.phase !== n.phase || view.run.status !== 'in_progress') return false;
  return view.preds[i].every((p) => {
    const pn = view.layout.nodes[p];
    if (pn.kind === 'gate') return true;
    return view.byNode[p].every((name) => ['completed', 'skipped', 'failed', 'cancelled'].includes(taskStatus(name)));
  });
}

function renderRun() {
  const v = view;
  const r = v.run;
  const passSelect = el('select', { id: 'pass-select', 'data-passes': r.pass + 1 });
  for (let p = 0; p <= r.pass; p++) {
    passSelect.append(el('option', { value: p === r.pass ? 'current' : p }, p === r.pass ? `pass ${p + 1} (current)` : `pass ${p + 1}`));
  }
  passSelect.value = v.pass === null ? 'current' : String(v.pass);
  passSelect.addEventListener('change', () => {
    v.pass = passSelect.value === 'current' ? null : Number(passSelect.value);
    const q = parseHash().query;
    if (v.pass === null) q.delete('pass'); else q.set('pass', v.pass);
    setQuery(q);
    v.dirty = true;
    renderSide();
    renderTable();
  });
  const dag = el('canvas', { id: 'dag', 'data-nodes': v.layout.nodes.length, 'data-drawn': 0 });
  const gantt = el('canvas', { id: 'gantt', 'data-bars': v.bars.length });
  main.replaceChildren(
    el('div', { class: 'runhead', id: 'run', 'data-run': r.id, 'data-status': r.status, 'data-pass': r.pass },
      el('h1', {}, r.workflow, ' ', el('span', { class: 'muted' }, r.id)),
      badge(r.status),
      el('span', { class: 'meta', id: 'run-meta' }),
      el('label', {}, 'Pass ', passSelect)),
    el('div', { id: 'run-error', class: 'error' }),
    el('div', { class: 'grid' },
      el('div', {},
        el('div', { class: 'canvas-wrap' }, dag,
          el('div', { class: 'canvas-tools' },
            el('button', { onclick: () => { v.dag.fitted = false; v.dirty = true; }, title: 'fit the whole plan' }, 'Fit'))),
        legend(),
        el('div', { id: 'hover' }),
        el('h2', {}, 'Attempts per agent instance'),
        el('div', { class: 'canvas-wrap' }, gantt),
        el('div', { class: 'legend' }, el('span', {}, 'bars: attempts (green ok, red error, blue running); amber after a bar: its backoff before the retry')),
        el('h2', {}, 'Tasks'),
        el('div', { class: 'vtable', id: 'tasks' })),
      el('div', { id: 'side' })));
  // The legend's swatches are set as properties (a style attribute would need a looser CSP).
  for (const i of main.querySelectorAll('.legend i[data-s]')) i.style.background = statusColor(i.dataset.s);
  // As tall as the plan needs, within limits: a one-row plan needs no 400 pixels.
  dag.style.height = Math.max(160, Math.min(480, PAD * 2 + Math.max(1, v.layout.rows) * CELL_H + 40)) + 'px';
  setupDag(dag);
  setupGantt(gantt);
  renderHead();
  renderSide();
  renderTable();
  const frame = () => {
    if (!view || view !== v) return;
    if (v.dirty) { v.dirty = false; drawDag(); drawGantt(); }
    requestAnimationFrame(frame);
  };
  requestAnimationFrame(frame);
}

function legend() {
  return el('div', { class: 'legend' }, ...STATUS_ORDER.map((s) =>
    el('span', {}, el('i', { 'data-s': s }), s === 'queued' ? 'waiting for an instance' : s.replace('_', ' '))));
}

function renderHead() {
  const r = view.run;
  const head = $('#run');
  if (!head) return;
  head.dataset.status = r.status;
  head.dataset.pass = r.pass;
  head.querySelector('.status').replaceWith(badge(r.status));
  const u = r.usage;
  const tokens = u.calls ? ` · ${u.calls} LLM calls, ${u.input_tokens} in + ${u.output_tokens} out tokens` : '';
  $('#run-meta').textContent = `phase ${r.phase || '-'} · started ${time(r.started_at)}` +
    (r.completed_at ? ` · took ${ms(r.completed_at - r.started_at)}` : '') + tokens +
    (r.dry_run ? ' · dry run' : '');
  $('#run-error').textContent = r.error || '';
}

// The side panel: what needs a person, decisions of gates and feedback, tokens.
function renderSide() {
  const side = $('#side');
  if (!side) return;
  const v = view, b = v.board, t = b.timeline;
  const pass = v.pass === null ? v.run.pass : v.pass;
  const parts = [];
  if (b.questions.length) {
    parts.push(el('h2', {}, 'Waiting for a decision'), questionList(b.questions));
  }
  if (b.dead_letters.length) {
    parts.push(el('h2', {}, 'Dead letters'), deadLetterList(b.dead_letters));
  }
  parts.push(el('h2', {}, `Decisions in pass ${pass + 1}`));
  const decisions = el('ul', { class: 'plain decisions', id: 'decisions' });
  for (const g of t.gates.filter((g) => g.pass === pass)) {
    decisions.append(el('li', { 'data-gate': g.phase, 'data-passed': g.passed },
      badge(g.passed ? 'passed' : 'failed'), ` gate ${g.phase}: ${g.reason}`, el('div', { class: 'rule' }, g.rule)));
  }
  for (const f of t.feedback.filter((f) => f.pass === pass)) {
    decisions.append(el('li', { 'data-feedback': f.severity },
      badge(f.severity === 'ok' ? 'passed' : 'failed'), ` feedback (${f.severity}): ${f.summary}`, el('div', { class: 'rule' }, f.rule)));
  }
  for (const d of t.decisions.filter((d) => d.pass === pass)) {
    decisions.append(el('li', { 'data-decided': d.task }, `${d.task}: ${d.decision}`, el('div', { class: 'rule' }, `by ${d.by} at ${time(d.at)}`)));
  }
  if (!decisions.children.length) decisions.append(el('li', { class: 'muted' }, 'none yet'));
  parts.push(decisions);
  parts.push(el('h2', {}, `Tokens in pass ${pass + 1}`), tokenTable(pass));
  side.replaceChildren(...parts);
}

function tokenTable(pass) {
  const tokens = (view.board.timeline.tokens[pass]) || {};
  const names = Object.keys(tokens).sort();
  if (!names.length) return el('p', { class: 'muted', id: 'tokens' }, 'no LLM calls in this pass');
  // Cost at the prices of conductor.toml; replayed calls cost nothing, unpriced ones are counted.
  const cost = (t) => {
    if (t.replayed === t.calls) return 'replayed';
    const usd = t.usd > 0 || t.unpriced < t.calls ? `$${Number(t.usd).toFixed(4)}` : '';
    const unpriced = t.unpriced ? `${t.unpriced} unpriced` : '';
    return [usd, unpriced].filter(Boolean).join(' + ') || '-';
  };
  return el('table', { id: 'tokens' },
    el('thead', {}, el('tr', {}, el('th', {}, 'Task'), el('th', {}, 'Calls'), el('th', {}, 'In'), el('th', {}, 'Out'), el('th', {}, 'Cost'))),
    el('tbody', {}, ...names.map((n) => el('tr', { 'data-task': n },
      el('td', {}, n), el('td', {}, tokens[n].calls), el('td', {}, tokens[n].input), el('td', {}, tokens[n].output),
      el('td', { class: 'cost' }, cost(tokens[n]))))));
}

// The tasks table, virtualised: only the rows in view exist, so 10,000 tasks scroll freely.
const ROW = 26;
function renderTable() {
  const box = $('#tasks');
  if (!box) return;
  const v = view;
  if (!box.dataset.ready) {
    box.dataset.ready = '1';
    box.addEventListener('scroll', () => requestAnimationFrame(renderTable));
    box.addEventListener('click', (e) => {
      const row = e.target.closest('[data-task]');
      if (row) openDrawer(row.dataset.task);
    });
  }
  const names = v.order;
  const first = Math.max(0, Math.floor(box.scrollTop / ROW) - 1);
  const count = Math.ceil(box.clientHeight / ROW) + 3;
  const head = el('div', { class: 'vrow vhead' },
    ...['task', 'phase', 'status', 'tries', 'agent', 'time', 'error / note'].map((h) => el('span', {}, h)));
  const spacer = el('div', {});
  spacer.style.height = (names.length + 1) * ROW + 'px';
  const rows = [];
  for (let i = first; i < Math.min(names.length, first + count); i++) {
    const r = v.rows.get(names[i]);
    let s = taskStatus(names[i]);
    const ni = v.nodeIndex.get('task:' + r.node);
    if (s === 'pending' && v.pass === null && ni !== undefined && isReady(ni)) s = 'queued';
    const row = el('div', { class: 'vrow', 'data-task': r.name, 'data-status': s },
      el('span', { title: r.name }, r.name), el('span', {}, r.phase), el('span', {}, badge(s)),
      el('span', {}, r.attempts), el('span', {}, r.agent || '-'), el('span', {}, ms(r.duration_ms)),
      el('span', { title: r.error || r.deferred || '' }, r.error || r.deferred || (r.skip ? 'skipped: ' + r.skip : '')));
    row.style.top = (i + 1) * ROW + 'px';
    rows.push(row);
  }
  box.replaceChildren(head, spacer, ...rows);
  box.dataset.rows = names.length;
}

// ---------------------------------------------------------------------------------------
// The plan on a canvas: layered layout from the server, drawn with viewport culling.

const CELL_W = 150, CELL_H = 34, BOX_W = 124, BOX_H = 24, PAD = 30;

function setupDag(canvas) {
  const v = view;
  let drag = null;
  canvas.addEventListener('mousedown', (e) => { drag = { x: e.clientX, y: e.clientY, ox: v.dag.x, oy: v.dag.y, moved: false }; });
  window.addEventListener('mouseup', () => { drag = null; });
  canvas.addEventListener('mousemove', (e) => {
    if (drag) {
      const dx = e.clientX - drag.x, dy = e.clientY - drag.y;
      if (Math.abs(dx) + Math.abs(dy) > 3) drag.moved = true;
      v.dag.x = drag.ox + dx; v.dag.y = drag.oy + dy; v.dirty = true;
      return;
    }
    const i = hit(canvas, e);
    $('#hover').textContent = i === null ? '' : describeNode(i);
  });
  canvas.addEventListener('click', (e) => {
    if (drag && drag.moved) return;
    const i = hit(canvas, e);
    if (i === null) return;
    const n = v.layout.nodes[i];
    if (n.kind === 'task') openDrawer(v.byNode[i].length === 1 ? v.byNode[i][0] : n.name, v.byNode[i]);
  });
  canvas.addEventListener('wheel', (e) => {
    e.preventDefault();
    const rect = canvas.getBoundingClientRect();
    const mx = e.clientX - rect.left, my = e.clientY - rect.top;
    const k = Math.exp(-e.deltaY * 0.0015);
    const scale = Math.min(4, Math.max(0.02, v.dag.scale * k));
    v.dag.x = mx - (mx - v.dag.x) * (scale / v.dag.scale);
    v.dag.y = my - (my - v.dag.y) * (scale / v.dag.scale);
    v.dag.scale = scale; v.dirty = true;
  }, { passive: false });
  new ResizeObserver(() => { v.dirty = true; }).observe(canvas);
}

function nodeXY(n) { return [PAD + n.col * CELL_W, PAD + n.row * CELL_H]; }

function hit(canvas, e) {
  const v = view;
  const rect = canvas.getBoundingClientRect();
  const x = (e.clientX - rect.left - v.dag.x) / v.dag.scale, y = (e.clientY - rect.top - v.dag.y) / v.dag.scale;
  const col = Math.floor((x - PAD + (CELL_W - BOX_W) / 2) / CELL_W);
  // Nodes of one column: the layout has at most a few dozen per column.
  for (const i of columnNodes(col)) {
    const [nx, ny] = nodeXY(v.layout.nodes[i]);
    if (x >= nx && x <= nx + BOX_W && y >= ny && y <= ny + BOX_H) return i;
  }
  return null;
}

function columnNodes(col) {
  const v = view;
  if (!v.columns) {
    v.columns = [];
    v.layout.nodes.forEach((n, i) => { (v.columns[n.col] = v.columns[n.col] || []).push(i); });
  }
  return v.columns[col] || [];
}

function describeNode(i) {
  const n = view.layout.nodes[i];
  if (n.kind === 'gate') return `gate of phase ${n.name}: ${gateStatus(n.name)} · ${n.rule || ''}`;
  const s = nodeStatus(i);
  const counts = s.counts ? ' · ' + Object.entries(s.counts).map(([k, c]) => `${c} ${k}`).join(', ') : '';
  return `${n.name} on ${n.agent || '?'} · ${s.status}${counts}`;
}

function drawDag() {
  const canvas = $('#dag');
  if (!canvas) return;
  const started = performance.now();
  const v = view, L = v.layout;
  const dpr = window.devicePixelRatio || 1;
  const w = canvas.clientWidth, h = canvas.clientHeight;
  if (canvas.width !== Math.round(w * dpr)) { canvas.width = Math.round(w * dpr); canvas.height = Math.round(h * dpr); }
  const width = PAD * 2 + L.columns * CELL_W, height = PAD * 2 + Math.max(1, L.rows) * CELL_H + 20;
  if (!v.dag.fitted && w > 0) {
    v.dag.scale = Math.min(1.2, w / width, h / height);
    if (v.dag.scale < 0.15) v.dag.scale = Math.min(1, h / height); // very long plans: fit the height, scroll sideways
    v.dag.x = 0; v.dag.y = Math.max(0, (h - height * v.dag.scale) / 2); v.dag.fitted = true;
  }
  const ctx = canvas.getContext('2d');
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, w, h);
  ctx.translate(v.dag.x, v.dag.y);
  ctx.scale(v.dag.scale, v.dag.scale);
  // The visible region in layout coordinates.
  const x0 = -v.dag.x / v.dag.scale, y0 = -v.dag.y / v.dag.scale;
  const x1 = x0 + w / v.dag.scale, y1 = y0 + h / v.dag.scale;
  const c0 = Math.max(0, Math.floor((x0 - PAD) / CELL_W) - 1), c1 = Math.ceil((x1 - PAD) / CELL_W) + 1;
  // Phase bands.
  ctx.font = '11px system-ui, sans-serif';
  for (const p of L.phases) {
    const px = PAD + p.first_col * CELL_W - 12, pw = (p.last_col - p.first_col) * CELL_W + BOX_W + 24;
    if (px > x1 || px + pw < x0) continue;
    ctx.fillStyle = p.always ? '#fbf3e6' : '#f0f3f7';
    ctx.fillRect(px, 4, pw, height - 8);
    ctx.fillStyle = '#6b7075';
    ctx.fillText('phase ' + p.name + (p.always ? ' (always)' : ''), px + 6, 16);
  }
  // Edges whose span crosses the view.
  ctx.strokeStyle = '#b8c0c8';
  ctx.lineWidth = 1 / Math.max(v.dag.scale, 0.5);
  ctx.beginPath();
  let edges = 0;
  for (const [a, b] of L.edges) {
    const na = L.nodes[a], nb = L.nodes[b];
    if (nb.col < c0 || na.col > c1) continue;
    const [ax, ay] = nodeXY(na), [bx, by] = nodeXY(nb);
    const sy = ay + BOX_H / 2, ty = by + BOX_H / 2;
    if (Math.max(sy, ty) < y0 || Math.min(sy, ty) > y1) continue;
    ctx.moveTo(ax + BOX_W, sy);
    const mx = (ax + BOX_W + bx) / 2;
    ctx.bezierCurveTo(mx, sy, mx, ty, bx, ty);
    edges++;
  }
  ctx.stroke();
  if (L.feedback) {
    const g = L.nodes[L.feedback.from];
    const [gx, gy] = nodeXY(g);
    const target = L.phases.find((p) => p.name === L.feedback.to_phase);
    if (target) {
      const tx = PAD + target.first_col * CELL_W;
      ctx.strokeStyle = '#d6336c'; ctx.setLineDash([6, 4]);
      ctx.beginPath(); ctx.moveTo(gx + BOX_W / 2, gy + BOX_H);
      ctx.bezierCurveTo(gx + BOX_W / 2, height - 6, tx, height - 6, tx + BOX_W / 2, height - 24);
      ctx.stroke(); ctx.setLineDash([]);
      ctx.fillStyle = '#d6336c';
      ctx.fillText(`feedback → ${L.feedback.to_phase} (≤ ${L.feedback.max_loops})`, (gx + tx) / 2, height - 10);
    }
  }
  // Nodes in the visible columns.
  let drawn = 0;
  const small = v.dag.scale < 0.45;
  for (let c = c0; c <= c1; c++) {
    for (const i of columnNodes(c)) {
      const n = L.nodes[i];
      const [nx, ny] = nodeXY(n);
      if (ny + BOX_H < y0 || ny > y1) continue;
      const s = nodeStatus(i);
      ctx.fillStyle = statusColor(s.status);
      if (n.kind === 'gate') {
        ctx.beginPath();
        ctx.moveTo(nx + BOX_W / 2, ny - 4); ctx.lineTo(nx + BOX_W / 2 + 22, ny + BOX_H / 2);
        ctx.lineTo(nx + BOX_W / 2, ny + BOX_H + 4); ctx.lineTo(nx + BOX_W / 2 - 22, ny + BOX_H / 2);
        ctx.closePath(); ctx.fill();
      } else {
        ctx.fillRect(nx, ny, BOX_W, BOX_H);
        if (s.counts) { // a fan-out group: a stack, and a bar of its instances' statuses
          ctx.strokeStyle = '#55606b'; ctx.strokeRect(nx + 3, ny - 3, BOX_W, BOX_H);
          let x = nx;
          for (const st of STATUS_ORDER) {
            if (!s.counts[st]) continue;
            const bw = BOX_W * s.counts[st] / s.total;
            ctx.fillStyle = statusColor(st); ctx.fillRect(x, ny + BOX_H - 5, bw, 5); x += bw;
          }
        }
      }
      if (!small) {
        const dark = ['pending', 'queued', 'skipped'].includes(s.status);
        ctx.fillStyle = dark ? '#1d1f21' : '#fff';
        let label = n.kind === 'gate' ? 'gate' : n.name;
        if (s.counts) label += ` ${s.counts.completed || 0}/${s.total}`;
        if (label.length > 19) label = label.slice(0, 18) + '…';
        ctx.fillText(label, n.kind === 'gate' ? nx + BOX_W / 2 - 12 : nx + 6, ny + 16);
      }
      drawn++;
    }
  }
  canvas.dataset.drawn = drawn;
  canvas.dataset.edges = edges;
  canvas.dataset.frame = (Number(canvas.dataset.frame) || 0) + 1;
  canvas.dataset.drawMs = Math.round(performance.now() - started);
}

// ---------------------------------------------------------------------------------------
// The Gantt chart: a row per agent instance, a bar per attempt, its backoff after it.

function setupGantt(canvas) {
  canvas.addEventListener('mousemove', (e) => {
    const b = ganttHit(canvas, e);
    $('#hover').textContent = b ? `${b.task} attempt ${b.attempt} on ${b.agent} (pass ${b.pass + 1}): ` +
      (b.end ? ms(b.end - b.start) : 'running') + (b.error ? ' · ' + b.error : '') +
      (b.backoff_ms ? ` · then ${ms(b.backoff_ms)} of backoff` : '') +
      (b.calls ? ` · ${b.input_tokens}+${b.output_tokens} tokens` : '') : '';
  });
  canvas.addEventListener('click', (e) => { const b = ganttHit(canvas, e); if (b) openDrawer(b.task); });
}

function ganttModel() {
  const v = view;
  const pass = v.pass === null ? v.run.pass : v.pass;
  const bars = v.bars.filter((b) => b.pass === pass);
  const lanes = [...new Set(bars.map((b) => b.agent))].sort();
  const t0 = bars.length ? Math.min(...bars.map((b) => b.start)) : 0;
  const now = Date.now();
  const t1 = bars.length ? Math.max(...bars.map((b) => (b.end || now) + (b.backoff_ms || 0)), t0 + 1) : 1;
  return { bars, lanes, t0, t1, now };
}

const LANE = 18, LABEL = 110;
function ganttHit(canvas, e) {
  const m = view.gantt; if (!m) return null;
  const rect = canvas.getBoundingClientRect();
  const x = e.clientX - rect.left, y = e.clientY - rect.top;
  const lane = Math.floor((y - 6) / LANE);
  const t = m.t0 + (x - LABEL) / m.k;
  return m.bars.find((b) => m.lanes.indexOf(b.agent) === lane && t >= b.start && t <= (b.end || m.now) + 1) || null;
}

function drawGantt() {
  const canvas = $('#gantt');
  if (!canvas) return;
  const m = ganttModel();
  view.gantt = m;
  const dpr = window.devicePixelRatio || 1;
  const w = canvas.clientWidth;
  const h = Math.max(60, Math.min(600, m.lanes.length * LANE + 30));
  canvas.style.height = h + 'px';
  canvas.width = Math.round(w * dpr); canvas.height = Math.round(h * dpr);
  const ctx = canvas.getContext('2d');
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, w, h);
  m.k = (w - LABEL - 10) / Math.max(1, m.t1 - m.t0);
  ctx.font = '11px system-ui, sans-serif';
  const visibleLanes = Math.floor((h - 24) / LANE);
  m.lanes.slice(0, visibleLanes).forEach((lane, i) => {
    ctx.fillStyle = '#6b7075';
    ctx.fillText(lane.length > 16 ? lane.slice(0, 15) + '…' : lane, 4, 6 + i * LANE + 12);
  });
  for (const b of m.bars) {
    const lane = m.lanes.indexOf(b.agent);
    if (lane >= visibleLanes) continue;
    const y = 6 + lane * LANE + 2;
    const x = LABEL + (b.start - m.t0) * m.k;
    const end = b.end || m.now;
    const bw = Math.max(2, (end - b.start) * m.k);
    ctx.fillStyle = !b.end ? statusColor('running') : b.error ? statusColor('failed') : statusColor('completed');
    ctx.fillRect(x, y, bw, LANE - 5);
    if (b.backoff_ms) {
      ctx.fillStyle = statusColor('retrying');
      ctx.globalAlpha = 0.45;
      ctx.fillRect(x + bw, y + 4, Math.max(2, b.backoff_ms * m.k), LANE - 13);
      ctx.globalAlpha = 1;
    }
  }
  ctx.fillStyle = '#6b7075';
  ctx.fillText(ms(m.t1 - m.t0), w - 60, h - 6);
  canvas.dataset.bars = m.bars.length;
  canvas.dataset.retries = m.bars.filter((b) => b.backoff_ms).length;
}

// ---------------------------------------------------------------------------------------
// Live: the run's event stream. Each message has the events since the last, the changed
// rows and bars, and the run's summary; its id is its last event's seq, which the browser
// sends back as Last-Event-ID when it reconnects.

function follow() {
  const v = view;
  const open = () => {
    const q = new URLSearchParams({ after: v.lastSeq });
    if (token) q.set('token', token);
    const source = new EventSource('/api/runs/' + encodeURIComponent(v.run.id) + '/stream?' + q);
    v.source = source;
    source.onopen = () => { document.body.dataset.stream = 'open'; v.opens = (v.opens || 0) + 1; };
    source.onerror = () => { document.body.dataset.stream = 'reconnecting'; };
    source.onmessage = (m) => apply(JSON.parse(m.data));
  };
  open();
  // For the tests: the sequence numbers received, to check that none is lost or repeated.
  window.conductorStream = { seqs: v.seqs, reconnect: () => { v.source.close(); open(); } };
  // For the tests: what a plan node is drawn as (its status, and a fan-out group's counts).
  window.conductorPlan = {
    node: (name) => {
      const i = v.nodeIndex.get('task:' + name);
      return i === undefined ? null : { ...nodeStatus(i), members: v.byNode[i].slice() };
    },
  };
}

function apply(msg) {
  const v = view;
  if (!v) return;
  for (const e of msg.events) {
    if (e.seq !== v.lastSeq + 1) {
      // A gap (or a repeat) would mean a wrong picture: read the run again.
      console.warn('event', e.seq, 'after', v.lastSeq);
      v.gaps = (v.gaps || 0) + 1;
    }
    v.seqs.push(e.seq);
    v.lastSeq = e.seq;
  }
  window.conductorStream.last = v.lastSeq;
  for (const r of msg.tasks) {
    if (!v.rows.has(r.name)) { v.orderIndex.set(r.name, v.order.length); v.order.push(r.name); }
    v.rows.set(r.name, r);
    place(v.nodeIndex, v.byNode, v.placed, r);
  }
  for (const [i, b] of msg.bars) v.bars[i] = b;
  const passChanged = msg.run.pass !== v.run.pass;
  const phaseChanged = msg.run.phase !== v.run.phase || msg.run.status !== v.run.status;
  v.run = msg.run;
  if (passChanged || msg.events.some((e) => ['gate_decided', 'feedback_decided', 'decided', 'dead_lettered', 'run_waiting', 'escalated'].includes(e.event))) {
    // Decisions, passes and questions: read them again (cheap, and rare).
    refreshSide(passChanged);
  }
  renderHead();
  renderTable();
  v.dirty = true;
  if (phaseChanged) v.dirty = true;
  const d = $('#drawer');
  if (!d.hidden && msg.tasks.some((r) => r.name === d.dataset.task)) openDrawer(d.dataset.task, null, true);
}

// Puts a task under its plan node: an instance `t[key]` under `t`; a fan-out task once
// expanded is drawn by its instances, so it leaves its node.
function place(nodeIndex, byNode, placed, r) {
  const i = nodeIndex.get('task:' + r.node);
  if (i === undefined) return;
  if (r.instances) {
    if (placed.delete(r.name)) byNode[i].splice(byNode[i].indexOf(r.name), 1);
  } else if (!placed.has(r.name)) {
    placed.add(r.name);
    byNode[i].push(r.name);
  }
}

async function refreshSide(passChanged) {
  const v = view;
  const board = await api('/runs/' + encodeURIComponent(v.run.id) + '/board');
  if (view !== v) return;
  v.board.timeline = board.timeline;
  v.board.questions = board.questions;
  v.board.dead_letters = board.dead_letters;
  v.board.passes = board.passes;
  if (passChanged) {
    const sel = $('#pass-select');
    sel.replaceChildren();
    for (let p = 0; p <= v.run.pass; p++) {
      sel.append(el('option', { value: p === v.run.pass ? 'current' : p }, p === v.run.pass ? `pass ${p + 1} (current)` : `pass ${p + 1}`));
    }
    sel.dataset.passes = v.run.pass + 1;
    sel.value = v.pass === null ? 'current' : String(v.pass);
  }
  renderSide();
  v.dirty = true;
}

// ---------------------------------------------------------------------------------------
// (c) The task drawer

async function openDrawer(task, group, quiet) {
  const d = $('#drawer');
  const v = view;
  if (!v) return;
  if (group && group.length > 1) {
    // A fan-out group: its instances, each a link to its own drawer.
    d.replaceChildren(closeButton(), el('h1', {}, task, ' ', el('span', { class: 'muted' }, `${group.length} instances`)),
      el('ul', { class: 'plain' }, ...group.map((name) => el('li', {},
        badge(taskStatus(name)), ' ', el('button', { class: 'link', onclick: () => openDrawer(name) }, name)))));
    d.dataset.task = task; d.hidden = false;
    return;
  }
  const q = parseHash().query; q.set('task', task); setQuery(q);
  let data;
  try {
    data = await api('/runs/' + encodeURIComponent(v.run.id) + '/tasks/' + encodeURIComponent(task));
  } catch (e) { toast(e.message, true); return; }
  if (view !== v) return;
  const scroll = d.scrollTop;
  const parts = [closeButton(),
    el('h1', {}, data.task, ' ', badge(data.row.status)),
    el('h2', {}, 'Why'), el('div', { class: 'why' }, data.why.join('\n'))];
  parts.push(el('h2', {}, 'Attempts'));
  if (!data.attempts.length) parts.push(el('p', { class: 'muted' }, 'not started'));
  for (const a of data.attempts) parts.push(attemptBox(data.task, a));
  if (data.requests.length) {
    parts.push(el('h2', {}, 'Request (as the dead-letter queue keeps it)'));
    for (const r of data.requests) parts.push(el('pre', {}, JSON.stringify(r.request, null, 2)));
  } else {
    parts.push(el('p', { class: 'muted' }, 'The log keeps the rendered request of a dead-lettered attempt only.'));
  }
  parts.push(el('h2', {}, 'Files'));
  if (!data.artifacts.length) parts.push(el('p', { class: 'muted' }, 'none written'));
  else parts.push(artifactList(data.task, data.artifacts));
  parts.push(el('div', { id: 'drawer-view' }));
  d.replaceChildren(...parts);
  d.dataset.task = data.task;
  d.dataset.status = data.row.status;
  d.hidden = false;
  if (quiet) d.scrollTop = scroll;
}

function closeButton() { return el('button', { class: 'close', onclick: () => closeDrawer() }, 'Close'); }

function closeDrawer(silent) {
  const d = $('#drawer');
  d.hidden = true; d.dataset.task = '';
  if (!silent) { const q = parseHash().query; q.delete('task'); setQuery(q); }
}

function attemptBox(task, a) {
  const box = el('div', { class: 'attempt ' + (a.error ? 'err' : a.end ? 'ok' : ''), 'data-attempt': a.attempt },
    el('strong', {}, `#${a.attempt}`), ` pass ${a.pass + 1} on ${a.agent} · `,
    a.end ? ms(a.duration_ms) : 'running', a.cached ? ' · from the response cache' : '',
    a.backoff_ms ? ` · retried after ${ms(a.backoff_ms)} of backoff` : '');
  if (a.calls && a.calls.length) {
    const i = a.calls.reduce((s, c) => s + c.input_tokens, 0), o = a.calls.reduce((s, c) => s + c.output_tokens, 0);
    box.append(el('div', { class: 'muted' }, a.calls.map((c) => `${c.provider}/${c.model}`).join(', ') + ` · ${i} in + ${o} out tokens`));
  }
  if (a.error) box.append(el('div', { class: 'error' }, `${a.error.code}: ${a.error.message}`));
  else if (a.output !== undefined && a.output !== null) box.append(el('pre', {}, JSON.stringify(a.output, null, 2)));
  if (a.tail && (a.tail.stdout || a.tail.stderr)) box.append(el('pre', {}, (a.tail.stdout || '') + (a.tail.stderr ? '\n[stderr]\n' + a.tail.stderr : '')));
  const logs = el('div', {});
  box.append(el('button', { onclick: async () => {
    const l = await api(`/runs/${encodeURIComponent(view.run.id)}/tasks/${encodeURIComponent(task)}/logs?attempt=${a.attempt}`);
    logs.replaceChildren(l.chunks.length ? el('pre', { class: 'logs' }, l.chunks.map((c) => (c.stream === 'stderr' ? '' : '') + c.text).join('')) : el('p', { class: 'muted' }, 'it printed nothing'));
  } }, 'Logs'), logs);
  return box;
}

function artifactList(task, files) {
  const passes = {};
  for (const f of files) (passes[f.path] = passes[f.path] || []).push(f);
  const list = el('ul', { class: 'plain' });
  for (const [path, versions] of Object.entries(passes)) {
    const latest = versions[versions.length - 1];
    list.append(el('li', { 'data-path': path }, `${path} (${latest.size} bytes, pass ${latest.loop_count + 1}) `,
      el('button', { onclick: async () => {
        const res = await fetch(`/api/runs/${encodeURIComponent(view.run.id)}/artifacts/${latest.sha256}`, { headers: token ? { 'x-conductor-token': token } : {} });
        $('#drawer-view').replaceChildren(el('h2', {}, path), el('pre', {}, await res.text()));
      } }, 'View'), ' ',
      el('button', { 'data-action': 'diff', onclick: async () => {
        const d = await api(`/runs/${encodeURIComponent(view.run.id)}/tasks/${encodeURIComponent(task)}/diff?path=${encodeURIComponent(path)}`);
        $('#drawer-view').replaceChildren(el('h2', {}, `${path}: pass ${d.pass + 1} against ${d.previous_pass === null ? 'nothing (first written)' : 'pass ' + (d.previous_pass + 1)}`), diffView(d.diff));
      } }, 'Diff against the previous pass')));
  }
  return list;
}

function diffView(text) {
  const pre = el('pre', { class: 'diff', id: 'diff' });
  for (const line of text.split('\n')) {
    const cls = line.startsWith('+') ? 'add' : line.startsWith('-') ? 'del' : line.startsWith('@@') ? 'hunk' : null;
    pre.append(el('span', { class: cls }, line + '\n'));
  }
  if (!text.trim()) pre.append('no change');
  return pre;
}

// ---------------------------------------------------------------------------------------
// (d) Dead letters and (e) decisions: every button sends what the command would.

function deadLetterList(entries) {
  return el('table', { class: 'dlq' },
    el('thead', {}, el('tr', {}, ...['Entry', 'Run', 'Task', 'Pool', 'Attempts', 'Reason', ''].map((h) => el('th', {}, h)))),
    el('tbody', {}, ...entries.map((e) => el('tr', { 'data-entry': e.id },
      el('td', {}, e.id.split(':').pop()), el('td', {}, el('a', { href: '#/run/' + encodeURIComponent(e.run_id) }, e.run_id)),
      el('td', {}, e.task), el('td', {}, e.pool), el('td', {}, e.attempts.length), el('td', { class: 'wrap' }, e.reason),
      el('td', {},
        el('button', { class: 'primary', 'data-action': 'retry', title: `conductor dlq retry ${e.id}`, onclick: (ev) => act(ev.target, `/dlq/${encodeURIComponent(e.id)}/retry`, {}, `retrying ${e.task}`) }, 'Retry'), ' ',
        el('button', { class: 'danger', 'data-action': 'drop', title: `conductor dlq drop ${e.id}`, onclick: (ev) => act(ev.target, `/dlq/${encodeURIComponent(e.id)}/drop`, {}, `dropped ${e.id}`) }, 'Drop'))))));
}

function questionList(questions) {
  return el('ul', { class: 'plain questions' }, ...questions.map((q) => {
    const reason = q.actions.some((a) => a === 'reject' || a === 'approve') ? el('input', { class: 'reason', placeholder: 'reason' }) : null;
    return el('li', { 'data-question': q.run + '/' + q.task, 'data-kind': q.kind },
      el('strong', {}, q.task), ` (${q.kind} in ${q.workflow}, phase ${q.phase}, ${q.attempts} attempts) `,
      el('a', { href: '#/run/' + encodeURIComponent(q.run) }, q.run),
      q.error ? el('div', { class: 'error' }, q.error) : null,
      el('div', {}, reason, ...q.actions.map((a) => el('button', {
        'data-decision': a, class: a === 'abort' || a === 'reject' ? 'danger' : a === 'retry' || a === 'approve' ? 'primary' : '',
        title: `conductor resume ${q.run} --decide ${q.task}=${a}`,
        onclick: (ev) => act(ev.target, `/runs/${encodeURIComponent(q.run)}/decide`,
          Object.assign({ task: q.task, decision: a }, reason ? { reason: reason.value } : {}), `${q.task}: ${a}`),
      }, a))));
  }));
}

async function act(button, path, body, done) {
  for (const b of button.parentElement.querySelectorAll('button')) b.disabled = true;
  try {
    const r = await post(path, body);
    toast(done + (r && r.by ? ` (recorded as ${r.by})` : ''));
    button.closest('[data-entry],[data-question]').dataset.done = '1';
    setTimeout(() => { if (view) refreshSide(false); else route(); }, 400);
  } catch (e) {
    toast(e.message, true);
    for (const b of button.parentElement.querySelectorAll('button')) b.disabled = false;
  }
}

async function dlqScreen() {
  main.append(el('h1', {}, 'Dead letters'), el('div', { id: 'dlq' }));
  every(2000, async () => {
    const entries = await api('/dlq');
    $('#dlq').replaceChildren(entries.length ? deadLetterList(entries) : el('p', { class: 'muted' }, 'the queue is empty'));
    main.dataset.loaded = 'dlq';
    await refreshBadges();
  });
}

async function decisionsScreen() {
  main.append(el('h1', {}, 'Decisions'), el('p', { class: 'muted' },
    'Tasks waiting for a person: escalated failures (retry, skip or abort). Each button runs what `conductor resume RUN --decide TASK=…` runs, recorded as this dashboard\'s user.'),
  el('div', { id: 'questions' }));
  every(2000, async () => {
    const qs = await api('/decisions');
    // Keep the list while a reason is being typed.
    if (document.activeElement && document.activeElement.classList.contains('reason')) return;
    $('#questions').replaceChildren(qs.length ? questionList(qs) : el('p', { class: 'muted' }, 'nothing is waiting'));
    main.dataset.loaded = 'decisions';
    await refreshBadges();
  });
}

// ---------------------------------------------------------------------------------------

(async () => {
  try {
    const who = await api('/whoami');
    $('#who').textContent = `${who.store} · decisions recorded as ${who.decided_by}`;
  } catch (_) { return; }
  route();
})();
