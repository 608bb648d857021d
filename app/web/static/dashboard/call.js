// A call's page (GET /calls/{sid}/view): the player, the transcript in sync with it, the picture of
// who spoke when (a click seeks), the summary's figures, downloads in every format, deletion; and,
// while the call is live, its events until it turns into its recording, without a reload.
//
// Reads GET /calls/{sid} (the call's JSON), GET /calls/{sid}/timeline.svg (inlined: our own
// server's SVG, no script), GET /audio/formats and, live, GET /calls/{sid}/live (server-sent
// events: journal records as `turn`, `dtmf`, `clear`, …; `progress`; `spans`; `ended`).
// Writes POST /audio/set-format/{sid} and DELETE /calls/{sid}.
//
// Times: a turn's start_ms/end_ms are exact on the call's clock, which is the recording's
// (sample 0 of the conversation file is the call's start); the picture maps samples to x with
// x = sample × data-width / data-duration-samples, and samples to seconds with data-rate.
//
// Deletion is the dashboard's (shared.js: confirmDelete, the same dialog as the list's).
//
// For tests, `window.callview` exposes {mode, call, events, timeline}.

import { confirmDelete, fmtSize, fmtWhen, masked, toLogin } from '/dashboard/assets/shared.js';

const SVG_NS = 'http://www.w3.org/2000/svg';
const SEEK_STEP_S = 5;
const LIVE_MIN_SPAN_S = 30; // the live picture starts 30 s wide and grows with the call after that
const LIVE_W = 1000;
const MAX_EVENTS = 5000;
const ROLE_NAMES = {caller: 'Caller', assistant: 'Assistant', other: 'Other party'};
const LANE_COLOURS = {caller: '#2563eb', assistant: '#ea580c', 'other party': '#059669'};

const $ = (id) => document.getElementById(id);
const main = $('call');
const sid = main.dataset.sid;
const base = `/calls/${encodeURIComponent(sid)}`;
const player = $('player');

const view = {mode: 'loading', call: null, events: [], timeline: 'none'};
window.callview = view;

// ---------------------------------------------------------------------------------------------
// Small helpers

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'text') node.textContent = v;
    else if (k === 'className') node.className = v;
    else node.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children) node.append(c);
  return node;
}

function svg(tag, attrs = {}) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  return node;
}

function clock(ms) {
  if (!Number.isFinite(ms) || ms < 0) ms = 0;
  const tenths = Math.floor(ms / 100);
  const s = Math.floor(tenths / 10);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const ss = String(s % 60).padStart(2, '0');
  const t = `${ss}.${tenths % 10}`;
  return h ? `${h}:${String(m).padStart(2, '0')}:${t}` : `${String(m).padStart(2, '0')}:${t}`;
}

function spoken(seconds) {
  if (!Number.isFinite(seconds)) return '—';
  if (seconds < 60) return `${seconds.toFixed(1)} s`;
  const total = Math.round(seconds);
  const h = Math.floor(total / 3600), m = Math.floor((total % 3600) / 60), s = total % 60;
  return h ? `${h} h ${m} min ${s} s` : `${m} min ${s} s`;
}

function bytes(n) {
  return Number.isFinite(n) ? fmtSize(n) : '';
}

function when(iso) {
  if (!iso) return '—';
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? iso : fmtWhen(d);
}

function note(type, detail) {
  view.events.push({t: Math.round(performance.now()), type, detail});
  if (view.events.length > MAX_EVENTS) view.events.splice(0, view.events.length - MAX_EVENTS);
}

function setStatus(text) {
  $('status').textContent = text;
}

function showError(text) {
  $('error').textContent = text;
}

class HttpError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

