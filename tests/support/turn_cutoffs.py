"""False cut-offs of the end of turn: real speech with its natural pauses, streamed as a phone call.

Each recording is one caller's utterance. It is streamed (8 kHz μ-law, 20 ms frames, with silence
around it) through the call's turn detector and turn collector, with the speech-to-text and the
end-of-turn rule a phone call gets from the given settings (``app.agent.wiring.turn_taking``).
A turn that ends while more of the recording's speech follows is a **false cut-off**: the assistant
would have answered inside the caller's utterance. The last turn's **wait** is the stream time from
the end of its speech to the moment the turn ended (what the caller waits before the assistant
starts working on the answer).

Frames are fed as fast as possible, except while the collector holds frames back for a pause's words:
then they are paced in real time, so the speech-to-text takes as much stream time as it would live.
Used by tests/agent/test_agent_end_of_turn_models.py and by the assistant benchmark.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tests.support.paths import TESTDATA

SPEECH = TESTDATA / "speech"
RATE = 8000
FRAME = 160


@dataclass
class StreamResult:
    name: str
    turns: list[tuple[int, int, int]] = field(default_factory=list)  # (start, end, ended at) in samples
    decisions: list[tuple[str, int]] = field(default_factory=list)  # (words so far, wait ms) per judged pause

    @property
    def cutoffs(self) -> int:
        return max(0, len(self.turns) - 1)

    @property
    def last_wait_ms(self) -> float | None:
        if not self.turns:
            return None
        _, end, at = self.turns[-1]
        return (at - end) * 1000 / RATE


def telephone(path: Path) -> np.ndarray:
    """A recording as a caller's side of a phone call: mono, 8 kHz, through μ-law, int16."""
    import soundfile as sf

    from app.audio import mulaw
    from app.audio.resample import resample

    x, sr = sf.read(path, dtype="float32", always_2d=True)
    return mulaw.decode(mulaw.float_to_ulaw(resample(x.mean(axis=1), sr, RATE)))


def speech_files() -> list[Path]:
    return sorted(p for p in SPEECH.iterdir() if p.suffix in (".wav", ".flac"))


async def stream_turns(audio: np.ndarray, stt, settings, name: str = "", lead_s: float = 0.5,
                       trail_s: float = 2.5, max_hold_ms: int | None = None) -> StreamResult:
    """Stream one caller's audio through the phone call's turn taking; return its turns. `max_hold_ms`:
    the collector's (the call's when None); a larger one judges every pause by its words however slow
    the machine's speech-to-text is at the moment."""
    from app.agent.turns import TurnCollector
    from app.agent.vad import TurnEnded, default_detector
    from app.agent.wiring import _SttAt, turn_taking

    params, policy = turn_taking(settings)
    detector = default_detector(params, RATE)
    hold = {} if max_hold_ms is None else {"max_hold_ms": max_hold_ms}
    collector = TurnCollector(detector, _SttAt(stt, RATE, settings.stt_window_s), policy, **hold)
    out = StreamResult(name)

    def on_events(events, now: int) -> None:
        collector.take(events)
        out.turns += [(ev.start_sample, ev.end_sample, now) for ev in events if isinstance(ev, TurnEnded)]

    collector.on_events = on_events
    x = np.concatenate([np.zeros(int(lead_s * RATE), np.int16), audio, np.zeros(int(trail_s * RATE), np.int16)])
    for i in range(0, len(x) - FRAME + 1, FRAME):
        on_events(collector.feed(x[i:i + FRAME], i), i + FRAME)
        await asyncio.sleep(FRAME / RATE if collector.judging else 0)
    while collector.judging:  # the last pause's words
        await asyncio.sleep(0.02)
    spec = collector._speculative
    if spec is not None:  # let an early transcription finish: the next recording must not compete with it
        await asyncio.wait([spec[1]])
    out.decisions = list(collector.decisions)
    return out


async def count_cutoffs(stt, settings, files: list[Path] | None = None,
                       max_hold_ms: int | None = None) -> list[StreamResult]:
    return [await stream_turns(telephone(f), stt, settings, f.name, max_hold_ms=max_hold_ms)
            for f in (files or speech_files())]


def rule_settings(**overrides):
    """Settings for the rule under test, from the defaults (no env read beyond what Settings does)."""
    from app.config import Settings

    return Settings(**overrides)
