"""Shared fixtures for the dashboard's pages in real Chromium (Debian's /usr/bin/chromium, through
tests/browser/conftest.py's `launch`; never a downloaded browser).

- `browser`: one Chromium a module (no microphone needed here).
- `DashboardPage(browser, base, path, width=…, cookies=…)`: a page in a fresh context (locale en-US,
  time zone America/New_York) that records console problems, page errors and every request
  (`problems`, `requests`, `foreign_requests()`); on the list page it waits for the first rows.
- `screenshot(page, name, tmp_path)`: a PNG in tests/dashboard/artifacts/ (git-ignored) and tmp_path.
- `place_call(base, …)`: one simulated Twilio call (app.simulator) with a caller number, to the end.
- `seed_results(responses, n)`: n finished calls' result JSONs (`SEEDED` says what they hold), with
  the catalog built from them, in a recordings folder before its server starts.
- `login_cookie(base, key)`: the session cookie POST /login sets, as a Playwright cookie.
"""

from __future__ import annotations

import asyncio
import json
import random
import shutil
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import numpy as np
import pytest

from app.simulator import SimConfig, run_call
from app.storage.store import CallStore
from tests.browser.conftest import launch
from tests.browser.conftest import playwright  # noqa: F401 (a fixture: Python playwright, module-scoped)
from tests.support.fixtures import _NEUTRAL, _factory

ARTIFACTS = Path(__file__).parent / "artifacts"
LOCALE = "en-US"
TIMEZONE = "America/New_York"  # not UTC: the page shows and filters by the browser's local time
FAST_SERVER = {"GREETING": "tone", "STT_PROVIDER": "none", "TRANSCRIBE": "false"}  # no speech models


def pytest_configure(config):
    config.addinivalue_line("markers", "dashboard: the dashboard's pages in real Chromium (tests/dashboard)")


@pytest.fixture(scope="module")
def browser(playwright):  # noqa: F811 (the imported fixture)
    b = launch(playwright, fake_ui=False)
    yield b
    b.close()


class DashboardPage:
    """A dashboard page in a fresh browser context, watched: console errors and warnings, uncaught
    exceptions, and every request it makes."""

    def __init__(self, browser, base: str, path: str = "/", *, width: int = 1280, height: int = 900,
                 cookies: list[dict] | None = None, wait: bool | None = None) -> None:
        """``wait``: until the list has drawn (default: when `path` is the list page, GET /)."""
        self.context = browser.new_context(viewport={"width": width, "height": height}, locale=LOCALE,
                                           timezone_id=TIMEZONE)
        if cookies:
            self.context.add_cookies(cookies)
        self.page = self.context.new_page()
        self.base = base
        self.problems: list[str] = []
        self.requests: list[str] = []
        self.page.on("console", lambda m: self.problems.append(f"{m.type}: {m.text}")
                     if m.type in ("error", "warning") else None)
        self.page.on("pageerror", lambda e: self.problems.append(f"pageerror: {e}"))
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.goto(base + path)
        if wait or (wait is None and urlsplit(path).path == "/"):
            self.wait_loaded()

    def close(self) -> None:
        self.context.close()

    def js(self, expr: str, arg=None):
        return self.page.evaluate(expr, arg)

    # -- the list page
    @property
    def loads(self) -> int:
        return int(self.page.get_attribute("body", "data-loads") or 0)

    def wait_loaded(self, after: int = 0, timeout: float = 15) -> None:
        """Until the list has drawn more than `after` times and is not loading."""
        self.page.wait_for_function(
            "([n]) => Number(document.body.dataset.loads || 0) > n && document.body.dataset.list !== 'loading'",
            arg=[after], timeout=timeout * 1000)

    def act(self, action, timeout: float = 15) -> None:
        """Do something that reloads the list, and wait for the new list."""
        before = self.loads
        action()
        self.wait_loaded(before, timeout)

    def rows(self) -> list[dict]:
        """The table's rows as shown: sid, status and each cell's text by its column label."""
        return self.js("""() => [...document.querySelectorAll('#rows tr')].map(tr => {
            const out = {sid: tr.dataset.sid, status: tr.dataset.status,
                         href: tr.querySelector('td.when a')?.getAttribute('href')};
            for (const td of tr.cells) if (td.dataset.label) out[td.dataset.label] = td.innerText.trim();
            return out;
        })""")

    def text(self, selector: str) -> str:
        return self.page.inner_text(selector).strip()

    def overflow_px(self) -> int:
        """How far the page is wider than the window (0: no horizontal scrolling)."""
        return self.js("document.documentElement.scrollWidth - window.innerWidth")

    def foreign_requests(self) -> list[str]:
        return [u for u in self.requests if not u.startswith(self.base + "/") and not u.startswith("data:")]


