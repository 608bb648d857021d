"""A server program the tests start (Redis, an S3 server): its process, readiness, pause and stop.

`EngineProcess` holds what every engine shares: it is started by a subclass (`_spawn`), is ready
when `answers()` says so (`_wait`), can be paused and resumed (SIGSTOP/SIGCONT: there, but not
answering — the outage a host sees when a peer hangs or the network drops packets), and is
stopped by its own pid. Any engine still running when the Python process exits is killed, so a
test that dies leaves none behind.
"""

from __future__ import annotations

import atexit
import os
import signal
import subprocess
import time
from pathlib import Path

__all__ = ["EngineProcess"]

_RUNNING: set["EngineProcess"] = set()


@atexit.register
def _kill_leftovers() -> None:
    for s in list(_RUNNING):
        s.stop()


class EngineProcess:
    kind = "engine"  # for messages: "redis-server", "weed mini", ...

    def __init__(self, log: Path) -> None:
        self.log = log
        self.proc: subprocess.Popen | None = None
        self.paused = False

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def answers(self) -> bool:  # pragma: no cover - each engine says how it answers
        raise NotImplementedError

    def _spawn(self, cmd: list[str], *, cwd: Path, env: dict[str, str] | None = None,
               output: Path | None = None) -> None:
        out = open(output, "ab") if output is not None else subprocess.DEVNULL
        try:
            self.proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
        finally:
            if output is not None:
                out.close()
        _RUNNING.add(self)

    def _log_tail(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-2000:]
        except OSError:
            return "(no log)"

    def _wait(self, timeout: float, poll_s: float = 0.02) -> None:
        """Until `answers()`; raises with the log's tail when the process exits or never answers."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.kind} exited ({self.proc.returncode}): {self._log_tail()}")
            if self.answers():
                return
            time.sleep(poll_s)
        self.stop()
        raise RuntimeError(f"{self.kind} did not answer within {timeout} s: {self._log_tail()}")

    def pause(self) -> None:
        """SIGSTOP: connections are accepted by the kernel, nothing answers."""
        os.kill(self.pid, signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        os.kill(self.pid, signal.SIGCONT)
        self.paused = False

    def stop(self, grace_s: float = 5.0) -> None:
        """End the process (by its pid): SIGTERM, then SIGKILL after `grace_s`."""
        _RUNNING.discard(self)
        if self.proc is None or self.proc.poll() is not None:
            return
        if self.paused:
            self.resume()  # a stopped process would not act on SIGTERM
        self.proc.terminate()
        try:
            self.proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
