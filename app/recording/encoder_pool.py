"""Encoder worker processes: the incremental export of live calls, off the serving process.

Why: encoding is about half of the server's CPU per call, and threads of the serving process share
its GIL with the event loop, so encoding slows the frames and, at a lowered thread priority,
starves while they arrive. Here a small pool of processes (``ENCODER_PROCESSES``) holds the
``ConversationExporter`` of each live call: the loop only sends a few bytes per advance.

Each worker is ``python -m app.recording.encoder_worker`` (a fresh interpreter started with
``subprocess``, never a fork of the threaded server) speaking length-prefixed pickles on its
stdin/stdout. A call is pinned to one worker for its life (its encoder state lives there); the
worker serves its calls round-robin in slices of ``SLICE_S`` seconds of audio, so one call's long
catch-up (a format change, a call exported at hang-up) never holds another call's hang-up back.
Commands of one call run in the order sent. The worker exits when its stdin closes (the server
ended, or died: the kernel closes the pipe), so it never outlives the server.

``PooledExporter`` has the part of ``ConversationExporter``'s interface the export schedule and
finalisation use (advance/finish/abort/done/talk/settings_note/fmt/track_paths/out_path). If its
worker dies, ``finish`` exports the call again from the masters (the source of truth) on a fresh
worker; if that one dies too it raises, and finalisation writes WAV in-process (no encoder needed).
The encoder itself never runs in the serving process while the pool is on, so an encoder that
kills its process (LAME aborts on some misuse) cannot take the server with it.

No framework imports: this module is used by the registry and run as the worker's main.
"""

from __future__ import annotations

import errno
import functools
import itertools
import logging
import os
import subprocess
import sys
import threading
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path
from typing import Any

from app.recording.encoder_worker import FINISHING, READY_RID, SLICE_S, recv_msg, send_msg

__all__ = ["EncoderPool", "PooledExporter", "WorkerLost", "default_processes", "may_leave_idle", "SLICE_S"]

log = logging.getLogger("callscribe.encoder")

_ROOT = str(Path(__file__).resolve().parents[2])  # the folder holding the `app` package
_ABORT_TIMEOUT_S = 60.0
_FINISH_TIMEOUT_S = 900.0


class WorkerLost(RuntimeError):
    """The encoder process serving a call died (or was stopped) before answering."""


def default_processes() -> int:
    """ENCODER_PROCESSES unset: two workers, or one on a single-core machine."""
    return max(1, min(2, os.cpu_count() or 1))


@functools.lru_cache(maxsize=None)
def may_leave_idle(nice: int) -> bool:
    """Whether this process may move a thread of its own at ``nice`` more than its own from
    SCHED_IDLE back to SCHED_OTHER (the kernel's ``can_nice``: CAP_SYS_NICE, or an RLIMIT_NICE that
    allows it). Tried once, from outside, on a thread that waits meanwhile (so it never needs the CPU
    while idle): reading capabilities cannot tell inside a user namespace."""
    if not hasattr(os, "SCHED_IDLE"):
        return False
    release = threading.Event()
    t = threading.Thread(target=release.wait, name="callscribe-sched-probe", daemon=True)
    t.start()
    try:
        tid = t.native_id
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + nice))
        os.sched_setscheduler(tid, os.SCHED_IDLE, os.sched_param(0))
        os.sched_setscheduler(tid, os.SCHED_OTHER, os.sched_param(0))
        return True
    except (OSError, AttributeError):
        return False
    finally:
        release.set()
        t.join()