def screenshot(page: DashboardPage, name: str, tmp_path: Path, full_page: bool = True) -> Path:
    """The page as a PNG, kept in tests/dashboard/artifacts/ (git-ignored) and in the test's tmp_path."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = tmp_path / f"{name}.png"
    page.page.screenshot(path=str(path), full_page=full_page)
    shutil.copyfile(path, ARTIFACTS / path.name)
    return path


# ---------------------------------------------------------------------------------- real calls
def place_call(base: str, *, seconds: float = 2.0, from_number: str = "+15005550006", speed: float = 0,
               sid: str | None = None, dtmf=()) -> str:
    """One simulated Twilio call of `seconds` (a quiet caller) from `from_number`, to the end; its sid."""
    audio = np.zeros(int(8000 * seconds), np.int16)
    res = asyncio.run(run_call(SimConfig(base, audio, speed=speed, tail_s=0, from_number=from_number,
                                         call_sid=sid, dtmf=list(dtmf))))
    return res.call_sid


def wait_until(condition, timeout: float = 15, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met in {timeout} s")
        time.sleep(0.05)


def login_cookie(base: str, key: str) -> dict:
    """The dashboard's session cookie from a real POST /login, as a Playwright cookie."""
    r = httpx.post(base + "/login", data={"key": key, "next": "/"}, follow_redirects=False, trust_env=False)
    assert r.status_code == 303, r.text
    value = r.cookies["callscribe_session"]
    return {"name": "callscribe_session", "value": value, "url": base + "/", "httpOnly": True, "sameSite": "Strict"}


# ---------------------------------------------------------------------------------- many recorded calls
@dataclass(frozen=True)
class Seeded:
    """What `seed_results` writes: call i starts at T0 + i × STEP_S; the rules below say the rest."""

    n: int
    T0 = datetime(2025, 1, 6, tzinfo=timezone.utc).timestamp()
    STEP_S = 600
    RARE = "zeppelin"  # said in calls with i % 500 == 7

    @staticmethod
    def sid(i: int) -> str:
        return ("WB" if i % 10 == 0 else "CA") + f"{i:032x}"

    @staticmethod
    def browser(i: int) -> bool:
        return i % 10 == 0

    @staticmethod
    def listen(i: int) -> bool:
        return i % 7 == 0 and i % 10 != 0

    @staticmethod
    def status(i: int) -> str:
        return "failed" if i % 97 == 3 else "recovered" if i % 50 == 1 else "finalized"

    @staticmethod
    def duration(i: int) -> float:
        return 5.0 + (i * 37) % 900

    @staticmethod
    def rare(i: int) -> bool:
        return i % 500 == 7


_WORDS = "order refund parcel delivery invoice account address payment balance change hours thanks help".split()


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def _seed_result(i: int, rng: random.Random) -> dict:
    sid, browser = Seeded.sid(i), Seeded.browser(i)
    said = [" ".join(rng.choices(_WORDS, k=8)) for _ in range(2 + i % 5)]
    if Seeded.rare(i):
        said.append(f"my {Seeded.RARE} arrived broken")
    roles = ("caller", "other") if Seeded.listen(i) else ("caller", "assistant")
    turns = [{"role": roles[k % 2], "text": t} for k, t in enumerate(said)]
    start = Seeded.T0 + i * Seeded.STEP_S
    status = Seeded.status(i)
    audio = {"format": "mp3", "bytes": 4000 * int(Seeded.duration(i))}
    if status == "failed":
        audio = {"format": "mp3", "bytes": None, "error": "the MP3 encoder failed (disk full)"}
    return {"call_sid": sid, "mode": "listen" if Seeded.listen(i) else "assistant",
            "source": "browser" if browser else "phone", "started_at": _iso(start),
            "completed_at": _iso(start + Seeded.duration(i)), "duration_s": Seeded.duration(i),
            "end_reason": "caller hung up (stop)", "recovered": status == "recovered", "audio": audio,
            "turns": turns, "stats": {"turns": len(turns), "barge_ins": i % 4,
                                      "response_latency": {"median_ms": 300 + (i * 13) % 1500}},
            "warnings": [], "files": {"json": f"call_{sid}.json"},
            "from_last4": None if browser else f"{(i * 7919) % 10000:04d}"}


@pytest.fixture(scope="module")
def seeded_server_factory(tmp_path_factory):
    """`make(n, **env)` → (server, Seeded): a real server whose recordings folder held n finished
    calls (and their catalog) before it started. Stopped at the end of the module."""
    where: dict[str, Path] = {}
    servers = _factory(lambda: where["workdir"], _NEUTRAL)
    make = next(servers)

    def make_seeded(n: int, **env):
        where["workdir"] = tmp_path_factory.mktemp("seeded")
        seeded = seed_results(where["workdir"] / "responses", n)
        return make(**(FAST_SERVER | env)), seeded

    yield make_seeded
    next(servers, None)  # the factory's clean-up: every server it made is stopped


def seed_results(responses: Path, n: int) -> Seeded:
    """n finished calls as result JSONs in `responses` (each with its call folder's `finalized`
    marker), and the catalog built from them, as a server that recorded them would leave it."""
    responses.mkdir(parents=True, exist_ok=True)
    store = CallStore(responses)
    rng = random.Random(7)
    for i in range(n):
        result = _seed_result(i, rng)
        (responses / f"call_{result['call_sid']}.json").write_text(json.dumps(result))
        (store.files(result["call_sid"], create=True).folder / "finalized").touch()
    store.catalog.refresh(store)
    store.catalog.close()
    return Seeded(n)
