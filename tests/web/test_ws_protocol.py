"""The WebSocket protocol `callscribe serve` runs (app/web/ws_protocol.py): uvicorn's websockets-sansio
with a frame sink. Real uvicorn servers in this process, real WebSocket clients.

- A sink offered messages keeps their order with the queued ones: it takes a message only while the
  app waits for one and nothing is queued before it.
- /media-stream records its frames through the sink, and a frame it cannot record ends that call
  (1011 with a reason, the call finalised with what it has) on either protocol, while another call
  on the same server keeps every frame.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest
import uvicorn
from websockets.asyncio.client import connect

from app.call.session import CallSession
from app.config import Settings
from app.main import create_app
from app.serving import stack
from app.web.ws_protocol import FRAME_SINK, FrameSinkProtocol
from tests.security.helpers import Model, RawStream, frame_bytes, read_master
from tests.support.server import Server
from tests.support.frames import ws_frame
from tests.support.sockets import free_port, ws_connect

pytestmark = pytest.mark.timeout(60)


def serve_in_thread(app, ws) -> tuple[uvicorn.Server, threading.Thread, int]:  # type: ignore[no-untyped-def]
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", ws=ws,
                                           lifespan="auto"))
    t = threading.Thread(target=server.run, daemon=True)
    t.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.02)
    return server, t, port


@pytest.fixture
def served():
    running = []

    def start(app, ws=FrameSinkProtocol):  # type: ignore[no-untyped-def]
        server, t, port = serve_in_thread(app, ws)
        running.append((server, t))
        return port

    yield start
    for server, t in running:
        server.should_exit = True
        t.join(10)


def test_callscribe_serve_runs_the_frame_sink_protocol():
    assert stack()["ws"] == "app.web.ws_protocol:FrameSinkProtocol"


async def _ordering_app(scope, receive, send):  # type: ignore[no-untyped-def]
    """Takes messages starting with "s" in its sink while it waits; "busy" keeps it busy 300 ms;
    "report" answers with every message seen so far and the path it came by."""
    assert scope["type"] == "websocket"
    await receive()  # websocket.connect
    await send({"type": "websocket.accept"})
    seen: list[list[str]] = []
    state = {"waiting": False}

    def sink(text: str) -> bool:
        if not state["waiting"] or not text.startswith("s"):
            return False
        seen.append(["sink", text])
        return True

    scope["extensions"][FRAME_SINK](sink)
    while True:
        state["waiting"] = True
        msg = await receive()
        state["waiting"] = False
        if msg["type"] == "websocket.disconnect":
            return
        text = msg.get("text")
        seen.append(["queue", text if text is not None else f"bytes:{msg['bytes'].hex()}"])
        if text == "busy":
            await asyncio.sleep(0.3)
        if text == "report":
            await send({"type": "websocket.send", "text": json.dumps(seen)})


async def test_a_sink_takes_messages_only_while_the_app_waits_and_their_order_holds(served):
    port = served(_ordering_app)
    async with connect(f"ws://127.0.0.1:{port}/", compression=None) as ws:
        await ws.send("report")  # the app is in its loop, its sink set
        assert json.loads(await ws.recv()) == [["queue", "report"]]
        burst = ["s1", "busy", "s2", "s3", "q1", b"\x00\x01", "s4", "report"]
        for m in burst:
            await ws.send(m)
        seen = json.loads(await ws.recv())[1:]
    got = [text for _, text in seen]
    assert got == ["s1", "busy", "s2", "s3", "q1", "bytes:0001", "s4", "report"]
    paths = dict((text, path) for path, text in seen)
    # s1: the app was waiting, nothing queued: the sink. s2 arrived while "busy" kept it busy: queued
    # behind it (the protocol then stops reading until the app has taken it, so s3 and s4 may go
    # either way). Binary and other messages are never offered to the sink.
    assert paths["s1"] == "sink" and paths["s2"] == "queue"
    assert paths["busy"] == paths["q1"] == paths["bytes:0001"] == paths["report"] == "queue"


async def _read_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """One server frame (unmasked): its opcode and payload."""
    b0, b1 = await asyncio.wait_for(reader.readexactly(2), 10)
    n = b1 & 0x7F
    if n == 126:
        n = int.from_bytes(await reader.readexactly(2), "big")
    elif n == 127:
        n = int.from_bytes(await reader.readexactly(8), "big")
    return b0 & 0x0F, await reader.readexactly(n)


async def test_a_message_arriving_behind_a_queued_one_is_not_taken_by_the_sink(served):
    """One TCP write holding a message for the queue, then one the sink would take: the second is
    read while the app's task has been woken for the first but has not run yet, and must wait for it."""
    port = served(_ordering_app)
    reader, writer = await ws_connect("127.0.0.1", port, path="/")
    writer.write(ws_frame(b"report"))
    assert json.loads((await _read_frame(reader))[1]) == [["queue", "report"]]
    writer.write(ws_frame(b"q2") + ws_frame(b"s5") + ws_frame(b"report"))
    seen = json.loads((await _read_frame(reader))[1])[1:]
    assert seen == [["queue", "q2"], ["queue", "s5"], ["queue", "report"]]
    # A text message that is not UTF-8, offered to the sink: refused as the plain protocol does (1007).
    writer.write(ws_frame(b"s\xff\xfe"))
    opcode, payload = await _read_frame(reader)
    assert opcode == 0x8 and int.from_bytes(payload[:2], "big") == 1007
    writer.close()


