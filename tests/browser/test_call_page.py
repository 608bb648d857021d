"""The browser call page against a real `callscribe serve`: served from the app alone, started from
the keyboard, the fake microphone's speech recorded as the caller's track, refusals shown."""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.request

import numpy as np
import pytest
import soundfile as sf
import soxr

from tests.browser.conftest import CallPage, launch
from tests.support.server import open_local

pytestmark = [pytest.mark.browser, pytest.mark.timeout(90)]

KEY = "browser-k3y-" + "z7" * 10
SERVER_ENV = {"GREETING": "tone", "STT_PROVIDER": "none"}  # a chime, no speech models: starts in a second


@pytest.fixture(scope="module")
def server(module_server_factory):
    return module_server_factory(**SERVER_ENV)


def get(url: str, headers: dict | None = None) -> tuple[int, dict, bytes]:
    try:
        with open_local(urllib.request.Request(url, headers=headers or {}), timeout=10) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def test_page_and_assets_come_from_the_app(server):
    status, headers, body = get(server.base + "/call")
    assert status == 200 and headers["content-type"].startswith("text/html")
    assert b'<body data-auth="open">' in body
    assert headers["cache-control"] == "no-cache"
    assert "default-src 'none'" in headers["content-security-policy"]
    for name, kind in (("call.js", "text/javascript"), ("capture-worklet.js", "text/javascript"),
                       ("call.css", "text/css")):
        status, headers, body = get(f"{server.base}/call/assets/{name}")
        assert (status, headers["content-type"].split(";")[0], headers["cache-control"]) == (200, kind, "no-cache")
        assert body
    for name in ("index.html", "nope.js", "..%2F..%2Fcall_page.py", "..%2Findex.html", "a/b.js"):
        status, headers, body = get(f"{server.base}/call/assets/{name}")
        assert status == 404 and headers["content-type"] == "application/json", name
        assert "serves only call.css, call.js, capture-worklet.js" in json.loads(body)["error"]


def test_page_loads_clean_and_asks_nothing_of_other_hosts(server, browser):
    page = CallPage(browser, server.base)
    try:
        assert page.state == "idle"
        assert page.page.is_hidden("#auth")  # an open server: no key field
        assert page.error() == (None, "")
        time.sleep(0.5)
        assert page.problems == []
        foreign = [u for u in page.requests if not u.startswith(server.base + "/")]
        assert foreign == []
    finally:
        page.close()


def test_a_call_from_the_keyboard_records_the_callers_speech(server, browser, tmp_path):
    page = CallPage(browser, server.base, width=375)  # a phone's width
    try:
        for _ in range(10):  # Tab reaches Start
            page.page.keyboard.press("Tab")
            if page.js("document.activeElement.id") == "start":
                break
        assert page.js("document.activeElement.id") == "start"
        page.page.keyboard.press("Enter")
        page.wait_state("listening", timeout=10)  # after the chime
        states = page.states()
        assert states[:2] == ["idle", "starting"], states

        # The speech starts 1.5 s into the fake mic: the level meter moves, then StartSpeaking,
        # the audio, StopSpeaking.
        page.wait_for(lambda: int(page.page.get_attribute("#level", "aria-valuenow")) > 10, timeout=10,
                      what="the level meter moving")
        page.wait_for(lambda: "StopSpeaking" in page.sent(), timeout=15, what="StopSpeaking")
        assert page.sent() == ["StartSpeaking", "StopSpeaking"]
        page.wait_state("listening", timeout=5)  # the server's SkipAnswer (no assistant here)
        states = page.states()
        assert states[states.index("user-speaking"):][:3] == ["user-speaking", "processing", "listening"], states
        assert page.js("window.callscribe.events.filter(e => e.type === 'ws-open').length") == 1

        sid = page.js("window.callscribe.sid")
        assert re.fullmatch(r"WB[0-9a-f]{32}", sid or ""), sid
        assert re.fullmatch(r"[0-9a-f]{32}", page.js("window.callscribe.callId"))
        conversation = page.js("window.callscribe.conversation")
        assert conversation[0]["role"] == "assistant"
        assert page.page.inner_text("#conversation li.assistant")

        assert page.overflow_px() <= 0, "the page scrolls sideways at 375 px in a call"
        shot = tmp_path / "call-375px.png"
        page.page.screenshot(path=str(shot), full_page=True)
        assert shot.stat().st_size > 5000
        assert page.problems == []

        page.page.keyboard.press("Enter")  # Stop has the focus during the call
        page.wait_state("stopped", timeout=5)
        link = page.page.locator("a#recording")
        assert link.is_visible() and link.get_attribute("href") == f"/calls/{sid}/view"
        assert link.inner_text() == "Recording of this call"
    finally:
        page.close()

    # The recording holds the caller's audio: ~2.8 s of the 2.99 s sentence.
    result = server.result(sid, timeout=20, transcript=False)
    assert result["source"] == "browser" and result["end_reason"] == "caller ended the browser call"
    status, _, body = get(f"{server.base}/calls/{sid}")
    call = json.loads(body)
    assert status == 200 and call["state"] == "finalized"
    assert 2.0 <= call["result"]["stats"]["talk_seconds"]["inbound"] <= 3.6, call["result"]["stats"]


