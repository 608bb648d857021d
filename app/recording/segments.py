"""The recording reaches S3 while the call goes on: `SegmentUploads` (the host's queue, workers and metrics).

Every SEGMENT_SECONDS of *settled* audio (before ``stream − reorder window``: late frames and a
clear can no longer change it) becomes one immutable object,
``.calls/<sid>/seg/e<epoch:03d>/<start:010d>.wav`` — stereo PCM16 at the call's rate, L the
caller (inbound master), R the other side (outbound) — with the journal lines appended since the
previous segment beside it as ``<start:010d>.jsonl``. S3 refuses multipart parts under 5 MiB
(minutes of 8 kHz audio), so a segment is an object of its own; a host that dies loses at most
one segment plus the reorder window and the upload in flight.

Why it is cheap and cannot hurt a call: the event loop only stores the settled sample
(``on_settled``, an int) and, when a whole segment is ready and the call has nothing queued,
puts the call on a queue. A few worker threads (nice 10, like the encoders) read the segment
from the masters with ``read_block`` and PUT it (obstore: ~0.2-0.4 ms CPU). One upload at most
is in flight per call. A segment is a *range of the local masters*, so the backlog is a cursor,
not data: ``segments.json`` in the call's folder keeps ``done`` (samples uploaded) and the journal
byte offset; if S3 is down the call is retried with backoff (0.5 s doubling to 30 s) while the
masters keep growing on disk; memory stays flat and, when S3 is back, the backlog drains in
order. At hang-up: the last, partial segment; then the call's outputs are committed
(`S3Artefacts.commit`) — the files are ready locally at once, the upload follows. The state file
also remembers a commit not yet made, so a restart (``resume_pending``) finishes it.

The epoch in the key is the call's fencing epoch from the coordinator (0 on one host): a host
that lost the call and comes back writes under its old epoch and cannot overwrite the new owner's.

Recording's side of S3: the masters and the journal are read by each call's `SegmentUploader`
(`app.recording.segment_uploader`); the bucket, its names and the commit are `app.storage`'s
(`Bucket`, `S3Artefacts`). Knows no call session and no web framework.
"""

from __future__ import annotations

import heapq
import json
import logging
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from app.recording.segment_uploader import STATE_FILE, SegmentUploader
from app.storage.s3_artefacts import S3Artefacts
from app.storage.s3_bucket import S3Unavailable
from app.threads import lower_priority

__all__ = ["SegmentUploads", "segment_uploads"]

log = logging.getLogger("callscribe.s3")

_BACKOFF_FIRST_S = 0.5
_BACKOFF_MAX_S = 30.0


def segment_uploads(artefacts: object, segment_seconds: float = 10.0) -> SegmentUploads | None:
    """The uploader for a store whose artefacts are in S3; None for the local folder."""
    if not isinstance(artefacts, S3Artefacts):
        return None
    return SegmentUploads(artefacts, segment_seconds=segment_seconds)


@dataclass
class _Stats:
    segments: int = 0
    segment_bytes: int = 0
    failures: int = 0
    commits: int = 0
    kept_theirs: int = 0
    put_seconds: float = 0.0  # wall time in segment PUTs
    put_cpu_seconds: float = 0.0  # CPU of the uploading threads in segment PUTs (thread time)
    max_backlog_s: float = 0.0
    last_commit_s: float = 0.0  # the commit asked for (files final locally) → committed in the bucket


