"""The record at a call's edges, on a real server with the real offline speech stack: hang-up cuts
what was never heard, the caller's last words are kept, a replay at any speed gives the same caller
transcript as a live call, and a listen-only call gets a transcript of both voices.

Speech is real human speech from ../shared/testdata (LibriVox readings with their source text)."""

from __future__ import annotations

import re

import numpy as np
import pytest
import soundfile as sf

from app.simulator import SimConfig, load_wav_8k, run_call
from tests.e2e.test_assistant import wait_ready
from tests.support.paths import TESTDATA

pytestmark = [pytest.mark.e2e, pytest.mark.models]

SPEECH = TESTDATA / "speech"
ILL_DISPOSED = "he was not an ill disposed young man"  # librivox-sense-and-sensibility-0880.wav
AMIABLE = "he might even have been made amiable himself"  # librivox-sense-and-sensibility-0930.wav


def speech(name: str) -> np.ndarray:
    return load_wav_8k(SPEECH / name)


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * 8000), np.int16)


def words(text: str) -> set[str]:
    return set(re.findall(r"[a-z']+", text.lower()))


def recall(heard: str, truth: str) -> float:
    want = words(truth)
    return len(want & words(heard)) / len(want)


FRAME = 160  # samples in one 20 ms frame at 8 kHz


