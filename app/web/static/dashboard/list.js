// The calls list (GET /): one row a call from GET /calls, filtered, sorted and paged by the page's
// address (?q=&since=&until=&status=&source=&sort=&order=&page=), so a view can be bookmarked,
// reloaded and navigated with Back and Forward.
//
// Live calls: the page polls GET /calls?status=live every 2 s (while the tab is visible) and
// reloads its view when the set of live calls changes: a call appears as it starts and turns into
// its recording when it ends. Polling rather than a server-sent stream because the catalog (shared
// by every worker) is the one place that knows every worker's live calls: a stream would poll it
// on the server anyway and hold a connection per open tab, where this asks a few-ms query every
// 2 s and needs no reconnect logic across restarts. The running durations tick in the page.
//
// Hooks for tests: <body data-list="loading|ready|empty|error" data-loads="n">.

import { api, confirmDelete, errorText, fmtCount, fmtDuration, fmtLatency, fmtSize, fmtWhen, masked,
         sourceLabel, statusLabel } from '/dashboard/assets/shared.js';

const PAGE = 50;
const POLL_MS = 2000;
const RETRY_MS = 5000;
const SORTS = ['started_at', 'duration_s', 'turns', 'barge_ins', 'latency', 'size'];
const STATUSES = ['live', 'finalized', 'recovered', 'failed'];
const SOURCES = ['phone', 'listen', 'browser'];
const FILTERS = ['q', 'since', 'until', 'status', 'source'];
const DATE = /^\d{4}-\d{2}-\d{2}$/;

const $ = (id) => document.getElementById(id);
const body = document.body;

// ------------------------------------------------------------------ the view's state ⇄ the address
function readState() {
  const p = new URLSearchParams(location.search);
  const pick = (k, allowed, dflt) => (allowed.includes(p.get(k)) ? p.get(k) : dflt);
  const date = (k) => (DATE.test(p.get(k) || '') ? p.get(k) : '');
  return {
    q: (p.get('q') || '').slice(0, 200), since: date('since'), until: date('until'),
    status: pick('status', STATUSES, ''), source: pick('source', SOURCES, ''),
    sort: pick('sort', SORTS, 'started_at'), order: pick('order', ['asc', 'desc'], 'desc'),
    page: Math.max(1, parseInt(p.get('page') || '1', 10) || 1),
  };
}

function addressOf(state) {
  const p = new URLSearchParams();
  for (const k of FILTERS) if (state[k]) p.set(k, state[k]);
  if (state.sort !== 'started_at') p.set('sort', state.sort);
  if (state.order !== 'desc') p.set('order', state.order);
  if (state.page > 1) p.set('page', String(state.page));
  const qs = p.toString();
  return location.pathname + (qs ? `?${qs}` : '');
}

/** Midnight of a yyyy-mm-dd day (plus `days`) in the browser's zone, as the API's UTC time. */
function localMidnight(day, days = 0) {
  const [y, m, d] = day.split('-').map(Number);
  return new Date(y, m - 1, d + days).toISOString();
}

function apiPath(state) {
  const p = new URLSearchParams({ limit: String(PAGE), offset: String((state.page - 1) * PAGE),
                                  sort: state.sort, order: state.order });
  if (state.q.trim()) p.set('q', state.q.trim());
  if (state.since) p.set('since', localMidnight(state.since));
  if (state.until) p.set('until', localMidnight(state.until, 1));  // the whole of that day
  if (state.status) p.set('status', state.status);
  if (state.source === 'browser') p.set('source', 'browser');
  else if (state.source) {  // phone calls: answered by the assistant, or only listened to
    p.set('source', 'phone');
    p.set('mode', state.source === 'listen' ? 'listen' : 'assistant');
  }
  return `/calls?${p}`;
}

let state = readState();

function filtered() {
  return FILTERS.some((k) => state[k]);
}

function go({ push = true } = {}) {
  $('notice').textContent = '';
  const address = addressOf(state);
  if (address !== location.pathname + location.search) {
    history[push ? 'pushState' : 'replaceState'](null, '', address);
  }
  showControls();
  load();
}

// ------------------------------------------------------------------ controls
const form = $('filters');

function showControls() {
  for (const k of FILTERS) form.elements[k].value = state[k];
  for (const th of document.querySelectorAll('#calls th[data-sort]')) {
    const on = th.dataset.sort === state.sort;
    th.setAttribute('aria-sort', on ? (state.order === 'asc' ? 'ascending' : 'descending') : 'none');
  }
}

function fromForm() {
  const next = { ...state, page: 1 };
  for (const k of FILTERS) next[k] = form.elements[k].value.trim();
  return next;
}

