"""A real `redis-server` on a free 127.0.0.1 port, in a folder of its own, stopped by its pid.

Debian's redis-server (scripts/system-deps.sh installs it) with no persistence (`--save ''
--appendonly no`): it starts in about 35 ms. `pause()`/`resume()` stop and continue the process
(SIGSTOP/SIGCONT): a Redis that is there but does not answer, the outage a host sees when Redis
hangs or the network drops packets. Any server still running when the Python process exits is
killed, so a test that dies leaves none behind.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from tests.support.sockets import LOCALHOST, free_port

__all__ = ["RedisServer", "redis_server_binary"]

_RUNNING: set["RedisServer"] = set()


@atexit.register
def _kill_leftovers() -> None:
    for s in list(_RUNNING):
        s.stop()


def redis_server_binary() -> str | None:
    """The redis-server program, or None when it is not installed."""
    return shutil.which("redis-server")


class RedisServer:
    """`redis-server` bound to 127.0.0.1 on a free port, its files (and log) in `workdir`."""

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        self.workdir = workdir
        self.port = port or free_port()
        self.url = f"redis://{LOCALHOST}:{self.port}/0"
        self.log = workdir / "redis.log"
        self.proc: subprocess.Popen | None = None
        self.paused = False

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout: float = 10.0) -> "RedisServer":
        binary = redis_server_binary()
        if binary is None:
            raise RuntimeError("redis-server is not installed (run scripts/system-deps.sh)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        cmd = [binary, "--port", str(self.port), "--bind", LOCALHOST, "--save", "", "--appendonly", "no",
               "--daemonize", "no", "--dir", str(self.workdir), "--logfile", str(self.log)]
        self.proc = subprocess.Popen(cmd, cwd=self.workdir, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        _RUNNING.add(self)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited ({self.proc.returncode}): {self._log_tail()}")
            if self.ping():
                return self
            time.sleep(0.01)
        self.stop()
        raise RuntimeError(f"redis-server did not answer within {timeout} s: {self._log_tail()}")

    def ping(self, timeout: float = 0.5) -> bool:
        """Whether the server answers PING now (a raw socket: no client library needed)."""
        try:
            with socket.create_connection((LOCALHOST, self.port), timeout=timeout) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def pause(self) -> None:
        """SIGSTOP: connections are accepted by the kernel, nothing is answered."""
        os.kill(self.pid, signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        os.kill(self.pid, signal.SIGCONT)
        self.paused = False

    def stop(self) -> None:
        """Kill the server (by its pid) and wait for it."""
        _RUNNING.discard(self)
        if self.proc is None or self.proc.poll() is not None:
            return
        if self.paused:
            self.resume()  # a stopped process dies on SIGKILL too, but a clean wait needs it running
        self.proc.kill()
        self.proc.wait(10)

    def _log_tail(self) -> str:
        try:
            return self.log.read_text()[-2000:]
        except OSError:
            return "(no log)"
