"""Turn detector: the state machine with a scripted probability, and Silero on real speech."""

from __future__ import annotations

import numpy as np
import pytest

from app.agent.vad import (
    EnergyVAD, SileroVAD, SpeechPaused, SpeechStarted, TurnDetector, TurnEnded, TurnParams, TurnState,
)

from conftest import telephone

FRAME = 160  # 20 ms at 8 kHz


class LoudIsSpeech:
    """Probability 1 for loud windows, 0 otherwise; counts calls."""

    def __init__(self) -> None:
        self.calls = 0

    def speech_probability(self, window: np.ndarray) -> float:
        self.calls += 1
        return 1.0 if float(np.abs(window).max()) > 0.05 else 0.0


def _signal(spans_ms: list[tuple[int, int]], total_ms: int, quiet: int = 0) -> np.ndarray:
    """Loud square wave inside ``spans_ms``, ``quiet`` amplitude noise elsewhere."""
    rng = np.random.default_rng(0)
    x = rng.integers(-quiet, quiet + 1, total_ms * 8).astype(np.int16) if quiet else np.zeros(total_ms * 8, np.int16)
    for a, b in spans_ms:
        x[a * 8 : b * 8] = np.where(np.arange(a * 8, b * 8) % 8 < 4, 6000, -6000)
    return x


def _run(det: TurnDetector, x: np.ndarray, offset: int = 0) -> list:
    events = []
    for i in range(0, len(x) - FRAME + 1, FRAME):
        events += det.feed(x[i : i + FRAME], offset + i)
    return events


def test_turn_boundaries_preroll_and_tail() -> None:
    det = TurnDetector(LoudIsSpeech(), TurnParams(start_ms=200, stop_ms=700, preroll_ms=300, tail_ms=200))
    x = _signal([(1000, 2500)], 4000)
    events = _run(det, x, offset=800)  # stream clock does not start at zero
    assert events[0] == SpeechStarted(800 + 1000 * 8)
    paused, turn = events[1], events[2]
    assert isinstance(turn, TurnEnded) and len(events) == 3
    # 250 ms into the silence: the same turn, with exactly the audio the TurnEnded carries.
    assert isinstance(paused, SpeechPaused)
    assert (paused.start_sample, paused.end_sample) == (turn.start_sample, turn.end_sample)
    assert np.array_equal(paused.audio, turn.audio)
    assert (turn.start_sample, turn.end_sample) == (800 + 8000, 800 + 20000)
    assert turn.audio_start_sample == 800 + 8000 - 300 * 8
    assert len(turn.audio) == (1500 + 300 + 200) * 8
    assert not turn.forced
    assert det.state is TurnState.QUIET


