"""A real `callscribe serve` in a child process on a free 127.0.0.1 port, which stops itself.

Tests get one through the `make_server` fixture (tests/support/fixtures.py), which stops it at the
end of the test; bench/common.py subclasses it for its probe and bare servers. Any server still
running when the Python process exits is killed, so a test or bench that dies leaves none behind.
With ``workers=N`` it is `serve --workers N`: a parent and N worker processes in a process group
of their own, so a kill reaches the workers too.
"""

from __future__ import annotations

import atexit
import http.client
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from app.storage.paths import StoreLayout, output_name
from tests.support.paths import ROOT
from tests.support.sockets import LOCALHOST, free_port

# 127.0.0.1 is never reached through a proxy, whatever http_proxy says.
_LOCAL = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def open_local(url: str | urllib.request.Request, timeout: float = 30):
    """urllib's urlopen for a server on this machine (no proxy)."""
    return _LOCAL.open(url, timeout=timeout)


_RUNNING: set["Server"] = set()


@atexit.register
def _kill_leftovers() -> None:
    for s in list(_RUNNING):
        if s.proc is not None and s.proc.poll() is None:
            s.kill_all()


class Server:
    """`callscribe serve` in `workdir` (recordings in `workdir/responses`, the log beside them)."""

    # The caller's environment is inherited but for these: the test's own settings decide them.
    DROP_ENV: tuple[str, ...] = ("API_KEY", "TWILIO_AUTH_TOKEN", "REDIS_URL", "HOST_ID", "S3_BUCKET", "S3_ENDPOINT_URL",
                                 "ALLOWED_ORIGINS")
    # Settings every server gets unless `env` says otherwise.
    DEFAULTS: dict[str, str] = {"GREETING": "tone", "LOG_LEVEL": "INFO", "PYTHONUNBUFFERED": "1",
                                "PYTHONPATH": str(ROOT)}

    def __init__(self, workdir: Path, env: dict[str, str] | None = None, *, name: str | None = None,
                 log: Path | None = None, port: int | None = None, workers: int = 1) -> None:
        self.workdir = workdir
        self.env = env or {}
        self.host = LOCALHOST
        self.port = port or free_port()
        self.base = f"http://{self.host}:{self.port}"
        self.name = name or f"server-{self.port}"
        self.log = log or workdir / f"{self.name}.log"
        self.workers = workers
        self.proc: subprocess.Popen | None = None

    @property
    def responses(self) -> Path:
        return self.workdir / "responses"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    # -- the process

    def command(self) -> list[str]:
        return [sys.executable, "-m", "app.cli", "serve", "--host", self.host, "--port", str(self.port),
                "--graceful-timeout", "20"] + (["--workers", str(self.workers)] if self.workers > 1 else [])

    def inherits(self, key: str) -> bool:
        """Whether the server sees this variable of the caller's environment."""
        return key not in self.DROP_ENV

    def environment(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if self.inherits(k)}
        env.update({"RECORDINGS_DIRECTORY": str(self.responses)} | self.DEFAULTS)
        env.update(self.env)
        return env

    def start(self, timeout: float = 60.0) -> "Server":
        """Start the server and return once /healthz answers 200."""
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(self.command(), cwd=self.workdir, env=self.environment(), stdout=out,
                                         stderr=subprocess.STDOUT, start_new_session=self.workers > 1)
        _RUNNING.add(self)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited: {self.log.read_text()[-3000:]}")
            if self.healthy():
                return self
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} did not start; log {self.log}")

    def healthy(self) -> bool:
        try:
            with open_local(self.base + "/healthz", timeout=1) as r:
                return r.status == 200
        except (OSError, http.client.HTTPException):
            return False

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 40.0) -> int:
        """Send `sig` and wait for the exit (a kill after `timeout`); the exit code."""
        _RUNNING.discard(self)
        if self.proc is None:
            return 0
        if self.proc.poll() is not None:
            if self.workers > 1:
                self.kill_all()  # workers can outlive a parent that died
            return self.proc.returncode
        if sig == signal.SIGKILL:
            self.kill_all()
            return self.proc.wait()
        self.proc.send_signal(sig)  # the parent of workers passes it on and waits for them
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill_all()
            return self.proc.wait()

    def kill9(self) -> None:
        assert self.proc is not None
        self.kill_all()
        self.proc.wait()
        _RUNNING.discard(self)

    def kill_all(self) -> None:
        """SIGKILL to the server and, with workers, to its whole process group."""
        assert self.proc is not None
        if self.workers > 1:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        else:
            self.proc.kill()

    def wait_live(self, sid: str, timeout: float = 15.0, **headers: str) -> None:
        """Until GET /calls/<sid> shows the call live: started here, whatever the caller's start-up cost."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with open_local(urllib.request.Request(f"{self.base}/calls/{sid}", headers=headers), timeout=5) as r:
                    if json.loads(r.read()).get("state") == "live":
                        return
            except (OSError, ValueError, http.client.HTTPException):
                pass  # 404 until the call starts
            time.sleep(0.05)
        raise AssertionError(f"call {sid} never showed as live")

    # -- its outputs

    def finalized(self, sid: str) -> bool:
        """The call's files are final: its JSON and the `finalized` marker exist."""
        return StoreLayout(self.responses).call(sid).finalized.exists() and \
            (self.responses / output_name(sid, "json")).exists()

    def read_result(self, sid: str) -> dict | None:
        """The call's JSON as it is now (None when absent or being replaced)."""
        try:
            return json.loads((self.responses / output_name(sid, "json")).read_text())
        except (OSError, ValueError):
            return None

    def result(self, sid: str, timeout: float = 30.0, transcript: bool = True) -> dict:
        """The call's JSON once finalised (and, with ``transcript``, once its transcript is complete:
        turns still being transcribed at hang-up are written a moment after the audio)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.finalized(sid):
                out = self.read_result(sid)
                if out is not None and not (transcript and out.get("transcript_pending")):
                    return out
            time.sleep(0.05)
        raise AssertionError(f"call {sid} was not finalised in {timeout} s; log:\n{self.log.read_text()[-3000:]}")
