"""Property-based fuzzing of the sans-I/O Media Streams parser (`StreamProtocol.receive`).

The promise: whatever arrives in a frame — any text, any bytes, any JSON shape, message-shaped
objects with fields of the wrong type — `receive` either returns a well-formed event or raises
`ProtocolError` (close the stream) / `ProtocolWarning` (skip the message). Never another
exception: an unexpected one would tear down the WebSocket handler instead of answering with a
close code and a reason.
"""

from __future__ import annotations

import base64
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.twilio.events import Connected, Dtmf, Mark, Media, Start, Stop
from app.twilio.protocol import (
    MAX_MEDIA_PAYLOAD, ProtocolError, ProtocolWarning, StreamProtocol, StreamState,
)

pytestmark = pytest.mark.security

SID = "MZ" + "1" * 32
CALL = "CA" + "2" * 32
ACC = "AC" + "3" * 32
FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Any JSON value, including deep and odd ones.
json_scalars = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | st.text(max_size=30)
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
    st.text(max_size=10), inner, max_size=4), max_leaves=20)
# Strings Twilio's numeric fields might be confused with (unicode digits, signs, huge numbers).
numberish = st.one_of(
    st.integers(-(2**64), 2**64).map(str), st.integers(0, 10**20), st.sampled_from(
        ["", " 1", "1 ", "-1", "+1", "1.5", "1e3", "²", "١٢", "٣", "0x10", "00000000000000000001", "9" * 40]),
    st.text(max_size=8), json_values)
valid_b64 = st.binary(min_size=1, max_size=400).map(lambda b: base64.b64encode(b).decode())
b64ish = st.one_of(valid_b64, valid_b64, valid_b64, st.binary(max_size=9000).map(lambda b: base64.b64encode(b).decode()),
                   st.text(max_size=50), st.sampled_from(["", "=", "/w=", "////", "AA==AA==", "\u00ff\u00ff"]),
                   json_values)
maybe = lambda strat: st.one_of(st.just(None), strat)  # noqa: E731  (None = field left out)


def _drop_none(d: dict) -> dict:
    return {k: v for k, v in d.items() if v is not None}


media_shaped = st.builds(
    lambda seq, track, chunk, ts, payload, sid, body_kind: _drop_none({
        "event": "media", "sequenceNumber": seq, "streamSid": sid,
        "media": _drop_none({"track": track, "chunk": chunk, "timestamp": ts, "payload": payload})
        if body_kind == "dict" else body_kind}),
    maybe(numberish), st.sampled_from(["inbound", "inbound", "outbound", "both", ""]) | json_values,
    maybe(numberish), maybe(numberish), maybe(b64ish), maybe(st.sampled_from([SID, "MZ" + "9" * 32]) | json_values),
    st.sampled_from(["dict", "dict", "dict", None, "x", 1, []]))
start_shaped = st.builds(
    lambda call, stream, acc, tracks, fmt, params, seq, top: _drop_none({
        "event": "start", "sequenceNumber": seq, "streamSid": top,
        "start": _drop_none({"callSid": call, "streamSid": stream, "accountSid": acc, "tracks": tracks,
                             "mediaFormat": fmt, "customParameters": params})}),
    maybe(st.sampled_from([CALL, "CA123", "CA" + "G" * 32]) | json_values),
    maybe(st.sampled_from([SID, "x" * 65]) | json_values), maybe(st.sampled_from([ACC, "A" * 100]) | json_values),
    maybe(st.sampled_from([["inbound"], ["inbound", "outbound"], [], ["sideways"]]) | json_values),
    maybe(st.fixed_dictionaries({}, optional={"encoding": st.sampled_from(["audio/x-mulaw", "audio/l16"]) | json_values,
                                              "sampleRate": st.sampled_from([8000, 16000, "8000"]) | json_values,
                                              "channels": st.sampled_from([1, 2]) | json_values}) | json_values),
    maybe(st.dictionaries(st.text(max_size=5), json_values, max_size=3) | json_values),
    maybe(numberish), maybe(st.sampled_from([SID]) | json_values))
