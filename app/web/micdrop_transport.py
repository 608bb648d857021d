"""The call session's way out to a browser (Micdrop protocol): paced PCM16, emulated marks, EndCall.

A browser plays what it receives at once (after a 100 ms prebuffer) and says nothing about what
it played. So this transport keeps the line's clock itself:

* **Pacing.** Audio is queued with the sample where the recording placed it and sent only once it
  is due within ``LEAD_S`` of the call's clock: the first burst of an utterance is ``LEAD_S`` of
  audio (≥ the client's 100 ms prebuffer, so it starts playing at once), then one ``FRAME_S``
  frame at a time as the clock moves. The client's buffer never holds more than ``LEAD_S``, so
  when it stops playing (a barge-in, a dropped socket) the recording's cut at the clock is what
  it played, to within that.
* **Marks.** A mark "echoes" when the call's clock passes the end of the audio before it — the
  moment the client finished playing it.
* **Barge-in.** While the caller speaks (StartSpeaking … StopSpeaking) the client drops assistant
  audio, so nothing is sent; the assistant's clear then drops the queue.
* **Ending.** Our side ending the call normally (the assistant's goodbye, the longest call)
  sends ``EndCall`` once the queued audio has played, and closes with 1000 only if the client has
  not closed by itself ``CLOSE_AFTER_END_S`` later (closing at once would cut the goodbye).
  A server shutdown closes with 1012, which makes the client stop without reconnecting.

The transport outlives a socket: a reconnect attaches a new one (``attach``); while none is
attached, text and audio for the client are dropped (the pacer waits).
"""

from __future__ import annotations

import asyncio
import heapq
import logging
from collections import deque
from collections.abc import Awaitable, Callable

from app import close_codes
from app.micdrop import protocol as micdrop

__all__ = ["MicdropTransport", "Socket", "FRAME_S", "LEAD_S"]

log = logging.getLogger("callscribe.webcall")

FRAME_S = 0.1  # seconds of audio per binary frame (the client's own chunk size)
LEAD_S = 0.2  # how far ahead of the clock audio is sent (≥ the client's 100 ms prebuffer)
END_GRACE_S = 0.3  # after the last audio's scheduled end, before EndCall (the client's output latency)
CLOSE_AFTER_END_S = 3.0  # after EndCall, close ourselves if the client has not


class Socket:
    """What the transport needs of one WebSocket connection."""

    def __init__(self, send_text: Callable[[str], Awaitable[None]], send_bytes: Callable[[bytes], Awaitable[None]],
                 close: Callable[[int, str], Awaitable[None]]) -> None:
        self.send_text = send_text
        self.send_bytes = send_bytes
        self.close = close