async def test_without_a_sink_the_protocol_is_plain_asgi(served):
    async def app(scope, receive, send):  # type: ignore[no-untyped-def]
        assert FRAME_SINK in scope["extensions"]
        await receive()
        await send({"type": "websocket.accept"})
        while (msg := await receive())["type"] != "websocket.disconnect":
            await send({"type": "websocket.send", "text": "echo:" + msg["text"]})

    port = served(app)
    async with connect(f"ws://127.0.0.1:{port}/", compression=None) as ws:
        for i in range(20):
            await ws.send(f"s{i}")
        assert [await ws.recv() for _ in range(20)] == [f"echo:s{i}" for i in range(20)]


class _InProcess(SimpleNamespace):
    """What tests.security.helpers need of a server (port, base, responses, result) for the app
    served in this process."""

    finalized = Server.finalized
    read_result = Server.read_result
    result = Server.result


@pytest.mark.parametrize("ws", [FrameSinkProtocol, "websockets-sansio"], ids=["frame-sink", "plain-asgi"])
async def test_a_frame_that_cannot_be_recorded_ends_that_call_with_1011_and_a_reason(served, tmp_path, monkeypatch, ws):
    responses = tmp_path / "responses"
    app = create_app(Settings(recordings_directory=str(responses), greeting="none", transcribe=False,
                              default_audio_format="wav"))
    port = served(app, ws)
    srv = _InProcess(port=port, base=f"http://127.0.0.1:{port}", responses=responses,
                     log=SimpleNamespace(read_text=lambda: "(in-process server)"))
    bad, good = RawStream(srv), RawStream(srv)
    on_audio = CallSession.on_audio
    fail_from = {}

    def failing(self, track, position, pcm):  # type: ignore[no-untyped-def]
        if self.sid == bad.call_sid and position >= fail_from.get("ts", 1e18):
            raise RuntimeError("simulated recorder bug")
        return on_audio(self, track, position, pcm)

    monkeypatch.setattr(CallSession, "on_audio", failing)
    fail_from["ts"] = 120 + 20 * 10
    await bad.open()
    await good.open()
    await bad.start()
    await good.start()
    rng = np.random.default_rng(7)
    sent_bad, sent_good = Model(), Model()
    for i in range(25):
        ts = 120 + 20 * i
        p, q = frame_bytes(rng), frame_bytes(rng)
        await bad.media(ts, p)
        await good.media(ts, q)
        if ts < fail_from["ts"]:
            sent_bad.put(ts, p)
        sent_good.put(ts, q)
        await asyncio.sleep(0.002)
    closed = await bad.closed()
    assert closed.code == 1011 and closed.reason == "internal error recording a frame", closed
    await good.stop()
    await good.closed()
    out_bad = await asyncio.to_thread(srv.result, bad.call_sid, 20.0)
    out_good = await asyncio.to_thread(srv.result, good.call_sid, 20.0)
    assert out_bad["end_reason"] == "internal error recording a frame"
    got = read_master(responses, bad.call_sid)
    assert np.array_equal(got[:len(sent_bad.x)], sent_bad.x) and not got[len(sent_bad.x):].any()
    assert out_good["end_reason"] == "caller hung up (stop)"
    assert np.array_equal(read_master(responses, good.call_sid), sent_good.x)
