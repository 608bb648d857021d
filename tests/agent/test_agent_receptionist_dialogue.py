"""The offline receptionist on difficult callers (issue 8, point 9).

In a 4-minute call it asked "Sorry, was that a yes or a no?" about 30 times and took "Ask not!" and
"Wait, wait, stop, please" for names. Here: names only from name-shaped answers, no question more
than twice in a row (then it moves on), "I want a real person", "stop", and long runs of noise.
Whisper tiny.en varies punctuation and capitals, so each case is tried in several spellings.
"""

from __future__ import annotations

import random
import re
from datetime import datetime

import pytest

from app.agent.interfaces import Message
from app.agent.receptionist import ReceptionistResponder

from agent_fakes import Say, Timeline, drive, make_session

NAME_Q = "May I have your name, please?"
REASON_Q = "And what is your call about?"
ANYTHING_ELSE = "Is there anything else I can help you with?"


def _r() -> ReceptionistResponder:
    return ReceptionistResponder(
        "Acme Dental", "Jarvis", "Monday to Friday, 9am to 5pm", clock=lambda: datetime(2025, 7, 13, 15, 42)
    )


class Call:
    """A caller talking to one receptionist; keeps the history as the session would (all heard)."""

    def __init__(self) -> None:
        self.r = _r()
        self.history: list[Message] = [Message("assistant", self.r.greeting())]
        self.replies: list[list[str]] = []

    async def say(self, text: str) -> list[str]:
        reply = [s async for s in self.r.reply(list(self.history), text)]
        self.history += [Message("caller", text), Message("assistant", " ".join(reply))]
        self.replies.append(reply)
        return reply


def question_key(reply: list[str], last_confirm: object) -> object:
    """What the reply asks (None: no question). A read-back is keyed by its content, and
    "was that a yes or a no?" is the same question as the read-back before it."""
    if not reply or not reply[-1].endswith("?"):
        return None
    q = reply[-1]
    if q == "Sorry, was that a yes or a no?":
        return last_confirm
    if q.endswith("Is that right?"):
        return ("confirm", q.removeprefix("Let me read that back. "))
    if q == NAME_Q:
        return "name"
    if q == REASON_Q:
        return "reason"
    if q in (ANYTHING_ELSE, "How can I help you?", "What can I do for you?") or q.endswith("How can I help you today?"):
        return "open"
    raise AssertionError(f"unknown question {q!r}")


def assert_no_question_thrice(questions: list[str], replies: list[list[str]]) -> None:
    """No question three times in a row (replies without a question don't break a run)."""
    keys: list[object] = ["open"]  # the greeting asks the open question
    last_confirm: object = None
    for reply in replies:
        key = question_key(reply, last_confirm)
        if key is None:
            continue
        if isinstance(key, tuple):
            last_confirm = key
        keys.append(key)
        assert keys[-3:] != [key] * 3, f"{key!r} asked three times in a row:\n" + "\n".join(
            f"C: {c}\nA: {' '.join(a)}" for c, a in zip(questions, replies)
        )


# --- names -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "name"),
    [
        ("my name is Anna Smith", "Anna Smith"),
        ("My name's anna smith.", "Anna Smith"),
        ("Yes, my name is Anna Smith and I'm calling about my bill.", "Anna Smith"),
        ("it's John", "John"),
        ("It's John.", "John"),
        ("Uh, it's john!", "John"),
        ("this is Maria", "Maria"),
        ("This is Maria, calling about the invoice.", "Maria"),
        ("Ann Lee.", "Ann Lee"),
        ("ann lee", "Ann Lee"),
        ("Mary", "Mary"),
        ("mary?", "Mary"),
        ("Um, Ann Lee Thompson.", "Ann Lee Thompson"),
        ("Dr. Patel", "Dr Patel"),
        ("John here.", "John"),
        ("Maria speaking", "Maria"),
        ("Sure, it's O'Brien.", "O'Brien"),
        ("mary-jane", "Mary-Jane"),
        ("My name is Will.", "Will"),
        ("I'm Sarah Connor", "Sarah Connor"),
    ],
)
async def test_name_shaped_answers_are_names(answer: str, name: str) -> None:
    c = Call()
    await c.say("I'd like to leave a message.")
    assert (await c.say(answer))[0] == f"Thank you, {name}."


