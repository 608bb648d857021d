"""What the call page puts on the wire, and how it takes what comes back, against a scripted
Micdrop server: barge-in, mute and pause, reconnects and final close codes, EndCall, the
conversation list. The page must behave like the Micdrop client 2.2.9 (micdrop-protocol.md)."""

from __future__ import annotations

import json
import re
import time

import numpy as np
import pytest
import soundfile as sf

from tests.browser.conftest import SPEECH, CallPage
from tests.browser.scripted_server import Conn, ScriptedServer, tone

pytestmark = [pytest.mark.browser, pytest.mark.timeout(60)]


@pytest.fixture(scope="module")
def server():
    with ScriptedServer() as s:
        yield s


@pytest.fixture
def scripted(server):
    server.conns = []
    server.refused = 0
    server.hang = server.hung = 0
    server.script = None
    return server


@pytest.fixture
def call(browser, scripted):
    pages: list[CallPage] = []

    def open_() -> CallPage:
        pages.append(CallPage(browser, scripted.base))
        return pages[-1]

    yield open_
    for p in pages:
        p.close()


def envelope_db(pcm: np.ndarray, frame: int = 320) -> np.ndarray:
    n = len(pcm) // frame
    return 10 * np.log10((pcm[: n * frame].reshape(n, frame) ** 2).mean(axis=1) + 1e-10)


def best_envelope_correlation(a: np.ndarray, b: np.ndarray, max_lag: int = 30) -> float:
    """Loudness contours (20 ms frames) of two recordings, best aligned: ~1 for the same words."""
    ea, eb = envelope_db(a), envelope_db(b)
    best = -1.0
    for lag in range(-max_lag, max_lag + 1):
        x, y = (ea[lag:], eb) if lag >= 0 else (ea, eb[-lag:])
        n = min(len(x), len(y))
        if n > 50:
            best = max(best, float(np.corrcoef(x[:n], y[:n])[0, 1]))
    return best


def test_the_speech_goes_out_as_pcm16_16k_inside_a_turn_and_barges_in(scripted, call):
    async def script(conn: Conn) -> None:
        await conn.call_frame()
        await conn.send('Message {"role":"assistant","content":"A long greeting"}')
        await conn.stream(tone(8.0))  # still talking when the caller starts (~1.75 s), and after

    scripted.script = script
    page = call()
    page.page.click("#start")
    page.wait_for(lambda: "StopSpeaking" in page.sent(), timeout=15, what="StopSpeaking")
    sent = {e["detail"]: e["t"] for e in page.events("sent-command")}
    t_start, t_stop = sent["StartSpeaking"], sent["StopSpeaking"]

    # Barge-in: playback stops the moment StartSpeaking goes, and the audio still arriving is
    # dropped until StopSpeaking; after it, the rest plays.
    barge = page.events("barge-in")
    assert len(barge) == 1 and abs(barge[0]["t"] - t_start) < 50
    assert any(abs(e["t"] - t_start) < 50 for e in page.events("playback-stop"))
    assert any(t_start < e["t"] < t_stop for e in page.events("audio-in-bytes"))
    assert not any(t_start < e["t"] < t_stop for e in page.events("playback-start"))
    page.wait_for(lambda: any(e["t"] > t_stop for e in page.events("playback-start")), timeout=5,
                  what="playback after StopSpeaking")
    assert page.problems == []

    conn = scripted.conns[0]
    assert set(conn.params) == {"callId", "client"} and conn.params["client"] == "callscribe-page"
    assert re.fullmatch(r"[0-9a-f]{32}", conn.params["callId"])
    frames = [f for f in conn.frames if f.kind != "close"]
    assert [f.text for f in frames if f.kind == "text"] == ["StartSpeaking", "StopSpeaking"]
    first, last = frames[0], frames[-1]
    assert first.text == "StartSpeaking" and last.text == "StopSpeaking", "audio outside the turn"
    audio = [f.data for f in frames if f.kind == "bytes"]
    assert {len(a) for a in audio} == {3200}  # 100 ms of PCM16 at 16 kHz each
    pcm = np.frombuffer(b"".join(audio), "<i2").astype("float32") / 32768
    assert 2.3 <= len(pcm) / 16000 <= 3.6  # the 2.99 s sentence (it starts ~0.25 s in)
    speech, rate = sf.read(SPEECH, dtype="float32")
    assert rate == 16000
    # Chrome's echo cancellation, noise suppression and gain control change the samples, not the words.
    assert best_envelope_correlation(speech, pcm) > 0.7


