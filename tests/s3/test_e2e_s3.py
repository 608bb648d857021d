"""End to end: `callscribe serve` with S3 settings, the Twilio simulator, and a second server
(another spool, the same bucket) that serves the call's files it never recorded."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import time

import httpx
import pytest
import soundfile as sf

from app.simulator import SimConfig, run_call
from app.storage.s3_bucket import Bucket
from tests.support.server import Server
from tests.support.signals import find_markers, marker_signal

pytestmark = pytest.mark.e2e


async def test_a_calls_files_land_under_the_prefix_and_any_host_serves_them(tmp_path, s3_server, s3_cfg, prefix,
                                                                             capsys):
    env = s3_server.env(prefix) | {"GREETING": "tone", "TRANSCRIBE": "false", "SEGMENT_SECONDS": "1"}
    servers = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        servers.append(Server(tmp_path / name, env, name=name))
    a, b = servers
    bucket = Bucket(s3_cfg)
    try:
        for s in servers:
            s.start()
        sid = "CA" + "5" * 32
        call = asyncio.create_task(run_call(SimConfig(a.base, marker_signal(6.0, [1.0, 3.0]), call_sid=sid, speed=1.0,
                                                      tail_s=0.3)))
        ended: list[float] = []
        call.add_done_callback(lambda _: ended.append(time.monotonic()))
        segs_during_call = 0
        while not call.done():  # what is in the bucket while the call goes on
            wavs = [o for o in await asyncio.to_thread(bucket.list, bucket.segments_prefix(sid))
                    if o.key.endswith(".wav")]
            segs_during_call = max(segs_during_call, len(wavs))
            await asyncio.sleep(0.2)
        await call
        hung_up = ended[0]
        deadline = time.monotonic() + 30
        while True:  # committed and copied: the JSON under its own name
            if bucket.head(bucket.output_key(f"call_{sid}.json")) is not None:
                break
            assert time.monotonic() < deadline, a.log.read_text()[-3000:]
            await asyncio.sleep(0.05)
        in_bucket = time.monotonic() - hung_up
        result = a.result(sid)
        final = json.loads(bucket.get(bucket.final_key(sid))[0])
        names = sorted(final["files"])
        assert names == sorted(p.name for p in a.responses.glob(f"call_{sid}*"))
        kinds = {f"call_{sid}.json", f"call_{sid}.txt", f"call_{sid}_summary.txt", f"call_{sid}_timeline.svg",
                 f"call_{sid}_{result['files']['conversation'].split('_', 2)[2]}"}
        assert kinds == set(names) and result["files"]["conversation"].endswith(".mp3")
        assert not list(b.responses.glob(f"call_{sid}*"))  # b never saw the call

        async with httpx.AsyncClient(trust_env=False, timeout=10) as client:
            for name in names:
                r = await client.get(f"{b.base}/calls/{sid}/files/{name}")
                assert r.status_code == 200, (name, r.text)
                assert r.content == (a.responses / name).read_bytes(), name
                assert int(r.headers["content-length"]) == len(r.content)
            r = await client.get(f"{b.base}/calls/{sid}/files/call_{sid}_conversation.flac")
            assert r.status_code == 404
            r = await client.get(f"{b.base}/calls/{sid}")
            assert r.status_code == 200 and r.json()["result"]["call_sid"] == sid
        with capsys.disabled():
            print(f"\nhang-up → files in the bucket: {in_bucket:.2f} s; {segs_during_call} segments were up during "
                  f"the call; {len(names)} files")
        assert segs_during_call >= 2  # 1 s segments of settled audio (stream − 2 s) went up while it lasted
    finally:
        for s in servers:
            if s.proc is not None:
                s.stop(timeout=20)


async def test_kill_9_mid_call_another_host_finishes_it_from_the_segments_losing_at_most_one(
        tmp_path, s3_server, s3_cfg, prefix, capsys):
    """Two `callscribe serve` hosts, one Redis, one bucket. The host with the stream is killed with
    SIGKILL mid-call; the other claims the call when the heartbeat expires, rebuilds it from the
    segments and commits it, marked recovered: at most SEGMENT_SECONDS + 2 s lost, the rest
    bit-exact with what the dead host had recorded (its spool survives on this machine's disk)."""
    import numpy as np
    import soundfile as sf

    from app.recording.events import read_span
    from app.recording.track import track_samples
    from tests.support.redis_server import RedisServer

    redis = RedisServer(tmp_path / "redis").start()
    seg_s = 2
    env = s3_server.env(prefix) | {"GREETING": "tone", "TRANSCRIBE": "false", "SEGMENT_SECONDS": str(seg_s),
                                   "REDIS_URL": redis.url, "DEFAULT_AUDIO_FORMAT": "wav", "RECORDING_CHANNELS": "2"}
    servers = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        servers.append(Server(tmp_path / name, env | {"HOST_ID": f"host-{name}"}, name=name))
    a, b = servers
    bucket = Bucket(s3_cfg)
    caller = np.random.default_rng(3).integers(-4000, 4000, 8000 * 30, dtype=np.int16)
    try:
        for s in servers:
            s.start()
        call = asyncio.create_task(run_call(SimConfig(a.base, caller, speed=1.0, tail_s=0.0)))
        deadline = time.monotonic() + 15
        sid = None
        while sid is None:  # the call's folder on a: its sid
            folders = [p for p in (a.responses / ".calls").glob("CA*") if (p / "journal.jsonl").exists()]
            sid = folders[0].name if folders else None
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        await asyncio.sleep(11.0)
        a.kill9()
        killed = time.monotonic()
        recorded = track_samples(a.responses / ".calls" / sid / "inbound.wav")  # what a had, to the sample
        with contextlib.suppress(Exception):  # the stream broke with its host (the simulator may say so or not)
            await call
        while True:
            if bucket.head(bucket.output_key(f"call_{sid}.json")) is not None:
                break
            assert time.monotonic() - killed < 45, b.log.read_text()[-3000:]
            await asyncio.sleep(0.2)
        finished_after = time.monotonic() - killed
        final = json.loads(bucket.get(bucket.final_key(sid))[0])
        result = json.loads(bucket.get(bucket.output_key(f"call_{sid}.json"))[0])
        assert final["host"] == "host-b" and final["recovered"] and result["recovered"]
        conv = bucket.get(bucket.output_key(f"call_{sid}_conversation.wav"))[0]
        audio, rate = sf.read(io.BytesIO(conv), dtype="int16", always_2d=True)
        kept = len(audio)
        lost_s = (recorded - kept) / rate
        with capsys.disabled():
            print(f"\nkill -9 → another host committed the call {finished_after:.1f} s later (Redis heartbeat "
                  f"TTL 15 s + sweep); {kept / rate:.1f} s kept, {lost_s:.2f} s lost (bound {seg_s} + 2 s)")
        assert rate == 8000 and 0 <= lost_s <= seg_s + 2 + 0.5
        assert np.array_equal(audio[:, 0], read_span(a.responses / ".calls" / sid / "inbound.wav", 0, kept))
        assert np.array_equal(audio[:, 1], read_span(a.responses / ".calls" / sid / "outbound.wav", 0, kept))
    finally:
        for s in servers:
            if s.proc is not None and s.proc.poll() is None:
                s.stop(timeout=20)
        redis.stop()


async def test_s3_paused_mid_call_the_segments_catch_up_and_the_files_are_complete(tmp_path, s3_server, s3_cfg,
                                                                                   prefix, capsys):
    """The bucket stops answering for 3 s in the middle of a call on a real `callscribe serve`: the
    call is not disturbed, the segments queued meanwhile go up when S3 is back (contiguous, nothing
    missing), and at hang-up the files are committed whole."""
    env = s3_server.env(prefix) | {"GREETING": "tone", "TRANSCRIBE": "false", "SEGMENT_SECONDS": "1",
                                   "DEFAULT_AUDIO_FORMAT": "wav"}
    (tmp_path / "a").mkdir()
    host = Server(tmp_path / "a", env, name="a")
    bucket = Bucket(s3_cfg)
    sid = "CA" + "6" * 32
    try:
        host.start()
        call = asyncio.create_task(run_call(SimConfig(host.base, marker_signal(7.0, [1.0, 3.5, 6.0]), call_sid=sid,
                                                      speed=1.0, tail_s=0.3)))
        await asyncio.sleep(2.0)
        s3_server.pause()
        try:
            await asyncio.sleep(3.0)
        finally:
            s3_server.resume()
        res = await call
        deadline = time.monotonic() + 30
        while bucket.head(bucket.output_key(f"call_{sid}.json")) is None:
            assert time.monotonic() < deadline, host.log.read_text()[-3000:]
            await asyncio.sleep(0.1)
        out = host.result(sid)
        # Every file in the bucket is the host's own, byte for byte.
        final = json.loads(bucket.get(bucket.final_key(sid))[0])
        for name in final["files"]:
            assert bucket.get(bucket.output_key(name))[0] == (host.responses / name).read_bytes(), name
        # The call itself was not disturbed: its markers are where they were sent, sample-exact.
        assert out["duration_s"] == pytest.approx(res.stream_duration_ms / 1000, abs=0.01)
        assert not out["warnings"], out["warnings"]
        x, rate = sf.read(io.BytesIO(bucket.get(bucket.output_key(out["files"]["conversation"]))[0]), dtype="int16",
                          always_2d=True)
        assert rate == 8000
        assert find_markers(x[:, 0], marker_signal(0.02, [0.0])) == [120 * 8 + int(a * 8000) for a in (1.0, 3.5, 6.0)]
        with capsys.disabled():
            print(f"\nS3 paused 3 s mid-call on a serve host: files committed whole; duration {out['duration_s']} s")
    finally:
        if host.proc is not None:
            host.stop(timeout=20)
