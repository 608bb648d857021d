"""Shared bench helpers: paths, the test audio, a lean Twilio Media Streams client, server processes.

Stdlib only at import time (the load generator imports this module too). numpy/soundfile are
imported lazily by `prepare_audio`, which runs under the app's venv.

The lean client speaks just enough RFC 6455 to be cheap: it builds Twilio-shaped JSON text with
`%` formatting and writes client frames with a zero masking key (the MASK bit is set as the RFC
requires; a zero key makes masking a no-op for us, the server still runs its unmasking code).
It never uses the `websockets` library, so the sender costs a few µs per message and the server
is what gets measured.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
OUT = BENCH / "out"
CACHE = OUT / "cache"
WORK = OUT / "work"  # per-server recording directories (deleted after use)

FIRST_TS = 120  # ms: Twilio's first media.timestamp is ~100-160 ms, as the simulator uses
FRAME_MS = 20
FRAME_BYTES = 160
LOOP_SECONDS = 60
LOOP_SLOTS = LOOP_SECONDS * 1000 // FRAME_MS  # 3000 frames per track in the audio loop

MEDIA = ('{"event":"media","sequenceNumber":"%d","media":{"track":"%s","chunk":"%d","timestamp":"%d",'
         '"payload":"%s"},"streamSid":"%s"}')


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

    sys.path.insert(0, str(ROOT))
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


def ws_frame(payload: bytes, opcode: int = 0x1) -> bytes:
    """A client → server WebSocket frame (FIN, MASK bit set, zero masking key)."""
    n = len(payload)
    if n < 126:
        head = bytes((0x80 | opcode, 0x80 | n))
    elif n < 65536:
        head = bytes((0x80 | opcode, 0xFE)) + n.to_bytes(2, "big")
    else:
        head = bytes((0x80 | opcode, 0xFF)) + n.to_bytes(8, "big")
    return head + b"\0\0\0\0" + payload


def _frame_head(n: int) -> bytes:
    if n < 126:
        return bytes((0x81, 0x80 | n)) + b"\0\0\0\0"
    return b"\x81\xfe" + n.to_bytes(2, "big") + b"\0\0\0\0"


async def post_form(host: str, port: int, path: str, fields: dict[str, str], timeout: float = 30) -> tuple[int, str]:
    body = urlencode(fields).encode()
    r, w = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    w.write((f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: TwilioProxy/1.1\r\n"
             f"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {len(body)}\r\n"
             "Connection: close\r\n\r\n").encode() + body)
    data = await asyncio.wait_for(r.read(), timeout)
    w.close()
    head, _, rest = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), rest.decode("utf-8", "replace")


TOKEN_RE = re.compile(r'<Parameter name="token" value="([^"]+)"')


class LeanCall:
    """One Twilio Media Stream over a raw socket: webhook, handshake, start, media, stop."""

    def __init__(self, host: str, port: int, sid: str | None = None) -> None:
        self.host, self.port = host, port
        self.sid = sid or "CA" + secrets.token_hex(16)
        self.stream_sid = "MZ" + secrets.token_hex(16)
        self.account_sid = "AC" + secrets.token_hex(16)
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
        status, body = await post_form(self.host, self.port, "/voice", {
            "AccountSid": self.account_sid, "ApiVersion": "2010-04-01", "CallSid": self.sid,
            "CallStatus": "ringing", "Direction": "inbound", "From": "+15005550006", "To": "+15005550001"})
        if status != 200:
            raise RuntimeError(f"POST /voice → {status}: {body[:200]}")
        m = TOKEN_RE.search(body)
        if not m:
            raise RuntimeError(f"no stream token in the TwiML: {body[:300]}")
        self.token = m.group(1)

    async def connect(self, path: str = "/media-stream", timeout: float = 30) -> None:
        r, w = await asyncio.wait_for(asyncio.open_connection(self.host, self.port), timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        w.write((f"GET {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nUpgrade: websocket\r\n"
                 f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
        head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), timeout)
        if b" 101 " not in head.split(b"\r\n", 1)[0]:
            w.close()
            raise RuntimeError(f"handshake refused: {head[:200]!r}")
        self.reader, self.writer = r, w
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
                        self.writer.write(ws_frame(data, 0xA))
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
        start = {"event": "start", "sequenceNumber": str(self.seq),
                 "start": {"accountSid": self.account_sid, "streamSid": self.stream_sid, "callSid": self.sid,
                           "tracks": list(tracks),
                           "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                           "customParameters": params},
                 "streamSid": self.stream_sid}
        connected = {"event": "connected", "protocol": "Call", "version": "1.0.0"}
        return (ws_frame(json.dumps(connected, separators=(",", ":")).encode())
                + ws_frame(json.dumps(start, separators=(",", ":")).encode()))

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
            parts.append(_frame_head(len(m)))
            parts.append(m)
            if pout is not None:
                seq += 1
                co += 1
                m = (MEDIA % (seq, "outbound", co, ts, pout[j], sid)).encode()
                parts.append(_frame_head(len(m)))
                parts.append(m)
        self.seq = seq
        self.sent["inbound"] += ci - self.chunk["inbound"]
        self.sent["outbound"] += co - self.chunk["outbound"]
        self.chunk["inbound"], self.chunk["outbound"] = ci, co
        self.next_slot = k1
        return b"".join(parts)

    def stop_bytes(self) -> bytes:
        self.seq += 1
        stop = {"event": "stop", "sequenceNumber": str(self.seq), "streamSid": self.stream_sid,
                "stop": {"accountSid": self.account_sid, "callSid": self.sid}}
        return ws_frame(json.dumps(stop, separators=(",", ":")).encode()) + ws_frame((1000).to_bytes(2, "big"), 0x8)

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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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


def cpu_precise(pid: int) -> float:
    """CPU seconds via psutil when available (same clock ticks underneath)."""
    try:
        import psutil

        t = psutil.Process(pid).cpu_times()
        return t.user + t.system
    except Exception:
        return proc_rss_cpu(pid)[1]


_LIVE_SERVERS: list["Server"] = []


def _stop_all_servers() -> None:  # a bench that dies must not leave servers behind
    for s in list(_LIVE_SERVERS):
        if s.proc is not None and s.proc.poll() is None:
            s.proc.kill()


import atexit  # noqa: E402

atexit.register(_stop_all_servers)


class Server:
    """A server in a child process on a free 127.0.0.1 port: the app, the app with a probe, or bare."""

    def __init__(self, kind: str, env: dict[str, str] | None = None, name: str = "") -> None:
        self.kind = kind
        self.port = free_port()
        self.host = "127.0.0.1"
        self.base = f"http://{self.host}:{self.port}"
        self.name = name or f"{kind}-{self.port}"
        self.workdir = WORK / self.name
        self.responses = self.workdir / "responses"
        self.env = env or {}
        self.proc: subprocess.Popen | None = None
        self.log = OUT / "logs" / f"{self.name}.log"

    def start(self, timeout: float = 90) -> "Server":
        import shutil

        shutil.rmtree(self.workdir, ignore_errors=True)
        self.workdir.mkdir(parents=True)
        self.log.parent.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items()
               if k not in ("API_KEY", "TWILIO_AUTH_TOKEN", "PUBLIC_BASE_URL") and not k.startswith("OPENAI")}
        env.update({"RECORDINGS_DIRECTORY": str(self.responses), "GREETING": "tone", "LOG_LEVEL": "INFO",
                    "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT), "CALL_MODE": "listen",
                    "FORWARD_TO": "+15005550006", "DEFAULT_AUDIO_FORMAT": "mp3",
                    # The recording path is what these benches measure (and what pipecat's buffer is
                    # compared with): listen-only transcription (on by default) is switched off here and
                    # measured on its own (concurrency diagnostic `ours_transcribe`).
                    "TRANSCRIBE": "false"})
        env.update(self.env)
        if self.kind == "app":
            cmd = [sys.executable, "-m", "app.cli", "serve", "--host", self.host, "--port", str(self.port),
                   "--graceful-timeout", "20"]
        elif self.kind == "probe":
            cmd = [sys.executable, str(BENCH / "serve_probe.py"), "--port", str(self.port)]
        elif self.kind == "bare":
            cmd = [sys.executable, str(BENCH / "bare_server.py"), "--port", str(self.port)]
        else:
            raise ValueError(self.kind)
        self.proc = subprocess.Popen(cmd, cwd=self.workdir, env=env, stdout=open(self.log, "ab"),
                                     stderr=subprocess.STDOUT)
        _LIVE_SERVERS.append(self)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.kind} server exited: {self.log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(self.base + "/healthz", timeout=1) as r:
                    if r.status == 200:
                        return self
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"{self.kind} server did not start; log {self.log}")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def rss_cpu(self) -> tuple[float, float]:
        return proc_rss_cpu(self.pid)

    def get_json(self, path: str, timeout: float = 30) -> dict:
        with urllib.request.urlopen(self.base + path, timeout=timeout) as r:
            return json.loads(r.read())

    def metric(self, name: str) -> float:
        with urllib.request.urlopen(self.base + "/metrics", timeout=30) as r:
            for line in r.read().decode().splitlines():
                if line.startswith(name + " "):
                    return float(line.split()[1])
        return float("nan")

    def finalized(self, sid: str) -> bool:
        return (self.responses / ".calls" / sid / "finalized").exists() and \
            (self.responses / f"call_{sid}.json").exists()

    def result(self, sid: str) -> dict | None:
        try:
            return json.loads((self.responses / f"call_{sid}.json").read_text())
        except (OSError, ValueError):
            return None

    def stop(self, cleanup: bool = True) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(40)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self in _LIVE_SERVERS:
            _LIVE_SERVERS.remove(self)
        if cleanup:
            import shutil

            shutil.rmtree(self.workdir, ignore_errors=True)


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