// Same-origin requests only; the dashboard's session cookie goes with them. An error's JSON
// message ({"error": …}) becomes the thrown error's text.
async function api(path, options = {}) {
  const response = await fetch(path, {credentials: 'same-origin', ...options,
                                      headers: {Accept: 'application/json', ...(options.headers || {})}});
  if (!response.ok) {
    let message = `${response.status} ${response.statusText}`;
    try {
      const body = await response.json();
      if (body && body.error) message = body.error;
    } catch { /* not JSON: the status says it */ }
    if (response.status === 401) toLogin();
    throw new HttpError(response.status, message);
  }
  return response;
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// ---------------------------------------------------------------------------------------------
// The transcript: one button a turn; the one being spoken is marked `current`.

class Transcript {
  constructor(list) {
    this.list = list;
    this.turns = []; // {start, end, role, text, node}
    this.current = null;
    this.onSeek = null;
  }

  clear() {
    this.list.replaceChildren();
    this.turns = [];
    this.current = null;
  }

  key(turn) {
    return `${turn.role}:${turn.start_sample ?? turn.start_ms}:${turn.end_sample ?? turn.end_ms}`;
  }

  add(turn) {
    const key = this.key(turn);
    if (this.turns.some((t) => t.key === key)) return;
    const start = Number(turn.start_ms) || 0;
    const end = Math.max(start, Number(turn.end_ms) || start);
    const role = ROLE_NAMES[turn.role] || turn.role || 'Unknown';
    const flags = [];
    if (turn.interrupted) flags.push(turn.cut_by && !['caller', 'barge-in'].includes(turn.cut_by)
      ? `cut off (${turn.cut_by})` : 'interrupted');
    const button = el('button', {type: 'button', className: 'line', 'data-start-ms': start, 'data-end-ms': end,
                                 'aria-label': `${clock(start)} ${role}: ${turn.text || ''}`},
      el('span', {className: 'when', text: clock(start)}),
      el('span', {className: 'who', text: role}),
      el('span', {className: 'what', text: turn.text || ''}),
      ...flags.map((f) => el('span', {className: 'flag', text: f})));
    button.addEventListener('click', () => this.onSeek && this.onSeek(start / 1000));
    const node = el('li', {className: `turn role-${turn.role || 'unknown'}`, 'data-role': turn.role || ''}, button);
    const entry = {key, start, end, role: turn.role, text: turn.text, node};
    const at = this.turns.findIndex((t) => t.start > start);
    if (at < 0) {
      this.turns.push(entry);
      this.list.append(node);
    } else {
      this.turns.splice(at, 0, entry);
      this.list.insertBefore(node, this.turns[at + 1].node);
    }
  }

  // The line being spoken at `ms`: among the turns that cover it, the one that started last.
  highlight(ms) {
    let found = null;
    for (const t of this.turns) {
      if (t.start > ms) break;
      if (ms < t.end) found = t;
    }
    if (found === this.current) return;
    if (this.current) {
      this.current.node.classList.remove('current');
      this.current.node.firstChild.removeAttribute('aria-current');
    }
    this.current = found;
    if (found) {
      found.node.classList.add('current');
      found.node.firstChild.setAttribute('aria-current', 'true');
      const box = this.list.getBoundingClientRect();
      const line = found.node.getBoundingClientRect();
      if (line.top < box.top || line.bottom > box.bottom) {
        this.list.scrollTop += line.top - box.top - box.height / 3;
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// The picture: the server's SVG inlined (recorded calls) or drawn here from the events (live).
// Either way the root <svg> carries data-rate, data-duration-samples and data-width, and a
// click maps through getScreenCTM().inverse() to user-space x, then to a sample.

class Timeline {
  constructor(box) {
    this.box = box;
    this.svg = null;
    this.playhead = null;
    this.onSeek = null;
    this.live = null; // the live picture's parts
    box.addEventListener('click', (e) => this.click(e));
    box.addEventListener('keydown', (e) => this.key(e));
  }

  get rate() { return Number(this.svg?.dataset.rate) || 8000; }
  get samples() { return Number(this.svg?.dataset.durationSamples) || 0; }
  get width() { return Number(this.svg?.dataset.width) || LIVE_W; }
  get seconds() { return this.samples / this.rate; }

  // Fetch /calls/{sid}/timeline.svg and put it in the page.
  async load() {
    view.timeline = 'loading';
    const response = await api(`${base}/timeline.svg`, {headers: {Accept: 'image/svg+xml'}});
    const type = response.headers.get('content-type') || '';
    if (!type.startsWith('image/svg+xml')) throw new Error(`the timeline came as ${type || 'no type'}, not SVG`);
    const doc = new DOMParser().parseFromString(await response.text(), 'image/svg+xml');
    const root = doc.documentElement;
    if (root.namespaceURI !== SVG_NS || root.localName !== 'svg' || doc.querySelector('parsererror')) {
      throw new Error('the timeline is not a readable SVG');
    }
    // Our server's picture has no script; keep it that way whatever the file says.
    for (const bad of root.querySelectorAll('script, foreignObject, iframe, a')) bad.remove();
    for (const node of [root, ...root.querySelectorAll('*')]) {
      for (const attr of [...node.attributes]) {
        if (/^on/i.test(attr.name) || (/href$/i.test(attr.name) && !attr.value.startsWith('#'))) {
          node.removeAttribute(attr.name);
        }
      }
    }
    this.show(document.importNode(root, true));
    this.live = null;
    view.timeline = 'loaded';
  }

  show(root) {
    root.removeAttribute('width');
    root.removeAttribute('height');
    root.classList.add('picture');
    const height = root.viewBox.baseVal ? root.viewBox.baseVal.height : 100;
    this.playhead = svg('line', {class: 'playhead', x1: 0, x2: 0, y1: 0, y2: height, 'data-playhead': ''});
    this.playhead.setAttribute('visibility', 'hidden');
    root.append(this.playhead);
    this.box.replaceChildren(root);
    this.svg = root;
    this.box.setAttribute('aria-valuemax', String(Math.round(this.seconds)));
  }

  // The live picture: a row per lane; spans and markers in sample units inside a group scaled
  // to the call's length so far (the same data attributes as the server's picture).
  startLive(lanes, rate) {
    const rowH = 28, labelH = 14, gap = 8, top = 4;
    const rows = lanes.map((lane, i) => ({lane, y: top + i * (labelH + rowH + gap) + labelH}));
    const markersY = rows.length ? rows[rows.length - 1].y + rowH + 6 : top;
    const height = markersY + 16;
    const root = svg('svg', {viewBox: `0 0 ${LIVE_W} ${height}`, role: 'img', 'data-live': 'true',
                             'data-rate': rate, 'data-duration-samples': 0, 'data-width': LIVE_W,
                             'font-family': 'system-ui, sans-serif', 'font-size': 11});
    const title = svg('title');
    title.textContent = 'Who spoke when, so far (live)';
    root.append(title, svg('rect', {x: 0, y: 0, width: LIVE_W, height, fill: '#fff'}));
    const scaled = svg('g', {class: 'scaled'});
    const groups = {};
    for (const {lane, y} of rows) {
      const label = svg('text', {x: 0, y: y - 3, fill: '#374151', 'font-weight': 600});
      label.textContent = lane[0].toUpperCase() + lane.slice(1);
      root.append(label, svg('rect', {x: 0, y, width: LIVE_W, height: rowH, fill: '#f3f4f6'}));
      groups[lane] = svg('g', {class: 'lane', 'data-lane-row': lane});
      groups[lane].dataset.y = String(y);
      scaled.append(groups[lane]);
    }
    const markers = svg('g', {class: 'markers'});
    scaled.append(markers);
    root.append(scaled);
    const now = svg('line', {class: 'now', x1: 0, x2: 0, y1: 0, y2: height, stroke: '#dc2626',
                             'stroke-dasharray': '3 3'});
    const nowLabel = svg('text', {class: 'now', x: 4, y: height - 4, fill: '#b91c1c', 'font-weight': 600});
    root.append(now, nowLabel);
    this.show(root);
    this.live = {scaled, groups, markers, now, nowLabel, rowH, markersY, rate, samples: 0};
    view.timeline = 'live';
    this.grow(0);
  }

  grow(samples) {
    const live = this.live;
    if (!live) return;
    live.samples = Math.max(live.samples, samples);
    const span = Math.max(live.samples, LIVE_MIN_SPAN_S * live.rate);
    live.scaled.setAttribute('transform', `scale(${LIVE_W / span} 1)`);
    const x = (live.samples * LIVE_W) / span;
    live.now.setAttribute('x1', x);
    live.now.setAttribute('x2', x);
    live.nowLabel.textContent = clock((live.samples / live.rate) * 1000);
    live.nowLabel.setAttribute('x', Math.min(x + 4, LIVE_W - 40));
    this.svg.dataset.durationSamples = String(live.samples);
    this.svg.dataset.scaleSamples = String(span);
    this.box.setAttribute('aria-valuemax', String(Math.round(live.samples / live.rate)));
    this.box.setAttribute('aria-valuetext', `${clock((live.samples / live.rate) * 1000)} so far`);
  }

  // The lane's spans from `from` on are replaced by `spans` ([[a, b], …], samples).
  spans(lane, from, spans) {
    const live = this.live;
    const group = live?.groups[lane];
    if (!group) return;
    for (const rect of [...group.children]) {
      if (Number(rect.dataset.startSample) >= from) rect.remove();
    }
    const y = Number(group.dataset.y);
    for (const [a, b] of spans) {
      group.append(svg('rect', {x: a, y, width: Math.max(b - a, 1), height: live.rowH,
                                fill: LANE_COLOURS[lane] || '#6b7280', 'data-lane': lane,
                                'data-start-sample': a, 'data-end-sample': b}));
    }
  }

  marker(kind, at, label) {
    const live = this.live;
    if (!live || !Number.isFinite(at)) return;
    const g = svg('g', {class: 'marker', 'data-kind': kind, 'data-at-sample': at});
    const title = svg('title');
    title.textContent = label;
    g.append(title);
    g.append(svg('line', {x1: at, x2: at, y1: 0, y2: live.markersY + 10, stroke: kind === 'barge-in' ? '#dc2626' : '#7c3aed',
                          'stroke-width': 2, 'vector-effect': 'non-scaling-stroke'}));
    live.markers.append(g);
  }

  // Where the playback is: the playhead, and the slider's value.
  at(seconds) {
    if (!this.svg || !this.playhead || this.live) return;
    const x = (seconds * this.rate * this.width) / Math.max(this.samples, 1);
    this.playhead.setAttribute('x1', x);
    this.playhead.setAttribute('x2', x);
    this.playhead.setAttribute('visibility', 'visible');
    this.box.setAttribute('aria-valuenow', String(Math.round(seconds)));
    this.box.setAttribute('aria-valuetext', `${clock(seconds * 1000)} of ${clock(this.seconds * 1000)}`);
  }

  click(event) {
    if (!this.svg || this.live || !this.onSeek) return;
    const matrix = this.svg.getScreenCTM();
    if (!matrix) return;
    const point = new DOMPoint(event.clientX, event.clientY).matrixTransform(matrix.inverse());
    const x = Math.min(Math.max(point.x, 0), this.width);
    const sample = (x * this.samples) / this.width;
    note('timeline-click', {x, sample});
    this.onSeek(sample / this.rate);
  }

  key(event) {
    if (!this.svg || this.live || !this.onSeek) return;
    const now = player.currentTime || 0;
    const moves = {ArrowLeft: now - SEEK_STEP_S, ArrowRight: now + SEEK_STEP_S, PageDown: now - 30,
                   PageUp: now + 30, Home: 0, End: this.seconds};
    if (!(event.key in moves)) return;
    event.preventDefault();
    this.onSeek(Math.min(Math.max(moves[event.key], 0), this.seconds), false);
  }
}

// ---------------------------------------------------------------------------------------------
// The page

const transcript = new Transcript($('transcript'));
const timeline = new Timeline($('timeline'));
let source = null; // the live EventSource
let following = 0; // requestAnimationFrame id while playing

function seek(seconds, play = true) {
  if (!player.src) return;
  player.currentTime = Math.max(0, seconds);
  note('seek', seconds);
  sync();
  if (play) player.play().catch((e) => note('play-refused', String(e)));
}
transcript.onSeek = seek;
timeline.onSeek = seek;

function sync() {
  const t = player.currentTime || 0;
  transcript.highlight(t * 1000);
  timeline.at(t);
}

function follow() {
  sync();
  following = player.paused ? 0 : requestAnimationFrame(follow);
}

player.addEventListener('timeupdate', sync);
player.addEventListener('seeked', sync);
player.addEventListener('play', () => { if (!following) following = requestAnimationFrame(follow); });
player.addEventListener('error', () => {
  const code = player.error ? player.error.code : 0;
  if (player.src) $('no-audio').textContent = `The audio could not be played (media error ${code}).`;
  $('no-audio').hidden = !player.src;
});

function heading(call, start = {}) {
  const result = {...start, ...(call.result || {})};
  const carrier = result.source || (sid.startsWith('WB') ? 'browser' : 'phone');
  const who = result.from_last4 ? ` from ${masked(result.from_last4)}` : '';
  const kind = {phone: 'Phone call', browser: 'Browser call'}[carrier] || 'Call';
  const mode = (call.mode || result.mode) === 'listen' ? ' (listen-only)' : '';
  $('title').textContent = `${kind}${mode}${who}`;
  document.title = `${kind}${who} · ${clock((call.duration_s || 0) * 1000)} · Callscribe`;
}

// kind: live, recovered, failed or unfinished (dashboard.css's badge-<kind>).
function badge(text, kind) {
  const b = $('badge');
  b.textContent = text;
  b.className = `badge badge-${kind}`;
  b.hidden = !text;
}

// ---- a recorded call

function showPlayer(call) {
  const files = (call.result || {}).files || {};
  const links = call.files || {};
  const choices = [];
  if (files.conversation) choices.push(['Conversation', files.conversation]);
  const other = (call.mode || (call.result || {}).mode) === 'listen' ? 'Other party only' : 'Assistant only';
  for (const name of files.tracks || []) {
    choices.push([name.includes('_caller.') ? 'Caller only' : other, name]);
  }
  const select = $('track');
  const keep = select.value;
  select.replaceChildren(...choices.map(([label, name]) => el('option', {value: name, text: label})));
  $('track-row').hidden = choices.length < 2;
  $('player-panel').hidden = false;
  if (!choices.length) {
    player.removeAttribute('src');
    player.hidden = true;
    const error = ((call.result || {}).audio || {}).error;
    $('no-audio').textContent = error ? `No audio file: ${error}.` : 'This call has no audio file.';
    $('no-audio').hidden = false;
    return;
  }
  player.hidden = false;
  $('no-audio').hidden = true;
  if (choices.some(([, name]) => name === keep)) select.value = keep;
  else select.value = choices[0][1];
  load(links[select.value] || `${base}/files/${encodeURIComponent(select.value)}`);
}

// A new source for the player that keeps the position (and plays on if it was playing).
function load(url) {
  const absolute = new URL(url, location.href).href;
  if (player.src === absolute) return;
  const at = player.currentTime || 0;
  const playing = player.src && !player.paused;
  player.src = absolute;
  if (at) player.addEventListener('loadedmetadata', () => { player.currentTime = at; }, {once: true});
  if (playing) player.play().catch((e) => note('play-refused', String(e)));
  note('audio', absolute);
}

$('track').addEventListener('change', () => {
  const links = (view.call && view.call.files) || {};
  const name = $('track').value;
  load(links[name] || `${base}/files/${encodeURIComponent(name)}`);
});

function showTranscript(turns) {
  $('transcript-hint').textContent = 'Click a line (or focus it and press Enter) to hear it.';
  transcript.clear();
  for (const turn of turns || []) transcript.add(turn);
  $('transcript-panel').hidden = false;
  $('transcript-empty').hidden = transcript.turns.length > 0;
  sync();
}

function figure(list, label, value, key) {
  if (value === undefined || value === null || value === '') return;
  list.append(el('div', {className: 'figure', 'data-figure': key},
    el('dt', {text: label}), el('dd', {text: String(value)})));
}

function showSummary(call) {
  const r = call.result || {};
  const stats = r.stats || {};
  const audio = r.audio || {};
  const list = $('figures');
  list.replaceChildren();
  const other = (r.mode || call.mode) === 'listen' ? 'Other party' : 'Assistant';
  figure(list, 'Started', when(r.started_at || call.started_at), 'started');
  figure(list, 'Duration', spoken(r.duration_s ?? call.duration_s), 'duration');
  const parts = [];
  if (stats.caller_turns) parts.push(`${stats.caller_turns} caller`);
  if (stats.assistant_turns) parts.push(`${stats.assistant_turns} assistant`);
  if (stats.other_turns) parts.push(`${stats.other_turns} other party`);
  figure(list, 'Turns', `${stats.turns ?? (r.turns || []).length}${parts.length ? ` (${parts.join(', ')})` : ''}`,
         'turns');
  figure(list, 'Barge-ins', stats.barge_ins ?? 0, 'barge-ins');
  const latency = stats.response_latency || {};
  figure(list, 'Response latency', latency.count
    ? `median ${Math.round(latency.median_ms)} ms, worst ${Math.round(latency.worst_ms)} ms (${latency.count} ${latency.count === 1 ? 'reply' : 'replies'})`
    : 'no replies measured', 'latency');
  const talk = stats.talk_seconds || {};
  if (talk.inbound !== undefined) {
    figure(list, 'Talk time', `caller ${spoken(talk.inbound)}, ${other.toLowerCase()} ${spoken(talk.outbound)}`
      + (talk.overlap ? `, both at once ${spoken(talk.overlap)}` : ''), 'talk');
  }
  if (stats.dtmf_count) figure(list, 'Keys pressed', (r.dtmf || []).map((d) => d.digit).join(' '), 'dtmf');
  figure(list, 'End', r.end_reason || '—', 'end-reason');
  const format = [String(audio.format || '').toUpperCase(), audio.settings,
                  audio.sample_rate ? `${audio.sample_rate} Hz` : '',
                  audio.channels ? (audio.channels === 2 ? 'stereo' : 'mono') : '', bytes(audio.bytes)];
  figure(list, 'Audio', format.filter(Boolean).join(', ') || 'none', 'audio');
  if (r.recovered) figure(list, 'Recovered', `yes: the server stopped during the call; finalised ${when(r.recovered_at)}`,
                          'recovered');
  if (audio.error) figure(list, 'Audio failed', audio.error, 'audio-error');
  if (call.transcript_pending) figure(list, 'Transcript', 'still being written…', 'pending');

  const notes = r.notes || [];
  $('notes-list').replaceChildren(...notes.map((n) => el('li', {text: typeof n === 'string' ? n : JSON.stringify(n)})));
  $('notes').hidden = !notes.length;
  const warnings = r.warnings || [];
  $('warnings-list').replaceChildren(...warnings.map((w) => el('li', {text: w})));
  $('warnings').hidden = !warnings.length;
  $('summary-panel').hidden = false;
}

const KIND_LABELS = [
  [/_conversation\.(\w+)$/, (m) => `Recording (${m[1].toUpperCase()})`],
  [/_caller\.(\w+)$/, (m) => `Caller track (${m[1].toUpperCase()})`],
  [/_other\.(\w+)$/, (m) => `Assistant / other party track (${m[1].toUpperCase()})`],
  [/_turn(\d+)_(\w+)\.(\w+)$/, (m) => `Turn ${Number(m[1])}, ${m[2]} (${m[3].toUpperCase()})`],
  [/_summary\.txt$/, () => 'Summary (text)'],
  [/_timeline\.svg$/, () => 'Timeline picture (SVG)'],
  [/\.txt$/, () => 'Transcript (text)'],
  [/\.json$/, () => 'Call data (JSON)'],
];

function label(name) {
  for (const [re, make] of KIND_LABELS) {
    const m = name.match(re);
    if (m) return make(m);
  }
  return name;
}

let formats = null;

async function showDownloads(call) {
  const links = call.files || {};
  const audio = (call.result || {}).audio || {};
  const items = Object.entries(links).sort(([a], [b]) => (a.includes('_conversation.') ? -1 : b.includes('_conversation.') ? 1 : 0));
  $('files').replaceChildren(...items.map(([name, url]) => el('li', {},
    el('a', {href: url, download: name, 'data-file': name, text: label(name)}),
    el('span', {className: 'hint', text: ` ${name}${name === audio.file && audio.bytes ? `, ${bytes(audio.bytes)}` : ''}`}))));
  $('downloads-panel').hidden = false;
  try {
    formats = formats || (await (await api('/audio/formats')).json()).formats || [];
  } catch (e) {
    $('formats').replaceChildren(el('span', {className: 'hint', text: `Formats unavailable: ${e.message}`}));
    return;
  }
  const current = audio.format;
  const box = $('formats');
  box.replaceChildren(...formats.filter((f) => f.name !== current).map((f) => {
    const button = el('button', {type: 'button', 'data-format': f.name, title: f.description || '',
                                 text: `${f.name.toUpperCase()}${f.lossless ? ' (lossless)' : ''}`});
    button.addEventListener('click', () => exportAs(f.name));
    return button;
  }));
  $('formats-row').hidden = !box.children.length;
}

async function exportAs(format) {
  const status = $('export-status');
  const buttons = [...$('formats').querySelectorAll('button')];
  buttons.forEach((b) => { b.disabled = true; });
  $('export-error').textContent = '';
  status.textContent = `Making the ${format.toUpperCase()} file…`;
  try {
    const response = await api(`/audio/set-format/${encodeURIComponent(sid)}`, {
      method: 'POST', headers: {'Content-Type': 'application/json'}, body: JSON.stringify({format})});
    const done = await response.json();
    note('exported', done);
    const call = await fetchCall();
    view.call = call;
    showPlayer(call);
    showSummary(call);
    await showDownloads(call);
    const name = done.file || ((call.result || {}).audio || {}).file;
    const url = (call.files || {})[name];
    status.replaceChildren(`The recording is now ${format.toUpperCase()}${done.settings ? ` (${done.settings})` : ''}: `,
      url ? el('a', {href: url, download: name, 'data-new-file': name, text: `download ${name}`}) : name || '');
  } catch (e) {
    status.textContent = '';
    $('export-error').textContent = e.status === 409 ? `Not possible: ${e.message}.` : `The export failed: ${e.message}`;
    note('export-failed', {status: e.status, message: e.message});
  } finally {
    buttons.forEach((b) => { b.disabled = false; });
  }
}

async function fetchCall() {
  return (await api(base)).json();
}

async function showRecorded(call) {
  view.mode = 'recorded';
  main.dataset.mode = 'recorded';
  view.call = call;
  heading(call);
  const failed = ((call.result || {}).audio || {}).error;
  if (failed) badge('audio failed', 'failed');
  else if (call.recovered) badge('recovered', 'recovered');
  else badge('', 'finalized');
  setStatus(`Recorded ${when(call.started_at)} · ${spoken(call.duration_s)}`);
  showPlayer(call);
  showTranscript((call.result || {}).turns);
  showSummary(call);
  $('timeline-panel').hidden = false;
  $('delete-panel').hidden = false;
  const pictured = timeline.load().then(() => {
    $('timeline-note').textContent = 'Click the picture (or focus it and use the arrow keys) to hear that moment.';
    sync();
  }).catch((e) => {
    view.timeline = 'error';
    $('timeline-note').textContent = `The timeline could not be shown: ${e.message}`;
  });
  await Promise.all([pictured, showDownloads(call)]);
  main.setAttribute('aria-busy', 'false');
  if (call.transcript_pending) waitForTranscript();
}

// Turns still being transcribed at hang-up are written a moment later: ask again until they are.
async function waitForTranscript() {
  for (let i = 0; i < 60; i += 1) {
    await sleep(2000);
    let call;
    try { call = await fetchCall(); } catch { continue; }
    if (!call.transcript_pending) {
      view.call = call;
      showTranscript((call.result || {}).turns);
      showSummary(call);
      await showDownloads(call);
      return;
    }
  }
}

// ---- a live call

function showLive(call) {
  view.mode = 'live';
  main.dataset.mode = 'live';
  view.call = call;
  heading(call);
  badge('live', 'live');
  setStatus(`In progress since ${when(call.started_at)}`);
  transcript.clear();
  $('transcript-panel').hidden = false;
  $('transcript-empty').hidden = true;
  $('transcript-hint').textContent = 'Lines appear as they are spoken; once the call ends, a click on one plays it.';
  $('timeline-panel').hidden = false;
  $('timeline-note').textContent = 'The picture grows as the call goes on; the recording plays here when it ends.';
  const list = $('figures');
  list.replaceChildren();
  figure(list, 'Started', when(call.started_at), 'started');
  figure(list, 'So far', '0 s', 'elapsed');
  $('summary-panel').hidden = false;
  main.setAttribute('aria-busy', 'false');
  subscribe(call);
}

function subscribe(call) {
  source = new EventSource(`${base}/live`);
  let lanes = null;
  const ensureLanes = (mode, rate) => {
    if (lanes) return;
    lanes = ['caller', mode === 'listen' ? 'other party' : 'assistant'];
    timeline.startLive(lanes, rate || (sid.startsWith('WB') ? 16000 : 8000));
  };
  const on = (kind, handle) => source.addEventListener(kind, (e) => {
    let data = null;
    try { data = JSON.parse(e.data); } catch { return; }
    note(`sse-${kind}`, data);
    handle(data);
  });
  on('start', (r) => {
    heading(call, r);
    ensureLanes(r.mode || call.mode, r.rate);
  });
  on('turn', (r) => {
    ensureLanes(call.mode);
    transcript.add(r);
    $('transcript-empty').hidden = true;
    if (r.interrupted && !['hangup', 'connection lost', 'paused'].includes(r.cut_by)) {
      timeline.marker('barge-in', Number(r.end_sample), `${clock(Number(r.end_ms))} barge-in`);
    }
  });
  on('dtmf', (r) => {
    ensureLanes(call.mode);
    timeline.marker('dtmf', Number(r.at_sample), `${clock(Number(r.at_ms))} DTMF: pressed ${r.digit}`);
  });
  on('disconnected', (r) => {
    ensureLanes(call.mode);
    timeline.marker('disconnected', Number(r.at_sample), `${clock(Number(r.at_ms))} the connection dropped`);
  });
  on('progress', (p) => {
    ensureLanes(call.mode, p.rate);
    timeline.grow(p.samples);
    const fig = main.querySelector('[data-figure="elapsed"] dd');
    if (fig) fig.textContent = spoken(p.seconds);
    setStatus(`Live · ${clock(p.seconds * 1000)}`);
  });
  on('spans', (s) => { ensureLanes(call.mode); timeline.spans(s.lane, s.from, s.spans); });
  on('stop', () => setStatus('The call has ended; writing its recording…'));
  on('ended', () => { source.close(); source = null; becomeRecorded(); });
  on('unfinished', (u) => {
    source.close();
    source = null;
    badge('unfinished', 'unfinished');
    setStatus(u.message || 'Nobody is recording this call any more.');
  });
  on('timeout', (u) => { source.close(); source = null; setStatus(u.message); });
  source.addEventListener('error', () => {
    if (!source) return;
    if (source.readyState === EventSource.CLOSED) {
      note('sse-closed', null);
      source = null;
      setStatus('Live updates stopped; checking the call…');
      pollUntilRecorded();
    } else {
      setStatus('Connection lost: reconnecting…');
    }
  });
}

// The event stream is gone for good (e.g. refused): ask for the call until it is recorded.
async function pollUntilRecorded() {
  for (;;) {
    await sleep(3000);
    let call;
    try { call = await fetchCall(); } catch { continue; }
    if (call.state === 'finalized') { await showRecorded(call); return; }
    if (call.state !== 'live') { setStatus('The call was left unfinished (the server stopped during it).'); return; }
  }
}

async function becomeRecorded() {
  setStatus('The call has ended; writing its recording…');
  for (let i = 0; i < 40; i += 1) {
    let call = null;
    try { call = await fetchCall(); } catch (e) { note('refetch-failed', e.message); }
    if (call && call.state === 'finalized' && call.result && Object.keys(call.result).length) {
      await showRecorded(call);
      return;
    }
    await sleep(500);
  }
  setStatus('The call ended, but its recording is not ready yet: reload the page in a moment.');
}

// ---- deletion

$('delete').addEventListener('click', async () => {
  const call = view.call || {};
  const answer = await confirmDelete({
    sid, opener: $('delete'), fallback: $('title'),
    description: `${$('title').textContent}, ${when(call.started_at)} (${spoken(call.duration_s)}).`});
  if (answer) {
    note('deleted', answer);
    location.assign('/');
  }
});

// ---- start

async function start() {
  if (!/^(CA|WB)[0-9a-f]{32}$/.test(sid || '')) {
    showError('This page was served without a call id.');
    view.mode = 'error';
    return;
  }
  let call;
  try {
    call = await fetchCall();
  } catch (e) {
    showError(e.status === 404 ? `No call ${sid} has been recorded.` : `The call could not be loaded: ${e.message}`);
    setStatus('');
    view.mode = 'error';
    main.dataset.mode = 'error';
    return;
  }
  if (call.state === 'live') showLive(call);
  else if (call.state === 'finalized') await showRecorded(call);
  else {
    view.call = call;
    view.mode = 'unfinished';
    main.dataset.mode = 'unfinished';
    heading(call);
    badge('unfinished', 'unfinished');
    setStatus('The server stopped during this call: it is finalised at the next start (or `callscribe recover`).');
  }
}

start();
