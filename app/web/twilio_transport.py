"""The call session's way out to a Twilio Media Stream (`TwilioTransport`): PCM → μ-law media, marks,
clear, close, through the stream's shell (app.web.media_stream), which owns the socket and the protocol."""

from __future__ import annotations

from typing import TYPE_CHECKING

from app.audio import mulaw
from app.twilio.events import SendClear, SendMark, SendMedia

if TYPE_CHECKING:
    from app.web.media_stream import _StreamShell

__all__ = ["RATE", "TwilioTransport"]

RATE = 8000  # Media Streams carry 8 kHz μ-law both ways


class TwilioTransport:
    """The call session's way out to a Twilio Media Stream: PCM → μ-law media, marks, clear, close."""

    rate = RATE

    def __init__(self, shell: "_StreamShell") -> None:
        self._shell = shell
        self._encoded: tuple[bytes, bytes] | None = None  # (pcm, its μ-law): as_heard's work, reused by send_audio

    def _ulaw(self, pcm: bytes) -> bytes:
        if self._encoded is None or self._encoded[0] is not pcm:
            self._encoded = (pcm, mulaw.encode_bytes(pcm))
        return self._encoded[1]

    def as_heard(self, pcm: bytes) -> bytes:
        """What the caller hears of it: G.711 μ-law is lossy (the recording holds the line's audio)."""
        return mulaw.decode_bytes(self._ulaw(pcm))

    async def send_audio(self, pcm: bytes, at: int) -> None:
        await self._shell.send_command(SendMedia(self._ulaw(pcm)))  # Twilio plays it in order: `at` is implied

    async def mark(self, name: str) -> None:
        await self._shell.send_command(SendMark(name))

    async def clear(self) -> None:
        await self._shell.send_command(SendClear())

    async def close(self, code: int, reason: str) -> None:
        await self._shell.close(code, reason)

    def said(self, role: str, text: str) -> None:
        """A phone shows no transcript."""

    def no_reply(self) -> None:
        """A phone caller waits for nothing: silence says it."""