def test_mute_sends_only_stop_speaking_and_pause_adds_mute(scripted, call):
    async def script(conn: Conn) -> None:
        await conn.call_frame()
        await conn.send("SkipAnswer")
        await conn.until("Mute", timeout=20)
        await conn.stream(tone(0.5))  # the page is paused: it drops this

    scripted.script = script
    page = call()
    page.page.click("#start")
    page.wait_for(lambda: page.sent() == ["StartSpeaking"], timeout=15, what="StartSpeaking")
    time.sleep(0.3)
    page.page.click("#mute")  # mid-sentence
    assert page.page.inner_text("#mute") == "Unmute"
    assert page.sent() == ["StartSpeaking", "StopSpeaking"]
    assert page.state == "processing"  # the turn was cut short, and an answer to it may come
    page.page.click("#mute")  # unmute: the sentence goes on, so a new turn starts
    page.wait_for(lambda: len(page.sent()) == 3, timeout=5, what="a second StartSpeaking")
    time.sleep(0.2)
    page.page.click("#pause")
    assert page.sent() == ["StartSpeaking", "StopSpeaking", "StartSpeaking", "StopSpeaking", "Mute"]
    assert (page.state, page.page.inner_text("#state"), page.page.inner_text("#pause")) == \
        ("started", "Call paused", "Resume")
    page.wait_for(lambda: page.events("audio-in-bytes"), timeout=5, what="audio while paused")
    t_pause = page.events("sent-command")[-1]["t"]
    time.sleep(1.0)
    assert not any(e["t"] > t_pause for e in page.events("playback-start"))  # dropped while paused
    page.page.click("#pause")  # resume
    page.wait_state("listening", timeout=5)

    conn = scripted.conns[0]
    texts = conn.texts()
    assert texts == ["StartSpeaking", "StopSpeaking", "StartSpeaking", "StopSpeaking", "Mute"]
    inside = False
    for f in conn.frames:  # audio only inside StartSpeaking…StopSpeaking
        if f.kind == "text":
            inside = f.text == "StartSpeaking"
        elif f.kind == "bytes":
            assert inside, "audio outside a turn"
    assert page.problems == []


def test_1011_reconnects_after_a_second_with_the_same_params(scripted, call):
    async def script(conn: Conn) -> None:
        if conn.index == 0:
            await conn.close(1011)
            return
        await conn.call_frame()
        await conn.send("SkipAnswer")

    scripted.script = script
    page = call()
    page.page.click("#start")
    page.page.wait_for_selector('#error[data-code="server-error"]', timeout=5000)
    assert "reconnecting" in page.error()[1].lower()
    page.wait_state("listening", timeout=5)
    assert "reconnecting" in page.states()
    assert page.error() == (None, "")  # gone once back
    first, second = scripted.conns
    assert first.params == second.params  # the same callId: the server resumes the same call
    closed = page.events("ws-close")[0]
    reopened = page.events("ws-open")[1]
    assert closed["detail"]["code"] == 1011
    assert 900 <= reopened["t"] - closed["t"] <= 2000


@pytest.mark.parametrize(("code", "reason", "error"), [
    (4400, "params.callId must be 16 to 64 letters", "bad-request"),
    (4404, "this call has ended", "not-found"),
    (1000, "", None),
    (1012, "", None),
])
def test_final_close_codes_stop_without_reconnecting(scripted, call, code, reason, error):
    async def script(conn: Conn) -> None:
        await conn.close(code, reason)

    scripted.script = script
    page = call()
    page.page.click("#start")
    page.wait_state("stopped", timeout=5)
    time.sleep(1.5)
    assert len(scripted.conns) == 1
    assert page.error()[0] == error
    if code == 4400:
        assert reason in page.error()[1]  # the server's reason is shown
    assert page.page.is_enabled("#start")


