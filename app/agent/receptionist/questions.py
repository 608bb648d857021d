"""Question bookkeeping: the dialogue states, which question is pending, and how often it was asked.

No question is asked more than :data:`MAX_ASKS` times in a row; after that the dialogue moves on
(see the package docstring). :class:`_Questions` is mixed into the responder and keeps its
bookkeeping on the responder's state.
"""

from __future__ import annotations

import enum

from app.agent.receptionist.message import _Draft
from app.agent.receptionist.reasons import _second_person


MAX_ASKS = 2
"""How many times in a row the same question may be asked before the dialogue moves on."""


class _State(enum.Enum):
    OPEN = "open"
    ASK_NAME = "ask_name"
    ASK_REASON = "ask_reason"
    CONFIRM = "confirm"
    ENDED = "ended"



class _Questions:
    """Asking, repeating and moving past the questions (a mixin of :class:`ReceptionistResponder`)."""

    def _key(self, state: _State) -> object:
        if state is _State.CONFIRM:
            d = self._draft
            assert d is not None
            return ("confirm", d.name, d.reason, d.callback)
        return {_State.ASK_NAME: "name", _State.ASK_REASON: "reason"}.get(state, "open")

    def _can_ask(self, key: object) -> bool:
        return key != self._asked or self._asks < MAX_ASKS

    def _ask(self, key: object, question: str) -> str:
        if key == self._asked:
            self._asks += 1
        else:
            self._asked, self._asks = key, 1
        return question

    def _question(
        self, state: _State, again: bool = False, full: bool = False, open_text: str | None = None
    ) -> list[str]:
        if state is _State.ASK_NAME:
            return ["May I have your name, please?"]
        if state is _State.ASK_REASON:
            return ["And what is your call about?"]
        if state is _State.CONFIRM:
            d = self._draft
            assert d is not None
            heard = self._heard is None or self._heard.rstrip().endswith("Is that right?")
            if again and heard and not full:
                return ["Sorry, was that a yes or a no?"]
            about = _second_person(d.reason)
            about = f"calling {about}" if about.lower().startswith("to ") else f"calling about {about}"
            said = f"Your name is {d.name}, and you're {about}" if d.name else f"You're {about}"
            if d.callback == "person":
                said += ", and you'd like someone to call you back"
            return [f"{'' if again else 'Let me read that back. '}{said}. Is that right?"]
        if open_text:
            return [open_text]
        return ["Is there anything else I can help you with?" if self._served else "How can I help you?"]

    def _pending(self) -> _State | None:
        """The question the dialogue needs next (None: a message with nothing left to ask)."""
        d = self._draft
        if d is None:
            return _State.OPEN
        if not d.name and not d.name_skipped:
            return _State.ASK_NAME
        if not d.reason and not d.reason_skipped:
            return _State.ASK_REASON
        return _State.CONFIRM if d.reason else None

    def _question_if_allowed(self, full: bool = False) -> list[str]:
        state = self._pending()
        if state is None or not self._can_ask(self._key(state)):
            return []
        self._ask(self._key(state), "")
        return self._question(state, again=state is self._state and state is not _State.OPEN, full=full)

    def _again(self, prefix: str, full: bool = False) -> list[str]:
        """The pending question once more after an unusable answer, or move on if it was asked twice."""
        state = self._pending()
        if state is not None and state is self._state and self._can_ask(self._key(state)):
            self._ask(self._key(state), "")
            question = self._question(state, again=True, full=full)
            if question == ["Sorry, was that a yes or a no?"]:
                return question
            return [prefix, *question]
        return self._advance([] if prefix == "Sure." else [prefix])

    def _advance(self, lead: list[str], open_text: str | None = None) -> list[str]:
        """``lead`` then the next question, moving on past any question already asked twice in a row."""
        lead = list(lead)
        for _ in range(8):  # each pass settles a question for good; a few passes at most
            state = self._pending()
            d = self._draft
            if state is None:  # a message without a reason
                assert d is not None
                if d.name or d.callback:
                    d.callback = d.callback or "callback"
                    self._save(confirmed=False)
                    said = any("call you back" in s for s in lead)
                    lead.append(
                        "I'll pass that on to the team."
                        if said
                        else "I'll let the team know you called, and ask someone to call you back."
                    )
                    continue
                if d.declined:  # nothing to pass on, by the caller's choice
                    self._draft, self._offered = None, True
                    lead.append("Then I won't take a message.")
                    continue
                lead.append("I'm having trouble understanding you, so please try calling again later.")
                return self._goodbye(lead)
            key = self._key(state)
            if self._can_ask(key):
                self._state = state
                self._ask(key, "")
                return lead + self._question(state, open_text=open_text)
            # asked twice in a row already: move on
            if state is _State.OPEN:
                if self._messages or self._offered:
                    return self._goodbye(lead + ["I'll let you go now."])
                self._offered = True
                self._draft = _Draft()
                lead.append("If you'd like to leave a message, I can take one.")
            elif state is _State.ASK_NAME:
                assert d is not None
                d.name_skipped = True
                lead.append("That's alright, I'll take the message without your name.")
            elif state is _State.ASK_REASON:
                assert d is not None
                d.reason_skipped = True
            else:
                self._save(confirmed=False)
                lead.append("I'll pass your message on as it is.")
        return self._goodbye(lead)  # not reached: every pass above settles a question
