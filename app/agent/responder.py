"""Responders: what the assistant says. Re-exports the two implementations.

- :class:`~app.agent.receptionist.ReceptionistResponder`: offline, rule-based message taker (default)
- :class:`~app.agent.chat.ChatResponder`: an OpenAI-compatible chat model, streamed by sentence

Both follow :class:`app.agent.interfaces.Responder`; ``make_responder`` picks one by setting name.
"""

from __future__ import annotations

import httpx

from app.agent.chat import DEFAULT_SYSTEM_PROMPT, ChatResponder, says_goodbye
from app.agent.interfaces import Responder
from app.agent.receptionist import ReceptionistResponder

__all__ = ["DEFAULT_SYSTEM_PROMPT", "ChatResponder", "ReceptionistResponder", "make_responder", "says_goodbye"]


def make_responder(
    name: str = "local",
    *,
    client: httpx.AsyncClient | None = None,
    base_url: str = "https://api.openai.com",
    api_key: str = "",
    model: str = "gpt-4o-mini",
    system_prompt: str = DEFAULT_SYSTEM_PROMPT,
    business_name: str = "our office",
    assistant_name: str = "Jarvis",
    opening_hours: str = "Monday to Friday, 9am to 5pm",
) -> Responder:
    """A new responder (one per call: they hold dialogue state). ``name``: "local" or "openai"."""
    if name in ("local", "receptionist"):
        return ReceptionistResponder(business_name, assistant_name, opening_hours)
    if name == "openai":
        if client is None:
            raise ValueError("the 'openai' responder needs an httpx.AsyncClient")
        greeting = f"Thank you for calling {business_name}. This is {assistant_name}. How can I help you today?"
        return ChatResponder(client, base_url, api_key, model, system_prompt, greeting_text=greeting)
    raise ValueError(f"unknown responder {name!r}; accepted: 'local', 'openai'")