@pytest.mark.parametrize(
    "answer",
    [
        "Ask not!",
        "ask not.",
        "Ask not",
        "ASK NOT",
        "Wait, wait, stop, please",
        "wait, wait. Stop, please.",
        "I don't know.",
        "i dont know",
        "1234",
        "five five five",
        "What?",
        "Why do you need it?",
        "Sorry, what was that?",
        "Hmm.",
        "Good morning.",
        "Thank you.",
        "I'm not sure.",
        "It's fine.",
        "It's me.",
        "This is ridiculous.",
        "I'm calling about my bill.",
        "Purple monkey dishwasher.",
        "Can you hear me?",
        "The dentist.",
        "Okay.",
        "Hello?",
        "Yes.",
        "[BLANK_AUDIO]",
    ],
)
async def test_other_answers_are_never_names(answer: str) -> None:
    c = Call()
    await c.say("I'd like to leave a message.")
    reply = await c.say(answer)
    assert not any(s.startswith("Thank you, ") for s in reply), reply
    await c.say("It's about my bill.")
    await c.say("That's all, bye.")
    assert c.r.ends_call
    assert not any("Your name is" in s for r in c.replies for s in r), c.replies
    assert c.r.notes() == ["Name: unknown — Reason: my bill (not confirmed)"]


async def test_a_name_announced_in_the_first_sentence_but_not_a_phrase_after_it_is() -> None:
    c = Call()
    reply = await c.say("Hi, this is John Smith calling about my broken window.")
    assert reply[-1] == (
        "Let me read that back. Your name is John Smith, and you're calling about your broken window. Is that right?"
    )
    c = Call()
    reply = await c.say("Hi, it's urgent, I need to speak to someone about my crown.")
    assert not any("urgent" in s.lower() for s in reply)
    assert reply[-1] == NAME_Q


# --- no question more than twice in a row -------------------------------------------------------


async def test_the_name_question_twice_then_it_goes_on_without_a_name() -> None:
    c = Call()
    assert await c.say("I'd like to leave a message") == ["I can take a message for the team.", NAME_Q]
    assert await c.say("Ask not!") == ["Sorry, I didn't catch your name.", NAME_Q]
    assert await c.say("[BLANK_AUDIO]") == [
        "Sorry, I didn't catch that.",
        "That's alright, I'll take the message without your name.",
        REASON_Q,
    ]
    assert await c.say("About my crown, it feels loose.") == [
        "Let me read that back. You're calling about your crown, it feels loose. Is that right?"
    ]
    assert (await c.say("Yes.")) == [
        "Thank you. I've passed your message on, and someone will get back to you soon.",
        ANYTHING_ELSE,
    ]
    assert c.r.notes() == ["Name: unknown — Reason: my crown, it feels loose"]


async def test_the_name_late_still_counts_and_a_refusal_is_respected() -> None:
    c = Call()
    await c.say("I'd like to leave a message")
    assert await c.say("I'd rather not say.") == ["That's fine.", REASON_Q]
    assert (await c.say("My prescription."))[0].startswith("Let me read that back. You're calling about your")
    c = Call()
    await c.say("I'd like to leave a message")
    await c.say("hmm")
    await c.say("hmm")  # the name is given up on
    assert await c.say("Ann Lee.") == ["Thank you, Ann Lee.", REASON_Q]  # … but taken when it comes


async def test_the_reason_question_twice_then_a_call_back_request_is_taken() -> None:
    c = Call()
    await c.say("I'd like to leave a message")
    assert await c.say("Ann Lee") == ["Thank you, Ann Lee.", REASON_Q]
    assert await c.say("Ask not.") == ["Sorry, I didn't catch that.", REASON_Q]
    assert await c.say("um") == [
        "Sorry, I didn't catch that.",
        "I'll let the team know you called, and ask someone to call you back.",
        ANYTHING_ELSE,
    ]
    assert c.r.notes() == ["Name: Ann Lee — Reason: not given — Please call back (not confirmed)"]


async def test_yes_or_no_is_asked_once_then_the_message_is_passed_on_unconfirmed() -> None:
    c = Call()
    await c.say("Hello, this is John Smith, I'm calling about the invoice.")
    assert await c.say("Blue.") == ["Sorry, was that a yes or a no?"]
    assert await c.say("Hmm, ask not.") == [
        "Sorry, I didn't catch that.",
        "I'll pass your message on as it is.",
        ANYTHING_ELSE,
    ]
    assert c.r.notes() == ["Name: John Smith — Reason: the invoice (not confirmed)"]
    assert sum(s == "Sorry, was that a yes or a no?" for r in c.replies for s in r) == 1


