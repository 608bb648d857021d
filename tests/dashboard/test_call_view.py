"""A call's page (GET /calls/{sid}/view) and its live events (GET /calls/{sid}/live) against a real
`callscribe serve`, real simulated calls and Debian's Chromium: the player plays, the transcript and
the picture seek it and follow it, the picture's shapes sit where the call's turns and sounds are,
another format is made on demand, a call is deleted, and a live call grows on the page and then
turns into its recording without a reload.

Fast calls carry a tone for the caller and the chime greeting (no speech models); the one test
marked `models` has the assistant (Whisper, the receptionist, a voice) hear real speech.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import threading
import time
import xml.etree.ElementTree as ET

import httpx
import numpy as np
import pytest
import soundfile as sf
import soxr

from app.simulator import SimConfig, SimResult, run_call
from tests.dashboard.conftest import FAST_SERVER, DashboardPage, screenshot
from tests.support.paths import TESTDATA

pytestmark = [pytest.mark.dashboard, pytest.mark.e2e, pytest.mark.timeout(120)]

RATE = 8000
FIRST_TS_MS = 120  # where the simulator's first frame sits on the stream clock
KEY = "dash-k3y-" + "q8" * 12
FAST = FAST_SERVER | {"DEFAULT_AUDIO_FORMAT": "wav", "PER_TRACK_FILES": "true"}
SVG = "{http://www.w3.org/2000/svg}"


# ---------------------------------------------------------------------------------- calls
def tone(seconds: float, hz: float = 440.0) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    return (np.sin(2 * np.pi * hz * t) * 8000).astype(np.int16)


def quiet(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * RATE), np.int16)


# The caller: 1 s of silence, a 1.5 s tone, 0.5 s of silence, another 1.5 s tone.
CALLER = np.concatenate([quiet(1.0), tone(1.5), quiet(0.5), tone(1.5, 660.0)])
CALLER_TONES = [(FIRST_TS_MS * 8 + 8000, FIRST_TS_MS * 8 + 20000), (FIRST_TS_MS * 8 + 24000, FIRST_TS_MS * 8 + 36000)]


def new_sid() -> str:
    return "CA" + secrets.token_hex(16)


def fast_call(server, **kw) -> tuple[str, dict, int]:
    """A call at full speed (no pacing), finalised: its sid, its JSON, and where the caller started
    speaking (samples). The caller waits for the greeting to end: sent unpaced from the first frame,
    the whole call would reach the server before the greeting went out, and the line would play it
    over the caller (or after the hang-up)."""
    cfg = SimConfig(server.base, CALLER, call_sid=new_sid(), speed=0, speak_at_s=None, quiet_s=0.3,
                    dtmf=[(2.0, "4")], **kw)
    result = Background(cfg).join()
    return result.call_sid, server.result(result.call_sid), result.speech_start_ms * RATE // 1000


class Background:
    """A simulated call on a thread with its own event loop (Playwright's sync API and the tests
    keep the main thread)."""

    def __init__(self, cfg: SimConfig) -> None:
        self.cfg = cfg
        self.result: SimResult | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.result = asyncio.run(run_call(self.cfg))
        except BaseException as e:  # noqa: BLE001 (handed to the test in join)
            self.error = e

    @property
    def running(self) -> bool:
        return self.thread.is_alive()

    def join(self, timeout: float = 90) -> SimResult:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the simulated call did not end"
        if self.error is not None:
            raise self.error
        assert self.result is not None
        return self.result


def sse(response: httpx.Response):
    """The events of a text/event-stream: {"id", "event", "data"} (data parsed as JSON)."""
    fields: dict[str, str] = {}
    for line in response.iter_lines():
        if line == "":
            if "event" in fields or "data" in fields:
                yield {"id": fields.get("id"), "event": fields.get("event", "message"),
                       "data": json.loads(fields["data"]) if "data" in fields else None}
            fields = {}
        elif line.startswith(":"):
            continue
        else:
            name, _, value = line.partition(":")
            fields[name] = value[1:] if value.startswith(" ") else value


def svg_rects(svg_text: str) -> dict[str, list[tuple[int, int]]]:
    """Each lane's spans as the timeline SVG draws them (from the rects' data attributes)."""
    root = ET.fromstring(svg_text)
    lanes: dict[str, list[tuple[int, int]]] = {}
    for rect in root.iter(f"{SVG}rect"):
        if "data-lane" in rect.attrib:
            lanes.setdefault(rect.attrib["data-lane"], []).append(
                (int(rect.attrib["data-start-sample"]), int(rect.attrib["data-end-sample"])))
    return lanes


def overlaps(a: tuple[float, float], b: tuple[float, float]) -> bool:
    return a[0] < b[1] and b[0] < a[1]


# ---------------------------------------------------------------------------------- servers
@pytest.fixture(scope="module")
def server(module_server_factory):
    return module_server_factory(**FAST)


@pytest.fixture(scope="module")
def keyed_server(module_server_factory):
    """API_KEY set, and masters not kept (so another format cannot be made)."""
    return module_server_factory(**FAST, API_KEY=KEY, KEEP_MASTERS="false")


# ---------------------------------------------------------------------------------- the page
class Page(DashboardPage):
    """A call's page (conftest's DashboardPage: console problems and requests watched), waited for
    until `window.callview.mode` is `wait`."""

    def __init__(self, browser, base: str, path: str, *, width: int = 1100, wait: str | None = "recorded",
                 expected: tuple[str, ...] = ()) -> None:
        self.expected = expected  # console lines that are the point of the test (e.g. a refused request)
        super().__init__(browser, base, path, width=width, wait=False)
        if wait:
            self.wait_mode(wait)

    def until(self, fn: str, timeout: float = 15, arg=None) -> None:
        """Wait for a JS function (a string "() => …": the page's CSP allows no eval of expressions)."""
        self.page.wait_for_function(fn, arg=arg, timeout=timeout * 1000)

    def wait_mode(self, mode: str, timeout: float = 15) -> None:
        try:
            self.until("(m) => window.callview && window.callview.mode === m", timeout, mode)
        except Exception as e:
            raise AssertionError(f"the page never became {mode!r}: {self.js('() => window.callview && window.callview.mode')}; "
                                 f"problems {self.problems}") from e
        if mode == "recorded":
            self.until("() => ['loaded', 'error'].includes(window.callview.timeline)")

    def clean(self) -> None:
        problems = [p for p in self.problems if not any(x in p for x in self.expected)]
        assert problems == [], problems
        assert self.foreign_requests() == []

    def seek_events(self) -> list[float]:
        return [e["detail"] for e in self.js("() => window.callview.events") if e["type"] == "seek"]

    def current_time(self) -> float:
        return self.js("() => document.getElementById('player').currentTime")


# ---------------------------------------------------------------------------------- the event stream
def test_live_events_arrive_in_order_while_the_call_runs_and_end_at_finalisation(server):
    sid = new_sid()
    call = Background(SimConfig(server.base, CALLER, call_sid=sid, speed=1.0, tail_s=0.5, dtmf=[(2.0, "4")]))
    server.wait_live(sid)
    events, running_at, ended_final = [], [], None
    with httpx.stream("GET", f"{server.base}/calls/{sid}/live", timeout=30) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        assert r.headers["cache-control"] == "no-cache"
        for ev in sse(r):
            events.append(ev)
            running_at.append(call.running)
            if ev["event"] == "ended":
                ended_final = server.finalized(sid)
    # The stream closed by itself after `ended` (the loop above ended).
    call.join()
    out = server.result(sid)
    kinds = [e["event"] for e in events]
    assert kinds[0] == "start" and kinds[-1] == "ended" and kinds.count("ended") == 1, kinds
    assert ended_final, "`ended` came before the call's files were final"
    start = events[0]["data"]
    assert start["rate"] == RATE and start["mode"] == "assistant" and "account_sid" not in start and "params" not in start
    journal = [e for e in events if e["id"] is not None]
    assert [e["event"] for e in journal] == ["start", "turn", "dtmf", "stop"], kinds
    ids = [int(e["id"]) for e in journal]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert journal[1]["data"]["text"] == "(greeting chime)" and journal[2]["data"]["digit"] == "4"
    # Progress: about once a second, growing while the call ran, and the call's length at the end.
    progress = [(e["data"]["samples"], running) for e, running in zip(events, running_at) if e["event"] == "progress"]
    samples = [p for p, _ in progress]
    assert samples == sorted(samples) and len({p for p, running in progress if running}) >= 2, progress
    stop = journal[3]["data"]
    assert samples[-1] == stop["samples"] == round(out["duration_s"] * RATE)
    # The spans sent live, each lane's `from` replacing what it covers, end as the finished picture's.
    lanes: dict[str, list[list[int]]] = {}
    for e in events:
        if e["event"] == "spans":
            d = e["data"]
            lanes[d["lane"]] = [s for s in lanes.get(d["lane"], []) if s[0] < d["from"]] + d["spans"]
    picture = httpx.get(f"{server.base}/calls/{sid}/timeline.svg")
    assert picture.status_code == 200 and picture.headers["content-type"].startswith("image/svg+xml")
    drawn = svg_rects(picture.text)
    assert {k: [tuple(s) for s in v] for k, v in lanes.items()} == {"caller": drawn["caller"],
                                                                    "assistant": drawn.get("assistant", [])}
    for a, b in CALLER_TONES:  # the caller's two tones, each one span, to a 50 ms window
        assert any(abs(s - a) <= 400 and abs(e - b) <= 400 for s, e in drawn["caller"]), (drawn, CALLER_TONES)


def test_live_events_replay_a_finished_call_resume_from_last_event_id_and_refuse_bad_ids(server):
    sid, out, _ = fast_call(server)
    t0 = time.monotonic()
    with httpx.stream("GET", f"{server.base}/calls/{sid}/live", timeout=10) as r:
        events = list(sse(r))
    assert time.monotonic() - t0 < 3, "a finished call's stream should end at once"
    kinds = [e["event"] for e in events if e["id"] is not None]
    assert kinds == ["start", "turn", "dtmf", "stop"] and events[-1]["event"] == "ended"
    turn_id = next(e["id"] for e in events if e["event"] == "turn")
    with httpx.stream("GET", f"{server.base}/calls/{sid}/live", headers={"Last-Event-ID": turn_id}, timeout=10) as r:
        resumed = list(sse(r))
    assert [e["event"] for e in resumed if e["id"] is not None] == ["dtmf", "stop"]
    assert resumed[-1]["event"] == "ended"
    progress = [e["data"] for e in resumed if e["event"] == "progress"]
    assert progress and progress[-1]["rate"] == RATE  # the rate from the journal's start, read again
    for bad in ("not-a-number", "99999999999", "7"):  # never a line's end: from the start
        with httpx.stream("GET", f"{server.base}/calls/{sid}/live", headers={"Last-Event-ID": bad}, timeout=10) as r:
            assert [e["event"] for e in sse(r) if e["id"] is not None][0] == "start", bad
    for path in ("/calls/CA123/live", "/calls/ca" + "0" * 32 + "/live", "/calls/CA123/view"):
        r = httpx.get(server.base + path)
        assert r.status_code == 400 and "invalid call SID" in r.json()["error"], path
    unknown = new_sid()
    for path in (f"/calls/{unknown}/live", f"/calls/{unknown}/view"):
        r = httpx.get(server.base + path)
        assert r.status_code == 404 and unknown in r.json()["error"], path


def test_the_key_guards_the_stream_and_the_page_which_logs_in_once(keyed_server, browser):
    server = keyed_server
    sid, out, _ = fast_call(server)
    r = httpx.get(f"{server.base}/calls/{sid}/live")
    assert r.status_code == 401 and "API key" in r.json()["error"]
    assert httpx.get(f"{server.base}/calls/{sid}/live", headers={"X-API-Key": "wrong"}).status_code == 401
    for headers in ({"X-API-Key": KEY}, {"Authorization": f"Bearer {KEY}"}):
        with httpx.stream("GET", f"{server.base}/calls/{sid}/live", headers=headers, timeout=10) as r:
            assert r.status_code == 200
            assert [e["event"] for e in sse(r)][-1] == "ended"
    r = httpx.get(f"{server.base}/calls/{sid}/view")
    assert r.status_code == 303 and r.headers["location"] == f"/login?next=%2Fcalls%2F{sid}%2Fview"
    # In the browser: the page sends us to the login form, the key brings us back to the call.
    page = Page(browser, server.base, f"/calls/{sid}/view", wait=None, expected=("409 (Conflict)",))
    try:
        page.page.wait_for_url(re.compile(r"/login\?next="))
        page.page.fill("#key", KEY)
        page.page.press("#key", "Enter")
        page.page.wait_for_url(f"{server.base}/calls/{sid}/view")
        page.wait_mode("recorded")
        assert page.js("() => document.body.dataset.auth") == "required"
        assert page.page.is_hidden("#open-banner")
        # Masters not kept: another format cannot be made, and the page says why.
        page.page.click('#formats button[data-format="flac"]')
        page.until("() => document.getElementById('export-error').textContent.length > 0")
        error = page.page.inner_text("#export-error")
        assert "masters were not kept" in error, error
        page.clean()
    finally:
        page.close()


# ---------------------------------------------------------------------------------- a recorded call
def test_a_recorded_call_plays_and_its_transcript_and_picture_seek_and_follow(server, browser, tmp_path):
    sid, out, spoke_at = fast_call(server)
    tones = [(a + spoke_at - FIRST_TS_MS * 8, b + spoke_at - FIRST_TS_MS * 8) for a, b in CALLER_TONES]
    page = Page(browser, server.base, f"/calls/{sid}/view")
    try:
        p = page.page
        assert p.title().startswith("Phone call from •••• 0006")
        # The player: the conversation, and each track.
        src = page.js("() => document.getElementById('player').src")
        assert src == f"{server.base}/calls/{sid}/files/{out['files']['conversation']}"
        options = page.js("() => [...document.querySelectorAll('#track option')].map(o => o.value)")
        assert options == [out["files"]["conversation"], *out["files"]["tracks"]]
        # It plays: its time advances.
        page.js("() => document.getElementById('player').play()")
        page.until("() => document.getElementById('player').currentTime > 0.5", 10)
        page.js("() => document.getElementById('player').pause()")

        # The highlighted line follows the playback position.
        greeting = next(t for t in out["turns"] if t["role"] == "assistant")
        inside = (greeting["start_ms"] + greeting["end_ms"]) / 2000
        page.js(f"() => {{ document.getElementById('player').currentTime = {inside}; }}")
        page.until("() => document.querySelector('#transcript li.current') !== null", 5)
        assert p.get_attribute("#transcript li.current", "data-role") == "assistant"
        assert p.get_attribute("#transcript li.current button", "aria-current") == "true"
        page.js("() => { document.getElementById('player').currentTime = 3.0; }")
        page.until("() => document.querySelector('#transcript li.current') === null", 5)

        # A click on a line seeks to its start (and plays).
        p.click("#transcript li button")
        assert page.seek_events()[-1] == pytest.approx(greeting["start_ms"] / 1000)
        assert abs(page.current_time() - greeting["start_ms"] / 1000) < 0.4
        page.js("() => document.getElementById('player').pause()")
        # Enter on a focused line does too.
        page.js("() => { document.getElementById('player').currentTime = 4.0; }")
        p.focus("#transcript li button")
        p.keyboard.press("Enter")
        assert page.seek_events()[-1] == pytest.approx(greeting["start_ms"] / 1000)
        page.js("() => document.getElementById('player').pause()")

        # The picture: inlined, its geometry where the call's turns and sounds are.
        root = page.js("""() => { const s = document.querySelector('#timeline svg');
            return {rate: +s.dataset.rate, samples: +s.dataset.durationSamples, width: +s.dataset.width,
                    live: s.dataset.live || null, box: s.getBoundingClientRect().toJSON(),
                    rects: [...s.querySelectorAll('rect[data-lane]')].map(r => ({lane: r.dataset.lane,
                        a: +r.dataset.startSample, b: +r.dataset.endSample, x: +r.getAttribute('x'),
                        w: +r.getAttribute('width'), box: r.getBoundingClientRect().toJSON()})),
                    markers: [...s.querySelectorAll('g[data-kind]')].map(g => ({kind: g.dataset.kind,
                        at: +g.dataset.atSample}))}; }""")
        assert root["live"] is None and root["rate"] == RATE and root["samples"] == round(out["duration_s"] * RATE)
        W, D = root["width"], root["samples"]
        for r in root["rects"]:  # x = sample × W / D, and drawn there on the screen
            assert r["x"] == pytest.approx(r["a"] * W / D, abs=0.01)
            frac = (r["box"]["x"] - root["box"]["x"]) / root["box"]["width"]
            assert frac == pytest.approx(r["a"] / D, abs=2 / root["box"]["width"])
        by_lane = {lane: [(r["a"], r["b"]) for r in root["rects"] if r["lane"] == lane] for lane in ("caller", "assistant")}
        for t in out["turns"]:
            lane = {"caller": "caller", "assistant": "assistant"}[t["role"]]
            assert any(overlaps((t["start_sample"], t["end_sample"]), s) for s in by_lane[lane]), (t, by_lane)
        for a, b in tones:
            assert any(overlaps((a, b), s) for s in by_lane["caller"]), by_lane
        assert not any(overlaps(tones[0], s) for s in by_lane["assistant"])
        assert [m for m in root["markers"] if m["kind"] == "dtmf"] == [
            {"kind": "dtmf", "at": round(out["dtmf"][0]["at_ms"] * RATE / 1000)}]

        # A click on the picture seeks proportionally (and the playhead goes there).
        box = root["box"]
        p.mouse.click(box["x"] + 0.75 * box["width"], box["y"] + box["height"] / 2)
        want = 0.75 * D / RATE
        assert page.seek_events()[-1] == pytest.approx(want, abs=2 * D / RATE / box["width"])
        assert abs(page.current_time() - want) < 0.4
        page.js("() => document.getElementById('player').pause()")
        head = page.js("() => +document.querySelector('#timeline .playhead').getAttribute('x1')")
        assert head == pytest.approx(page.current_time() * RATE * W / D, abs=15)
        # And from the keyboard: the picture is a slider.
        page.js("() => { document.getElementById('player').currentTime = 1.0; }")
        p.focus("#timeline")
        p.keyboard.press("ArrowRight")
        assert page.seek_events()[-1] == pytest.approx(6.0 if D / RATE > 6 else D / RATE)

        # The figures.
        figures = page.js("() => Object.fromEntries([...document.querySelectorAll('#figures [data-figure]')]"
                          ".map(f => [f.dataset.figure, f.querySelector('dd').textContent]))")
        assert figures["duration"] == f"{out['duration_s']:.1f} s"
        assert figures["turns"].startswith("1") and figures["barge-ins"] == "0"
        assert figures["end-reason"] == out["end_reason"] and figures["dtmf"] == "4"
        assert figures["talk"].startswith(f"caller {out['stats']['talk_seconds']['inbound']:.1f} s")
        screenshot(page, "call-page", tmp_path)

        # Downloads: every file the call has; another format made on demand, then offered.
        links = page.js("() => [...document.querySelectorAll('#files a')].map(a => [a.dataset.file, a.href])")
        assert {name for name, _ in links} == set(out["files"]["tracks"]) | {
            v for k, v in out["files"].items() if isinstance(v, str)}
        for name, href in links:
            assert httpx.head(href).status_code == 200, name
        p.click('#formats button[data-format="flac"]')
        p.wait_for_selector("#export-status a[data-new-file]", timeout=15000)
        new = p.get_attribute("#export-status a[data-new-file]", "href")
        assert new.endswith(f"call_{sid}_conversation.flac")
        assert httpx.get(server.base + new).content[:4] == b"fLaC"
        assert httpx.get(f"{server.base}/calls/{sid}").json()["format"] == "flac"
        assert page.js("() => document.getElementById('player').src").endswith(".flac")
        assert set(page.js("() => [...document.querySelectorAll('#formats button')].map(b => b.dataset.format)")) == {
            "mp3", "ogg", "wav"}
        page.clean()
    finally:
        page.close()


def test_at_phone_width_a_call_is_deleted_after_confirming_and_the_page_returns_to_the_list(server, browser):
    sid, _, _ = fast_call(server)
    page = Page(browser, server.base, f"/calls/{sid}/view", width=390)  # a phone's width
    try:
        p = page.page
        assert page.js("() => document.documentElement.scrollWidth - window.innerWidth") <= 0
        p.click("#delete")
        p.wait_for_selector("#delete-dialog[open]")
        p.click("#delete-cancel")
        p.wait_for_selector("#delete-dialog:not([open])", state="attached")
        assert httpx.get(f"{server.base}/calls/{sid}").status_code == 200
        p.click("#delete")
        p.click("#delete-confirm")
        p.wait_for_url(server.base + "/")
        assert httpx.get(f"{server.base}/calls/{sid}").status_code == 404
        assert not list(server.responses.glob(f"call_{sid}*"))
        page.clean()
    finally:
        page.close()


# ---------------------------------------------------------------------------------- a live call
def test_a_live_call_grows_on_the_page_and_turns_into_its_recording(server, browser, tmp_path):
    sid = new_sid()
    caller = np.concatenate([CALLER, quiet(0.5), tone(4.0)])  # 9 s: live through a slow page load and the waits
    call = Background(SimConfig(server.base, caller, call_sid=sid, speed=1.0, tail_s=0.5, dtmf=[(2.0, "4")]))
    server.wait_live(sid)
    page = Page(browser, server.base, f"/calls/{sid}/view", wait="live")
    try:
        p = page.page
        assert p.inner_text("#badge") == "live" and page.js("() => window.callview.timeline") == "live"
        # A transcript line arrives while the call runs, and the picture grows with the caller's tones.
        page.until("() => document.querySelectorAll('#transcript li').length > 0", 5)
        assert call.running
        page.until("() => document.querySelectorAll('#timeline rect[data-lane=\"caller\"]').length > 0", 6)
        grown = []
        while call.running and len(grown) < 3:
            grown.append(page.js("() => +document.querySelector('#timeline svg').dataset.durationSamples"))
            time.sleep(1.1)
        assert len(grown) >= 2 and grown == sorted(grown) and grown[-1] > grown[0], grown
        assert page.js("() => document.querySelector('#timeline g[data-kind=\"dtmf\"]') !== null")
        screenshot(page, "call-page-live", tmp_path)
        call.join()
        # It ends: the page becomes the recording, no reload.
        page.wait_mode("recorded", 20)
        out = server.result(sid)
        assert page.js("() => window.callview.timeline") == "loaded"
        assert page.js("() => document.querySelector('#timeline svg').dataset.live") is None
        assert page.js("() => document.getElementById('player').src").endswith(out["files"]["conversation"])
        assert page.js("() => performance.getEntriesByType('navigation').length") == 1
        assert p.inner_text("#transcript li .what") == "(greeting chime)"
        page.clean()
    finally:
        page.close()


def test_another_worker_streams_the_call_and_says_when_its_recorder_died(make_server, browser):
    """Two servers on one recordings folder (as `serve --workers 2` shares it): the page is served
    by the one that does not record the call; it follows the call from the call's files, and says
    the call is unfinished when the recording server is killed."""
    recorder = make_server(**FAST)
    viewer = make_server(**FAST)
    sid = new_sid()
    call = Background(SimConfig(recorder.base, np.concatenate([CALLER, tone(3.0)]), call_sid=sid, speed=1.0,
                                tail_s=0.5))
    viewer.wait_live(sid)
    page = Page(browser, viewer.base, f"/calls/{sid}/view", wait="live")
    try:
        page.until("() => window.callview.events.filter(e => e.type === 'sse-progress').length >= 2", 8)
        assert page.js("() => window.callview.events.some(e => e.type === 'sse-turn')")
        recorder.kill9()
        page.until("() => window.callview.events.some(e => e.type === 'sse-unfinished')", 12)
        assert page.page.inner_text("#badge") == "unfinished"
        assert "finalised at its next start" in page.page.inner_text("#status")
        page.clean()
    finally:
        page.close()
    call.thread.join(15)


# ---------------------------------------------------------------------------------- the assistant, with speech
@pytest.fixture(scope="module")
def assistant_server(module_server_factory):
    server = module_server_factory(GREETING="assistant", DEFAULT_AUDIO_FORMAT="wav")
    deadline = time.monotonic() + 120
    while httpx.get(server.base + "/healthz").json().get("assistant") != "ready":
        assert time.monotonic() < deadline, "the assistant did not load"
        time.sleep(0.2)
    return server


def speech_8k(name: str) -> np.ndarray:
    audio, rate = sf.read(TESTDATA / "speech" / name, dtype="float32")
    return (soxr.resample(audio, rate, RATE) * 32767).astype(np.int16)


@pytest.mark.models
def test_a_conversation_shows_its_words_live_then_plays_in_sync_with_them(assistant_server, browser, tmp_path):
    server = assistant_server
    sid = new_sid()
    caller = np.concatenate([speech_8k("librivox-sense-and-sensibility-0880.wav"), quiet(1.0)])
    call = Background(SimConfig(server.base, caller, call_sid=sid, speed=1.0, speak_at_s=None, tail_s=None,
                                max_wait_s=12))
    server.wait_live(sid)
    page = Page(browser, server.base, f"/calls/{sid}/view", wait="live")
    try:
        p = page.page
        # The caller's words appear while the call is still going.
        page.until("() => document.querySelector('#transcript li[data-role=\"caller\"]') !== null", 40)
        live_words = p.inner_text('#transcript li[data-role="caller"] .what').lower()
        assert call.running and ("ill" in live_words or "young" in live_words or "man" in live_words), live_words
        call.join()
        page.wait_mode("recorded", 30)
        page.until("() => !window.callview.call.transcript_pending", 30)
        out = server.result(sid)
        turns = out["turns"]
        assert {t["role"] for t in turns} >= {"caller", "assistant"}, turns
        lines = page.js("() => [...document.querySelectorAll('#transcript li')].map(li => "
                        "[li.dataset.role, +li.querySelector('button').dataset.startMs])")
        assert lines == [[t["role"], t["start_ms"]] for t in sorted(turns, key=lambda t: t["start_ms"])]
        # Each turn sits on a shape of its lane in the picture.
        rects = page.js("() => [...document.querySelectorAll('#timeline rect[data-lane]')].map(r => "
                        "[r.dataset.lane, +r.dataset.startSample, +r.dataset.endSample])")
        for t in turns:
            lane = {"caller": "caller", "assistant": "assistant"}[t["role"]]
            if t["end_sample"] > t["start_sample"]:
                assert any(l == lane and overlaps((t["start_sample"], t["end_sample"]), (a, b))
                           for l, a, b in rects), (t, rects)
        # A click on the caller's line plays from there, and it is the highlighted one.
        said = next(t for t in turns if t["role"] == "caller")
        p.click('#transcript li[data-role="caller"] button')
        assert page.seek_events()[-1] == pytest.approx(said["start_ms"] / 1000)
        page.until("() => document.querySelector('#transcript li.current') !== null", 5)
        assert p.get_attribute("#transcript li.current", "data-role") == "caller"
        page.until(f"() => document.getElementById('player').currentTime > {said['start_ms'] / 1000 + 0.5}", 5)
        screenshot(page, "call-page-conversation", tmp_path)
        page.clean()
    finally:
        page.close()
