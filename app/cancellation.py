"""Timeouts and cancellation that a cancel cannot slip through (``within``, ``cancel_and_wait``).

On Python 3.11, ``asyncio.wait_for`` loses a cancel that arrives as the awaited thing completes:
it returns the result instead of raising, and the cancelled task goes on as if nothing happened
(fixed in 3.12 by reimplementing it on ``asyncio.timeout``). A loop that waits with it can then
outlive the ``task.cancel()`` meant to end it, and whoever awaits that task waits forever: CI saw
a Redis coordinator's close hang for 300 s this way. So the project never calls ``wait_for``:

- ``within(aw, seconds)`` is the timeout, on ``asyncio.timeout``, which counts cancels and lets
  an outside one through.
- ``cancel_and_wait(tasks)`` ends tasks even when a cancel is lost below us (redis-py still calls
  ``wait_for`` inside): it cancels again until each is done, for a bounded time.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Iterable
from typing import TypeVar

__all__ = ["within", "cancel_and_wait", "RECANCEL_S"]

log = logging.getLogger(__name__)

T = TypeVar("T")

RECANCEL_S = 0.05  # how long a cancelled task has before it is cancelled again


async def within(aw: Awaitable[T], seconds: float) -> T:
    """``await aw``, or ``TimeoutError`` after ``seconds``; a cancel of the caller always propagates."""
    async with asyncio.timeout(seconds):
        return await aw


async def cancel_and_wait(tasks: Iterable[asyncio.Future | None], *, limit_s: float = 10.0,
                          what: str = "a task") -> bool:
    """Cancel ``tasks`` (None is skipped) and wait until each is done, cancelling again every
    ``RECANCEL_S`` a task is still running; after ``limit_s`` log it and leave it. Like
    ``gather(..., return_exceptions=True)``, their results and errors are taken, not raised.
    Whether all of them ended."""
    given = [t for t in tasks if t is not None]
    pending = {t for t in given if not t.done()}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit_s
    while pending:
        for t in pending:
            t.cancel()
        _, pending = await asyncio.wait(pending, timeout=min(RECANCEL_S, max(0.0, deadline - loop.time())))
        if pending and loop.time() >= deadline:
            log.error("%s did not end within %g s of being cancelled; left running", what, limit_s)
            break
    for t in given:
        if t.done() and not t.cancelled():
            t.exception()  # taken: no "exception was never retrieved" at collection
    return not pending
