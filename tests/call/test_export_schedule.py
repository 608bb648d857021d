"""The export schedule at hang-up: the encoder process is lifted before the advance in flight is awaited."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from app.call.export_schedule import ExportSchedule


async def test_the_hang_up_hurries_the_exporter_before_awaiting_its_advance_in_flight():
    """Awaiting first would leave that advance at idle priority on a machine with no free core."""
    hurried: list[str] = []
    store = SimpleNamespace(coordinator=SimpleNamespace(format_token=lambda sid: None))
    schedule = ExportSchedule(store, "CA" + "8" * 32, SimpleNamespace(), None, interval_s=0, rate=8000,
                              settled=lambda: 0)
    schedule.exporter = SimpleNamespace(hurry=lambda: hurried.append("hurry"))
    schedule._busy = asyncio.get_running_loop().create_future()  # an advance in flight
    stopping = asyncio.create_task(schedule.stop())
    await asyncio.sleep(0.05)
    assert hurried == ["hurry"] and not stopping.done()
    schedule._busy.set_result(None)
    assert await stopping is schedule.exporter and hurried == ["hurry"]
