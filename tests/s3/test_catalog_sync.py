"""Cluster-wide listings with S3: two `callscribe serve` hosts, their own recordings folders, one
Redis and one bucket. A call recorded on host a shows on host b's `GET /calls` (live while it
lasts, then with its figures) and `GET /calls/{sid}` on b says finalized, with file links that work.
b restarted keeps the row without a rebuild; when the result leaves the bucket, b drops the row."""

from __future__ import annotations

import asyncio
import shutil
import time

import httpx
import pytest

from app.simulator import SimConfig, run_call
from app.storage.s3_bucket import Bucket
from tests.support.server import Server
from tests.support.signals import marker_signal

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120),
              pytest.mark.skipif(not shutil.which("redis-server"), reason="redis-server is not installed")]

SYNC_S = 0.5


async def listed(client: httpx.AsyncClient, server: Server, sid: str) -> dict | None:
    r = await client.get(f"{server.base}/calls")
    assert r.status_code == 200, r.text
    return next((row for row in r.json()["data"] if row["call_sid"] == sid), None)


async def until(what, timeout: float = 10.0, every: float = 0.1, log: Server | None = None):
    deadline = time.monotonic() + timeout
    while True:
        got = await what()
        if got:
            return got
        assert time.monotonic() < deadline, log.log.read_text()[-3000:] if log else "timed out"
        await asyncio.sleep(every)


async def test_a_call_recorded_on_one_host_is_listed_on_the_other(tmp_path, s3_server, prefix):
    from tests.support.redis_server import RedisServer

    redis = RedisServer(tmp_path / "redis").start()
    env = s3_server.env(prefix) | {"GREETING": "tone", "TRANSCRIBE": "false", "SEGMENT_SECONDS": "1",
                                   "REDIS_URL": redis.url, "DEFAULT_AUDIO_FORMAT": "wav",
                                   "CATALOG_SYNC_SECONDS": str(SYNC_S)}
    servers = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        servers.append(Server(tmp_path / name, env | {"HOST_ID": f"host-{name}"}, name=name))
    a, b = servers
    sid = "CA" + "7" * 32
    try:
        for s in servers:
            s.start()
        async with httpx.AsyncClient(trust_env=False, timeout=10) as client:
            call = asyncio.create_task(run_call(SimConfig(a.base, marker_signal(5.0, [1.0, 3.0]), call_sid=sid,
                                                          speed=1.0, tail_s=0.3)))
            # While it lasts: b lists it live (from Redis's open calls), with its start and source.
            row = await until(lambda: listed(client, b, sid), timeout=4.0)
            assert not call.done(), "the call ended before b listed it"
            assert (row["state"], row["status"], row["source"]) == ("live", "live", "phone")
            assert row["started_at"] is not None
            r = await client.get(f"{b.base}/calls/{sid}")
            assert r.status_code == 200 and r.json()["state"] == "live"
            await call

            result = a.result(sid)
            assert not list(b.responses.glob(f"call_{sid}*")) and not (b.responses / ".calls" / sid).exists()

            async def finished_on_b():
                row = await listed(client, b, sid)
                # (between the commit and b's next pass the live row already reads finalized, without figures)
                return row if row and row["status"] == "finalized" and row["duration_s"] is not None else None

            t0 = time.monotonic()
            row = await until(finished_on_b, timeout=30.0, log=b)  # the commit to S3, then one sync interval
            took = time.monotonic() - t0
            assert row["state"] == "finalized" and row["duration_s"] == pytest.approx(result["duration_s"])
            assert row["format"] == "wav" and row["size_bytes"] == result["audio"]["bytes"]
            assert row["turns"] == result["stats"]["turns"] and row["mode"] == result["mode"]
            mine = await listed(client, a, sid)
            assert {k: row[k] for k in ("duration_s", "size_bytes", "files", "started_at", "completed_at")} == \
                {k: mine[k] for k in ("duration_s", "size_bytes", "files", "started_at", "completed_at")}

            r = await client.get(f"{b.base}/calls/{sid}")
            assert r.status_code == 200, r.text
            got = r.json()
            assert got["state"] == "finalized" and got["result"]["call_sid"] == sid
            assert got["files"] and got["files"] == row["files"]
            for name, link in got["files"].items():
                f = await client.get(f"{b.base}{link}")
                assert f.status_code == 200, (name, f.text)
                assert f.content == (a.responses / name).read_bytes(), name

            # b restarts (another process on its folder): its catalog matches the cluster, no rebuild, the row is there.
            b.stop(timeout=20)
            b = Server(tmp_path / "b", env | {"HOST_ID": "host-b2"}, name="b2")
            servers.append(b.start())
            again = await listed(client, b, sid)
            assert again is not None and again["duration_s"] == row["duration_s"]
            assert "rebuilding" not in b.log.read_text(), b.log.read_text()[-2000:]

            r = await client.delete(f"{a.base}/calls/{sid}")
            assert r.status_code in (200, 204), r.text
            # The call's objects leave the bucket (every host then forgets it).
            bucket = Bucket(s3_server.config(prefix))
            assert bucket.list(f"{prefix}call_{sid}") == [] and bucket.list(f"{prefix}.calls/{sid}/") == []

            async def gone_on_b():
                return await listed(client, b, sid) is None

            await until(gone_on_b, timeout=10.0)
            print(f"\nhang-up → listed finished on the other host: {took:.2f} s (CATALOG_SYNC_SECONDS={SYNC_S})")
    finally:
        for s in servers:
            if s.proc is not None and s.proc.poll() is None:
                s.stop(timeout=20)
        redis.stop()
