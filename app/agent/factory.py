"""Build speech engines from setting names: ``make_stt`` / ``make_tts``.

Accepted names: STT "local" (faster-whisper tiny.en) or "openai"; TTS "local" (hibari),
"espeak" or "openai". HTTP providers need the app's shared ``httpx.AsyncClient``. Local engines
are safe to share between calls (build one per process and call ``load()`` at start-up).
"""

from __future__ import annotations

from pathlib import Path

import httpx

from app.agent.interfaces import SpeechToText, TextToSpeech

__all__ = ["STT_NAMES", "TTS_NAMES", "make_stt", "make_tts"]

STT_NAMES = ("local", "openai")
TTS_NAMES = ("local", "espeak", "openai")


def make_stt(
    name: str = "local",
    *,
    client: httpx.AsyncClient | None = None,
    base_url: str = "https://api.openai.com",
    api_key: str = "",
    model: str | None = None,
    model_dir: str | Path | None = None,
) -> SpeechToText:
    """Speech-to-text by setting name (see module docstring)."""
    if name == "local":
        from app.agent.stt import LocalWhisperSTT

        return LocalWhisperSTT(model_dir)
    if name == "openai":
        from app.agent.stt import OpenAISTT

        if client is None:
            raise ValueError("the 'openai' speech-to-text needs an httpx.AsyncClient")
        return OpenAISTT(client, base_url, api_key, model or "whisper-1")
    raise ValueError(f"unknown speech-to-text {name!r}; accepted: {', '.join(STT_NAMES)}")


def make_tts(
    name: str = "local",
    *,
    client: httpx.AsyncClient | None = None,
    base_url: str = "https://api.openai.com",
    api_key: str = "",
    model: str | None = None,
    voice: str | None = None,
) -> TextToSpeech:
    """Text-to-speech by setting name (see module docstring)."""
    from app.agent import tts

    if name in ("local", "hibari"):
        return tts.HibariTTS()
    if name == "espeak":
        return tts.EspeakTTS()
    if name == "openai":
        if client is None:
            raise ValueError("the 'openai' text-to-speech needs an httpx.AsyncClient")
        return tts.OpenAITTS(client, base_url, api_key, model or "gpt-4o-mini-tts", voice or "alloy")
    raise ValueError(f"unknown text-to-speech {name!r}; accepted: {', '.join(TTS_NAMES)}")
