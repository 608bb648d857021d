"""CallRegistry: the live calls of this process, admission, their finalisation tasks, recovery and drain.

Created in the app's lifespan. Holds a reference to every task it starts. At start-up it
finalises calls a crash left unfinished (those whose lock no live process holds); at shutdown
it ends every live call and waits for their files.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from typing import Any

from app import close_codes
from app.call.end import EndReason
from app.call.session import CallSession
from app.recording.events import RecordingEvents, emit
from app.recording.finalize import ExportOptions, finalize_call, rewrite_transcript
from app.storage.catalog import CatalogBusy
from app.storage.coordination import CallLock
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
                 events: RecordingEvents | None = None) -> None:
        self.store = store
        self.events = events
        self.opts = opts
        self.max_concurrent = max_concurrent
        self.executor = background_executor("callscribe-export", workers)
        self.live: dict[str, CallSession] = {}
        self.tasks: set[asyncio.Task] = set()
        self.finalized_count = 0
        self.recovered_count = 0
        self.refused_count = 0
        self.last_finalize_seconds: float | None = None

    # ------------------------------------------------------------------ admission
    def admit(self, sid: str) -> CallLock:
        """Check a new stream may start; returns the call's lock. Raises CallRefused."""
        if len(self.live) >= self.max_concurrent:
            self.refused_count += 1
            raise CallRefused(f"busy: {self.max_concurrent} calls in progress (MAX_CONCURRENT_CALLS)",
                              close_codes.TRY_AGAIN)
        if sid in self.live:
            self.refused_count += 1
            raise CallRefused("a stream for this call is already open")
        if self.store.is_finalized(sid):
            self.refused_count += 1
            raise CallRefused("this call has already been recorded and finalised")
        lock = self.store.coordinator.acquire(sid)
        if lock is None:
            self.refused_count += 1
            raise CallRefused("this call is being recorded by another worker")
        return lock

    def add(self, call: CallSession) -> None:
        self.live[call.sid] = call
        call.begin()
        self._catalog_live(call)

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
            pending = call.tail_pending
            loop = asyncio.get_running_loop()
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
            if self.events is not None:
                emit(self.events, "on_complete", call.sid, result)
            return result
        except Exception:
            log.exception("call %s: finalisation failed; masters and journal kept for recovery", call.sid)
            self._drop_partial_outputs(call.sid)
            return None
        finally:
            call.lock.release()

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
            lock = self.store.coordinator.acquire(sid)
            if lock is None:
                continue  # another worker is recording it
            try:
                if self.store.is_finalized(sid):
                    continue
                log.warning("call %s was not finalised (server stopped mid-call, or finalisation failed); "
                            "recovering it", sid)
                finalize_call(self.store, sid, self.opts, recovered=True)
                self.recovered_count += 1
                done.append(sid)
            except Exception:
                log.exception("call %s: recovery failed; masters and journal kept", sid)
                self._drop_partial_outputs(sid)
            finally:
                lock.release()
        return done

    async def drain(self, timeout: float = 30.0) -> None:
        """Finalise every live call (server shutdown), then wait for pending finalisations."""
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
        self.executor.shutdown(wait=True)
