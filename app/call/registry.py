"""CallRegistry: the live calls of this process, admission, their finalisation tasks, recovery and drain.

Created in the app's lifespan. Holds a reference to every task it starts. At start-up it
finalises calls a crash left unfinished (those whose lock no live process holds); with Redis, the
coordinator's sweep hands it the calls of hosts that died later (`recover_orphan`); at shutdown
it ends every live call and waits for their files.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
from collections.abc import Callable
from typing import Any

from app import close_codes
from app.call.end import EndReason
from app.call.session import CallSession
from app.recording.encoder_pool import EncoderPool, default_processes
from app.recording.events import RecordingEvents, emit
from app.recording.finalize import ExportOptions, finalize_call, rewrite_transcript
from app.recording.segments import SegmentUploads
from app.storage.catalog import CatalogBusy
from app.storage.coordination import CallLock, CoordinationUnavailable
from app.storage.store import CallStore
from app.threads import background_executor

__all__ = ["CallRegistry", "CallRefused"]

log = logging.getLogger("callscribe.registry")


class CallRefused(Exception):
    """A stream that cannot start; `close_code` and the message go back to Twilio."""

    def __init__(self, message: str, close_code: int = close_codes.POLICY) -> None:
        super().__init__(message)
        self.close_code = close_code


class CallRegistry:
    def __init__(self, store: CallStore, opts: ExportOptions, *, max_concurrent: int = 200, workers: int = 2,
                 events: RecordingEvents | None = None, uploads: SegmentUploads | None = None,
                 encoder_processes: int | None = 0, encoder_nice: int = 5,
                 encoder_idle: bool = True) -> None:
        """``uploads``: with S3, sends each live call's segments and commits its files (None: all stays local).
        ``encoder_processes``: the processes that encode the live calls (app.recording.encoder_pool;
        None: the default number; 0: this process's export threads)."""
        self.store = store
        self.uploads = uploads
        self.events = events
        if encoder_processes is None:
            encoder_processes = default_processes()
        self.encoder_pool = (EncoderPool(encoder_processes, nice=encoder_nice, idle=encoder_idle)
                             if encoder_processes > 0 else None)
        if self.encoder_pool is not None:
            opts = dataclasses.replace(opts, encoder_pool=self.encoder_pool)
        self.opts = opts
        self.max_concurrent = max_concurrent
        self.executor = background_executor("callscribe-export", workers)
        self.live: dict[str, CallSession] = {}
        self.tasks: set[asyncio.Task] = set()
        self.finalized_count = 0
        self.recovered_count = 0
        self.refused_count = 0
        self.last_finalize_seconds: float | None = None
        self.draining = False  # shutting down: finalising the live calls, taking no new ones

    # ------------------------------------------------------------------ admission
    def busy(self) -> str | None:
        """Why no new call can start now, or None: MAX_CONCURRENT_CALLS reached (counted across the
        cluster when the coordinator can), or the coordination service out of reach."""
        try:
            cluster = self.store.coordinator.live_count()
        except CoordinationUnavailable as exc:
            return f"unavailable: {exc}; new calls are refused until it is back"
        if max(len(self.live), cluster or 0) >= self.max_concurrent:
            return f"busy: {self.max_concurrent} calls in progress (MAX_CONCURRENT_CALLS)"
        return None

    def admit(self, sid: str) -> CallLock:
        """Check a new stream may start; returns the call's lock. Raises CallRefused."""
        reason = self.busy()
        if reason is not None:
            self.refused_count += 1
            raise CallRefused(reason, close_codes.TRY_AGAIN)
        if sid in self.live:
            self.refused_count += 1
            raise CallRefused("a stream for this call is already open")
        if self.store.is_finalized(sid):
            self.refused_count += 1
            raise CallRefused("this call has already been recorded and finalised")
        try:
            lock = self.store.coordinator.acquire(sid)
        except CoordinationUnavailable as exc:
            self.refused_count += 1
            raise CallRefused(f"unavailable: {exc}; new calls are refused until it is back", close_codes.TRY_AGAIN)
        if lock is None:
            self.refused_count += 1
            raise CallRefused("this call is being recorded by another worker")
        return lock

    def add(self, call: CallSession) -> None:
        self.live[call.sid] = call
        call.begin()
        self._catalog_live(call)
        if self.uploads is not None:  # S3: the settled audio goes up in segments while the call lasts
            call.export.segments = self.uploads.start(call.sid, call.recorder.files.folder, call.rate,
                                                      self._epoch(call.sid, call.lock))

    def _catalog_live(self, call: CallSession) -> None:
        """The call's catalog row, so listings in every worker show it at once (finalisation replaces
        it). The event loop waits a few ms at most: a busy catalog is written from a worker thread,
        unless the call has ended by then (its finalisation writes the row). A failure is logged."""
        info = call.info
        mark = functools.partial(self.store.catalog.mark_live, call.sid, started_at=call.started_at,
                                 source=info.source, mode=info.mode, from_last4=info.from_last4)
        try:
            mark(quick=True)
        except CatalogBusy:
            self.executor.submit(self._catalog_live_later, call.sid, mark)
        except Exception as exc:
            log.warning("call %s: not marked live in the catalog (%s)", call.sid, type(exc).__name__)

    def _catalog_live_later(self, sid: str, mark: Callable[..., None]) -> None:
        if sid not in self.live:
            return
        try:
            mark()
        except Exception as exc:
            log.warning("call %s: not marked live in the catalog (%s)", sid, type(exc).__name__)

    # ------------------------------------------------------------------ ending
    async def finish(self, call: CallSession, reason: EndReason) -> dict[str, Any] | None:
        """End a live call and finalise it off the event loop. Safe to call twice."""
        if self.live.get(call.sid) is not call:
            return None
        del self.live[call.sid]
        call.end_reason = call.end_reason or reason
        try:
            exporter, total = await call.stop_background()
            if self.uploads is not None:
                self.uploads.ended(call.sid, total)  # the last segment goes up while we finalise
            pending = call.tail_pending
            loop = asyncio.get_running_loop()
            if not await loop.run_in_executor(self.executor, self._owns, call.sid, call.lock):
                return None
            result = await loop.run_in_executor(
                self.executor, lambda: finalize_call(self.store, call.sid, self.opts, exporter=exporter, total=total,
                                                     end_reason=str(call.end_reason),
                                                     transcript_pending=bool(pending)))
            self.finalized_count += 1
            self.last_finalize_seconds = result["stats"]["finalize_seconds"]
            if pending:
                # The files are out; the caller's last turns are transcribed now and the text rewritten.
                await call.transcribe_tail()
                result = await loop.run_in_executor(self.executor, rewrite_transcript, self.store, call.sid) or result
            self._publish(call.sid, self._epoch(call.sid, call.lock))
            if self.events is not None:
                emit(self.events, "on_complete", call.sid, result)
            return result
        except Exception:
            log.exception("call %s: finalisation failed; masters and journal kept for recovery", call.sid)
            self._drop_partial_outputs(call.sid)
            return None
        finally:
            call.lock.release()

    def _owns(self, sid: str, lock: CallLock) -> bool:
        """Whether this process may still commit the call's result: no other host claimed it since
        (its fencing epoch). Blocking; run it in a thread."""
        if self.store.coordinator.still_owner(sid, lock.epoch):
            return True
        log.error("call %s: another host took it over (epoch %s superseded); its result is not written here",
                  sid, lock.epoch)
        return False

    def _drop_partial_outputs(self, sid: str) -> None:
        """After a failed finalisation, half-written outputs go: the masters and the journal hold the
        call, and on a full disk the half-files would only keep the space the retry needs."""
        self.store.artefacts.discard_staged(sid)

    def spawn(self, coro) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    # ------------------------------------------------------------------ start-up and shutdown
    def recover_sync(self) -> list[str]:
        """Finalise every unfinished call no live process holds. Blocking; run it in a thread."""
        done = []
        for sid in self.store.unfinished():
            try:
                lock = self.store.coordinator.acquire(sid)
            except CoordinationUnavailable as exc:
                log.warning("recovery: %s; the calls left unfinished are claimed when it is back", exc)
                break
            if lock is None:
                continue  # another worker is recording it
            if self._recover(sid, lock) == "recovered":
                done.append(sid)
        if self.uploads is not None:  # commits to S3 a previous run left to make (S3 away, or a crash)
            self.uploads.resume_pending(self.store.layout.calls_dir)
        return done

    async def recover_orphan(self, sid: str, lock: CallLock) -> bool:
        """A call whose host died, claimed for this process by the coordinator's sweep (with Redis):
        finalise it, marked recovered, from its masters and journal when they are on this host's disk
        (a recordings folder shared by the hosts), else, with S3, from the segments its host uploaded
        (`app.recording.segment_rebuild`); then its files are committed to S3. True when the call
        needs nothing more; False when it cannot be finished here (its masters are elsewhere): the
        sweep tries again later."""
        if self.draining:  # shutting down: let it go, another host (or the next start) finishes it
            lock.release()
            return False
        state = await asyncio.get_running_loop().run_in_executor(self.executor, self._recover, sid, lock)
        return state in ("recovered", "finalised")

    def _recover(self, sid: str, lock: CallLock) -> str:
        """Finalise an unfinished call whose lock we hold, then release it: "recovered", "finalised"
        (already), "absent" (no journal on this disk) or "failed". Blocking."""
        try:
            if self.store.is_finalized(sid):
                self._publish(sid, self._epoch(sid, lock))  # no-op once its files are in S3
                return "finalised"
            if not self.store.has_started(sid):
                rebuilt = self._rebuild_from_s3(sid)  # another host recorded it: its segments, when there are any
                if rebuilt != "rebuilt":
                    return rebuilt
            log.warning("call %s was not finalised (server stopped mid-call, or finalisation failed); "
                        "recovering it", sid)
            finalize_call(self.store, sid, self.opts, recovered=True)
            self.recovered_count += 1
            self._publish(sid, self._epoch(sid, lock), recovered=True)
            return "recovered"
        except Exception:
            log.exception("call %s: recovery failed; masters and journal kept", sid)
            self._drop_partial_outputs(sid)
            return "failed"
        finally:
            lock.release()

    # ------------------------------------------------------------------ S3 (when the store has uploads)
    def _epoch(self, sid: str, lock: CallLock | None = None) -> int:
        """The call's fencing epoch, which names its segments in S3: its lock's (the Redis
        coordinator's), else the coordinator's latest; 0 with file locks (one host)."""
        epoch = getattr(lock, "epoch", None)
        if epoch is None:
            epoch = self.store.coordinator.epoch_of(sid)
        return int(epoch or 0)

    def _publish(self, sid: str, epoch: int, *, recovered: bool = False, replace: bool = False) -> None:
        """Queue the commit of the call's local files to S3: they are final locally already, the upload
        follows (retried until S3 answers, and resumed after a restart). No-op without S3."""
        if self.uploads is not None:
            self.uploads.publish(sid, self.store.files(sid).folder, epoch=epoch, recovered=recovered,
                                 replace=replace)

    def publish_again(self, sid: str, *, recovered: bool = False) -> None:
        """A finished call was exported again (a new format): its new set replaces the one in S3."""
        self._publish(sid, self._epoch(sid), recovered=recovered, replace=True)

    def _rebuild_from_s3(self, sid: str) -> str:
        """A call recorded on another host that died: its masters and journal rebuilt here from its
        segments in S3 ("rebuilt"); "finalised" when its files are in S3 already (its host committed
        them before it died) or it has nothing to recover; "absent" without S3."""
        uploads = self.uploads
        if uploads is None:
            return "absent"
        from app.recording.segment_rebuild import NoSegments, rebuild_masters  # only with S3

        if uploads.artefacts.committed(sid) is not None:
            log.info("call %s: its files were committed to S3 before its host died; nothing to recover", sid)
            return "finalised"
        try:
            rebuild_masters(sid, self.store.files(sid, create=True).folder, uploads.bucket)
        except NoSegments:
            log.warning("call %s: its host died before uploading any segment; nothing to recover from S3", sid)
            return "finalised"
        return "rebuilt"

    async def drain(self, timeout: float = 30.0) -> None:
        """Finalise every live call (server shutdown), then wait for pending finalisations."""
        self.draining = True
        calls = list(self.live.values())
        if calls:
            log.info("shutdown: finalising %d live call(s)", len(calls))
        for call in calls:
            try:
                await call.transport.close(close_codes.GOING_AWAY, "server shutting down")
            except Exception as exc:  # the socket is gone already: finishing the call below is what matters
                log.info("call %s: closing its transport at shutdown failed (%s)", call.sid, type(exc).__name__)
        pending = [asyncio.create_task(self.finish(c, EndReason.SERVER_SHUTDOWN)) for c in calls] + list(self.tasks)
        if pending:
            done, not_done = await asyncio.wait(pending, timeout=timeout)
            for t in not_done:
                log.error("shutdown: a finalisation did not finish in %.0f s; the call will be recovered at next start",
                          timeout)
                t.cancel()
        if self.uploads is not None:  # what S3 has not taken yet stays on disk for the next start
            await asyncio.to_thread(self.uploads.close, min(timeout, 10.0))
        self.executor.shutdown(wait=True)
        if self.encoder_pool is not None:  # every call is finalised: the encoder processes exit and are reaped
            await asyncio.to_thread(self.encoder_pool.close)
