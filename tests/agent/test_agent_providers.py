"""HTTP provider adapters against recorded-shape API answers (httpx.MockTransport, no network)."""

from __future__ import annotations

import io
import json
import wave

import httpx
import numpy as np
import pytest

from app.agent.chat import ChatResponder
from app.agent.errors import ProviderError
from app.agent.interfaces import Message
from app.agent.stt import OpenAISTT
from app.agent.tts import OpenAITTS


def _client(handler) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.MockTransport(handler))


@pytest.mark.asyncio
async def test_openai_stt_posts_multipart_wav_and_returns_text() -> None:
    seen: dict = {}

    def handler(request: httpx.Request) -> httpx.Response:
        seen["method"], seen["url"] = request.method, str(request.url)
        seen["auth"] = request.headers["authorization"]
        seen["ctype"] = request.headers["content-type"]
        seen["body"] = request.read()
        return httpx.Response(200, json={"text": " I'd like to book an appointment. "})

    audio = (np.sin(np.arange(8000) / 5) * 8000).astype(np.int16)
    async with _client(handler) as client:
        stt = OpenAISTT(client, "https://api.example.test/", "sk-test", "whisper-1")
        text = await stt.transcribe(audio)

    assert text == "I'd like to book an appointment."
    assert seen["method"] == "POST" and seen["url"] == "https://api.example.test/v1/audio/transcriptions"
    assert seen["auth"] == "Bearer sk-test"
    assert seen["ctype"].startswith("multipart/form-data; boundary=")
    body = seen["body"]
    assert b'name="model"\r\n\r\nwhisper-1' in body
    assert b'name="language"\r\n\r\nen' in body
    assert b'name="file"; filename="turn.wav"' in body
    wav_start = body.index(b"RIFF")
    with wave.open(io.BytesIO(body[wav_start:]), "rb") as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth(), w.getnframes()) == (8000, 1, 2, 8000)


@pytest.mark.asyncio
async def test_openai_stt_errors_are_provider_errors() -> None:
    async with _client(lambda r: httpx.Response(429, json={"error": {"message": "Rate limit"}})) as client:
        with pytest.raises(ProviderError) as err:
            await OpenAISTT(client, "https://api.example.test", "k").transcribe(np.ones(1600, np.int16))
    assert err.value.status_code == 429 and err.value.retryable


@pytest.mark.asyncio
async def test_openai_tts_streams_pcm24k_as_pcm16_8k() -> None:
    # One second of a 24 kHz tone, sent in odd-sized network chunks (a sample straddles two).
    pcm = (np.sin(2 * np.pi * 440 * np.arange(24000) / 24000) * 10000).astype("<i2").tobytes()
    seen: dict = {}

    def handler(request: httpx.Request) -> httpx.Response:
        seen["method"], seen["url"] = request.method, str(request.url)
        seen["auth"] = request.headers["authorization"]
        seen["json"] = json.loads(request.read())
        return httpx.Response(200, headers={"content-type": "audio/pcm"}, stream=_chunks(pcm, 4001))

    async with _client(handler) as client:
        tts = OpenAITTS(client, "https://api.example.test", "sk-test", "gpt-4o-mini-tts", "alloy")
        chunks = [c async for c in tts.stream("Hello there.")]

    assert seen["method"] == "POST" and seen["url"] == "https://api.example.test/v1/audio/speech"
    assert seen["auth"] == "Bearer sk-test"
    assert seen["json"] == {
        "model": "gpt-4o-mini-tts",
        "input": "Hello there.",
        "voice": "alloy",
        "response_format": "pcm",
    }
    assert len(chunks) >= 2  # streamed, not one blob
    out = np.frombuffer(b"".join(chunks), "<i2").astype(np.float32)  # PCM16 at the call's rate
    assert abs(len(out) - 8000) <= 16  # 1 s at 8 kHz
    spectrum = np.abs(np.fft.rfft(out[1000:7000]))
    assert abs(np.argmax(spectrum) * 8000 / 6000 - 440) < 5


