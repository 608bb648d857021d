"""The assistant on a real call: a scripted caller (espeak speech with pauses) through the simulator,
real turn detection, Whisper, the receptionist and hibari's voice; the recording checked against
what the caller heard."""

from __future__ import annotations

import re
import time

import httpx
import numpy as np
import pytest
import soundfile as sf

from app.agent.tts import EspeakTTS
from app.audio.resample import resample
from app.simulator import SimConfig, run_call

pytestmark = [pytest.mark.e2e, pytest.mark.models]


def say(text: str) -> np.ndarray:
    pcm, rate = EspeakTTS(wpm=150).synth(text)
    return (resample(pcm.astype(np.float32) / 32768, rate, 8000) * 32767).astype(np.int16)


def script(*parts: str | float) -> np.ndarray:
    """Speech and pauses (seconds) in order → one 8 kHz caller track."""
    out = []
    for p in parts:
        out.append(np.zeros(int(p * 8000), np.int16) if isinstance(p, (int, float)) else say(p))
    return np.concatenate(out)


def wait_ready(server, timeout=90):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if httpx.get(server.base + "/healthz").json().get("assistant") == "ready":
            return
        time.sleep(0.2)
    raise AssertionError("assistant did not load")


def words(text: str) -> set[str]:
    return set(re.findall(r"[a-z']+", text.lower()))


async def test_a_conversation_with_goodbye_recorded_as_heard(make_server):
    server = make_server(GREETING="assistant", DEFAULT_AUDIO_FORMAT="wav", RECORDING_CHANNELS=2)
    wait_ready(server)
    caller = script(10.5, "Hi, this is John Smith, calling about my broken window.", 13.0, "Yes, that is right.",
                    10.0, "Goodbye.", 20.0)  # the server hangs up first: the tail costs nothing
    res = await run_call(SimConfig(server.base, caller, speed=1.0, tail_s=0.0))
    assert res.closed_by_server, "the assistant should end the call after its goodbye"
    out = server.result(res.call_sid)
    caller_text = " ".join(t["text"] for t in out["turns"] if t["role"] == "caller")
    assistant_text = " ".join(t["text"] for t in out["turns"] if t["role"] == "assistant")
    assert {"john", "smith"} <= words(caller_text) and "window" in words(caller_text), caller_text
    assert "thank you for calling" in assistant_text.lower() and "goodbye" in words(assistant_text), assistant_text
    assert out["stats"]["caller_turns"] >= 3 and out["stats"]["assistant_turns"] >= 3
    assert out["stats"]["barge_ins"] == 0, (server.responses / f"call_{res.call_sid}.txt").read_text()
    assert out["end_reason"] == "assistant hung up"
    summary = (server.responses / f"call_{res.call_sid}_summary.txt").read_text()
    assert "=== MESSAGES TAKEN ===" in summary and "Smith" in summary
    assert "Response Latency: median" in summary
    lat = out["stats"]["response_latency"]
    assert lat["count"] >= 2 and lat["median_ms"] < 3000, lat
    # The assistant's track in the recording is what the simulated caller heard, to within 20 ms.
    x, _ = sf.read(str(server.responses / out["files"]["conversation"]), dtype="int16")
    rec = x[:, 1].astype(np.float32)
    heard = res.heard.astype(np.float32)
    n = min(len(rec), len(heard))
    env_r = np.convolve(np.abs(rec[:n]), np.ones(80), "same")
    env_h = np.convolve(np.abs(heard[:n]), np.ones(80), "same")
    lags = range(-400, 401, 8)
    scores = [np.dot(env_r[max(0, l):n + min(0, l)], env_h[max(0, -l):n - max(0, l)]) for l in lags]
    best = list(lags)[int(np.argmax(scores))]
    assert abs(best) <= 160, f"assistant track offset {best / 8:.1f} ms from what the caller heard"
    on_r, on_h = env_r > 2000, env_h > 2000
    assert (on_r == on_h).mean() > 0.97


async def test_barge_in_cuts_the_reply_where_the_caller_spoke(make_server):
    server = make_server(GREETING="assistant", DEFAULT_AUDIO_FORMAT="wav", RECORDING_CHANNELS=2)
    wait_ready(server)
    # The greeting lasts several seconds; the caller talks over it after 2.5 s.
    caller = script(2.5, "Hello, hello, I need to leave a message for the doctor please.", 8.0)
    res = await run_call(SimConfig(server.base, caller, speed=1.0, tail_s=0.0))
    assert res.clears >= 1, "a clear must be sent when the caller barges in"
    out = server.result(res.call_sid)
    greeting = next(t for t in out["turns"] if t["role"] == "assistant")
    assert greeting["interrupted"] is True
    assert "opening hours" not in greeting["text"]  # the unheard sentences are not in the transcript
    assert "[interrupted" in (server.responses / f"call_{res.call_sid}.txt").read_text()
    assert out["stats"]["barge_ins"] >= 1
    x, _ = sf.read(str(server.responses / out["files"]["conversation"]), dtype="int16")
    right = np.abs(x[:, 1].astype(np.int32))
    cut = int(out["turns"][0]["end_ms"] * 8)
    # After the cut the assistant side is silent until its next reply starts.
    nxt = [t for t in out["turns"] if t["role"] == "assistant" and t["start_ms"] * 8 > cut]
    stop = int(nxt[0]["start_ms"] * 8) if nxt else len(right)
    assert stop - cut > 800 and right[cut + 160:stop - 160].max() == 0, (cut, stop)
    # What the caller heard after the clear is silence too (Twilio dropped its buffer).
    assert np.abs(res.heard[cut + 160:stop - 160].astype(np.int32)).max() == 0
