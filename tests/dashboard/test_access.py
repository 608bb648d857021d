"""Dashboard access with API_KEY set, against a real `callscribe serve`: pages send you to the login
form, the form takes the key once and sets a session cookie (not the key) that the API accepts,
cross-site posts are refused, a new key ends every session; and DELETE /calls/{sid} (refusing live
and unknown calls) — in real Chromium where a browser is what matters, with httpx elsewhere."""

from __future__ import annotations

import threading
import time
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from app.config import Settings
from app.storage.paths import StoreLayout
from app.storage.store import CallStore
from app.web.deps import DASHBOARD_COOKIE, SESSION_MAX_AGE_S, dashboard_session
from tests.dashboard.conftest import FAST_SERVER, DashboardPage, login_cookie, place_call, screenshot, wait_until
from tests.storage.calls import record

pytestmark = [pytest.mark.dashboard, pytest.mark.timeout(120)]

KEY = "dash-k3y-" + "q9" * 12
OTHER_KEY = "dash-n3w-" + "w4" * 12


@pytest.fixture(scope="module")
def keyed(module_server_factory):
    """A server with API_KEY and one recorded call (from +1 555 246 1357)."""
    server = module_server_factory(API_KEY=KEY, DEFAULT_AUDIO_FORMAT="wav", **FAST_SERVER)
    sid = place_call(server.base, seconds=2, from_number="+15552461357")
    server.result(sid)
    return server, sid


def client(server, **kw) -> httpx.Client:
    return httpx.Client(base_url=server.base, trust_env=False, follow_redirects=False, timeout=30, **kw)


def test_without_a_session_pages_redirect_to_login_and_the_api_answers_401(keyed):
    server, sid = keyed
    with client(server) as c:
        r = c.get("/")
        assert r.status_code == 303 and r.headers["location"] == "/login?next=%2F"
        r = c.get("/?status=failed&q=refund")
        assert parse_qs(urlsplit(r.headers["location"]).query) == {"next": ["/?status=failed&q=refund"]}
        for method, path in (("GET", "/calls"), ("GET", f"/calls/{sid}"), ("DELETE", f"/calls/{sid}"),
                             ("GET", f"/calls/{sid}/files/call_{sid}.json")):
            r = c.request(method, path)
            assert r.status_code == 401 and "log in to the dashboard at /login" in r.json()["error"], path
        form = c.get("/login?next=/calls")
        assert form.status_code == 200 and '<body data-auth="required">' in form.text
        assert 'name="next" value="/calls"' in form.text and 'name="key"' in form.text
        assert "form-action 'self'" in form.headers["content-security-policy"]
        assert c.get("/dashboard/assets/dashboard.css").status_code == 200  # assets hold no data
        # The key itself still opens pages and the API, as it always did.
        assert c.get("/", headers={"X-API-Key": KEY}).status_code == 200
        assert c.get("/calls", headers={"Authorization": f"Bearer {KEY}"}).status_code == 200


def test_the_key_once_in_the_browser_then_a_cookie_and_log_out(keyed, browser, tmp_path):
    server, sid = keyed
    page = DashboardPage(browser, server.base, "/?status=finalized", wait=False)
    try:
        p = page.page
        assert urlsplit(p.url).path == "/login"
        assert parse_qs(urlsplit(p.url).query) == {"next": ["/?status=finalized"]}
        assert p.is_hidden("#open-banner") if p.query_selector("#open-banner") else True
        assert p.evaluate("document.activeElement.id") == "key"  # ready to type
        p.fill("#key", "not-the-key")
        with p.expect_response(lambda r: r.url.endswith("/login") and r.request.method == "POST") as answer:
            p.press("#key", "Enter")
        assert answer.value.status == 401
        p.wait_for_load_state()
        assert p.inner_text("#login-error").strip() == "That is not this server's API key. Try again."
        assert p.input_value('input[name="next"]') == "/?status=finalized"
        screenshot(page, "login-wrong-key", tmp_path)
        assert page.context.cookies() == []

        p.fill("#key", KEY)
        p.click("button[type=submit]")
        p.wait_for_url(f"{server.base}/?status=finalized")
        page.wait_loaded()
        assert [r["sid"] for r in page.rows()] == [sid]
        assert page.rows()[0]["Caller"] == "•••• 1357"
        assert p.is_hidden("#open-banner") and p.is_visible(".logout button")
        (cookie,) = page.context.cookies()
        assert (cookie["name"], cookie["httpOnly"], cookie["sameSite"], cookie["path"]) == \
            (DASHBOARD_COOKIE, True, "Strict", "/")
        assert cookie["secure"] is False  # plain http here; https requests get Secure
        assert KEY not in cookie["value"] and cookie["expires"] > time.time() + SESSION_MAX_AGE_S - 60
        assert p.evaluate("document.cookie") == ""  # HttpOnly: no script reads it
        # Chromium logs the wrong key's 401 answer (as the brief asks for) as a failed resource: nothing else.
        assert [x for x in page.problems if "status of 401" not in x] == [] and len(page.problems) == 1
        assert page.foreign_requests() == []

        # The same cookie opens the API to anything else (as the other dashboard pages use it).
        with client(server, cookies={DASHBOARD_COOKIE: cookie["value"]}) as c:
            assert c.get("/calls").json()["total"] == 1
            assert c.get(f"/calls/{sid}/files/call_{sid}.json").status_code == 200

        # Log out: the cookie goes, and so does access.
        p.click(".logout button")
        p.wait_for_url(f"{server.base}/login")
        assert page.context.cookies() == []
        p.goto(server.base + "/")
        assert urlsplit(p.url).path == "/login"
    finally:
        page.close()