class MicdropTransport:
    rate = micdrop.RATE

    def __init__(self, now: Callable[[], int]) -> None:
        self._now = now  # the call's clock (samples)
        self.on_mark: Callable[[str], None] = lambda name: None  # the session's, set once it exists
        self._frame = int(FRAME_S * self.rate)
        self._lead = int(LEAD_S * self.rate)
        self._texts: deque[str] = deque()  # text frames, sent before any audio due with them
        self._audio: deque[tuple[int, bytes]] = deque()  # (sample where it plays, PCM16) in play order
        self._marks: list[tuple[int, int, str]] = []  # heap of (sample it echoes at, order, name)
        self._order = 0
        self._end = 0  # where the last queued audio ends (samples)
        self._socket: Socket | None = None
        self._caller_speaking = False
        self._ending: tuple[int, str] | None = None  # our close (code, reason), once the audio has played
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopped = False
        self.frames_sent = 0

    # ------------------------------------------------------------------ the socket
    def attach(self, socket: Socket) -> None:
        self._socket = socket
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._pace(), name="micdrop-pacer")
        self._wake.set()

    def detach(self) -> None:
        self._socket = None
        self._texts.clear()

    @property
    def attached(self) -> bool:
        return self._socket is not None

    def caller_speaking(self, speaking: bool) -> None:
        """StartSpeaking / StopSpeaking: the client drops assistant audio while the caller speaks."""
        self._caller_speaking = speaking
        self._wake.set()

    async def stop(self) -> None:
        """The call is over: stop pacing (what was not sent is not sent). The flag as well as the
        cancel: a cancel can be lost below us (app/cancellation.py says how), and the pacer must not
        go on waiting for a wake-up that never comes."""
        self._stopped = True
        self._wake.set()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    # ------------------------------------------------------------------ CallTransport
    def as_heard(self, pcm: bytes) -> bytes:
        return pcm  # PCM16 end to end: the client hears exactly this

    async def send_audio(self, pcm: bytes, at: int) -> None:
        step = 2 * self._frame
        for i in range(0, len(pcm), step):
            self._audio.append((at + i // 2, pcm[i:i + step]))
        self._end = max(self._end, at + len(pcm) // 2)
        self._wake.set()

    async def mark(self, name: str) -> None:
        self._order += 1
        heapq.heappush(self._marks, (max(self._end, self._now()), self._order, name))
        self._wake.set()

    async def clear(self) -> None:
        self._audio.clear()
        self._marks.clear()  # their utterance was recorded as interrupted: echoes would prove nothing
        self._end = min(self._end, self._now())
        self._wake.set()

    async def close(self, code: int, reason: str) -> None:
        if code == close_codes.NORMAL and self._socket is not None:
            self._ending = (code, reason)  # EndCall once the queued audio has played
            self._wake.set()
            return
        if code == close_codes.GOING_AWAY:
            code = close_codes.SERVICE_RESTART  # the client stops instead of reconnecting to a dying server
        await self._close_now(code, reason)

    def said(self, role: str, text: str) -> None:
        self.notice(micdrop.message("user" if role == "caller" else "assistant", text))

    def no_reply(self) -> None:
        self.notice(micdrop.SKIP_ANSWER)

    # ------------------------------------------------------------------ sending
    async def close_socket(self, code: int, reason: str) -> None:
        """Close the attached socket (the call goes on, waiting for another)."""
        await self._close_now(code, reason)

    def notice(self, text: str) -> None:
        """A text frame for the client now, in order with everything else sent (dropped when no
        socket is attached: a reconnecting client keeps its conversation)."""
        if self._socket is not None:
            self._texts.append(text)
            self._wake.set()

    async def _send(self, send: Callable, data) -> None:
        try:
            await send(data)
        except Exception as exc:  # the socket is going: its reader notices and handles it
            log.debug("web call: send failed (%s)", type(exc).__name__)

    async def _close_now(self, code: int, reason: str) -> None:
        sock, self._socket = self._socket, None
        if sock is not None:
            await self._send(lambda _: sock.close(code, reason[:120]), None)

    async def _pace(self) -> None:
        while not self._stopped:
            self._wake.clear()  # before the work: what is queued while it awaits wakes the wait below
            now = self._now()
            while self._marks and self._marks[0][0] <= now:
                self.on_mark(heapq.heappop(self._marks)[2])
            sock = self._socket
            while sock is not None and self._texts:
                await self._send(sock.send_text, self._texts.popleft())
            if sock is not None and not self._caller_speaking:
                while self._audio and self._audio[0][0] < now + self._lead:
                    await self._send(sock.send_bytes, self._audio.popleft()[1])
                    self.frames_sent += 1
            if self._ending is not None and not self._audio and not self._marks and now >= self._end:
                await self._end_call()
                return
            if self._stopped:
                return
            wait = self._next_wait(self._now())
            try:
                async with asyncio.timeout(wait):
                    await self._wake.wait()
            except TimeoutError:
                pass

    def _next_wait(self, now: int) -> float | None:
        due = []
        if self._marks:
            due.append(self._marks[0][0])
        if self._audio and self._socket is not None and not self._caller_speaking:
            due.append(self._audio[0][0] - self._lead + 1)
        if self._ending is not None:
            due.append(self._end)
        if not due:
            return None
        return max(0.005, (min(due) - now) / self.rate)

    async def _end_call(self) -> None:
        await asyncio.sleep(END_GRACE_S)
        sock = self._socket
        if sock is None:
            return
        await self._send(sock.send_text, micdrop.END_CALL)
        await asyncio.sleep(CLOSE_AFTER_END_S)
        if self._socket is sock and self._ending is not None:
            await self._close_now(*self._ending)
