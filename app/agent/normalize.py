"""Text normalisation for speech: write numbers, times, money and abbreviations out as words.

espeak-ng (and piper, which uses it) misreads "St.", "$45.20" and "1250"; hibari copes, but a
normaliser in front of every engine makes the engines interchangeable and the output
predictable. The transcript keeps the original text; only what is synthesised is normalised.

Rules, applied in this order (each a small regex + function):

1. phone numbers ("(555) 123-4567", "555-123-4567", "+1 555 123 4567", "555-1234") → digit by
   digit, groups separated by commas: "five five five, one two three, four five six seven"
2. money ("$45.20", "$1,250", "$5 million", "£3", "€9.99") → "forty-five dollars and twenty cents"
3. percentages ("15%") → "fifteen percent"
4. times ("9:30am", "9:30 a.m.", "5 pm", "14:05") → "nine thirty a m", "five p m", "fourteen oh five"
5. ordinals ("1st", "22nd") → "first", "twenty-second"
6. abbreviations (Dr., St., Mr., Mrs., Ms., Prof., Ave., Jan., etc., e.g., "&", "#4") → words;
   "Dr."/"St." become "Doctor"/"Saint" before a name and "Drive"/"Street" after one
7. decimals ("3.14") → "three point one four"
8. numbers with thousands separators ("1,250") → cardinal
9. other digit runs: 5+ digits or a leading zero → digit by digit (account numbers, zip codes);
   4 digits → read in pairs like years and street numbers ("1250" → "twelve fifty",
   "2024" → "twenty twenty-four", "2005" → "two thousand five"); shorter → cardinal.

The module is pure (no I/O) and knows nothing about engines.
"""

from __future__ import annotations

import re
from collections.abc import Callable

__all__ = ["cardinal", "digits", "normalize_for_speech", "ordinal", "paired"]

_ONES = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
]
_TENS = ["", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]
_SCALES = ((10**12, "trillion"), (10**9, "billion"), (10**6, "million"), (1000, "thousand"))
_ORDINAL_IRREGULAR = {
    "one": "first",
    "two": "second",
    "three": "third",
    "five": "fifth",
    "eight": "eighth",
    "nine": "ninth",
    "twelve": "twelfth",
}


def cardinal(n: int) -> str:
    """1250 → "one thousand two hundred fifty"."""
    if n < 0:
        return "minus " + cardinal(-n)
    if n < 20:
        return _ONES[n]
    if n < 100:
        tens, ones = divmod(n, 10)
        return _TENS[tens] + (f"-{_ONES[ones]}" if ones else "")
    if n < 1000:
        hundreds, rest = divmod(n, 100)
        return f"{_ONES[hundreds]} hundred" + (f" {cardinal(rest)}" if rest else "")
    for scale, word in _SCALES:
        if n >= scale:
            head, rest = divmod(n, scale)
            return f"{cardinal(head)} {word}" + (f" {cardinal(rest)}" if rest else "")
    raise AssertionError("unreachable")


def ordinal(n: int) -> str:
    """22 → "twenty-second"."""
    words = cardinal(n)
    head, sep, last = words.rpartition("-") if "-" in words.rsplit(" ", 1)[-1] else words.rpartition(" ")
    if last in _ORDINAL_IRREGULAR:
        last = _ORDINAL_IRREGULAR[last]
    elif last.endswith("y"):
        last = last[:-1] + "ieth"
    else:
        last += "th"
    return f"{head}{sep}{last}"


def digits(s: str) -> str:
    """ "0412" → "zero four one two"."""
    return " ".join(_ONES[int(c)] for c in s if c.isdigit())


def paired(n: int) -> str:
    """Four-digit numbers as years and street numbers are said: 1250 → "twelve fifty"."""
    if n % 1000 == 0 or 2000 <= n < 2010:
        return cardinal(n)
    hi, lo = divmod(n, 100)
    if lo == 0:
        return f"{cardinal(hi)} hundred"
    if lo < 10:
        return f"{cardinal(hi)} oh {_ONES[lo]}"
    return f"{cardinal(hi)} {cardinal(lo)}"


