"""The WebSocket protocol `callscribe serve` runs: uvicorn's websockets-sansio, plus a frame sink.

A plain ASGI WebSocket hands every message to the app through a queue: the protocol builds a
message dict, puts it in the queue, stops reading the socket until the app has taken it, and the
app's task wakes up to take it (then reading resumes: two ``epoll_ctl`` calls a message). For a
Media Stream that is 100 messages a second a call, and that hop costs more than recording them.

With this protocol a connection's scope carries the extension ``FRAME_SINK`` (a function taking a
callable or None). An app that sets a sink is offered each complete text message in the protocol's
own callback, while nothing is queued before it: the sink returns True when it has dealt with the
message (never raising), False to have it queued as usual. An app that sets none, or a server on
another protocol (the extension is then absent), gets plain ASGI: the sink is an option, never a
requirement. Ordering is the app's to keep: it must offer to take messages only while its task is
waiting for the next one (app/web/media_stream.py arms its sink just around ``receive``).

While a sink is set, the protocol also reads the plainest frames itself: a complete, masked,
unfragmented text frame (a Twilio media message is one) is unmasked with websockets' own C
routine and offered to the sink, without websockets' generator-based parser, its Frame objects
and uvicorn's event dispatch (together about a quarter of the loop's time at 100 messages a
second a call). It does so only where websockets' parser stands between frames with nothing
buffered, and stops at the first frame that is anything else, or that the sink leaves: from there
websockets parses, with its own checks and close codes (1002, 1007, 1009), as without a sink. (One
difference: good messages that arrived in the same read before a bad frame reach the sink, where
plain uvicorn drops the whole read's messages once its parser fails.)
"""

from __future__ import annotations

from collections.abc import Callable

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.protocol import OPEN, Protocol
from websockets.streams import StreamReader

try:
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover - the wheel has it
    from websockets.utils import apply_mask

__all__ = ["FRAME_SINK", "FrameSinkProtocol"]

FRAME_SINK = "callscribe.frame_sink"


# Where websockets' parser waits between frames (see ``_at_frame_boundary``).
_PARSE_CODE = Protocol.parse.__code__
_AT_EOF_CODE = StreamReader.at_eof.__code__
_TEXT_FIN = 0x81  # FIN, no RSV bits, opcode 1 (text): a whole text message in one frame


class FrameSinkProtocol(WebSocketsSansIOProtocol):
    frame_sink: Callable[[str], bool] | None = None

    def data_received(self, data: bytes) -> None:
        if self.frame_sink is not None and self._at_frame_boundary():
            taken = self._take_frames(data)
            if taken == len(data):
                return
            if taken:
                data = data[taken:]
        super().data_received(data)

    def _at_frame_boundary(self) -> bool:
        """Whether websockets' parser has consumed everything it was given and waits for a new
        frame, with no fragmented message or extension in play: only then may bytes bypass it.
        Read from the parser coroutine's own state; should websockets change, this says False and
        every byte goes through websockets as before."""
        conn = self.conn
        if self.close_sent or conn.state is not OPEN or conn.reader.buffer or conn.current_size is not None \
                or conn.extensions:
            return False
        g = conn.parser  # ServerProtocol.parse (the handshake), delegating to Protocol.parse (the frames)
        while g is not None and getattr(g, "gi_code", None) is not _PARSE_CODE:
            g = getattr(g, "gi_yieldfrom", None)
        inner = g.gi_yieldfrom if g is not None else None
        return inner is not None and getattr(inner, "gi_code", None) is _AT_EOF_CODE

    def _take_frames(self, data: bytes) -> int:
        """Offer the complete, masked, unfragmented text frames at the head of ``data`` to the sink
        and return how many bytes it took. Stops at the first frame it does not take or that is not
        of that plain kind (control frames, fragments, binary, a 64-bit length, a length over the
        limit, text that is not UTF-8, a partial frame): websockets parses that and what follows,
        with its own rules and close codes, exactly as without a sink."""
        sink = self.frame_sink
        limit = self.conn.max_message_size
        queue = self.queue
        end_of_data = len(data)
        at = 0
        while end_of_data - at >= 6 and data[at] == _TEXT_FIN:
            n = data[at + 1]
            if n < 0x80:  # not masked: websockets refuses it (1002)
                break
            n &= 0x7F
            if n < 126:
                key = at + 2
            elif n == 126 and end_of_data - at >= 8:
                n = (data[at + 2] << 8) | data[at + 3]
                key = at + 4
            else:
                break
            end = key + 4 + n
            if end > end_of_data or (limit is not None and n > limit):
                break
            try:
                text = apply_mask(data[key + 4:end], data[key:key + 4]).decode()
            except UnicodeDecodeError:
                break
            if queue.qsize() or not self._offer(sink, text):
                break
            at = end
        return at

    def handle_connect(self, event) -> None:  # type: ignore[no-untyped-def]
        super().handle_connect(event)
        scope = getattr(self, "scope", None)
        if scope is not None:  # the upgrade was accepted; the app's task has not run yet
            scope["extensions"][FRAME_SINK] = self._set_sink

    def _set_sink(self, sink: Callable[[str], bool] | None) -> None:
        self.frame_sink = sink

    def send_receive_event_to_app(self) -> None:
        sink = self.frame_sink
        if (sink is not None and self.curr_msg_data_type == "text" and len(self.frames) == 1
                and not self.close_sent and not self.queue.qsize()):
            try:
                text = self.frames[0].decode()
            except UnicodeDecodeError:
                text = None  # the queued path says so and closes with 1007
            if text is not None and self._offer(sink, text):
                self.frames = []
                return
        super().send_receive_event_to_app()

    def _offer(self, sink: Callable[[str], bool], text: str) -> bool:
        """The sink's answer; a sink that raises (it must not) has the message queued, and the app's
        loop then handles it, instead of the exception tearing the connection down with no close."""
        try:
            return sink(text)
        except Exception:
            self.logger.exception("frame sink failed; the message goes through the ASGI queue")
            return False
