"""The calls list (GET /) in real Chromium against a real `callscribe serve`: 10,000 recorded calls
(seeded before the server starts) plus real calls placed with the Twilio simulator and a browser
call. Figures, sorting, filters, search, pages, a live call that turns into its recording, deletion
with a confirmation, keyboard use, phone width; no console errors and nothing from another host."""

from __future__ import annotations

import asyncio
import re
import threading
import time
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import httpx
import pytest

from app.storage.paths import StoreLayout
from tests.dashboard.conftest import FAST_SERVER, TIMEZONE, DashboardPage, Seeded, place_call, screenshot, wait_until
from tests.support.webcall import WebCallClient

pytestmark = [pytest.mark.dashboard, pytest.mark.timeout(120)]

N = 10_000
NUMBERS = {"short": "+15551231234", "long": "+15559876543"}


@pytest.fixture(scope="module")
def site(seeded_server_factory):
    """The server, what was seeded, and the real calls: {"short": sid, "long": sid, "browser": sid}."""
    server, seeded = seeded_server_factory(N)
    calls = {"short": place_call(server.base, seconds=3, from_number=NUMBERS["short"]),
             "long": place_call(server.base, seconds=6, from_number=NUMBERS["long"])}

    async def browser_call() -> str:
        c = await WebCallClient.open(server.port, {})
        await c.wait_for(lambda c: any(t.startswith("Call ") for t in c.texts()))
        await asyncio.sleep(1.0)
        await c.hang_up()
        return c.info()["sid"]

    calls["browser"] = asyncio.run(browser_call())
    for sid in calls.values():
        server.result(sid)
    return server, seeded, calls


def api(server, path: str, **params) -> dict:
    r = httpx.get(server.base + path, params=params, trust_env=False, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


def shown_as(text: str) -> str:
    return re.sub(r"[\u202f\xa0]", " ", text)


def local(iso: str) -> datetime:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).astimezone(ZoneInfo(TIMEZONE))


def seconds_of(duration: str) -> int:
    parts = [int(p) for p in duration.split(":")]
    return sum(p * 60 ** k for k, p in enumerate(reversed(parts)))


def test_the_list_shows_each_call_with_its_figures(site, browser, tmp_path):
    server, seeded, calls = site
    t0 = time.perf_counter()
    page = DashboardPage(browser, server.base)
    loaded = time.perf_counter() - t0
    try:
        total = N + 3
        assert page.text("#range") == f"1–50 of {total:,}"
        assert page.text("#summary") == f"{total:,} calls"
        assert page.page.is_visible("#open-banner")
        assert page.text("#open-banner") == ("API_KEY is not set: anyone who can reach this server can see and "
                                             "delete these calls.")
        assert page.page.is_hidden(".logout")
        rows = page.rows()
        assert len(rows) == 50
        by_sid = {r["sid"]: r for r in rows}
        for name in ("short", "long", "browser"):
            sid = calls[name]
            row, result = by_sid[sid], server.read_result(sid)
            listed = next(c for c in api(server, "/calls", limit=10)["data"] if c["call_sid"] == sid)
            assert row["href"] == f"/calls/{sid}/view"
            assert row["status"] == "finalized" and row["Status"].startswith("finalised")
            assert "caller hung up" in row["Status"] or "hang" in row["Status"] or result["end_reason"] in row["Status"]
            started = local(listed["started_at"])
            assert shown_as(row["Started"]) == started.strftime("%b %-d, %Y, %-I:%M %p")
            assert seconds_of(row["Duration"]) == round(result["duration_s"])
            kb = listed["size_bytes"] / 1024
            assert row["Format · size"] == f"{listed['format'].upper()} · {kb:.1f} KB" if kb < 10 else \
                row["Format · size"] == f"{listed['format'].upper()} · {round(kb)} KB"
            stats = result["stats"]
            assert (row["Turns"], row["Barge-ins"]) == (str(stats["turns"]), str(stats["barge_ins"]))
            assert row["Latency"] == "—"  # the chime greeting: no reply, no response latency
        assert by_sid[calls["short"]]["Caller"] == "•••• 1234" and by_sid[calls["short"]]["Source"] == "Phone"
        assert by_sid[calls["long"]]["Caller"] == "•••• 6543"
        assert seconds_of(by_sid[calls["long"]]["Duration"]) == 6
        assert (by_sid[calls["browser"]]["Caller"], by_sid[calls["browser"]]["Source"]) == ("—", "Browser")
        # The number itself is nowhere on the page, only its last four digits.
        html = page.page.content()
        assert "555123" not in html and "5559876" not in html
        # Newest first: the real calls (placed now) above the seeded ones (2025).
        assert {r["sid"] for r in rows[:3]} == set(calls.values())
        seeded_row = rows[3]
        assert seeded_row["sid"] == Seeded.sid(N - 1) and seeded_row["Format · size"].startswith("MP3 · ")
        assert page.page.get_attribute('th[data-sort="started_at"]', "aria-sort") == "descending"
        box = page.js("(() => { const b = document.querySelector('.table-box'); return b.scrollWidth - b.clientWidth })()")
        assert box == 0 and page.overflow_px() == 0  # at 1280 px the whole table fits
        screenshot(page, "list-desktop", tmp_path, full_page=False)
        assert page.problems == [] and page.foreign_requests() == []
        print(f"\nlist of {total:,} calls drawn in {loaded * 1000:.0f} ms (page load to first rows)")
    finally:
        page.close()


