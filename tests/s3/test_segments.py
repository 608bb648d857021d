"""Segments uploaded during real recorded calls (CallSession + CallRegistry, masters on disk, a real
S3 server): their cadence and bytes, an S3 outage in the middle of a call, the commit at hang-up,
and masters rebuilt elsewhere from the segments, bit-exact, then finalised as recovered."""

from __future__ import annotations

import asyncio
import json
import os
import time

import numpy as np
import psutil
import soundfile as sf

from app.call.end import EndReason
from app.recording.events import read_span
from app.recording.segment_rebuild import rebuild_masters
from app.recording.segment_uploader import STATE_FILE
from tests.s3.conftest import open_call

RATE = 8000
SEG_S = 1.0
WINDOW_MS = 200  # settled = stream − 1600 samples
RNG = np.random.default_rng(7)


def frames(ms: int = 20) -> tuple[bytes, bytes]:
    n = RATE * ms // 1000
    return (RNG.integers(-20000, 20000, n, dtype=np.int16).tobytes(),
            RNG.integers(-20000, 20000, n, dtype=np.int16).tobytes())


def feed(call, start_ms: int, stop_ms: int) -> None:
    """Both tracks of a listen-mode call, 20 ms frames placed by Twilio timestamp (unpaced)."""
    for ts in range(start_ms, stop_ms, 20):
        a, b = frames()
        call.on_audio("inbound", ts, a)
        call.on_audio("outbound", ts, b)


async def feed_paced(call, start_ms: int, stop_ms: int, on_frame=None) -> float:
    """As `feed`, at the pace of a real call; returns the worst lateness of a frame (s): what a
    blocked event loop would show."""
    t0, worst = time.monotonic(), 0.0
    for ts in range(start_ms, stop_ms, 20):
        due = t0 + (ts - start_ms) / 1000
        now = time.monotonic()
        worst = max(worst, now - due)
        if due > now:
            await asyncio.sleep(due - now)
        a, b = frames()
        call.on_audio("inbound", ts, a)
        call.on_audio("outbound", ts, b)
        if on_frame is not None:
            on_frame(ts)
    return worst


def published(reg, sid: str) -> str | None:
    """The attempt whose files are in the bucket under their names, once the commit is through."""
    try:
        return json.loads((reg.store.files(sid).folder / STATE_FILE).read_text()).get("published")
    except (OSError, ValueError):
        return None


