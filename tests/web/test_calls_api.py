"""GET /calls, /calls/{sid} and downloads in-process: what a recorded call looks like as data, and HEAD."""

from __future__ import annotations

import dataclasses

import pytest

from tests.support.frames import new_sid
from tests.web.inprocess import look_mid_call


async def test_no_calls_yet_is_an_empty_list(serve):
    client = await serve()
    r = await client.get("/calls")
    assert r.status_code == 200 and r.json() == {"data": [], "count": 0, "total": 0, "limit": 50, "offset": 0}


async def test_a_recorded_call_is_listed_described_and_its_files_downloadable(recorded, serve, tmp_path):
    client = await serve()
    listing = (await client.get("/calls")).json()
    assert listing["count"] == 1
    [entry] = listing["data"]
    assert (entry["call_sid"], entry["state"], entry["mode"], entry["duration_s"], entry["format"]) == (
        recorded, "finalized", "assistant", 1.12, "wav")
    call = (await client.get(f"/calls/{recorded}")).json()
    assert call["files"] == entry["files"] and call["result"]["end_reason"] == "caller hung up (stop)"
    names = [f"call_{recorded}{suffix}" for suffix in ("_conversation.wav", ".txt", "_summary.txt", ".json",
                                                        "_timeline.svg")]
    assert sorted(call["files"]) == sorted(names)
    for name, link in call["files"].items():
        r = await client.get(link)
        assert r.status_code == 200 and r.content == (tmp_path / "responses" / name).read_bytes(), name
        assert f'filename="{name}"' in r.headers["content-disposition"]
    media = {n: (await client.get(link)).headers["content-type"] for n, link in call["files"].items()}
    assert media[names[0]] == "audio/wav" and media[names[3]] == "application/json"
    assert media[names[1]].startswith("text/plain")


async def test_head_answers_every_calls_route_like_get_without_a_body(recorded, serve):
    client = await serve()
    files = (await client.get(f"/calls/{recorded}")).json()["files"]
    for path in ["/calls", f"/calls/{recorded}", *files.values()]:
        get, head = await client.get(path), await client.head(path)
        assert head.status_code == get.status_code == 200 and head.content == b"", path
        assert head.headers["content-type"] == get.headers["content-type"], path
        if "/files/" in path:
            assert int(head.headers["content-length"]) == len(get.content) > 0


@pytest.mark.parametrize("path, status, message", [
    ("/calls/{unknown}", 404, "no call {unknown} has been recorded"),
    ("/calls/CA1234", 400, "invalid call SID 'CA1234'"),
    ("/calls/{sid}/files/call_{sid}_conversation.mp3", 404, "no file"),  # recorded as WAV
    ("/calls/{sid}/files/call_{unknown}.json", 404, "no file"),  # another call's name
    ("/calls/{sid}/files/.stream-secret", 404, "no file"),
])
async def test_unknown_calls_and_files_are_named_in_the_error(recorded, serve, path, status, message):
    client = await serve()
    unknown = new_sid()
    r = await client.get(path.format(sid=recorded, unknown=unknown))
    assert r.status_code == status and message.format(unknown=unknown) in r.json()["error"], r.text


def test_a_call_in_progress_is_listed_as_live_with_its_mode(twilio):
    client = twilio()
    sid, seen = look_mid_call(client, lambda sid: client.get(f"/calls/{sid}").json())
    assert (seen["state"], seen["mode"], seen["files"]) == ("live", "assistant", {})
    assert seen["started_at"] and seen["duration_s"] is None
    assert client.get(f"/calls/{sid}").json()["state"] == "finalized"


class _RemoteArtefacts:
    """The local artefacts as a remote store shows them: no local path, read through `open`."""

    def __init__(self, local) -> None:
        self.local = local

    def __getattr__(self, name):
        return getattr(self.local, name)

    def stat(self, sid, name):
        return dataclasses.replace(self.local.stat(sid, name), path=None)


async def test_a_file_with_no_local_path_is_streamed_from_the_artefact_store(recorded, serve, tmp_path):
    client = await serve()
    client.app.state.services.store.artefacts = _RemoteArtefacts(client.app.state.services.store.artefacts)
    name = f"call_{recorded}_conversation.wav"
    r = await client.get(f"/calls/{recorded}/files/{name}")
    assert r.status_code == 200 and r.content == (tmp_path / "responses" / name).read_bytes()
    assert r.headers["content-type"] == "audio/wav" and int(r.headers["content-length"]) == len(r.content)
    assert (await client.get(f"/calls/{recorded}/files/call_{recorded}_x.wav")).status_code == 404