def test_at_phone_width_rows_become_cards_and_nothing_scrolls_sideways(site, browser, tmp_path):
    server, _, calls = site
    page = DashboardPage(browser, server.base, width=375, height=800)
    try:
        assert page.overflow_px() == 0
        assert page.js("getComputedStyle(document.querySelector('#rows tr')).display") == "grid"
        assert page.page.is_visible('th[data-sort="duration_s"] button')  # sorting stays reachable
        row = page.rows()[0]
        assert row["Caller"] or row["Source"]
        screenshot(page, "list-375", tmp_path, full_page=False)
        page.js("document.getElementById('summary').scrollIntoView()")
        screenshot(page, "list-375-cards", tmp_path, full_page=False)
        page.act(lambda: page.page.click("#next"))
        assert page.overflow_px() == 0
        assert page.problems == []
    finally:
        page.close()


def test_column_headers_sort_from_mouse_and_keyboard(site, browser):
    server, _, _ = site
    page = DashboardPage(browser, server.base)
    try:
        page.act(lambda: page.page.click('th[data-sort="duration_s"] button'))
        assert page.page.get_attribute('th[data-sort="duration_s"]', "aria-sort") == "descending"
        assert page.page.get_attribute('th[data-sort="started_at"]', "aria-sort") == "none"
        longest = [seconds_of(r["Duration"]) for r in page.rows()]
        assert longest == sorted(longest, reverse=True) and longest[0] == max(Seeded.duration(i) for i in range(N))
        page.act(lambda: page.page.click('th[data-sort="duration_s"] button'))
        assert page.page.get_attribute('th[data-sort="duration_s"]', "aria-sort") == "ascending"
        shortest = [seconds_of(r["Duration"]) for r in page.rows()]
        assert shortest == sorted(shortest) and shortest[0] <= 3  # the short real calls first
        assert "sort=duration_s" in page.page.url and "order=asc" in page.page.url
        # The keyboard: focus a header's button, Enter sorts by it.
        page.page.focus('th[data-sort="barge_ins"] button')
        page.act(lambda: page.page.keyboard.press("Enter"))
        assert page.page.get_attribute('th[data-sort="barge_ins"]', "aria-sort") == "descending"
        assert page.js("document.activeElement.closest('th').dataset.sort") == "barge_ins"  # focus stays
        assert page.js("getComputedStyle(document.activeElement).outlineStyle") != "none"  # and shows
        assert all(r["Barge-ins"] == "3" for r in page.rows())
        page.act(lambda: page.page.click('th[data-sort="latency"] button'))
        assert [r["Latency"] for r in page.rows()][:1] == ["1.8 s"]  # 300 + (i·13 mod 1500) ms at most
        # Back returns to the previous sort.
        page.act(lambda: page.page.go_back())
        assert page.page.get_attribute('th[data-sort="barge_ins"]', "aria-sort") == "descending"
        assert page.problems == []
    finally:
        page.close()


