"""Structural checks: app/agent stays free of the web framework; factories accept setting names."""

from __future__ import annotations

import ast
from pathlib import Path

import httpx
import pytest

import app.agent
from app.agent.factory import make_stt, make_tts
from app.agent.interfaces import Responder, SpeechToText, TextToSpeech, VoiceActivity
from app.agent.receptionist import ReceptionistResponder
from app.agent.stt import LocalWhisperSTT, OpenAISTT
from app.agent.tts import EspeakTTS, HibariTTS, OpenAITTS
from app.agent.vad import EnergyVAD, SileroVAD

AGENT = Path(app.agent.__file__).parent


def test_no_web_framework_imports_in_agent() -> None:
    for path in AGENT.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                assert name.split(".")[0] not in {"fastapi", "starlette"}, f"{path.name} imports {name}"
                assert not name.startswith("app.web"), f"{path.name} imports {name}"
        assert ast.get_docstring(tree), f"{path.name} has no module docstring"


def test_factories_and_protocols() -> None:
    client = httpx.AsyncClient(transport=httpx.MockTransport(lambda r: httpx.Response(500)))
    assert isinstance(make_stt("local"), LocalWhisperSTT)
    assert isinstance(make_stt("openai", client=client), OpenAISTT)
    assert isinstance(make_tts("local"), HibariTTS)
    assert isinstance(make_tts("espeak"), EspeakTTS)
    assert isinstance(make_tts("openai", client=client), OpenAITTS)
    with pytest.raises(ValueError, match="accepted: local, openai"):
        make_stt("cloud")
    with pytest.raises(ValueError, match=r"needs an httpx\.AsyncClient"):
        make_tts("openai")
    for obj, proto in [
        (make_stt("local"), SpeechToText),
        (make_tts("espeak"), TextToSpeech),
        (ReceptionistResponder(), Responder),
        (EnergyVAD(), VoiceActivity),
        (SileroVAD(), VoiceActivity),
    ]:
        assert isinstance(obj, proto)
