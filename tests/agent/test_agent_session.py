"""AgentSession turn loop with a fake call, fake STT/TTS and a scripted responder (one timeline)."""

from __future__ import annotations

import asyncio

import pytest

from app.agent.interfaces import Message
from app.agent.vad import TurnDetector, TurnParams

from agent_fakes import FakeSTT, LoudIsSpeech, Say, ScriptedResponder, Timeline, drive, make_session

GREETING = "Thank you for calling Acme. This is Jarvis. How can I help?"
LONG_1 = "Let me tell you about all of our many services in great detail now."
LONG_2 = "And here is yet another long sentence for you."

TIMELINE = Timeline(
    [
        Say(1000, 2000, "I want to leave a message."),
        Say(3500, 4200, "It's Ann."),
        Say(5000, 5600, "Stop. Goodbye."),  # barges in while LONG_1 plays
    ]
)
REPLIES = [["Sure.", "May I have your name?"], ["Thanks, Ann.", LONG_1, LONG_2], ["Goodbye!"]]


@pytest.mark.asyncio
async def test_greeting_turn_barge_in_and_goodbye() -> None:
    responder = ScriptedResponder(REPLIES, goodbye_at=2, greeting=GREETING)
    seen: list[tuple] = []
    session, io, tts = make_session(TIMELINE, responder, on_turn=lambda *a: seen.append(a))
    await session.start()
    await drive(session, io, TIMELINE, 9000)
    await session.aclose()

    roles = [(t["role"], t["interrupted"]) for t in io.turns]
    assert roles == [
        ("assistant", False),
        ("caller", False),
        ("assistant", False),
        ("caller", False),
        ("assistant", True),
        ("caller", False),
        ("assistant", False),
    ]
    greeting, c1, r1, _c2, r2, _c3, bye = io.turns
    assert greeting["text"] == GREETING and greeting["start_ms"] == 0 and "latency_ms" not in greeting
    assert tts.spoken[:3] == ["Thank you for calling Acme.", "This is Jarvis.", "How can I help?"]

    # Caller turns carry the detector's stream times.
    assert (c1["text"], c1["start_ms"], c1["end_ms"]) == ("I want to leave a message.", 1000, 2000)
    # Latency = end of caller speech → first reply audio: about the 500 ms end-of-turn silence.
    assert r1["text"] == "Sure. May I have your name?"
    assert 480 <= r1["latency_ms"] <= 560  # stream time = the last frame's start timestamp
    assert r1["start_ms"] == r1["latency_ms"] + 2000
    for key in ("stt_ms", "responder_ms", "tts_first_audio_ms"):
        assert r1[key] >= 0

    # Barge-in: one clear, the interrupted turn keeps only the sentence whose mark echoed before it.
    assert len(io.clears) == 1 and 5280 <= io.clears[0] <= 5360
    assert r2["text"] == "Thanks, Ann." and r2["end_ms"] == io.clears[0]
    assert r2["sent_text"] == f"Thanks, Ann. {LONG_1} {LONG_2}"
    flushed = [name for name, at in io.echoed if at == io.clears[0]]
    assert len(flushed) == 2  # Twilio echoed them at the clear; the session ignored them
    # The responder's history holds only what was heard.
    history, text = responder.calls[2]
    assert text == "Stop. Goodbye."
    assert history[-2:] == [Message("caller", "It's Ann."), Message("assistant", "Thanks, Ann.")]
    assert all(LONG_1 not in m.text for m in history)
    assert history[0] == Message("assistant", GREETING)

    # Goodbye: hang up only after its last mark echoed.
    last_mark_at = max(at for name, at in io.echoed)
    assert bye["text"] == "Goodbye!" and io.hangup_at == last_mark_at >= bye["end_ms"]
    assert session.barge_ins == 1
    assert [s[:2] for s in seen] == [(t["role"], i) for i, t in enumerate(io.turns)]
    assert [t["index"] for t in io.turns] == list(range(7))


@pytest.mark.asyncio
async def test_without_barge_in_the_reply_plays_out() -> None:
    responder = ScriptedResponder(REPLIES, goodbye_at=2, greeting=GREETING)
    session, io, _ = make_session(TIMELINE, responder, barge_in=False)
    await session.start()
    await drive(session, io, TIMELINE, 9000)
    await session.aclose()
    assert io.clears == []
    r2 = [t for t in io.turns if t["role"] == "assistant"][2]
    assert r2["text"] == f"Thanks, Ann. {LONG_1} {LONG_2}" and not r2["interrupted"]
    assert io.hangup_at is not None