def test_end_call_lets_the_goodbye_play_then_closes_without_a_code(scripted, call):
    async def script(conn: Conn) -> None:
        await conn.call_frame("WB" + "ab" * 16)
        await conn.send('Message {"role":"assistant","content":"Goodbye!"}')
        goodbye = tone(1.2, 523)
        await conn.ws.send_bytes(goodbye[:6400])
        await conn.send("EndCall")  # mid-goodbye: the rest is still coming
        await conn.stream(goodbye[6400:], lead_s=0.0)

    scripted.script = script
    page = call()
    page.page.click("#start")
    page.wait_state("stopped", timeout=10)
    assert page.page.inner_text("#notice") == "The assistant ended the call."
    starts, stops = page.events("playback-start"), page.events("playback-stop")
    closed = [e for e in page.events("ws-close") if e["detail"].get("by") == "page"]
    assert len(closed) == 1
    assert stops[-1]["t"] <= closed[0]["t"]
    assert stops[-1]["t"] - starts[0]["t"] >= 1100  # all 1.2 s of it played
    assert page.events("audio-in-bytes")[-1]["detail"] == 1.2 * 16000 * 2
    page.wait_for(lambda: scripted.conns[0].close_code is not None, timeout=5, what="the server seeing the close")
    assert scripted.conns[0].close_code == 1005  # ws.close() with no code, as Micdrop's stop()
    assert page.page.get_attribute("a#recording", "href") == "/calls/WB" + "ab" * 16 + "/view"


def test_a_server_that_cannot_be_reached_is_retried_every_second(scripted, call):
    scripted.script = None  # the upgrade is refused: the browser sees 1006
    page = call()
    page.page.click("#start")
    page.page.wait_for_selector('#error[data-code="cannot-connect"]', timeout=5000)
    assert "trying" in page.error()[1]
    page.wait_for(lambda: scripted.refused >= 3, timeout=5, what="three attempts")
    assert page.state == "starting"
    assert page.events("ws-open") == []
    page.page.click("#stop")
    assert page.state == "idle"
    tries = scripted.refused
    time.sleep(1.5)
    assert scripted.refused == tries  # Stop stops the retries


def test_a_connection_stuck_opening_is_dropped_after_5_s_and_retried(scripted, call):
    async def script(conn: Conn) -> None:
        await conn.call_frame()
        await conn.send("SkipAnswer")

    scripted.hang = 1  # the first upgrade is never answered
    scripted.script = script
    page = call()
    page.page.click("#start")
    page.wait_state("listening", timeout=10)
    started = next(s["t"] for s in page.js("window.__states") if s["state"] == "starting")
    closed, opened = page.events("ws-close")[0], page.events("ws-open")[0]
    assert closed["detail"] == {"code": 1006, "reason": "", "opened": False}
    assert 4900 <= closed["t"] - started <= 6000  # the client's 5 s connection timeout
    assert 900 <= opened["t"] - closed["t"] <= 2000
    assert (scripted.hung, len(scripted.conns)) == (1, 1)


def test_the_conversation_follows_message_frames(scripted, call):
    async def script(conn: Conn) -> None:
        await conn.call_frame()
        for m in ({"role": "user", "content": "first"}, {"role": "assistant", "content": "an answer"},
                  {"role": "system", "content": "a note"}, {"role": "user", "content": "<b>second</b>"}):
            await conn.send("Message " + json.dumps(m))
        await conn.send("CancelLastUserMessage")
        await conn.send('ToolCall {"name":"lookup","parameters":{},"output":{}}')
        await conn.send("SomethingNew")  # unknown text is ignored
        await conn.ws.send_bytes(b"\x01\x02\x03")  # odd length: not PCM16, dropped
        await conn.send("SkipAnswer")

    scripted.script = script
    page = call()
    page.page.click("#start")
    page.wait_state("listening", timeout=5)
    items = page.js("[...document.querySelectorAll('#conversation li')].map(li => [li.className, li.textContent])")
    assert items == [["user", "first"], ["assistant", "an answer"], ["system", "a note"]]
    assert [m["role"] for m in page.js("window.callscribe.conversation")] == ["user", "assistant", "system"]
    assert page.problems == []