async def test_a_read_back_the_caller_talked_over_is_read_again_in_full() -> None:
    r = _r()
    [s async for s in r.reply([], "This is John Smith, about the invoice.")]
    heard = [Message("assistant", "I can take a message for the team. Let me read that back.")]
    assert [s async for s in r.reply(heard, "Sorry, what?")] == [
        "Sure.",
        "Your name is John Smith, and you're calling about the invoice. Is that right?",
    ]
    assert [s async for s in r.reply([], "Yep.")][-1] == ANYTHING_ELSE


async def test_a_corrected_read_back_is_a_new_question_but_two_plain_noes_end_the_retries() -> None:
    c = Call()
    await c.say("Hello, this is John Smith, I'm calling about the invoice.")
    assert await c.say("No, my name is Jon Smyth.") == [
        "Let me read that back. Your name is Jon Smyth, and you're calling about the invoice. Is that right?"
    ]
    assert await c.say("Yes, but it's about the March invoice.") == [
        "Let me read that back. Your name is Jon Smyth, and you're calling about the March invoice. Is that right?"
    ]
    assert await c.say("No.") == ["Sorry about that, let's try again.", NAME_Q]
    await c.say("Jon Smyth")
    await c.say("The April invoice")
    reply = await c.say("No.")
    assert "call you back" in " ".join(reply) and reply[-1] == ANYTHING_ELSE
    assert c.r.notes()[-1] == "Name: Jon Smyth — Reason: the April invoice — Please call back (not confirmed)"


async def test_the_open_question_twice_then_an_offer_then_a_polite_end() -> None:
    c = Call()  # the greeting asked it once
    assert await c.say("Ask not!") == ["Sorry, I didn't catch that.", "How can I help you?"]
    assert await c.say("Uh.") == [
        "Sorry, I didn't catch that.",
        "If you'd like to leave a message, I can take one.",
        NAME_Q,
    ]
    await c.say("hmm")
    await c.say("[BLANK_AUDIO]")
    await c.say("what")
    reply = await c.say("...")
    assert reply[-2:] == ["Thank you for calling Acme Dental.", "Goodbye!"] and c.r.ends_call
    assert "please try calling again later" in " ".join(reply)
    assert c.r.notes() == []
    # Noise over the goodbye (so the session did not hang up) gets the goodbye again, not a new round.
    assert await c.say("uh") == ["Goodbye!"] and c.r.ends_call


async def test_answered_questions_do_not_repeat_anything_else_a_third_time() -> None:
    c = Call()
    assert await c.say("What time is it?") == ["It's 3:42 PM.", ANYTHING_ELSE]
    assert await c.say("When do you close?") == ["We're open Monday to Friday, 9am to 5pm."]
    assert await c.say("Who am I talking to?") == ["I'm Jarvis, the virtual receptionist for Acme Dental."]
    assert await c.say("OK, bye.") == ["Thank you for calling Acme Dental.", "Goodbye!"]


async def test_after_a_message_noise_ends_the_call_politely() -> None:
    c = Call()
    await c.say("This is Ann Lee, about my appointment on Friday.")
    await c.say("Yes.")
    assert await c.say("hmm") == ["Sorry, I didn't catch that.", ANYTHING_ELSE]
    assert await c.say("Ask not.") == [
        "Sorry, I didn't catch that.",
        "I'll let you go now.",
        "Thank you for calling Acme Dental.",
        "Goodbye!",
    ]
    assert c.r.ends_call
    assert c.r.notes() == ["Name: Ann Lee — Reason: my appointment on Friday"]


@pytest.mark.parametrize(("closing", "reply"), [
    ("Great, thank you.", ["You're welcome.", "Thank you for calling Acme Dental.", "Goodbye!"]),
    ("Perfect.", ["Thank you for calling Acme Dental.", "Goodbye!"]),
    ("No, that's it.", ["Thank you for calling Acme Dental.", "Goodbye!"]),
    ("Okay.", ["Sure.", "What can I do for you?"]),
])
async def test_after_a_message_a_pleasantry_closes_and_a_plain_yes_asks_what(closing: str, reply: list[str]) -> None:
    c = Call()
    await c.say("This is Ann Lee, about my crown.")
    await c.say("Yes, that's right.")
    assert await c.say(closing) == reply
    assert c.r.ends_call == (reply[-1] == "Goodbye!")


