"""A real `callscribe serve` process on a free 127.0.0.1 port, and helpers to read its outputs."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`callscribe serve` in a child process; stops itself at the end of the test."""

    def __init__(self, workdir: Path, env: dict[str, str]) -> None:
        self.workdir = workdir
        self.env = env
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self.log = workdir / f"server-{self.port}.log"

    @property
    def responses(self) -> Path:
        return self.workdir / "responses"

    def start(self, timeout: float = 60.0) -> "Server":
        env = {k: v for k, v in os.environ.items() if k not in ("API_KEY", "TWILIO_AUTH_TOKEN")}
        env.update({"RECORDINGS_DIRECTORY": str(self.responses), "GREETING": "tone", "LOG_LEVEL": "INFO",
                    "PYTHONUNBUFFERED": "1"})
        env.update(self.env)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "serve", "--host", "127.0.0.1", "--port", str(self.port),
             "--graceful-timeout", "20"],
            cwd=self.workdir, env=env | {"PYTHONPATH": str(ROOT)}, stdout=open(self.log, "ab"),
            stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.log.read_text()[-3000:]}")
            try:
                if httpx.get(self.base + "/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError("server did not start")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 40.0) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def kill9(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def result(self, sid: str, timeout: float = 30.0, transcript: bool = True) -> dict:
        """The call's JSON once finalised (and, with ``transcript``, once its transcript is complete:
        turns still being transcribed at hang-up are written a moment after the audio)."""
        path = self.responses / f"call_{sid}.json"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if path.exists() and (self.responses / ".calls" / sid / "finalized").exists():
                try:
                    out = json.loads(path.read_text())
                except ValueError:
                    out = {"transcript_pending": True}  # replaced while read: read again
                if not (transcript and out.get("transcript_pending")):
                    return out
            time.sleep(0.05)
        raise AssertionError(f"call {sid} was not finalised in {timeout} s; log:\n{self.log.read_text()[-3000:]}")


@pytest.fixture
def make_server(tmp_path):
    servers: list[Server] = []

    def _make(**env: str) -> Server:
        s = Server(tmp_path, {k: str(v) for k, v in env.items()})
        servers.append(s)
        return s.start()

    yield _make
    for s in servers:
        s.stop(signal.SIGKILL if s.proc and s.proc.poll() is None else signal.SIGTERM, timeout=5)


def marker_signal(seconds: float, at: list[float], rate: int = 8000, amp: float = 0.5, freq: float = 1000.0,
                  length_ms: float = 20.0) -> np.ndarray:
    """Silence with short tone bursts at the given times (a sample-accurate marker to find again)."""
    x = np.zeros(int(seconds * rate), np.float32)
    n = int(length_ms * rate / 1000)
    t = np.arange(n) / rate
    burst = amp * np.sin(2 * np.pi * freq * t) * np.hanning(n)
    for a in at:
        i = int(round(a * rate))
        x[i:i + n] += burst
    return (x * 32767).astype(np.int16)


def find_markers(x: np.ndarray, template: np.ndarray, threshold: float = 0.5) -> list[int]:
    """Sample offsets where `template` occurs (normalised cross-correlation peaks)."""
    x = x.astype(np.float64)
    t = template.astype(np.float64)
    corr = np.correlate(x, t, mode="valid")
    energy = np.convolve(x * x, np.ones(len(t)), mode="valid")
    norm = np.sqrt(energy * (t * t).sum()) + 1e-9
    c = np.where(energy > 0.25 * (t * t).sum(), corr / norm, 0.0)  # ignore faint codec pre-echo
    peaks = []
    i = 0
    while i < len(c):
        if c[i] > threshold:
            j = i + int(np.argmax(c[i:i + len(t)]))
            peaks.append(j)
            i = j + len(t)
        else:
            i += 1
    return peaks
