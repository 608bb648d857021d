"""When a caller who listens decides the assistant has finished speaking: ``wait_verdict``, pure.

The caller waits twice at most: for the greeting before its audio (``SimConfig.speak_at_s`` is
None) and for the reply after it (``tail_s`` is None). Each wait ends when nothing is left in
the playback buffer and nothing new has come for ``quiet_s`` on both the stream and the wall
clock, or after ``max_wait_s`` of stream time. The stream loop asks once a slot; the verdict
also sets its pace (``"idle"`` runs the line at real time while the server may be thinking).
"""

from __future__ import annotations

__all__ = ["wait_verdict"]


def wait_verdict(
    now_ms: float,
    now_wall: float,
    *,
    start_ms: float,
    start_wall: float,
    last_ms: float,
    last_wall: float,
    playing: bool,
    quiet_s: float,
    max_wait_s: float,
) -> str:
    """Has the assistant finished speaking, for a caller who started waiting at ``start_*``?

    ``last_*`` is the last sign of the assistant (audio or a mark arriving, audio playing),
    on the stream clock (ms) and the wall clock (s); ``playing`` is whether the caller's
    playback buffer still holds audio or marks. Returns

    - ``"quiet"``: nothing left to play and nothing new for ``quiet_s`` on *both* clocks —
      the stream clock because the server detects the end of a turn from the stream, the
      wall clock because it needs real time to transcribe and synthesise whatever the speed;
    - ``"max-wait"``: ``max_wait_s`` of stream time since the wait began (the caller gives up);
    - ``"idle"``: quiet on the stream clock but not yet on the wall clock — the server may be
      thinking, so the caller's line should run at real time (it is silence anyway);
    - ``"waiting"``: keep going at the call's speed.
    """
    since_ms = now_ms - max(start_ms, last_ms)
    since_wall = now_wall - max(start_wall, last_wall)
    if not playing and since_ms >= quiet_s * 1000 and since_wall >= quiet_s:
        return "quiet"
    if now_ms - start_ms >= max_wait_s * 1000:
        return "max-wait"
    if not playing and since_ms >= quiet_s * 1000:
        return "idle"
    return "waiting"
