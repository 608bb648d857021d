"""The embedder's event API and per-turn clips, on a real in-process uvicorn server."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest
import soundfile as sf
import uvicorn

from app.config import Settings
from app.main import create_app
from app.recording.events import RecordingEvents
from app.simulator import SimConfig, run_call
from tests.support.signals import marker_signal
from tests.support.sockets import free_port

pytestmark = pytest.mark.e2e


class Collector(RecordingEvents):
    def __init__(self) -> None:
        self.turns: list[tuple] = []
        self.track_chunks: dict[str, list[np.ndarray]] = {"inbound": [], "outbound": []}
        self.mixed: list[np.ndarray] = []
        self.complete: list[dict] = []

    def on_turn_audio(self, call_sid, role, index, text, audio, sample_rate):
        self.turns.append((role, index, text, audio.copy(), sample_rate))

    def on_track_audio_data(self, call_sid, track, audio, sample_rate):
        self.track_chunks[track].append(audio.copy())

    def on_audio_data(self, call_sid, audio, sample_rate):
        self.mixed.append(audio.copy())

    def on_complete(self, call_sid, result):
        self.complete.append(result)


@pytest.fixture
def inproc_server(tmp_path):
    started = []

    def start(events, **settings):
        app = create_app(Settings(recordings_directory=str(tmp_path / "responses"), greeting="tone", **settings),
                         events=events, chunk_bytes=16000)
        port = free_port()
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
        t = threading.Thread(target=server.run, daemon=True)
        t.start()
        while not server.started:
            time.sleep(0.02)
        started.append((server, t))
        return f"http://127.0.0.1:{port}", tmp_path / "responses"

    yield start
    for server, t in started:
        server.should_exit = True
        t.join(10)


async def test_events_and_turn_clips(inproc_server):
    events = Collector()
    base, responses = inproc_server(events, per_turn_clips=True, default_audio_format="wav")
    caller = marker_signal(6.0, [2.0])
    # The caller waits for the greeting: sent unpaced from the first frame, the whole call would be at
    # the server before the greeting went out, and the line would play it after the hang-up (never heard).
    res = await run_call(SimConfig(base, caller, speed=0, speak_at_s=None, quiet_s=0.3, tail_s=0.0))
    for _ in range(200):
        if events.complete:
            break
        await asyncio.sleep(0.05)
    assert len(events.complete) == 1 and events.complete[0]["call_sid"] == res.call_sid
    # Per-message audio: the greeting, with its role, index, text and exactly the audio on the track.
    role, index, text, audio, rate = events.turns[0]
    assert (role, index, text, rate) == ("assistant", 0, "(greeting chime)", 8000)
    master, _ = sf.read(str(responses / ".calls" / res.call_sid / "outbound.wav"), dtype="int16")
    turn = events.complete[0]["turns"][0]
    start, end = turn["start_sample"], turn["end_sample"]  # integer sample indexes end to end
    assert len(audio) == end - start and np.array_equal(audio, master[start:end]) and np.abs(audio).max() > 1000
    # Chunks every 16000 bytes (1 s) of each track, in order, bit-exact, and at hang-up the rest:
    # the chunks of the call add up to its recording exactly, the last one short.
    total = round(events.complete[0]["duration_s"] * 8000)
    assert total == res.stream_duration_ms * 8 and total > 6 * 8000
    for track in ("inbound", "outbound"):
        chunks = events.track_chunks[track]
        assert [len(c) for c in chunks] == [8000] * (total // 8000) + ([total % 8000] if total % 8000 else [])
        rec, _ = sf.read(str(responses / ".calls" / res.call_sid / f"{track}.wav"), dtype="int16")
        assert np.array_equal(np.concatenate(chunks), rec)
    mixed = np.concatenate(events.mixed)
    assert len(mixed) == total
    # One clip per turn on disk, named with index and role, listed in the JSON.
    clip = events.complete[0]["files"]["turn_clips"][0]
    assert clip == f"call_{res.call_sid}_turn00_assistant.wav"
    x, r = sf.read(str(responses / clip), dtype="int16")
    assert r == 8000 and np.array_equal(x, audio)


async def test_events_fire_for_browser_calls_too(inproc_server):
    """A browser call (16 kHz, speech-only clock) gives the same events: per-message audio at its
    rate, chunks that add up to its recording, the result at hang-up."""
    from tests.support.webcall import WebCallClient

    events = Collector()
    base, responses = inproc_server(events, default_audio_format="wav", transcribe=False)
    port = int(base.rsplit(":", 1)[1])
    c = await WebCallClient.open(port, {})
    await c.wait_for(lambda c: any(m["role"] == "assistant" for m in c.messages()))
    sid = c.info()["sid"]
    tone = (np.sin(np.arange(16000) * 2 * np.pi * 300 / 16000) * 6000).astype(np.int16)
    await c.speak(tone)
    await c.hang_up()
    for _ in range(200):
        if events.complete:
            break
        await asyncio.sleep(0.05)
    assert len(events.complete) == 1 and events.complete[0]["call_sid"] == sid
    role, index, text, audio, rate = events.turns[0]
    assert (role, index, text, rate) == ("assistant", 0, "(greeting chime)", 16000)
    master, _ = sf.read(str(responses / ".calls" / sid / "outbound.wav"), dtype="int16")
    turn = events.complete[0]["turns"][0]
    assert np.array_equal(audio, master[turn["start_sample"]:turn["end_sample"]]) and np.abs(audio).max() > 1000
    for track in ("inbound", "outbound"):
        rec, _ = sf.read(str(responses / ".calls" / sid / f"{track}.wav"), dtype="int16")
        assert np.array_equal(np.concatenate(events.track_chunks[track]), rec)
    inbound, _ = sf.read(str(responses / ".calls" / sid / "inbound.wav"), dtype="int16")
    assert np.count_nonzero(inbound) == np.count_nonzero(tone)
