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
"""

from __future__ import annotations

from collections.abc import Callable

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

__all__ = ["FRAME_SINK", "FrameSinkProtocol"]

FRAME_SINK = "callscribe.frame_sink"


class FrameSinkProtocol(WebSocketsSansIOProtocol):
    frame_sink: Callable[[str], bool] | None = None

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
            if text is not None and sink(text):
                self.frames = []
                return
        super().send_receive_event_to_app()
