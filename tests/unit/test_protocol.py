"""The sans-I/O protocol, fed real message shapes (a captured Twilio call and the documented examples)."""

from __future__ import annotations

import base64
import json

import pytest

from app.twilio.events import Connected, Dtmf, Mark, Media, SendClear, SendMark, SendMedia, Start, Stop
from app.twilio.protocol import ProtocolError, ProtocolWarning, StreamProtocol, StreamState, serialize

SID = "MZ" + "1" * 32
CALL = "CA" + "2" * 32
ACC = "AC" + "3" * 32


def start_msg(**over):
    body = {"accountSid": ACC, "streamSid": SID, "callSid": CALL, "tracks": ["inbound"],
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
            "customParameters": {"token": "t"}}
    body.update(over)
    return json.dumps({"event": "start", "sequenceNumber": "1", "start": body, "streamSid": SID}, separators=(",", ":"))


def media_msg(seq=2, ts=120, payload=b"\xff" * 160, track="inbound", sid=SID):
    return json.dumps({"event": "media", "sequenceNumber": str(seq), "media": {
        "track": track, "chunk": str(seq - 1), "timestamp": str(ts),
        "payload": base64.b64encode(payload).decode()}, "streamSid": sid}, separators=(",", ":"))


def started() -> StreamProtocol:
    p = StreamProtocol()
    p.receive('{"event":"connected","protocol":"Call","version":"1.0.0"}')
    p.receive(start_msg())
    return p


def test_real_capture_parses_in_order(capture_path):
    lines = capture_path.read_text().splitlines()
    p = StreamProtocol()
    events = []
    for line in lines:
        # The capture's author replaced every streamSid with "test_stream"; everything else is Twilio's.
        events.append(p.receive(line))
    assert isinstance(events[0], Connected) and events[0].version == "1.0.0"
    assert isinstance(events[1], Start) and events[1].tracks == ("inbound",) and events[1].custom_parameters == {}
    media = [e for e in events if isinstance(e, Media)]
    assert len(media) == 616
    assert all(len(m.payload) == 160 for m in media)
    assert media[0].timestamp == 135 and media[-1].timestamp == 12435
    assert [m.chunk for m in media] == list(range(1, 617))
    assert isinstance(events[-1], Stop) and events[-1].sequence_number == 618
    assert p.state is StreamState.STOPPED


def test_documented_dtmf_mark_and_stop_shapes():
    p = started()
    d = p.receive(json.dumps({"event": "dtmf", "streamSid": SID, "sequenceNumber": "5",
                              "dtmf": {"track": "inbound_track", "digit": "1"}}))
    assert d == Dtmf(5, "1", "inbound_track")
    m = p.receive(json.dumps({"event": "mark", "sequenceNumber": "4", "streamSid": SID, "mark": {"name": "my label"}}))
    assert m == Mark(4, "my label")
    s = p.receive(json.dumps({"event": "stop", "sequenceNumber": "6", "streamSid": SID,
                              "stop": {"accountSid": ACC, "callSid": CALL}}))
    assert s == Stop(6, ACC, CALL)


def test_media_before_start_is_fatal_with_a_message_naming_both_events():
    p = StreamProtocol()
    p.receive('{"event":"connected","protocol":"Call","version":"1.0.0"}')
    with pytest.raises(ProtocolError, match="expected start but got media"):
        p.receive(media_msg())


def test_second_start_is_fatal():
    p = started()
    with pytest.raises(ProtocolError, match="got start"):
        p.receive(start_msg())


@pytest.mark.parametrize("bad,kind", [
    ("not json", "json"), ("[1,2]", "json"), ('{"event":"bogus"}', "event"),
    (b"\x00\x01binary", "binary"),
])
def test_bad_messages_are_warnings(bad, kind):
    p = started()
    with pytest.raises(ProtocolWarning) as w:
        p.receive(bad)
    assert w.value.kind == kind
    assert p.state is StreamState.STREAMING  # the stream goes on


@pytest.mark.parametrize("mutate,kind", [
    (lambda m: m["media"].__setitem__("payload", "!!!notbase64"), "payload"),
    (lambda m: m["media"].__setitem__("timestamp", "-5"), "field"),
    (lambda m: m["media"].__setitem__("timestamp", 1.5), "field"),
    (lambda m: m["media"].pop("chunk"), "field"),
    (lambda m: m.__setitem__("media", "x"), "field"),
    (lambda m: m["media"].__setitem__("track", "sideways"), "field"),
])
def test_broken_media_fields_are_skipped(mutate, kind):
    p = started()
    msg = json.loads(media_msg())
    mutate(msg)
    with pytest.raises(ProtocolWarning) as w:
        p.receive(json.dumps(msg))
    assert w.value.kind == kind
    assert isinstance(p.receive(media_msg(seq=3, ts=140)), Media)


def test_foreign_stream_sid_is_fatal():
    p = started()
    with pytest.raises(ProtocolError, match="not this stream"):
        p.receive(media_msg(sid="MZ" + "9" * 32))


def test_start_validation():
    for body, match in [({"callSid": "../../etc"}, "callSid"), ({"mediaFormat": {"encoding": "audio/l16",
                        "sampleRate": 16000, "channels": 1}}, "only audio/x-mulaw"), ({"tracks": []}, "tracks")]:
        p = StreamProtocol()
        with pytest.raises(ProtocolError, match=match):
            p.receive(start_msg(**body))


def test_serialize_commands():
    assert json.loads(serialize(SendMedia(b"\xff\x7f"), SID)) == {"event": "media", "streamSid": SID,
                                                                 "media": {"payload": "/38="}}
    assert json.loads(serialize(SendMark("a\"b"), SID)) == {"event": "mark", "streamSid": SID, "mark": {"name": "a\"b"}}
    assert json.loads(serialize(SendClear(), SID)) == {"event": "clear", "streamSid": SID}
