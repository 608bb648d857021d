"""The glue between the two halves: a host dies mid-call (its heartbeat stops, its uploads with it);
another host's Redis sweep claims the call with a new epoch and hands it to
`CallRegistry.recover_orphan`, which rebuilds the masters from the dead host's segments in S3,
finalises the call marked recovered and commits it. Real redis-server, real S3 server; two hosts
as two registries with their own spools in this process (fast coordinator timing)."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest
import soundfile as sf

from app.call.end import EndReason
from app.call.registry import CallRegistry
from app.recording.events import read_span
from app.recording.finalize import ExportOptions
from app.recording.segments import segment_uploads
from app.storage.paths import StoreLayout
from app.storage.store import CallStore
from tests.s3.conftest import open_call
from tests.s3.test_segments import RATE, SEG_S, WINDOW_MS, feed, published, until
from tests.scaleout.conftest import die
from tests.support.redis_server import RedisServer, redis_server_binary

pytestmark = pytest.mark.skipif(redis_server_binary() is None, reason="redis-server is not installed")


@pytest.fixture
def redis_server(tmp_path):
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.stop()


async def test_a_dead_hosts_call_is_claimed_rebuilt_from_segments_and_committed_by_another(
        tmp_path, redis_server, s3_cfg, capsys):
    from app.storage.redis_coordination import RedisCoordinator, Timing

    fast = Timing(heartbeat_ttl_s=1.0, beat_s=0.25, sweep_s=0.25, sweep_jitter_s=0.05, probe_s=0.2,
                  orphan_backoff_s=2.0)
    regs: dict[str, CallRegistry] = {}
    for name in ("a", "b"):
        root = tmp_path / name / "responses"
        coord = RedisCoordinator(redis_server.url, StoreLayout(root), f"host-{name}", timing=fast)
        store = CallStore(root, coordinator=coord, s3=s3_cfg, host_id=f"host-{name}")
        regs[name] = CallRegistry(store, ExportOptions(default_format="wav"), max_concurrent=5,
                                  uploads=segment_uploads(store.artefacts, SEG_S))
    a, b = regs["a"], regs["b"]
    await a.store.coordinator.start(on_orphan=a.recover_orphan)
    await b.store.coordinator.start(on_orphan=b.recover_orphan)
    bucket = a.uploads.bucket
    try:
        call = open_call(a, reorder_window_ms=WINDOW_MS)
        epoch = call.lock.epoch
        u = call.export.segments
        feed(call, 0, 7300)
        call.on_dtmf("7")
        feed(call, 7300, 8500)
        await until(lambda: u.done == 8 * RATE, 10)
        assert u.epoch == epoch and bucket.parse_segment(
            bucket.list(bucket.segments_prefix(call.sid))[0].key)[0] == epoch
        stream = call.recorder.stream_samples

        # kill -9 of host a: its loops (heartbeat) and its upload threads stop; nothing is released.
        await die(a.store.coordinator)
        a.uploads.close(timeout=0)
        died = asyncio.get_running_loop().time()

        await until(lambda: published(b, call.sid), 15)
        claimed_after = asyncio.get_running_loop().time() - died
        result = b.store.read_result(call.sid)
        lost_s = (stream - round(result["duration_s"] * RATE)) / RATE
        with capsys.disabled():
            print(f"\nhost died → call claimed, rebuilt from {u.done // int(SEG_S * RATE)} segments, finalised and "
                  f"committed by another host in {claimed_after:.2f} s (heartbeat TTL 1 s); audio lost "
                  f"{lost_s:.2f} s (bound: SEGMENT_SECONDS {SEG_S} + window {WINDOW_MS / 1000})")
        assert result["recovered"] and result["dtmf"][0]["digit"] == "7"
        assert 0 <= lost_s <= SEG_S + WINDOW_MS / 1000 + 0.02
        conv = sf.read(str(b.store.artefacts.local_path(f"call_{call.sid}_conversation.wav")), dtype="int16")[0]
        src = call.recorder.files.folder
        mixed = np.clip(read_span(src / "inbound.wav", 0, u.done).astype(np.int32)
                        + read_span(src / "outbound.wav", 0, u.done), -32768, 32767)
        assert len(conv) == u.done and np.abs(conv.astype(np.int32) - mixed).max() <= 1  # the rest: exact
        final = json.loads(bucket.get(bucket.final_key(call.sid))[0])
        assert final["host"] == "host-b" and final["epoch"] == epoch + 1 and final["recovered"]

        # Host a was not dead after all (a long pause): ending its call writes nothing over b's.
        assert await a.finish(call, EndReason.CALLER_HUNG_UP) is None
        assert json.loads(bucket.get(bucket.final_key(call.sid))[0])["attempt"] == final["attempt"]
    finally:
        for reg in regs.values():
            await reg.drain(timeout=5)
            await reg.store.coordinator.aclose()
