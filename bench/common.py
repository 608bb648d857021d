"""Shared bench helpers: paths, the test audio, a lean Twilio Media Streams client, server processes.

Stdlib only at import time (the load generator imports this module too). numpy/soundfile are
imported lazily by `prepare_audio`, which runs under the app's venv.

The messages, frames, sockets and the server process come from tests/support, as the e2e and
security tests use them. The lean client on top of them is what a benchmark needs to be cheap:
it builds Twilio-shaped JSON text with `%` formatting and writes client frames with a zero
masking key (the MASK bit is set as the RFC requires; a zero key makes masking a no-op for us,
the server still runs its unmasking code). It never uses the `websockets` library, so the sender
costs a few µs per message and the server is what gets measured.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import signal
import statistics
import sys
import time
from pathlib import Path
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # tests/support, and the app for prepare_audio
    sys.path.insert(0, str(ROOT))

from tests.support.frames import (  # noqa: E402
    CONNECTED, FIRST_TS, FRAME_BYTES, FRAME_MS, MEDIA, ZERO_KEY, frame_head, new_sid, start_msg, stop_msg,
    token_from, voice_form, ws_frame,
)
from tests.support.server import Server as AppServer, open_local  # noqa: E402
from tests.support.sockets import free_port, http_request, parse_response, ws_connect  # noqa: E402

BENCH = ROOT / "bench"
OUT = BENCH / "out"
CACHE = OUT / "cache"
WORK = OUT / "work"  # per-server recording directories (deleted after use)

LOOP_SECONDS = 60
LOOP_SLOTS = LOOP_SECONDS * 1000 // FRAME_MS  # 3000 frames per track in the audio loop

__all__ = ["BENCH", "CACHE", "FIRST_TS", "FRAME_BYTES", "FRAME_MS", "MEDIA", "OUT", "ROOT", "WORK", "LeanCall",
           "Server", "cpu_precise", "load_payloads", "log", "percentiles", "prepare_audio", "proc_rss_cpu", "spread"]


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# --------------------------------------------------------------------------- audio


def prepare_audio() -> tuple[Path, Path]:
    """60 s μ-law loops for the caller (inbound) and the other party (outbound), cached.

    Real speech from shared/testdata when present (librivox clips with pauses for the caller, a
    speech for the other side), else a speech-like synthetic signal. Every 20 ms frame is made to
    hold at least one non-zero sample, so a frame missing from a master (a hole is zeros) can be
    counted exactly.
    """
    CACHE.mkdir(parents=True, exist_ok=True)
    pin, pout = CACHE / "inbound.ulaw", CACHE / "outbound.ulaw"
    if pin.exists() and pout.exists() and pin.stat().st_size == pout.stat().st_size == LOOP_SLOTS * FRAME_BYTES:
        return pin, pout
    import numpy as np

    from app.audio import mulaw
    from app.audio.resample import resample

    n = LOOP_SECONDS * 8000
    speech = Path("/work/shared/testdata/speech")

    def load(p: Path) -> np.ndarray:
        import soundfile as sf

        x, sr = sf.read(str(p), dtype="float32", always_2d=True)
        return resample(x.mean(axis=1), sr, 8000)

    def fill(parts: list[np.ndarray], gap_s: float) -> np.ndarray:
        out = np.zeros(n, np.float32)
        pos = 0
        i = 0
        while pos < n and parts:
            p = parts[i % len(parts)]
            m = min(len(p), n - pos)
            out[pos:pos + m] = p[:m]
            pos += m + int(gap_s * 8000)
            i += 1
        return out

    rng = np.random.default_rng(7)
    clips = sorted(speech.glob("librivox-*.wav")) if speech.is_dir() else []
    long = speech / "jfk-inaugural-1961.flac"
    if clips and long.exists():
        a = fill([load(p) for p in clips], 1.2)
        b = load(long)
        b = np.resize(b[8000 * 5:], n).astype(np.float32)  # skip the intro
        source = "shared/testdata/speech (librivox clips + jfk-inaugural-1961)"
    else:  # speech-like synthetic: harmonics, 4 Hz syllables, talk/pause gating
        t = np.arange(n) / 8000

        def voice(f0: float, seed: int) -> np.ndarray:
            r = np.random.default_rng(seed)
            x = sum(np.sin(2 * np.pi * f0 * h * t * (1 + 0.05 * np.sin(2 * np.pi * 0.3 * t))) / h for h in range(1, 8))
            env = (0.5 + 0.5 * np.sin(2 * np.pi * 4 * t)) * (np.sin(2 * np.pi * 0.1 * t + seed) > -0.2)
            return (0.25 * x * env + 0.02 * r.standard_normal(n)).astype(np.float32)

        a, b = voice(120, 1), voice(190, 2)
        source = "synthetic speech-like signal (shared/testdata not found)"
    out = []
    for x in (a, b):
        x = x / max(1e-6, float(np.max(np.abs(x)))) * 0.7
        x = x + rng.normal(0, 0.0008, n).astype(np.float32)  # faint line noise
        u = bytearray(mulaw.float_to_ulaw(x))
        dec = mulaw.decode(bytes(u)).reshape(-1, FRAME_BYTES)
        for k in np.nonzero(~dec.any(axis=1))[0]:
            u[k * FRAME_BYTES] = 0xFE  # smallest non-zero μ-law value: keeps every frame countable
        out.append(bytes(u))
    pin.write_bytes(out[0])
    pout.write_bytes(out[1])
    (CACHE / "source.txt").write_text(source + "\n")
    return pin, pout


def load_payloads() -> tuple[list[str], list[str]]:
    """Base64 payloads of the 3000 frames of each loop (inbound, outbound)."""
    pin, pout = CACHE / "inbound.ulaw", CACHE / "outbound.ulaw"
    res = []
    for p in (pin, pout):
        raw = p.read_bytes()
        res.append([base64.b64encode(raw[i:i + FRAME_BYTES]).decode("ascii") for i in range(0, len(raw), FRAME_BYTES)])
    return res[0], res[1]


# --------------------------------------------------------------------------- the wire


async def post_form(host: str, port: int, path: str, fields: dict[str, str], timeout: float = 30) -> tuple[int, str]:
    """POST a form as Twilio's webhook client does; (status, body text)."""
    body = urlencode(fields).encode()
    r, w = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    w.write(http_request("POST", path, host, port, {"User-Agent": "TwilioProxy/1.1",
                                                   "Content-Type": "application/x-www-form-urlencoded"}, body))
    data = await asyncio.wait_for(r.read(), timeout)
    w.close()
    status, rest = parse_response(data)
    return status, rest.decode("utf-8", "replace")


