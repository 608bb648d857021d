// The browser call page: the microphone, a volume VAD, playback, and the Micdrop protocol over
// WS /web-call, behaving on the wire like the Micdrop client 2.2.9.
//
// What goes on the wire (see micdrop-protocol.md):
//   → the params JSON first on every (re)connection: {callId, client, authorization?}
//   → StartSpeaking, then PCM16 16 kHz chunks, then StopSpeaking (audio only inside a turn)
//   → Mute when the call is paused
//   ← Message <json>, CancelLastUserMessage, SkipAnswer, EndCall, ToolCall <json>, PCM16 16 kHz,
//     and our extension `Call {"sid", "resumed", "recording"}` (the Micdrop client ignores it).
//
// Parts, each a small class: Capture (mic, analysers, worklet), VolumeVad (Micdrop's VolumeVAD),
// Player (Micdrop's Pcm16AudioStream), and CallPage, which owns the socket and the screen.
//
// For tests, `window.callscribe` exposes {state, conversation, sid, callId, events}.

const VAD_THRESHOLD_DB = -55; // loudest FFT bin, as Micdrop's VolumeVAD
const VAD_HISTORY = 5;
// The worklet hears the mic this much later than the VAD, so a turn's first syllable is kept
// while the VAD decides (Micdrop: 100 ms; 200 ms keeps a little more of the onset, and the ~500 ms
// the VAD waits before it ends a turn still covers the trailing speech).
const CAPTURE_DELAY_S = 0.2;
const PLAYBACK_RATE = 16000;
const PREBUFFER_MS = 100;
const QUIET_FLUSH_MS = 600;
const UTTERANCE_END_MS = 300;
const RECONNECT_DELAY_MS = 1000;
const MAX_RECONNECT_ATTEMPTS = 30;
const CONNECT_TIMEOUT_MS = 5000;
const MAX_EVENTS = 20000;
const ASSETS = '/call/assets/';

const STATE_TEXT = {
  idle: 'Not in a call',
  starting: 'Starting…',
  started: 'In the call',
  listening: 'Listening: speak when you are ready',
  'user-speaking': 'You are speaking',
  processing: 'The assistant is thinking…',
  'assistant-speaking': 'The assistant is speaking',
  reconnecting: 'Connection lost: reconnecting…',
  stopped: 'Call ended',
};

// ---------------------------------------------------------------------------------------------
// Capture: the microphone into an analyser (VAD), a second one (level meter) and the worklet.

class Capture {
  constructor(ctx, stream, onChunk) {
    this.ctx = ctx;
    this.stream = stream;
    this.onChunk = onChunk;
    this.gen = 0;
    this.recording = false;
  }

  async start() {
    const ctx = this.ctx;
    await ctx.audioWorklet.addModule(ASSETS + 'capture-worklet.js');
    this.source = ctx.createMediaStreamSource(this.stream);
    this.vadAnalyser = ctx.createAnalyser();
    this.vadAnalyser.fftSize = 512;
    this.vadAnalyser.smoothingTimeConstant = 0.1;
    this.levelAnalyser = ctx.createAnalyser();
    this.levelAnalyser.fftSize = 1024;
    this.delay = ctx.createDelay(1);
    this.delay.delayTime.value = CAPTURE_DELAY_S;
    this.worklet = new AudioWorkletNode(ctx, 'callscribe-capture', {
      numberOfInputs: 1, numberOfOutputs: 1, outputChannelCount: [1], channelCount: 1, channelCountMode: 'explicit',
    });
    this.onTick = () => {};
    this.worklet.port.onmessage = (e) => {
      const m = e.data;
      if (!m) return;
      if (m.type === 'tick') this.onTick();
      else if (m.type === 'chunk' && this.recording && m.gen === this.gen) this.onChunk(m.pcm);
    };
    // A silent sink keeps every node pulled by the graph without anything reaching the speakers.
    this.sink = ctx.createGain();
    this.sink.gain.value = 0;
    this.source.connect(this.vadAnalyser);
    this.source.connect(this.levelAnalyser);
    this.source.connect(this.delay);
    this.delay.connect(this.worklet);
    this.vadAnalyser.connect(this.sink);
    this.levelAnalyser.connect(this.sink);
    this.worklet.connect(this.sink);
    this.sink.connect(ctx.destination);
    this.levelData = new Float32Array(this.levelAnalyser.fftSize);
  }

