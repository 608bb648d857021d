"""The management API over real sockets: HEAD, set-format's typed errors, the schema, offline /docs,
and what `GET /calls/{sid}` says about a call still in progress."""

from __future__ import annotations

import asyncio
import hashlib
import re
import signal
import time
from datetime import datetime, timezone

import httpx
import pytest

from app.simulator import SimConfig, run_call
from tests.support.server import Server
from tests.support.signals import marker_signal
from tests.support.sockets import raw_http

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

KEY = "head-k3y-" + "q9" * 10
ACCEPTED = "accepted: flac, mp3, ogg, wav"


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """One plain server for the tests that record nothing (each uses its own CallSids)."""
    s = Server(tmp_path_factory.mktemp("api"), {"DEFAULT_AUDIO_FORMAT": "mp3", "API_KEY": "", "MP3_BITRATE": "128k",
                                                "CALL_MODE": "assistant", "OUTPUT_SAMPLE_RATE": "8000"}).start()
    yield s
    s.stop(signal.SIGKILL, timeout=5)


def record_one(server, **sim) -> str:
    """One short call, returned once its files are final (a pending transcript rewrites them)."""
    res = asyncio.run(run_call(SimConfig(server.base, marker_signal(1.0, [0.5]), speed=0, tail_s=0, **sim)))
    deadline = time.monotonic() + 60
    while server.result(res.call_sid).get("transcript_pending") and time.monotonic() < deadline:
        time.sleep(0.1)
    return res.call_sid


def test_head_answers_like_get_without_the_body_and_keeps_the_key_check(make_server):
    server = make_server(DEFAULT_AUDIO_FORMAT="wav", API_KEY=KEY)
    sid = record_one(server)
    auth = {"X-API-Key": KEY}
    files = httpx.get(f"{server.base}/calls/{sid}", headers=auth).json()["files"]
    assert f"call_{sid}_conversation.wav" in files
    paths = list(files.values()) + ["/calls", f"/calls/{sid}", "/audio/formats"]
    for path in paths:
        get = httpx.get(server.base + path, headers=auth)
        head = httpx.head(server.base + path, headers=auth)
        assert get.status_code == 200 and head.status_code == 200, (path, head.status_code, head.text)
        for h in ("content-type", "content-disposition", "etag", "last-modified"):
            assert head.headers.get(h) == get.headers.get(h), (path, h)
        if "/files/" in path:  # a file's length is known without reading it (a listing's may change)
            assert int(head.headers["content-length"]) == len(get.content) > 0
        # On the wire: headers only, not one byte of body.
        status, body = raw_http(server.port, path, auth, method="HEAD")
        assert status == 200 and body == b"", (path, body[:80])
    # Errors stay errors, and the key is still needed.
    missing = f"/calls/{sid}/files/call_{sid}_nothing.wav"
    assert httpx.head(server.base + missing, headers=auth).status_code == 404
    assert httpx.head(f"{server.base}/calls/CA{'0' * 32}", headers=auth).status_code == 404
    assert httpx.head(f"{server.base}/calls/CA123", headers=auth).status_code == 400
    for path in paths[:-1]:
        r = httpx.head(server.base + path)
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer", path
        assert httpx.head(server.base + path, params={"api_key": "wrong"}).status_code == 401
    assert httpx.head(server.base + "/audio/formats").status_code == 200  # public, as GET is


