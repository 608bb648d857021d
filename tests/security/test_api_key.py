"""The management API behind API_KEY, and downloads that never leave responses/."""

from __future__ import annotations

import asyncio
import json
import os

import httpx
import pytest

from app.simulator import SimConfig, run_call
from tests.security.helpers import assert_healthy, log_text, noise
from tests.support.sockets import raw_http

pytestmark = [pytest.mark.security, pytest.mark.timeout(120)]

KEY = "k3y-" + "x7" * 12


@pytest.fixture(scope="module")
def recorded(module_server_factory):
    """A server with API_KEY and two recorded calls."""
    srv = module_server_factory(API_KEY=KEY, DEFAULT_AUDIO_FORMAT="wav")
    sids = []
    for seed in (1, 2):
        res = asyncio.run(run_call(SimConfig(srv.base, noise(0.5, seed), speed=0, tail_s=0)))
        srv.result(res.call_sid)
        sids.append(res.call_sid)
    return srv, sids


def _protected(sid: str) -> list[tuple[str, str, dict]]:
    return [("GET", "/calls", {}), ("GET", f"/calls/{sid}", {}), ("GET", f"/calls/{sid}/files/call_{sid}.json", {}),
            ("GET", f"/calls/{sid}/files/call_{sid}_conversation.wav", {}),
            ("POST", f"/audio/set-format/{sid}", {"json": {"format": "wav"}})]


@pytest.mark.parametrize("credentials", [
    {}, {"headers": {"Authorization": "Bearer wrong"}}, {"headers": {"X-API-Key": "wrong"}},
    {"params": {"api_key": "wrong"}}, {"headers": {"Authorization": KEY}},  # no "Bearer "
    {"headers": {"Authorization": "Basic " + KEY}}, {"headers": {"X-API-Key": KEY.upper()}},
    {"headers": {"X-API-Key": KEY[:-1]}},
], ids=["none", "bearer-wrong", "header-wrong", "query-wrong", "no-scheme", "basic", "case", "prefix"])
async def test_management_endpoints_need_the_key(recorded, credentials):
    srv, (sid, _) = recorded
    for method, path, kw in _protected(sid):
        r = httpx.request(method, srv.base + path, **kw, **credentials)
        assert r.status_code == 401, (method, path, r.status_code, r.text)
        assert r.headers["content-type"].startswith("application/json") and "API key" in r.json()["error"]
        assert r.headers.get("www-authenticate") == "Bearer"
        assert KEY not in r.text


@pytest.mark.parametrize("how", ["bearer", "x-api-key", "query"])
async def test_each_documented_way_of_sending_the_key_works(recorded, how):
    srv, (sid, _) = recorded
    creds = {"bearer": {"headers": {"Authorization": f"Bearer {KEY}"}}, "x-api-key": {"headers": {"X-API-Key": KEY}},
             "query": {"params": {"api_key": KEY}}}[how]
    for method, path, kw in _protected(sid):
        r = httpx.request(method, srv.base + path, **kw, **creds, timeout=30)
        assert r.status_code == 200, (method, path, r.status_code, r.text)
    # The key never reaches the log, not even from ?api_key= in the access log.
    log = log_text(srv)
    assert KEY not in log
    if how == "query":
        assert "api_key=[redacted]" in log


async def test_liveness_and_the_format_list_stay_public(recorded):
    srv, _ = recorded
    assert httpx.get(srv.base + "/healthz").status_code == 200
    assert httpx.get(srv.base + "/audio/formats").status_code == 200


async def test_downloads_never_serve_a_file_outside_this_calls_outputs(recorded, tmp_path):
    srv, (sid, other) = recorded
    secret = (srv.responses / ".calls" / ".stream-secret").read_text().strip()
    journal = (srv.responses / ".calls" / sid / "journal.jsonl").read_text()
    outside = tmp_path / "outside.txt"
    outside.write_text("OUTSIDE-RESPONSES")
    os.symlink(outside, srv.responses / f"call_{sid}_evil.txt")  # a planted link named like an output
    os.symlink("/etc/passwd", srv.responses / f"call_{sid}_passwd.txt")
    f = f"/calls/{sid}/files/"
    targets = [
        f + "..%2F..%2F..%2F..%2Fetc%2Fpasswd", f + "%2e%2e%2f%2e%2e%2fetc%2fpasswd",
        f + "%252e%252e%252fetc%252fpasswd", f + "..%252F..%252Fetc%252Fpasswd", f + "%2Fetc%2Fpasswd",
        f + "/etc/passwd", f + "../../../../etc/passwd", f + "..\\..\\etc\\passwd",
        f + f"call_{sid}%5C..%5C..%5Cetc%5Cpasswd", f + f"call_{sid}%2F..%2F..%2F..%2Fetc%2Fpasswd",
        f + f"call_{sid}..%2F.calls%2F{sid}%2Fjournal.jsonl", f + f".calls%2F{sid}%2Fjournal.jsonl",
        f + "..%2F.calls%2F.stream-secret", f + ".calls%2F.stream-secret", f + ".stream-secret",
        f + f"call_{sid}.json%00.txt", f + f"call_{sid}%00", f + f"call_{sid}.json%0a",
        f + f"call_{other}.json", f"/calls/{other}/files/call_{sid}.json",  # another call's file
        f + f"call_{sid}_evil.txt", f + f"call_{sid}_passwd.txt",  # symlinks out of responses/
        f + f"call_{sid}.json.", f + f"call_{sid}", f + f"call_{sid}_conversation.wav.partial",
        "/calls/..%2F..%2Fetc/files/passwd", "/calls/%2e%2e/files/passwd", f"/calls/{sid.upper()}/files/x",
        f"/calls/{sid}/../../../etc/passwd", f"/calls/{sid}%2F..%2F..%2Fetc/files/passwd",
    ]
    for target in targets:
        status, body = raw_http(srv.port, target, {"X-API-Key": KEY})
        assert status in (400, 404), (target, status, body[:200])
        assert json.loads(body)["error"], target
        for leak in (b"root:", b"OUTSIDE-RESPONSES", secret.encode(), journal[:40].encode(), b'"t":"start"'):
            assert leak not in body, (target, leak)
    # The real file is still served (the refusals above were about the names).
    status, body = raw_http(srv.port, f + f"call_{sid}.json", {"X-API-Key": KEY})
    assert status == 200 and json.loads(body)["call_sid"] == sid
    assert_healthy(srv)