# --- 1. phone numbers ---------------------------------------------------------------------
_PHONE = re.compile(
    r"(?<![\w$])(?:\+\d{1,3}[\s.-]?)?(?:\(\d{3}\)\s?|\d{3}[\s.-])\d{3}[\s.-]\d{4}(?![\w])"
    r"|(?<![\w$])\+\d{1,3}(?:[\s.-]\d{2,4}){2,4}(?![\w])"
    r"|(?<![\w$.,])\d{3}-\d{4}(?![\w-])"
)


def _phone(m: re.Match[str]) -> str:
    return ", ".join(digits(group) for group in re.findall(r"\d+", m.group(0)))


# --- 2. money -------------------------------------------------------------------------------
_CURRENCY = {
    "$": ("dollar", "dollars", "cent", "cents"),
    "£": ("pound", "pounds", "penny", "pence"),
    "€": ("euro", "euros", "cent", "cents"),
}
_MONEY = re.compile(r"([$£€])\s?(\d{1,3}(?:,\d{3})+|\d+)(?:\.(\d{1,2}))?(?:\s(thousand|million|billion)\b)?")


def _money(m: re.Match[str]) -> str:
    one, many, cent, cents = _CURRENCY[m.group(1)]
    whole = int(m.group(2).replace(",", ""))
    if m.group(4):  # "$5.5 million" → "five point five million dollars"
        amount = f"{whole}.{m.group(3)}" if m.group(3) else str(whole)
        return f"{_decimal_words(amount)} {m.group(4)} {many}"
    frac = int((m.group(3) or "0").ljust(2, "0"))
    parts = []
    if whole or not frac:
        parts.append(f"{cardinal(whole)} {one if whole == 1 else many}")
    if frac:
        parts.append(f"{cardinal(frac)} {cent if frac == 1 else cents}")
    return " and ".join(parts)


# --- 3. percentages -------------------------------------------------------------------------
_PERCENT = re.compile(r"(?<![\w.])(\d+(?:\.\d+)?)\s?%")


def _percent(m: re.Match[str]) -> str:
    return f"{_decimal_words(m.group(1))} percent"


# --- 4. times -------------------------------------------------------------------------------
# The dot after "m" is consumed only mid-sentence, so "at 9 a.m." keeps its full stop.
_AMPM = r"([AaPp])\.?\s?[Mm](?:\.(?=\s+[a-z]|,))?(?![\w])"
_TIME_HM_AMPM = re.compile(r"(?<![\d:])(\d{1,2}):(\d{2})\s?" + _AMPM)
_TIME_H_AMPM = re.compile(r"(?<![\d:.,$])(\d{1,2})\s?" + _AMPM)
_TIME_HM = re.compile(r"(?<![\d:])([01]?\d|2[0-3]):([0-5]\d)(?![\d:])")


def _clock(hour: int, minute: int, suffix: str | None) -> str:
    h = cardinal(hour)
    if minute == 0:
        words = h if suffix else f"{h} o'clock" if hour <= 12 else f"{h} hundred"
    elif minute < 10:
        words = f"{h} oh {_ONES[minute]}"
    else:
        words = f"{h} {cardinal(minute)}"
    return f"{words} {suffix.lower()} m" if suffix else words


def _time_hm_ampm(m: re.Match[str]) -> str:
    return _clock(int(m.group(1)), int(m.group(2)), m.group(3))


def _time_h_ampm(m: re.Match[str]) -> str:
    return _clock(int(m.group(1)), 0, m.group(2))


def _time_hm(m: re.Match[str]) -> str:
    return _clock(int(m.group(1)), int(m.group(2)), None)


# --- 5. ordinals ----------------------------------------------------------------------------
_ORDINAL = re.compile(r"(?<![\w.])(\d+)(?:st|nd|rd|th)\b", re.IGNORECASE)