class SegmentUploads:
    """The host's upload workers: segments of every live call, then each call's commit."""

    def __init__(self, artefacts: S3Artefacts, *, segment_seconds: float = 10.0, workers: int = 2) -> None:
        self.artefacts = artefacts
        self.bucket = artefacts.bucket
        self.segment_seconds = segment_seconds
        self.calls: dict[str, SegmentUploader] = {}
        self.stats = _Stats()
        self._cv = threading.Condition()
        self._ready: deque[SegmentUploader] = deque()
        self._delayed: list[tuple[float, int, SegmentUploader]] = []
        self._seq = 0
        self._running = 0
        self._closed = False
        self._threads = [threading.Thread(target=self._work, name=f"callscribe-s3-{i}", daemon=True)
                         for i in range(workers)]
        for t in self._threads:
            t.start()

    # ------------------------------------------------------------------ what the registry calls
    def start(self, sid: str, folder: Path, rate: int, epoch: int = 0) -> SegmentUploader:
        """A call began (or resumed) recording on this host: its uploader, fed with ``on_settled``."""
        u = SegmentUploader(sid, Path(folder), rate, max(1, round(self.segment_seconds * rate)), epoch)
        u._uploads = self
        if u.load():  # a call resumed on this host: go on from its cursor (what it asked for before is moot)
            u.end, u.attempt, u.published, u.journal_flushed = None, None, None, False
        with self._cv:
            self.calls[sid] = u
        return u

    def ended(self, sid: str, total: int) -> None:
        """The call's stream ended at ``total`` samples: the last segment goes up."""
        u = self.calls.get(sid)
        if u is not None:
            u.end = total
            self.kick(u)

    def publish(self, sid: str, folder: Path, *, epoch: int = 0, replace: bool = False,
                recovered: bool = False) -> None:
        """Commit the call's finished local files to the bucket (after its last segment), retrying until S3 answers."""
        with self._cv:
            u = self.calls.get(sid)
            if u is None:  # a call finalised from disk (recovered, or re-exported): only its commit is left
                u = SegmentUploader(sid, Path(folder), 0, 1, epoch)
                u.load()
                u.done = u.end = 0
                u.journal_flushed = True
                self.calls[sid] = u
        if u.published and not replace:
            return  # committed already (by this host, or kept from another)
        if u.attempt is None or replace:
            u.attempt, u.published = f"e{epoch:03d}-{secrets.token_hex(4)}", None
        u.replace, u.recovered = replace or u.replace, recovered
        u.publish_asked = time.monotonic()
        u.save()  # before any upload: a restart finds the commit to make (and its attempt)
        self.kick(u)

    def resume_pending(self, calls_dir: Path) -> list[str]:
        """At start-up: commits a previous run asked for and never finished (S3 was away, or the host died)."""
        queued = []
        for state in sorted(calls_dir.glob(f"*/{STATE_FILE}")):
            folder = state.parent
            if folder.name in self.calls or not (folder / "finalized").exists():
                continue  # unfinished calls are the registry's recovery's: it asks for their commit itself
            try:
                data = json.loads(state.read_text())
            except (OSError, ValueError):
                continue
            if data.get("published"):
                continue
            self.publish(folder.name, folder, epoch=int(data.get("epoch", 0)), replace=bool(data.get("replace")),
                         recovered=bool(data.get("recovered")))
            queued.append(folder.name)
        if queued:
            log.info("S3: %d call(s) whose files were not yet in the bucket are being committed", len(queued))
        return queued

    def backlog(self) -> dict[str, float]:
        """Seconds of settled audio each live call has not uploaded yet."""
        return {sid: max(0, u.settled - u.done) / u.rate for sid, u in list(self.calls.items()) if u.rate}

    def metric_rows(self) -> list[tuple[str, str, str, float]]:
        """For /metrics: (name, type, help, value)."""
        st, backlog = self.stats, self.backlog()
        pending = sum(1 for u in list(self.calls.values()) if u.attempt and not u.published)
        return [
            ("callscribe_s3_segments_total", "counter", "Segment objects uploaded by this process", st.segments),
            ("callscribe_s3_segment_bytes_total", "counter", "Bytes of segments and journal deltas uploaded",
             st.segment_bytes),
            ("callscribe_s3_segment_put_cpu_seconds_total", "counter", "CPU spent in segment PUTs", st.put_cpu_seconds),
            ("callscribe_s3_upload_failures_total", "counter", "S3 requests that failed (retried with backoff)",
             st.failures),
            ("callscribe_s3_backlog_seconds", "gauge", "Most settled audio of one live call not yet in S3",
             max(backlog.values(), default=0.0)),
            ("callscribe_s3_commits_total", "counter", "Calls whose files this process committed", st.commits),
            ("callscribe_s3_commits_pending", "gauge", "Calls whose files wait to be committed", pending),
            ("callscribe_s3_last_commit_seconds", "gauge", "Files final locally → committed in S3, last call",
             st.last_commit_s),
        ]

    def idle(self) -> bool:
        with self._cv:
            return not self._ready and not self._delayed and not self._running and not any(
                u.attempt and not u.published for u in self.calls.values())

    def close(self, timeout: float = 10.0) -> bool:
        """Wait up to ``timeout`` for queued work, then stop; True when nothing was left (the rest waits on disk)."""
        if self._closed:
            return self.idle()
        deadline = time.monotonic() + timeout
        while not self.idle() and time.monotonic() < deadline:
            time.sleep(0.05)
        left = not self.idle()
        with self._cv:
            self._closed = True
            self._cv.notify_all()
        for t in self._threads:
            t.join(timeout=max(0.1, deadline - time.monotonic()))
        if left:
            log.warning("S3: uploads still pending at shutdown; the next start finishes them from the local spool")
        return not left

    # ------------------------------------------------------------------ scheduling
    def kick(self, u: SegmentUploader) -> None:
        with self._cv:
            if u._state == "idle":
                u._state = "queued"
                self._ready.append(u)
                self._cv.notify()
            elif u._state == "running":
                u._again = True

    def _later(self, u: SegmentUploader, delay: float) -> None:
        with self._cv:
            u._state = "waiting"
            self._seq += 1
            heapq.heappush(self._delayed, (time.monotonic() + delay, self._seq, u))
            self._cv.notify()

    def _wake_waiting(self) -> None:
        with self._cv:
            for _, _, w in self._delayed:
                w._state = "queued"
                self._ready.append(w)
            self._delayed.clear()
            self._cv.notify_all()

    def _next(self) -> SegmentUploader | None:
        with self._cv:
            while True:
                now = time.monotonic()
                while self._delayed and self._delayed[0][0] <= now:
                    u = heapq.heappop(self._delayed)[2]
                    u._state = "queued"
                    self._ready.append(u)
                if self._ready:
                    u = self._ready.popleft()
                    u._state, u._again = "running", False
                    self._running += 1
                    return u
                if self._closed:
                    return None
                self._cv.wait(self._delayed[0][0] - now if self._delayed else None)

    def _work(self) -> None:
        lower_priority()
        while (u := self._next()) is not None:
            delay = None
            try:
                self._run(u)
                if u.failures:  # S3 answers again: the calls waiting out their backoff go now, not in 30 s
                    self._wake_waiting()
                u.failures = 0
            except (S3Unavailable, OSError) as exc:
                u.failures += 1
                self.stats.failures += 1
                delay = min(_BACKOFF_MAX_S, _BACKOFF_FIRST_S * 2 ** (u.failures - 1))
                if u.failures == 1 or u.failures % 10 == 0:
                    log.warning("call %s: S3 upload failed %d time(s) (%s); retrying in %.1f s, the audio waits in "
                                "the local masters", u.sid, u.failures, exc, delay)
            except Exception:
                log.exception("call %s: S3 upload step failed", u.sid)
                delay = _BACKOFF_MAX_S
            with self._cv:
                self._running -= 1
                if delay is not None:
                    u._state = "idle"
                elif u._again or u.has_work():
                    u._state = "queued"
                    self._ready.append(u)
                    self._cv.notify()
                    continue
                else:
                    u._state = "idle"
                    if u.end is not None and (u.published or not u.attempt) and self.calls.get(u.sid) is u:
                        del self.calls[u.sid]  # all sent (a commit asked for later starts from segments.json)
                    continue
            self._later(u, delay)

    def _run(self, u: SegmentUploader) -> None:
        """The call's next step, in order: its segments, the journal's tail, then the commit. One step a
        turn: a call with a long backlog goes to the back of the queue after each, so every call advances."""
        if not u.folder.is_dir():  # the call was deleted (DELETE /calls/{sid}): nothing is left to send
            u.end, u.journal_flushed, u.attempt = u.done, True, None
            return
        if (span := u.next_segment()) is not None:
            self._upload_segment(u, *span)
        elif u.flush_due():
            delta, at = u.journal_delta()
            if delta:
                self.bucket.put(self.bucket.segment_key(u.sid, u.epoch, u.done, "jsonl"), delta)
            u.journal_at, u.journal_flushed = at, True
            u.save()
        elif u.commit_due():
            self._commit(u)

    def _upload_segment(self, u: SegmentUploader, start: int, stop: int) -> None:
        body = u.read_segment(start, stop)
        if body is None:
            u.done = u.end if u.end is not None else stop
            u.save()
            return
        delta, at = u.journal_delta()
        backlog = max(0, (u.settled if u.end is None else u.end) - stop) / u.rate
        t0, c0 = time.monotonic(), time.thread_time()
        if delta:
            self.bucket.put(self.bucket.segment_key(u.sid, u.epoch, start, "jsonl"), delta)
        self.bucket.put(self.bucket.segment_key(u.sid, u.epoch, start, "wav"), body)
        self.stats.put_cpu_seconds += time.thread_time() - c0
        self.stats.put_seconds += time.monotonic() - t0
        u.done, u.journal_at = stop, at
        u.save()
        u.max_backlog_s = max(u.max_backlog_s, backlog)
        self.stats.max_backlog_s = max(self.stats.max_backlog_s, backlog)
        self.stats.segments += 1
        self.stats.segment_bytes += len(body) + len(delta)

    def _commit(self, u: SegmentUploader) -> None:
        if not (self.artefacts.local_path(f"call_{u.sid}.json")).exists():
            log.warning("call %s: no result in the local spool (deleted?); nothing to commit", u.sid)
            u.published = "-"
            u.save()
            return
        assert u.attempt is not None
        t0 = time.monotonic()
        result = self.artefacts.commit(u.sid, u.attempt, epoch=u.epoch, replace=u.replace, recovered=u.recovered)
        u.published = result.attempt if result.committed else (result.theirs or "-")
        u.save()
        self.stats.commits += result.committed
        self.stats.kept_theirs += not result.committed
        if result.committed:
            if u.publish_asked:
                self.stats.last_commit_s = time.monotonic() - u.publish_asked
            log.info("call %s: %d file(s) committed to S3 in %.2f s (attempt %s)", u.sid, len(result.files),
                     time.monotonic() - t0, u.attempt)
            self._drop_segments(u.sid)

    def _drop_segments(self, sid: str) -> None:
        """A committed call needs its segments no more (a bucket lifecycle rule catches any this misses)."""
        try:
            self.bucket.delete([o.key for o in self.bucket.list(self.bucket.segments_prefix(sid))])
        except S3Unavailable as exc:
            log.info("call %s: its segments stay in S3 (%s); the bucket's lifecycle rule expires them", sid, exc)
