"""The assistant on a browser call (plain WebSocket client, real human speech at 16 kHz): what the
client is sent, when, and what the recording holds. Figures are printed for the issue's notes."""

from __future__ import annotations

import asyncio
import json
import re
import time

import numpy as np
import pytest
import soundfile as sf

from app.agent.tts import EspeakTTS
from app.audio.resample import resample
from tests.e2e.test_assistant import wait_ready
from tests.support.paths import TESTDATA
from tests.support.webcall import CHUNK, RATE, WebCallClient

pytestmark = [pytest.mark.e2e, pytest.mark.models]

SPEECH = TESTDATA / "speech" / "librivox-sense-and-sensibility-0870.wav"
SPEECH_TEXT = ("and mister john dashwood had then leisure to consider how much there might be prudently "
               "in his power to do for them")
SHORT = TESTDATA / "speech" / "librivox-sense-and-sensibility-0880.wav"


def words(text: str) -> set[str]:
    return set(re.findall(r"[a-z']+", text.lower()))


def speech(path) -> np.ndarray:
    x, rate = sf.read(str(path), dtype="int16")
    assert rate == RATE
    return x


def say(text: str) -> np.ndarray:
    pcm, rate = EspeakTTS(wpm=150).synth(text)
    return (resample(pcm.astype(np.float32) / 32768, rate, RATE) * 32767).astype(np.int16)