def test_when_the_session_ends_the_open_page_goes_to_the_login_form(keyed, browser):
    server, _ = keyed
    page = DashboardPage(browser, server.base, cookies=[login_cookie(server.base, KEY)])
    try:
        assert urlsplit(page.page.url).path == "/"
        page.context.clear_cookies()
        page.page.select_option("#f-status", "failed")  # the next request gets a 401
        page.page.wait_for_url("**/login?next=*")
        assert parse_qs(urlsplit(page.page.url).query) == {"next": ["/?status=failed"]}
        assert all("401" in problem for problem in page.problems)  # only the refused request, logged by Chromium
    finally:
        page.close()


def test_a_link_from_another_site_opens_the_page_for_a_logged_in_browser(keyed, browser):
    """The SameSite=Strict cookie is left out of a navigation that another site starts: the login
    page asks once more from this site, which sends it (and shows the form to a browser without one)."""
    server, _ = keyed
    for cookies, lands in (([login_cookie(server.base, KEY)], "/"), (None, "/login")):
        page = DashboardPage(browser, server.base, "/dashboard/assets/dashboard.css", cookies=cookies, wait=False)
        try:
            page.page.goto("about:blank")  # a page of no site of ours
            page.page.set_content(f'<a id="link" href="{server.base}/?status=finalized">a call list</a>')
            page.page.click("#link")
            page.page.wait_for_load_state()
            wait_until(lambda: urlsplit(page.page.url).path == lands, 5, f"landed on {lands}")
            if lands == "/":
                page.wait_loaded()
                assert page.page.url == f"{server.base}/?status=finalized" and len(page.rows()) == 1
                assert any("again=1" in u for u in page.requests)  # by way of the second ask
            else:
                assert parse_qs(urlsplit(page.page.url).query)["next"] == ["/?status=finalized"]
                assert page.page.is_visible("#key")
        finally:
            page.close()


def test_the_cookie_is_checked_and_cross_site_writes_are_refused(keyed):
    server, sid = keyed
    cookie = login_cookie(server.base, KEY)["value"]
    own, evil = {"Origin": server.base}, {"Origin": "http://evil.example"}
    with client(server, cookies={DASHBOARD_COOKIE: cookie}) as c:
        assert c.get("/").status_code == 200
        assert c.post(f"/audio/set-format/{sid}", json={"format": "wav"}, headers=own).status_code == 200
        r = c.post(f"/audio/set-format/{sid}", json={"format": "wav"}, headers=evil)
        assert r.status_code == 403 and "cross-site" in r.json()["error"]
        unknown = "CA" + "0" * 31 + "9"
        assert c.delete(f"/calls/{unknown}", headers=evil).status_code == 403
        assert c.delete(f"/calls/{unknown}", headers={"Sec-Fetch-Site": "cross-site"}).status_code == 403
        assert c.delete(f"/calls/{unknown}", headers=own).status_code == 404  # past the guard
        assert c.post("/logout", headers=evil).status_code == 403
    # The key in a header needs no Origin check: a browser never adds it by itself.
    with client(server) as c:
        assert c.delete(f"/calls/{unknown}", headers={"X-API-Key": KEY, **evil}).status_code == 404
        assert c.post("/login", data={"key": KEY}, headers=evil).status_code == 403
    # Forged, altered, expired or foreign cookies open nothing.
    secret = bytes.fromhex((StoreLayout(server.responses).stream_secret).read_text().strip())
    settings = Settings(api_key=KEY)
    old = dashboard_session(settings, secret, issued=int(time.time()) - SESSION_MAX_AGE_S - 10)
    other = dashboard_session(Settings(api_key=OTHER_KEY), secret)
    unsigned = dashboard_session(settings, b"x" * 32)
    for value in (cookie[:-1] + ("0" if cookie[-1] != "0" else "1"), KEY, old, other, unsigned, "v1.1.zz", ""):
        with client(server, cookies={DASHBOARD_COOKIE: value}) as c:
            assert c.get("/calls").status_code == 401, value
            assert c.get("/").status_code == 303, value


