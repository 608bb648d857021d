"""The Micdrop protocol with plain calls: params, commands, turns of audio, what we send, refusals."""

from __future__ import annotations

import json

import pytest

from app.micdrop.protocol import (
    BAD_REQUEST, END_CALL, Audio, Command, Ignored, MicdropError, MicdropProtocol, Params, State, message,
    parse_params,
)


def opened(params: str = '{"authorization":"Bearer k","lang":"en"}') -> MicdropProtocol:
    p = MicdropProtocol()
    assert isinstance(p.receive(params), Params)
    return p


def test_params_keep_the_public_entries_and_never_the_secrets() -> None:
    got = parse_params('{"authorization":"Bearer s3cret","lang":"en","apiKey":"x","sessionToken":"y","n":2,"ok":true}')
    assert got.authorization == "Bearer s3cret"
    assert got.public == {"lang": "en", "n": 2, "ok": True}
    assert "s3cret" not in json.dumps(got.public)
    assert parse_params("{}") == Params(None, {})


@pytest.mark.parametrize("frame, says", [
    (b"\x00\x01", "first frame, as JSON text"),
    ("not json", "not JSON"),
    ("[1, 2]", "JSON object"),
    ('{"authorization": 5}', "authorization must be a string"),
    ('{"lang": {"nested": 1}}', "params.lang must be a string"),
    ('{"lang": "' + "x" * 300 + '"}', "at most 256 characters"),
    ("{" + ",".join(f'"k{i}":1' for i in range(40)) + "}", "more than 32 entries"),
    ('{"a":"' + "x" * 5000 + '"}', "over 4096 bytes"),
])
def test_bad_params_are_refused_with_4400_saying_what_is_accepted(frame, says) -> None:
    p = MicdropProtocol()
    with pytest.raises(MicdropError) as err:
        p.receive(frame)
    assert err.value.code == BAD_REQUEST and says in str(err.value) and len(str(err.value)) <= 120
    assert p.state is State.AWAIT_PARAMS


def test_audio_belongs_to_a_turn_only_between_start_and_stop_speaking() -> None:
    p = opened()
    assert isinstance(p.receive(b"\x01\x00" * 100), Ignored)  # before StartSpeaking: dropped
    assert p.receive("StartSpeaking") is Command.START_SPEAKING and p.state is State.SPEAKING
    assert p.receive(b"\x01\x00" * 1600) == Audio(b"\x01\x00" * 1600)
    assert p.receive(b"\x02\x00\x03") == Audio(b"\x02\x00")  # a stray odd byte is not a sample
    assert p.turn_bytes == 3202
    assert p.receive("StopSpeaking") is Command.STOP_SPEAKING and p.state is State.LISTENING
    assert isinstance(p.receive(b"\x01\x00"), Ignored)  # a late chunk after StopSpeaking
    assert p.receive("StartSpeaking") is Command.START_SPEAKING and p.turn_bytes == 0
    assert p.receive("Mute") is Command.MUTE and p.state is State.LISTENING
    assert isinstance(p.receive("Hello"), Ignored) and isinstance(p.receive("startspeaking"), Ignored)


def test_what_we_send_is_refused_before_params_and_after_close_and_audio_is_whole_samples() -> None:
    p = MicdropProtocol()
    with pytest.raises(RuntimeError):
        p.send_text(END_CALL)
    p = opened()
    assert p.send_text(message("user", "Hi — there")) == 'Message {"role":"user","content":"Hi — there"}'
    assert json.loads(message("assistant", "ok", {"interrupted": True})[8:]) == {
        "role": "assistant", "content": "ok", "metadata": {"interrupted": True}}
    assert p.send_audio(b"\x00\x01" * 800) == b"\x00\x01" * 800
    for bad in (b"", b"\x00\x01\x02"):
        with pytest.raises(ValueError):
            p.send_audio(bad)
    p.close()
    assert isinstance(p.receive("StartSpeaking"), Ignored)
    with pytest.raises(RuntimeError):
        p.send_audio(b"\x00\x00")
