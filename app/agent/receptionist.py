"""ReceptionistResponder: an offline, rule-based receptionist that takes messages.

Dialogue (one small state machine; every reply is a few short sentences)::

    OPEN ──"leave a message"/anything──▶ ASK_NAME ──name──▶ ASK_REASON ──reason──▶ CONFIRM
      ▲                                     ▲                                      │ yes: note saved
      │                                     └────────────── no ─────────────────────┤
      └────────────── "anything else?" ◀────────────────────────────────────────────┘

- At any point it answers plain questions and then repeats the pending prompt: the time
  (from the injected clock), the opening hours (a settings string), who it is.
- An empty or unintelligible answer gets "Sorry, I didn't catch that" and the same prompt again.
- "Goodbye", "bye", "that's all", "no thanks" (when nothing is pending) end the call:
  the reply is a goodbye and :attr:`ends_call` becomes True. A message that was given but not yet
  confirmed is kept, marked "(not confirmed)".
- A name or reason volunteered early ("Hi, this is Ann Lee, I'm calling about my bill") is used
  and that question is skipped.

It never calls the network and keeps its state per instance: one instance per call.
"""

from __future__ import annotations

import enum
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime

from app.agent.interfaces import Message

__all__ = ["ReceptionistResponder"]


class _State(enum.Enum):
    OPEN = "open"
    ASK_NAME = "ask_name"
    ASK_REASON = "ask_reason"
    CONFIRM = "confirm"
    ENDED = "ended"


@dataclass
class _Draft:
    name: str = ""
    reason: str = ""


def _words(text: str) -> str:
    """Lower-case text with punctuation removed, for intent matching."""
    return " " + re.sub(r"[^a-z0-9' ]+", " ", text.lower()).replace("’", "'") + " "


def _has(text: str, *phrases: str) -> bool:
    w = _words(text)
    return any(f" {p} " in w for p in phrases)


_GOODBYE = (
    "goodbye",
    "good bye",
    "bye",
    "bye bye",
    "that's all",
    "that is all",
    "that's it",
    "that's everything",
    "hang up",
    "nothing else",
    "have a good day",
    "have a nice day",
)
_YES = (
    "yes",
    "yeah",
    "yep",
    "yup",
    "correct",
    "right",
    "that's right",
    "that is right",
    "sure",
    "absolutely",
    "exactly",
    "affirmative",
    "ok",
    "okay",
    "perfect",
)
_NO = ("no", "nope", "nah", "not quite", "wrong", "incorrect", "that's wrong", "not right")
_TIME = ("what time is it", "what's the time", "what is the time", "the time", "time is it")
_HOURS = ("hours", "open", "opening", "close", "closing", "closed", "opens", "closes")
_QUESTION_WORDS = ("what", "when", "who", "whose", "are you", "do you", "is it", "how late", "how long", "until")
_WHO = (
    "who are you",
    "who is this",
    "who am i speaking",
    "who am i talking",
    "your name",
    "are you a robot",
    "are you human",
    "are you a person",
    "are you real",
    "are you a machine",
)
_NAME_INTRO = re.compile(
    r"\b(?:my name is|my name's|this is|it's|it is|i am|i'm|name is|call me)\s+"
    r"([A-Za-z][A-Za-z'-]*(?:\s+[A-Za-z][A-Za-z'-]*){0,2})",
    re.IGNORECASE,
)
_NOT_NAMES = {
    "calling",
    "looking",
    "just",
    "trying",
    "not",
    "fine",
    "good",
    "here",
    "wondering",
    "phoning",
    "ringing",
    "about",
    "so",
    "very",
    "really",
    "interested",
    "hoping",
    "going",
    "sorry",
    "a",
    "the",
    "an",
    "in",
    "on",
    "at",
    "with",
    "from",
    "your",
    "my",
    "me",
    "that",
    "this",
    "it",
    "to",
}
_REASON_INTRO = re.compile(
    r"\b(?:i'm calling|i am calling|calling|it's|it is|this is|i'm phoning|i'm ringing)?\s*"
    r"(?:about|regarding|because|in regards to|with regard to|concerning)\s+(.+)",
    re.IGNORECASE,
)
_FILLER = re.compile(r"^(?:(?:um+|uh+|er+|well|so|oh|hi|hello|hey|yes|yeah|okay|ok)[,.!]?\s+)+", re.IGNORECASE)