def test_refused_key_shows_unauthorized_once_and_good_credentials_connect(make_server, browser):
    srv = make_server(**SERVER_ENV, API_KEY=KEY)
    page = CallPage(browser, srv.base, width=375)
    try:
        assert page.page.get_attribute("body", "data-auth") == "required"
        assert page.page.is_visible("#secret")
        assert page.overflow_px() <= 0

        page.page.click("#start")  # nothing entered: asks for it, connects nothing
        assert page.error()[0] == "missing-key"
        assert page.events("ws-open") == []

        page.page.fill("#secret", "not-the-key")
        page.page.click("#start")
        page.page.wait_for_selector('#error[data-code="unauthorized"]', timeout=10_000)
        assert "refused the key or token" in page.error()[1]
        time.sleep(3)  # no reconnect loop
        assert len(page.events("ws-open")) == 1
        assert [e["detail"]["code"] for e in page.events("ws-close")] == [4401]
        assert page.state == "stopped"

        page.page.fill("#secret", KEY)  # sent as "Bearer <key>"
        page.page.press("#secret", "Enter")
        page.wait_state("listening", timeout=10)
        assert page.error() == (None, "")
        page.page.click("#stop")
        assert page.js("localStorage.length + sessionStorage.length") == 0
        assert page.problems == []
    finally:
        page.close()

    # A site's backend mints a token and opens /call?token=…: the page sends it as it is.
    req = urllib.request.Request(srv.base + "/web-call/tokens", method="POST",
                                 headers={"Authorization": f"Bearer {KEY}"})
    with open_local(req) as r:
        token = json.loads(r.read())["token"]
    page = CallPage(browser, srv.base, path=f"/call?token={token}")
    try:
        assert page.page.is_hidden("#secret") and page.page.is_visible("#auth-from-url")
        page.page.click("#start")
        page.wait_state("listening", timeout=10)
        assert page.error() == (None, "")
        assert page.problems == []
    finally:
        page.close()


def test_a_refused_microphone_says_so(server, playwright):
    b = launch(playwright, fake_ui=False)  # no automatic "allow": the context grants nothing
    try:
        page = CallPage(b, server.base, permissions=[])
        page.page.click("#start")
        page.page.wait_for_selector('#error[data-code="mic-denied"]', timeout=10_000)
        assert "microphone is blocked" in page.error()[1]
        assert page.state == "idle"
        assert page.events("ws-open") == []  # the microphone comes first, as in Micdrop
        assert page.page.is_enabled("#start")
    finally:
        b.close()


def test_an_insecure_origin_says_https_is_needed(server, playwright):
    # http on a name other than localhost is not a secure context: no navigator.mediaDevices.
    b = launch(playwright, extra=["--host-resolver-rules=MAP callscribe.test 127.0.0.1"])
    try:
        page = CallPage(b, f"http://callscribe.test:{server.port}")
        assert page.js("window.isSecureContext") is False
        assert page.error()[0] == "insecure"
        assert "https" in page.error()[1]
        assert page.page.is_disabled("#start")
    finally:
        b.close()


