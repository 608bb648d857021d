"""Why a call ended: one name for each reason, written into the call's summary and JSON as its text."""

from __future__ import annotations

import enum

__all__ = ["EndReason"]


class EndReason(str, enum.Enum):
    CALLER_HUNG_UP = "caller hung up (stop)"
    CALLER_DISCONNECTED = "caller disconnected without stop"
    BROWSER_HUNG_UP = "caller ended the browser call"
    BROWSER_LOST = "browser connection lost and not resumed in time"
    ASSISTANT_HUNG_UP = "assistant hung up"
    LONGEST_CALL = "longest call reached"
    LONGEST_CALL_WALL = "longest call reached (wall clock)"
    SERVER_SHUTDOWN = "server shutdown"
    REFUSED = "refused"
    NO_START = "no start message in time"
    MESSAGE_TOO_LARGE = "message too large"
    TOO_MANY_INVALID = "too many invalid messages"
    PROTOCOL_ERROR = "protocol error"
    INTERNAL_PARSE_ERROR = "internal error parsing a message"
    INTERNAL_ERROR = "internal error recording a frame"

    def __str__(self) -> str:
        return self.value