  record() {
    this.gen += 1;
    this.recording = true;
    this.worklet.port.postMessage({ type: 'start', gen: this.gen });
  }

  halt() {
    this.recording = false;
    this.gen += 1; // chunks already in flight are ignored
    this.worklet?.port.postMessage({ type: 'stop' });
  }

  // 0..1: RMS of the last ~20 ms, on a -60..0 dB scale.
  level() {
    if (!this.levelAnalyser) return 0;
    this.levelAnalyser.getFloatTimeDomainData(this.levelData);
    let sum = 0;
    for (const x of this.levelData) sum += x * x;
    const db = 10 * Math.log10(sum / this.levelData.length + 1e-12);
    return Math.max(0, Math.min(1, (db + 60) / 60));
  }

  stop() {
    this.halt();
    for (const node of [this.source, this.vadAnalyser, this.levelAnalyser, this.delay, this.worklet, this.sink]) {
      try { node?.disconnect(); } catch { /* already disconnected */ }
    }
    if (this.worklet) this.worklet.port.onmessage = null;
    for (const track of this.stream.getTracks()) track.stop();
  }
}

// ---------------------------------------------------------------------------------------------
// VolumeVad: Micdrop's VolumeVAD (after hark). Every 100 ms a poll is "loud" when the loudest FFT
// bin is above the threshold. With the last polls kept in `history`:
//   maybe     2nd loud poll (1 loud among the last 3, and this one)   → start recording, queue
//   confirmed 3rd loud poll (2 loud among the last 3, and this one)   → StartSpeaking
//   cancelled a quiet poll right after a quiet one while only "maybe" → drop the queue
//   stopped   a quiet poll after 5 quiet ones                         → StopSpeaking
// The polls are timed by the worklet (every 100 ms of audio), not by setInterval: Chrome slows
// the timers of a hidden tab to once a second, and a caller who switched tabs would wait seconds
// to be heard.

class VolumeVad {
  constructor(analyser, handlers) {
    this.analyser = analyser;
    this.bins = new Float32Array(analyser.frequencyBinCount);
    this.on = handlers; // {maybe, confirm, cancel, stop}
    this.history = new Array(VAD_HISTORY).fill(0);
    this.speaking = false;
    this.attempting = false;
    this.running = false;
  }

  loudest() {
    this.analyser.getFloatFrequencyData(this.bins);
    let max = -Infinity;
    for (let i = 4; i < this.bins.length; i++) {
      const v = this.bins[i];
      if (v > max && v < 0) max = v;
    }
    return max;
  }

  poll() {
    const loud = this.loudest() > VAD_THRESHOLD_DB;
    const h = this.history;
    if (loud) {
      if (!this.speaking) {
        const recent = h[h.length - 3] + h[h.length - 2] + h[h.length - 1];
        if (recent >= 2) {
          this.speaking = true;
          this.attempting = false;
          this.on.confirm();
        } else if (recent === 1 && !this.attempting) {
          this.attempting = true;
          this.on.maybe();
        }
      }
    } else if (this.speaking) {
      if (h.every((x) => x === 0)) {
        this.speaking = false;
        this.on.stop();
      }
    } else if (this.attempting && h[h.length - 1] === 0) {
      this.attempting = false;
      this.on.cancel();
    }
    h.shift();
    h.push(loud ? 1 : 0);
  }

  // Every 100 ms of audio (Capture's tick).
  tick() {
    if (this.running) this.poll();
  }

  resume() {
    this.running = true;
  }