class _chunks(httpx.AsyncByteStream):
    def __init__(self, data: bytes, size: int) -> None:
        self.data, self.size = data, size

    async def __aiter__(self):
        for i in range(0, len(self.data), self.size):
            yield self.data[i : i + self.size]


def _sse(*pieces: str) -> bytes:
    """A chat-completions stream as OpenAI sends it."""
    lines = []
    first = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "gpt-4o-mini",
        "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}],
    }
    lines.append("data: " + json.dumps(first))
    for p in pieces:
        chunk = {
            "id": "chatcmpl-1",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "gpt-4o-mini",
            "choices": [{"index": 0, "delta": {"content": p}, "finish_reason": None}],
        }
        lines.append("data: " + json.dumps(chunk))
    last = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "gpt-4o-mini",
        "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
    }
    lines += ["data: " + json.dumps(last), "data: [DONE]"]
    return ("\n\n".join(lines) + "\n\n").encode()


@pytest.mark.asyncio
async def test_chat_responder_streams_sentences_with_history() -> None:
    seen: dict = {}

    def handler(request: httpx.Request) -> httpx.Response:
        seen["method"], seen["url"] = request.method, str(request.url)
        seen["auth"] = request.headers["authorization"]
        seen["json"] = json.loads(request.read())
        body = _sse("Sure", ", Dr. Patel is in", " on Monday", ". Shall I", " book you", "?")
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, stream=_chunks(body, 37))

    history = [
        Message("assistant", "Thanks for calling. How can I help?"),
        Message("caller", "Hi."),
        Message("assistant", "Hello!"),
    ]
    async with _client(handler) as client:
        chat = ChatResponder(client, "https://api.example.test", "sk-test", "gpt-4o-mini", "Be brief.")
        sentences = [s async for s in chat.reply(history, "Is the doctor in on Monday?")]

    assert sentences == ["Sure, Dr. Patel is in on Monday.", "Shall I book you?"]
    assert chat.ends_call is False
    assert seen["method"] == "POST" and seen["url"] == "https://api.example.test/v1/chat/completions"
    assert seen["auth"] == "Bearer sk-test"
    body = seen["json"]
    assert body["model"] == "gpt-4o-mini" and body["stream"] is True
    roles = [m["role"] for m in body["messages"]]
    assert roles == ["system", "assistant", "user", "assistant", "user"]
    assert body["messages"][0]["content"].startswith("Be brief.")
    assert body["messages"][-1] == {"role": "user", "content": "Is the doctor in on Monday?"}


@pytest.mark.asyncio
async def test_chat_responder_yields_first_sentence_before_stream_ends() -> None:
    import asyncio

    release = asyncio.Event()

    class Slow(httpx.AsyncByteStream):
        async def __aiter__(self):
            body = _sse("First sentence here.", " Second", " one.")
            cut = body.rfind(b"data:", 0, body.index(b" one."))  # " Second" delivered, " one." held back
            yield body[:cut]
            await release.wait()
            yield body[cut:]

    async with _client(lambda r: httpx.Response(200, stream=Slow())) as client:
        gen = ChatResponder(client, "https://api.example.test", "k").reply([], "Hi")
        first = await asyncio.wait_for(gen.__anext__(), 2)
        assert first == "First sentence here."
        release.set()
        assert [s async for s in gen] == ["Second one."]


@pytest.mark.asyncio
async def test_chat_responder_goodbye_ends_the_call_and_errors_raise() -> None:
    body = _sse("You're welcome. ", "Have a great day. Goodbye!")
    async with _client(lambda r: httpx.Response(200, stream=_chunks(body, 64))) as client:
        chat = ChatResponder(client, "https://api.example.test", "k")
        said = [s async for s in chat.reply([], "Thanks, bye.")]
        assert said == ["You're welcome.", "Have a great day.", "Goodbye!"]
        assert chat.ends_call is True
    async with _client(lambda r: httpx.Response(401, json={"error": {"message": "bad key"}})) as client:
        with pytest.raises(ProviderError) as err:
            [s async for s in ChatResponder(client, "https://api.example.test", "k").reply([], "Hi")]
        assert err.value.status_code == 401 and not err.value.retryable