def test_filters_and_search_narrow_the_list_and_live_in_the_address(site, browser):
    server, _, calls = site
    page = DashboardPage(browser, server.base)
    try:
        failed = sum(1 for i in range(N) if Seeded.status(i) == "failed")
        page.act(lambda: page.page.select_option("#f-status", "failed"))
        assert page.text("#range") == f"1–50 of {failed:,}"
        assert all(r["status"] == "failed" and "disk full" in r["Status"] for r in page.rows())
        assert "status=failed" in page.page.url

        browsers = sum(1 for i in range(N) if Seeded.browser(i) and Seeded.status(i) == "failed")
        page.act(lambda: page.page.select_option("#f-source", "browser"))
        assert page.text("#range") == f"1–{browsers} of {browsers}"
        assert {(r["Source"], r["Caller"]) for r in page.rows()} == {("Browser", "—")}

        page.act(lambda: page.page.select_option("#f-status", ""))
        listen = sum(1 for i in range(N) if Seeded.listen(i))
        page.act(lambda: page.page.select_option("#f-source", "listen"))
        assert page.text("#range") == f"1–50 of {listen:,}"
        assert {r["Source"] for r in page.rows()} == {"Listen-only"}

        page.act(lambda: page.page.select_option("#f-source", "phone"))
        phone = sum(1 for i in range(N) if not Seeded.browser(i) and not Seeded.listen(i)) + 2
        assert page.text("#range") == f"1–50 of {phone:,}"
        assert {r["Source"] for r in page.rows()} == {"Phone"}

        # A day, in the browser's own time zone: the calls that started between its midnights.
        page.act(lambda: page.page.select_option("#f-source", ""))
        zone = ZoneInfo(TIMEZONE)
        day = datetime(2025, 1, 10, tzinfo=zone)
        in_day = [i for i in range(N) if day.timestamp() <= Seeded.T0 + i * Seeded.STEP_S
                  < (day + timedelta(days=1)).timestamp()]
        page.page.fill("#f-since", "2025-01-10")
        page.page.fill("#f-until", "2025-01-10")
        page.act(lambda: page.page.click("#filters button[type=submit]"))
        assert page.text("#range") == f"1–50 of {len(in_day)}"
        times = page.js("[...document.querySelectorAll('#rows time')].map(t => t.getAttribute('datetime'))")
        assert all(local(t).date() == day.date() for t in times)
        assert "since=2025-01-10" in page.page.url and "until=2025-01-10" in page.page.url

        # Search the transcripts: the rare word, in exactly the calls that said it.
        page.page.click("#clear")
        page.wait_loaded()
        rare = sorted(Seeded.sid(i) for i in range(N) if Seeded.rare(i))
        page.page.fill("#f-q", Seeded.RARE)
        page.act(lambda: page.page.press("#f-q", "Enter"))
        assert page.text("#range") == f"1–{len(rare)} of {len(rare)}"
        assert sorted(r["sid"] for r in page.rows()) == rare
        assert page.text("#summary") == f"{len(rare)} calls match these filters"

        # The address holds the view: a reload (or a bookmark) shows the same.
        assert f"q={Seeded.RARE}" in page.page.url
        page.page.reload()
        page.wait_loaded()
        assert page.page.input_value("#f-q") == Seeded.RARE
        assert sorted(r["sid"] for r in page.rows()) == rare

        # Nothing matches: said in words, with a way out.
        page.page.fill("#f-q", "xylophonist")
        page.act(lambda: page.page.press("#f-q", "Enter"))
        assert page.page.get_attribute("body", "data-list") == "empty"
        assert page.page.is_hidden("#calls") and page.page.is_hidden("#pager")
        assert "No calls match these filters." in page.text("#empty")
        page.act(lambda: page.page.click("#empty a"))
        assert page.text("#range") == f"1–50 of {N + 3:,}" and page.page.input_value("#f-q") == ""
        assert page.problems == []
    finally:
        page.close()


