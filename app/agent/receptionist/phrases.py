"""Phrase matchers: what kind of turn a caller's text is (yes, no, stop, wait, goodbye, "a real person"…).

Whisper's punctuation and capitals vary, so text is compared lower-cased and without punctuation.
"""

from __future__ import annotations

import re

from app.agent.receptionist.words import (
    _ARE_YOU_HUMAN,
    _FILLER,
    _GOODBYE,
    _HALLUCINATIONS,
    _JUNK,
    _NO,
    _PAUSE,
    _PAUSE_WORDS,
    _PERSON_KEY,
    _PERSON_ONLY,
    _REPEAT,
    _STOP_WORDS,
    _WANTS_PERSON,
    _YES,
)


def _words(text: str) -> str:
    """Lower-case text with punctuation removed, padded with spaces, for phrase matching."""
    return " " + " ".join(re.sub(r"[^a-z0-9' ]+", " ", text.lower().replace("’", "'")).split()) + " "


def _has(text: str, *phrases: str) -> bool:
    w = _words(text)
    return any(f" {p} " in w for p in phrases)


def _tokens(text: str) -> list[str]:
    return [t.strip("'") for t in _words(text).split() if t.strip("'")]


def _only(text: str, allowed: frozenset[str]) -> bool:
    toks = _tokens(text)
    return bool(toks) and all(t in allowed for t in toks)


def _intelligible(text: str) -> bool:
    """False for empty text and for what Whisper emits on noise ("[BLANK_AUDIO]", "...", "(music)")."""
    stripped = re.sub(r"\[[^\]]*\]|\([^)]*\)|\*[^*]*\*|♪", " ", text)
    if len(re.sub(r"[^A-Za-z0-9]", "", stripped)) < 2:
        return False
    return _words(stripped).strip() not in _HALLUCINATIONS


def _substantive(text: str) -> bool:
    """True when some word carries meaning beyond fillers, function and command words."""
    return any(t not in _JUNK and not t.isdigit() for t in _tokens(text))


def _is_yes(text: str) -> bool:
    return _has(text, *_YES) and not _has(text, *_NO)


def _is_no(text: str) -> bool:
    return _has(text, *_NO)


def _is_pause(text: str) -> bool:
    return _has(text, *_PAUSE) and _only(text, _PAUSE_WORDS)


def _is_stop(text: str) -> bool:
    toks = _tokens(text)
    commanded = "stop" in toks or _has(text, "shut up", "be quiet", "stop talking")
    return commanded and all(t in _STOP_WORDS or t == "talking" for t in toks)


def _is_goodbye(text: str) -> bool:
    return _has(text, *_GOODBYE)


def _is_repeat(text: str) -> bool:
    w = _words(text).strip()
    w = re.sub(r"^(?:(?:sorry|um|uh|er|oh|hmm|huh)\s+)+(?=\S)", "", w) if w not in _REPEAT else w
    return w in _REPEAT or _has(text, "say that again", "repeat that", "didn't catch that", "didn't hear that")


def _wants_person(text: str) -> bool:
    w = _words(text)
    asks_if_human = _has(text, *_ARE_YOU_HUMAN) and not _has(text, "speak", "talk", "want", "need", "put me")
    if not asks_if_human and any(p.search(w) for p in _WANTS_PERSON):
        return True
    toks = _tokens(text)
    return bool(toks) and all(t in _PERSON_ONLY for t in toks) and any(t in _PERSON_KEY for t in toks)


def _clean(text: str) -> str:
    text = _FILLER.sub("", text.strip())
    return text.strip(" .,!?;:-")
