"""The WebSocket protocol `callscribe serve` runs (app/web/ws_protocol.py): uvicorn's websockets-sansio
with a frame sink. Real uvicorn servers in this process, real WebSocket clients.

- A sink offered messages keeps their order with the queued ones: it takes a message only while the
  app waits for one and nothing is queued before it.
- The protocol's own reading of plain text frames (while a sink is set) loses, splits or invents
  nothing wherever TCP cuts the stream, and leaves every other frame, and bad ones, to websockets.
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
from tests.support.frames import ZERO_KEY, ws_frame
from tests.support.sockets import free_port, ws_connect

pytestmark = pytest.mark.timeout(60)


def serve_in_thread(app, ws, **config) -> tuple[uvicorn.Server, threading.Thread, int]:  # type: ignore[no-untyped-def]
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", ws=ws,
                                           lifespan="auto", **config))
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

    def start(app, ws=FrameSinkProtocol, **config):  # type: ignore[no-untyped-def]
        server, t, port = serve_in_thread(app, ws, **config)
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


async def _read_frame(reader: asyncio.StreamReader, skip_pongs: bool = True) -> tuple[int, bytes]:
    """One server frame (unmasked): its opcode and payload."""
    while True:
        b0, b1 = await asyncio.wait_for(reader.readexactly(2), 10)
        n = b1 & 0x7F
        if n == 126:
            n = int.from_bytes(await reader.readexactly(2), "big")
        elif n == 127:
            n = int.from_bytes(await reader.readexactly(8), "big")
        payload = await reader.readexactly(n)
        if not (skip_pongs and b0 & 0x0F == 0xA):
            return b0 & 0x0F, payload


def _stream_of_every_kind(rng: np.random.Generator, count: int) -> tuple[bytes, list[str]]:
    """Client frames of every kind in one byte stream: text the sink takes ("s…", 1 to 400 bytes:
    7- and 16-bit lengths) and text it leaves ("q…"), binary, pings, a message in fragments; and the
    messages the app must see, in order."""
    out, expected = [], []
    for i in range(count):
        kind = rng.choice(["s", "s", "s", "q", "bin", "ping", "frag"])
        body = f"{i}:" + "x" * int(rng.integers(0, 400))
        if kind in ("s", "q"):
            out.append(ws_frame((kind + body).encode()))
            expected.append(kind + body)
        elif kind == "bin":
            out.append(ws_frame(bytes([i % 256, 1]), opcode=0x2))
            expected.append(f"bytes:{bytes([i % 256, 1]).hex()}")
        elif kind == "ping":
            out.append(ws_frame(b"p", opcode=0x9))
        else:
            text = ("s" + body).encode()
            out.append(ws_frame(text[:3], fin=False) + ws_frame(text[3:], opcode=0x0))
            expected.append(text.decode())
    return b"".join(out), expected


async def test_messages_cut_anywhere_by_tcp_arrive_whole_and_in_order(served):
    """The protocol reads plain text frames itself while a sink is set, and leaves the rest to
    websockets: cut the stream at random bytes (mid-header, mid-payload, between frames) and every
    message still arrives once, whole, in order, by one path or the other."""
    port = served(_ordering_app)
    rng = np.random.default_rng(5)
    stream, expected = _stream_of_every_kind(rng, 400)
    reader, writer = await ws_connect("127.0.0.1", port, path="/")
    writer.write(ws_frame(b"report"))
    await _read_frame(reader)
    at = 0
    while at < len(stream):
        step = int(rng.integers(1, 900))
        writer.write(stream[at:at + step])
        await writer.drain()
        await asyncio.sleep(0.0005)
        at += step
    writer.write(ws_frame(b"report"))
    seen = json.loads((await _read_frame(reader))[1])[1:-1]
    writer.close()
    assert [text for _, text in seen] == expected
    assert sum(path == "sink" for path, _ in seen) > len(expected) // 3


async def test_bytes_inside_a_frame_are_never_read_as_a_frame_of_their_own(served):
    """A binary message whose payload is itself a valid text frame, its header and its payload in
    separate reads: websockets holds the frame open between them, so the protocol must not read
    the payload as a new frame (the app would see a text message nobody sent)."""
    port = served(_ordering_app)
    reader, writer = await ws_connect("127.0.0.1", port, path="/")
    writer.write(ws_frame(b"report"))
    await _read_frame(reader)
    inner = ws_frame(b"s-inside")
    outer = ws_frame(inner, opcode=0x2, key=ZERO_KEY)  # an all-zero mask: the payload is the inner frame
    head = len(outer) - len(inner)
    for part in (outer[:head], outer[head:], ws_frame(b"report")):
        writer.write(part)
        await writer.drain()
        await asyncio.sleep(0.05)
    seen = json.loads((await _read_frame(reader))[1])[1:]
    writer.close()
    assert seen == [["queue", f"bytes:{inner.hex()}"], ["queue", "report"]]


@pytest.mark.parametrize("frame, code", [
    (bytes([0x81, len(b"s-unmasked")]) + b"s-unmasked", 1002),
    (bytes([0xC1]) + ws_frame(b"s-rsv1")[1:], 1002),
    (ws_frame(b"s" + b"x" * 2000), 1009),
    (ws_frame(b"s\xc3\x28"), 1007),
], ids=["unmasked", "rsv1", "too-big", "not-utf8"])
async def test_a_bad_frame_while_a_sink_is_set_gets_websockets_close_code(served, frame, code):
    port = served(_ordering_app, ws_max_size=1000)
    reader, writer = await ws_connect("127.0.0.1", port, path="/")
    writer.write(ws_frame(b"report"))
    await _read_frame(reader)
    writer.write(ws_frame(b"s-good") + frame)
    opcode, payload = await _read_frame(reader)
    assert opcode == 0x8 and int.from_bytes(payload[:2], "big") == code, (opcode, payload)
    writer.close()


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


def _echo_app(sink=None):  # type: ignore[no-untyped-def]
    """Echoes each message it receives through ASGI as "echo:<text>", after setting ``sink`` if given."""
    async def app(scope, receive, send):  # type: ignore[no-untyped-def]
        assert FRAME_SINK in scope["extensions"]
        await receive()
        await send({"type": "websocket.accept"})
        if sink is not None:
            scope["extensions"][FRAME_SINK](sink)
        while (msg := await receive())["type"] != "websocket.disconnect":
            await send({"type": "websocket.send", "text": "echo:" + msg["text"]})
    return app


async def _echoed(port: int, count: int) -> list[str]:
    async with connect(f"ws://127.0.0.1:{port}/", compression=None) as ws:
        for i in range(count):
            await ws.send(f"s{i}")
        return [await ws.recv() for _ in range(count)]


async def test_a_sink_that_raises_leaves_the_message_to_the_queue(served):
    def sink(text: str) -> bool:
        raise RuntimeError("a sink bug")

    assert await _echoed(served(_echo_app(sink)), 5) == [f"echo:s{i}" for i in range(5)]


async def test_without_a_sink_the_protocol_is_plain_asgi(served):
    assert await _echoed(served(_echo_app()), 20) == [f"echo:s{i}" for i in range(20)]


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
