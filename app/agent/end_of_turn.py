"""End of turn from the words: how long a pause must last before the caller's turn is over.

Sans-I/O and pure: text in, a verdict and a wait out. The turn detector (``vad.py``) hears a
pause; the turn collector (``turns.py``) transcribes the turn so far during it (speculatively)
and asks :meth:`EndOfTurnPolicy.wait_ms` how much silence ends this turn:

- **complete** — the transcript ends a sentence (``.``, ``!``, ``?``) and its last word does not
  leave it hanging: the turn ends after ``complete_ms`` of silence (short: answer quickly);
- **incomplete** — it ends on a word that promises more (``and``, ``so``, ``because``, ``the``,
  ``my number is``, ``um``…), on a comma or an ellipsis, or on a number (callers dictate phone
  numbers and dates in groups, with pauses between them): ``incomplete_ms`` (long: let them go on);
- **unknown** — nothing intelligible, no final punctuation, or only a greeting or a yes/no ("Hi.",
  "Yes." — often followed by more after a comma's pause): ``default_ms`` (the fixed wait,
  ``END_OF_TURN_MS``), as before there was a rule.

``complete_ms`` trades speed for patience: it should outlast the pause of a comma inside a
sentence, made after a clause Whisper hears as finished ("This is John Smith, [pause] calling
about…"). espeak makes 160–240 ms of them (as the turn detector measures them); people make
150–600 ms. 250 ms by default: the reply starts within ~400 ms of a finished sentence, and a
caller pausing longer than that after a finished-sounding clause is answered (then barges in).

Whisper punctuates what it hears as if it were finished ("And so, my fellow Americans."), so a
period is weak evidence on its own: the word lists carry most of the rule. The rule errs towards
waiting: a wrong "incomplete" costs the caller ``incomplete_ms`` of silence, a wrong "complete"
cuts them off.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

__all__ = ["Completeness", "EndOfTurnPolicy", "judge"]


class Completeness(enum.Enum):
    COMPLETE = "complete"
    INCOMPLETE = "incomplete"
    UNKNOWN = "unknown"


# Words after which an English sentence is not over.
CONJUNCTIONS = frozenset(
    "and or but nor so because cause cuz since if unless until till when whenever while whereas "
    "although though than then which whom whose whether as plus".split()
)
PREPOSITIONS = frozenset(
    "to for of in on at with from by about into onto over under after before between through "
    "during without within like per via around towards toward against near".split()
)
DETERMINERS = frozenset(
    "the a an my your our his her their its these those some any every each another".split()
)
AUXILIARIES = frozenset(
    "is are was were am be been being have has had do does did will would shall should can could "
    "may might must".split()
)
SUBJECTS = frozenset("i you we they he she it there that this who yes no not".split())
"""Before a final auxiliary, these make a short answer ("yes, it is", "I do"), not a hanging one."""
OPEN_SUBJECTS = frozenset("i i'm i'd i'll i've we we're we'll you're they're let's gonna wanna".split())
FILLERS = frozenset("um uh er erm ah hmm mm uhm umm uhh well like basically actually".split())
NUMBER_WORDS = frozenset(
    "zero oh one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
    "fifteen sixteen seventeen eighteen nineteen twenty thirty forty fifty sixty seventy eighty "
    "ninety hundred thousand double triple".split()
)
INTERJECTIONS = frozenset(
    "hi hello hey yes yeah yep no nope okay ok sure right alright oh well good morning afternoon "
    "evening".split()
)
"""A turn of these words alone ("Hi.", "Yes.", "Okay.") is often the start of a longer one ("Hi, this is
John…", "Yes, that's right."), and Whisper puts a period after it: not judged (``default_ms``)."""
TRAILING = CONJUNCTIONS | PREPOSITIONS | DETERMINERS | FILLERS | OPEN_SUBJECTS
# Words that still leave a question hanging ("Could you tell me if?"); a question may end on a
# preposition ("Who am I speaking with?").
QUESTION_TRAILING = CONJUNCTIONS | DETERMINERS | FILLERS

_WORD = re.compile(r"[a-z0-9']+")
_HANGING_PUNCT = ("…", "...", ",", ";", ":", "-", "—", "–")


def judge(text: str) -> Completeness:
    """Is ``text`` (a transcript of the turn so far) a finished thing to say?"""
    t = text.strip().lower()
    words = _WORD.findall(t.replace("’", "'"))
    if not words:
        return Completeness.UNKNOWN
    last = words[-1].strip("'")
    if all(w.strip("'") in INTERJECTIONS for w in words):
        return Completeness.UNKNOWN
    if t.endswith(_HANGING_PUNCT):
        return Completeness.INCOMPLETE
    if last.isdigit() or any(c.isdigit() for c in last) or last in NUMBER_WORDS:
        return Completeness.INCOMPLETE  # dictating digits: more groups may follow
    if t.endswith("?"):
        return Completeness.INCOMPLETE if last in QUESTION_TRAILING else Completeness.COMPLETE
    if last in TRAILING or words[-1] in TRAILING:
        return Completeness.INCOMPLETE
    if last in AUXILIARIES and not (len(words) > 1 and words[-2] in SUBJECTS):
        return Completeness.INCOMPLETE  # "my number is", "the thing is" (but "yes, it is", "I do")
    if t.endswith((".", "!")):
        return Completeness.COMPLETE
    return Completeness.UNKNOWN


@dataclass(frozen=True)
class EndOfTurnPolicy:
    """Silence (ms) that ends a caller's turn, by what the turn so far says."""

    complete_ms: int = 250
    incomplete_ms: int = 1500
    default_ms: int = 700

    def wait_ms(self, text: str | None) -> int:
        """The silence that ends the turn whose transcript so far is ``text`` (None: not known yet)."""
        if text is None:
            return self.default_ms
        verdict = judge(text)
        if verdict is Completeness.COMPLETE:
            return self.complete_ms
        if verdict is Completeness.INCOMPLETE:
            return self.incomplete_ms
        return self.default_ms

    @property
    def fixed(self) -> bool:
        """Every verdict waits the same: the words change nothing (the rule before this one)."""
        return self.complete_ms == self.incomplete_ms == self.default_ms
