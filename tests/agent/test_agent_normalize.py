"""Text normalisation and sentence splitting (pure)."""

from __future__ import annotations

import pytest

from app.agent.normalize import cardinal, normalize_for_speech, ordinal, paired
from app.agent.sentences import SentenceBuffer, split_sentences


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("It costs $45.20.", "It costs forty-five dollars and twenty cents."),
        ("Just $1 or $0.99.", "Just one dollar or ninety-nine cents."),
        ("A $1,250 deposit.", "A one thousand two hundred fifty dollars deposit."),
        ("Raised $5 million.", "Raised five million dollars."),
        ("Come at 9:30am.", "Come at nine thirty a m."),
        ("Come at 9:30 a.m. with your card.", "Come at nine thirty a m with your card."),
        ("Open 9am to 5 pm.", "Open nine a m to five p m."),
        ("At 9:05 or 14:30 or 12:00.", "At nine oh five or fourteen thirty or twelve o'clock."),
        ("The 1st, 2nd, 3rd, 11th and 22nd.", "The first, second, third, eleventh and twenty-second."),
        ("Dr. Patel at 1250 Oak St., today.", "Doctor Patel at twelve fifty Oak Street, today."),
        ("Meet Mr. and Mrs. Smith in St. Louis.", "Meet Mister and Missus Smith in Saint Louis."),
        ("Turn left on Elm Dr.", "Turn left on Elm Drive."),
        ("Call (555) 123-4567.", "Call five five five, one two three, four five six seven."),
        ("Call 555-123-4567 now.", "Call five five five, one two three, four five six seven now."),
        ("Dial +1 555 123 4567.", "Dial one, five five five, one two three, four five six seven."),
        ("Account 842906.", "Account eight four two nine zero six."),
        ("Zip 02139.", "Zip zero two one three nine."),
        ("In 2024 and 2005.", "In twenty twenty-four and two thousand five."),
        ("About 15% or 3.5 percent.", "About fifteen percent or three point five percent."),
        ("Room #4 & suite 12.", "Room number four and suite twelve."),
        ("On Jan. 5th, e.g. Mon.", "On January fifth, for example Monday."),
        ("No digits here.", "No digits here."),
    ],
)
def test_normalize_for_speech(text: str, expected: str) -> None:
    assert normalize_for_speech(text) == expected


def test_number_words() -> None:
    assert cardinal(0) == "zero"
    assert cardinal(101) == "one hundred one"
    assert cardinal(1_000_001) == "one million one"
    assert [ordinal(n) for n in (1, 2, 3, 5, 8, 9, 12, 20, 21, 100)] == [
        "first",
        "second",
        "third",
        "fifth",
        "eighth",
        "ninth",
        "twelfth",
        "twentieth",
        "twenty-first",
        "one hundredth",
    ]
    assert [paired(n) for n in (1250, 1900, 1205, 2000, 2009, 2024)] == [
        "twelve fifty",
        "nineteen hundred",
        "twelve oh five",
        "two thousand",
        "two thousand nine",
        "twenty twenty-four",
    ]


def test_split_sentences_keeps_abbreviations_and_amounts() -> None:
    text = "Thank you for calling Acme. Dr. Patel is in! Is $45.20 right? Bye"
    assert split_sentences(text) == ["Thank you for calling Acme.", "Dr. Patel is in!", "Is $45.20 right?", "Bye"]


def test_sentence_buffer_releases_sentences_as_they_complete() -> None:
    buf = SentenceBuffer()
    out = []
    for piece in ["Hel", "lo there.", " I am with Dr", ".", " Patel", ". Ok", "ay!"]:
        out.append(buf.push(piece))
    assert out == [[], [], ["Hello there."], [], [], ["I am with Dr. Patel."], []]
    assert buf.flush() == ["Okay!"]
    assert buf.flush() == []
