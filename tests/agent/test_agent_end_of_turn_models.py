"""The end of turn from the words, with the real models: Silero VAD and Whisper tiny.en on phone audio.

- Real human speech (../shared/testdata/speech: each recording one utterance, with its natural
  pauses) streamed as a phone call: the rule cuts callers off no more often than the fixed
  700 ms wait it replaces (measured: 4 false cut-offs with the fixed wait — two in the JFK speech,
  two in the digit groups — and 3 with the words, all in the JFK speech, whose pauses of 0.5–1 s
  follow clauses Whisper hears as sentences).
- Spoken turns left hanging ("and", "so", "my number is") followed by a 600 ms pause are not cut
  off; a finished sentence followed by silence ends well before the fixed 700 ms.

Slow (~30 s: Whisper on every pause); run alone with ``-m models``.
"""

from __future__ import annotations

import numpy as np
import pytest

from app.agent.stt import LocalWhisperSTT
from app.agent.tts import EspeakTTS
from app.audio import mulaw
from app.audio.resample import resample

from tests.support.turn_cutoffs import count_cutoffs, rule_settings, stream_turns

pytestmark = pytest.mark.models

# Every pause judged by its words, however slow Whisper is at the moment: where it takes over a second
# the call stops holding the pause and waits the fixed 700 ms instead, and the rule is not what is tested.
ANY_HOLD = 10_000

FIXED = {"end_of_turn_ms": 700, "end_of_turn_complete_ms": 700, "end_of_turn_incomplete_ms": 700, "stt_window_s": 30}


def say(text: str) -> np.ndarray:
    pcm, rate = EspeakTTS(wpm=150).synth(text)
    return (resample(pcm.astype(np.float32) / 32768, rate, 8000) * 32767).astype(np.int16)


def phone(*parts: str | float) -> np.ndarray:
    """Speech and pauses (seconds) in order → a caller's side of a phone call (8 kHz, through μ-law)."""
    out = [np.zeros(int(p * 8000), np.int16) if isinstance(p, (int, float)) else say(p) for p in parts]
    return mulaw.decode(mulaw.encode(np.concatenate(out)))


@pytest.mark.asyncio
async def test_real_speech_is_cut_off_no_more_often_than_with_the_fixed_wait(whisper: LocalWhisperSTT) -> None:
    old = await count_cutoffs(whisper, rule_settings(**FIXED), max_hold_ms=ANY_HOLD)
    new = await count_cutoffs(whisper, rule_settings(), max_hold_ms=ANY_HOLD)
    old_n, new_n = sum(r.cutoffs for r in old), sum(r.cutoffs for r in new)
    report = {r.name: (o.cutoffs, r.cutoffs, r.decisions) for o, r in zip(old, new, strict=True)}
    assert new_n <= old_n, report
    # Digit groups with 1.3 s pauses between them (a number read out) stay one turn.
    assert next(r for r in new if r.name == "vosk-digits.wav").cutoffs == 0, report
    # A recording that ends on a finished sentence is answered sooner than with the fixed wait.
    finished = [r for r in new if r.decisions and r.decisions[-1][1] == 250]
    assert len(finished) >= 5, report
    assert all(r.last_wait_ms is not None and r.last_wait_ms < 600 for r in finished), report


@pytest.mark.asyncio
@pytest.mark.parametrize(("first", "then"), [
    ("I would like to leave a message for John and", "ask him to call me back today."),
    ("I am calling about my appointment so", "could you move it to Friday?"),
    ("Sure, my number is", "five five five, one two three four."),
])
async def test_a_turn_left_hanging_is_not_cut_off_by_a_600ms_pause(whisper: LocalWhisperSTT, first: str,
                                                                   then: str) -> None:
    # This test failed once in a full run; not reproduced beside four CPU burners: the slow Whisper of
    # ANY_HOLD is the likely cause, not a shown one.
    result = await stream_turns(phone(first, 0.6, then), whisper, rule_settings(), max_hold_ms=ANY_HOLD)
    assert result.cutoffs == 0, (result.turns, result.decisions)
    assert any(wait == 1500 for _, wait in result.decisions), result.decisions  # the pause judged unfinished


@pytest.mark.asyncio
async def test_a_finished_sentence_followed_by_silence_is_answered_quickly(whisper: LocalWhisperSTT) -> None:
    result = await stream_turns(phone("Hello, I would like to book an appointment for next week."), whisper,
                                rule_settings(), max_hold_ms=ANY_HOLD)
    assert len(result.turns) == 1 and result.decisions[-1][1] == 250, result.decisions
    # 250 ms, or 120 ms of pause and the transcription's own time (paced in real time) if longer.
    assert result.last_wait_ms is not None and result.last_wait_ms < 600, result.last_wait_ms
    fixed = await stream_turns(phone("Hello, I would like to book an appointment for next week."), whisper,
                               rule_settings(**FIXED), max_hold_ms=ANY_HOLD)
    assert fixed.last_wait_ms is not None and fixed.last_wait_ms >= 700
    assert result.last_wait_ms < fixed.last_wait_ms - 150
