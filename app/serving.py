"""The server stack `callscribe serve` runs on, in one place: the benchmarks' servers use it too.

Chosen by measurement (BENCHMARKS.md, issue 13), installed by the project's own dependencies:

* event loop ``uvloop`` (libuv): cheaper wake-ups and socket reads than asyncio's selector loop;
* HTTP parser ``httptools`` (llhttp) for the webhooks, the dashboard and the upgrade requests;
* WebSocket ``websockets-sansio``: uvicorn's protocol over the `websockets` sans-I/O core, with
  no per-connection keepalive task (the legacy ``websockets`` implementation cost about a quarter
  more CPU per frame on the bare endpoint), as ``app.web.ws_protocol.FrameSinkProtocol``: the same
  protocol, which lets /media-stream take its media frames in the protocol's callback instead of
  through the ASGI queue, reading plain text frames without websockets' general parser meanwhile
  (together about 24 → 17 µs of CPU per message at 400 calls; any other ASGI app sees plain
  websockets-sansio).

A stack part that cannot be imported (uvloop does not build on Windows) falls back to uvicorn's
own choice for it, and the start-up log says which stack runs.

The garbage collector (``tune_collector``, at the app's start-up): every young-generation pass
promotes whatever is in flight at that moment (frames queued, their dicts) to the older
generations, and at a few hundred calls that fills them until a full pass over every call's
objects stalls the loop for 50-60 ms, late for every call at once. A young threshold of 10 000
objects instead of 700 makes those passes 14 times rarer (measured: no full pass during a 12 s
window at 400 calls, p99 frame lateness 24 against 42 ms, and 43 against 68 ms at 450 calls).
Cycles are still collected by the same rules, a few thousand objects later.
"""

from __future__ import annotations

import gc
import importlib.util
import logging

__all__ = ["GC_THRESHOLDS", "STACK", "stack", "tune_collector", "uvicorn_options"]

log = logging.getLogger("callscribe")

# (uvicorn option, choice, the module it needs, uvicorn's fallback)
_PARTS = (("loop", "uvloop", "uvloop", "asyncio"),
          ("http", "httptools", "httptools", "h11"),
          ("ws", "app.web.ws_protocol:FrameSinkProtocol", "websockets", "wsproto"))
STACK = {option: choice for option, choice, _, _ in _PARTS}
GC_THRESHOLDS = (10_000, 10, 10)  # CPython's default: (700, 10, 10)


def tune_collector() -> None:
    """The serving process's collector thresholds (see the module's docstring)."""
    gc.set_threshold(*GC_THRESHOLDS)


def stack() -> dict[str, str]:
    """The stack this machine can run: STACK, with a fallback for a part that is not installed."""
    return {option: choice if importlib.util.find_spec(module) else fallback
            for option, choice, module, fallback in _PARTS}


def uvicorn_options(*, host: str, port: int, max_ws_message_bytes: int, log_level: str,
                    graceful_timeout: float, forwarded_allow_ips: str) -> dict:
    """Keyword arguments for ``uvicorn.run`` shared by every server of ours.

    uvicorn's own message limit sits above ours so that the app, not uvicorn, refuses an oversized
    message, with close code 1009 and a reason, and the call's end reason says why."""
    return {"host": host, "port": port, "ws_max_size": 2 * max_ws_message_bytes + 4096,
            "timeout_graceful_shutdown": graceful_timeout, "log_level": log_level.lower(),
            "proxy_headers": True, "forwarded_allow_ips": forwarded_allow_ips} | stack()
