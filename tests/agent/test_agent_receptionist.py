"""ReceptionistResponder dialogue, and the receptionist driving a whole fake call."""

from __future__ import annotations

from datetime import datetime

import pytest

from app.agent.receptionist import ReceptionistResponder
from app.agent.responder import make_responder

from agent_fakes import Say, Timeline, drive, make_session


def _r() -> ReceptionistResponder:
    return ReceptionistResponder(
        "Acme Dental", "Jarvis", "Monday to Friday, 9am to 5pm", clock=lambda: datetime(2025, 7, 13, 15, 42)
    )


async def _say(r: ReceptionistResponder, text: str) -> list[str]:
    return [s async for s in r.reply([], text)]


@pytest.mark.asyncio
async def test_takes_a_message_with_retry_question_and_confirmation() -> None:
    r = _r()
    assert r.greeting().startswith("Thank you for calling Acme Dental. This is Jarvis.")
    assert await _say(r, "Hi, I'd like to leave a message.") == [
        "I can take a message for the team.",
        "May I have your name, please?",
    ]
    assert await _say(r, "[BLANK_AUDIO]") == ["Sorry, I didn't catch that.", "May I have your name, please?"]
    # (a third unusable answer moves on: tests/agent/test_agent_receptionist_dialogue.py)
    assert await _say(r, "Uh, it's Ann Lee.") == ["Thank you, Ann Lee.", "And what is your call about?"]
    assert await _say(r, "What time is it?") == ["It's 3:42 PM.", "And what is your call about?"]
    assert await _say(r, "I'm calling about my crown, it feels loose.") == [
        "Let me read that back. Your name is Ann Lee, and you're calling about your crown, it feels loose. Is that right?"
    ]
    reply = await _say(r, "Yes, that's right.")
    assert reply[-1] == "Is there anything else I can help you with?" and not r.ends_call
    assert await _say(r, "When are you open?") == [
        "We're open Monday to Friday, 9am to 5pm.",
        "Is there anything else I can help you with?",
    ]
    # "Anything else?" was asked twice in a row: the answer comes without it a third time.
    assert await _say(r, "Who am I talking to?") == ["I'm Jarvis, the virtual receptionist for Acme Dental."]
    assert not r.ends_call
    assert await _say(r, "No thanks, bye.") == ["Thank you for calling Acme Dental.", "Goodbye!"]
    assert r.ends_call
    assert r.notes() == ["Name: Ann Lee — Reason: my crown, it feels loose"]


@pytest.mark.asyncio
async def test_volunteered_details_correction_and_unconfirmed_goodbye() -> None:
    r = _r()
    reply = await _say(r, "Hello, this is John Smith, I'm calling about the invoice.")
    assert (
        reply[-1]
        == "Let me read that back. Your name is John Smith, and you're calling about the invoice. Is that right?"
    )
    reply = await _say(r, "No, my name is Jon Smyth.")
    assert reply == [
        "Let me read that back. Your name is Jon Smyth, and you're calling about the invoice. Is that right?"
    ]
    assert await _say(r, "No.") == ["Sorry about that, let's try again.", "May I have your name, please?"]
    await _say(r, "Mary")
    await _say(r, "About the new booking system")
    assert (await _say(r, "That's all, goodbye."))[-1] == "Goodbye!"
    assert r.ends_call
    assert r.notes() == ["Name: Mary — Reason: the new booking system (not confirmed)"]
    r.on_dtmf("4")
    r.on_dtmf("2")
    assert r.notes()[-1] == "Keypad: 42"


@pytest.mark.asyncio
async def test_reason_mentioning_opening_is_not_a_question() -> None:
    r = _r()
    await _say(r, "I want to leave a message")
    await _say(r, "Sam Green")
    reply = await _say(r, "The opening of my new account")
    assert reply[0].startswith("Let me read that back") and "your new account" in reply[0]


def test_make_responder_by_name() -> None:
    assert isinstance(make_responder("local"), ReceptionistResponder)
    with pytest.raises(ValueError, match="accepted"):
        make_responder("nope")


@pytest.mark.asyncio
async def test_receptionist_drives_a_call_to_hangup() -> None:
    timeline = Timeline(
        [
            Say(1000, 2000, "I'd like to leave a message."),
            Say(4500, 5200, "Ann Lee."),
            Say(8000, 9000, "About my appointment on Friday."),
            Say(15000, 15500, "Yes."),
            Say(20000, 20500, "No, that's all. Bye."),
        ]
    )
    responder = _r()
    session, io, _ = make_session(timeline, responder)
    await session.start()
    await drive(session, io, timeline, 30000)
    await session.aclose()
    assert io.hangup_at is not None
    assistant = [t["text"] for t in io.turns if t["role"] == "assistant"]
    assert assistant[-1] == "Thank you for calling Acme Dental. Goodbye!"
    assert responder.notes() == ["Name: Ann Lee — Reason: my appointment on Friday"]
    assert session.barge_ins == 0
