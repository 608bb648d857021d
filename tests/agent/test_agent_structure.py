"""Factories accept setting names and build what the Protocols describe.

(The no-web-framework rule for every core package is tests/unit/test_structure.py.)
"""

from __future__ import annotations

import httpx
import pytest

from app.agent.factory import make_stt, make_tts
from app.agent.interfaces import Responder, SpeechToText, TextToSpeech, VoiceActivity
from app.agent.receptionist import ReceptionistResponder
from app.agent.stt import LocalWhisperSTT, OpenAISTT
from app.agent.tts import EspeakTTS, HibariTTS, OpenAITTS
from app.agent.vad import EnergyVAD, SileroVAD

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
