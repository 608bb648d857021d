"""Shared fixtures: a clean environment, real test data, and real servers on free ports."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support.fixtures import make_server, module_server_factory  # noqa: F401 (fixtures for every folder)
from tests.support.paths import TESTDATA


@pytest.fixture(autouse=True)
def clean_environ(monkeypatch, tmp_path):
    """Settings come from the test, not from the developer's shell or .env files."""
    for key in list(os.environ):
        if key.upper() in {
            "DEFAULT_AUDIO_FORMAT", "MP3_BITRATE", "RECORD_CONVERSATIONS", "RECORDINGS_DIRECTORY", "PUBLIC_BASE_URL",
            "TWILIO_AUTH_TOKEN", "API_KEY", "RECORDING_CHANNELS", "OUTPUT_SAMPLE_RATE", "CALL_MODE", "FORWARD_TO",
            "GREETING", "REDIS_URL", "HOST_ID", "S3_ENDPOINT_URL", "S3_BUCKET", "S3_ACCESS_KEY_ID",
            "S3_SECRET_ACCESS_KEY", "S3_REGION", "S3_PREFIX", "SEGMENT_SECONDS", "ALLOWED_ORIGINS",
        }:
            monkeypatch.delenv(key, raising=False)
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def capture_path() -> Path:
    p = TESTDATA / "twilio-streams" / "edward-cates-stream1.jsonl"
    if not p.exists():
        pytest.skip("shared testdata not present")
    return p