form.addEventListener('submit', (ev) => {
  ev.preventDefault();
  clearTimeout(typing);
  state = fromForm();
  go();
});
for (const name of ['status', 'source', 'since', 'until']) {
  form.elements[name].addEventListener('change', () => form.requestSubmit());
}
let typing = 0;
form.elements.q.addEventListener('input', () => {  // search as one types, without a history entry a key
  clearTimeout(typing);
  typing = setTimeout(() => { state = fromForm(); go({ push: false }); }, 400);
});
$('clear').addEventListener('click', (ev) => {
  ev.preventDefault();
  state = { ...state, q: '', since: '', until: '', status: '', source: '', page: 1 };
  go();
});

for (const th of document.querySelectorAll('#calls th[data-sort]')) {
  th.querySelector('button').addEventListener('click', () => {
    const key = th.dataset.sort;
    state = { ...state, page: 1, sort: key,
              order: state.sort === key && state.order === 'desc' ? 'asc' : 'desc' };
    go();
  });
}

const pages = () => Math.max(1, Math.ceil(total / PAGE));
const toPage = (n) => { state = { ...state, page: Math.min(Math.max(1, n), pages()) }; go(); };
$('first').addEventListener('click', () => toPage(1));
$('prev').addEventListener('click', () => toPage(state.page - 1));
$('next').addEventListener('click', () => toPage(state.page + 1));
$('last').addEventListener('click', () => toPage(pages()));

window.addEventListener('popstate', () => { state = readState(); showControls(); load(); });

// ------------------------------------------------------------------ loading and drawing
let total = 0;
let loading = 0;  // the latest load's number: an older answer is dropped
let loads = 0;

function setError(text) {
  $('error').textContent = text;
}

function finish(outcome) {
  loads += 1;
  body.dataset.loads = String(loads);
  body.dataset.list = outcome;
}

async function load() {
  const mine = ++loading;
  const table = $('calls');
  table.setAttribute('aria-busy', 'true');
  body.dataset.list = 'loading';
  let res;
  try {
    res = await api(apiPath(state));
  } catch (e) {
    if (mine !== loading || e.name === 'AuthError') return;
    table.removeAttribute('aria-busy');
    setError('The server cannot be reached, so the list cannot be shown. It tries again every few seconds.');
    finish('error');
    return;
  }
  if (mine !== loading) return;
  table.removeAttribute('aria-busy');
  if (!res.ok) {
    setError(`This view cannot be shown: ${errorText(res)}`);
    finish('error');
    return;
  }
  setError('');
  const page = res.data;
  if (page.total > 0 && page.data.length === 0 && state.page > 1) {  // past the end (after a deletion, say)
    state = { ...state, page: Math.ceil(page.total / PAGE) };
    go({ push: false });
    return;
  }
  draw(page);
  finish(page.total ? 'ready' : 'empty');
}

function el(tag, attrs = {}, text) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text != null) e.textContent = text;
  return e;
}

function cell(tr, cls, label, text) {
  const td = el('td', { class: cls });
  if (label) td.dataset.label = label;
  if (text != null) td.textContent = text;
  tr.append(td);
  return td;
}

function describe(call) {
  const started = call.started_at ? fmtWhen(new Date(call.started_at)) : 'at an unknown time';
  const who = call.from_last4 ? ` from ${masked(call.from_last4)}` : ` (${sourceLabel(call).toLowerCase()})`;
  return `the call started ${started}${who}`;
}

function row(call) {
  const tr = el('tr');
  tr.dataset.sid = call.call_sid;
  tr.dataset.status = call.status;
  const started = call.started_at ? new Date(call.started_at) : null;

  const when = cell(tr, 'when', 'Started');
  const link = el('a', { href: `/calls/${encodeURIComponent(call.call_sid)}/view` });
  link.append(el('time', { datetime: call.started_at || '' }, started ? fmtWhen(started) : 'Not started'));
  when.append(link);

  const duration = cell(tr, 'num duration', 'Duration');
  if (call.status === 'live' && started) {
    duration.classList.add('running');
    duration.dataset.started = String(started.getTime());
    duration.textContent = running(started.getTime());
  } else {
    duration.textContent = fmtDuration(call.duration_s);
  }
  cell(tr, 'source', 'Source', sourceLabel(call));
  cell(tr, 'caller', 'Caller', call.source === 'browser' ? '—' : masked(call.from_last4));

  const status = cell(tr, 'status', 'Status');
  status.append(el('span', { class: `badge badge-${call.status}` }, statusLabel(call.status)));
  const why = call.status === 'live' ? null : call.status_reason || call.end_reason;
  if (why) status.append(el('span', { class: 'reason' }, why));

  cell(tr, 'format', 'Format · size',
       call.format ? `${call.format.toUpperCase()} · ${fmtSize(call.size_bytes)}` : '—');
  cell(tr, 'num turns', 'Turns', call.turns ?? '—');
  cell(tr, 'num barge-ins', 'Barge-ins', call.barge_ins ?? '—');
  cell(tr, 'num latency', 'Latency', fmtLatency(call.latency_ms));

  const actions = cell(tr, 'actions', null);
  if (call.status !== 'live') {
    const del = el('button', { type: 'button', class: 'btn-quiet danger', 'data-role': 'delete',
                               'aria-label': `Delete ${describe(call)}` }, 'Delete');
    del.addEventListener('click', () => remove(call, del));
    actions.append(del);
  }
  return tr;
}

