"""What one simulated call is asked to do (``SimConfig``) and what happened on it (``SimResult``).

Also the numbers of Twilio's side of the line: 8 kHz μ-law, one 20 ms frame of 160 bytes, the
10-minute cap on the playback buffer.

When the caller speaks and hangs up: ``SimConfig.speak_at_s`` / ``tail_s`` give fixed times;
``None`` makes the caller behave like a person on a real line (what ``callscribe simulate``
does by default): it listens to the greeting before its audio starts, and after its audio it
keeps the line open — sending silence, as a phone line does — until the assistant has finished
speaking (``wait_verdict``: nothing left in the playback buffer and nothing new for ``quiet_s``,
on the stream and the wall clock), at most ``max_wait_s`` each time. ``duration_s`` instead
ends the call at a fixed length, whatever the waits say.

Nothing here does I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["SimConfig", "SimResult", "RATE", "FRAME_MS", "FRAME_BYTES", "ULAW_SILENCE", "MAX_BUFFER_BYTES",
           "LOG_LIMIT"]

RATE = 8000
FRAME_MS = 20
FRAME_BYTES = 160  # 20 ms of 8 kHz μ-law
ULAW_SILENCE = 0xFF
MAX_BUFFER_BYTES = 10 * 60 * RATE  # Twilio: > 10 min buffered → 31931 "Media Discarded"
LOG_LIMIT = 100_000


@dataclass
class SimConfig:
    """One simulated call. Audio arrays are int16 mono 8 kHz (see ``load_wav_8k``)."""

    base_url: str  # e.g. http://127.0.0.1:8000 — where /voice and /status are
    caller_audio: np.ndarray | None  # the caller's voice (inbound track); None = silence
    outbound_audio: np.ndarray | None = None
    duration_s: float | None = None  # total call length: the call ends then, whatever the waits say
    # After the caller's audio: seconds of silence before hanging up; None = wait like a caller
    # who listens to the end: until the assistant has finished speaking (see ``wait_verdict``).
    tail_s: float | None = 1.0
    # When the caller's audio starts (stream seconds after the first frame); None = once the
    # assistant's greeting has finished (the same rule). Listen mode has no greeting: 0.
    speak_at_s: float | None = 0.0
    quiet_s: float = 2.0  # "finished": nothing left to play and the line quiet this long
    max_wait_s: float = 30.0  # cap on each wait (stream seconds)
    speed: float = 1.0
    auth_token: str | None = None
    call_sid: str | None = None  # default: random "CA" + 32 hex
    from_number: str = "+15005550006"
    to_number: str = "+15005550001"
    first_timestamp_ms: int = 120
    dtmf: list[tuple[float, str]] | tuple = ()
    stream_url: str | None = None
    gaps: list[tuple[float, float]] | tuple = ()
    send_stop: bool = True
    extra_params: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    status_callback: bool = True
    mode: str = "auto"  # "auto" (from TwiML), or "connect"/"listen" to insist on one
    account_sid: str | None = None  # default: random "AC" + 32 hex
    stream_sid: str | None = None  # default: random "MZ" + 32 hex
    http_timeout_s: float = 15.0  # Twilio's webhook timeout
    close_timeout_s: float = 5.0


@dataclass
class SimResult:
    """What happened on the call, as the caller and Twilio saw it."""

    call_sid: str
    stream_sid: str
    mode: str  # "connect" (bidirectional) or "listen" (<Start><Stream>)
    twiml: str
    frames_sent: int  # media messages sent (both tracks in listen mode)
    heard: np.ndarray  # int16 8 kHz, index = stream ms * 8: what the caller heard
    marks_echoed: list[str]  # every mark echoed, in order (played or cleared)
    marks_cleared: list[str]  # the subset echoed because of a clear
    clears: int
    closed_by_server: bool
    close_code: int | None
    close_reason: str | None
    media_received_bytes: int
    custom_parameters: dict
    account_sid: str = ""
    tracks: list[str] = field(default_factory=list)
    twiml_stream_url: str = ""  # URL from the TwiML (what was signed)
    connected_url: str = ""  # URL actually dialled
    messages_sent: int = 0  # every text frame, connected/start/stop included
    last_sequence_number: int = 0
    stop_sent: bool = False
    dtmf_sent: list[str] = field(default_factory=list)
    marks_received: list[str] = field(default_factory=list)
    # (name, stream ms when the server's mark arrived, stream ms when it was echoed, cleared?)
    mark_log: list[tuple[str, int, int, bool]] = field(default_factory=list)
    # (stream ms when a server media message arrived, stream ms its playback starts, bytes);
    # capped at LOG_LIMIT entries so a three-hour call does not hoard memory
    media_log: list[tuple[int, float, int]] = field(default_factory=list)
    clear_log: list[int] = field(default_factory=list)  # stream ms of each clear
    events_received: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)  # one line per kind, with a count
    warning_counts: dict[str, int] = field(default_factory=dict)
    stream_duration_ms: int = 0  # stream clock at hang-up
    speech_start_ms: int | None = None  # stream ms of the caller audio's first frame
    speech_end_ms: int | None = None  # stream ms just after its last frame
    # ("greeting" | "tail", stream ms waited, "quiet" | "max-wait" | "closed"): each wait for the assistant
    waits: list[tuple[str, int, str]] = field(default_factory=list)
    voice_status: int = 0
    status_callback_status: int | None = None

    @property
    def heard_seconds(self) -> float:
        return len(self.heard) / RATE

    def warn(self, kind: str, text: str) -> None:
        """Count a warning of ``kind``; keep its text the first time only (``warnings`` has one line a kind)."""
        n = self.warning_counts.get(kind, 0)
        self.warning_counts[kind] = n + 1
        if n == 0:
            self.warnings.append(text)
