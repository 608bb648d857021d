"""ReceptionistResponder: an offline, rule-based receptionist that takes messages.

Dialogue (one small state machine; every reply is a few short sentences)::

    OPEN ──request──▶ ASK_NAME ──name──▶ ASK_REASON ──reason──▶ CONFIRM ──yes──▶ message taken ──▶ OPEN
                         ▲                                         │ no
                         └─────────────────────────────────────────┘

What a caller can rely on:

- **No question more than twice in a row.** Each question is counted while it stays unanswered
  (noise, fillers, "what?", a question of the caller's). The third time it would be needed, the
  receptionist moves on instead: it goes on without a name; a message without a reason becomes a
  call-back request; a read-back nobody confirmed is passed on marked "(not confirmed)"; when the
  open question gets nowhere it offers to take a message, and when nothing could be understood at
  all it ends the call politely.
- **Names only from name-shaped answers**: "my name is Anna Smith", "it's John", "this is Maria",
  "John here", or a bare answer of one to three plausible name words. Command words, fillers,
  questions, negations, numbers and fragments ("Ask not!", "Wait, wait, stop, please",
  "I don't know") are never names. Whisper's punctuation and capitals vary, so words are judged
  without them, except that a capital is required where the same words are often not a name:
  after "it's" / "this is" / "I'm" in passing, and a name given late in place of the reason.
- **"I want a real person" / "operator" / "can I speak to someone"**: there is no transfer
  offline, so it says so, takes a message, and marks it "Asked for a person: please call back".
  Messages are what :meth:`notes` returns; they are journaled at hang-up and listed in the summary.
- **"Stop", "stop talking", "that's all", "goodbye"** end the call (:attr:`ends_call`); a message
  given but not confirmed is kept, marked "(not confirmed)". **"Wait" / "hold on"** make it stop
  and listen ("Of course, go ahead.").
- Plain questions are answered at any point: the time (from the injected clock), the opening
  hours (a settings string), who it is. The pending question follows while it may still be asked.
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

__all__ = ["MAX_ASKS", "ReceptionistResponder"]

MAX_ASKS = 2
"""How many times in a row the same question may be asked before the dialogue moves on."""


class _State(enum.Enum):
    OPEN = "open"
    ASK_NAME = "ask_name"
    ASK_REASON = "ask_reason"
    CONFIRM = "confirm"
    ENDED = "ended"


@dataclass
class _Draft:
    """The message being taken."""

    name: str = ""
    reason: str = ""
    callback: str = ""  # "" | "callback" (asked to be called back) | "person" (asked for a person)
    for_whom: str = ""  # the person asked for, when named ("Dr Patel")
    name_skipped: bool = False  # declined, or asked twice without a usable answer
    reason_skipped: bool = False
    declined: bool = False  # the caller said they'd rather not leave a reason


@dataclass
class _Note:
    """A message taken, as listed in the summary."""

    name: str
    reason: str
    callback: str
    for_whom: str
    confirmed: bool

    def text(self) -> str:
        out = f"Name: {self.name or 'unknown'} — Reason: {self.reason or 'not given'}"
        if self.callback == "person":
            out += f" — Asked for {self.for_whom or 'a person'}: please call back"
        elif self.callback:
            out += " — Please call back"
        return out if self.confirmed else out + " (not confirmed)"


# --- words ---------------------------------------------------------------------------------


def _set(text: str) -> frozenset[str]:
    return frozenset(text.split())


_FILLERS = _set(
    "um umm uhm uh uhh er erm ah ahh eh hm hmm hmmm mm mmm mhm huh oh ooh ow well like so okay ok alright "
    "right yeah yes yep yup ya yah no nope nah hi hello hey hiya please thanks thank cheers sorry pardon "
    "excuse oops wow whoa great cool fine sure good nice lovely perfect bye goodbye maybe perhaps probably "
    "actually basically anyway"
)
_FUNCTION = _set(
    "a an the and or but nor if then than so to of in on at by for with without from about as into onto "
    "upon up down out off over under again just also too very really quite only even still yet here there "
    "this that these those it its it's that's there's here's what's who's is are was were be been being am "
    "do does did done doing have has had having can could will would shall should may might must "
    "i i'm i've i'd i'll me my mine myself you you're you've you'd you'll your yours yourself we we're "
    "we've us our ours they they're them their he he's him his she she's her it'd let's "
    "what when where who whom whose why how which whatever whoever "
    "not don't doesn't didn't can't cannot couldn't won't wouldn't isn't aren't wasn't weren't haven't "
    "hasn't hadn't shouldn't ain't never nothing none nobody nowhere anything something everything "
    "someone somebody anyone anybody everyone everybody some any all every each both either neither "
    "other another same such own more most less least much many few lot lots bit kind sort way thing "
    "things stuff yes no"
)
_NUMBERS = _set(
    "zero oh one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
    "sixteen seventeen eighteen nineteen twenty thirty forty fifty sixty seventy eighty ninety hundred "
    "thousand million first second third"
)
_COMMANDS = _set(
    "stop stopped wait waiting hold hang ask asked asking tell told say said saying says repeat listen "
    "listening hear heard hearing talk talked talking speak speaking spoke go going gone went get "
    "getting got give giving gave let see saw look looking know knowing knew think thinking thought "
    "want wanted wanting need needed needing like liked call called calling phone phoning ring ringing "
    "try trying tried come coming came make making made take taking took put keep mean meant help "
    "helping leave leaving left wanna gonna gotta shut quiet end understand understood message"
)
_JUNK = _FILLERS | _FUNCTION | _NUMBERS | _COMMANDS
"""Words that carry no request or reason on their own."""

_CORE = _JUNK - {"will", "may"}
"""Never a name, even announced and capitalised ("my name is Will" is a name)."""

_NOT_NAMES = _JUNK | _set(
    "urgent important busy ready late early new old happy sad sick ill tired confused lost available "
    "free correct wrong true false maybe probably definitely actually basically honestly literally "
    "seriously anyway anyways today tomorrow yesterday tonight morning afternoon evening night now "
    "later soon before after already always sometimes bad interested hoping wondering worried "
    "messages appointment appointments question questions problem problems issue issues name number "
    "phone line time hours hour minute minutes moment seconds day days week weeks office reception "
    "receptionist person people human operator agent representative manager someone somebody robot "
    "machine computer real live actual monday tuesday wednesday thursday friday saturday sunday "
    "calling looking here back home again billing invoice booking bookings payment refund delivery order "
    "cancellation prescription cleaning checkup emergency insurance account complaint quote repair results "
    "ridiculous crazy stupid weird strange annoying terrible awful horrible silly funny boring difficult "
    "hard easy simple impossible amazing awesome obvious private personal nobody's mine open opened opening "
    "closed close closing mr mrs ms miss mx dr doctor prof professor"
)
"""Common words that are not names when they stand alone or after a weak intro ("it's urgent")."""

_NOT_NAME_ENDINGS = ("ous", "ful", "able", "ible", "less", "ical", "ness", "ment")
_TITLES = _set("mr mrs ms miss mx dr doctor prof professor")
_AFTER_NAME = _set("from here speaking calling and with at again")  # "John from Acme", "Maria speaking"

_GOODBYE = (
    "goodbye",
    "good bye",
    "bye",
    "bye bye",
    "that's all",
    "that is all",
    "that's it",
    "that's everything",
    "that's enough",
    "hang up",
    "end the call",
    "end call",
    "nothing else",
    "never mind",
    "nevermind",
    "forget it",
    "i'm done",
    "i am done",
    "we're done",
    "i have to go",
    "i've got to go",
    "i got to go",
    "gotta go",
    "have a good day",
    "have a nice day",
    "talk to you later",
    "speak to you later",
    "see you",
)
_YES = (
    "yes",
    "yeah",
    "yep",
    "yup",
    "ya",
    "correct",
    "right",
    "that's right",
    "that is right",
    "that's it",
    "sure",
    "absolutely",
    "exactly",
    "affirmative",
    "ok",
    "okay",
    "perfect",
    "mm hmm",
    "uh huh",
    "mhm",
    "yes please",
    "sounds good",
    "it is",
    "that is",
    "you got it",
    "got it",
    "spot on",
    "all good",
    "good",
    "great",
    "fine",
    "lovely",
    "brilliant",
    "indeed",
    "definitely",
    "of course",
    "certainly",
    "please do",
)
_NO = (
    "no",
    "nope",
    "nah",
    "not quite",
    "wrong",
    "incorrect",
    "that's wrong",
    "not right",
    "not correct",
    "that's not",
    "that isn't",
    "not really",
    "not exactly",
    "is not",
    "isn't",
    "it's not",
    "not it",
)
_TIME = ("what time is it", "what's the time", "what is the time", "the time", "time is it")
_HOURS = ("hours", "open", "opening", "close", "closing", "closed", "opens", "closes")
_QUESTION_WORDS = (
    "what",
    "when",
    "who",
    "whose",
    "are you",
    "do you",
    "is it",
    "is this",
    "how late",
    "how long",
    "until",
    "tell me",
    "like to know",
    "want to know",
    "need to know",
)
_WHO = (
    "who are you",
    "who is this",
    "who's this",
    "who am i speaking",
    "who am i talking",
    "your name",
    "a robot",
    "a bot",
    "a machine",
    "a computer",
    "an ai",
    "a recording",
    "automated",
    "are you human",
    "are you a human",
    "are you a person",
    "are you a real",
    "are you real",
)
_ARE_YOU_HUMAN = ("are you human", "are you a human", "are you a person", "are you a real", "are you real")
_REPEAT = (
    "what",
    "what was that",
    "what did you say",
    "sorry",
    "sorry what",
    "pardon",
    "pardon me",
    "excuse me",
    "come again",
    "say that again",
    "say again",
    "repeat that",
    "repeat",
    "can you repeat",
    "could you repeat",
    "please repeat",
    "i didn't hear",
    "i didn't catch",
    "didn't catch that",
    "i can't hear you",
    "huh",
)
_PAUSE = (
    "wait",
    "hold on",
    "hang on",
    "one moment",
    "one second",
    "one sec",
    "a moment",
    "a second",
    "a sec",
    "a minute",
)
_PAUSE_WORDS = _set(
    "wait hold hang on one a moment second sec minute just please stop sorry ok okay oh um uh er hey no "
    "give me let sure yes yeah there right so hmm hm ah i need to get find grab pen paper it check while "
    "little bit look for my moment"
)
_STOP_WORDS = _set(
    "stop please just now it talking that ok okay oh so you can could will would right there all the call "
    "this shut up be quiet enough no i said hey calling me"
)
_REFUSE = (
    "rather not",
    "prefer not",
    "don't want to say",
    "don't want to give",
    "don't want to tell",
    "not telling",
    "won't say",
    "won't tell",
    "not going to say",
    "not going to tell",
    "none of your business",
    "anonymous",
    "no name",
    "doesn't matter",
    "does not matter",
    "not important",
    "skip",
    "no thanks",
    "no thank you",
)
_HUMAN_WORDS = r"(?:person|human|humans|operator|agent|representative|people|staff)"
_WANTS_PERSON = [
    re.compile(r"\b(?:speak|talk|chat)\s+(?:to|with)\s+(?!you\b)"),  # not "talk to you later"
    re.compile(r"\b(?:put|transfer|connect)\s+(?:me|us|my call|this call|the call)\b"),
    re.compile(
        r"\b(?:want|need|like|get|give me|prefer|is there|can i have|let me have)\s+"
        r"(?:(?:a|an|the|to|me|real|live|actual|proper|please|some|another)\s+){0,3}" + _HUMAN_WORDS + r"\b"
    ),
    re.compile(r"\b(?:real|live|actual)\s+(?:person|human|people|agent|operator)\b"),
    re.compile(r"\bhuman being\b"),
]
_PERSON_ONLY = _set("operator agent human representative person a an please the real live customer service i want need")
_PERSON_KEY = _set("operator agent human representative person")
_CALLBACK = re.compile(r"\bcall (?:me |us )?back\b|\bcallback\b|\bring (?:me |us )?back\b")
_GREETING_ONLY = _set("hi hello hey hiya good morning afternoon evening there anyone anybody is")
_THANKS_ONLY = _set(
    "thanks thank you that's great perfect lovely cheers ok okay alright brilliant very much so wonderful "
    "excellent good fine cool awesome that's it all"
)
_PLAIN_YES = _set("yes yeah yep yup ya sure ok okay please")

_INTRO = re.compile(
    r"\b(my name is|my name's|name's|the name is|name is|you can call me|call me|this is|it's|its|it is|i'm|i am)\s+",
    re.IGNORECASE,
)
_STRONG_INTROS = frozenset(
    {"my name is", "my name's", "name's", "the name is", "name is", "you can call me", "call me"}
)
_REASON_INTRO = re.compile(
    r"\b(?:i'm calling|i am calling|calling|it's|it is|this is|i'm phoning|i'm ringing)?\s*"
    r"(?:about|regarding|because|in regards to|with regard to|concerning)\s+(.+)",
    re.IGNORECASE,
)
_REASON_TO = re.compile(
    r"\b(?:i'd like|i would like|i want|i wanted|i need|i'm calling|i am calling|i'm phoning|i'm ringing|"
    r"i was hoping|i'm hoping|i'm trying|i am trying|i have|i've got|calling)\s+to\s+([a-z]+)\b(.*)",
    re.IGNORECASE,
)
_NOT_A_REASON_VERB = _set("leave speak talk chat know be get hear say tell ask go")
_REASON_PREFIX = re.compile(
    r"^(?:i'm calling|i am calling|i'm phoning|i'm ringing|i was calling|i'd like|i would like|i want|i wanted|"
    r"i need|i was hoping|i'm hoping|i'm trying|i am trying|i have|i've got|can i|could i|may i)\s+(?:to\s+)?",
    re.IGNORECASE,
)
_FILLER = re.compile(
    r"^(?:(?:um+|uh+|er+|erm|hmm+|mm+|ah+|well|so|oh|hi|hello|hey|yes|yeah|okay|ok|sure|right|alright)[,.!]?\s+)+",
    re.IGNORECASE,
)
_HALLUCINATIONS = frozenset(
    {"you", "thanks for watching", "thank you for watching", "please subscribe", "subtitles by the amara org community"}
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


# --- names ---------------------------------------------------------------------------------


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


# --- reasons -------------------------------------------------------------------------------


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


# --- the responder -------------------------------------------------------------------------


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

    # --- moving through the questions -----------------------------------------------------
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
