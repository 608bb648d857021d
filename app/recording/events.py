"""The recorder's event API for people who embed Callscribe, with the names voice developers know.

    class MyEvents(RecordingEvents):
        def on_turn_audio(self, call_sid, role, index, text, audio, sample_rate): ...   # one per message
        def on_track_audio_data(self, call_sid, track, audio, sample_rate): ...         # every N bytes
        def on_audio_data(self, call_sid, audio, sample_rate): ...                      # mixed, every N bytes
        def on_complete(self, call_sid, result): ...                                    # at hang-up

    create_app(settings, events=MyEvents(), chunk_bytes=32000)

Audio is int16 mono numpy read back from the call's masters for just that span: nothing of the
call is kept in memory to serve these events, however long it is. `on_complete` gets the call's
JSON (turns with times, files, stats), not the audio. Handlers run on the event loop: keep them
quick, or hand the work to a thread. A handler that raises is logged and ignored.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from app.recording.track import read_block

__all__ = ["RecordingEvents", "read_span"]

log = logging.getLogger("callscribe.events")


class RecordingEvents:
    """Override what you need; every method is optional."""

    def on_turn_audio(self, call_sid: str, role: str, index: int, text: str, audio: np.ndarray,
                      sample_rate: int) -> None: ...

    def on_track_audio_data(self, call_sid: str, track: str, audio: np.ndarray, sample_rate: int) -> None: ...

    def on_audio_data(self, call_sid: str, audio: np.ndarray, sample_rate: int) -> None: ...

    def on_complete(self, call_sid: str, result: dict[str, Any]) -> None: ...


def read_span(master: Path, start: int, stop: int) -> np.ndarray:
    """Samples [start, stop) of a master file (silence past its end)."""
    fd = os.open(master, os.O_RDONLY)
    try:
        return read_block(fd, max(0, start), max(0, stop - max(0, start)))
    finally:
        os.close(fd)


def emit(handler: Any, name: str, *args: Any) -> None:
    fn = getattr(handler, name, None)
    if fn is None:
        return
    try:
        fn(*args)
    except Exception:
        log.exception("recording event handler %s raised; ignored", name)