def test_a_view_the_api_refuses_says_why(site, browser):
    server, _, _ = site
    page = DashboardPage(browser, server.base, "/?since=2025-02-01&until=2025-01-10")
    try:
        assert page.page.get_attribute("body", "data-list") == "error"
        assert "This view cannot be shown: since" in page.text("#error")
        assert "must be before until" in page.text("#error")
        assert [p for p in page.problems if "422" not in p] == []  # the browser logs the refused request
    finally:
        page.close()


def test_pages_of_fifty(site, browser):
    server, _, _ = site
    page = DashboardPage(browser, server.base)
    total = N + 3
    try:
        assert page.page.is_disabled("#prev") and page.page.is_disabled("#first")
        first = [r["sid"] for r in page.rows()]
        page.act(lambda: page.page.click("#next"))
        assert page.text("#range") == f"51–100 of {total:,}" and "page=2" in page.page.url
        second = [r["sid"] for r in page.rows()]
        assert len(second) == 50 and not set(first) & set(second)
        page.act(lambda: page.page.click("#last"))
        assert page.text("#range") == f"10,001–{total:,} of {total:,}"
        assert [r["sid"] for r in page.rows()] == [Seeded.sid(i) for i in (2, 1, 0)]
        assert page.page.is_disabled("#next") and page.page.is_disabled("#last")
        page.act(lambda: page.page.click("#first"))
        assert [r["sid"] for r in page.rows()] == first
        assert page.problems == []
    finally:
        page.close()


def test_a_live_call_shows_up_at_once_and_turns_into_its_recording_without_a_reload(site, browser):
    server, _, _ = site
    page = DashboardPage(browser, server.base)
    sid = "CA" + "1ea5e" * 6 + "00"
    try:
        page.js("window.__sameDocument = true")
        call = threading.Thread(target=place_call, kwargs={"base": server.base, "seconds": 5, "speed": 1,
                                                          "sid": sid, "from_number": "+15550004321"})
        started = time.monotonic()
        call.start()
        page.page.wait_for_selector(f'#rows tr[data-sid="{sid}"][data-status="live"]', timeout=6000)
        seen_after = time.monotonic() - started
        row = next(r for r in page.rows() if r["sid"] == sid)
        assert row["Status"] == "live" and row["Caller"] == "•••• 4321"
        assert page.page.is_visible(f'#rows tr[data-sid="{sid}"] .badge-live')
        assert page.page.is_hidden(f'#rows tr[data-sid="{sid}"] [data-role="delete"]')  # no deleting a live call
        assert page.text("#live-count") == "1 call" and page.page.is_visible("#live-link")
        running = seconds_of(row["Duration"])
        time.sleep(2.1)
        later = seconds_of(next(r for r in page.rows() if r["sid"] == sid)["Duration"])
        assert later > running  # the running duration ticks
        call.join(15)
        page.page.wait_for_selector(f'#rows tr[data-sid="{sid}"][data-status="finalized"]', timeout=10000)
        ended_after = time.monotonic() - started
        row = next(r for r in page.rows() if r["sid"] == sid)
        assert seconds_of(row["Duration"]) == 5 and row["Status"].startswith("finalised")
        assert row["Format · size"].startswith("MP3 · ")
        assert page.js("window.__sameDocument") is True  # no reload
        wait_until(lambda: page.page.is_hidden("#live-link"), 5, "the live count gone")
        print(f"\nlive row shown {seen_after:.1f} s after the call began; finalised row {ended_after:.1f} s after "
              "(a 5 s call)")
        assert page.problems == []
    finally:
        page.close()


