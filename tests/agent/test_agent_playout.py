"""Playout on its own: what an utterance says was heard, and how each ending is recorded."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest

from app.agent.playout import AssistantTurn, Playout, Utterance

from agent_fakes import FakeCallIO, FakeTTS

# Three sentences on the line back to back, in stream samples; the middle one's mark has not echoed.
UTT = dict(sentences=["One.", "Two two.", "Three."], spans=[(800, 1000), (1000, 1600), (1600, 2000)],
           marks=["r1.0", "r1.1", "r1.2"], first_audio=800, end=2000)


def _utt(**changes) -> Utterance:
    fields = {**UTT, "turn_end": 0, "echoed": {"r1.0", "r1.2"}, "stats": {"stt_ms": 12.5}, **changes}
    return Utterance(1, "reply", **fields)


def test_heard_text_is_the_sentences_whose_marks_echoed() -> None:
    utt = _utt()
    assert utt.full_text() == "One. Two two. Three."
    assert utt.heard_text() == "One. Three."
    assert utt.pending() == ["r1.1"]
    utt.assume_heard()
    assert utt.heard_text() == utt.full_text() and utt.pending() == []


@pytest.mark.parametrize(
    ("now", "played"),
    [(800, ("", "")), (900, ("", "One.")), (1000, ("One.", "")), (1200, ("One.", "Two two.")),
     (2000, ("One. Two two. Three.", ""))],
)
def test_played_by_parts_the_sentences_played_in_full_from_the_one_cut(now: int, played: tuple[str, str]) -> None:
    assert _utt().played_by(now) == played


def test_as_turn_played_out_interrupted_or_never_heard() -> None:
    utt = _utt()
    assert utt.as_turn(interrupted=False, end=2000) == AssistantTurn(
        "One. Two two. Three.", 800, 2000, False, {"stt_ms": 12.5, "latency_ms": 100.0})
    cut = utt.as_turn(interrupted=True, end=1200, cut_by="barge-in", cut_text="")
    assert cut == AssistantTurn("One. Three.", 800, 1200, True, {
        "stt_ms": 12.5, "latency_ms": 100.0, "sent_text": "One. Two two. Three.", "cut_by": "barge-in"})
    assert utt.as_turn(interrupted=True, end=1200, heard="One.").text == "One."
    assert utt.as_turn(interrupted=True, end=800) is None  # cut before its first audio played
    assert _utt(first_audio=None).as_turn(interrupted=False, end=0) is None
    assert "latency_ms" not in _utt(turn_end=None).as_turn(interrupted=False, end=2000).extra


async def _aiter(items: list[str]) -> AsyncIterator[str]:
    for item in items:
        yield item


async def _playout(*sentences: str) -> tuple[Playout, Utterance, list[AssistantTurn]]:
    """A reply spoken in full by a fake TTS at 10 ms a character: "Hi." is [0, 240), "Bye now." [240, 880)."""
    recorded: list[AssistantTurn] = []
    playout = Playout(FakeCallIO(), FakeTTS(), lambda s: s.strip(), recorded.append)
    utt = playout.new("reply", turn_end=0)
    await playout.speak(utt, _aiter(list(sentences)), time.perf_counter())
    return playout, utt, recorded


@pytest.mark.asyncio
async def test_each_sentence_is_placed_and_marked_and_recorded_once_every_mark_echoed() -> None:
    playout, utt, recorded = await _playout("Hi.", " ", "Bye now.")
    assert utt.sentences == ["Hi.", "Bye now."]  # nothing to say, nothing sent
    assert (utt.spans, utt.marks) == ([(0, 240), (240, 880)], ["r1.0", "r1.1"])
    assert playout.io.marks == [("r1.0", 30.0), ("r1.1", 110.0)]
    assert utt.stats.keys() == {"responder_ms", "tts_first_audio_ms"}
    utt.done = True
    assert playout.on_mark("r1.0") is utt and playout.on_mark("unknown") is None
    assert playout.marks_pending and not playout.finish(utt)
    assert playout.on_mark("r1.1") is utt and not playout.marks_pending
    assert playout.finish(utt) and not playout.finish(utt)
    assert [(t.text, t.start, t.end, t.interrupted) for t in recorded] == [("Hi. Bye now.", 0, 880, False)]
    assert playout.active == []


@pytest.mark.asyncio
async def test_a_barge_in_keeps_what_echoed_and_ignores_the_echoes_of_flushed_marks() -> None:
    playout, utt, recorded = await _playout("Hi.", "Bye now.")
    playout.on_mark("r1.0")
    assert playout.interrupt(300) == ["r1.1"]
    assert playout.on_mark("r1.1") is None  # Twilio echoes it at the clear: no proof it played
    (turn,) = recorded
    assert (turn.text, turn.end, turn.interrupted, turn.extra["cut_by"]) == ("Hi.", 300, True, "barge-in")
    assert utt.interrupted and not utt.ends_call and playout.active == []


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("now", "text", "end", "cut"),
    [(500, "Hi.", 500, {"cut_by": "hangup", "cut_text": "Bye now."}), (900, "Hi. Bye now.", 880, {})],
)
async def test_at_hang_up_a_reply_keeps_what_played_by_then(now: int, text: str, end: int, cut: dict) -> None:
    playout, _, recorded = await _playout("Hi.", "Bye now.")
    playout.new("reply")  # asked for, not a sound played yet: not recorded
    playout.hang_up(now)
    (turn,) = recorded
    assert (turn.text, turn.end, turn.interrupted) == (text, end, bool(cut))
    assert {k: turn.extra[k] for k in ("cut_by", "cut_text") if k in turn.extra} == cut
    assert playout.active == []
