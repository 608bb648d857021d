"""μ-law codec, the format registry and MP3 bitrate plans, checked on real encoded bytes."""

from __future__ import annotations

import io
import warnings

import numpy as np
import pytest
import soundfile as sf

from app.audio import mulaw
from app.audio.formats import FORMATS, encoder_kwargs, get_format, mp3_plan, UnsupportedFormatError


def test_ulaw_tables_match_audioop_bit_for_bit():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        audioop = pytest.importorskip("audioop")
    all_codes = bytes(range(256))
    assert mulaw.decode_bytes(all_codes) == audioop.ulaw2lin(all_codes, 2)
    assert mulaw._decode_bytes_numpy(all_codes) == audioop.ulaw2lin(all_codes, 2)  # the fallback too
    pcm = np.arange(-32768, 32768, dtype=np.int16)
    assert mulaw.encode(pcm) == audioop.lin2ulaw(pcm.astype("<i2").tobytes(), 2)


def test_silence():
    assert (mulaw.decode(b"\xff\x7f") == 0).all()


def test_registry_has_the_four_formats_and_refuses_others_with_the_list():
    assert set(FORMATS) == {"mp3", "wav", "ogg", "flac"}
    assert get_format(".WAV").name == "wav"
    with pytest.raises(UnsupportedFormatError, match="accepted: flac, mp3, ogg, wav"):
        get_format("aac")


@pytest.mark.parametrize("rate,req,used", [(8000, 128, 64), (8000, 32, 32), (16000, 128, 128), (16000, 320, 160),
                                           (44100, 128, 128), (48000, 320, 320), (8000, None, 32)])
def test_mp3_plan_gives_the_bitrate_it_says(rate, req, used):
    plan = mp3_plan(rate, req)
    assert plan.used_kbps == used
    if req and req != used:
        assert "allows at most" in plan.note
    x = (0.05 * np.random.default_rng(1).standard_normal(rate * 8)).astype(np.float32)
    buf = io.BytesIO()
    kw, _ = encoder_kwargs(FORMATS["mp3"], rate, req)
    with sf.SoundFile(buf, "w", rate, 1, **kw) as f:
        f.write(x)
    measured = len(buf.getvalue()) * 8 / 8 / 1000
    assert abs(measured - used) < used * 0.06 + 1, measured
