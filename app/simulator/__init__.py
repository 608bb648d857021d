"""A Twilio emulator: places one simulated call against a Callscribe (or any Twilio-compatible) server.

Used by ``callscribe simulate`` and by the end-to-end tests. It never talks to Twilio.

What it does, in the order Twilio does it (see ``shared/reference/twilio-media-streams.md``),
and where each step lives:

1. ``POST {base_url}/voice`` with Twilio's form, headers and signature — ``webhooks``.
2. Reads the TwiML: ``<Connect><Stream>`` → bidirectional "connect" mode; ``<Start><Stream>``
   → unidirectional "listen" mode; picks the URL to dial — ``twiml``.
3. Opens the WebSocket, signed over the TwiML's stream URL, and streams the call on its clock:
   ``connected``, ``start``, a ``media`` frame every 20 ms, ``dtmf``, mark echoes, ``stop`` and
   a normal close — ``call`` (the call from ring to hang-up), ``stream`` (the socket's loop),
   ``wire`` (the JSON messages both ways, pure).
4. Plays what the server sends (connect mode) on the stream clock, as Twilio's playback buffer
   does, into ``SimResult.heard`` at index ``stream_ms * 8`` — ``playback`` (pure).
5. ``POST {base_url}/status`` with ``CallStatus=completed`` — ``webhooks``.

When the caller speaks and when it hangs up (fixed times, or waits like a person who listens
to the assistant) is set in ``config`` (``SimConfig``) and decided by ``wait`` (pure).
``files`` reads and writes 8 kHz WAV and waits for the server to have written the call's
files; ``cli`` is ``callscribe simulate``. Errors are in ``errors``.
"""

from __future__ import annotations

from app.simulator.call import run_call
from app.simulator.cli import add_arguments, main_from_args
from app.simulator.config import SimConfig, SimResult
from app.simulator.errors import HandshakeError, SimulatorError
from app.simulator.files import FilesNotReady, load_wav_8k, wait_for_call_files
from app.simulator.twiml import parse_twiml
from app.simulator.wait import wait_verdict

__all__ = [
    "SimConfig",
    "SimResult",
    "SimulatorError",
    "HandshakeError",
    "run_call",
    "parse_twiml",
    "load_wav_8k",
    "add_arguments",
    "main_from_args",
    "wait_verdict",
    "wait_for_call_files",
    "FilesNotReady",
]
