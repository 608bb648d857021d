"""`within` and `cancel_and_wait` (app/cancellation.py): a cancel is never lost, a task is always ended,
and the project itself never calls `asyncio.wait_for`, which loses a cancel on Python 3.11."""

from __future__ import annotations

import ast
import asyncio
import logging
from pathlib import Path

import pytest

from app.cancellation import cancel_and_wait, within

APP = Path(__file__).resolve().parents[2] / "app"


async def test_within_returns_the_result_or_times_out():
    assert await within(asyncio.sleep(0, "done"), 1) == "done"
    with pytest.raises(TimeoutError):
        await within(asyncio.sleep(5), 0.05)


async def test_a_cancel_that_lands_as_the_awaited_thing_completes_is_not_lost():
    """The race CI lost 300 s to: the answer arrives, and in the same loop pass the task is cancelled."""
    loop = asyncio.get_running_loop()
    answer = loop.create_future()
    got: list[object] = []

    async def waiter() -> None:
        got.append(await within(answer, 5))  # with asyncio.wait_for on 3.11 this returned "yes"

    task = asyncio.create_task(waiter())
    await asyncio.sleep(0.01)
    answer.set_result("yes")
    task.cancel()
    await asyncio.wait([task], timeout=1)
    assert task.cancelled() and got == []


async def test_cancel_and_wait_ends_a_task_that_swallowed_its_first_cancel():
    swallowed = 0

    async def stubborn() -> None:
        nonlocal swallowed
        while True:
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                swallowed += 1
                if swallowed > 2:
                    raise

    task = asyncio.create_task(stubborn())
    await asyncio.sleep(0)
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await cancel_and_wait([task, None], limit_s=5)
    assert task.cancelled() and swallowed == 3
    assert loop.time() - started < 1.0  # three cancels RECANCEL_S apart, far short of limit_s


async def test_cancel_and_wait_gives_up_after_its_limit_and_says_so(caplog):
    stop = asyncio.Event()

    async def deaf() -> None:
        while not stop.is_set():
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                pass

    task = asyncio.create_task(deaf())
    await asyncio.sleep(0)
    with caplog.at_level(logging.ERROR, logger="app.cancellation"):
        assert not await cancel_and_wait([task], limit_s=0.3, what="the deaf loop")
    assert "the deaf loop did not end within 0.3 s of being cancelled" in caplog.text
    assert not task.done()
    stop.set()
    task.cancel()
    await asyncio.wait([task], timeout=1)
    assert task.done()


async def test_cancel_and_wait_takes_the_errors_of_tasks_that_failed():
    async def fails() -> None:
        raise ValueError("boom")

    task = asyncio.create_task(fails())
    await asyncio.sleep(0)
    assert await cancel_and_wait([task])
    assert isinstance(task.exception(), ValueError)


def test_the_project_never_calls_asyncio_wait_for():
    """`asyncio.wait_for` loses a cancel on Python 3.11; `app.cancellation.within` is the timeout to use."""
    found = []
    for path in sorted(APP.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            called = (isinstance(node, ast.Attribute) and node.attr == "wait_for"
                      and isinstance(node.value, ast.Name) and node.value.id == "asyncio")
            imported = (isinstance(node, ast.ImportFrom) and node.module == "asyncio"
                        and any(a.name == "wait_for" for a in node.names))
            if called or imported:
                found.append(f"{path.relative_to(APP)}:{node.lineno}")
    assert not found, f"use app.cancellation.within instead of asyncio.wait_for: {found}"