class LeanCall:
    """One Twilio Media Stream over a raw socket: webhook, handshake, start, media, stop."""

    def __init__(self, host: str, port: int, sid: str | None = None) -> None:
        self.host, self.port = host, port
        self.sid = sid or new_sid()
        self.stream_sid = new_sid("MZ")
        self.account_sid = new_sid("AC")
        self.seq = 0
        self.chunk = {"inbound": 0, "outbound": 0}
        self.sent = {"inbound": 0, "outbound": 0}
        self.token = ""
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.close_code: int | None = None
        self.close_reason = ""
        self.closed = asyncio.Event()
        self._reader_task: asyncio.Task | None = None
        self.next_slot = 0  # next 20 ms slot to send
        self.t0 = 0.0  # monotonic time at which stream time 0 was due

    async def webhook(self) -> None:
        status, body = await post_form(self.host, self.port, "/voice", voice_form(self.sid, self.account_sid))
        if status != 200:
            raise RuntimeError(f"POST /voice → {status}: {body[:200]}")
        self.token = token_from(body)

    async def connect(self, path: str = "/media-stream", timeout: float = 30) -> None:
        self.reader, self.writer = await ws_connect(self.host, self.port, path, timeout=timeout)
        self._reader_task = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        r = self.reader
        assert r is not None
        try:
            while True:
                h = await r.readexactly(2)
                op, n = h[0] & 0x0F, h[1] & 0x7F
                if n == 126:
                    n = int.from_bytes(await r.readexactly(2), "big")
                elif n == 127:
                    n = int.from_bytes(await r.readexactly(8), "big")
                data = await r.readexactly(n) if n else b""
                if op == 0x9:  # ping: answer as any client must (uvicorn drops silent peers after ~40 s)
                    if self.writer is not None:
                        self.writer.write(ws_frame(data, 0xA, key=ZERO_KEY))
                    continue
                if op == 0x8:
                    self.close_code = int.from_bytes(data[:2], "big") if len(data) >= 2 else 1005
                    self.close_reason = data[2:].decode("utf-8", "replace")
                    break
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            if self.close_code is None:
                self.close_code = 1006
        finally:
            self.closed.set()

    def start_bytes(self, tracks: tuple[str, ...] = ("inbound", "outbound"), extra: dict | None = None) -> bytes:
        self.seq += 1
        params = {"token": self.token, "callSid": self.sid, **(extra or {})}
        start = start_msg(self.seq, self.stream_sid, self.sid, params, tracks, self.account_sid)
        return ws_frame(CONNECTED.encode(), key=ZERO_KEY) + ws_frame(start.encode(), key=ZERO_KEY)

    def media_bytes(self, k0: int, k1: int, pin: list[str], pout: list[str] | None) -> bytes:
        """Frames for slots [k0, k1): inbound then outbound per slot, as Twilio interleaves them."""
        parts = []
        seq = self.seq
        ci, co = self.chunk["inbound"], self.chunk["outbound"]
        sid = self.stream_sid
        nloop = len(pin)
        for k in range(k0, k1):
            ts = FIRST_TS + FRAME_MS * k
            j = k % nloop
            seq += 1
            ci += 1
            m = (MEDIA % (seq, "inbound", ci, ts, pin[j], sid)).encode()
            parts += (frame_head(len(m)), ZERO_KEY, m)
            if pout is not None:
                seq += 1
                co += 1
                m = (MEDIA % (seq, "outbound", co, ts, pout[j], sid)).encode()
                parts += (frame_head(len(m)), ZERO_KEY, m)
        self.seq = seq
        self.sent["inbound"] += ci - self.chunk["inbound"]
        self.sent["outbound"] += co - self.chunk["outbound"]
        self.chunk["inbound"], self.chunk["outbound"] = ci, co
        self.next_slot = k1
        return b"".join(parts)

    def stop_bytes(self) -> bytes:
        self.seq += 1
        stop = stop_msg(self.seq, self.stream_sid, self.sid, self.account_sid)
        return ws_frame(stop.encode(), key=ZERO_KEY) + ws_frame((1000).to_bytes(2, "big"), 0x8, key=ZERO_KEY)

    def write(self, data: bytes) -> bool:
        if self.writer is None or self.closed.is_set():
            return False
        try:
            self.writer.write(data)
        except (ConnectionError, RuntimeError, OSError):
            return False
        return True

    async def drain(self) -> None:
        if self.writer is not None and not self.closed.is_set():
            try:
                await self.writer.drain()
            except (ConnectionError, OSError):
                pass

    async def finish(self, timeout: float = 120) -> None:
        try:
            await asyncio.wait_for(self.closed.wait(), timeout)
        except asyncio.TimeoutError:
            pass
        if self.writer is not None:
            self.writer.close()