  // Stop polling; a turn in progress ends (stop) or is dropped (cancel), as Micdrop's pause().
  pause() {
    this.running = false;
    const wasSpeaking = this.speaking, wasAttempting = this.attempting;
    this.speaking = false;
    this.attempting = false;
    this.history.fill(0);
    if (wasSpeaking) this.on.stop();
    else if (wasAttempting) this.on.cancel();
  }
}

// ---------------------------------------------------------------------------------------------
// Player: each binary frame (PCM16 LE mono 16 kHz) becomes one AudioBuffer scheduled right after
// the previous one. An utterance starts once 100 ms are buffered, or 600 ms after the last frame
// if less came. Running dry is taken as the end of the utterance only after 300 ms of nothing,
// so a late frame plays at once instead of waiting for a new prebuffer.

class Player {
  constructor(ctx, onPlayingChange) {
    this.ctx = ctx;
    this.onPlayingChange = onPlayingChange;
    this.out = ctx.createGain();
    this.out.connect(ctx.destination);
    this.nodes = [];
    this.nextStart = 0;
    this.playing = false;
    this.prebuffering = true;
    this.pending = [];
    this.pendingMs = 0;
    this.quietTimer = null;
    this.endTimer = null;
  }

  // True when nothing is playing or waiting to play.
  get idle() { return !this.playing && this.pending.length === 0; }

  push(arrayBuffer) {
    const pcm = new Int16Array(arrayBuffer);
    if (pcm.length === 0) return;
    const buffer = this.ctx.createBuffer(1, pcm.length, PLAYBACK_RATE);
    const data = buffer.getChannelData(0);
    for (let i = 0; i < pcm.length; i++) data[i] = pcm[i] / 32768;
    this.clearTimer('endTimer');
    if (!this.prebuffering) {
      this.schedule(buffer);
      return;
    }
    this.pending.push(buffer);
    this.pendingMs += buffer.duration * 1000;
    if (this.pendingMs >= PREBUFFER_MS) {
      this.flush();
      return;
    }
    this.clearTimer('quietTimer');
    this.quietTimer = setTimeout(() => this.flush(), QUIET_FLUSH_MS);
  }

  flush() {
    this.clearTimer('quietTimer');
    this.prebuffering = false;
    const buffers = this.pending;
    this.pending = [];
    this.pendingMs = 0;
    for (const b of buffers) this.schedule(b);
  }

  schedule(buffer) {
    const node = this.ctx.createBufferSource();
    node.buffer = buffer;
    node.connect(this.out);
    const start = Math.max(this.nextStart, this.ctx.currentTime);
    this.nextStart = start + buffer.duration;
    node.onended = () => {
      const i = this.nodes.indexOf(node);
      if (i !== -1) this.nodes.splice(i, 1);
      if (this.nodes.length === 0) {
        this.nextStart = 0;
        this.setPlaying(false);
        this.clearTimer('endTimer');
        this.endTimer = setTimeout(() => { this.endTimer = null; this.rearm(); }, UTTERANCE_END_MS);
      }
    };
    this.nodes.push(node);
    node.start(start);
    this.setPlaying(true);
  }

  // Everything scheduled stops now; frames waiting in the prebuffer are dropped too (unlike
  // Micdrop, where a barge-in during the prebuffer lets them play over the user later).
  stop() {
    for (const node of this.nodes) {
      node.onended = null;
      try { node.stop(); node.disconnect(); } catch { /* not started or already stopped */ }
    }
    this.nodes = [];
    this.nextStart = 0;
    this.clearTimer('endTimer');
    this.rearm();
    this.setPlaying(false);
  }

  rearm() {
    this.clearTimer('quietTimer');
    this.prebuffering = true;
    this.pending = [];
    this.pendingMs = 0;
  }

  clearTimer(name) {
    if (this[name] !== null) clearTimeout(this[name]);
    this[name] = null;
  }

  setPlaying(playing) {
    if (this.playing === playing) return;
    this.playing = playing;
    this.onPlayingChange(playing);
  }
}

// ---------------------------------------------------------------------------------------------
// Errors a person can act on. `code` goes to #error[data-code] (tests read it).