@pytest.mark.models
def test_the_assistant_hears_the_caller_and_answers(make_server, browser):
    srv = make_server(GREETING="assistant")  # the offline speech models
    deadline = time.monotonic() + 90
    while json.loads(get(srv.base + "/healthz")[2]).get("assistant") != "ready":
        assert time.monotonic() < deadline, "the assistant did not get ready"
        time.sleep(0.2)
    page = CallPage(browser, srv.base)
    try:
        page.page.click("#start")
        # The greeting plays; the caller's sentence interrupts it, is transcribed and answered.
        page.wait_for(lambda: [m["role"] for m in page.js("window.callscribe.conversation")][-2:] ==
                      ["user", "assistant"], timeout=25, what="the caller's words and an answer")
        said = page.page.inner_text("#conversation li.user").lower()
        assert "young man" in said, said  # "he was not an ill disposed young man" (Whisper tiny.en)
        stop_speaking = next(e["t"] for e in page.events("sent-command") if e["detail"] == "StopSpeaking")
        page.wait_for(lambda: any(e["t"] > stop_speaking for e in page.events("playback-start")), timeout=10,
                      what="the answer playing")
        opened = page.events("ws-open")[0]["t"]
        plays = [e["t"] for e in page.events("playback-start")]
        print(f"\nin Chromium: socket open → greeting playing {plays[0] - opened:.0f} ms; "
              f"StopSpeaking → answer playing {next(t for t in plays if t > stop_speaking) - stop_speaking:.0f} ms")
        assert page.problems == []
        sid = page.js("window.callscribe.sid")
        page.page.click("#stop")
    finally:
        page.close()
    result = srv.result(sid, timeout=30)
    assert result["stats"]["caller_turns"] >= 1 and result["stats"]["assistant_turns"] >= 1
    assert result["source"] == "browser" and result["audio"]["sample_rate"] == 16_000
    # The sentence interrupted the greeting: a barge-in, the greeting cut where the caller came in.
    turns = result["turns"]
    greeting, caller = turns[0], next(t for t in turns if t["role"] == "caller")
    assert result["stats"]["barge_ins"] == 1 and greeting["interrupted"] and greeting["cut_by"] == "barge-in"
    assert caller["start_sample"] - 16_000 <= greeting["end_sample"] <= caller["end_sample"]
    assert "young man" in caller["text"].lower()
    # Both voices are in the recording where the transcript says: loud inside their turns.
    folder = srv.responses / ".calls" / sid
    inbound, _ = sf.read(str(folder / "inbound.wav"), dtype="int16")
    outbound, _ = sf.read(str(folder / "outbound.wav"), dtype="int16")
    rms = lambda x: float(np.sqrt(np.mean(x.astype(np.float64) ** 2))) if len(x) else 0.0  # noqa: E731
    assert rms(inbound[caller["start_sample"]:caller["end_sample"]]) > 300
    for t in turns:
        if t["role"] == "assistant":
            assert rms(outbound[t["start_sample"]:t["end_sample"]]) > 300, t
    assert not outbound[greeting["end_sample"]:greeting["end_sample"] + 8000].any()  # cut: silence after


def test_a_socket_dropped_mid_call_reconnects_into_the_same_recording(make_server, playwright, tmp_path):
    """The network between page and server goes (a proxy cut: the page sees 1006); the page
    reconnects with the same params and the server continues the same call and recording."""
    from tests.browser.conftest import SPEECH
    from tests.support.proxy import CuttableProxy

    speech, rate = sf.read(SPEECH, dtype="float32")
    speech = soxr.resample(speech, rate, 48_000)
    gap = lambda s: np.zeros(int(48_000 * s), "float32")  # noqa: E731
    mic = tmp_path / "two-sentences-48k.wav"
    sf.write(mic, np.concatenate([gap(1.5), speech, gap(6.0), speech, gap(6.0)]), 48_000, subtype="PCM_16")
    srv = make_server(**SERVER_ENV)
    proxy = CuttableProxy(srv.port)
    browser = launch(playwright, mic=mic)
    page = CallPage(browser, proxy.base)
    try:
        page.page.click("#start")
        page.wait_for(lambda: page.sent().count("StopSpeaking") >= 1, timeout=15, what="the first sentence")
        sid = page.js("window.callscribe.sid")
        proxy.cut()
        page.wait_state("reconnecting", timeout=5)
        page.wait_for(lambda: len(page.events("ws-open")) == 2, timeout=10, what="the reconnect")
        page.wait_for(lambda: page.sent().count("StopSpeaking") >= 2, timeout=20, what="the second sentence")
        assert page.js("window.callscribe.sid") == sid
        assert page.error() == (None, "")  # recovered: no error left on screen
        page.page.click("#stop")
        page.wait_state("stopped")
    finally:
        page.close()
        browser.close()
        proxy.close()
    result = srv.result(sid, timeout=30)
    assert result["end_reason"] == "caller ended the browser call"
    journal = [json.loads(x) for x in (srv.responses / ".calls" / sid / "journal.jsonl").read_text().splitlines()]
    kinds = [e["t"] for e in journal]
    assert kinds.count("disconnected") == 1 and kinds.count("reconnected") == 1
    # both sentences are in the one recording, the second after the drop
    inbound, r = sf.read(str(srv.responses / ".calls" / sid / "inbound.wav"), dtype="int16")
    dropped_at = next(e["at_ms"] for e in journal if e["t"] == "disconnected") / 1000
    loud = np.flatnonzero(np.abs(inbound.astype(np.int32)) > 1000) / r
    assert loud.size and loud.min() < dropped_at < loud.max()
    assert result["stats"]["talk_seconds"]["inbound"] > 2 * 2.0