def _intelligible(text: str) -> bool:
    """False for empty text and for what Whisper emits on noise ("[BLANK_AUDIO]", "...", "(music)")."""
    stripped = re.sub(r"\[[^\]]*\]|\([^)]*\)|\*[^*]*\*", " ", text)
    return len(re.sub(r"[^A-Za-z0-9]", "", stripped)) >= 2


def _clean(text: str) -> str:
    text = _FILLER.sub("", text.strip())
    return text.strip(" .,!?;:-")


def _extract_name(text: str) -> str:
    m = _NAME_INTRO.search(text)
    if not m:
        return ""
    words: list[str] = []
    for w in m.group(1).split():
        if w.lower() in _NOT_NAMES or (words and not w[0].isupper()):
            break
        words.append(w)
    return " ".join(w[0].upper() + w[1:] for w in words)


def _extract_reason(text: str) -> str:
    m = _REASON_INTRO.search(text)
    return _clean(m.group(1)) if m else ""


def _as_name(answer: str) -> str:
    name = _extract_name(answer) or _clean(re.sub(r"^(?:it's|it is|this is)\s+", "", _clean(answer), flags=re.I))
    words = name.split()[:4]
    return " ".join(w[0].upper() + w[1:] for w in words if w)


_PRONOUNS = {
    "i": "you",
    "i'm": "you're",
    "im": "you're",
    "me": "you",
    "my": "your",
    "mine": "yours",
    "myself": "yourself",
    "i've": "you've",
    "i'd": "you'd",
    "i'll": "you'll",
    "we": "you",
    "our": "your",
    "us": "you",
}


def _second_person(text: str) -> str:
    """Caller's words as read back to them: "my crown" → "your crown"."""
    return re.sub(r"[A-Za-z']+", lambda m: _PRONOUNS.get(m.group(0).lower(), m.group(0)), text)


def _as_reason(answer: str) -> str:
    reason = _extract_reason(answer) or _clean(answer)
    reason = re.sub(r"^(?:i'm calling|i am calling|i want|i'd like|i would like)\s+(?:to\s+)?", "", reason, flags=re.I)
    return reason.rstrip(".")