def test_deleting_a_call_asks_first_then_removes_its_row_and_files(site, browser):
    server, _, calls = site
    sid = calls["long"]
    layout = StoreLayout(server.responses)
    assert list(server.responses.glob(f"call_{sid}*")) and layout.call(sid).folder.is_dir()
    before = api(server, "/calls", limit=1)["total"]
    page = DashboardPage(browser, server.base)
    try:
        button = f'#rows tr[data-sid="{sid}"] [data-role="delete"]'
        label = page.page.get_attribute(button, "aria-label")
        assert label.startswith("Delete the call started ") and label.endswith("from •••• 6543")
        page.page.focus(button)
        page.page.keyboard.press("Enter")
        assert page.page.is_visible("#delete-dialog")
        assert page.js("document.getElementById('delete-dialog').open") is True
        assert page.js("document.activeElement.id") == "delete-cancel"
        assert "from •••• 6543" in page.text("#delete-body")
        # Focus stays in the dialog: Tab, Tab comes round again.
        page.page.keyboard.press("Tab")
        assert page.js("document.activeElement.id") == "delete-confirm"
        page.page.keyboard.press("Tab")
        assert page.js("document.activeElement.id") == "delete-cancel"
        page.page.keyboard.press("Shift+Tab")
        assert page.js("document.activeElement.id") == "delete-confirm"
        # Escape cancels: nothing deleted, focus back on the row's button.
        page.page.keyboard.press("Escape")
        wait_until(lambda: not page.js("document.getElementById('delete-dialog').open"), 3, "dialog closed")
        assert page.js("document.activeElement.getAttribute('aria-label')") == label
        assert list(server.responses.glob(f"call_{sid}*")) and layout.call(sid).folder.is_dir()
        assert any(r["sid"] == sid for r in page.rows())
        # Again, and this time delete.
        page.page.click(button)
        page.act(lambda: page.page.click("#delete-confirm"))
        assert not any(r["sid"] == sid for r in page.rows())
        assert page.text("#notice").startswith("Deleted the call started ")
        assert page.text("#range") == f"1–50 of {before - 1:,}"
        assert list(server.responses.glob(f"call_{sid}*")) == [] and not layout.call(sid).folder.exists()
        r = httpx.get(f"{server.base}/calls/{sid}", trust_env=False)
        assert r.status_code == 404
        assert page.js("document.activeElement.dataset.role || document.activeElement.id") in ("delete", "calls-title")
        assert page.problems == [] and page.foreign_requests() == []
        # The log says which call and how many files, nothing about who called.
        line = next(x for x in server.log.read_text().splitlines() if f"call {sid} deleted" in x)
        assert "6543" not in line and "9876543" not in line
    finally:
        page.close()


def test_the_page_and_its_assets_come_from_the_app_under_a_strict_policy(site):
    server, _, _ = site
    r = httpx.get(server.base + "/", trust_env=False)
    csp = r.headers["content-security-policy"]
    assert r.status_code == 200 and "default-src 'none'" in csp and "script-src 'self'" in csp
    assert "unsafe-inline" not in csp and r.headers["x-content-type-options"] == "nosniff"
    assert '<body data-auth="open">' in r.text
    for name, kind in (("list.js", "text/javascript"), ("shared.js", "text/javascript"),
                       ("dashboard.css", "text/css")):
        a = httpx.get(f"{server.base}/dashboard/assets/{name}", trust_env=False)
        assert (a.status_code, a.headers["content-type"].split(";")[0]) == (200, kind)
    for name in ("list.html", "login.html", "nope.js", "..%2Fdashboard.py", "..%2F..%2Fdeps.py", "a/list.js"):
        a = httpx.get(f"{server.base}/dashboard/assets/{name}", trust_env=False)
        assert a.status_code == 404 and a.headers["content-type"] == "application/json", name
    # Open server: /login says no login is needed; a posted form goes on to `next`.
    login = httpx.get(server.base + "/login", trust_env=False)
    assert login.status_code == 200 and "API_KEY is not set on this server" in login.text


def test_no_calls_yet_and_a_server_gone_are_said_in_words(make_server, browser):
    server = make_server(**FAST_SERVER)
    page = DashboardPage(browser, server.base)
    try:
        assert page.page.get_attribute("body", "data-list") == "empty"
        assert page.text("#empty").startswith("No calls have been recorded yet.")
        assert page.page.get_attribute("#empty a", "href") == "/call"
        assert page.page.is_hidden("#calls") and page.page.is_hidden("#pager") and page.problems == []
        server.stop()
        page.page.wait_for_selector("body[data-list=error]", timeout=8000)  # the next live-call poll
        assert "The server cannot be reached" in page.text("#error")
        assert all("ERR_CONNECTION_REFUSED" in p for p in page.problems)  # the failed request, as Chromium logs it
    finally:
        page.close()
