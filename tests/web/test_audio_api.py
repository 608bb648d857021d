"""GET /audio/formats and POST /audio/set-format/{sid} in-process: the list, and every kind of choice."""

from __future__ import annotations

import pytest
import soundfile as sf

from app.audio.formats import FORMATS
from app.storage.coordination import FormatChoice
from tests.support.frames import new_sid
from tests.web.inprocess import look_mid_call

ACCEPTED = sorted(FORMATS)


async def test_the_format_list_names_each_format_once_and_the_default(serve):
    client = await serve(default_audio_format="flac", output_sample_rate=16000, mp3_bitrate="64k")
    r = await client.get("/audio/formats")
    assert r.status_code == 200
    body = r.json()
    assert sorted(f["name"] for f in body["formats"]) == ACCEPTED
    assert [f["name"] for f in body["formats"] if f["default"]] == ["flac"] == [body["default"]]
    assert body["sample_rate"] == 16000 and body["mp3"]["used_kbps"] == 64
    head = await client.head("/audio/formats")
    assert head.status_code == 200 and head.content == b""


async def test_a_format_chosen_before_the_call_is_kept_for_it(serve):
    client = await serve()
    sid = new_sid()
    r = await client.post(f"/audio/set-format/{sid}", json={"format": "mp3", "bitrate": "32k"})
    body = r.json()
    assert r.status_code == 200 and (body["state"], body["format"], body["bitrate_kbps"]) == ("pending", "mp3", 32)
    assert client.app.state.services.coordinator.get_format(sid) == FormatChoice("mp3", 32)
    assert (await client.post(f"/audio/set-format/{sid}?format=ogg")).json()["format"] == "ogg"  # the query form


@pytest.mark.parametrize("body, status, message", [
    ({"format": "aiff"}, 422, "aiff"),
    ({"format": 5}, 422, "format must be a string, not a number"),
    ({"format": "mp3", "bitrate": True}, 422, "bitrate must be a string"),
    ({"format": "wav", "colour": "blue"}, 422, "unknown field(s) 'colour'"),
    ({}, 422, "no format given"),
    (["wav"], 400, "must be a JSON object"),
    ("wav", 400, "must be a JSON object"),
])
async def test_a_bad_choice_says_what_is_wrong_and_what_is_accepted(serve, body, status, message):
    client = await serve()
    sid = new_sid()
    r = await client.post(f"/audio/set-format/{sid}", json=body)
    assert r.status_code == status and message in r.json()["error"], r.text
    if body == {"format": "aiff"}:
        assert r.json()["accepted"] == ACCEPTED
    assert client.app.state.services.coordinator.get_format(sid) is None  # nothing kept


async def test_a_bad_sid_or_a_body_that_is_not_json_is_a_400(serve):
    client = await serve()
    r = await client.post("/audio/set-format/CA-not-a-sid", json={"format": "wav"})
    assert r.status_code == 400 and "invalid call SID" in r.json()["error"]
    r = await client.post(f"/audio/set-format/{new_sid()}", content=b"format=wav",
                          headers={"content-type": "application/json"})
    assert r.status_code == 400 and "body is not JSON" in r.json()["error"]


async def test_after_the_call_it_is_re_exported_from_the_kept_masters(recorded, serve, tmp_path):
    client = await serve()
    r = await client.post(f"/audio/set-format/{recorded}", json={"format": "flac"})
    assert r.status_code == 200 and r.json()["state"] == "exported"
    folder = tmp_path / "responses"
    assert r.json()["file"] == f"call_{recorded}_conversation.flac"
    assert sf.info(folder / r.json()["file"]).frames == 8960
    assert not (folder / f"call_{recorded}_conversation.wav").exists()  # one conversation file per call
    assert (await client.get(f"/calls/{recorded}")).json()["format"] == "flac"


def test_during_the_call_the_choice_is_applied_at_hang_up(twilio):
    client = twilio()
    sid, answer = look_mid_call(client, lambda sid: client.post(f"/audio/set-format/{sid}", json={"format": "ogg"}))
    assert answer.status_code == 200 and answer.json()["state"] == "live"
    files = client.get(f"/calls/{sid}").json()["files"]
    assert [n for n in files if "_conversation." in n] == [f"call_{sid}_conversation.ogg"]