@pytest.mark.asyncio
async def test_empty_transcription_makes_no_turn() -> None:
    timeline = Timeline([Say(1000, 1600, ""), Say(3000, 3600, "Hello?")])
    responder = ScriptedResponder([["Hi there."]])
    session, io, _ = make_session(timeline, responder)
    await session.start()
    await drive(session, io, timeline, 5000)
    await session.aclose()
    assert session.turns.stt.calls == 2
    assert [(t["role"], t["text"]) for t in io.turns] == [
        ("assistant", "Thank you for calling Acme. This is Jarvis. How can I help?"),
        ("caller", "Hello?"),
        ("assistant", "Hi there."),
    ]
    assert [c[1] for c in responder.calls] == ["Hello?"]


class SlowSTT(FakeSTT):
    """Takes ~20 frames of virtual time, so the caller can start again before it answers."""

    async def transcribe(self, audio):
        for _ in range(20 * 8):
            await asyncio.sleep(0)
        return await super().transcribe(audio)


@pytest.mark.asyncio
async def test_caller_who_goes_on_after_a_pause_is_answered_once() -> None:
    timeline = Timeline([Say(1000, 1500, "My name is"), Say(2100, 2600, "Ann Lee.")])
    responder = ScriptedResponder([["Thanks, Ann."]])
    session, io, _ = make_session(timeline, responder)
    session.turns.stt = SlowSTT(timeline)
    session.turns.detector = TurnDetector(LoudIsSpeech(), TurnParams(start_ms=100, stop_ms=500, min_turn_ms=100, pause_ms=0))
    await session.start()
    await drive(session, io, timeline, 5000)
    await session.aclose()
    assert [c[1] for c in responder.calls] == ["My name is Ann Lee."]
    assert [t["text"] for t in io.turns if t["role"] == "caller"] == ["My name is", "Ann Lee."]


@pytest.mark.asyncio
async def test_dtmf_reaches_the_responder_and_aclose_stops_midway() -> None:
    timeline = Timeline([])
    responder = ScriptedResponder([], greeting="A very long greeting sentence that keeps going. " * 3)
    session, io, _ = make_session(timeline, responder)
    await session.start()
    session.on_dtmf("5")
    await drive(session, io, timeline, 600)  # part of the greeting has played
    await session.aclose()
    assert responder.digits == ["5"]
    (greeting,) = io.turns
    assert greeting["interrupted"] and greeting["end_ms"] <= 600
    assert greeting["text"] == "A very long greeting sentence that keeps going."
    assert not [t for t in asyncio.all_tasks() if t is not asyncio.current_task() and not t.done()]


@pytest.mark.asyncio
async def test_hang_up_mid_reply_keeps_the_sentences_played_in_full_and_marks_the_cut_one() -> None:
    # The greeting's sentences play at 10 ms a character: 27 chars, 15, then 15 → [0, 270), [270, 420), ...
    timeline = Timeline([])
    session, io, _ = make_session(timeline, ScriptedResponder([], greeting=GREETING))
    await session.start()
    await drive(session, io, timeline, 340)  # the caller hangs up inside the second sentence
    io.now = 340.0
    await session.aclose()
    (greeting,) = io.turns
    assert greeting["interrupted"] and greeting["cut_by"] == "hangup"
    assert greeting["text"] == "Thank you for calling Acme."  # played in full before the hang-up
    assert greeting["cut_text"] == "This is Jarvis."
    assert greeting["end_sample"] == 340 * 8 and greeting["start_sample"] == 0
    assert session.barge_ins == 0 and io.clears == []


@pytest.mark.asyncio
async def test_a_turn_still_open_or_untranscribed_at_hang_up_is_transcribed_after_it() -> None:
    timeline = Timeline([Say(1000, 2000, "I want to leave a message."), Say(2800, 3400, "My name is Ann.")])
    session, io, _ = make_session(timeline, ScriptedResponder([["Sure."]]))
    await session.start()
    await drive(session, io, timeline, 3420)  # hangs up 20 ms after the last word: no end-of-turn silence
    await session.aclose()
    assert [t["text"] for t in io.turns if t["role"] == "caller"] == ["I want to leave a message."]
    assert session.tail_pending == 1
    await session.transcribe_tail()
    last = io.turns[-1]
    assert (last["role"], last["text"], last["start_sample"], last["at_hangup"]) == (
        "caller", "My name is Ann.", 2800 * 8, True)
    assert session.tail_pending == 0
