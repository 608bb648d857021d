"""Real Chromium (Debian's /usr/bin/chromium, never a downloaded one) on the browser call page,
with a fake microphone that plays real speech.

Run alone with `pytest tests/browser` or `-m browser`. `make test` installs both (Debian's
chromium through scripts/system-deps.sh, playwright from the test extras); without them these
tests fail and say so, rather than pass unseen.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr

from tests.support.paths import TESTDATA

CHROMIUM = Path("/usr/bin/chromium")
SPEECH = TESTDATA / "speech" / "librivox-sense-and-sensibility-0880.wav"  # "he was not an ill disposed young man"
LEAD_SILENCE_S = 1.5  # the mic is silent while the socket opens (micdrop-protocol.md §1, the edge case)
TAIL_SILENCE_S = 8.0

BASE_ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--autoplay-policy=no-user-gesture-required"]

# Every change of #state[data-state], with its time, from the first one: a poll could miss the
# short ones (`processing` lasts a few ms when the answer is a SkipAnswer). Init scripts and
# page.evaluate run outside the page's Content-Security-Policy.
_STATE_LOG = """
window.__states = [];
document.addEventListener('DOMContentLoaded', () => {
  const el = document.getElementById('state');
  const note = () => {
    const s = el.dataset.state, last = window.__states[window.__states.length - 1];
    if (!last || last.state !== s) window.__states.push({t: performance.now(), state: s});
  };
  note();
  new MutationObserver(note).observe(el, {attributes: true, attributeFilter: ['data-state']});
});
"""


def pytest_configure(config):
    config.addinivalue_line("markers", "browser: real Chromium on the browser call page (tests/browser)")


@pytest.fixture(scope="module")
def playwright():
    try:
        from playwright import sync_api
    except ImportError:
        pytest.fail("Python playwright is missing: `make test` installs it (pip install -e '.[test]')")
    if not CHROMIUM.exists():
        pytest.fail(f"no Chromium at {CHROMIUM}: `make test` installs it (scripts/system-deps.sh, Debian chromium)")
    with sync_api.sync_playwright() as p:
        yield p


@pytest.fixture(scope="module")
def mic_wav(tmp_path_factory) -> Path:
    """48 kHz mono 16-bit: 1.5 s of silence, 2.99 s of real speech, then silence."""
    speech, rate = sf.read(SPEECH, dtype="float32")
    speech = soxr.resample(speech, rate, 48_000)
    audio = np.concatenate([np.zeros(int(48_000 * LEAD_SILENCE_S), "float32"), speech,
                            np.zeros(int(48_000 * TAIL_SILENCE_S), "float32")])
    path = tmp_path_factory.mktemp("mic") / "speech-48k.wav"
    sf.write(path, audio, 48_000, subtype="PCM_16")
    return path


def launch(playwright, *, mic: Path | None = None, fake_ui: bool = True, extra: list[str] = ()):
    """Chromium with a fake microphone (`mic` plays once; None: the built-in beep) and, with
    `fake_ui`, the permission prompt answered yes."""
    args = BASE_ARGS + ["--use-fake-device-for-media-stream"] + list(extra)
    if fake_ui:
        args.append("--use-fake-ui-for-media-stream")
    if mic is not None:
        args.append(f"--use-file-for-fake-audio-capture={mic}%noloop")
    return playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=args)


@pytest.fixture(scope="module")
def browser(playwright, mic_wav):
    """One Chromium for the module whose microphone says the speech; each test opens its own
    context, and each call's getUserMedia plays the file from its start."""
    b = launch(playwright, mic=mic_wav)
    yield b
    b.close()


class CallPage:
    """The page in a fresh context, watched: console problems, requests, states, the event log."""

    def __init__(self, browser, base: str, *, path: str = "/call", width: int = 1000, permissions=None) -> None:
        kwargs = {"viewport": {"width": width, "height": 900}}
        if permissions is not None:
            kwargs["permissions"] = permissions
        self.context = browser.new_context(**kwargs)
        self.page = self.context.new_page()
        self.base = base
        self.problems: list[str] = []  # console errors and warnings, uncaught exceptions
        self.requests: list[str] = []
        self.page.on("console", lambda m: self.problems.append(f"{m.type}: {m.text}")
                     if m.type in ("error", "warning") else None)
        self.page.on("pageerror", lambda e: self.problems.append(f"pageerror: {e}"))
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.add_init_script(_STATE_LOG)
        self.page.goto(base + path)
        self.page.wait_for_function("window.callscribe !== undefined")

    def close(self) -> None:
        self.context.close()

    def js(self, expr: str):
        return self.page.evaluate(expr)

    @property
    def state(self) -> str:
        return self.page.get_attribute("#state", "data-state")

    def states(self) -> list[str]:
        return [s["state"] for s in self.js("window.__states")]

    def wait_state(self, state: str, timeout: float = 15) -> None:
        try:
            self.page.wait_for_selector(f'#state[data-state="{state}"]', state="attached", timeout=timeout * 1000)
        except Exception as e:  # say where it got to instead
            raise AssertionError(f"state never became {state!r}; states: {self.states()}; "
                                 f"events: {self.events_summary()}") from e

    def events(self, kind: str | None = None) -> list[dict]:
        return [e for e in self.js("window.callscribe.events") if kind is None or e["type"] == kind]

    def sent(self) -> list[str]:
        return [e["detail"] for e in self.events("sent-command")]

    def events_summary(self) -> str:
        return json.dumps([(round(e["t"]), e["type"], e["detail"]) for e in self.events()
                           if e["type"] != "audio-in-bytes"])

    def wait_for(self, condition, timeout: float = 15, what: str = "condition") -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(f"{what} not met in {timeout} s; states {self.states()}; "
                                     f"events {self.events_summary()}")
            time.sleep(0.05)

    def error(self) -> tuple[str | None, str]:
        return self.page.get_attribute("#error", "data-code"), self.page.inner_text("#error")

    def overflow_px(self) -> int:
        """How far the page is wider than the window (0: no horizontal scrolling)."""
        return self.js("document.documentElement.scrollWidth - window.innerWidth")