@pytest.mark.parametrize("target, lands", [
    ("/?status=failed", "/?status=failed"), ("/calls/CA0/view", "/calls/CA0/view"), ("//evil.example/x", "/"),
    ("https://evil.example/", "/"), ("/\\evil.example", "/"), ("javascript:alert(1)", "/"), ("", "/"),
    ("/login", "/"),
])
def test_after_login_only_paths_of_this_site(keyed, target, lands):
    server, _ = keyed
    with client(server) as c:
        r = c.post("/login", data={"key": KEY, "next": target})
        assert r.status_code == 303 and r.headers["location"] == lands


def test_a_new_key_ends_every_session(make_server):
    first = make_server(API_KEY=KEY, **FAST_SERVER)
    cookie = login_cookie(first.base, KEY)["value"]
    with client(first, cookies={DASHBOARD_COOKIE: cookie}) as c:
        assert c.get("/calls").status_code == 200
    first.stop()
    again = make_server(API_KEY=OTHER_KEY, **FAST_SERVER)  # the same folder (and secret), another key
    with client(again, cookies={DASHBOARD_COOKIE: cookie}) as c:
        assert c.get("/calls").status_code == 401 and c.get("/").status_code == 303
    with client(again) as c:
        assert c.post("/login", data={"key": KEY}).status_code == 401
    with client(again, cookies={DASHBOARD_COOKIE: login_cookie(again.base, OTHER_KEY)["value"]}) as c:
        assert c.get("/calls").status_code == 200


def test_delete_refuses_live_and_unknown_calls_and_removes_everything_else(keyed):
    server, _ = keyed
    auth = {"X-API-Key": KEY}
    layout = StoreLayout(server.responses)
    with client(server, headers=auth) as c:
        r = c.delete("/calls/CA123")
        assert r.status_code == 400 and "invalid call SID" in r.json()["error"]
        r = c.delete("/calls/CA" + "ab" * 16)
        assert r.status_code == 404 and "no call" in r.json()["error"]
        assert not layout.call("CA" + "ab" * 16).folder.exists()  # a 404 leaves nothing behind

        # A live call: refused while it is recorded, deleted once it is over.
        sid = "CA" + "de1e7e" * 5 + "00"
        call = threading.Thread(target=place_call, kwargs={"base": server.base, "seconds": 4, "speed": 1,
                                                          "sid": sid, "from_number": "+15557654321"})
        call.start()
        wait_until(lambda: any(x["call_sid"] == sid for x in c.get("/calls?status=live").json()["data"]), 10,
                   "the call listed live")
        r = c.delete(f"/calls/{sid}")
        assert r.status_code == 409 and f"call {sid} is live" in r.json()["error"]
        assert layout.call(sid).journal.exists()
        call.join(20)
        server.result(sid)
        # Its files are written; the registry lets go a moment later (its last steps, a few seconds on a busy
        # machine, still answer 409 with the same message), as a user who tries again sees it.
        deadline = time.monotonic() + 15
        while (r := c.delete(f"/calls/{sid}")).status_code == 409 and time.monotonic() < deadline:
            assert f"call {sid} is live" in r.json()["error"]
            time.sleep(0.2)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["call_sid"] == sid and body["message"].startswith(f"call {sid} deleted: ")
        for name in (f".calls/{sid}/inbound.wav", f".calls/{sid}/outbound.wav", f".calls/{sid}/journal.jsonl",
                     f".calls/{sid}/finalized", f"call_{sid}.json", f"call_{sid}.txt", f"call_{sid}_summary.txt",
                     f"call_{sid}_conversation.wav"):
            assert name in body["deleted"], name
        assert list(server.responses.glob(f"call_{sid}*")) == [] and not layout.call(sid).folder.exists()
        assert all(x["call_sid"] != sid for x in c.get("/calls").json()["data"])
        assert c.get(f"/calls/{sid}").status_code == 404
        assert c.delete(f"/calls/{sid}").status_code == 404  # once

        # A call the server stopped in the middle of (not yet recovered): its masters and journal go.
        crashed = "CA" + "c4a5" * 8
        record(CallStore(server.responses, create=False), crashed, stopped=False, from_last4="1111")
        assert c.get(f"/calls/{crashed}").json()["state"] == "unfinished"
        r = c.delete(f"/calls/{crashed}")
        assert r.status_code == 200 and f".calls/{crashed}/journal.jsonl" in r.json()["deleted"]
        assert not layout.call(crashed).folder.exists()

    lines = [x for x in server.log.read_text().splitlines() if " deleted: " in x]
    assert any(sid in x for x in lines) and any(crashed in x for x in lines)
    for line in lines:
        assert "4321" not in line and "1111" not in line and "555" not in line


def test_neither_the_key_nor_a_session_reaches_the_log(keyed):
    server, _ = keyed
    cookie = login_cookie(server.base, KEY)["value"]
    with client(server, cookies={DASHBOARD_COOKIE: cookie}) as c:
        c.get("/calls")
    log = server.log.read_text()
    assert KEY not in log and cookie not in log and cookie.split(".")[-1] not in log