# =========================================================================================== the server side
class _Worker:
    """One encoder process, its pipe and the thread that reads its answers.

    Priority (with ``idle``): the worker's encoding thread runs under SCHED_IDLE while it only
    advances live calls (only on a core nothing else wants: the serving loop is never preempted by
    it) and under SCHED_OTHER at the worker's nice while a finish (a hang-up waiting for its files)
    is queued in it. This process sets it, from outside, when it sends a finish and when the last
    answer comes: a thread inside the worker could not, on a machine with no free core, as an idle
    thread holding the worker's GIL starves every other thread of the worker (measured: a hang-up's
    files not ready after 30 s beside three busy processes on two cores). Leaving SCHED_IDLE needs
    CAP_SYS_NICE or an RLIMIT_NICE that allows ``nice``; without either the worker stays at ``nice``.
    Only the encoding thread moves: a thread it starts itself (none today) would stay idle."""

    def __init__(self, index: int, nice: int, idle: bool = False) -> None:
        self.index = index
        self.calls: dict[str, int] = {}  # the calls pinned here: their open exporters
        self._ids = itertools.count(1)
        self._pending: dict[int, tuple[Future, Any, bool]] = {}  # rid → (future, on_reply, a finish?)
        self._lock = threading.Lock()
        self.alive = True
        self._idle_allowed = idle and may_leave_idle(nice)
        self._ready = False  # its reader thread runs: the encoding thread's policy is ours to set
        self._finishing = 0  # finish/export commands sent and not answered
        self._hurried: set[str] = set()  # calls hung up whose finish is not sent yet (an advance still in flight)
        self._idle = False  # the policy set last
        env = dict(os.environ)
        env["PYTHONPATH"] = _ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        argv = [sys.executable, "-m", "app.recording.encoder_worker", str(nice)]
        self.proc = subprocess.Popen(argv,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, close_fds=True,
                                     cwd=_ROOT)
        self.pid = self.proc.pid
        self._reader = threading.Thread(target=self._read, name=f"callscribe-encoder-{index}-reader", daemon=True)
        self._reader.start()

    def request(self, call: str, op: str, key: int, args: tuple = (), on_reply=None) -> Future:
        """Send one command; its answer resolves the future (``on_reply(value)`` runs first, in the reader)."""
        fut: Future = Future()
        with self._lock:
            if not self.alive:
                fut.set_exception(WorkerLost(f"encoder process {self.pid} is gone"))
                return fut
            rid = next(self._ids)
            finishing = op in FINISHING
            self._pending[rid] = (fut, on_reply, finishing)
            if finishing:
                self._finishing += 1
                self._set_policy()  # before it is sent: the worker must run to read it
            try:
                send_msg(self.proc.stdin, (rid, call, op, key, args))
            except Exception as exc:  # the pipe is closed (the process died), or a bug: never left counted
                self._pending.pop(rid, None)
                self._finishing -= finishing
                self._set_policy()
                gone = isinstance(exc, (OSError, ValueError))
                fut.set_exception(WorkerLost(f"encoder process {self.pid} is gone") if gone else exc)
        return fut

    def _read(self) -> None:
        out = self.proc.stdout
        while True:
            try:
                msg = recv_msg(out)
            except Exception:  # a torn message: the process died mid-write
                msg = None
            if msg is None:
                break
            rid, ok, value = msg
            with self._lock:
                if rid == READY_RID:
                    self._ready = True
                    self._set_policy()
                    continue
                fut, on_reply, finishing = self._pending.pop(rid, (None, None, False))
                if finishing:
                    self._finishing -= 1
                    self._set_policy()
            if fut is None:
                continue
            if ok and on_reply is not None:
                try:
                    on_reply(value)
                except Exception:
                    log.exception("encoder reply handler failed")
            _resolve(fut, ok, value)
        self._lost()

    def hurry(self, call: str, on: bool = True) -> None:
        """``call`` hung up (on) or let go (off): meanwhile not idle, so what is queued before its finish runs."""
        with self._lock:
            (self._hurried.add if on else self._hurried.discard)(call)
            self._set_policy()

    def _set_policy(self) -> None:
        """The encoding thread's (the worker's main thread: its id is the pid) policy, holding ``_lock``."""
        idle = self._ready and self._idle_allowed and not self._finishing and not self._hurried
        if idle == self._idle or not self.alive:  # not alive: reaped, its pid may be another process's now
            return
        try:
            os.sched_setscheduler(self.pid, os.SCHED_IDLE if idle else os.SCHED_OTHER, os.sched_param(0))
        except OSError as exc:  # gone, or refused after all (may_leave_idle said yes): no more changes
            self._idle_allowed = False
            if exc.errno != errno.ESRCH:
                log.error("encoder process %s: cannot %s (%s)", self.pid,
                          "go idle" if idle else "leave SCHED_IDLE: its finishes run only on a free core", exc.strerror)
        else:
            self._idle = idle

    def _lost(self) -> None:
        with self._lock:
            was_alive, self.alive = self.alive, False
            pending, self._pending = self._pending, {}
        try:  # reap it (its pipe closes as it exits)
            code = self.proc.wait(5)
        except subprocess.TimeoutExpired:  # alive with its answers cut off: of no use any more
            self.proc.kill()
            code = self.proc.wait()
        if was_alive:
            log.error("encoder process %s exited (code %s); the calls it held are encoded again from their masters",
                      self.pid, code)
        for fut, _, _ in pending.values():
            _resolve(fut, False, WorkerLost(f"encoder process {self.pid} exited (code {code})"))

    def close(self, timeout: float) -> None:
        with self._lock:
            self.alive = False
            try:
                self.proc.stdin.close()  # the worker exits at end of input
            except OSError:
                pass
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self._reader.join(5)

    def kill(self) -> None:
        try:
            self.proc.kill()
        except OSError:
            pass


