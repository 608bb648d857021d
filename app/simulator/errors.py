"""The simulator's errors: a call that could not be placed as Twilio would place it.

::

    SimulatorError         bad webhook answer, TwiML, settings…   (``callscribe simulate`` exits 1)
     └── HandshakeError    the WebSocket upgrade refused or failed (Twilio error 31920 and friends)

``FilesNotReady`` (in ``files``) is not one of them: the call went through, its files did not appear.
"""

from __future__ import annotations

__all__ = ["SimulatorError", "HandshakeError"]


class SimulatorError(RuntimeError):
    """The call could not be placed as Twilio would (bad webhook answer, TwiML, handshake…)."""


class HandshakeError(SimulatorError):
    """The WebSocket upgrade was refused or failed (Twilio error 31920 and friends)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status
