"""The incremental export of one call while it goes on, so its files are ready moments after hang-up.

Every ``interval_s`` of wall time, and sooner when the call's clock has run ahead (a replay
faster than real time), the settled part of the conversation (before ``settled()``: nothing
there can change any more, since a clear only removes audio after "now" and late frames land
within the reorder window) is encoded on a worker thread, or in an encoder process (app.recording.encoder_pool)
when the server has them. A format chosen mid-call, on any worker
(the coordinator's format token changes), replaces the exporter, which catches up in the background.
With S3, the same settled sample feeds ``segments`` (app.recording.segments), which uploads it in
segment objects from its own threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from concurrent.futures import Executor
from typing import TYPE_CHECKING

from app.cancellation import within
from app.recording.encoder_pool import WorkerLost
from app.recording.export import ConversationExporter
from app.recording.finalize import ExportOptions, make_exporter
from app.storage.store import CallStore

if TYPE_CHECKING:
    from app.recording.segment_uploader import SegmentUploader

__all__ = ["ExportSchedule"]

log = logging.getLogger("callscribe.call")


class ExportSchedule:
    def __init__(self, store: CallStore, sid: str, opts: ExportOptions, executor: Executor, *,
                 interval_s: float, rate: int, settled: Callable[[], int]) -> None:
        self.store = store
        self.sid = sid
        self.opts = opts
        self.executor = executor
        self.interval_s = interval_s
        self.settled = settled
        self.exporter: ConversationExporter | None = None
        self._format_token = store.coordinator.format_token(sid)
        self._busy: asyncio.Future[None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._kick = asyncio.Event()
        self._kick_at = int(interval_s * rate * 2)  # samples of unexported call time that wake it early
        self._ended = False
        self._reopen = False  # the exporter's encoder process died: open it again at the next tick
        self.segments: SegmentUploader | None = None  # set by the registry when S3 is on
        self._logged_error = False

    def begin(self) -> None:
        if not self.opts.record_audio:
            return
        try:
            self.exporter = make_exporter(self.store, self.sid, self.opts)
        except Exception as exc:  # the call records anyway; hang-up exports from the masters
            self._error("call %s: cannot open the exporter (%s); will export at hang-up", self.sid, type(exc).__name__)
        if self.interval_s > 0:
            self._task = asyncio.get_running_loop().create_task(self._loop())

    def _error(self, msg: str, *args: object) -> None:
        """One ERROR line per call for its incremental export (a full disk fails every attempt; the
        hang-up export from the masters says what finally happened); later ones at DEBUG."""
        log.log(logging.DEBUG if self._logged_error else logging.ERROR, msg, *args)
        self._logged_error = True

    def on_progress(self, settled: int) -> None:
        """Called per chunk of audio with the settled sample: wake the loop early when it has run far ahead."""
        if self.segments is not None:
            self.segments.on_settled(settled)
        exporter = self.exporter
        if exporter is not None and self._busy is None and settled - exporter.done > self._kick_at:
            self._kick.set()

    async def stop(self) -> ConversationExporter | None:
        """Stop the loop; wait for an advance in flight. Returns the exporter for finalisation."""
        self._ended = True
        hurry = getattr(self.exporter, "hurry", None)
        if hurry is not None:  # an encoder process: lifted now, not once the advance in flight ends on an idle core
            hurry()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):  # cancelled on purpose: the call is over
                await self._task
        if self._busy is not None:
            try:
                await self._busy
            except Exception as exc:
                self._error("call %s: the last incremental export failed (%s); exporting at hang-up from the masters",
                          self.sid, type(exc).__name__)
                self.exporter = None
        return self.exporter

    async def _loop(self) -> None:
        while not self._ended:
            with contextlib.suppress(asyncio.TimeoutError):  # the regular tick
                await within(self._kick.wait(), self.interval_s)
            self._kick.clear()
            if self._ended:
                break
            if self.segments is not None:  # a call whose audio pauses (a browser's) still settles with time
                self.segments.on_settled(self.settled())
            await self._advance()

    async def _advance(self) -> None:
        loop = asyncio.get_running_loop()
        token = self.store.coordinator.format_token(self.sid)
        if token != self._format_token:
            self._format_token = token
            old, self.exporter = self.exporter, None
            if old is not None:
                await loop.run_in_executor(self.executor, old.abort)
            try:
                self.exporter = await loop.run_in_executor(self.executor, make_exporter, self.store, self.sid,
                                                           self.opts)
            except Exception as exc:
                self._error("call %s: cannot open the exporter (%s)", self.sid, type(exc).__name__)
                return
        if self.exporter is None and self._reopen:  # its encoder process died: start over on another one
            self._reopen = False
            try:
                self.exporter = await loop.run_in_executor(self.executor, make_exporter, self.store, self.sid,
                                                           self.opts)
            except Exception as exc:
                self._error("call %s: cannot open the exporter again (%s)", self.sid, type(exc).__name__)
                return
        exporter = self.exporter
        settled = self.settled()
        if exporter is None or settled <= exporter.done:
            return
        advance_future = getattr(exporter, "advance_future", None)  # an encoder process's: no thread needed
        if advance_future is not None:
            self._busy = asyncio.wrap_future(advance_future(settled))
        else:
            self._busy = loop.run_in_executor(self.executor, exporter.advance, settled)
        try:
            await self._busy
        except asyncio.CancelledError:
            raise  # call ending: finish() waits for this advance (the exporter's lock, or the worker's order)
        except Exception as exc:
            lost = isinstance(exc, WorkerLost)
            self._error("call %s: incremental export failed (%s); %s", self.sid, type(exc).__name__,
                      "starting over on another encoder process" if lost else "will retry at hang-up")
            self.exporter = None
            self._reopen = lost  # a dead process, not the encoder failing on this call: once more
            await loop.run_in_executor(self.executor, exporter.abort)
        finally:
            self._busy = None