# --- a real person ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "request_",
    [
        "I want a real person",
        "i want a real person.",
        "I want to talk to a real person!",
        "Can I speak to a human?",
        "Operator!",
        "operator, operator",
        "Agent.",
        "Representative, please.",
        "Let me talk to someone.",
        "Can you put me through to someone?",
        "Get me a human being.",
        "I need to speak with someone",
    ],
)
async def test_asking_for_a_person_takes_a_call_back_request(request_: str) -> None:
    c = Call()
    reply = await c.say(request_)
    assert reply == [
        "I can't put you through to anyone from here, but I can take a message and ask someone to call you back.",
        NAME_Q,
    ]
    await c.say("Ann Lee")
    reply = await c.say("My test results.")
    assert reply == [
        "Let me read that back. Your name is Ann Lee, and you're calling about your test results, "
        "and you'd like someone to call you back. Is that right?"
    ]
    await c.say("Yes.")
    assert c.r.notes() == ["Name: Ann Lee — Reason: my test results — Asked for a person: please call back"]


async def test_asking_for_a_person_by_name_mid_message_and_after_one() -> None:
    c = Call()
    await c.say("I'd like to leave a message")
    await c.say("This is Ann Lee.")
    reply = await c.say("Can I just talk to Doctor Patel?")
    assert reply == [
        "I can't put you through to anyone from here, but I'll ask for someone to call you back.",
        REASON_Q,
    ]
    # The reason question was asked twice in a row: it moves on and passes the request on.
    assert await c.say("I want a real person.") == [
        "I've noted that you'd like someone to call you back.",
        "I'll pass that on to the team.",
        ANYTHING_ELSE,
    ]
    assert c.r.notes() == [
        "Name: Ann Lee — Reason: not given — Asked for Doctor Patel: please call back (not confirmed)"
    ]

    c = Call()
    await c.say("This is Ann Lee, about my crown.")
    await c.say("Yes.")
    reply = await c.say("Actually, can I speak to a person?")
    assert reply[0] == (
        "I can't put you through to anyone from here, but I've added to your message that you'd like a call back."
    )
    assert c.r.notes() == ["Name: Ann Lee — Reason: my crown — Asked for a person: please call back"]
    assert (await c.say("Operator."))[0] == "I've already asked for someone to call you back."


async def test_are_you_a_real_person_is_answered_and_a_yes_takes_the_call_back() -> None:
    c = Call()
    assert await c.say("Are you a real person?") == [
        "I'm Jarvis, the virtual receptionist for Acme Dental.",
        "If you'd like to speak to someone, I can ask them to call you back.",
        ANYTHING_ELSE,
    ]
    assert (await c.say("Yes please."))[-1] == NAME_Q
    await c.say("Stop.")
    assert c.r.notes() == ["Name: unknown — Reason: not given — Asked for a person: please call back (not confirmed)"]


async def test_talk_to_you_later_is_a_goodbye_not_a_request() -> None:
    c = Call()
    assert await c.say("Okay, talk to you later.") == ["Thank you for calling Acme Dental.", "Goodbye!"]
    assert c.r.ends_call and c.r.notes() == []


# --- stop, wait ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "stop",
    ["stop", "Stop.", "STOP!", "Stop talking.", "please stop", "Stop it!", "Okay, stop, stop.", "Shut up.",
     "That's all.", "that's all, thanks", "That's enough.", "never mind", "Bye!"],
)
@pytest.mark.parametrize("when", ["open", "name", "reason", "confirm"])
async def test_stop_and_thats_all_end_the_call_politely(stop: str, when: str) -> None:
    c = Call()
    setup = {
        "open": [],
        "name": ["I'd like to leave a message"],
        "reason": ["I'd like to leave a message", "Ann Lee"],
        "confirm": ["This is Ann Lee, about my crown."],
    }[when]
    for line in setup:
        await c.say(line)
    reply = await c.say(stop)
    assert c.r.ends_call, reply
    assert reply[-2:] == ["Thank you for calling Acme Dental.", "Goodbye!"]
    notes = {
        "open": [],
        "name": [],
        "reason": ["Name: Ann Lee — Reason: not given (not confirmed)"],
        "confirm": ["Name: Ann Lee — Reason: my crown (not confirmed)"],
    }[when]
    assert c.r.notes() == notes
    if notes:
        assert "I'll pass your message on as it is." in reply


async def test_stop_inside_a_reason_is_not_a_command() -> None:
    c = Call()
    await c.say("I'd like to leave a message")
    await c.say("Ann Lee")
    reply = await c.say("It's about the bus stop outside, it's broken.")
    assert not c.r.ends_call
    assert reply == [
        "Let me read that back. Your name is Ann Lee, and you're calling about the bus stop outside, it's broken. "
        "Is that right?"
    ]