const CLOSE_ERRORS = {
  4400: ['bad-request', (reason) => `The server refused the call: ${reason || 'bad request'}.`],
  4401: ['unauthorized', (reason) => `The server refused the key or token${reason ? ` (${reason})` : ''}. `
    + 'Check it and press Start again.'],
  4404: ['not-found', (reason) => `The server does not know this call${reason ? ` (${reason})` : ''}.`],
};

function micError(err) {
  const name = err && err.name;
  if (name === 'NotAllowedError' || name === 'SecurityError' || name === 'PermissionDeniedError') {
    return ['mic-denied', 'The microphone is blocked. Allow this page to use it (the icon in the address bar), then press Start again.'];
  }
  if (name === 'NotFoundError' || name === 'DevicesNotFoundError' || name === 'OverconstrainedError') {
    return ['mic-missing', 'No microphone was found. Connect one, then press Start again.'];
  }
  if (name === 'NotReadableError' || name === 'AbortError' || name === 'TrackStartError') {
    return ['mic-missing', 'The microphone could not be opened: another application may be using it.'];
  }
  return ['mic-missing', `The microphone could not be started (${name || err}).`];
}

function newCallId() {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}

// ---------------------------------------------------------------------------------------------
// CallPage: one call at a time; the socket, its reconnects, and the screen.

class CallPage {
  constructor(doc) {
    this.$ = (id) => doc.getElementById(id);
    this.body = doc.body;
    this.events = [];
    this.conversation = [];
    this.sid = null;
    this.recording = null;
    this.phase = 'idle'; // idle | starting | live | stopped
    this.resetCallState();
    this.urlToken = new URLSearchParams(location.search).get('token') || '';
    this.authRequired = this.body.dataset.auth === 'required';
    this.bindUi();
    this.exposeForTests();
    if (!window.isSecureContext || !navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      this.setError('insecure', 'The microphone is only available on a secure page: open this page over https '
        + '(or on localhost).');
      this.$('start').disabled = true;
    }
    this.render();
  }

  resetCallState() {
    this.ws = null;
    this.everOpened = false;
    this.reconnecting = false;
    this.attempts = 0;
    this.failedInARow = 0;
    this.muted = false;
    this.paused = false;
    this.processing = false;
    this.userSpeaking = false; // from "confirmed" to StopSpeaking
    this.turnOnWire = false; // StartSpeaking went out for this turn
    this.queued = [];
    this.audioInBytes = 0;
    this.endCallPending = false;
    this.endCallTimer = null;
    this.timers = new Set();
  }

  // -- test hooks and the event log

  exposeForTests() {
    const page = this;
    window.callscribe = {
      get state() { return page.stateName(); },
      get conversation() { return page.conversation; },
      get sid() { return page.sid; },
      get callId() { return page.callId || null; },
      get events() { return page.events; },
    };
  }

  log(type, detail) {
    if (this.events.length >= MAX_EVENTS) this.events.splice(0, this.events.length - MAX_EVENTS + 1);
    this.events.push({ t: performance.now(), type, detail: detail === undefined ? null : detail });
  }

  // -- the screen

  bindUi() {
    this.$('start').addEventListener('click', () => this.start());
    this.$('auth-field').addEventListener('submit', (e) => { e.preventDefault(); this.start(); });
    // A pasted browser-call token (wct_…, from POST /web-call/tokens) is sent as it is.
    this.$('secret').addEventListener('input', (e) => {
      if (e.target.value.trim().startsWith('wct_')) this.$('secret-kind').value = 'token';
    });
    this.$('stop').addEventListener('click', () => this.stop({ reason: 'user' }));
    this.$('mute').addEventListener('click', () => (this.muted ? this.unmute() : this.mute()));
    this.$('pause').addEventListener('click', () => (this.paused ? this.resume() : this.pause()));
    if (this.authRequired || this.urlToken) {
      this.$('auth').hidden = false;
      this.$('auth-field').hidden = !!this.urlToken;
      this.$('auth-from-url').hidden = !this.urlToken;
    }
  }