# --- 6. abbreviations -----------------------------------------------------------------------
_SIMPLE_ABBREVIATIONS = {
    "Mr.": "Mister",
    "Mrs.": "Missus",
    "Ms.": "Miz",
    "Prof.": "Professor",
    "Jr.": "Junior",
    "Sr.": "Senior",
    "Ave.": "Avenue",
    "Rd.": "Road",
    "Blvd.": "Boulevard",
    "Ln.": "Lane",
    "Apt.": "Apartment",
    "Ste.": "Suite",
    "Mt.": "Mount",
    "Ft.": "Fort",
    "Hwy.": "Highway",
    "Jan.": "January",
    "Feb.": "February",
    "Mar.": "March",
    "Apr.": "April",
    "Aug.": "August",
    "Sep.": "September",
    "Sept.": "September",
    "Oct.": "October",
    "Nov.": "November",
    "Dec.": "December",
    "Mon.": "Monday",
    "Tue.": "Tuesday",
    "Tues.": "Tuesday",
    "Wed.": "Wednesday",
    "Thu.": "Thursday",
    "Thur.": "Thursday",
    "Thurs.": "Thursday",
    "Fri.": "Friday",
    "Sat.": "Saturday",
    "etc.": "et cetera",
    "e.g.": "for example",
    "i.e.": "that is",
    "vs.": "versus",
    "approx.": "approximately",
    "ext.": "extension",
    "dept.": "department",
    "Dept.": "Department",
    "a.m.": "a m",
    "p.m.": "p m",
}
_SIMPLE = re.compile(
    r"(?<![\w.])(" + "|".join(re.escape(k) for k in sorted(_SIMPLE_ABBREVIATIONS, key=len, reverse=True)) + r")"
)
_TITLE_OR_PLACE = re.compile(r"(?<![\w.])(Dr|St)\.")
_NUMBER_SIGN = re.compile(r"(?:#|\bNo\.)\s?(?=\d)")


def _end_keep(m: re.Match[str], words: str) -> str:
    """Keep a full stop when the abbreviation's own dot also ended the text."""
    rest = m.string[m.end() :]
    return words + "." if m.group(0).endswith(".") and not rest.strip() else words


def _simple(m: re.Match[str]) -> str:
    return _end_keep(m, _SIMPLE_ABBREVIATIONS[m.group(1)])


def _title_or_place(m: re.Match[str]) -> str:
    before = m.string[: m.start()].rstrip()
    after = m.string[m.end() :].lstrip()
    prev = before.rsplit(None, 1)[-1] if before else ""
    prev_is_name = bool(prev) and (prev[0].isupper() or prev[0].isdigit()) and not before.endswith((".", "!", "?"))
    prev_is_first_word = " " not in before.strip()
    next_is_name = bool(after) and after[0].isupper()
    if m.group(1) == "Dr":
        words = "Doctor" if next_is_name else "Drive"
    else:
        words = "Saint" if next_is_name and (not prev_is_name or prev_is_first_word) else "Street"
    return _end_keep(m, words)


# --- 7–9. plain numbers ---------------------------------------------------------------------
_DECIMAL = re.compile(r"(?<![\w.,])(\d+\.\d+)(?![\w.]\d)")
_GROUPED = re.compile(r"(?<![\w.,])(\d{1,3}(?:,\d{3})+)(?![\d,]\d)")
_INTEGER = re.compile(r"(?<!\d)(\d+)(?!\d)")


def _decimal_words(s: str) -> str:
    whole, _, frac = s.partition(".")
    words = cardinal(int(whole))
    return f"{words} point {digits(frac)}" if frac else words


def _integer(m: re.Match[str]) -> str:
    s = m.group(1)
    if len(s) >= 5 or (len(s) > 1 and s[0] == "0"):
        return digits(s)
    if len(s) == 4:
        return paired(int(s))
    return cardinal(int(s))


_RULES: list[tuple[re.Pattern[str], Callable[[re.Match[str]], str] | str]] = [
    (_PHONE, _phone),
    (_MONEY, _money),
    (_PERCENT, _percent),
    (_TIME_HM_AMPM, _time_hm_ampm),
    (_TIME_H_AMPM, _time_h_ampm),
    (_TIME_HM, _time_hm),
    (_ORDINAL, lambda m: ordinal(int(m.group(1)))),
    (_NUMBER_SIGN, "number "),
    (_SIMPLE, _simple),
    (_TITLE_OR_PLACE, _title_or_place),
    (re.compile(r"\s*&\s*"), " and "),
    (_DECIMAL, lambda m: _decimal_words(m.group(1))),
    (_GROUPED, lambda m: cardinal(int(m.group(1).replace(",", "")))),
    (_INTEGER, _integer),
]


def normalize_for_speech(text: str) -> str:
    """Return ``text`` with numbers, times, money and abbreviations written out as words."""
    for pattern, repl in _RULES:
        text = pattern.sub(repl, text)
    return re.sub(r"[ \t]{2,}", " ", text).strip()
