"""The per-call stream token: `/voice` (signed by Twilio) mints it as a <Parameter>; a stream whose
`start.customParameters.token` is missing or wrong, or that names a call the webhook never
answered, is closed with 1008 and a reason, and nothing is recorded for it."""

from __future__ import annotations

import asyncio
import hashlib
import hmac

import numpy as np
import pytest

from tests.security.helpers import (
    GoodCall, RawStream, assert_healthy, call_dirs, frame_bytes, outputs_of, result_of, stream_token,
)
from tests.support.frames import new_sid

pytestmark = [pytest.mark.security, pytest.mark.timeout(120)]


@pytest.fixture(scope="module")
def server(module_server_factory):
    return module_server_factory(DEFAULT_AUDIO_FORMAT="wav")


async def _refused(server, s: RawStream, token) -> None:
    before = call_dirs(server)
    await s.open()
    await s.connected()
    await s.send(s.start_msg(token))
    rng = np.random.default_rng(1)
    for i in range(5):  # whatever follows is not recorded either
        await s.media(120 + 20 * i, frame_bytes(rng))
    closed = await s.closed()
    assert closed.code == 1008, closed
    assert closed.reason, "the close carries a reason"
    await asyncio.sleep(0.2)
    assert call_dirs(server) == before, "a refused stream created no call folder"
    assert outputs_of(server, s.call_sid) == []
    return closed


async def test_missing_wrong_or_foreign_tokens_are_refused_with_1008_and_nothing_is_recorded(server):
    async with GoodCall(server) as good:
        other = new_sid()
        other_token = await asyncio.to_thread(stream_token, server, other)
        cases = {
            "missing": (new_sid(), None),
            "empty": (new_sid(), ""),
            "wrong": (new_sid(), "0" * 32),
            "another call's token": (new_sid(), other_token),
            # A CallSid /voice never answered, with a token made the same way under another secret.
            "never answered": (new_sid(), None),
        }
        for name, (sid, token) in cases.items():
            if name == "never answered":
                token = hmac.new(b"guessed-secret", sid.encode(), hashlib.sha256).hexdigest()[:32]
            closed = await _refused(server, RawStream(server, call_sid=sid), token)
            assert "token" in closed.reason and "/voice" in closed.reason, (name, closed)
        assert good.running()
    assert_healthy(server)


async def test_a_valid_token_cannot_open_a_second_stream_or_reopen_a_finished_call(server):
    sid = new_sid()
    token = await asyncio.to_thread(stream_token, server, sid)
    first = await RawStream(server, call_sid=sid).open()
    await first.start(token=token)
    rng = np.random.default_rng(2)
    for i in range(10):
        await first.media(120 + 20 * i, frame_bytes(rng))
    # A second stream for the same live call: refused, the first one keeps going.
    second = RawStream(server, call_sid=sid)
    await second.open()
    await second.start(token)
    closed = await second.closed()
    assert closed.code == 1008 and "already open" in closed.reason, closed
    assert first.still_open()
    await first.stop()
    await first.close()
    out = await result_of(server, sid)
    assert out["end_reason"] == "caller hung up (stop)"
    # The same token again after the call: refused, the recording is not touched.
    before = (server.responses / f"call_{sid}.json").read_bytes()
    third = RawStream(server, call_sid=sid)
    await third.open()
    await third.start(token)
    closed = await third.closed()
    assert closed.code == 1008 and "already been recorded" in closed.reason, closed
    assert (server.responses / f"call_{sid}.json").read_bytes() == before
    assert_healthy(server)