def sounding_runs(x: np.ndarray, min_gap: int = FRAME // 2) -> list[tuple[int, int]]:
    """The [start, end) stretches of ``x`` that are not digital silence, split at runs of at least
    ``min_gap`` zero samples."""
    nz = np.flatnonzero(x)
    if not len(nz):
        return []
    breaks = np.flatnonzero(np.diff(nz) > min_gap)
    starts = [nz[0], *nz[breaks + 1]]
    ends = [*(nz[breaks] + 1), nz[-1] + 1]
    return [(int(a), int(b)) for a, b in zip(starts, ends, strict=True)]


def placed_within_a_frame(track: np.ndarray, heard: np.ndarray, a: int, b: int) -> int:
    """The shift (|shift| <= one frame) at which ``heard[a:b]`` is on ``track`` to within one LSB;
    fails when there is none."""
    want = heard[a:b].astype(np.int64)
    for shift in sorted(range(-FRAME, FRAME + 1), key=abs):
        if 0 <= a + shift and b + shift <= len(track):
            if np.abs(track[a + shift : b + shift].astype(np.int64) - want).max() <= 1:
                return shift
    raise AssertionError(f"what the caller heard at [{a}, {b}) is not on the track within a frame of it")


def caller_turns(out: dict) -> list[dict]:
    return [t for t in out["turns"] if t["role"] == "caller"]


async def test_hang_up_cuts_the_unheard_reply_and_keeps_what_was_heard(make_server):
    """The caller hangs up 4 s into the ~9 s greeting: the recording lasts as long as the stream,
    the greeting keeps its sentences played in full and marks the one that was cut, and the cut is
    not a barge-in."""
    server = make_server(GREETING="assistant", DEFAULT_AUDIO_FORMAT="wav", RECORDING_CHANNELS=2)
    wait_ready(server)
    res = await run_call(SimConfig(server.base, silence(4.0), speed=1.0, tail_s=0.0, speak_at_s=0.0))
    out = server.result(res.call_sid)
    stream_end = round(out["duration_s"] * 8000)
    assert abs(out["duration_s"] - res.stream_duration_ms / 1000) <= 0.05, (out["duration_s"], res.stream_duration_ms)
    x, rate = sf.read(str(server.responses / out["files"]["conversation"]), dtype="int16")
    assert rate == 8000 and len(x) == stream_end
    outbound, _ = sf.read(str(server.responses / ".calls" / res.call_sid / "outbound.wav"), dtype="int16")
    assert len(outbound) == stream_end  # nothing of the reply still queued at hang-up
    # The assistant track is what the caller heard, up to the hang-up: each stretch of the reply
    # the caller heard is on the track sample for sample, where it played to within a frame. (A
    # reply that ran dry resumes in a slot of the line's 20 ms grid; a server that reads the
    # line's frames late, as on a loaded machine, can place it one slot early: seen in CI.)
    heard = res.heard[:stream_end]
    assert np.abs(heard).max() > 1000
    runs = sounding_runs(heard)
    for a, b in runs:
        placed_within_a_frame(outbound, heard, a, b)
    assert np.count_nonzero(outbound) <= np.count_nonzero(heard) + FRAME * len(runs)  # nothing the caller did not hear

    (greeting,) = [t for t in out["turns"] if t["role"] == "assistant"]
    assert greeting["interrupted"] and greeting["cut_by"] == "hangup"
    assert greeting["end_sample"] == stream_end
    sent = greeting["sent_text"]
    assert sent.startswith("Thank you for calling")
    # Whole sentences heard, then the one the hang-up cut: together a prefix of what was sent.
    heard_then_cut = (greeting["text"] + " " + greeting["cut_text"]).strip()
    assert greeting["cut_text"] and sent.startswith(heard_then_cut), greeting
    assert greeting["text"].startswith("Thank you for calling"), greeting  # ~2 s: heard in full
    assert out["stats"]["barge_ins"] == 0 and out["stats"]["cut_at_hangup"] == 1
    transcript = (server.responses / f"call_{res.call_sid}.txt").read_text()
    assert f'[call ended during: "{greeting["cut_text"]}"]' in transcript
    assert "interrupted before any words" not in transcript
    summary = (server.responses / f"call_{res.call_sid}_summary.txt").read_text()
    assert "Barge-ins: 0 (and 1 reply cut off by the hang-up)" in summary
    assert f"({out['duration_s']:.2f} s)" in summary


async def test_the_callers_last_words_before_hanging_up_are_transcribed(make_server):
    server = make_server(GREETING="tone", DEFAULT_AUDIO_FORMAT="wav")
    wait_ready(server)
    caller = np.concatenate([silence(1.0), speech("librivox-sense-and-sensibility-0880.wav")])
    res = await run_call(SimConfig(server.base, caller, speed=1.0, tail_s=0.0, speak_at_s=0.0))
    out = server.result(res.call_sid)
    turns = caller_turns(out)
    assert turns, out["turns"]
    assert recall(turns[-1]["text"], ILL_DISPOSED) >= 0.7, turns
    assert out["transcript_pending"] is False
    assert turns[-1]["end_sample"] <= round(out["duration_s"] * 8000)


async def test_a_replay_at_full_speed_gives_the_live_calls_caller_transcript(make_server):
    """Turn taking and speech-to-text run on the stream's samples: streamed as fast as the socket
    goes or in real time, the caller's turns are the same, at the same sample indexes."""
    server = make_server(GREETING="assistant", DEFAULT_AUDIO_FORMAT="wav", BARGE_IN="false")
    wait_ready(server)
    caller = np.concatenate([silence(1.0), speech("librivox-sense-and-sensibility-0880.wav"), silence(2.0),
                             speech("librivox-sense-and-sensibility-0930.wav"), silence(0.3)])
    runs = {}
    for speed in (0.0, 1.0):
        res = await run_call(SimConfig(server.base, caller, speed=speed, tail_s=0.0, speak_at_s=0.0))
        runs[speed] = caller_turns(server.result(res.call_sid, timeout=60))
    fast, live = runs[0.0], runs[1.0]
    assert [(t["start_sample"], t["end_sample"]) for t in fast] == [(t["start_sample"], t["end_sample"]) for t in live]
    assert [t["text"] for t in fast] == [t["text"] for t in live]
    assert len(fast) == 2, fast
    assert recall(fast[0]["text"], ILL_DISPOSED) >= 0.7 and recall(fast[1]["text"], AMIABLE) >= 0.7, fast


async def test_listen_only_calls_get_both_voices_transcribed(make_server):
    server = make_server(CALL_MODE="listen", FORWARD_TO="+15005550006", DEFAULT_AUDIO_FORMAT="wav")
    wait_ready(server)
    caller = np.concatenate([silence(0.5), speech("librivox-sense-and-sensibility-0880.wav"), silence(5.0)])
    other = np.concatenate([silence(4.5), speech("librivox-sense-and-sensibility-0930.wav"), silence(1.0)])
    res = await run_call(SimConfig(server.base, caller, outbound_audio=other, speed=0, tail_s=0.0))
    out = server.result(res.call_sid, timeout=60)
    assert out["mode"] == "listen"
    by_role = {role: " ".join(t["text"] for t in out["turns"] if t["role"] == role) for role in ("caller", "other")}
    assert recall(by_role["caller"], ILL_DISPOSED) >= 0.7, out["turns"]
    assert recall(by_role["other"], AMIABLE) >= 0.7, out["turns"]
    other_turn = next(t for t in out["turns"] if t["role"] == "other")
    assert 4.3 * 8000 <= other_turn["start_sample"] <= 5.5 * 8000  # placed where the other party spoke
    transcript = (server.responses / f"call_{res.call_sid}.txt").read_text()
    assert "Caller:" in transcript and "Other party:" in transcript
    assert "other party 1)" in (server.responses / f"call_{res.call_sid}_summary.txt").read_text()


async def test_transcribe_false_leaves_listen_only_calls_untranscribed(make_server):
    server = make_server(CALL_MODE="listen", FORWARD_TO="+15005550006", DEFAULT_AUDIO_FORMAT="wav",
                         TRANSCRIBE="false")
    caller = np.concatenate([silence(0.5), speech("librivox-sense-and-sensibility-0880.wav"), silence(1.0)])
    res = await run_call(SimConfig(server.base, caller, outbound_audio=caller, speed=0, tail_s=0.0))
    out = server.result(res.call_sid)
    assert out["turns"] == [] and out["transcript_pending"] is False
    assert "(no speech was transcribed)" in (server.responses / f"call_{res.call_sid}_summary.txt").read_text()
