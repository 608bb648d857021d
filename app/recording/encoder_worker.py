"""An encoder worker process: the other end of app.recording.encoder_pool's pipes.

Run as ``python -m app.recording.encoder_worker <nice>`` (a fresh interpreter, never a fork of
the threaded server). It reads length-prefixed pickles ``(rid, call, op, key, args)`` on stdin, holds
the ``ConversationExporter`` of each call pinned to it, serves the calls round-robin in slices of
``SLICE_S`` seconds of audio (one call's long catch-up never holds another's hang-up back; one
call's commands run in the order sent), answers ``(rid, ok, value)`` on stdout, and exits when
its stdin closes (the server ended or died). The framing of both ends is here.

Priority: the worker runs at ``nice``; the server sets its encoding (main) thread's scheduling
policy from outside (``encoder_pool._Worker``), once the worker's first answer (``READY_RID``)
says its reader thread exists, so that thread keeps ``nice`` and is never idle.
"""

from __future__ import annotations

import os
import pickle
import queue
import struct
import sys
import threading
from collections import OrderedDict, deque
from pathlib import Path
from typing import Any

__all__ = ["FINISHING", "READY_RID", "SLICE_S", "send_msg", "recv_msg", "worker_main"]

SLICE_S = 10  # seconds of call audio a worker encodes for one call before serving the next
_HEADER = struct.Struct("<I")


# =========================================================================================== framing
def send_msg(fh, msg: Any) -> None:
    data = pickle.dumps(msg, protocol=pickle.HIGHEST_PROTOCOL)
    fh.write(_HEADER.pack(len(data)) + data)
    fh.flush()


def _read_exact(fh, n: int) -> bytes | None:
    buf = bytearray()
    while len(buf) < n:
        chunk = fh.read(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)


def recv_msg(fh) -> Any | None:
    head = _read_exact(fh, _HEADER.size)
    if head is None:
        return None
    body = _read_exact(fh, _HEADER.unpack(head)[0])
    return None if body is None else pickle.loads(body)


# =========================================================================================== the worker
class _Job:
    """One command of a call, in progress."""

    __slots__ = ("rid", "op", "key", "args")

    def __init__(self, rid: int, op: str, key: int, args: tuple) -> None:
        self.rid, self.op, self.key, self.args = rid, op, key, args


def _open(params: dict[str, Any]):
    from app.audio.formats import get_format
    from app.recording.export import ConversationExporter

    tracks = tuple(Path(p) for p in params["track_paths"]) if params["track_paths"] else None
    return ConversationExporter(tuple(Path(m) for m in params["masters"]), Path(params["out_path"]),
                                get_format(params["fmt"]), channels=params["channels"],
                                sample_rate=params["sample_rate"], mp3_kbps=params["mp3_kbps"], track_paths=tracks)


def _step(ex, upto: int, slice_samples: int) -> bool:
    """Advance ``ex`` by at most one slice towards ``upto``; True when there is no more to do before it."""
    target = min(upto, ex.done + slice_samples)
    before = ex.done
    ex.advance(target)
    return ex.done >= upto or ex.done == before


def _finished(ex) -> dict[str, Any]:
    return {"path": str(ex.out_path), "done": ex.done, "talk": ex.talk, "settings_note": ex.settings_note}


FINISHING = ("finish", "export")  # the commands a hang-up's files wait for: the server lifts the priority for them
READY_RID = 0  # the worker's first answer, unasked: its reader thread runs (see encoder_pool._Worker)


def worker_main(nice: int = 5) -> None:  # pragma: no cover - runs in the worker process
    if nice:
        try:
            os.nice(nice)
        except OSError:
            pass
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # a stray print() must not corrupt the answers
    stdin = os.fdopen(os.dup(0), "rb")
    inbox: queue.SimpleQueue = queue.SimpleQueue()

    def read() -> None:
        while True:
            try:
                msg = recv_msg(stdin)
            except Exception:
                msg = None
            inbox.put(msg)
            if msg is None:
                return

    threading.Thread(target=read, daemon=True).start()
    send_msg(out, (READY_RID, True, None))  # the server may now set this (the encoding) thread's policy alone
    exporters: dict[int, Any] = {}
    work: OrderedDict[str, deque[_Job]] = OrderedDict()  # call → its commands, in order; served round-robin

    def reply(rid: int, ok: bool, value: Any) -> None:
        try:
            send_msg(out, (rid, ok, value))
        except (pickle.PicklingError, TypeError, AttributeError):
            send_msg(out, (rid, False, RuntimeError(f"{type(value).__name__}: {value}")))

    def take(msg) -> None:
        if msg is None:  # the server closed the pipe (or died): stop now (its masters hold every call)
            os._exit(0)
        rid, call, op, key, args = msg
        work.setdefault(call, deque()).append(_Job(rid, op, key, args))

    while True:
        if not work:
            take(inbox.get())
        while True:
            try:
                take(inbox.get_nowait())
            except queue.Empty:
                break
        call, jobs = next(iter(work.items()))
        job = jobs[0]
        finished = True
        try:
            ex = exporters.get(job.key)
            if job.op == "open":
                ex = exporters[job.key] = _open(job.args[0])
                value: Any = {"settings_note": ex.settings_note}
            elif job.op == "export":  # a whole call in one: open, then finish below
                if ex is None:
                    ex = exporters[job.key] = _open(job.args[0])
                job.op, job.args = "finish", (job.args[1],)
                finished = False
            elif ex is None:
                if job.op != "abort":
                    raise RuntimeError("the exporter is not open (opening it failed)")
                value = None
            elif job.op == "advance":
                finished = _step(ex, job.args[0], ex.source_rate * SLICE_S)
                value = {"done": ex.done}
            elif job.op == "finish":
                total = job.args[0]
                if total - ex.done > ex.source_rate * SLICE_S:
                    _step(ex, total, ex.source_rate * SLICE_S)
                    finished = False
                else:
                    ex.finish(total)
                    del exporters[job.key]
                    value = _finished(ex)
            elif job.op == "abort":
                ex.abort()
                del exporters[job.key]
                value = None
            else:
                raise RuntimeError(f"unknown command {job.op!r}")
            ok = True
        except Exception as exc:
            ok, value, finished = False, exc, True
        if finished:
            jobs.popleft()
            reply(job.rid, ok, value)
        work.move_to_end(call)  # round-robin: the next call's turn
        if not jobs:
            del work[call]


if __name__ == "__main__":  # pragma: no cover
    worker_main(int(sys.argv[1]) if len(sys.argv) > 1 else 5)