class ReceptionistResponder:
    """Rule-based receptionist (see module docstring).

    Args:
        business_name: said in the greeting and the goodbye.
        assistant_name: how it introduces itself.
        opening_hours: read out as-is (normalised for speech later), e.g. "Monday to Friday, 9am to 5pm".
        clock: returns the local time for "what time is it" (injected for tests).

    """

    def __init__(
        self,
        business_name: str = "our office",
        assistant_name: str = "Jarvis",
        opening_hours: str = "Monday to Friday, 9am to 5pm",
        clock: Callable[[], datetime] = datetime.now,
    ) -> None:
        self.business_name = business_name
        self.assistant_name = assistant_name
        self.opening_hours = opening_hours
        self.clock = clock
        self.ends_call = False
        self._state = _State.OPEN
        self._draft = _Draft()
        self._notes: list[str] = []
        self._digits: list[str] = []
        self._misses = 0

    # --- Responder API --------------------------------------------------------------------
    def greeting(self) -> str:
        return (
            f"Thank you for calling {self.business_name}. This is {self.assistant_name}. "
            "I can take a message, or tell you our opening hours. How can I help you today?"
        )

    def notes(self) -> list[str]:
        out = list(self._notes)
        if self._digits:
            out.append("Keypad: " + "".join(self._digits))
        return out

    def on_dtmf(self, digit: str) -> None:
        self._digits.append(digit)

    async def reply(self, history: list[Message], caller_text: str) -> AsyncIterator[str]:
        for sentence in self.respond(caller_text):
            yield sentence

    # --- the dialogue ---------------------------------------------------------------------
    def respond(self, text: str) -> list[str]:
        """Synchronous core: the reply sentences for ``text`` (updates state and ``ends_call``)."""
        self.ends_call = False
        if self._state is _State.ENDED:  # the goodbye was cut off and the caller spoke again
            self._state = _State.OPEN
        if not _intelligible(text):
            self._misses += 1
            sorry = "Sorry, I didn't catch that." if self._misses < 3 else "Sorry, the line seems to be unclear."
            return [sorry, self._prompt()]
        self._misses = 0

        short_no = _has(text, *_NO) and len(_words(text).split()) <= 4
        if _has(text, *_GOODBYE) or (self._state is _State.OPEN and short_no):
            return self._goodbye()

        answers = self._answer_questions(text)
        if answers:
            return (
                [*answers, self._prompt()]
                if self._state is not _State.OPEN
                else [*answers, "Is there anything else I can help you with?"]
            )

        if self._state is _State.OPEN:
            if _has(text, *_YES) and len(_words(text).split()) <= 2:
                return ["Sure.", "What can I do for you?"]
            self._draft = _Draft(name=_extract_name(text), reason=_extract_reason(text))
            return ["I can take a message for the team.", self._advance()]
        if self._state is _State.ASK_NAME:
            self._draft.name = _as_name(text)
            if not self._draft.reason:
                self._draft.reason = _extract_reason(text)
            return [f"Thank you, {self._draft.name}." if self._draft.name else "Thank you.", self._advance()]
        if self._state is _State.ASK_REASON:
            self._draft.reason = _as_reason(text)
            return [self._advance()]
        # CONFIRM
        if _has(text, *_NO):
            corrected = _extract_name(text)
            if corrected:
                self._draft.name = corrected
                return [self._advance()]
            self._draft = _Draft()
            self._state = _State.ASK_NAME
            return ["Sorry about that, let's try again.", self._prompt()]
        if _has(text, *_YES):
            self._notes.append(f"Name: {self._draft.name} — Reason: {self._draft.reason}")
            self._draft = _Draft()
            self._state = _State.OPEN
            return [
                "Thank you. I've passed your message on, and someone will get back to you soon.",
                "Is there anything else I can help you with?",
            ]
        return ["Sorry, was that a yes or a no?", self._prompt()]

    def _advance(self) -> str:
        """Move to the next missing field and return its prompt."""
        if not self._draft.name:
            self._state = _State.ASK_NAME
        elif not self._draft.reason:
            self._state = _State.ASK_REASON
        else:
            self._state = _State.CONFIRM
        return self._prompt()

    def _prompt(self) -> str:
        if self._state is _State.ASK_NAME:
            return "May I have your name, please?"
        if self._state is _State.ASK_REASON:
            return "And what is your call about?"
        if self._state is _State.CONFIRM:
            return (
                f"Let me read that back. Your name is {self._draft.name}, and you're calling about "
                f"{_second_person(self._draft.reason)}. Is that right?"
            )
        return "How can I help you?"

    def _answer_questions(self, text: str) -> list[str]:
        if "?" not in text and not _has(text, *_QUESTION_WORDS):
            return []  # "I'm calling about the opening hours change" is a reason, not a question
        out = []
        if _has(text, *_TIME):
            now = self.clock()
            out.append(f"It's {now.hour % 12 or 12}:{now.minute:02d} {'AM' if now.hour < 12 else 'PM'}.")
        if _has(text, *_HOURS) and not _has(text, "open a", "open an"):
            out.append(f"We're open {self.opening_hours}.")
        if _has(text, *_WHO):
            out.append(f"I'm {self.assistant_name}, the virtual receptionist for {self.business_name}.")
        return out

    def _goodbye(self) -> list[str]:
        if self._draft.name or self._draft.reason:  # given but never confirmed: keep it anyway
            self._notes.append(
                f"Name: {self._draft.name or 'unknown'} — Reason: {self._draft.reason or 'unknown'} (not confirmed)"
            )
            self._draft = _Draft()
        self._state = _State.ENDED
        self.ends_call = True
        return [f"Thank you for calling {self.business_name}.", "Goodbye!"]
