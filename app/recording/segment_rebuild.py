"""Rebuild a call's masters and journal from its segments in S3 (a host that claims an orphan call).

The host that recorded the call died; its local spool is gone with it. What it uploaded during
the call (`app.recording.segments`) is enough to finish the call elsewhere: LIST the segments of
every epoch, GET them a few at a time, and ``pwrite`` each track at ``44 + 2·start`` into fresh
masters (holes stay silence, as in a live recording), then concatenate the journal deltas in
order into the call's journal. The folder then looks like one a crash left behind, so the
existing ``finalize_call(recovered=True)`` finishes it unchanged.

Order: segments of a later epoch are written after an earlier epoch's, so where two owners
uploaded the same span the later owner's audio stands; journal deltas go in (epoch, start) order,
less the lines a later owner sent again (it uploads its whole journal, which begins with what it
inherited).
Memory: one segment per download thread (320 kB at 8 kHz, 640 kB at 16 kHz).
"""

from __future__ import annotations

import logging
import os
import struct
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from app.recording.track import HEADER_BYTES, MasterTrack
from app.storage.paths import TRACKS, validate_sid
from app.storage.s3_bucket import Bucket

__all__ = ["Rebuilt", "rebuild_masters", "NoSegments"]

log = logging.getLogger("callscribe.s3")

_PARALLEL = 4  # GETs in flight


class NoSegments(LookupError):
    """The call has no segments in S3: nothing to rebuild it from."""


@dataclass(frozen=True)
class Rebuilt:
    segments: int
    samples: int  # the end of the last segment: the masters' length
    rate: int
    journal_bytes: int
    epochs: tuple[int, ...]


def _parse_wav(body: bytes) -> tuple[int, np.ndarray]:
    """(rate, frames × 2 int16) of a segment."""
    channels, rate = struct.unpack("<HI", body[22:28])
    if body[:4] != b"RIFF" or channels != 2:
        raise ValueError("not a stereo PCM16 WAV segment")
    return rate, np.frombuffer(body, "<i2", offset=HEADER_BYTES).reshape(-1, 2)


def rebuild_masters(sid: str, folder: Path, bucket: Bucket) -> Rebuilt:
    """Write `folder`/inbound.wav, outbound.wav and journal.jsonl from the call's segments. Refuses a
    folder that already holds a journal (a host that recorded the call finalises from its own files)."""
    validate_sid(sid)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    journal = folder / "journal.jsonl"
    if journal.exists() and journal.stat().st_size:
        raise FileExistsError(f"{journal} exists: this host has the call's own files; finalise from them")
    found: dict[tuple[int, int], dict[str, str]] = {}
    for obj in bucket.list(bucket.segments_prefix(sid)):
        parsed = bucket.parse_segment(obj.key)
        if parsed:
            found.setdefault(parsed[:2], {})[parsed[2]] = obj.key
    wavs = [(k, v["wav"]) for k, v in sorted(found.items()) if "wav" in v]
    if not found:
        raise NoSegments(f"call {sid} has no segments in S3")

    def fetch(key: str) -> bytes:
        got = bucket.get(key)
        if got is None:
            raise FileNotFoundError(f"segment {key} vanished during the rebuild")
        return got[0]

    masters: dict[str, MasterTrack] = {}
    end, rate, journal_bytes = 0, 0, 0
    try:
        with ThreadPoolExecutor(_PARALLEL, thread_name_prefix="callscribe-rebuild") as pool:
            # map() keeps the order (epoch, start) and holds at most a few bodies ahead of the writer.
            for ((_, start), _key), body in zip(wavs, _bounded_map(pool, fetch, [k for _, k in wavs])):
                seg_rate, frames = _parse_wav(body)
                if not masters:
                    rate = seg_rate
                    for track in TRACKS:
                        path = folder / f"{track}.wav"
                        path.unlink(missing_ok=True)
                        masters[track] = MasterTrack(path, rate)
                if seg_rate != rate:
                    raise ValueError(f"segment at {start} is at {seg_rate} Hz, the call at {rate} Hz")
                for i, track in enumerate(TRACKS):
                    masters[track].write(start, np.ascontiguousarray(frames[:, i]).tobytes())
                end = max(end, start + len(frames))
            deltas = [(e, v["jsonl"]) for (e, _), v in sorted(found.items()) if "jsonl" in v]
            tmp = journal.with_name("journal.jsonl.rebuild")
            earlier: set[bytes] = set()  # lines of earlier epochs: a later owner re-sends what it rebuilt
            mine: set[bytes] = set()
            epoch_now = None
            with open(tmp, "wb") as out:
                for (epoch, _), body in zip(deltas, _bounded_map(pool, fetch, [k for _, k in deltas])):
                    if epoch != epoch_now:
                        earlier |= mine
                        mine, epoch_now = set(), epoch
                    for line in body.splitlines(keepends=True):
                        mine.add(line)
                        if line not in earlier:
                            out.write(line)
                            journal_bytes += len(line)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, journal)
    finally:
        for m in masters.values():
            m.close()
    epochs = tuple(sorted({e for e, _ in found}))
    log.info("call %s: rebuilt from %d segment(s) of epoch(s) %s: %.1f s of audio, %d journal bytes", sid,
             len(wavs), list(epochs), end / rate if rate else 0.0, journal_bytes)
    return Rebuilt(len(wavs), end, rate, journal_bytes, epochs)


def _bounded_map(pool: ThreadPoolExecutor, fn, keys: list[str]):
    """pool.map with at most _PARALLEL results waiting (pool.map submits everything at once)."""
    pending = []
    for key in keys:
        pending.append(pool.submit(fn, key))
        if len(pending) >= _PARALLEL:
            yield pending.pop(0).result()
    for f in pending:
        yield f.result()
