"""The API key (app.web.deps) in-process: every management route needs it, each documented way of
sending it works, and what Twilio and monitoring call stays open."""

from __future__ import annotations

import pytest

from tests.support.frames import voice_form

KEY = "k3y-" + "z8" * 12


def management(sid: str) -> list[tuple[str, str]]:
    return [("GET", "/calls"), ("HEAD", "/calls"), ("GET", f"/calls/{sid}"), ("HEAD", f"/calls/{sid}"),
            ("GET", f"/calls/{sid}/files/call_{sid}.json"), ("HEAD", f"/calls/{sid}/files/call_{sid}.json"),
            ("POST", f"/audio/set-format/{sid}?format=wav")]


async def test_management_routes_answer_401_without_the_key_or_with_a_wrong_one(recorded, serve):
    client = await serve(api_key=KEY)
    for method, path in management(recorded):
        for headers in ({}, {"X-API-Key": KEY[:-1]}, {"Authorization": "Bearer wrong"}):
            r = await client.request(method, path, headers=headers)
            assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer", (method, path, headers)
            if method != "HEAD":
                assert "missing or wrong API key" in r.json()["error"]


@pytest.mark.parametrize("how", ["bearer", "header", "query"])
async def test_each_way_of_sending_the_key_opens_every_management_route(recorded, serve, how):
    client = await serve(api_key=KEY)
    headers = {"bearer": {"Authorization": f"Bearer {KEY}"}, "header": {"X-API-Key": KEY}, "query": {}}[how]
    for method, path in management(recorded):
        if how == "query":
            path += ("&" if "?" in path else "?") + f"api_key={KEY}"
        r = await client.request(method, path, headers=headers)
        assert r.status_code == 200, (method, path, r.text)


async def test_twilio_and_monitoring_routes_need_no_key(serve):
    client = await serve(api_key=KEY)
    for method, path in [("GET", "/healthz"), ("GET", "/metrics"), ("GET", "/audio/formats"), ("GET", "/docs")]:
        assert (await client.request(method, path)).status_code == 200, path
    assert (await client.post("/voice", data=voice_form("CA" + "e" * 32))).status_code == 200