async def until(cond, timeout: float = 20.0, step: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(step)


def segments(bucket, sid: str) -> dict[tuple[int, int], dict[str, bytes]]:
    out: dict[tuple[int, int], dict[str, bytes]] = {}
    for o in bucket.list(bucket.segments_prefix(sid)):
        epoch, start, ext = bucket.parse_segment(o.key)
        out.setdefault((epoch, start), {})[ext] = bucket.get(o.key)[0]
    return dict(sorted(out.items()))


def check_segments_match_masters(bucket, call, upto: int) -> int:
    """Every segment's bytes are the masters' samples of its span, the spans tile [0, upto), and the
    journal deltas add up to the journal's beginning. Returns the number of segments."""
    segs = segments(bucket, call.sid)
    seg = int(SEG_S * RATE)
    starts = [s for (_, s), v in segs.items() if "wav" in v]
    assert starts == list(range(0, upto, seg)), (starts, upto)
    folder = call.recorder.files.folder
    for (_, start), v in segs.items():
        if "wav" not in v:
            continue
        data, rate = sf.read(__import__("io").BytesIO(v["wav"]), dtype="int16", always_2d=True)
        assert rate == RATE and data.shape[1] == 2
        stop = start + len(data)
        assert np.array_equal(data[:, 0], read_span(folder / "inbound.wav", start, stop))
        assert np.array_equal(data[:, 1], read_span(folder / "outbound.wav", start, stop))
    journal = b"".join(v.get("jsonl", b"") for v in segs.values())
    assert journal and (folder / "journal.jsonl").read_bytes().startswith(journal)
    assert json.loads(journal.split(b"\n")[0])["t"] == "start"
    return len(starts)


async def test_segments_go_up_every_segment_seconds_with_the_masters_bytes_then_the_files_at_hang_up(
        make_registry, capsys):
    reg = make_registry("a")
    bucket = reg.uploads.bucket
    call = open_call(reg, reorder_window_ms=WINDOW_MS)
    u = call.export.segments
    seg = int(SEG_S * RATE)
    settled_at: dict[int, float] = {}  # segment end → when the call's settled sample passed it
    uploaded_at: dict[int, float] = {}

    def watch(ts: int) -> None:
        now = time.monotonic()
        for end in range(seg, call.settled_sample() + 1, seg):
            settled_at.setdefault(end, now)
        for end in range(seg, u.done + 1, seg):
            uploaded_at.setdefault(end, now)

    worst = await feed_paced(call, 0, 4600, watch)  # 4.6 s: settled reaches 4.4 s → four whole segments
    await until(lambda: u.done >= 4 * seg, 5)
    watch(0)
    lags = [uploaded_at[e] - settled_at[e] for e in sorted(settled_at) if e in uploaded_at]
    with capsys.disabled():
        print(f"\nsegment upload lag (settled → in S3): {[round(x * 1000) for x in lags]} ms; "
              f"worst frame lateness {worst * 1000:.1f} ms; CPU per segment PUT "
              f"{reg.uploads.stats.put_cpu_seconds / max(1, reg.uploads.stats.segments) * 1000:.2f} ms")
    assert len(lags) == 4 and max(lags) < 1.5  # each up within a segment and a half: during the call (measured ~80 ms)
    assert u.done == 4 * seg  # the partial fifth waits for the hang-up
    assert check_segments_match_masters(bucket, call, 4 * seg) == 4
    state = json.loads((call.recorder.files.folder / STATE_FILE).read_text())
    assert state["done"] == 4 * seg and state["journal_at"] > 0 and state["epoch"] == 0

    result = await reg.finish(call, EndReason.CALLER_HUNG_UP)
    total = round(result["duration_s"] * RATE)
    await until(lambda: published(reg, call.sid), 10)
    final = json.loads(bucket.get(bucket.final_key(call.sid))[0])
    names = sorted(final["files"])
    assert names == sorted(reg.store.artefacts.outputs(call.sid))
    assert {f"call_{call.sid}.json", f"call_{call.sid}.txt", f"call_{call.sid}_summary.txt",
            f"call_{call.sid}_conversation.wav", f"call_{call.sid}_timeline.svg"} <= set(names)
    for name in names:  # the same names and bytes as the local responses/
        assert bucket.get(bucket.output_key(name))[0] == reg.store.artefacts.local_path(name).read_bytes()
    assert total == 4600 * 8
    await until(lambda: not bucket.list(bucket.segments_prefix(call.sid)), 5)  # committed: segments dropped
    assert json.loads((call.recorder.files.folder / STATE_FILE).read_text())["published"] == final["attempt"]
    metrics = {name: value for name, _, _, value in reg.uploads.metric_rows()}
    assert metrics["callscribe_s3_segments_total"] == 5 and metrics["callscribe_s3_commits_total"] == 1
    assert metrics["callscribe_s3_commits_pending"] == 0 and metrics["callscribe_s3_upload_failures_total"] == 0


async def test_s3_paused_mid_call_the_backlog_waits_on_disk_and_drains_in_order_with_memory_flat(
        make_registry, s3_server, capsys):
    reg = make_registry("a")
    bucket = reg.uploads.bucket
    call = open_call(reg, reorder_window_ms=WINDOW_MS)
    u = call.export.segments
    seg = int(SEG_S * RATE)
    await feed_paced(call, 0, 2000)
    await until(lambda: u.done >= seg, 5)
    proc = psutil.Process()
    s3_server.pause()
    try:
        worst = await feed_paced(call, 2000, 3500)  # the call goes on while S3 does not answer
        rss0 = proc.memory_info().rss
        feed(call, 3500, 123_500)  # then two minutes of audio at once: a backlog of ~120 segments
        await asyncio.sleep(2.5)  # uploads time out and back off meanwhile
        rss1 = proc.memory_info().rss
        backlog_s = (call.settled_sample() - u.done) / RATE
        assert backlog_s > 100 and u.failures >= 1
        state = json.loads((call.recorder.files.folder / STATE_FILE).read_text())
        assert state["done"] == u.done  # the backlog is a cursor on disk, not data in memory
    finally:
        s3_server.resume()
    t_back = time.monotonic()
    await until(lambda: u.done >= call.settled_sample() - seg + 1, 60)
    drained = time.monotonic() - t_back
    with capsys.disabled():
        print(f"\nS3 paused: {backlog_s:.0f} s of audio queued, RSS {(rss1 - rss0) / 1e6:+.1f} MB meanwhile; "
              f"drained {backlog_s:.0f} s in {drained:.1f} s after S3 came back; worst frame lateness "
              f"{worst * 1000:.1f} ms; failures {u.failures or reg.uploads.stats.failures}")
    assert rss1 - rss0 < 8e6  # 120 s of stereo is 3.8 MB of segments: none of it held
    assert worst < 0.5  # the event loop never waited for S3 (a wait would cost its 2 s request timeout)
    n = check_segments_match_masters(bucket, call, u.done)
    assert n == u.done // seg
    await reg.finish(call, EndReason.CALLER_HUNG_UP)
    await until(lambda: published(reg, call.sid), 15)
    conv = f"call_{call.sid}_conversation.wav"
    assert bucket.get(bucket.output_key(conv))[0] == reg.store.artefacts.local_path(conv).read_bytes()


async def test_a_commit_s3_refused_at_hang_up_is_made_at_the_next_start(make_registry, s3_server):
    reg = make_registry("a")
    bucket = reg.uploads.bucket
    call = open_call(reg, reorder_window_ms=WINDOW_MS)
    feed(call, 0, 3000)
    s3_server.pause()
    try:
        result = await reg.finish(call, EndReason.CALLER_HUNG_UP)
        assert result is not None  # the files are final locally, S3 or not
        assert reg.store.artefacts.local_path(f"call_{call.sid}.json").exists()
        await reg.drain(timeout=1)  # shutdown with the commit still to make: it waits on disk
        state = json.loads((call.recorder.files.folder / STATE_FILE).read_text())
        assert state["attempt"] and not state["published"]
    finally:
        s3_server.resume()
    again = make_registry("a")  # the same spool: a restart
    await asyncio.get_running_loop().run_in_executor(None, again.recover_sync)
    # The commit is retried with a backoff capped at 30 s, so it is made within 30 s (and a request)
    # of S3 answering again. A SeaweedFS woken from SIGSTOP may refuse writes for seconds more (it
    # re-registers its volume), which took this past 20 s in CI.
    await until(lambda: published(again, call.sid), 45)
    assert json.loads(bucket.get(bucket.final_key(call.sid))[0])["attempt"] == state["attempt"]


async def test_masters_rebuilt_from_segments_are_bit_exact_and_another_host_finishes_the_call(
        make_registry, tmp_path):
    a = make_registry("a")
    bucket = a.uploads.bucket
    call = open_call(a, reorder_window_ms=WINDOW_MS)
    feed(call, 0, 5300)  # settled 5.1 s: five whole segments go up, 0.3 s + the window stay local
    call.on_dtmf("5")
    feed(call, 5300, 6400)
    u = call.export.segments
    await until(lambda: u.done == 6 * RATE, 10)
    stream = call.recorder.stream_samples
    lost_s = (stream - u.done) / RATE  # what a kill -9 now would lose
    assert lost_s <= SEG_S + WINDOW_MS / 1000 + 0.02

    # Host a "dies" here (its call is never finished by it before b and c act).
    folder = tmp_path / "b-rebuild"
    rebuilt = rebuild_masters(call.sid, folder, bucket)
    assert rebuilt.samples == u.done and rebuilt.rate == RATE and rebuilt.epochs == (0,)
    src = call.recorder.files.folder
    for track in ("inbound", "outbound"):
        mine = read_span(src / f"{track}.wav", 0, u.done)
        theirs = sf.read(str(folder / f"{track}.wav"), dtype="int16")[0]
        assert len(theirs) == u.done and np.array_equal(theirs, mine), track
    journal = (folder / "journal.jsonl").read_bytes()
    assert journal == (src / "journal.jsonl").read_bytes()[:len(journal)] and b'"t":"dtmf"' in journal

    c = make_registry("c")
    lock = c.store.coordinator.acquire(call.sid)
    assert await c.recover_orphan(call.sid, lock)
    result = c.store.read_result(call.sid)
    assert result["recovered"] and result["duration_s"] == u.done / RATE and result["dtmf"][0]["digit"] == "5"
    conv = sf.read(str(c.store.artefacts.local_path(f"call_{call.sid}_conversation.wav")), dtype="int16")[0]
    mixed = np.clip(read_span(src / "inbound.wav", 0, u.done).astype(np.int32)
                    + read_span(src / "outbound.wav", 0, u.done), -32768, 32767)
    assert len(conv) == u.done and np.abs(conv.astype(np.int32) - mixed).max() <= 1
    await until(lambda: published(c, call.sid), 10)
    final = json.loads(bucket.get(bucket.final_key(call.sid))[0])
    assert final["host"] == "host-c" and final["recovered"]

    # Host a was only paused: it ends its call and finalises, but c's commit stands.
    await a.finish(call, EndReason.CALLER_HUNG_UP)
    await until(lambda: a.uploads.stats.kept_theirs == 1, 10)
    assert json.loads(bucket.get(bucket.final_key(call.sid))[0])["attempt"] == final["attempt"]
    assert bucket.get(bucket.output_key(f"call_{call.sid}.json"))[0] == \
        c.store.artefacts.local_path(f"call_{call.sid}.json").read_bytes()
    os.sync()


def test_a_rebuild_across_two_owners_keeps_the_later_audio_and_each_journal_line_once(s3_cfg, tmp_path):
    """Epoch 0 uploaded 0-2 s; its call then went on under epoch 1 (a new owner with the same files),
    which sent everything again from 0 and went further. Holes between segments stay silence."""
    from app.storage.s3_bucket import Bucket
    from app.recording.segment_uploader import segment_wav
    from tests.support.frames import new_sid

    bucket, sid, seg = Bucket(s3_cfg), new_sid(), RATE

    def tone(v: int, n: int = seg) -> np.ndarray:
        return np.full(n, v, np.int16)

    j = [b'{"t":"start","wall":1}\n', b'{"t":"dtmf","wall":2}\n', b'{"t":"stop","wall":3}\n']
    bucket.put(bucket.segment_key(sid, 0, 0, "wav"), segment_wav(tone(1), tone(-1), RATE))
    bucket.put(bucket.segment_key(sid, 0, 0, "jsonl"), j[0])
    bucket.put(bucket.segment_key(sid, 0, seg, "wav"), segment_wav(tone(2), tone(-2), RATE))
    bucket.put(bucket.segment_key(sid, 0, seg, "jsonl"), j[1])
    bucket.put(bucket.segment_key(sid, 1, 0, "wav"), segment_wav(tone(1), tone(-1), RATE))
    bucket.put(bucket.segment_key(sid, 1, 0, "jsonl"), j[0] + j[1])
    bucket.put(bucket.segment_key(sid, 1, 3 * seg, "wav"), segment_wav(tone(4, 100), tone(-4, 100), RATE))
    bucket.put(bucket.segment_key(sid, 1, 3 * seg, "jsonl"), j[2])

    got = rebuild_masters(sid, tmp_path / "call", bucket)
    assert got.epochs == (0, 1) and got.samples == 3 * seg + 100 and got.segments == 4
    inbound = sf.read(str(tmp_path / "call" / "inbound.wav"), dtype="int16")[0]
    outbound = sf.read(str(tmp_path / "call" / "outbound.wav"), dtype="int16")[0]
    assert np.array_equal(inbound, np.concatenate([tone(1), tone(2), tone(0), tone(4, 100)]))
    assert np.array_equal(outbound, -inbound)
    assert (tmp_path / "call" / "journal.jsonl").read_bytes() == b"".join(j)
