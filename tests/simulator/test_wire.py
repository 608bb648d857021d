"""Twilio's messages and its reading of the server's, as plain calls on dicts and strings."""

from __future__ import annotations

import base64
import json

from app.simulator import wire
from app.twilio.events import SendClear, SendMark, SendMedia

SID = "MZ" + "3" * 32


def test_messages_keep_twilios_key_order_and_string_numbers() -> None:
    start = wire.start(1, account_sid="AC1", stream_sid=SID, call_sid="CA1", tracks=["inbound"], parameters={"k": "é"})
    assert list(start) == ["event", "sequenceNumber", "start", "streamSid"] and start["sequenceNumber"] == "1"
    assert list(start["start"]) == ["accountSid", "streamSid", "callSid", "tracks", "mediaFormat", "customParameters"]
    media = wire.media(7, SID, "inbound", 6, 220, b"\xff\x00")
    assert list(media) == ["event", "sequenceNumber", "media", "streamSid"]
    assert media["media"] == {"track": "inbound", "chunk": "6", "timestamp": "220", "payload": "/wA="}
    assert list(wire.dtmf(2, SID, "#")) == ["event", "streamSid", "sequenceNumber", "dtmf"]
    assert list(wire.mark(3, SID, "m")) == ["event", "sequenceNumber", "streamSid", "mark"]
    assert list(wire.stop(4, SID, "AC1", "CA1")) == ["event", "sequenceNumber", "streamSid", "stop"]
    assert wire.dumps(wire.connected()) == '{"event":"connected","protocol":"Call","version":"1.0.0"}'
    assert '"customParameters":{"k":"é"}' in wire.dumps(start)  # compact, not ASCII-escaped


def text(event: str, **fields: object) -> str:
    return json.dumps({"event": event, "streamSid": SID, **fields})


def test_good_server_messages_become_commands() -> None:
    read = wire.read_server_message(text("media", media={"payload": base64.b64encode(b"\x01\x02").decode()}), SID)
    assert (read.event, read.accepted, read.warnings, read.command_warnings) == ("media", True, (), ())
    assert read.command == SendMedia(b"\x01\x02")
    assert wire.read_server_message(text("media", media={"payload": ""}), SID).command == SendMedia(b"")
    assert wire.read_server_message(text("mark", mark={"name": "m1"}), SID).command == SendMark("m1")
    assert wire.read_server_message(text("clear"), SID).command == SendClear()


def kinds(warnings: tuple[tuple[str, str], ...]) -> list[str]:
    return [kind for kind, _ in warnings]


def test_frames_twilio_rejects_whole() -> None:
    binary = wire.read_server_message(b"\x00", SID)
    assert (binary.event, binary.accepted, kinds(binary.warnings)) == (None, False, ["31950"])
    for frame in ("not json", "[1]"):
        read = wire.read_server_message(frame, SID)
        assert (read.event, read.accepted, kinds(read.warnings)) == (None, False, ["31951"])
    unknown = wire.read_server_message(text("hello"), SID)
    assert (unknown.event, unknown.accepted, kinds(unknown.warnings)) == ("hello", False, ["31951"])  # still counted
    no_event = wire.read_server_message(json.dumps({"streamSid": SID}), SID)
    assert no_event.event == "None" and not no_event.accepted
    wrong = wire.read_server_message(json.dumps({"event": "clear", "streamSid": "MZother"}), SID)
    assert (wrong.event, wrong.accepted, wrong.command) == ("clear", False, None)
    assert "wrong or missing streamSid 'MZother'" in wrong.warnings[0][1]


def test_extra_fields_are_warned_about_but_processed() -> None:
    read = wire.read_server_message(text("clear", extra=1), SID)
    assert read.accepted and read.command == SendClear() and kinds(read.warnings) == ["31951-extra"]
    assert "['extra']" in read.warnings[0][1]


def test_malformed_bodies_are_command_warnings() -> None:
    for frame, says in (
        (text("media", media="x"), "media without media.payload string"),
        (text("media", media={"payload": 3}), "media without media.payload string"),
        (text("media", media={"payload": "!!not base64"}), "media.payload is not valid base64"),
        (text("mark", mark={}), "mark without mark.name string"),
        (text("mark"), "mark without mark.name string"),
    ):
        read = wire.read_server_message(frame, SID)
        assert read.accepted and read.warnings == () and read.command is None
        (kind, message), = read.command_warnings
        assert kind == "31951" and message.endswith(says)


def test_a_file_header_plays_as_noise_with_a_warning() -> None:
    for header in (b"RIFF", b"ID3\x03", b"OggS", b"fLaC"):
        audio = header + b"\xff" * 8
        read = wire.read_server_message(text("media", media={"payload": base64.b64encode(audio).decode()}), SID)
        assert read.command == SendMedia(audio) and kinds(read.command_warnings) == ["header"]