# --------------------------------------------------------------------------- processes


def proc_rss_cpu(pid: int) -> tuple[float, float]:
    """(RSS bytes, user+system CPU seconds of all threads) from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        parts = f.read().rsplit(")", 1)[1].split()
    tck = os.sysconf("SC_CLK_TCK")
    cpu = (int(parts[11]) + int(parts[12])) / tck
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024, cpu
    return 0.0, cpu


def cpu_main(pid: int) -> float:
    """CPU seconds of the serving process alone (its event loop and threads; not its encoder processes)."""
    try:
        import psutil

        t = psutil.Process(pid).cpu_times()
        return t.user + t.system
    except Exception:
        return proc_rss_cpu(pid)[1]


def cpu_precise(pid: int) -> float:
    """CPU seconds of a server and every process under it (its encoder processes: encoding moved
    out of the serving process is still the server's cost), via psutil (same clock ticks)."""
    try:
        import psutil

        root = psutil.Process(pid)
        total = 0.0
        for p in [root] + root.children(recursive=True):
            try:
                t = p.cpu_times()
            except psutil.Error:  # gone between the listing and the read
                continue
            total += t.user + t.system
        return total
    except Exception:
        return proc_rss_cpu(pid)[1]


class Server(AppServer):
    """A server in a child process on a free 127.0.0.1 port: the app, the app with a probe, or bare.

    Its recordings go to bench/out/work/<name> (deleted on stop), its log to bench/out/logs/<name>.log."""

    DEFAULTS = AppServer.DEFAULTS | {
        "CALL_MODE": "listen", "FORWARD_TO": "+15005550006", "DEFAULT_AUDIO_FORMAT": "mp3",
        # The recording path is what these benches measure (and what pipecat's buffer is
        # compared with): listen-only transcription (on by default) is switched off here and
        # measured on its own (concurrency diagnostic `ours_transcribe`).
        "TRANSCRIBE": "false"}
    SCRIPTS = {"probe": "serve_probe.py", "bare": "bare_server.py"}

    def __init__(self, kind: str, env: dict[str, str] | None = None, name: str = "") -> None:
        if kind != "app" and kind not in self.SCRIPTS:
            raise ValueError(kind)
        self.kind = kind
        port = free_port()
        name = name or f"{kind}-{port}"
        super().__init__(WORK / name, env, name=name, log=OUT / "logs" / f"{name}.log", port=port)

    def inherits(self, key: str) -> bool:
        return super().inherits(key) and key != "PUBLIC_BASE_URL" and not key.startswith("OPENAI")

    def command(self) -> list[str]:
        if self.kind == "app":
            return super().command()
        return [sys.executable, str(BENCH / self.SCRIPTS[self.kind]), "--port", str(self.port)]

    def start(self, timeout: float = 90) -> "Server":
        shutil.rmtree(self.workdir, ignore_errors=True)
        self.workdir.mkdir(parents=True)
        self.log.parent.mkdir(parents=True, exist_ok=True)
        return super().start(timeout)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 40.0, cleanup: bool = True) -> int:
        rc = super().stop(sig, timeout)
        if cleanup:
            shutil.rmtree(self.workdir, ignore_errors=True)
        return rc

    def rss_cpu(self) -> tuple[float, float]:
        return proc_rss_cpu(self.pid)

    def get_json(self, path: str, timeout: float = 30) -> dict:
        with open_local(self.base + path, timeout=timeout) as r:
            return json.loads(r.read())

    def metric(self, name: str) -> float:
        with open_local(self.base + "/metrics", timeout=30) as r:
            for line in r.read().decode().splitlines():
                if line.startswith(name + " "):
                    return float(line.split()[1])
        return float("nan")


# --------------------------------------------------------------------------- statistics


def percentiles(values, ps=(50, 90, 99, 99.9)) -> dict:
    """Percentiles (ms when given seconds × 1000 by the caller) without numpy."""
    v = sorted(values)
    if not v:
        return {f"p{p:g}": None for p in ps} | {"max": None, "n": 0}
    out = {}
    for p in ps:
        i = min(len(v) - 1, max(0, int(round(p / 100 * (len(v) - 1)))))
        out[f"p{p:g}"] = v[i]
    out["max"] = v[-1]
    out["n"] = len(v)
    return out


def spread(values: list) -> dict:
    """Median, min, max and the runs themselves (None values, i.e. failed runs, are kept in `runs` only)."""
    v = [x for x in values if isinstance(x, (int, float)) and x == x]
    med = round(statistics.median(v), 4) if v else None
    if med is not None and all(isinstance(x, int) for x in v) and med == int(med):
        med = int(med)  # a ceiling stays a whole number of calls
    return {"median": med, "min": (min(v) if v else None),
            "max": (max(v) if v else None), "runs": list(values), "n": len(v)}