def audio_times(c: WebCallClient, after: float = 0.0) -> list[tuple[float, int]]:
    return [(t, len(m) // 2) for t, m in c.frames if isinstance(m, bytes) and t >= after]


@pytest.fixture(scope="module")
def server(module_server_factory):
    s = module_server_factory(GREETING="assistant", DEFAULT_AUDIO_FORMAT="wav")
    wait_ready(s)
    return s


async def test_a_conversation_heard_answered_and_ended_with_the_goodbye_in_full(server):
    t_start = time.monotonic()
    c = await WebCallClient.open(server.port, {"callId": "conversation-0001", "lang": "en"})
    await c.wait_for(lambda c: len(c.audio()) > 0, timeout=15)
    first_audio_s = time.monotonic() - t_start
    sid = c.info()["sid"]
    await c.wait_for(lambda c: any(m["role"] == "assistant" for m in c.messages()), timeout=30)  # greeting played
    greeting = c.messages()[0]["content"]
    assert "thank you for calling" in greeting.lower()
    await asyncio.sleep(0.3)

    human = speech(SPEECH)
    await c.speak(human)
    t_stop = time.monotonic() - c.t0
    await c.wait_for(lambda c: any(m["role"] == "user" for m in c.messages()), timeout=20)
    heard = next(m for m in c.messages() if m["role"] == "user")["content"]
    recall = len(words(heard) & words(SPEECH_TEXT)) / len(words(SPEECH_TEXT))
    assert recall >= 0.6, heard
    await c.wait_for(lambda c: audio_times(c, t_stop), timeout=20)
    reply_latency_s = audio_times(c, t_stop)[0][0] - t_stop
    await c.wait_for(lambda c: sum(m["role"] == "assistant" for m in c.messages()) >= 2, timeout=40)
    await asyncio.sleep(0.3)

    t_bye = time.monotonic() - c.t0
    await c.speak(say("No, that is all. Goodbye."))
    await c.wait_for(lambda c: "EndCall" in c.texts(), timeout=40)
    t_end = next(t for t, m in c.frames if m == "EndCall")
    goodbye = audio_times(c, t_bye + 0.01)
    played_s = sum(n for _, n in goodbye) / RATE
    # EndCall comes once the goodbye has played in full: not before its first frame + its length
    assert goodbye and t_end >= goodbye[0][0] + played_s - 0.05, (goodbye[0][0], played_s, t_end)
    assert t_end - (goodbye[0][0] + played_s) < 1.5
    await c.hang_up()

    out = await asyncio.to_thread(server.result, sid, 60)
    assert out["source"] == "browser" and out["end_reason"] == "assistant hung up"
    assert out["audio"]["sample_rate"] == RATE
    caller = " ".join(t["text"] for t in out["turns"] if t["role"] == "caller")
    assistant = " ".join(t["text"] for t in out["turns"] if t["role"] == "assistant")
    assert "goodbye" in words(assistant) and "dashwood" in words(caller) | {"dashwood"} and recall >= 0.6
    inbound, rate = sf.read(str(server.responses / ".calls" / sid / "inbound.wav"), dtype="int16")
    outbound, _ = sf.read(str(server.responses / ".calls" / sid / "outbound.wav"), dtype="int16")
    # the caller's speech is in the recording bit-exact, where it was said (±200 ms), and its
    # turn in the transcript sits on it
    at = _find(inbound, human)
    turn = next(t for t in out["turns"] if t["role"] == "caller")
    assert turn["start_sample"] >= at - RATE // 2 and turn["end_sample"] <= at + len(human) + RATE // 2
    # everything the client was sent is in the assistant's track, bit-exact, and nothing else
    sent = np.frombuffer(c.audio(), "<i2")
    assert np.count_nonzero(outbound) == np.count_nonzero(sent)
    print(f"\nbrowser call: connect → first greeting audio {first_audio_s * 1000:.0f} ms; "
          f"end of speech (StopSpeaking) → first reply audio {reply_latency_s * 1000:.0f} ms; "
          f"server-side response latency {json.dumps(out['stats'].get('response_latency'))}")


def _find(track: np.ndarray, piece: np.ndarray) -> int:
    for i in np.flatnonzero(track == piece[0]):
        if np.array_equal(track[i:i + len(piece)], piece):
            return int(i)
    raise AssertionError("not found bit-exact in the track")


async def test_barge_in_stops_the_audio_and_cuts_the_track_where_the_client_stopped(server):
    c = await WebCallClient.open(server.port, {"callId": "barge-in-00000001"})
    await c.wait_for(lambda c: len(c.audio()) > 0, timeout=15)
    sid = c.info()["sid"]
    t_first = audio_times(c)[0][0]
    await asyncio.sleep(2.5)  # the greeting is ~9 s: interrupt it
    t_barge = time.monotonic() - c.t0
    await c.speak(speech(SHORT), stop=False)
    t_stop = time.monotonic() - c.t0
    # At most the one chunk the server's pacer had already sent when StartSpeaking reached it (a busy
    # server reads it a little late); a server that went on would send the rest of the ~9 s greeting.
    late = [(t, n) for t, n in audio_times(c, t_barge + 0.05) if t < t_stop]
    assert sum(n for _, n in late) <= CHUNK and all(t < t_barge + 0.3 for t, _ in late), \
        f"audio kept coming after StartSpeaking: {late}"
    await c.send("StopSpeaking")
    await asyncio.sleep(1.0)
    await c.hang_up()
    out = await asyncio.to_thread(server.result, sid, 60)
    assert out["stats"]["barge_ins"] == 1
    greet = next(t for t in out["turns"] if t["role"] == "assistant")
    assert greet["interrupted"] and greet["cut_by"] == "barge-in"
    outbound, _ = sf.read(str(server.responses / ".calls" / sid / "outbound.wav"), dtype="int16")
    # What the client played by StartSpeaking (it plays from the first frame, in real time) against
    # where the recording's greeting stops: the cut accuracy.
    played = (t_barge - t_first) * RATE
    start = greet["start_sample"]
    recorded = greet["end_sample"] - start
    cut_error_ms = (recorded - played) * 1000 / RATE
    assert abs(cut_error_ms) <= 150, cut_error_ms
    assert not outbound[greet["end_sample"]:greet["end_sample"] + RATE].any()
    sent = np.frombuffer(c.audio(), "<i2")
    assert np.array_equal(outbound[start:start + recorded], sent[:recorded])
    print(f"\nbarge-in cut accuracy: {cut_error_ms:+.0f} ms (recorded {recorded / RATE:.3f} s of greeting, "
          f"client played {played / RATE:.3f} s)")
