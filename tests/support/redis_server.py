"""A real `redis-server` on a free 127.0.0.1 port, in a folder of its own, stopped by its pid.

Debian's redis-server (scripts/system-deps.sh installs it) with no persistence (`--save ''
--appendonly no`): it starts in about 35 ms. `pause()`/`resume()` stop and continue the process
(SIGSTOP/SIGCONT): a Redis that is there but does not answer, the outage a host sees when Redis
hangs or the network drops packets. Any server still running when the Python process exits is
killed, so a test that dies leaves none behind (tests/support/engine_process.py).
"""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

from tests.support.engine_process import EngineProcess
from tests.support.sockets import LOCALHOST, free_port

__all__ = ["RedisServer", "redis_server_binary"]

def redis_server_binary() -> str | None:
    """The redis-server program, or None when it is not installed."""
    return shutil.which("redis-server")


class RedisServer(EngineProcess):
    """`redis-server` bound to 127.0.0.1 on a free port, its files (and log) in `workdir`."""

    kind = "redis-server"

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        super().__init__(workdir / "redis.log")
        self.workdir = workdir
        self.port = port or free_port()
        self.url = f"redis://{LOCALHOST}:{self.port}/0"

    def start(self, timeout: float = 10.0) -> "RedisServer":
        binary = redis_server_binary()
        if binary is None:
            raise RuntimeError("redis-server is not installed (run scripts/system-deps.sh)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        cmd = [binary, "--port", str(self.port), "--bind", LOCALHOST, "--save", "", "--appendonly", "no",
               "--daemonize", "no", "--dir", str(self.workdir), "--logfile", str(self.log)]
        self._spawn(cmd, cwd=self.workdir)
        self._wait(timeout, poll_s=0.01)
        return self

    def answers(self) -> bool:
        return self.ping()

    def ping(self, timeout: float = 0.5) -> bool:
        """Whether the server answers PING now (a raw socket: no client library needed)."""
        try:
            with socket.create_connection((LOCALHOST, self.port), timeout=timeout) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

