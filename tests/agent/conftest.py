"""Fixtures for the agent tests: telephone-quality real speech and shared (slow) speech engines."""

from __future__ import annotations


from tests.support.paths import TESTDATA

import numpy as np
import pytest

SPEECH = TESTDATA / "speech"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "models: loads local speech models (Whisper, hibari); slower")


def telephone(name: str) -> np.ndarray:
    """A test clip as the caller's side of a call: mono, 8 kHz, through μ-law, int16."""
    import soundfile as sf

    from app.audio import mulaw
    from app.audio.resample import resample

    x, sr = sf.read(SPEECH / name, dtype="float32", always_2d=True)
    return mulaw.decode(mulaw.float_to_ulaw(resample(x.mean(axis=1), sr, 8000)))


@pytest.fixture(scope="session")
def whisper():
    from app.agent.stt import LocalWhisperSTT

    stt = LocalWhisperSTT()
    stt.load()
    return stt


@pytest.fixture(scope="session")
def hibari():
    from app.agent.tts import HibariTTS

    tts = HibariTTS(seed=1)
    tts.load()
    return tts