other_shaped = st.builds(
    lambda event, seq, sid, body: _drop_none({"event": event, "sequenceNumber": seq, "streamSid": sid, event: body}),
    st.sampled_from(["dtmf", "mark", "stop", "connected", "clear", "Media", ""]), maybe(numberish),
    maybe(st.sampled_from([SID]) | json_values),
    maybe(st.fixed_dictionaries({}, optional={"digit": json_values | st.sampled_from(["1", "#", "12", "w"]),
                                              "name": json_values, "track": json_values,
                                              "callSid": json_values, "accountSid": json_values}) | json_values))
any_event_value = st.builds(lambda ev, rest: {"event": ev, **rest}, json_values,
                            st.dictionaries(st.text(max_size=10), json_values, max_size=4))
messages = st.one_of(
    st.text(max_size=300),
    st.binary(max_size=300),
    json_values.map(json.dumps),
    media_shaped.map(json.dumps), start_shaped.map(json.dumps), other_shaped.map(json.dumps),
    any_event_value.map(json.dumps),
    st.integers(1, 3000).map(lambda depth: "[" * depth + "]" * depth),  # deep nesting
    st.integers(1, 3000).map(lambda depth: '{"event":' + "[" * depth + "]" * depth + "}"),
)

GOOD_START = json.dumps({"event": "start", "sequenceNumber": "1", "streamSid": SID, "start": {
    "accountSid": ACC, "streamSid": SID, "callSid": CALL, "tracks": ["inbound"],
    "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
    "customParameters": {"token": "t"}}})


def _protocol(state: str) -> StreamProtocol:
    p = StreamProtocol()
    if state in ("connected", "streaming", "stopped"):
        p.receive('{"event":"connected","protocol":"Call","version":"1.0.0"}')
    if state in ("streaming", "stopped"):
        p.receive(GOOD_START)
    if state == "stopped":
        p.receive(json.dumps({"event": "stop", "sequenceNumber": "2", "streamSid": SID}))
    return p


def _check_event(ev, p: StreamProtocol) -> None:
    """Whatever receive returns is well formed (the shell and the recorder rely on it)."""
    assert isinstance(ev, (Connected, Start, Media, Dtmf, Mark, Stop))
    if isinstance(ev, Media):
        assert isinstance(ev.payload, bytes) and 1 <= len(ev.payload) <= MAX_MEDIA_PAYLOAD
        assert ev.track in ("inbound", "outbound")
        assert isinstance(ev.timestamp, int) and 0 <= ev.timestamp < 10**16
        assert isinstance(ev.sequence_number, int) and ev.sequence_number >= 0
    if isinstance(ev, Start):
        assert ev.call_sid.startswith("CA") and len(ev.call_sid) == 34
        assert 0 < len(ev.stream_sid) <= 64 and len(ev.account_sid) <= 64
        assert all(isinstance(k, str) and isinstance(v, str) and len(v) <= 500
                   for k, v in ev.custom_parameters.items())
        assert p.state is StreamState.STREAMING
    if isinstance(ev, Dtmf):
        assert len(ev.digit) == 1 and isinstance(ev.track, str)
    if isinstance(ev, Stop):
        assert isinstance(ev.sequence_number, int)


@FUZZ
@given(state=st.sampled_from(["fresh", "connected", "streaming", "stopped"]), batch=st.lists(messages, min_size=1, max_size=8))
def test_receive_raises_only_protocol_error_or_warning(state, batch):
    p = _protocol(state)
    for msg in batch:
        try:
            ev = p.receive(msg)
        except ProtocolWarning as w:
            assert w.kind in ("binary", "json", "event", "order", "field", "payload")
            assert len(str(w)) < 300  # one log line, never the hostile payload itself
            continue
        except ProtocolError as e:
            assert e.close_code in (1002, 1003, 1008)
            assert len(str(e)) < 300
            break  # the shell closes the socket here
        _check_event(ev, p)


