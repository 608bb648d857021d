"""Sentence splitting, whole-text and incremental (for streamed LLM output).

A sentence ends at ``.``, ``!``, ``?`` or ``…`` (plus closing quotes/brackets) followed by
whitespace, or at a newline. A full stop after a known abbreviation ("Dr.", "St.", "e.g.") or a
single capital initial does not end a sentence, and neither does the dot inside "$45.20" or
"9.30" (no whitespace follows it). Pure; no engine knowledge.
"""

from __future__ import annotations

import re

__all__ = ["SentenceBuffer", "split_sentences"]

_ABBREVIATIONS = frozenset(
    "mr mrs ms dr prof st jr sr ave rd blvd ln apt ste mt ft no vs etc e.g i.e approx ext dept "
    "jan feb mar apr jun jul aug sep sept oct nov dec mon tue tues wed thu thur thurs fri sat sun "
    "a.m p.m inc ltd co".split()
)
_BOUNDARY = re.compile(r"[.!?…]+[\"'”’)\]]*(?=\s)|\n")


def _is_boundary(text: str, match: re.Match[str]) -> bool:
    if match.group(0) == "\n" or not match.group(0).startswith("."):
        return True
    word = text[: match.start()].rsplit(None, 1)[-1] if text[: match.start()].strip() else ""
    word = word.lstrip("(\"'“‘").lower()
    if word in _ABBREVIATIONS:
        return False
    return not (len(word) == 1 and word.isalpha())


def _split_complete(text: str) -> tuple[list[str], str]:
    """Complete sentences in ``text`` and the unfinished remainder."""
    out: list[str] = []
    cut = 0
    for m in _BOUNDARY.finditer(text):
        if m.end() <= cut or not _is_boundary(text, m):
            continue
        sentence = text[cut : m.end()].strip()
        if sentence:
            out.append(sentence)
        cut = m.end()
    return out, text[cut:]


def split_sentences(text: str) -> list[str]:
    """All sentences of a finished text, in order."""
    done, rest = _split_complete(text + " ")
    rest = rest.strip()
    return [*done, rest] if rest else done


class SentenceBuffer:
    """Feed streamed text pieces; get back each sentence as soon as it is complete.

    A sentence is only released when the whitespace after its end is seen, so "Dr." followed
    later by " Patel" in another chunk is not split early.
    """

    def __init__(self) -> None:
        self._text = ""

    def push(self, piece: str) -> list[str]:
        """Add streamed text; return the sentences completed by it."""
        self._text += piece
        done, self._text = _split_complete(self._text)
        return done

    def flush(self) -> list[str]:
        """End of stream: return whatever is left as a final sentence."""
        rest, self._text = self._text.strip(), ""
        return [rest] if rest else []