def _resolve(fut: Future, ok: bool, value: Any) -> None:
    if fut.done():  # cancelled by its waiter (a call that ended while its advance ran)
        return
    try:
        if ok:
            fut.set_result(value)
        else:
            fut.set_exception(value)
    except Exception:  # InvalidStateError: cancelled meanwhile
        pass


class EncoderPool:
    """``processes`` encoder workers, started on first use; a dead one is replaced for new calls."""

    def __init__(self, processes: int, *, nice: int = 5, idle: bool = True) -> None:
        if processes < 1:
            raise ValueError("an encoder pool needs at least one process")
        self.processes = processes
        self.nice = nice
        self.idle = idle  # live calls' encoding under SCHED_IDLE, finishes at `nice` (encoder_worker)
        self._workers: list[_Worker | None] = [None] * processes
        self._lock = threading.Lock()
        self._keys = itertools.count(1)
        self.closed = False

    def _worker_for(self, call: str) -> _Worker:
        """The call's worker: the one it is pinned to while that lives, else the least busy (started if need be)."""
        with self._lock:
            if self.closed:
                raise WorkerLost("the encoder pool is closed")
            for w in self._workers:
                if w is not None and w.alive and call in w.calls:
                    w.calls[call] += 1
                    return w
            for i, w in enumerate(self._workers):
                if w is None or not w.alive:
                    if w is not None:
                        w.proc.poll()  # reap it
                    self._workers[i] = _Worker(i, self.nice, self.idle)
            w = min(self._workers, key=lambda x: len(x.calls))  # type: ignore[union-attr, return-value]
            w.calls[call] = 1
            return w

    def release(self, call: str, worker: _Worker) -> None:
        with self._lock:
            n = worker.calls.pop(call, 0) - 1
            if n > 0:
                worker.calls[call] = n
        worker.hurry(call, False)

    def exporter(self, call: str, masters: tuple[Path, Path], out_path: Path, fmt, *, channels: int = 1,
                 sample_rate: int | None = None, mp3_kbps: int | None = None,
                 track_paths: tuple[Path, Path] | None = None) -> PooledExporter:
        """A ``ConversationExporter`` of ``call`` in a worker (an error opening it comes with an advance or finish)."""
        params = {"masters": tuple(str(m) for m in masters), "out_path": str(out_path), "fmt": fmt.name,
                  "channels": channels, "sample_rate": sample_rate, "mp3_kbps": mp3_kbps,
                  "track_paths": tuple(str(p) for p in track_paths) if track_paths else None}
        return PooledExporter(self, call, fmt, params)

    def pids(self) -> list[int]:
        with self._lock:
            return [w.pid for w in self._workers if w is not None and w.alive]

    def close(self, timeout: float = 10.0) -> None:
        """Stop the workers (each ends its current slice and exits at end of input) and reap them."""
        with self._lock:
            self.closed = True
            workers, self._workers = [w for w in self._workers if w is not None], [None] * self.processes
        for w in workers:
            w.close(timeout)