  stateName() {
    if (this.phase === 'idle' || this.phase === 'stopped') return this.phase;
    if (this.phase === 'starting') return 'starting';
    if (this.reconnecting) return 'reconnecting';
    if (this.userSpeaking) return 'user-speaking';
    if (this.player && this.player.playing) return 'assistant-speaking';
    if (this.processing && !this.paused) return 'processing';
    if (this.muted || this.paused) return 'started';
    return 'listening';
  }

  render() {
    const state = this.stateName();
    const el = this.$('state');
    let text = STATE_TEXT[state];
    if (state === 'started') text = this.paused ? 'Call paused' : 'In the call: microphone muted';
    if (el.dataset.state !== state || el.textContent !== text) {
      el.dataset.state = state;
      el.textContent = text;
    }
    const inCall = this.phase === 'starting' || this.phase === 'live';
    this.$('start').disabled = inCall || this.$('error').dataset.code === 'insecure';
    this.$('stop').disabled = !inCall;
    this.$('mute').disabled = this.phase !== 'live' || this.endCallPending;
    this.$('pause').disabled = this.phase !== 'live' || this.endCallPending;
    this.$('mute').textContent = this.muted ? 'Unmute' : 'Mute';
    this.$('pause').textContent = this.paused ? 'Resume' : 'Pause';
    this.$('secret').disabled = inCall;
    this.$('secret-kind').disabled = inCall;
    const line = this.$('recording-line');
    if (this.phase === 'stopped' && this.recording) {
      this.$('recording').href = this.recording;
      line.hidden = false;
    } else {
      line.hidden = true;
    }
  }

  renderConversation() {
    const list = this.$('conversation');
    list.replaceChildren(...this.conversation.map((m) => {
      const li = document.createElement('li');
      const role = ['user', 'assistant', 'system'].includes(m.role) ? m.role : 'tool';
      li.className = role;
      if (role === 'tool') li.textContent = `${m.role === 'tool_result' ? 'Tool result' : 'Tool call'}: ${m.toolName || ''}`;
      else li.textContent = typeof m.content === 'string' ? m.content : JSON.stringify(m.content);
      return li;
    }));
  }

  setError(code, message) {
    const el = this.$('error');
    el.dataset.code = code;
    el.textContent = message;
  }

  clearError(codes) {
    const el = this.$('error');
    if (codes && !codes.includes(el.dataset.code)) return;
    delete el.dataset.code;
    el.textContent = '';
  }

  notice(text) { this.$('notice').textContent = text; }

  later(fn, ms) {
    const id = setTimeout(() => { this.timers.delete(id); fn(); }, ms);
    this.timers.add(id);
    return id;
  }

  cancelLater(id) {
    clearTimeout(id);
    this.timers.delete(id);
  }

  // -- the call

  authorization() {
    if (this.urlToken) return this.urlToken; // a token minted by the site's backend, sent as it is
    const value = this.$('secret').value.trim();
    if (!value) return null;
    if (this.$('secret-kind').value === 'token') return value;
    return `Bearer ${value.replace(/^bearer\s+/i, '')}`; // "Bearer <key>", whether or not it was typed
  }

