"""What every OpenAI-compatible HTTP provider shares: the endpoint URL and the auth header."""

from __future__ import annotations

__all__ = ["endpoint", "auth_headers"]


def endpoint(base_url: str, path: str) -> str:
    """`https://api.openai.com/` + `/v1/audio/speech` → one URL, whatever the slashes."""
    return base_url.rstrip("/") + path


def auth_headers(api_key: str) -> dict[str, str]:
    """`Authorization: Bearer <key>`, or nothing for a local server that needs no key."""
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}
