"""Name extraction: names only from name-shaped answers.

"my name is Anna Smith", "it's John", "this is Maria", "John here", or a bare answer of one to
three plausible name words; a capital is required where the same words are often not a name.
"""

from __future__ import annotations

import re

from app.agent.receptionist.phrases import _clean
from app.agent.receptionist.words import (
    _AFTER_NAME,
    _CORE,
    _INTRO,
    _NOT_NAMES,
    _NOT_NAME_ENDINGS,
    _STRONG_INTROS,
    _TITLES,
)


def _name_word(word: str, mode: str) -> bool:
    """Whether ``word`` may be part of a name. ``mode``: "strong" (after "my name is"), "weak"
    (after "it's"/"this is"/"I'm", where only a capital makes it a name), "lenient" (a weak intro in
    answer to "may I have your name?") or "bare" (the whole answer)."""
    letters = word.replace("'", "").replace("-", "")
    if len(letters) < 2 or not letters.isalpha():
        return False
    low, cap = word.lower(), word[0].isupper()
    if mode == "strong":
        return low not in _CORE if cap else (low not in _NOT_NAMES or low in ("will", "may"))
    if mode == "weak":
        return cap and (low not in _NOT_NAMES or low in ("will", "may"))
    if not cap and (low.endswith(_NOT_NAME_ENDINGS) or (len(low) > 5 and low.endswith(("ing", "ed")))):
        return False  # "it's ridiculous", "this is amazing", "i'm confused": words, not names
    return low not in _NOT_NAMES or (cap and low in ("will", "may"))


def _format_name(words: list[str]) -> str:
    """Capitals as said when Whisper wrote any ("McDonald"), else per part ("o'brien" → "O'Brien")."""

    def one(w: str) -> str:
        if any(c.isupper() for c in w):
            return w[0].upper() + w[1:]
        return re.sub(r"(^|[-'])([a-z])", lambda m: m.group(1) + m.group(2).upper(), w)

    return " ".join(one(w) for w in words)


def _name_from(words: list[str], mode: str, whole: bool) -> str:
    """A name from the start of ``words``: one to three name words, optionally after a title.

    ``whole``: the words must be the name and nothing else (a bare answer), except for a tail
    such as "from Acme" / "speaking"; otherwise the name is the longest name-like prefix.
    """
    title: list[str] = []
    if len(words) > 1 and words[0].lower().rstrip(".") in _TITLES:
        title, words = [words[0].rstrip(".")], words[1:]
    name: list[str] = []
    rest: list[str] = []
    for i, w in enumerate(words):
        if len(name) < 3 and _name_word(w, mode):
            name.append(w)
        else:
            rest = words[i:]
            break
    if not name:
        return ""
    if whole and rest and rest[0].lower() not in _AFTER_NAME:
        return ""  # "Purple monkey dishwasher and more": a sentence, not a name
    if whole and len(name) > 1 and name[0][0].isupper() and not all(w[0].isupper() for w in name):
        return ""  # sentence case ("Ask him later") rather than a name ("Ann Lee")
    return _format_name(title + name)


def _first_clause(text: str) -> list[str]:
    text = re.sub(r"\b(Mr|Mrs|Ms|Mx|Dr|Prof)\.", r"\1", text, flags=re.IGNORECASE)
    clause = re.split(r"[,.;:!?\"()]|\s-\s", text, maxsplit=1)[0]
    return [w.strip("'\"") for w in clause.split() if w.strip("'\"")]


def _extract_name(text: str, lenient: bool = False) -> str:
    """A name announced in ``text`` ("my name is Anna Smith", "it's John", "this is Maria")."""
    text = text.replace("’", "'")
    for m in _INTRO.finditer(text):
        strong = m.group(1).lower() in _STRONG_INTROS
        mode = "strong" if strong else ("lenient" if lenient else "weak")
        name = _name_from(_first_clause(text[m.end() :]), mode, whole=False)
        if name:
            return name
    m = re.search(r"^\s*([A-Za-z][\w'-]*(?:\s+[A-Za-z][\w'-]*){0,2})\s+(?:here|speaking)\b", _clean(text))
    if m and (lenient or m.group(1)[0].isupper()):  # "John here", "Maria speaking"
        return _name_from(m.group(1).split(), "bare" if lenient else "weak", whole=True)
    return ""


def _bare_name(text: str) -> str:
    """The whole answer as a name ("Ann Lee.", "mary", "Dr. Patel"), or ""."""
    return _name_from(_first_clause(_clean(text.replace("’", "'"))), "bare", whole=True)


def _person_asked_for(text: str) -> str:
    m = re.search(r"\b(?:speak|talk|chat)\s+(?:to|with)\s+(.+)", text, re.IGNORECASE)
    return _name_from(_first_clause(m.group(1)), "weak", whole=False) if m else ""
