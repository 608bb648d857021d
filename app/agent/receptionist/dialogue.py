"""The dialogue: :class:`ReceptionistResponder`, greeting, reply/respond, notes, DTMF and ends_call."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from datetime import datetime

from app.agent.interfaces import Message
from app.agent.receptionist.message import _Draft, _Note
from app.agent.receptionist.names import _bare_name, _extract_name, _first_clause, _person_asked_for
from app.agent.receptionist.phrases import (
    _clean,
    _has,
    _intelligible,
    _is_goodbye,
    _is_no,
    _is_pause,
    _is_repeat,
    _is_stop,
    _is_yes,
    _only,
    _substantive,
    _tokens,
    _wants_person,
    _words,
)
from app.agent.receptionist.questions import _Questions, _State
from app.agent.receptionist.reasons import _as_reason, _extract_reason
from app.agent.receptionist.words import (
    _ARE_YOU_HUMAN,
    _CALLBACK,
    _GREETING_ONLY,
    _HOURS,
    _INTRO,
    _JUNK,
    _PLAIN_YES,
    _QUESTION_WORDS,
    _REFUSE,
    _THANKS_ONLY,
    _TIME,
    _WHO,
    _set,
)


class ReceptionistResponder(_Questions):
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
        self._draft: _Draft | None = None
        self._messages: list[_Note] = []
        self._digits: list[str] = []
        self._asked: object = "open"  # the greeting asks the open question once
        self._asks = 1
        self._served = False  # a message was taken or a question answered: "anything else?"
        self._offered = False  # offered to take a message after the open question got nowhere
        self._paused = False  # the last reply was "go ahead" after "wait"
        self._callback_offered = False  # the last reply offered a call back from a person
        self._rejected = 0  # read-backs the caller said "no" to without a correction
        self._heard: str | None = None  # the last assistant turn as the caller heard it

    # --- Responder API --------------------------------------------------------------------
    def greeting(self) -> str:
        return (
            f"Thank you for calling {self.business_name}. This is {self.assistant_name}. "
            "I can take a message, or tell you our opening hours. How can I help you today?"
        )

    def notes(self) -> list[str]:
        out = [m.text() for m in self._messages]
        if self._digits:
            out.append("Keypad: " + "".join(self._digits))
        return out

    def on_dtmf(self, digit: str) -> None:
        self._digits.append(digit)

    async def reply(self, history: list[Message], caller_text: str) -> AsyncIterator[str]:
        self._heard = next((m.text for m in reversed(history) if m.role == "assistant"), None)
        try:
            sentences = self.respond(caller_text)
        finally:
            self._heard = None
        for sentence in sentences:
            yield sentence

    # --- the dialogue ---------------------------------------------------------------------
    def respond(self, text: str) -> list[str]:
        """Synchronous core: the reply sentences for ``text`` (updates state and ``ends_call``)."""
        self.ends_call = False
        text = text.replace("’", "'").strip()
        paused, self._paused = self._paused, False
        offered, self._callback_offered = self._callback_offered, False
        if self._state is _State.ENDED:  # the goodbye was cut off and the caller spoke again
            if not self._more_to_say(text):
                return self._end(["Goodbye!"])
            self._state = _State.OPEN  # the question count goes on: "anything else?" was asked already
        if not _intelligible(text):
            return self._again("Sorry, I didn't catch that.")

        if self._state is _State.CONFIRM and _is_yes(text) and not _is_stop(text) and not self._correction(text):
            self._save(confirmed=True)
            if _is_goodbye(text):
                return self._goodbye(["Thank you, I've passed your message on."])
            return self._advance(["Thank you. I've passed your message on, and someone will get back to you soon."])
        if _is_pause(text):
            if paused:
                return self._again("I'm still here.")
            self._paused = True
            return ["Of course, go ahead."]
        if _is_stop(text):
            return self._goodbye(["Okay."])
        if _is_goodbye(text):
            if _wants_person(text) or _CALLBACK.search(_words(text)):
                self._note_callback(text)
            return self._goodbye([])
        if _wants_person(text) or (offered and _is_yes(text) and len(_tokens(text)) <= 3):
            return self._person(text)
        if self._state is _State.OPEN and _is_no(text) and len(_tokens(text)) <= 4:
            return self._goodbye([])  # "No thanks." to "anything else?"
        if _is_repeat(text):
            return self._again("Sure.", full=True)
        answers = self._answer_questions(text)
        if answers:
            if self._state is _State.OPEN:
                self._served = True
            return answers + self._question_if_allowed(full=True)

        if self._state is _State.OPEN:
            return self._open(text)
        if self._state is _State.ASK_NAME:
            return self._on_name(text)
        if self._state is _State.ASK_REASON:
            return self._on_reason(text)
        return self._on_confirm(text)

    def _more_to_say(self, text: str) -> bool:
        """After the goodbye: a real request (not noise, a stray word or another goodbye) reopens the call."""
        if not _intelligible(text) or _is_goodbye(text) or _is_stop(text):
            return False
        content = [t for t in _tokens(text) if t not in _JUNK and not t.isdigit()]
        asks = ("?" in text or _has(text, *_QUESTION_WORDS)) and _has(text, *_TIME, *_HOURS, *_WHO)
        return len(content) >= 2 or _wants_person(text) or _has(text, "message") or asks

    # --- per state ------------------------------------------------------------------------
    def _open(self, text: str) -> list[str]:
        if _only(text, _PLAIN_YES) and len(_tokens(text)) <= 2:
            return self._advance(["Sure."], open_text="What can I do for you?")
        if self._served and _only(text, _THANKS_ONLY):  # "Great, thank you." to "anything else?"
            return self._goodbye(["You're welcome."] if _has(text, "thanks", "thank you", "cheers") else [])
        if _only(text, _GREETING_ONLY):
            return self._again("Hello!")
        if _substantive(text) or _has(text, "message", "leave a message") or _CALLBACK.search(_words(text)):
            self._draft = _Draft(name=_extract_name(text), reason=_extract_reason(text))
            if _CALLBACK.search(_words(text)):
                self._draft.callback = "callback"
            return self._advance(["I can take a message for the team."])
        return self._again("Sorry, I didn't catch that.")

    def _on_name(self, text: str) -> list[str]:
        d = self._draft
        assert d is not None
        name = _extract_name(text, lenient=True) or _bare_name(text)
        new_reason = "" if d.reason else _extract_reason(text)
        d.reason = d.reason or new_reason
        if _CALLBACK.search(_words(text)) and not d.callback:
            d.callback = "callback"
        if name:
            d.name = name
            return self._advance([f"Thank you, {name}."])
        if _has(text, *_REFUSE) or _only(text, _set("no nope nah sorry")):
            d.name_skipped = True
            return self._advance(["That's fine."])
        if new_reason:  # a reason instead of a name: noted; the name is asked again if it still may be
            return self._advance(["Thank you."])
        return self._again("Sorry, I didn't catch your name.")

    def _on_reason(self, text: str) -> list[str]:
        d = self._draft
        assert d is not None
        if _CALLBACK.search(_words(text)) and not d.callback:
            d.callback = "callback"
        name = _extract_name(text) if _INTRO.search(text) else ""
        if not name and not d.name:  # the name after all, instead of the reason: "Ann Lee"
            bare = _bare_name(text)
            capitals = all(w[0].isupper() for w in _first_clause(_clean(text)))
            name = bare if len(bare.split()) >= 2 and capitals else ""
        reason = _as_reason(text) if not name else _extract_reason(text)
        if name and name != d.name:
            d.name, d.name_skipped = name, False
            if reason:
                d.reason = reason
            return self._advance([f"Thank you, {name}."])
        if reason:
            d.reason = reason
            return self._advance([])
        wants_callback = bool(_CALLBACK.search(_words(text)))
        if wants_callback or _has(text, *_REFUSE) or _only(text, _set("no nope nah nothing")):
            d.reason_skipped = True  # "just call me back", "I'd rather not say"
            d.declined = not d.callback
            return self._advance(["That's fine."])
        return self._again("Sorry, I didn't catch that.")

    def _on_confirm(self, text: str) -> list[str]:
        d = self._draft
        assert d is not None
        no = _is_no(text)
        fix = self._correction(text)
        if fix:
            d.name, d.reason = fix
            return self._advance([])
        if no:
            self._rejected += 1
            if self._rejected >= 2:  # wrong twice: pass on what there is rather than start a third time
                d.callback = d.callback or "callback"
                self._save(confirmed=False)
                return self._advance(
                    ["Sorry I couldn't get that right.", "I'll pass on what I have, and ask someone to call you back."]
                )
            self._draft = _Draft(callback=d.callback, for_whom=d.for_whom)
            return self._advance(["Sorry about that, let's try again."])
        return self._again("Sorry, I didn't catch that.")

    def _correction(self, text: str) -> tuple[str, str] | None:
        """(name, reason) when ``text`` corrects the read-back ("No, my name is Jon", "it's about X")."""
        d = self._draft
        if d is None or self._state is not _State.CONFIRM:
            return None
        no = _is_no(text)
        rest = re.sub(r"^\W*(?:(?:no|nope|nah|not quite|wrong|sorry|yes|yeah)\b[\s,.!]*)+", "", text, flags=re.I)
        name = _extract_name(text, lenient=no) or (_bare_name(rest) if no and rest[:1].isupper() else "")
        reason = _extract_reason(text)
        if (name and name != d.name) or (reason and reason != d.reason):
            return name or d.name, reason or d.reason
        return None


    # --- requests -------------------------------------------------------------------------
    def _note_callback(self, text: str) -> None:
        person = _wants_person(text)
        if self._draft is None:
            self._draft = _Draft(name=_extract_name(text), reason=_extract_reason(text))
        d = self._draft
        if person:
            d.callback, d.for_whom = "person", d.for_whom or _person_asked_for(text)
        elif not d.callback:
            d.callback = "callback"

    def _person(self, text: str) -> list[str]:
        """No transfer offline: say so, and put a call-back request into the message."""
        honest = "I can't put you through to anyone from here"
        if self._draft is None and self._messages and self._state is _State.OPEN:
            last = self._messages[-1]
            if last.callback != "person":
                last.callback, last.for_whom = "person", _person_asked_for(text)
                return self._advance([f"{honest}, but I've added to your message that you'd like a call back."])
            return self._advance(["I've already asked for someone to call you back."])
        if self._draft is None:
            self._draft = _Draft(name=_extract_name(text), reason=_extract_reason(text))
            lead = f"{honest}, but I can take a message and ask someone to call you back."
        elif self._draft.callback != "person":
            if not self._draft.reason:
                self._draft.reason = _extract_reason(text)
            lead = f"{honest}, but I'll ask for someone to call you back."
        else:
            lead = "I've noted that you'd like someone to call you back."
        self._draft.callback = "person"
        self._draft.for_whom = self._draft.for_whom or _person_asked_for(text)
        return self._advance([lead])

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
            if _has(text, *_ARE_YOU_HUMAN):
                out.append("If you'd like to speak to someone, I can ask them to call you back.")
                self._callback_offered = True
        return out

    # --- endings --------------------------------------------------------------------------
    def _save(self, confirmed: bool) -> None:
        d = self._draft
        if d is not None:
            self._messages.append(_Note(d.name, d.reason, d.callback, d.for_whom, confirmed))
        self._draft = None
        self._state = _State.OPEN
        self._served = True
        self._rejected = 0

    def _goodbye(self, lead: list[str]) -> list[str]:
        d = self._draft
        if d is not None and (d.name or d.reason or d.callback):  # given but never confirmed: keep it
            self._save(confirmed=False)
            lead = [*lead, "I'll pass your message on as it is."]
        return self._end([*lead, f"Thank you for calling {self.business_name}.", "Goodbye!"])

    def _end(self, sentences: list[str]) -> list[str]:
        self._draft = None
        self._state = _State.ENDED
        self.ends_call = True
        return sentences
