"""WS /web-call with a plain WebSocket client: params, auth, close codes, commands in every state,
hostile frames, reconnects, and the recording of a browser call (a real server, no models)."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import numpy as np
import pytest
import soundfile as sf

from tests.support.webcall import CHUNK, RATE, WebCallClient

pytestmark = pytest.mark.e2e

CALL_ID = "c0ffee" * 4  # a page's per-call id


def tone(seconds: float, hz: float = 300.0, amp: int = 6000) -> np.ndarray:
    t = np.arange(int(seconds * RATE))
    return (np.sin(2 * np.pi * hz * t / RATE) * amp).astype(np.int16)


def masters(server, sid: str) -> tuple[np.ndarray, np.ndarray]:
    folder = server.responses / ".calls" / sid
    inbound, r1 = sf.read(str(folder / "inbound.wav"), dtype="int16")
    outbound, r2 = sf.read(str(folder / "outbound.wav"), dtype="int16")
    assert r1 == r2 == RATE
    return inbound, outbound


@pytest.fixture(scope="module")
def server(module_server_factory):
    return module_server_factory(GREETING="tone", TRANSCRIBE="false", DEFAULT_AUDIO_FORMAT="wav")


@pytest.fixture(scope="module")
def keyed(module_server_factory):
    return module_server_factory(GREETING="none", TRANSCRIBE="false", API_KEY="k" * 24, WEB_CALL_TOKEN_TTL_S="2",
                                 ALLOWED_ORIGINS="https://shop.example.com, http://127.0.0.1:9")


# ---------------------------------------------------------------------------------- params
@pytest.mark.parametrize("first, says", [
    ("not json", "not JSON"),
    ("[1, 2]", "JSON object"),
    (b"\x00\x01", "first frame"),
    (json.dumps({"lang": {"nested": 1}}), "params.lang"),
    (json.dumps({"callId": "short"}), "callId"),
    (json.dumps({"callId": "../../etc/passwd-xxxxxxxx"}), "callId"),
])
async def test_bad_params_close_4400_with_a_reason(server, first, says):
    c = await WebCallClient.open(server.port, first)
    code, reason = await c.closed()
    assert code == 4400 and says in reason


async def test_missing_params_close_4400_after_3_s(server):
    c = await WebCallClient.open(server.port, None)
    t0 = time.monotonic()
    code, reason = await c.closed(timeout=6)
    assert code == 4400 and "missing params" in reason
    assert 2.5 < time.monotonic() - t0 < 5


# ---------------------------------------------------------------------------------- auth and origins
async def test_open_server_accepts_without_key_and_says_so_in_its_log(server):
    c = await WebCallClient.open(server.port, {})
    await c.wait_for(lambda c: any(t.startswith("Call ") for t in c.texts()))
    assert c.info()["sid"].startswith("WB") and len(c.info()["sid"]) == 34
    await c.hang_up()
    assert "browser calls (WS /web-call) are open to anyone" in server.log.read_text()


async def test_key_or_single_use_token_required(keyed):
    origin = {"origin": "https://shop.example.com"}
    for params, says in (({}, "Bearer <API_KEY>"), ({"authorization": "Bearer wrong"}, "wrong API key"),
                         ({"authorization": "wct_1_2_3"}, "not a valid"),
                         ({"authorization": "wct_9999999999_" + "0" * 32 + "_" + "0" * 32}, "not a valid")):
        c = await WebCallClient.open(keyed.port, params, additional_headers=origin)
        code, reason = await c.closed()
        assert (code, says in reason) == (4401, True), reason
    # the key itself
    c = await WebCallClient.open(keyed.port, {"authorization": "Bearer " + "k" * 24}, additional_headers=origin)
    await c.wait_for(lambda c: "SkipAnswer" in c.texts())  # GREETING=none: nothing to wait for
    await c.hang_up()
    # a token minted behind the key: the browser never sees the key
    assert httpx.post(f"{keyed.base}/web-call/tokens").status_code == 401
    minted = httpx.post(f"{keyed.base}/web-call/tokens", headers={"authorization": "Bearer " + "k" * 24}).json()
    token = minted["token"]
    assert minted["expires_in_s"] == 2 and minted["params"] == {"authorization": token}
    c = await WebCallClient.open(keyed.port, {"authorization": token, "callId": CALL_ID}, additional_headers=origin)
    await c.wait_for(lambda c: any(t.startswith("Call ") for t in c.texts()))
    sid = c.info()["sid"]
    # single use: another call cannot use it ...
    other = await WebCallClient.open(keyed.port, {"authorization": token, "callId": "f" * 20},
                                     additional_headers=origin)
    code, reason = await other.closed()
    assert code == 4401 and "already used" in reason
    # ... but this call's reconnect may, even after it expired
    await c.drop()
    await asyncio.sleep(2.2)
    again = await WebCallClient.open(keyed.port, {"authorization": token, "callId": CALL_ID},
                                     additional_headers=origin)
    await again.wait_for(lambda c: any(t.startswith("Call ") for t in c.texts()))
    assert again.info() == {"sid": sid, "resumed": True, "recording": f"/calls/{sid}/view"}
    await again.hang_up()
    # an expired token that never started a call is refused
    late = httpx.post(f"{keyed.base}/web-call/tokens", headers={"x-api-key": "k" * 24}).json()["token"]
    await asyncio.sleep(2.2)
    c = await WebCallClient.open(keyed.port, {"authorization": late}, additional_headers=origin)
    code, reason = await c.closed()
    assert code == 4401 and "expired" in reason
    # nothing secret in the journal or the log
    journal = (keyed.responses / ".calls" / sid / "journal.jsonl").read_text()
    assert token not in journal and "k" * 24 not in journal and token not in keyed.log.read_text()


async def test_allowed_origins(keyed):
    key = {"authorization": "Bearer " + "k" * 24}
    c = await WebCallClient.open(keyed.port, key, additional_headers={"origin": "https://evil.example.net"})
    code, reason = await c.closed()
    assert code == 4401 and "ALLOWED_ORIGINS" in reason
    c = await WebCallClient.open(keyed.port, key, additional_headers={"origin": "http://127.0.0.1:9"})
    await c.wait_for(lambda c: "SkipAnswer" in c.texts())
    await c.hang_up()


# ---------------------------------------------------------------------------------- the call itself
async def test_greeting_turns_and_recording_on_the_speech_only_clock(server):
    c = await WebCallClient.open(server.port, {"lang": "en", "page": "pricing"})
    await c.wait_for(lambda c: len(c.audio()) >= 2 * int(0.5 * RATE))
    sid = c.info()["sid"]
    chime = np.frombuffer(c.audio(), "<i2")
    assert c.messages()[0] == {"role": "assistant", "content": "(greeting chime)"}
    # first burst at least the client's 100 ms prebuffer, in one go
    first = [t for t, m in c.frames if isinstance(m, bytes)]
    assert sum(len(m) for t, m in c.frames if isinstance(m, bytes) and t - first[0] < 0.02) >= 2 * RATE // 10
    await asyncio.sleep(0.5)
    a, b = tone(1.0, 300), tone(0.8, 500)
    t_a = time.monotonic() - c.t0
    await c.speak(a)
    await c.wait_for(lambda c: c.texts().count("SkipAnswer") >= 1)  # nobody answers (GREETING=tone)
    await asyncio.sleep(1.0)
    t_b = time.monotonic() - c.t0
    await c.speak(b)
    await asyncio.sleep(0.3)
    await c.hang_up()
    t_hung = time.monotonic() - c.t0
    out = await asyncio.to_thread(server.result, sid)
    assert out["source"] == "browser" and out["call_sid"] == sid
    assert out["audio"]["sample_rate"] == RATE  # native rate: OUTPUT_SAMPLE_RATE unset
    assert out["end_reason"] == "caller ended the browser call"
    summary = (server.responses / f"call_{sid}_summary.txt").read_text()
    assert "Source: browser" in summary
    inbound, outbound = masters(server, sid)
    # the chime is where it played (right at the start), bit-exact (PCM end to end)
    assert _find(outbound, chime) < 0.1 * RATE
    # each burst bit-exact, where it was spoken (±150 ms: its first chunk ends when it arrived), silence
    # between, no overlap
    at_a = _find(inbound, a)
    at_b = _find(inbound, b)
    first_chunk_s = CHUNK / RATE
    assert abs(at_a / RATE - (t_a - first_chunk_s)) < 0.15 and abs(at_b / RATE - (t_b - first_chunk_s)) < 0.15
    assert at_b >= at_a + len(a)
    assert not inbound[at_a + len(a):at_b].any()
    assert abs(out["duration_s"] - t_hung) < 1.0
    journal = [json.loads(x) for x in (server.responses / ".calls" / sid / "journal.jsonl").read_text().splitlines()]
    params = next(e for e in journal if e["t"] == "params")
    assert params["values"] == {"lang": "en", "page": "pricing"}


def _find(track: np.ndarray, piece: np.ndarray) -> int:
    """Where `piece` sits in `track`, bit-exact (its first 100 samples, then the whole)."""
    head = piece[:100]
    for i in np.flatnonzero(track == head[0]):
        if np.array_equal(track[i:i + len(piece)], piece):
            return int(i)
    raise AssertionError("not found bit-exact in the track")


async def test_commands_in_every_state_and_hostile_frames(server):
    c = await WebCallClient.open(server.port, {})
    await c.wait_for(lambda c: any(t.startswith("Call ") for t in c.texts()))
    sid = c.info()["sid"]
    await c.send(tone(0.3).tobytes())  # audio before StartSpeaking: dropped, not recorded
    await c.send("StopSpeaking")  # no turn open: no answer is coming
    await c.wait_for(lambda c: c.texts().count("SkipAnswer") == 1)
    await c.send("Mute")
    await c.send("Hello there")  # unknown text: ignored
    await c.send("StartSpeaking")
    await c.send("StartSpeaking")  # twice: still one turn
    odd = tone(0.1, 440).tobytes() + b"\x07"  # odd length: the stray byte cannot be a sample
    await c.send(odd)
    await c.send(b"")
    await c.send("StopSpeaking")
    await c.wait_for(lambda c: c.texts().count("SkipAnswer") == 2)
    await c.send(b"\x00" * (64 * 1024 + 2))  # over MAX_WS_MESSAGE_BYTES
    code, reason = await c.closed()
    assert code == 4400 and "MAX_WS_MESSAGE_BYTES" in reason
    out = await asyncio.to_thread(server.result, sid)
    assert out["end_reason"] == "message too large"
    inbound, _ = masters(server, sid)
    assert _find(inbound, tone(0.1, 440)) >= 0
    assert np.count_nonzero(inbound) <= len(tone(0.1, 440))  # the early audio was not recorded


async def test_a_flood_of_meaningless_frames_is_closed(server):
    c = await WebCallClient.open(server.port, {})
    await c.wait_for(lambda c: any(t.startswith("Call ") for t in c.texts()))
    for _ in range(250):
        try:
            await c.send(b"\x01\x00" * 100)  # audio outside a turn
        except Exception:
            break
    code, reason = await c.closed()
    assert code == 4400 and "more than 200" in reason


async def test_a_dropped_socket_resumes_the_same_call_and_recording(server):
    c = await WebCallClient.open(server.port, {"callId": CALL_ID + "r"})
    await c.wait_for(lambda c: any(t.startswith("Call ") for t in c.texts()))
    sid = c.info()["sid"]
    a = tone(0.6, 300)
    await c.speak(a)
    await c.drop()
    await asyncio.sleep(1.0)
    c2 = await WebCallClient.open(server.port, {"callId": CALL_ID + "r"})
    await c2.wait_for(lambda c: "SkipAnswer" in c.texts())  # the client leaves "processing"
    assert c2.info() == {"sid": sid, "resumed": True, "recording": f"/calls/{sid}/view"}
    assert c2.messages() == []  # no greeting again, no old messages re-sent
    b = tone(0.6, 500)
    await c2.speak(b)
    await asyncio.sleep(0.2)
    await c2.hang_up()
    out = await asyncio.to_thread(server.result, sid)
    inbound, _ = masters(server, sid)
    assert _find(inbound, b) > _find(inbound, a) + len(a) + 0.8 * RATE  # the gap is where it was
    kinds = [json.loads(x)["t"] for x in (server.responses / ".calls" / sid / "journal.jsonl").read_text().splitlines()]
    assert kinds.count("disconnected") == 1 and kinds.count("reconnected") == 1
    # the call is over: its id is not a new call
    c3 = await WebCallClient.open(server.port, {"callId": CALL_ID + "r"})
    code, reason = await c3.closed()
    assert code == 4404 and "ended" in reason
    assert out["end_reason"] == "caller ended the browser call"


async def test_a_call_not_resumed_in_time_is_finalised_and_says_so(make_server):
    server = make_server(GREETING="tone", TRANSCRIBE="false", WEB_CALL_RESUME_S="2")
    c = await WebCallClient.open(server.port, {"callId": CALL_ID + "late"})
    await c.wait_for(lambda c: any(t.startswith("Call ") for t in c.texts()))
    sid = c.info()["sid"]
    await c.speak(tone(0.5))
    await c.drop()
    t0 = time.monotonic()
    out = await asyncio.to_thread(server.result, sid, 10)
    assert 1.5 < time.monotonic() - t0 < 6
    assert out["end_reason"] == "browser connection lost and not resumed in time"
    assert "browser connection lost" in (server.responses / f"call_{sid}_summary.txt").read_text()


async def test_set_format_before_during_and_after_for_browser_ids(server):
    base = server.base
    c = await WebCallClient.open(server.port, {"callId": CALL_ID + "fmt"})
    await c.wait_for(lambda c: any(t.startswith("Call ") for t in c.texts()))
    sid = c.info()["sid"]
    r = httpx.post(f"{base}/audio/set-format/{sid}", json={"format": "flac"})
    assert r.status_code == 200 and r.json()["state"] == "live"
    await c.speak(tone(0.5))
    await c.hang_up()
    out = await asyncio.to_thread(server.result, sid)
    assert out["files"]["conversation"].endswith(".flac")
    r = httpx.post(f"{base}/audio/set-format/{sid}", json={"format": "mp3", "bitrate": "64k"})
    assert r.status_code == 200
    assert (server.responses / f"call_{sid}_conversation.mp3").exists()
    x, rate = sf.read(str(server.responses / f"call_{sid}_conversation.mp3"))
    assert rate == RATE and abs(len(x) / rate - out["duration_s"]) < 0.1
    # before: kept for a browser call that has not started yet
    pre = "WB" + "ab" * 16
    r = httpx.post(f"{base}/audio/set-format/{pre}", json={"format": "ogg"})
    assert r.status_code == 200 and r.json()["state"] != "live"


async def test_a_browser_call_beside_a_phone_call_leaves_the_phone_call_bit_exact(server):
    """Both transports in one process at once: the phone call's recording is still exactly the
    audio its frames carried, and the browser call has its own."""
    from app.audio import mulaw
    from app.simulator import SimConfig, run_call

    phone_audio = np.random.default_rng(7).integers(-8000, 8000, 4 * 8000).astype(np.int16)
    c = await WebCallClient.open(server.port, {})
    await c.wait_for(lambda c: any(t.startswith("Call ") for t in c.texts()))
    web_sid = c.info()["sid"]
    talk = asyncio.create_task(c.speak(tone(3.0, 440), realtime=1.0))
    res = await run_call(SimConfig(server.base, phone_audio, speed=1.0, tail_s=0.0))
    await talk
    await c.hang_up()
    await asyncio.to_thread(server.result, res.call_sid)
    await asyncio.to_thread(server.result, web_sid)
    phone, rate = sf.read(str(server.responses / ".calls" / res.call_sid / "inbound.wav"), dtype="int16")
    assert rate == 8000
    carried = mulaw.decode(mulaw.encode(phone_audio))  # what the line carried: μ-law
    start = _find(phone, carried)
    assert np.array_equal(phone[start:start + len(carried)], carried)
    web, _ = masters(server, web_sid)
    assert _find(web, tone(3.0, 440)) >= 0