@pytest.mark.parametrize("body,status,message", [
    ('{"format": 5}', 422, f"format must be a string, not a number; {ACCEPTED}"),
    ('{"format": true}', 422, f"format must be a string, not a boolean; {ACCEPTED}"),
    ('{"format": ["wav"]}', 422, f"format must be a string, not an array; {ACCEPTED}"),
    ('{"format": null}', 422, f"format must be a string, not null; {ACCEPTED}"),
    ('{"format": "mp3", "bitrate": {"kbps": 64}}', 422,
     'bitrate must be a string like "64k" or a whole number of kbps like 64, not an object'),
    ('{"format": "mp3", "bitrate": 64.5}', 422,
     'bitrate must be a string like "64k" or a whole number of kbps like 64, not a number'),
    ('{"format": "mp3", "bitrate": false}', 422,
     'bitrate must be a string like "64k" or a whole number of kbps like 64, not a boolean'),
    ('{"format": "wav", "bitrate": 64}', 422, "bitrate applies to mp3 only, not wav"),
    ('{"format": "mp3", "bitrate": "fast"}', 422, "bitrate 'fast' is not a number of kbps like '64k' or '128k'"),
    ('{"format": "aac"}', 422, f"unsupported format 'aac'; {ACCEPTED}"),
    ('{"fromat": "wav"}', 422, "unknown field(s) 'fromat'; accepted: format, bitrate"),
    ('{}', 422, f'no format given: send {{"format": "<name>"}} or ?format=<name>; {ACCEPTED}'),
    ('["wav"]', 400, 'body must be a JSON object like {"format": "wav"}, not an array'),
    ('"wav"', 400, 'body must be a JSON object like {"format": "wav"}, not a string'),
    ('5', 400, 'body must be a JSON object like {"format": "wav"}, not a number'),
    ('{"format": "wav"', 400, 'body is not JSON: send {"format": "wav"} (optionally "bitrate": "64k") or ?format=wav'),
    ('format=wav', 400, 'body is not JSON: send {"format": "wav"} (optionally "bitrate": "64k") or ?format=wav'),
])
def test_set_format_names_the_wrong_type_and_what_is_accepted(shared, body, status, message):
    server = shared
    sid = "CA" + hashlib.md5(body.encode()).hexdigest()
    r = httpx.post(f"{server.base}/audio/set-format/{sid}", content=body, headers={"content-type": "application/json"})
    assert r.status_code == status and r.headers["content-type"] == "application/json", r.text
    assert r.json()["error"] == message
    assert not (server.responses / ".calls" / sid).exists()  # nothing kept for a refused choice


def test_set_format_accepts_a_numeric_bitrate_and_the_query_form(shared):
    server = shared
    sid = "CA" + "cd" * 16
    r = httpx.post(f"{server.base}/audio/set-format/{sid}", json={"format": "mp3", "bitrate": 32})
    assert r.status_code == 200 and r.json()["bitrate_kbps"] == 32 and r.json()["state"] == "pending", r.text
    r = httpx.post(f"{server.base}/audio/set-format/{sid}", params={"format": "mp3", "bitrate": "48k"})
    assert r.status_code == 200 and r.json()["bitrate_kbps"] == 48, r.text
    r = httpx.post(f"{server.base}/audio/set-format/{sid}", params={"format": "wav", "bitrate": "48k"})
    assert r.status_code == 422 and r.json()["error"] == "bitrate applies to mp3 only, not wav"


