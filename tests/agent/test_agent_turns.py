"""Turn collection on its own: speculative transcription, answering together, the hang-up tail."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from app.agent.turns import QUIET, CallerTurn, TurnCollector
from app.agent.vad import SpeechPaused, TurnDetector, TurnEnded, TurnParams, TurnState

from agent_fakes import LoudIsSpeech, Say, Timeline


class NumberSTT:
    """Hears the first sample of a turn's audio as a number: 0 is silence, a negative one fails."""

    def __init__(self) -> None:
        self.heard: list[int] = []

    async def transcribe(self, audio: np.ndarray) -> str:
        self.heard.append(int(audio[0]))
        await asyncio.sleep(0)
        if audio[0] < 0:
            raise RuntimeError("engine down")
        return f" turn {audio[0]} " if audio[0] else ""


def _audio(k: int) -> np.ndarray:
    return np.full(160, k, np.int16)


def _collector() -> tuple[TurnCollector, NumberSTT]:
    stt = NumberSTT()
    detector = TurnDetector(LoudIsSpeech(), TurnParams(start_ms=100, stop_ms=500, min_turn_ms=100))
    return TurnCollector(detector, stt), stt


def _text(turn: object) -> str:
    assert isinstance(turn, CallerTurn)
    return turn.text


@pytest.mark.asyncio
async def test_a_pause_transcribed_early_is_reused_only_by_the_turn_that_ends_there() -> None:
    turns, stt = _collector()
    turns.take([SpeechPaused(0, 800, _audio(1))])
    turns.take([TurnEnded(0, 800, _audio(1))])
    turn = await turns.next()
    assert (turn.start, turn.end, turn.text) == (0, 800, "turn 1") and turn.stt_ms >= 0
    turns.take([SpeechPaused(2000, 2800, _audio(2))])  # the caller went on: the turn ends later
    turns.take([TurnEnded(2000, 4000, _audio(3))])
    assert _text(await turns.next()) == "turn 3"
    assert stt.heard == [1, 2, 3]


@pytest.mark.asyncio
async def test_nothing_heard_or_a_failed_transcription_is_an_empty_turn() -> None:
    turns, _ = _collector()
    turns.take([TurnEnded(0, 800, _audio(0)), TurnEnded(1600, 2400, _audio(-1))])
    assert [_text(await turns.next()), _text(await turns.next())] == ["", ""]


@pytest.mark.asyncio
async def test_quiet_is_queued_once_the_caller_falls_quiet_without_another_turn() -> None:
    turns, _ = _collector()
    turns.wait_for_quiet()
    turns.take([TurnEnded(0, 800, _audio(1))])  # a turn ended: that is not falling quiet
    turns.detector.state = TurnState.SPEAKING
    turns.take([])
    assert turns.more_coming()
    turns.detector.state = TurnState.QUIET
    turns.take([])
    turns.take([])  # asked for once, queued once
    assert _text(await turns.next()) == "turn 1"
    assert await turns.next() is QUIET
    assert not turns.more_coming()
    turns.wait_for_quiet()
    turns.stop_waiting()
    turns.take([])
    assert not turns.more_coming()


def test_catching_up_on_recorded_audio_finds_the_turns_feeding_does() -> None:
    timeline = Timeline([Say(200, 900, "a"), Say(2000, 2600, "b")])
    frames = [timeline.frame(t) for t in range(0, 4000, 20)]
    live, _ = _collector()
    fed = [ev for i, frame in enumerate(frames) for ev in live.feed(frame, i * 160)]
    caught_up, _ = _collector()
    found = caught_up.detect(np.concatenate(frames), 0)
    spans = [[(type(ev), ev.start_sample, ev.end_sample) for ev in evs if isinstance(ev, (SpeechPaused, TurnEnded))]
             for evs in (fed, found)]
    assert spans[0] == spans[1] and [s[0] for s in spans[0]].count(TurnEnded) == 2


@pytest.mark.asyncio
async def test_at_hang_up_every_turn_not_yet_transcribed_is_kept_in_order_for_the_tail() -> None:
    turns, stt = _collector()
    turns.take([TurnEnded(0, 800, _audio(1)), TurnEnded(1600, 2400, _audio(0)), TurnEnded(3200, 4000, _audio(-1))])
    listening = asyncio.create_task(turns.next())
    await asyncio.sleep(0)  # turn 1's transcription has started
    listening.cancel()  # the hang-up stops the conversation loop ...
    await asyncio.gather(listening, return_exceptions=True)
    for i in range(10):  # ... while the caller is still speaking
        turns.feed(_audio(5000), 4800 + i * 160)
    turns.close(6400)
    assert turns.tail_pending == 4
    tail = [turn async for turn in turns.transcribe_tail()]
    assert [(t.start, t.text) for t in tail] == [(0, "turn 1"), (4800, "turn 5000")]  # empty and failed: dropped
    assert stt.heard.count(1) == 1  # the transcription under way at hang-up was reused
    assert turns.tail_pending == 0