@FUZZ
@given(frames=st.lists(media_shaped, min_size=1, max_size=20))
def test_media_shaped_messages_in_a_good_stream_never_crash_and_never_end_it_except_by_streamsid(frames):
    p = _protocol("streaming")
    for m in frames:
        try:
            ev = p.receive(json.dumps(m))
        except ProtocolWarning:
            continue
        except ProtocolError as e:
            # The only fatal thing a media message can do is claim to be another stream's.
            assert m.get("streamSid") != SID and e.close_code == 1008
            return
        _check_event(ev, p)
        assert p.state is StreamState.STREAMING


@FUZZ
@given(batch=st.lists(st.one_of(media_shaped.map(json.dumps), messages), min_size=1, max_size=8))
def test_the_fast_media_path_accepts_only_what_the_general_path_accepts_as_the_same_media(batch):
    """A valid media frame is decoded on a short path (msgspec); whatever it returns, the general
    path (orjson and every rule) returns too, field for field; anything else it leaves alone."""
    p = _protocol("streaming")
    for msg in batch:
        if not isinstance(msg, str):
            continue
        fast = p._fast_media(msg)
        try:
            general = p._receive_json(msg)
        except (ProtocolWarning, ProtocolError):
            assert fast is None, msg
            p.state = StreamState.STREAMING
            continue
        assert fast is None or fast == general, (msg, fast, general)
        p.state = StreamState.STREAMING


def test_the_fast_media_path_takes_twilios_own_frames():
    """The common case does take the short path (a frame as Twilio sends it, key order and all)."""
    p = _protocol("streaming")
    frame = ('{"event":"media","sequenceNumber":"4","media":{"track":"inbound","chunk":"3","timestamp":"60",'
             '"payload":"/38A"},"streamSid":"%s"}' % SID)
    assert p._fast_media(frame) == Media(4, "inbound", 3, 60, b"\xff\x7f\x00") == p.receive(frame)
    assert p._fast_media(frame.replace('"4"', "4")) is None  # a number where Twilio sends a string: general path
    assert p.receive(frame.replace('"4"', "4")).sequence_number == 4


@pytest.mark.parametrize("text", [
    '{"event":[]}', '{"event":{}}', '{"event":["media"]}', '{"event":null}', '{"event":1}',
    '{"event":"stop","sequenceNumber":"\u00b2","streamSid":"%s"}' % SID,
    '{"event":"media","sequenceNumber":"\u00b2","streamSid":"%s","media":{"payload":"/w==","chunk":"1","timestamp":"1"}}' % SID,
    '{"event":"media","sequenceNumber":"2","streamSid":"%s","media":{"payload":"/w==","chunk":"1","timestamp":"\u0663"}}' % SID,
    '{"event":"media","sequenceNumber":"2","streamSid":"%s","media":{"payload":"/w==","chunk":"1","timestamp":-5}}' % SID,
    '{"event":"media","sequenceNumber":"2","streamSid":"%s","media":{"payload":"/w==","chunk":"1","timestamp":1e300}}' % SID,
    '{"event":"media","sequenceNumber":"2","streamSid":"%s","media":{"payload":"/w==","chunk":"1","timestamp":%s}}' % (SID, "9" * 400),
    "[" * 100000 + "]" * 100000,
    # A valid media frame with a deeply nested extra field: msgspec's short path raised RecursionError here.
    '{"event":"media","x":%s,"sequenceNumber":"2","streamSid":"%s","media":{"payload":"/w==","chunk":"1",'
    '"timestamp":"1"}}' % ("[" * 10000 + "]" * 10000, SID),
])
def test_regressions_found_by_fuzzing(text):
    """Each of these once raised TypeError/ValueError (unhashable event, unicode digits) out of receive."""
    p = _protocol("streaming")
    try:
        ev = p.receive(text)
    except (ProtocolWarning, ProtocolError):
        return
    _check_event(ev, p)
    assert not isinstance(ev, Media) or ev.timestamp < 10**15
