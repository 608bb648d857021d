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

from app.agent.receptionist.dialogue import ReceptionistResponder
from app.agent.receptionist.questions import MAX_ASKS

__all__ = ["MAX_ASKS", "ReceptionistResponder"]