  async start() {
    if (this.phase === 'starting' || this.phase === 'live') return;
    const authorization = this.authorization();
    if (this.authRequired && !authorization) {
      this.setError('missing-key', 'This server needs an API key or a browser-call token: enter one above, then press Start.');
      this.$('secret').focus();
      return;
    }
    this.clearError();
    this.notice('');
    this.resetCallState();
    this.phase = 'starting';
    this.processing = true; // as Micdrop: until the first audio or SkipAnswer
    this.conversation = [];
    this.renderConversation();
    this.sid = null;
    this.recording = null;
    this.callId = newCallId();
    this.params = { callId: this.callId, client: 'callscribe-page' };
    if (authorization) this.params.authorization = authorization;
    this.render();

    // The AudioContext is made inside the click, so the autoplay policy lets it run.
    const ctx = new AudioContext();
    this.ctx = ctx;
    ctx.resume().catch(() => {});
    let stream;
    try {
      stream = await navigator.mediaDevices.getUserMedia({ audio: { echoCancellation: true, noiseSuppression: true } });
    } catch (err) {
      if (this.ctx !== ctx) return; // stopped while the permission prompt was up
      const [code, message] = micError(err);
      this.setError(code, message);
      this.teardown();
      return;
    }
    if (this.ctx !== ctx) { // stopped while the permission prompt was up
      for (const t of stream.getTracks()) t.stop();
      return;
    }
    try {
      this.capture = new Capture(ctx, stream, (pcm) => this.onChunk(pcm));
      await this.capture.start();
    } catch (err) {
      this.setError('mic-missing', `The microphone could not be connected to the page (${err && err.message}).`);
      for (const t of stream.getTracks()) t.stop();
      this.teardown();
      return;
    }
    if (this.ctx !== ctx) return;
    this.player = new Player(ctx, (playing) => this.onPlayingChange(playing));
    this.vad = new VolumeVad(this.capture.vadAnalyser, {
      maybe: () => this.onMaybeSpeaking(),
      confirm: () => this.onConfirmSpeaking(),
      cancel: () => this.onCancelSpeaking(),
      stop: () => this.onStopSpeaking(),
    });
    this.capture.onTick = () => this.vad?.tick();
    this.meter();
    this.connect();
    this.$('stop').focus(); // Start is disabled now: keep the keyboard user in the controls
  }

  meter() {
    const bar = this.$('level');
    const fill = bar.firstElementChild;
    const tick = () => {
      if (!this.capture || this.phase === 'stopped') {
        fill.style.width = '0%';
        bar.setAttribute('aria-valuenow', '0');
        return;
      }
      const pct = Math.round(this.capture.level() * 100);
      fill.style.width = `${pct}%`;
      bar.setAttribute('aria-valuenow', String(pct));
      this.meterTimer = requestAnimationFrame(tick);
    };
    tick();
  }

  // -- the socket

