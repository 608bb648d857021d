// The microphone → PCM16 LE mono 16 kHz, in chunks of 100 ms (1600 samples, 3200 bytes).
//
// Runs in the AudioWorkletGlobalScope at the AudioContext's rate (`sampleRate`, often 48 or
// 44.1 kHz). The page feeds it the microphone delayed a little (so the start of a word is not
// lost while the VAD makes up its mind) and tells it when to record:
//   {type: 'start', gen}  start a fresh chunk; every chunk is posted as {type: 'chunk', gen, pcm}
//   {type: 'stop'}        stop and discard the partial chunk (as Micdrop does)
// and, recording or not, posts {type: 'tick'} every 100 ms of audio: the VAD's clock, which
// keeps time in a hidden tab where the page's timers are slowed down.
// `gen` lets the page ignore chunks that were already in flight when it stopped.
//
// Micdrop resamples each chunk on its own by linear interpolation, with no anti-alias filter.
// Here one resampler runs over the whole stream, so nothing jumps at chunk edges, and the signal
// is low-passed (a 127-tap Blackman-windowed sinc, cut at 7 kHz) before it is decimated, so
// energy above 8 kHz does not fold back into the speech band. The filter is only evaluated at
// the two input points each output sample interpolates between: about 4 M multiply-adds a
// second at 48 kHz.

const TARGET_RATE = 16000;
const CHUNK_SAMPLES = 1600; // 100 ms at 16 kHz
const TAPS = 127;
const HALF = (TAPS - 1) / 2;
const CUTOFF_HZ = 7000;
const TICK_S = 0.1;

function lowPassTaps(rate) {
  const fc = CUTOFF_HZ / rate; // cycles per sample
  const taps = new Float32Array(TAPS);
  let sum = 0;
  for (let i = 0; i < TAPS; i++) {
    const n = i - HALF;
    const sinc = n === 0 ? 2 * fc : Math.sin(2 * Math.PI * fc * n) / (Math.PI * n);
    const w = 0.42 - 0.5 * Math.cos((2 * Math.PI * i) / (TAPS - 1)) + 0.08 * Math.cos((4 * Math.PI * i) / (TAPS - 1));
    taps[i] = sinc * w;
    sum += taps[i];
  }
  for (let i = 0; i < TAPS; i++) taps[i] /= sum; // unity gain at 0 Hz
  return taps;
}

class StreamResampler {
  constructor(inRate) {
    this.step = inRate / TARGET_RATE; // input samples per output sample
    this.filtered = inRate > TARGET_RATE;
    this.taps = this.filtered ? lowPassTaps(inRate) : null;
    this.margin = this.filtered ? HALF : 0;
    this.buf = new Float32Array(16384);
    this.len = 0;
    this.pos = this.margin; // where the next output sample sits, in `buf` indices
  }

  at(i) {
    if (!this.filtered) return this.buf[i];
    const b = this.buf, t = this.taps, start = i - HALF;
    let acc = 0;
    for (let k = 0; k < TAPS; k++) acc += b[start + k] * t[k];
    return acc;
  }

  // Append input; call emit(sample) for every output sample it completes.
  push(input, emit) {
    if (this.len + input.length > this.buf.length) {
      const bigger = new Float32Array((this.len + input.length) * 2);
      bigger.set(this.buf.subarray(0, this.len));
      this.buf = bigger;
    }
    this.buf.set(input, this.len);
    this.len += input.length;
    while (true) {
      const i = Math.floor(this.pos);
      if (i + 1 + this.margin >= this.len) break;
      const frac = this.pos - i;
      const a = this.at(i);
      emit(frac === 0 ? a : a + (this.at(i + 1) - a) * frac);
      this.pos += this.step;
    }
    // Drop what no future output needs.
    const keep = Math.floor(this.pos) - this.margin;
    if (keep > 0) {
      this.buf.copyWithin(0, keep, this.len);
      this.len -= keep;
      this.pos -= keep;
    }
  }
}

class CaptureProcessor extends AudioWorkletProcessor {
  constructor() {
    super();
    this.resampler = new StreamResampler(sampleRate);
    this.recording = false;
    this.gen = 0;
    this.chunk = new Int16Array(CHUNK_SAMPLES);
    this.fill = 0;
    this.tickFrames = Math.round(sampleRate * TICK_S);
    this.sinceTick = 0;
    this.emit = (x) => this.onSample(x);
    this.port.onmessage = (e) => {
      const m = e.data || {};
      if (m.type === 'start') {
        this.recording = true;
        this.gen = m.gen;
        this.fill = 0;
      } else if (m.type === 'stop') {
        this.recording = false;
        this.fill = 0; // the partial chunk is dropped, as Micdrop does
      }
    };
  }

  onSample(x) {
    if (!this.recording) return;
    const s = x < -1 ? -1 : x > 1 ? 1 : x;
    this.chunk[this.fill++] = s < 0 ? s * 0x8000 : s * 0x7fff;
    if (this.fill === CHUNK_SAMPLES) {
      const pcm = this.chunk.buffer;
      this.port.postMessage({ type: 'chunk', gen: this.gen, pcm }, [pcm]);
      this.chunk = new Int16Array(CHUNK_SAMPLES);
      this.fill = 0;
    }
  }

  process(inputs) {
    const channel = inputs[0] && inputs[0][0];
    // The resampler runs even when not recording, so its filter history is warm at a turn's start.
    if (channel) this.resampler.push(channel, this.emit);
    this.sinceTick += 128;
    if (this.sinceTick >= this.tickFrames) {
      this.sinceTick -= this.tickFrames;
      this.port.postMessage({ type: 'tick' });
    }
    return true;
  }
}

registerProcessor('callscribe-capture', CaptureProcessor);
