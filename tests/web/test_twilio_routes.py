"""POST /voice and POST /status in-process: the TwiML of each mode, signatures, and what a status keeps."""

from __future__ import annotations

import json
import re

import pytest

from app.twilio.signature import compute_signature
from tests.support.frames import new_sid, token_from, voice_form

AUTH = "tw-auth-" + "c0ffee" * 4


async def test_assistant_mode_connects_the_call_to_our_stream_with_a_per_call_token(serve):
    client = await serve()
    sid = new_sid()
    r = await client.post("/voice", data=voice_form(sid))
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/xml")
    assert '<Connect><Stream url="ws://testserver/media-stream">' in r.text
    assert f'<Parameter name="callSid" value="{sid}" />' in r.text
    token = token_from(r.text)
    again = token_from((await client.post("/voice", data=voice_form(sid))).text)
    other = token_from((await client.post("/voice", data=voice_form(new_sid()))).text)
    assert re.fullmatch(r"[0-9a-f]{32}", token) and again == token != other


async def test_listen_mode_forks_both_voices_to_us_then_dials_the_forward_number(serve):
    client = await serve(call_mode="listen", forward_to="+15005550002", public_base_url="https://calls.example.test")
    r = await client.post("/voice", data=voice_form(new_sid()))
    assert r.status_code == 200
    assert '<Start><Stream url="wss://calls.example.test/media-stream" name="callscribe" track="both_tracks">' in r.text
    assert r.text.endswith("<Dial>+15005550002</Dial></Response>")


async def test_a_webhook_without_a_valid_callsid_is_refused_and_a_full_house_is_told_so(serve):
    client = await serve(max_concurrent_calls=0)
    for form in ({"From": "+15005550006"}, voice_form("CA123"), voice_form(new_sid("WB"))):
        r = await client.post("/voice", data=form)
        assert r.status_code == 400 and "CallSid" in r.json()["error"], form
    busy = await client.post("/voice", data=voice_form(new_sid()))
    assert busy.status_code == 200 and "all our lines are busy" in busy.text and "<Hangup />" in busy.text


@pytest.mark.parametrize("path, ok", [("/voice", 200), ("/status", 204)])
async def test_with_a_twilio_token_only_requests_signed_with_it_are_answered(serve, path, ok):
    client = await serve(twilio_auth_token=AUTH)
    url = "http://testserver" + path
    form = voice_form(new_sid())
    for signature in (None, compute_signature(url, form, "another-token"),
                      compute_signature(url, voice_form(new_sid()), AUTH)):
        r = await client.post(path, data=form, headers={"X-Twilio-Signature": signature} if signature else {})
        assert r.status_code == 403 and "invalid Twilio signature" in r.json()["error"] and AUTH not in r.text
    r = await client.post(path, data=form, headers={"X-Twilio-Signature": compute_signature(url, form, AUTH)})
    assert r.status_code == ok


async def test_a_status_callback_keeps_the_calls_status_but_never_its_numbers(recorded, serve, tmp_path):
    client = await serve()
    form = voice_form(recorded, params={"CallStatus": "completed", "CallDuration": "1"})
    assert (await client.post("/status", data=form)).status_code == 204
    [line] = (tmp_path / "responses" / ".calls" / recorded / "status.jsonl").read_text().splitlines()
    kept = json.loads(line)
    assert (kept["CallStatus"], kept["CallDuration"]) == ("completed", "1")
    assert form["From"] not in line and form["To"] not in line
    unknown = new_sid()  # a call we never recorded: answered, nothing written for it
    assert (await client.post("/status", data=voice_form(unknown))).status_code == 204
    assert not (tmp_path / "responses" / ".calls" / unknown).exists()
    assert (await client.post("/status", data={"CallSid": "../etc"})).status_code == 400
