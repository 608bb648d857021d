"""ChatResponder: an OpenAI-compatible chat model as the responder, streamed sentence by sentence.

``POST {base_url}/v1/chat/completions`` with ``stream: true``; the answer is server-sent events,
one ``data: {json}`` line per delta, ending with ``data: [DONE]``. Deltas are joined and cut
into sentences (``sentences.SentenceBuffer``); each sentence is yielded as soon as it is
complete, so speech starts before the model has finished.

End-of-call rule: the reply ends the call when its **last sentence contains the word
"goodbye" or "bye"** (case-insensitive, whole word: "Goodbye!", "Bye for now."). The system
prompt always gets a line telling the model to say "Goodbye" only when the conversation is over,
so the rule and the model agree. The history sent is what the caller actually heard
(interrupted replies are cut to their heard sentences by the session).
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator

import httpx

from app.agent.http import auth_headers, endpoint
from app.agent.errors import ProviderError
from app.agent.interfaces import Message
from app.agent.sentences import SentenceBuffer

__all__ = ["DEFAULT_SYSTEM_PROMPT", "ChatResponder", "says_goodbye"]

DEFAULT_SYSTEM_PROMPT = (
    "You are a friendly, concise receptionist answering a phone call. Speak in short, plain "
    "sentences without lists, markdown or emoji; your words are read aloud."
)
_GOODBYE_INSTRUCTION = (
    "When the caller wants to end the call, answer with a short farewell whose last sentence "
    'contains the word "Goodbye". Never say "goodbye" or "bye" otherwise.'
)
_GOODBYE = re.compile(r"\b(?:good\s*-?\s*bye|bye)\b", re.IGNORECASE)


def says_goodbye(sentences: list[str]) -> bool:
    """The end-of-call rule: the last sentence contains "goodbye"/"bye" as a word."""
    return bool(sentences) and bool(_GOODBYE.search(sentences[-1]))


class ChatResponder:
    """Responder backed by a streaming chat-completions API.

    Args:
        client: shared ``httpx.AsyncClient`` (tests inject ``httpx.MockTransport``).
        base_url: API origin without ``/v1``.
        api_key: sent as ``Authorization: Bearer``.
        model: chat model name.
        system_prompt: the assistant's instructions (the goodbye rule is appended).
        greeting_text: the fixed first sentence(s) of the call.
        max_history: how many past messages are sent with each request.

    """

    def __init__(
        self,
        client: httpx.AsyncClient,
        base_url: str = "https://api.openai.com",
        api_key: str = "",
        model: str = "gpt-4o-mini",
        system_prompt: str = DEFAULT_SYSTEM_PROMPT,
        *,
        greeting_text: str = "Hello, thank you for calling. How can I help you today?",
        max_history: int = 40,
        timeout: float = 30.0,
    ) -> None:
        self.client = client
        self.url = endpoint(base_url, "/v1/chat/completions")
        self.api_key = api_key
        self.model = model
        self.system_prompt = system_prompt
        self.greeting_text = greeting_text
        self.max_history = max_history
        self.timeout = timeout
        self.ends_call = False
        self._digits: list[str] = []

    def greeting(self) -> str:
        return self.greeting_text

    def notes(self) -> list[str]:
        return ["Keypad: " + "".join(self._digits)] if self._digits else []

    def on_dtmf(self, digit: str) -> None:
        self._digits.append(digit)

    def _messages(self, history: list[Message], caller_text: str) -> list[dict[str, str]]:
        msgs = [{"role": "system", "content": f"{self.system_prompt}\n\n{_GOODBYE_INSTRUCTION}"}]
        if self.greeting_text and not history:
            msgs.append({"role": "assistant", "content": self.greeting_text})
        for m in history[-self.max_history :]:
            if m.text.strip():
                msgs.append({"role": "user" if m.role == "caller" else "assistant", "content": m.text})
        msgs.append({"role": "user", "content": caller_text})
        return msgs

    async def reply(self, history: list[Message], caller_text: str) -> AsyncIterator[str]:
        self.ends_call = False
        body = {"model": self.model, "messages": self._messages(history, caller_text), "stream": True}
        headers = auth_headers(self.api_key)
        buffer = SentenceBuffer()
        said: list[str] = []
        try:
            async with self.client.stream("POST", self.url, json=body, headers=headers, timeout=self.timeout) as resp:
                if resp.status_code >= 400:
                    await resp.aread()
                    raise ProviderError.from_status("chat", resp.status_code, resp.text)
                async for line in resp.aiter_lines():
                    piece = _delta(line)
                    if piece is None:
                        break
                    for sentence in buffer.push(piece):
                        said.append(sentence)
                        yield sentence
        except httpx.HTTPError as exc:
            raise ProviderError(f"chat request failed: {type(exc).__name__}", retryable=True) from exc
        for sentence in buffer.flush():
            said.append(sentence)
            yield sentence
        self.ends_call = says_goodbye(said)


def _delta(line: str) -> str | None:
    """Text carried by one SSE line; ``""`` for lines without text, ``None`` at ``[DONE]``."""
    line = line.strip()
    if not line.startswith("data:"):
        return ""  # blank separators, ": keep-alive" comments, "event:" lines
    data = line[5:].strip()
    if data == "[DONE]":
        return None
    try:
        obj = json.loads(data)
    except ValueError:
        return ""
    if isinstance(obj, dict) and obj.get("error"):
        err = obj["error"]
        raise ProviderError(f"chat stream error: {err.get('message', err) if isinstance(err, dict) else err}")
    choices = obj.get("choices") if isinstance(obj, dict) else None
    if not choices:
        return ""
    return (choices[0].get("delta") or {}).get("content") or ""
