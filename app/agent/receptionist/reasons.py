"""Reasons for the call: what the caller is calling about, and how it is read back to them."""

from __future__ import annotations

import re

from app.agent.receptionist.names import _extract_name
from app.agent.receptionist.phrases import _clean, _substantive
from app.agent.receptionist.words import (
    _NOT_A_REASON_VERB,
    _NOT_NAMES,
    _REASON_INTRO,
    _REASON_PREFIX,
    _REASON_TO,
)


def _usable_reason(reason: str) -> str:
    reason = reason.strip(" .,!?;:-")
    first = reason.split(" ", 1)[0]
    if first[1:].islower() and first.lower() in _NOT_NAMES:  # a sentence's capital: "My crown" → "my crown"
        reason = reason[0].lower() + reason[1:]
    return reason if _substantive(reason) else ""


def _extract_reason(text: str) -> str:
    """A reason volunteered in ``text``: "… about my bill", "I'd like to book a cleaning"."""
    m = _REASON_INTRO.search(text)
    if m:
        return _usable_reason(_clean(_without_name(m.group(1))))
    m = _REASON_TO.search(text)
    if m and m.group(1).lower() not in _NOT_A_REASON_VERB:
        return _usable_reason("to " + _clean(_without_name(m.group(1) + m.group(2))))
    return ""


def _without_name(reason: str) -> str:
    """ "my bill, this is Ann Lee" → "my bill": a name given after the reason is not part of it."""
    m = re.search(r"[,.;]?\s*\b(?:and\s+)?(?:my name is|my name's|this is|it's|i'm|i am)\s+", reason, re.I)
    if m and _extract_name(reason[m.start() :].lstrip(" ,.;")):
        return reason[: m.start()]
    return reason


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
    """The answer to "what is your call about?", or "" when it carries no reason."""
    reason = _extract_reason(answer)
    if reason:
        return reason
    reason = re.sub(r"^(?:it's|it is|that's|that is)\s+", "", _clean(answer), flags=re.IGNORECASE)
    m = _REASON_PREFIX.match(reason)
    if m:
        rest = reason[m.end() :]
        first = (rest.split() or [""])[0].lower()
        if first in _NOT_A_REASON_VERB:
            return ""  # "I want to leave a message", "can I speak…": not what it's about
        reason = "to " + rest
    return _usable_reason(reason)
