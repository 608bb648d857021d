"""Twilio's playback of what the server sends on a bidirectional stream, as pure code.

``PlaybackBuffer`` is the queue Twilio keeps per stream: μ-law bytes (any length) and mark
names, in the order they arrived. It plays 160 bytes per 20 ms slot; a mark is echoed when
playback reaches it, or at once when nothing is buffered; ``clear`` drops the audio and echoes
every pending mark; more than 10 minutes buffered is refused (31931 "Media Discarded").
``HeardAudio`` is the caller's ear: what played, placed at index ``stream_ms * 8``.

Clock model (one 20 ms slot k at stream time ``ts_k = first_timestamp_ms + 20 k``): first the
caller's ear plays slot k from the buffer (``heard[ts_k*8 : ts_k*8+160]``) and marks that
playback reached are echoed; then the inbound frame with ``timestamp = ts_k`` is sent. Audio
the server sends after that starts playing at ``max(ts_k + 20, end of buffer)``.

Nothing here does I/O or keeps time: the stream loop (``stream``) calls ``play`` once a slot and
the other methods as the server's messages arrive, passing the stream clock where it matters.
"""

from __future__ import annotations

from collections import deque

import numpy as np

from app.audio.mulaw import decode as ulaw_decode
from app.simulator.config import FRAME_BYTES, MAX_BUFFER_BYTES

__all__ = ["PlaybackBuffer", "HeardAudio"]


class PlaybackBuffer:
    """Audio and marks from the server, waiting to be played (connect mode)."""

    def __init__(self, max_bytes: int = MAX_BUFFER_BYTES) -> None:
        self._items: deque[bytes | str] = deque()  # μ-law bytes and mark names, in arrival order
        self._head_offset = 0  # bytes of the first item already played
        self._bytes = 0  # unplayed audio
        self._max_bytes = max_bytes
        self._arrivals: dict[str, list[int]] = {}  # mark name → arrival stream ms (FIFO per name)

    @property
    def queued_bytes(self) -> int:
        """Audio not played yet, in bytes (8 a millisecond)."""
        return self._bytes

    @property
    def pending(self) -> bool:
        """Whether audio or marks are still waiting to be played."""
        return bool(self._items)

    def add_audio(self, audio: bytes) -> float | None:
        """Queue ``audio``; return in how many ms it starts to play, or None when refused (31931).

        Refused: it would take the buffer past ``max_bytes`` (Twilio's 10 minutes). Nothing is
        queued then.
        """
        if self._bytes + len(audio) > self._max_bytes:
            return None
        delay_ms = self._bytes / 8
        self._items.append(audio)
        self._bytes += len(audio)
        return delay_ms

    def add_mark(self, name: str, now_ms: int) -> bool:
        """A mark arrived at stream ms ``now_ms``.

        Returns True when it is queued behind audio (``play`` returns it when playback reaches
        it), False when nothing is buffered: the caller echoes it at once.
        """
        self._arrivals.setdefault(name, []).append(now_ms)
        if self._bytes == 0:
            return False
        self._items.append(name)
        return True

    def arrival(self, name: str, now_ms: int) -> int:
        """The stream ms at which the mark now being echoed arrived (``now_ms`` if it never did)."""
        waiting = self._arrivals.get(name)
        return waiting.pop(0) if waiting else now_ms

    def play(self, nbytes: int = FRAME_BYTES) -> tuple[bytes, list[str]]:
        """Play one slot: up to ``nbytes`` of audio, and the marks playback reached.

        A mark right after the last byte played is reached in the same slot, so the buffer
        never ends a slot with a mark at its head.
        """
        reached: list[str] = []
        need = nbytes
        out = bytearray()
        while self._items:
            head = self._items[0]
            if isinstance(head, str):
                self._items.popleft()
                reached.append(head)
                continue
            if need == 0:
                break
            take = min(need, len(head) - self._head_offset)
            out += head[self._head_offset : self._head_offset + take]
            self._head_offset += take
            need -= take
            self._bytes -= take
            if self._head_offset >= len(head):
                self._items.popleft()
                self._head_offset = 0
        return bytes(out), reached

    def clear(self) -> list[str]:
        """Twilio's ``clear``: drop all audio; return the pending marks, to be echoed now in order."""
        pending = [item for item in self._items if isinstance(item, str)]
        self._items.clear()
        self._head_offset = 0
        self._bytes = 0
        return pending


class HeardAudio:
    """What the caller heard: int16 at 8 kHz, index = stream ms * 8, grown as the call goes on."""

    def __init__(self) -> None:
        self._pcm = np.zeros(0, np.int16)

    def reserve(self, n: int) -> None:
        """Make room for ``n`` samples (doubling, so a long call grows in few steps)."""
        if len(self._pcm) < n:
            grown = np.zeros(max(n, 2 * len(self._pcm)), np.int16)
            grown[: len(self._pcm)] = self._pcm
            self._pcm = grown

    def write(self, pos: int, ulaw: bytes) -> None:
        """Place μ-law audio at sample ``pos``, as far as the room reserved goes."""
        end = min(len(self._pcm), pos + len(ulaw))
        if end > pos:
            self._pcm[pos:end] = ulaw_decode(ulaw[: end - pos])

    def until(self, n: int) -> np.ndarray:
        """The first ``n`` samples, silence where nothing was written."""
        heard = self._pcm[:n]
        return np.concatenate([heard, np.zeros(n - len(heard), np.int16)])
