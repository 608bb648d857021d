"""The dashboard's login pieces (app.web.deps) as plain functions, and the cookie's flags over https
through the app in-process (no server, no browser)."""

from __future__ import annotations

import time
from types import SimpleNamespace

import httpx
import pytest
from starlette.requests import Request

from app.config import Settings
from app.main import create_app
from app.web.deps import (DASHBOARD_COOKIE, SESSION_MAX_AGE_S, dashboard_session, safe_next, same_origin,
                          session_ok)
from tests.web.inprocess import settings_for

KEY = "unit-k3y-" + "m5" * 12
SECRET = b"s" * 32


@pytest.mark.parametrize("value, expected", [
    ("/", "/"), ("/?status=failed&q=a", "/?status=failed&q=a"), ("/calls/CA1/view", "/calls/CA1/view"),
    (None, "/"), ("", "/"), ("//evil.example", "/"), ("/\\evil.example", "/"), ("https://evil.example", "/"),
    ("evil.example", "/"), ("/ok\r\nSet-Cookie: x=1", "/"), ("/a\tb", "/"), ("/" + "a" * 2001, "/"),
])
def test_next_is_a_path_of_this_site_or_the_list(value, expected):
    assert safe_next(value) == expected


def test_a_session_is_bound_to_the_key_the_secret_and_its_age():
    settings = Settings(api_key=KEY)
    value = dashboard_session(settings, SECRET)
    assert value.startswith("v1.") and KEY not in value
    assert session_ok(settings, SECRET, value)
    assert not session_ok(Settings(api_key=KEY + "x"), SECRET, value)  # another key
    assert not session_ok(settings, b"t" * 32, value)  # another secret (another cluster)
    assert not session_ok(Settings(), SECRET, value)  # no key: there are no sessions
    issued = int(time.time()) - SESSION_MAX_AGE_S - 1
    assert not session_ok(settings, SECRET, dashboard_session(settings, SECRET, issued=issued))
    assert session_ok(settings, SECRET, dashboard_session(settings, SECRET, issued=issued + 120))
    assert not session_ok(settings, SECRET, dashboard_session(settings, SECRET, issued=int(time.time()) + 3600))
    mac = value.split(".")[2]
    for forged in (f"v1.{int(time.time()) - 5}.{mac}", f"v2.{value[3:]}", value + "0", "v1..", "v1.1e3." + mac,
                   KEY, ""):
        assert not session_ok(settings, SECRET, forged), forged
    assert dashboard_session(Settings(), SECRET) is None


def _request(headers: dict[str, str], *, scheme: str = "http", host: str = "calls.example:8000",
             public: str | None = None) -> Request:
    services = SimpleNamespace(settings=SimpleNamespace(public_base_url=public))
    app = SimpleNamespace(state=SimpleNamespace(services=services))
    raw = [(b"host", host.encode())] + [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    return Request({"type": "http", "method": "POST", "scheme": scheme, "path": "/calls/x", "query_string": b"",
                    "headers": raw, "app": app, "server": ("calls.example", 8000)})


@pytest.mark.parametrize("headers, kw, ok", [
    ({}, {}, True),  # no Origin: not a browser's cross-site request
    ({"Origin": "http://calls.example:8000"}, {}, True),
    ({"Origin": "HTTP://Calls.Example:8000"}, {}, True),
    ({"Origin": "http://calls.example:8001"}, {}, False),
    ({"Origin": "https://calls.example:8000"}, {}, False),  # another scheme is another origin
    ({"Origin": "https://calls.example"}, {"scheme": "https", "host": "calls.example"}, True),
    ({"Origin": "https://public.example"}, {"public": "https://public.example/base"}, True),  # behind a proxy
    ({"Origin": "null"}, {}, False),
    ({"Origin": "http://evil.example"}, {}, False),
    ({"Sec-Fetch-Site": "cross-site"}, {}, False),
    ({"Sec-Fetch-Site": "same-site"}, {}, False),
    ({"Sec-Fetch-Site": "same-origin"}, {}, True),
])
def test_same_origin(headers, kw, ok):
    assert same_origin(_request(headers, **kw)) is ok


async def test_the_cookie_is_secure_over_https_and_logout_clears_it(tmp_path):
    app = create_app(settings_for(tmp_path, api_key=KEY))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="https://dash.example") as c:
            r = await c.post("/login", data={"key": KEY, "next": "/"}, headers={"Origin": "https://dash.example"})
            assert r.status_code == 303
            set_cookie = r.headers["set-cookie"]
            for flag in ("HttpOnly", "SameSite=strict", "Secure", "Path=/", f"Max-Age={SESSION_MAX_AGE_S}"):
                assert flag.lower() in set_cookie.lower(), flag
            assert KEY not in set_cookie
            assert (await c.get("/calls")).status_code == 200  # the client keeps the cookie
            out = await c.post("/logout", headers={"Origin": "https://dash.example"})
            assert out.status_code == 303 and out.headers["location"] == "/login"
            assert f'{DASHBOARD_COOKIE}=""' in out.headers["set-cookie"] and "Max-Age=0" in out.headers["set-cookie"]
            c.cookies.clear()
            assert (await c.get("/calls")).status_code == 401
