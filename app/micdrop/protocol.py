"""The Micdrop browser-call protocol (client 2.2.x), both ways, as plain functions and a state machine.

Client → server: the first text frame is the params (a JSON object, sent on every (re)connect);
then the bare text commands ``StartSpeaking``, ``StopSpeaking`` and ``Mute``, and binary frames of
PCM16 LE mono 16 kHz audio, which belong to a turn only between StartSpeaking and StopSpeaking.
Unknown text is ignored (the reference server does the same).

Server → client: ``Message <json>`` (one space after the keyword) for each user or assistant turn,
the bare ``CancelLastUserMessage``, ``SkipAnswer`` (the client stays "processing" until it gets
audio or this) and ``EndCall`` (the client does not hang up by itself), and binary PCM16 16 kHz
audio with an even byte length (an odd frame is dropped by the client).

Refusals happen *after* the socket was accepted, with the protocol's close codes (4400 bad
params, 4401 unauthorised, 4404 unknown): a refused upgrade looks like 1006 to the browser, and the
client then reconnects every second forever. 1011 (and other 1001–1010, 4xxx codes) also make it
reconnect, so they are kept for faults worth a retry.

Params are the client app's own. ``authorization`` is taken apart and never kept; every other
entry must be a short string, number or boolean, and names that look like secrets are dropped,
so what is kept can go into the call's journal.
"""

from __future__ import annotations

import enum
import json
import re
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "RATE", "PARAMS_TIMEOUT_S", "BAD_REQUEST", "UNAUTHORIZED", "NOT_FOUND", "MicdropError", "Params", "Command",
    "Audio", "Ignored", "ClientEvent", "MicdropProtocol", "State", "parse_params", "message", "CANCEL_LAST_USER_MESSAGE",
    "SKIP_ANSWER", "END_CALL",
]

RATE = 16_000  # Hz, both ways
PARAMS_TIMEOUT_S = 3.0  # the reference server's wait for the params frame
MAX_PARAMS_BYTES = 4096
MAX_PARAMS = 32
MAX_PARAM_CHARS = 256

# Close codes the client treats as final (it stops and does not reconnect).
BAD_REQUEST = 4400
UNAUTHORIZED = 4401
NOT_FOUND = 4404

CANCEL_LAST_USER_MESSAGE = "CancelLastUserMessage"
SKIP_ANSWER = "SkipAnswer"
END_CALL = "EndCall"

_SECRET_NAME = re.compile(r"(auth|token|secret|password|passwd|key|cookie|session)", re.I)


class MicdropError(Exception):
    """A refusal: close the socket with ``code`` and the message as reason (under 123 bytes)."""

    def __init__(self, message: str, code: int = BAD_REQUEST) -> None:
        super().__init__(message[:120])
        self.code = code


class Command(str, enum.Enum):
    START_SPEAKING = "StartSpeaking"
    STOP_SPEAKING = "StopSpeaking"
    MUTE = "Mute"


@dataclass(frozen=True)
class Params:
    authorization: str | None  # "Bearer <key>" or a browser-call token; never journaled
    public: dict[str, str | int | float | bool] = field(default_factory=dict)  # safe to keep


@dataclass(frozen=True)
class Audio:
    pcm: bytes  # PCM16 LE mono at RATE, even length, inside a turn


@dataclass(frozen=True)
class Ignored:
    why: str  # audio outside a turn, unknown text, an empty frame


ClientEvent = Params | Command | Audio | Ignored


class State(enum.Enum):
    AWAIT_PARAMS = "awaiting params"
    LISTENING = "listening"  # between turns
    SPEAKING = "speaking"  # between StartSpeaking and StopSpeaking
    CLOSED = "closed"


def parse_params(text: str | bytes) -> Params:
    """The first frame → Params. Raises MicdropError(4400) saying what is accepted."""
    if isinstance(text, (bytes, bytearray)):
        raise MicdropError("params must be the first frame, as JSON text, before any audio")
    if len(text.encode()) > MAX_PARAMS_BYTES:
        raise MicdropError(f"params over {MAX_PARAMS_BYTES} bytes")
    try:
        obj: Any = json.loads(text)
    except (ValueError, RecursionError):
        raise MicdropError("params are not JSON: send a JSON object as the first text frame") from None
    if not isinstance(obj, dict):
        raise MicdropError("params must be a JSON object")
    if len(obj) > MAX_PARAMS:
        raise MicdropError(f"params have more than {MAX_PARAMS} entries")
    auth = obj.get("authorization")
    if auth is not None and not isinstance(auth, str):
        raise MicdropError("params.authorization must be a string: 'Bearer <key>' or a browser-call token")
    public: dict[str, str | int | float | bool] = {}
    for k, v in obj.items():
        if k == "authorization" or _SECRET_NAME.search(k):
            continue  # secrets are used, never kept
        if not isinstance(v, (str, int, float, bool)) or (isinstance(v, str) and len(v) > MAX_PARAM_CHARS):
            raise MicdropError(f"params.{k[:40]} must be a string of at most {MAX_PARAM_CHARS} characters, "
                               "a number or a boolean")
        public[k[:64]] = v
    return Params(auth, public)


def message(role: str, content: str, metadata: dict[str, Any] | None = None) -> str:
    """``Message <json>`` for the client's conversation (roles: user, assistant, system)."""
    body: dict[str, Any] = {"role": role, "content": content}
    if metadata:
        body["metadata"] = metadata
    return "Message " + json.dumps(body, ensure_ascii=False, separators=(",", ":"))


class MicdropProtocol:
    """One browser call's socket: what each frame from the client means, and what we may send."""

    def __init__(self) -> None:
        self.state = State.AWAIT_PARAMS
        self.params: Params | None = None
        self.turn_bytes = 0  # audio bytes received in the current turn

    def receive(self, frame: str | bytes) -> ClientEvent:
        """One frame from the client. Raises MicdropError for bad params (close with its code)."""
        if self.state is State.CLOSED:
            return Ignored("socket closed")
        if self.state is State.AWAIT_PARAMS:
            self.params = parse_params(frame)
            self.state = State.LISTENING
            return self.params
        if isinstance(frame, (bytes, bytearray)):
            if self.state is not State.SPEAKING:
                return Ignored("audio outside a turn (the client sends it only after StartSpeaking)")
            pcm = bytes(frame[: len(frame) - len(frame) % 2])  # a stray odd byte cannot be a sample
            if not pcm:
                return Ignored("empty audio frame")
            self.turn_bytes += len(pcm)
            return Audio(pcm)
        try:
            command = Command(frame)
        except ValueError:
            return Ignored("unknown text")
        if command is Command.START_SPEAKING:
            self.state = State.SPEAKING
            self.turn_bytes = 0
        else:
            self.state = State.LISTENING
        return command

    def send_text(self, text: str) -> str:
        """A text frame for the client; refuses before the params were accepted or after close."""
        self._check_open()
        return text

    def send_audio(self, pcm: bytes) -> bytes:
        """Assistant audio (PCM16 16 kHz) as a binary frame with an even, non-zero length."""
        self._check_open()
        if len(pcm) % 2 or not pcm:
            raise ValueError("assistant audio frames must be whole PCM16 samples (even, non-zero length)")
        return pcm

    def close(self) -> None:
        self.state = State.CLOSED

    def _check_open(self) -> None:
        if self.state in (State.AWAIT_PARAMS, State.CLOSED):
            raise RuntimeError(f"cannot send while {self.state.value}")