async def test_wait_makes_it_listen_and_is_not_a_name() -> None:
    c = Call()
    await c.say("I'd like to leave a message")
    assert await c.say("Wait, wait, stop, please.") == ["Of course, go ahead."]
    assert not c.r.ends_call
    assert await c.say("Hold on.") == ["I'm still here.", NAME_Q]
    assert await c.say("Sorry. It's Ann Lee.") == ["Thank you, Ann Lee.", REASON_Q]


# --- long runs of noise ----------------------------------------------------------------------

NOISE = [
    "",
    "[BLANK_AUDIO]",
    "(music)",
    "...",
    "♪",
    "you",
    "Ask not!",
    "ask not.",
    "Wait, wait, stop, please.",
    "wait",
    "Um.",
    "Uh, hmm.",
    "I don't know.",
    "What?",
    "Huh?",
    "Sorry?",
    "1234",
    "Thank you.",
    "So...",
    "Okay?",
    "Hello?",
    "The.",
    "and, and",
    "Mm.",
    "Why?",
    "Is it?",
    "It's, um.",
    "Yes, no, maybe.",
]


async def test_sixty_turns_of_noise_end_the_call_politely_without_looping() -> None:
    rng = random.Random(8)
    for trial in range(20):
        c = Call()
        lines = [rng.choice(NOISE) for _ in range(60)]
        ended_at = None
        for i, line in enumerate(lines):
            reply = await c.say(line)
            if c.r.ends_call and ended_at is None:
                ended_at = i
                assert reply[-2:] == ["Thank you for calling Acme Dental.", "Goodbye!"], reply
            elif ended_at is not None:  # the caller's noise went on over the goodbye
                assert c.r.ends_call and reply == ["Goodbye!"], reply
        assert_no_question_thrice(lines, c.replies)
        # Open question, name, reason: each asked at most twice, then the polite end. Only "wait"
        # gets a reply that asks nothing ("Of course, go ahead.").
        assert ended_at is not None, (trial, c.replies)
        asking = [r for r in c.replies[: ended_at + 1] if r != ["Of course, go ahead."]]
        assert len(asking) <= 6, (trial, c.replies)
        assert c.r.notes() == []
        assert not any("Your name is" in s for r in c.replies for s in r)


MIXED = NOISE + [
    "Purple.",
    "Ann Lee.",
    "It's about my bill.",
    "yes",
    "No.",
    "no, my name is Jon Smyth",
    "I want a real person",
    "Operator!",
    "What time is it?",
    "When are you open?",
    "I'd like to leave a message.",
    "Can you repeat that?",
    "Hold on a second.",
]


async def test_sixty_turns_of_mixed_answers_never_ask_a_question_three_times() -> None:
    rng = random.Random(9)
    for trial in range(30):
        lines = [rng.choice(MIXED) for _ in range(60)]
        c = Call()
        said: list[str] = []
        calls = 0
        for line in lines:
            reply = await c.say(line)
            said.append(line)
            if c.r.ends_call:  # a new call
                assert reply[-1] == "Goodbye!"
                assert_no_question_thrice(said, c.replies)
                for note in c.r.notes():
                    assert re.match(r"Name: (unknown|Ann Lee|Jon Smyth|Purple) — ", note), note
                c, said, calls = Call(), [], calls + 1
        assert_no_question_thrice(said, c.replies)


async def test_a_session_with_a_caller_who_only_makes_noise_hangs_up_politely() -> None:
    noise = ["[BLANK_AUDIO]", "Ask not!", "Um.", "Wait, wait, stop, please.", "What?", "Uh, hmm.", "I don't know.",
             "ask not.", "Huh?", "The.", "Hmm.", "Okay?"]
    timeline = Timeline([Say(3000 + 5000 * k, 3600 + 5000 * k, t) for k, t in enumerate(noise)])
    responder = _r()
    session, io, _ = make_session(timeline, responder)
    await session.start()
    await drive(session, io, timeline, 3000 + 5000 * len(noise) + 8000)
    await session.aclose()
    assert io.hangup_at is not None
    assistant = [t["text"] for t in io.turns if t["role"] == "assistant"]
    assert assistant[-1].endswith("Thank you for calling Acme Dental. Goodbye!"), assistant
    assert "try calling again later" in assistant[-1]
    assert responder.notes() == []