def test_openapi_documents_set_formats_body_query_errors_and_the_key(shared):
    server = shared
    spec = httpx.get(server.base + "/openapi.json").json()
    op = spec["paths"]["/audio/set-format/{call_sid}"]["post"]
    schema = op["requestBody"]["content"]["application/json"]["schema"]
    names = sorted(f["name"] for f in httpx.get(server.base + "/audio/formats").json()["formats"])
    assert schema["type"] == "object" and schema["additionalProperties"] is False
    assert schema["properties"]["format"] == {"type": "string", "enum": names,
                                              "description": "a name from GET /audio/formats (or ?format=)"}
    assert {t["type"] for t in schema["properties"]["bitrate"]["anyOf"]} == {"string", "integer"}
    query = {p["name"]: p for p in op["parameters"] if p["in"] == "query"}
    assert set(query) == {"format", "bitrate"} and not any(p["required"] for p in query.values())
    error = spec["components"]["schemas"]["ErrorBody"]
    assert error["required"] == ["error"] and error["properties"]["error"]["type"] == "string"
    for status in ("400", "401", "409", "422"):
        ref = op["responses"][status]["content"]["application/json"]["schema"]["$ref"]
        assert ref == "#/components/schemas/ErrorBody"
    schemes = spec["components"]["securitySchemes"]
    assert {(s["type"], s.get("in"), s.get("name"), s.get("scheme")) for s in schemes.values()} == {
        ("http", None, None, "bearer"), ("apiKey", "header", "X-API-Key", None), ("apiKey", "query", "api_key", None),
        ("apiKey", "cookie", "callscribe_session", None)}  # the dashboard's session
    assert len(op["security"]) == 4
    assert "security" not in spec["paths"]["/audio/formats"]["get"]  # public
    assert "head" not in spec["paths"]["/calls/{call_sid}/files/{name}"]  # one operation per endpoint


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_pages_load_everything_from_the_app(make_server, page):
    server = make_server(API_KEY=KEY)  # the docs stay public, as before
    r = httpx.get(server.base + page)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    html = r.text
    assert not re.search(r"(?i)(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", html), "the page names an outside host"
    assets = re.findall(r'(?:src|href)="([^"]+)"', html)
    kinds = {a.rsplit(".", 1)[-1] for a in assets}
    assert "js" in kinds and (page == "/redoc" or "css" in kinds), assets
    for a in assets:
        assert a.startswith("/"), a
        got = httpx.get(server.base + a)
        assert got.status_code == 200 and len(got.content) > 1000, (a, got.status_code)
        want = {"js": "javascript", "css": "text/css", "png": "image/png"}[a.rsplit(".", 1)[-1]]
        assert want in got.headers["content-type"], (a, got.headers["content-type"])
    spec_url = re.search(r"""(?:url: *'|spec-url=")([^'"]+)""", html).group(1)
    assert spec_url == "/openapi.json" and httpx.get(server.base + spec_url).status_code == 200
    if page == "/docs":
        assert '"validatorUrl": null' in html  # no badge fetched from Swagger's online validator
        bundle = httpx.get(server.base + next(a for a in assets if a.endswith("swagger-ui-bundle.js"))).text
        assert "SwaggerUIBundle" in bundle and "openapi" in bundle


def _iso(s: str) -> float:
    return datetime.strptime(s, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc).timestamp()


@pytest.mark.parametrize("mode", ["assistant", "listen"])
async def test_a_live_call_shows_its_mode_and_start_time(make_server, mode):
    env = {"CALL_MODE": "listen", "FORWARD_TO": "+15005550006"} if mode == "listen" else {}
    server = make_server(DEFAULT_AUDIO_FORMAT="wav", **env)
    worker2 = make_server(DEFAULT_AUDIO_FORMAT="wav", **env)  # another worker on the same folder
    sid = "CA" + ("1" if mode == "listen" else "2") * 32
    before = time.time()
    audio = marker_signal(4.0, [1.0])
    other = audio if mode == "listen" else None
    call = asyncio.create_task(run_call(SimConfig(server.base, audio, outbound_audio=other, call_sid=sid, speed=1.0,
                                                  tail_s=0.2)))
    live = None
    async with httpx.AsyncClient(base_url=server.base) as c:
        for _ in range(200):
            r = await c.get(f"/calls/{sid}")
            if r.status_code == 200 and r.json()["state"] == "live":
                live = r.json()
                break
            await asyncio.sleep(0.02)
        assert live is not None, "the call never showed as live"
        listed = {d["call_sid"]: d for d in (await c.get("/calls")).json()["data"]}
        elsewhere = (await c.get(f"{worker2.base}/calls/{sid}")).json()  # its lock, and its journal
    assert elsewhere["state"] == "live" and elsewhere["mode"] == mode  # the coordinator: live on any worker
    assert abs(_iso(elsewhere["started_at"]) - _iso(live["started_at"])) <= 1
    assert live["mode"] == mode and listed[sid]["mode"] == mode and listed[sid]["state"] == "live"
    assert before - 1 <= _iso(live["started_at"]) <= time.time() and listed[sid]["started_at"] == live["started_at"]
    assert live["completed_at"] is None and live["result"] == {}
    res = await call
    assert res.mode == {"assistant": "connect", "listen": "listen"}[mode]  # the TwiML the simulator got
    out = server.result(sid)
    assert out["mode"] == mode and abs(_iso(out["started_at"]) - _iso(live["started_at"])) <= 1