  connect() {
    const url = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/web-call`;
    let ws;
    try {
      ws = new WebSocket(url);
    } catch (err) {
      this.setError('cannot-connect', `Cannot open a connection to the server (${err && err.message}).`);
      this.teardown();
      return;
    }
    ws.binaryType = 'arraybuffer';
    this.ws = ws;
    this.attempts += 1;
    let opened = false;
    const timeout = this.later(() => {
      if (ws.readyState === WebSocket.CONNECTING) ws.close(); // the browser reports 1006: retried
    }, CONNECT_TIMEOUT_MS);
    ws.onopen = () => {
      this.cancelLater(timeout);
      opened = true;
      this.onOpen();
    };
    ws.onmessage = (e) => this.onMessage(e.data);
    ws.onclose = (e) => {
      this.cancelLater(timeout);
      if (this.ws !== ws) return;
      this.onClose(e, opened);
    };
  }

  onOpen() {
    this.log('ws-open', { attempt: this.attempts });
    this.everOpened = true;
    this.attempts = 0;
    this.failedInARow = 0;
    this.reconnecting = false;
    this.phase = 'live';
    this.clearError(['cannot-connect', 'server-error']);
    this.ws.send(JSON.stringify(this.params)); // always the first frame, on every connection
    if (this.canListen()) this.vad.resume();
    this.render();
  }

  open() { return this.ws !== null && this.ws.readyState === WebSocket.OPEN; }

  send(data, command) {
    if (!this.open()) return false; // never on a socket that is not OPEN
    this.ws.send(data);
    if (command) this.log('sent-command', command);
    return true;
  }

  onClose(e, opened) {
    this.log('ws-close', { code: e.code, reason: e.reason, opened });
    this.ws = null;
    const code = e.code;
    if (this.endCallPending) { // the assistant already said goodbye: any close ends the call
      this.stop({ reason: 'server' });
      return;
    }
    if (code === 1000 || code === 1005 || (code >= 1012 && code <= 3999)) {
      this.notice(code === 1012 ? 'The server is restarting: the call has ended.' : 'The server ended the call.');
      this.stop({ reason: 'server' });
      return;
    }
    if (CLOSE_ERRORS[code]) {
      const [errCode, message] = CLOSE_ERRORS[code];
      this.setError(errCode, message(e.reason));
      this.stop({ reason: 'error' });
      return;
    }
    // 1001–1011 (but 1005), and any other 4xxx: try again every second, as Micdrop does.
    this.failedInARow = opened ? 0 : this.failedInARow + 1;
    if (this.attempts >= MAX_RECONNECT_ATTEMPTS) {
      this.setError('cannot-connect', `Could not reach the server after ${MAX_RECONNECT_ATTEMPTS} attempts. `
        + 'Check the connection, then press Start again.');
      this.stop({ reason: 'error' });
      return;
    }
    if (code === 1011) {
      this.setError('server-error', 'The server had a problem with this call. Reconnecting…');
    } else if (!opened && (this.failedInARow >= 2 || !this.everOpened)) {
      this.setError('cannot-connect', 'Cannot connect to the server. Still trying, every second…');
    }
    this.reconnecting = this.everOpened;
    this.vad.pause(); // nothing is captured while offline; a StopSpeaking here goes nowhere
    this.later(() => { if (this.phase === 'starting' || this.phase === 'live') this.connect(); }, RECONNECT_DELAY_MS);
    this.render();
  }

  onMessage(data) {
    if (typeof data !== 'string') {
      this.audioInBytes += data.byteLength;
      this.log('audio-in-bytes', this.audioInBytes);
      if (this.paused || this.userSpeaking) return; // dropped, as Micdrop does
      // An odd length is not PCM16: Micdrop fails on it and drops the frame; so do we.
      if (data.byteLength % 2 === 0) this.player.push(data);
      this.processing = false;
      this.render();
      return;
    }
    if (data.startsWith('Message')) {
      this.log('received-command', 'Message');
      try {
        const item = JSON.parse(data.substring(8));
        if (item && typeof item === 'object') {
          this.conversation = [...this.conversation, item];
          this.renderConversation();
        }
      } catch (err) {
        console.warn('callscribe: unreadable Message frame', err);
      }
    } else if (data.startsWith('ToolCall')) {
      this.log('received-command', 'ToolCall');
    } else if (data === 'CancelLastUserMessage') {
      this.log('received-command', data);
      const i = this.conversation.map((m) => m.role).lastIndexOf('user');
      if (i !== -1) {
        this.conversation = this.conversation.filter((_, j) => j !== i);
        this.processing = false;
        this.renderConversation();
      }
    } else if (data === 'SkipAnswer') {
      this.log('received-command', data);
      this.processing = false;
    } else if (data === 'EndCall') {
      this.log('received-command', data);
      this.endCall();
    } else if (data.startsWith('Call ')) { // our extension: which call and where its recording will be
      this.log('received-command', 'Call');
      try {
        const info = JSON.parse(data.substring(5));
        if (typeof info.sid === 'string') this.sid = info.sid;
        if (typeof info.recording === 'string' && info.recording.startsWith('/') && !info.recording.startsWith('//')) {
          this.recording = info.recording;
        }
      } catch (err) {
        console.warn('callscribe: unreadable Call frame', err);
      }
    }
    this.render();
  }

  // -- speech from the microphone

  onMaybeSpeaking() {
    this.queued = [];
    this.capture.record();
  }

  onConfirmSpeaking() {
    this.userSpeaking = true;
    this.processing = false;
    this.turnOnWire = this.send('StartSpeaking', 'StartSpeaking');
    if (!this.player.idle) {
      this.log('barge-in', { playing: this.player.playing });
      this.player.stop();
    }
    if (this.turnOnWire) for (const pcm of this.queued) this.send(pcm);
    this.queued = [];
    this.render();
  }

  onCancelSpeaking() {
    this.capture.halt();
    this.queued = [];
  }

  onStopSpeaking() {
    this.capture.halt(); // the partial chunk is dropped
    this.queued = [];
    this.userSpeaking = false;
    if (this.turnOnWire && this.send('StopSpeaking', 'StopSpeaking')) this.processing = true;
    this.turnOnWire = false;
    this.render();
  }

  onChunk(pcm) {
    if (!this.userSpeaking) {
      this.queued.push(pcm); // "maybe": kept until the VAD confirms or cancels
    } else if (this.turnOnWire) {
      this.send(pcm);
    }
  }

  onPlayingChange(playing) {
    this.log(playing ? 'playback-start' : 'playback-stop');
    this.render();
    if (!playing && this.endCallPending) this.finishEndCall();
  }

  // -- mute, pause

  // The VAD listens when the socket is open, unless muted, paused or the assistant ended the call.
  canListen() { return this.open() && !this.muted && !this.paused && !this.endCallPending; }

  mute() {
    if (this.muted || this.phase !== 'live') return;
    this.muted = true;
    this.vad.pause(); // sends StopSpeaking if the user was speaking; nothing else on the wire
    this.render();
  }

  unmute() {
    if (!this.muted) return;
    this.muted = false;
    if (this.canListen()) this.vad.resume();
    this.render();
  }

  pause() {
    if (this.paused || this.phase !== 'live') return;
    this.vad.pause();
    this.paused = true;
    this.processing = false;
    this.player.stop();
    this.send('Mute', 'Mute');
    this.render();
  }

  resume() {
    if (!this.paused) return;
    this.paused = false;
    if (this.canListen()) this.vad.resume();
    this.render();
  }

  // -- ending

  // EndCall: let what was received finish playing (and whatever still comes), then hang up.
  endCall() {
    if (this.endCallPending) return;
    this.endCallPending = true;
    this.vad.pause(); // the user is not heard any more (StopSpeaking if they were speaking)
    this.finishEndCall();
    this.render();
  }

  finishEndCall() {
    if (this.phase !== 'live') return;
    if (this.endCallTimer) this.cancelLater(this.endCallTimer);
    // Wait out the prebuffer's quiet flush, so a short goodbye still in it is played too.
    this.endCallTimer = this.later(() => {
      this.endCallTimer = null;
      if (this.player.idle) this.stop({ reason: 'assistant' });
      // else: playback-stop calls us again
    }, QUIET_FLUSH_MS + 100);
  }

  stop({ reason }) {
    if (this.phase !== 'starting' && this.phase !== 'live') return;
    if (this.endCallPending && reason === 'server' && this.player && !this.player.idle) {
      return; // the server closed after EndCall: the goodbye still plays, then finishEndCall stops
    }
    const ws = this.ws;
    this.ws = null;
    if (ws && (ws.readyState === WebSocket.OPEN || ws.readyState === WebSocket.CONNECTING)) {
      ws.onclose = null;
      ws.onmessage = null;
      ws.close(); // no code, as Micdrop's stop(): the server sees 1005
      this.log('ws-close', { code: null, by: 'page' });
    }
    if (this.endCallPending) this.notice('The assistant ended the call.');
    this.endCallPending = false;
    this.teardown();
  }

  // Microphone, playback, timers and audio graph off; the call is over.
  teardown() {
    for (const id of this.timers) clearTimeout(id);
    this.timers.clear();
    if (this.meterTimer) cancelAnimationFrame(this.meterTimer);
    this.vad?.pause();
    this.vad = null;
    this.userSpeaking = false;
    this.turnOnWire = false;
    this.capture?.stop();
    this.capture = null;
    this.player?.stop();
    this.player = null;
    this.ctx?.close().catch(() => {});
    this.ctx = null;
    this.reconnecting = false;
    this.processing = false;
    this.phase = this.everOpened ? 'stopped' : 'idle'; // a call that never connected did not end
    this.meter();
    this.render();
    const start = this.$('start');
    if (!start.disabled) start.focus();
  }
}

new CallPage(document);
