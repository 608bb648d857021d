"""Errors raised by the agent's providers.

    AgentError
    ├── ModelIntegrityError   a local model file is missing or does not match its pinned hash
    └── ProviderError         an HTTP provider (STT/TTS/chat) failed; ``retryable`` for 429/5xx/network

Messages never contain caller audio or transcript text.
"""

from __future__ import annotations

__all__ = ["AgentError", "ModelIntegrityError", "ProviderError"]


class AgentError(Exception):
    """Base class for agent errors."""


class ModelIntegrityError(AgentError):
    """A local model is missing or is not the file we pinned."""


class ProviderError(AgentError):
    """An HTTP provider call failed."""

    def __init__(self, message: str, *, status_code: int | None = None, retryable: bool = False) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.retryable = retryable

    @classmethod
    def from_status(cls, provider: str, status_code: int, body: str = "") -> ProviderError:
        """Build the error for a non-2xx HTTP answer (body trimmed; it is the provider's text)."""
        detail = body.strip().replace("\n", " ")[:200]
        retryable = status_code == 429 or status_code >= 500
        return cls(f"{provider} answered HTTP {status_code}: {detail}", status_code=status_code, retryable=retryable)
