"""The request limits (app.web.limits) in-process: a body over MAX_BODY_BYTES, a path with a control character."""

from __future__ import annotations

from tests.support.frames import new_sid


async def test_a_body_over_the_limit_is_a_413_that_names_the_setting(serve):
    client = await serve(max_body_bytes=1000)
    sid = new_sid()
    r = await client.post(f"/audio/set-format/{sid}", content=b'{"format": "wav"' + b" " * 2000 + b"}",
                          headers={"content-type": "application/json"})
    assert r.status_code == 413 and "MAX_BODY_BYTES" in r.json()["error"]
    assert client.app.state.services.coordinator.get_format(sid) is None
    assert (await client.post(f"/audio/set-format/{sid}", json={"format": "wav"})).status_code == 200


async def test_a_path_with_a_control_character_is_a_400_before_any_route(serve):
    client = await serve()
    r = await client.get("/calls/CA%00")
    assert r.status_code == 400 and "control character" in r.json()["error"]