def test_pause_then_more_speech_gives_a_paused_event_for_a_turn_that_does_not_end_there() -> None:
    det = TurnDetector(LoudIsSpeech(), TurnParams(stop_ms=700, pause_ms=250))
    events = _run(det, _signal([(500, 1500), (1900, 2600)], 4000))
    paused = [e for e in events if isinstance(e, SpeechPaused)]
    turns = [e for e in events if isinstance(e, TurnEnded)]
    assert [(p.end_sample // 8) for p in paused] == [1500, 2600]
    assert [(t.start_sample // 8, t.end_sample // 8) for t in turns] == [(500, 2600)]  # only the 2nd is reusable


def test_short_pause_keeps_one_turn_and_blips_make_none() -> None:
    det = TurnDetector(LoudIsSpeech())
    x = _signal([(500, 1500), (1900, 2600), (3500, 3560), (4000, 4200)], 6000)
    turns = [e for e in _run(det, x) if isinstance(e, TurnEnded)]
    assert [(t.start_sample // 8, t.end_sample // 8) for t in turns] == [(500, 2600)]


def test_max_turn_forces_an_end_and_keeps_listening() -> None:
    det = TurnDetector(LoudIsSpeech(), TurnParams(max_turn_ms=2000))
    events = _run(det, _signal([(0, 5000)], 6000))
    turns = [e for e in events if isinstance(e, TurnEnded)]
    assert [t.forced for t in turns] == [True, True, False]
    assert [t.start_sample // 8 for t in turns] == [0, 2000, 4000]
    assert max(len(t.audio) for t in turns) <= (2000 + 300) * 8


def test_energy_gate_skips_the_model_on_digital_silence() -> None:
    vad = LoudIsSpeech()
    det = TurnDetector(vad)
    _run(det, np.zeros(8000, np.int16))
    assert vad.calls == 0
    _run(det, _signal([(0, 100)], 1000, quiet=200))
    assert vad.calls == 50


@pytest.mark.parametrize(
    ("clip", "truth_ms"),
    [
        # Speech boundaries from the upstream .lab files (cmusphinx/pocketsphinx test/data/librivox).
        ("librivox-sense-and-sensibility-0880.wav", (251, 2774)),
        ("librivox-sense-and-sensibility-0930.wav", (269, 3037)),
    ],
)
def test_silero_finds_real_turn_within_150ms(clip: str, truth_ms: tuple[int, int]) -> None:
    speech = telephone(clip)
    rng = np.random.default_rng(1)
    pad = 1000
    x = np.concatenate([np.zeros(pad * 8, np.int16), speech, np.zeros(1500 * 8, np.int16)])
    x = np.clip(x + rng.normal(0, 20, len(x)), -32768, 32767).astype(np.int16)  # a faint line hiss
    events = _run(TurnDetector(SileroVAD()), x)
    turns = [e for e in events if isinstance(e, TurnEnded)]
    assert len(turns) == 1, events
    start_ms, end_ms = turns[0].start_sample / 8 - pad, turns[0].end_sample / 8 - pad
    assert abs(start_ms - truth_ms[0]) <= 150, start_ms
    assert abs(end_ms - truth_ms[1]) <= 150, end_ms


def test_silero_separates_two_sentences() -> None:
    a, b = telephone("librivox-sense-and-sensibility-0880.wav"), telephone("librivox-sense-and-sensibility-0930.wav")
    gap = np.zeros(1500 * 8, np.int16)
    x = np.concatenate([gap, a, gap, b, gap])
    turns = [e for e in _run(TurnDetector(SileroVAD()), x) if isinstance(e, TurnEnded)]
    assert len(turns) == 2
    second_offset_ms = (2 * len(gap) + len(a)) / 8
    assert abs(turns[1].start_sample / 8 - second_offset_ms - 269) <= 150


def test_energy_vad_fallback_finds_the_turn() -> None:
    speech = telephone("sr-one-two-three-44k.wav")
    x = np.concatenate([np.zeros(8000, np.int16), speech, np.zeros(12000, np.int16)])
    rng = np.random.default_rng(2)
    x = np.clip(x + rng.normal(0, 20, len(x)), -32768, 32767).astype(np.int16)
    turns = [e for e in _run(TurnDetector(EnergyVAD()), x) if isinstance(e, TurnEnded)]
    assert len(turns) == 1
    assert 900 <= turns[0].start_sample / 8 <= 1300


def test_flush_at_hang_up_ends_the_turn_in_progress() -> None:
    det = TurnDetector(LoudIsSpeech(), TurnParams(start_ms=200, stop_ms=700, preroll_ms=300, tail_ms=200))
    x = _signal([(1000, 2500)], 2600)  # hangs up 100 ms after speaking: no end-of-turn silence yet
    assert not [e for e in _run(det, x) if isinstance(e, TurnEnded)]
    (turn,) = det.flush(len(x))
    assert (turn.start_sample, turn.end_sample) == (8000, 20000) and not turn.forced
    assert det.state is TurnState.QUIET and det.flush(len(x)) == []
    det2 = TurnDetector(LoudIsSpeech(), TurnParams(start_ms=200, stop_ms=700))
    _run(det2, _signal([(1000, 2600)], 2600))  # still talking at the hang-up
    (turn2,) = det2.flush(2600 * 8)
    assert (turn2.start_sample, turn2.end_sample, turn2.forced) == (8000, 2600 * 8, True)
    det3 = TurnDetector(LoudIsSpeech(), TurnParams(start_ms=200, stop_ms=700, min_turn_ms=250))
    _run(det3, _signal([(1000, 1100)], 1200))  # a blip is no turn
    assert det3.flush(1200 * 8) == []