class PooledExporter:
    """A call's exporter in an encoder process, with ``ConversationExporter``'s interface."""

    def __init__(self, pool: EncoderPool, call: str, fmt, params: dict[str, Any]) -> None:
        from app.recording.export import TalkStats

        self.pool = pool
        self.call = call
        self.fmt = fmt
        self.params = params
        self.out_path = Path(params["out_path"])
        self.track_paths = tuple(Path(p) for p in params["track_paths"]) if params["track_paths"] else None
        self.done = 0  # samples encoded in the worker (its last answer)
        self.talk = TalkStats()
        self.settings_note: str | None = None
        self.closed = False
        self.key = next(pool._keys)
        self._worker = pool._worker_for(call)
        self._worker.request(call, "open", self.key, (params,), on_reply=self._opened)

    @property
    def worker_pid(self) -> int:
        return self._worker.pid

    def hurry(self) -> None:
        """The call hung up: its worker leaves SCHED_IDLE until the call is let go (finish or abort)."""
        self._worker.hurry(self.call)

    def _opened(self, value: dict[str, Any]) -> None:
        self.settings_note = value["settings_note"]

    def _progress(self, value: dict[str, Any]) -> None:
        self.done = max(self.done, value["done"])

    def _finished(self, value: dict[str, Any]) -> None:
        self.done = value["done"]
        self.talk = value["talk"]
        self.settings_note = value["settings_note"]

    # ---------------------------------------------------------------- the interface
    def advance_future(self, upto: int) -> Future:
        """Encode [done, upto) in the worker; the future resolves when it is done (awaitable with
        ``asyncio.wrap_future``). Cancelling it does not stop the work: later commands follow it."""
        if self.closed:
            f: Future = Future()
            f.set_exception(RuntimeError("exporter already closed"))
            return f
        return self._worker.request(self.call, "advance", self.key, (upto,), on_reply=self._progress)

    def advance(self, upto: int, last: bool = False) -> None:
        if last:
            raise ValueError("a pooled exporter ends with finish()")
        self.advance_future(upto).result()

    def finish(self, total: int) -> Path:
        """Encode the rest in the worker and move the files into place. A worker that died meanwhile:
        the call is exported whole from its masters on a fresh worker."""
        if self.closed:
            raise RuntimeError("exporter already closed")
        self.closed = True
        fut = self._worker.request(self.call, "finish", self.key, (total,), on_reply=self._finished)
        try:
            try:
                return Path(_wait(fut, _FINISH_TIMEOUT_S, self._worker)["path"])
            except WorkerLost as exc:
                log.warning("call %s: %s; exporting it from the masters on another encoder process", self.call, exc)
            self.pool.release(self.call, self._worker)
            self._worker = self.pool._worker_for(self.call)
            self.done = 0
            fut = self._worker.request(self.call, "export", self.key, (self.params, total), on_reply=self._finished)
            return Path(_wait(fut, _FINISH_TIMEOUT_S, self._worker)["path"])
        finally:
            self.pool.release(self.call, self._worker)

    def abort(self) -> None:
        """Drop the exporter and its half-written files (done here when the worker is gone)."""
        self.closed = True
        try:
            _wait(self._worker.request(self.call, "abort", self.key), _ABORT_TIMEOUT_S, self._worker)
        except Exception as exc:
            if not isinstance(exc, WorkerLost):
                log.warning("call %s: aborting its export failed (%s)", self.call, type(exc).__name__)
            for p in [self.out_path] + list(self.track_paths or ()):
                try:
                    os.unlink(str(p) + ".partial")
                except OSError:
                    pass
        finally:
            self.pool.release(self.call, self._worker)


def _wait(fut: Future, timeout: float, worker: _Worker) -> Any:
    try:
        return fut.result(timeout)
    except FutureTimeout:
        log.error("encoder process %s did not answer in %.0f s; stopping it", worker.pid, timeout)
        worker.kill()
        raise WorkerLost(f"encoder process {worker.pid} did not answer in {timeout:.0f} s") from None
