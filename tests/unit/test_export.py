"""The incremental exporter: blocks, mixdown, and use from several threads at once."""

from __future__ import annotations

import threading

import numpy as np
import soundfile as sf

from app.audio.formats import FORMATS
from app.recording.export import ConversationExporter
from app.recording.track import MasterTrack


def masters(tmp_path, seconds=30):
    a, b = MasterTrack(tmp_path / "inbound.wav"), MasterTrack(tmp_path / "outbound.wav")
    rng = np.random.default_rng(0)
    n = seconds * 8000
    a.write(0, (rng.standard_normal(n) * 3000).astype("<i2").tobytes())
    b.write(0, (rng.standard_normal(n) * 3000).astype("<i2").tobytes())
    a.close()
    b.close()
    return (tmp_path / "inbound.wav", tmp_path / "outbound.wav"), n


def test_advance_and_finish_racing_from_two_threads_do_not_corrupt_the_encoder(tmp_path):
    # The call ends while a background advance is still encoding: finish() must wait for it.
    (m, n) = masters(tmp_path)
    ex = ConversationExporter(m, tmp_path / "out.mp3", FORMATS["mp3"], mp3_kbps=32)
    t = threading.Thread(target=ex.advance, args=(n - 8000,))
    t.start()
    ex.finish(n)
    t.join()
    x, rate = sf.read(str(tmp_path / "out.mp3"))
    assert rate == 8000 and abs(len(x) - n) < 2000


def test_stereo_wav_is_the_two_masters_exactly(tmp_path):
    (m, n) = masters(tmp_path, 5)
    ex = ConversationExporter(m, tmp_path / "out.wav", FORMATS["wav"], channels=2)
    ex.advance(12345)
    ex.finish(n)
    x, _ = sf.read(str(tmp_path / "out.wav"), dtype="int16")
    a, _ = sf.read(str(m[0]), dtype="int16")
    b, _ = sf.read(str(m[1]), dtype="int16")
    assert np.array_equal(x[:, 0], a) and np.array_equal(x[:, 1], b)
    assert ex.talk.seconds()["inbound"] == 5.0
