"""WS /media-stream in-process (Starlette's TestClient): a call from the webhook's token to its files,
the greeting the caller hears, listen-only calls, DTMF and marks, and refused streams."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest
import soundfile as sf
from starlette.websockets import WebSocketDisconnect

from app import close_codes
from app.audio import mulaw
from app.twilio.signature import compute_signature
from tests.support.frames import CONNECTED, new_sid, start_msg, token_from, voice_form
from tests.web.inprocess import level_payload, stream_call

CALLER = int(mulaw.decode(level_payload(1000))[0])  # the caller's level after the line's μ-law


def masters(client, sid: str) -> tuple[np.ndarray, np.ndarray]:
    folder = client.app.state.services.store.files(sid).folder
    return tuple(sf.read(folder / f"{t}.wav", dtype="int16")[0] for t in ("inbound", "outbound"))


def test_a_call_is_recorded_from_the_webhooks_token_to_its_files_with_the_greeting_as_heard(twilio):
    client = twilio()
    sent: list[dict] = []

    def read_greeting(ws, stream_sid):
        while not sent or sent[-1]["event"] != "mark":
            sent.append(json.loads(ws.receive_text()))

    sid = stream_call(client, seconds=1.0, during=read_greeting)
    assert [m["event"] for m in sent][-1] == "mark" and sent[-1]["mark"]["name"] == "greeting"
    chime = np.concatenate([mulaw.decode(base64.b64decode(m["media"]["payload"])) for m in sent
                            if m["event"] == "media"])
    result = client.get(f"/calls/{sid}").json()["result"]
    assert result["end_reason"] == "caller hung up (stop)" and result["duration_s"] == 1.12
    assert [t["text"] for t in result["turns"]] == ["(greeting chime)"]
    inbound, outbound = masters(client, sid)
    assert len(inbound) == len(outbound) == 8960
    assert not inbound[:960].any() and (inbound[960:] == CALLER).all()  # Twilio's first timestamp: 120 ms
    # The greeting starts once the first frame has set the clock (up to one frame of wall time later),
    # and the recording holds exactly what the caller was sent.
    first_frame_end = 960 + 160
    at = [k for k in range(first_frame_end, first_frame_end + 161)
          if np.array_equal(outbound[k:k + len(chime)], chime)]
    assert len(chime) >= 4000 and at and not outbound[:at[0]].any() and not outbound[at[0] + len(chime):].any()
    conversation = client.app.state.services.store.root / result["files"]["conversation"]
    assert sf.info(conversation).frames == 8960


def test_a_listen_only_stream_records_both_voices_on_their_timestamps_and_is_not_greeted(twilio):
    client = twilio(call_mode="listen", forward_to="+15005550002")
    sid = stream_call(client, tracks=("inbound", "outbound"), seconds=0.5)
    result = client.get(f"/calls/{sid}").json()["result"]
    assert result["mode"] == "listen" and result["turns"] == []  # no greeting: we only listen
    inbound, outbound = masters(client, sid)
    assert (inbound[960:] == CALLER).all() and (outbound[960:] == CALLER).all()


def test_dtmf_and_mark_messages_are_journaled_into_the_calls_json(twilio):
    client = twilio(greeting="none")

    def press(ws, stream_sid):
        ws.send_text(json.dumps({"event": "dtmf", "streamSid": stream_sid, "sequenceNumber": "90",
                                 "dtmf": {"track": "inbound_track", "digit": "5"}}))
        ws.send_text(json.dumps({"event": "mark", "streamSid": stream_sid, "sequenceNumber": "91",
                                 "mark": {"name": "m1"}}))

    sid = stream_call(client, seconds=0.5, during=press)
    result = client.get(f"/calls/{sid}").json()["result"]
    [dtmf] = result["dtmf"]  # after the last frame (ending at 620 ms), by up to one frame of wall time
    assert dtmf["digit"] == "5" and 620 <= dtmf["at_ms"] <= 640
    journal = client.app.state.services.store.files(sid).journal
    marks = [json.loads(line) for line in journal.read_text().splitlines() if '"t":"mark"' in line]
    assert [m["name"] for m in marks] == ["m1"] and 620 <= marks[0]["at_ms"] <= 640


def test_a_message_over_the_size_limit_closes_the_stream_with_1009_and_the_call_is_kept(twilio):
    client = twilio(max_ws_message_bytes=2000)
    sid = new_sid()

    def flood(ws, stream_sid):
        ws.send_text("x" * 2001)
        with pytest.raises(WebSocketDisconnect) as closed:
            while True:
                ws.receive_text()  # the greeting, then the close
        assert closed.value.code == close_codes.TOO_BIG and "MAX_WS_MESSAGE_BYTES=2000" in closed.value.reason
        return True

    stream_call(client, sid=sid, seconds=0.2, during=flood)
    result = client.get(f"/calls/{sid}").json()["result"]
    assert result["end_reason"] == "message too large" and result["duration_s"] == 0.32


@pytest.mark.parametrize("token", ["", "0" * 32, "from another call"])
def test_a_start_without_the_webhooks_token_is_closed_with_1008_and_nothing_recorded(twilio, token):
    client = twilio()
    sid = new_sid()
    if token == "from another call":
        token = token_from(client.post("/voice", data=voice_form(new_sid())).text)
    with client.websocket_connect("/media-stream") as ws:
        ws.send_text(CONNECTED)
        ws.send_text(start_msg(1, new_sid("MZ"), sid, {"token": token}))
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_text()
    assert closed.value.code == close_codes.POLICY and "no valid stream token" in closed.value.reason
    assert client.get(f"/calls/{sid}").status_code == 404


def test_with_a_twilio_token_the_upgrade_must_be_signed_over_the_stream_url(twilio):
    auth = "tw-" + "a1" * 16
    client = twilio(twilio_auth_token=auth)
    with pytest.raises(WebSocketDisconnect) as refused:
        with client.websocket_connect("/media-stream", headers={"x-twilio-signature": "bm90IGl0"}):
            pass
    assert refused.value.code == close_codes.POLICY
    signature = compute_signature("ws://testserver/media-stream", {}, auth)
    with client.websocket_connect("/media-stream", headers={"x-twilio-signature": signature}) as ws:
        ws.send_text(CONNECTED)  # accepted: the stream goes on to its start
