"""A socket's loop in a task of its own (``run_in_own_task``), for the per-message paths.

Each time a loop waits for a message, its coroutine suspends and resumes through every frame
above it. In the request's task that is the whole ASGI middleware stack (about twenty frames,
measured as several µs per message on the serving loop); in a task of its own, only the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from typing import Any

__all__ = ["run_in_own_task"]


async def run_in_own_task(coro: Coroutine[Any, Any, None]) -> None:
    """Run ``coro`` as a task of its own and wait for it. Cancelling the caller cancels it."""
    task = asyncio.ensure_future(coro)
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        raise
