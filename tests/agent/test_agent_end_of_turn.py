"""The end of turn from the words: the completeness rule, the detector's per-pause wait, and the
collector holding frames back while a pause's words are judged (no models: fakes)."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from app.agent.end_of_turn import Completeness, EndOfTurnPolicy, judge
from app.agent.turns import CallerTurn, TurnCollector
from app.agent.vad import TurnDetector, TurnEnded, TurnParams, TurnState
from app.agent.wiring import CLIENT_TURN_STOP_MS, turn_taking
from app.config import Settings

from agent_fakes import LoudIsSpeech

C, I, U = Completeness.COMPLETE, Completeness.INCOMPLETE, Completeness.UNKNOWN


@pytest.mark.parametrize(("text", "verdict"), [
    ("I'd like to book an appointment.", C),
    ("Hello, Jarmit. How are you?", C),
    ("Who am I speaking with?", C),
    ("Can you do that?", C),
    ("Yes, it is.", C),
    ("Yes, I do.", C),
    ("Thank you!", C),
    ("I'd like to leave a message and", I),
    ("I'd like to leave a message and.", I),  # Whisper puts a period on anything
    ("So.", I),
    ("My number is", I),
    ("My number is.", I),
    ("The thing is,", I),
    ("I'm calling because", I),
    ("I need to speak to the", I),
    ("It's about the, um", I),
    ("Um...", I),
    ("Could you tell me if?", I),
    ("1 0 0 0 1.", I),  # digits come in groups: a phone number goes on after a pause
    ("One, two.", I),
    ("555 1234", I),
    ("", U),
    ("   ", U),
    ("Hello", U),  # no punctuation: not judged
    ("Hi.", U),  # a greeting or a yes/no alone: often more after a comma's pause
    ("Yes.", U),
    ("Okay, sure.", U),
    ("Hi, this is John Smith.", C),
    ("[BLANK_AUDIO]", U),
])
def test_judge(text: str, verdict: Completeness) -> None:
    assert judge(text) is verdict


def test_policy_waits_by_verdict_and_a_fixed_one_is_the_old_rule() -> None:
    p = EndOfTurnPolicy(complete_ms=200, incomplete_ms=1500, default_ms=700)
    assert [p.wait_ms(t) for t in ("Thank you.", "and so", "hmm hello", None)] == [200, 1500, 700, 700]
    assert not p.fixed and EndOfTurnPolicy(700, 700, 700).fixed


def test_turn_taking_from_settings() -> None:
    params, policy = turn_taking(Settings())
    assert policy == EndOfTurnPolicy(250, 1500, 700) and params.stop_ms == 700 and params.pause_ms < 250
    params, policy = turn_taking(Settings(end_of_turn_complete_ms=700, end_of_turn_incomplete_ms=700))
    assert policy is None and params.stop_ms == 700 and params.pause_ms == 250  # as before the rule
    params, policy = turn_taking(Settings(), turns_from_client=True)  # the browser's client ends turns
    assert policy is None and params.stop_ms == CLIENT_TURN_STOP_MS


# --- the detector: one pause's own wait ---------------------------------------------------------------
def _speech(n_frames: int, start: int, det: TurnDetector) -> list:
    frame = np.where(np.arange(160) % 8 < 4, 3000, -3000).astype(np.int16)
    return [ev for i in range(n_frames) for ev in det.feed(frame, start + i * 160)]


def _silence(n_frames: int, start: int, det: TurnDetector) -> list:
    return [ev for i in range(n_frames) for ev in det.feed(np.zeros(160, np.int16), start + i * 160)]


def test_a_pause_ends_now_when_its_wait_has_already_passed() -> None:
    det = TurnDetector(LoudIsSpeech(), TurnParams(stop_ms=700, pause_ms=120, tail_ms=120))
    _speech(50, 0, det)  # 1 s of speech
    assert not [e for e in _silence(15, 8000, det) if isinstance(e, TurnEnded)]  # 300 ms: no end yet
    span = det.pause_span
    assert span == (0, 8000)
    (ended,) = det.end_pause_after(200)
    assert isinstance(ended, TurnEnded) and (ended.start_sample, ended.end_sample) == span
    assert det.state is TurnState.QUIET and det.pause_span is None


def test_a_long_wait_outlasts_stop_ms_and_speech_resets_it() -> None:
    det = TurnDetector(LoudIsSpeech(), TurnParams(stop_ms=700, pause_ms=120, tail_ms=120))
    _speech(50, 0, det)
    _silence(10, 8000, det)
    assert det.end_pause_after(1500) == []
    assert not [e for e in _silence(50, 8000 + 1600, det) if isinstance(e, TurnEnded)]  # 1.2 s: still waiting
    _speech(25, 8000 + 9600, det)  # the caller goes on: the default wait is back
    ends = [e for e in _silence(40, 8000 + 9600 + 4000, det) if isinstance(e, TurnEnded)]
    assert len(ends) == 1 and ends[0].start_sample == 0
    assert ends[0].end_sample == 8000 + 9600 + 4000


# --- the collector: frames held back while a pause's words are judged -----------------------------------
class WordsSTT:
    """Hears ``text`` for any audio, after ``delay`` s of wall time."""

    def __init__(self, text: str, delay: float = 0.0) -> None:
        self.text, self.delay, self.calls = text, delay, 0

    async def transcribe(self, audio: np.ndarray) -> str:
        self.calls += 1
        await asyncio.sleep(self.delay)
        return self.text


async def _stream(text: str, *, delay: float, real_time: bool, speech_ms: int = 1000, pause_ms: int = 2000,
                  then_ms: int = 0) -> tuple[list[tuple[int, int, int]], TurnCollector]:
    params = TurnParams(start_ms=100, stop_ms=700, pause_ms=120, tail_ms=120, min_turn_ms=100)
    det = TurnDetector(LoudIsSpeech(), params)
    col = TurnCollector(det, WordsSTT(text, delay), EndOfTurnPolicy(200, 1500, 700))
    ended: list[tuple[int, int, int]] = []

    def on_events(events, now):
        col.take(events)
        ended.extend((e.start_sample, e.end_sample, now) for e in events if isinstance(e, TurnEnded))

    col.on_events = on_events
    loud = np.where(np.arange(160) % 8 < 4, 3000, -3000).astype(np.int16)
    plan = [(speech_ms, loud), (pause_ms, None), (then_ms, loud), (1600, None)]
    t = 0
    for ms, frame in plan:
        for _ in range(ms // 20):
            x = frame if frame is not None else np.zeros(160, np.int16)
            on_events(col.feed(x, t), t + 160)
            t += 160
            await asyncio.sleep(0.02 if (real_time or col.judging) and delay else 0)
    while col.judging:
        await asyncio.sleep(0.01)
    return ended, col


@pytest.mark.asyncio
async def test_a_finished_sentence_ends_the_turn_after_the_short_wait() -> None:
    ended, col = await _stream("I'd like to book an appointment.", delay=0.0, real_time=False)
    (start, end, at), = ended
    assert (start, end) == (0, 8000)
    assert at - end == 200 * 8  # exactly the complete wait, in stream time
    turn = await col.next()
    assert isinstance(turn, CallerTurn) and turn.text == "I'd like to book an appointment." and turn.wait_ms == 200
    assert col.stt.calls == 1  # the early transcription is the turn's text


@pytest.mark.asyncio
async def test_words_left_hanging_wait_past_a_600ms_pause() -> None:
    ended, _ = await _stream("my number is", delay=0.0, real_time=False, pause_ms=600, then_ms=1000)
    assert [(s, e) for s, e, _ in ended] == [(0, (1000 + 600 + 1000) * 8)]  # one turn: not cut off


@pytest.mark.asyncio
async def test_the_turn_ends_at_the_same_stream_sample_whatever_the_transcription_takes() -> None:
    fast, _ = await _stream("Thank you.", delay=0.0, real_time=False)
    slow, _ = await _stream("Thank you.", delay=0.15, real_time=True)  # 150 ms of wall time, live
    assert fast == slow == [(0, 8000, 8000 + 200 * 8)]


@pytest.mark.asyncio
async def test_a_transcription_slower_than_the_hold_falls_back_to_the_default_wait() -> None:
    ended, col = await _stream("", delay=1.5, real_time=True)  # nothing heard in time
    (start, end, at), = ended
    assert at - end >= 700 * 8 and not col.judging


@pytest.mark.asyncio
async def test_a_hang_up_while_words_are_judged_keeps_the_turn_for_the_tail() -> None:
    params = TurnParams(start_ms=100, stop_ms=700, pause_ms=120, tail_ms=120, min_turn_ms=100)
    col = TurnCollector(TurnDetector(LoudIsSpeech(), params), WordsSTT("Thank you.", delay=0.5),
                        EndOfTurnPolicy(200, 1500, 700))
    loud = np.where(np.arange(160) % 8 < 4, 3000, -3000).astype(np.int16)
    t = 0
    for frame in [loud] * 50 + [np.zeros(160, np.int16)] * 10:
        col.take(col.feed(frame, t))
        t += 160
    assert col.judging
    col.close(t)
    assert not col.judging and col.tail_pending == 1
    turns = [turn async for turn in col.transcribe_tail()]
    assert [(x.start, x.end, x.text) for x in turns] == [(0, 8000, "Thank you.")]