function draw(page) {
  // Keep the keyboard's place across a redraw (a live call starting or ending redraws the rows).
  const focused = document.activeElement;
  const focusRow = focused && focused.closest ? focused.closest('#rows tr') : null;
  const keep = focusRow ? { sid: focusRow.dataset.sid, role: focused.dataset.role || null,
                            index: [...focusRow.parentNode.children].indexOf(focusRow) } : null;

  total = page.total;
  $('rows').replaceChildren(...page.data.map(row));
  const first = page.total ? page.offset + 1 : 0;
  const last = page.offset + page.data.length;
  $('summary').textContent = page.total
    ? `${fmtCount(page.total)} ${page.total === 1 ? 'call' : 'calls'}${filtered() ? ' match these filters' : ''}`
    : '';
  $('range').textContent = `${fmtCount(first)}–${fmtCount(last)} of ${fmtCount(page.total)}`;
  $('pager').hidden = page.total === 0;
  $('first').disabled = $('prev').disabled = state.page <= 1;
  $('next').disabled = $('last').disabled = last >= page.total;
  showEmpty(page.total === 0);

  if (keep) {
    const rows = [...$('rows').children];
    const same = rows.find((r) => r.dataset.sid === keep.sid) || rows[Math.min(keep.index, rows.length - 1)];
    const target = same && (keep.role ? same.querySelector(`[data-role="${keep.role}"]`) : same.querySelector('a'));
    (target || $('calls-title')).focus();
  }
}

function showEmpty(empty) {
  const box = $('empty');
  box.hidden = !empty;
  $('calls').hidden = empty;
  if (!empty) return;
  if (filtered()) {
    const clear = el('a', { href: '/' }, 'Clear the filters');
    clear.addEventListener('click', (ev) => { ev.preventDefault(); $('clear').click(); });
    box.replaceChildren(el('p', {}, 'No calls match these filters.'), clear);
  } else {
    const p = el('p', {}, 'No calls have been recorded yet. They appear here as they start: point a Twilio '
                          + "number's voice webhook at /voice, or ");
    p.append(el('a', { href: '/call' }, 'call the assistant from this browser'), '.');
    box.replaceChildren(p);
  }
}

async function remove(call, button) {
  const done = await confirmDelete({ sid: call.call_sid, description: `Delete ${describe(call)}?`,
                                     opener: button, fallback: $('calls-title') });
  if (!done) {  // cancelled: back to this call's button, even if a live call redrew the rows meanwhile
    if (!button.isConnected) $('rows').querySelector(`tr[data-sid="${call.call_sid}"] [data-role="delete"]`)?.focus();
    return;
  }
  $('notice').textContent = `Deleted ${describe(call)} (${done.deleted.length} files).`;
  await load();
}

// ------------------------------------------------------------------ live calls
let liveSeen = '';

async function poll() {
  if (!document.hidden) {
    try {
      const res = await api('/calls?status=live&limit=200');
      if (res.ok) {
        const live = res.data.data.filter((c) => c.status === 'live').map((c) => c.call_sid).sort();
        const key = live.join(',');
        showLive(live.length);
        const shown = [...document.querySelectorAll('#rows tr[data-status="live"]')].map((r) => r.dataset.sid);
        if (key !== liveSeen || shown.some((sid) => !live.includes(sid)) || body.dataset.list === 'error') {
          liveSeen = key;
          load();
        }
      }
    } catch (e) {
      if (e.name === 'AuthError') return;  // on the way to the login form
      setError('The server cannot be reached: the list may be out of date. It tries again every few seconds.');
      body.dataset.list = 'error';
      setTimeout(poll, RETRY_MS);
      return;
    }
  }
  setTimeout(poll, POLL_MS);
}

function showLive(n) {
  $('live-link').hidden = n === 0;
  $('live-count').textContent = n === 1 ? '1 call' : `${n} calls`;
}

function running(started) {  // whole seconds elapsed, as a clock shows them
  return fmtDuration(Math.floor(Math.max(0, Date.now() - started) / 1000));
}

function tick() {
  for (const td of document.querySelectorAll('#rows .running[data-started]')) {
    td.textContent = running(Number(td.dataset.started));
  }
}

document.addEventListener('visibilitychange', () => { if (!document.hidden) load(); });

showControls();
load();
setTimeout(poll, POLL_MS);
setInterval(tick, 250);
