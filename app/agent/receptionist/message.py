"""The message being taken (:class:`_Draft`) and a message taken (:class:`_Note`, with its notes text)."""

from __future__ import annotations

from dataclasses import dataclass


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
