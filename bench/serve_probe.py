"""`callscribe serve` exactly as app/cli.py runs it, plus the frame-lateness probe (bench/probe.py).

Used only by the concurrency benchmark. The probe wraps `_StreamShell.dispatch` (bench code; app/
is not modified) and adds GET /bench/lat?reset=1. The memory, CPU and hang-up benchmarks use the
unmodified `python -m app.cli serve`.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import probe  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    args = ap.parse_args()

    import uvicorn

    import app.web.media_stream as ms
    from app.config import Settings
    from app.main import create_app
    from app.twilio.events import Media, Start

    orig = ms._StreamShell.dispatch

    async def dispatch(self, ev):  # type: ignore[no-untyped-def]
        r = await orig(self, ev)
        cls = ev.__class__
        if cls is Media:
            t0 = getattr(self, "_bench_t0", None)
            if t0 is not None:
                probe.record(t0, ev.timestamp)
        elif cls is Start:
            v = ev.custom_parameters.get("bench_t0")
            self._bench_t0 = float(v) if v else None
        return r

    ms._StreamShell.dispatch = dispatch

    settings = Settings.load()
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = create_app(settings)
    nice = int(os.environ.get("BENCH_EXPORTER_NICE", "0"))
    if nice:
        # Experiment (bench only): the same export pool, its threads at a lower CPU priority
        # (Linux nice values are per thread), so encoding yields the CPU to the event loop.
        import threading
        from concurrent.futures import ThreadPoolExecutor

        reg = app.state.services.registry
        old = reg.executor
        reg.executor = ThreadPoolExecutor(
            max_workers=old._max_workers, thread_name_prefix="callscribe-export",
            initializer=lambda: os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice))
        old.shutdown(wait=False)

    @app.get("/bench/lat")
    async def lat(reset: int = 0) -> dict:
        return probe.stats(bool(reset))

    from app.serving import uvicorn_options

    uvicorn.run(app, **probe.bench_stack(uvicorn_options(
        host=args.host, port=args.port, max_ws_message_bytes=settings.max_ws_message_bytes,
        log_level=settings.log_level, graceful_timeout=20, forwarded_allow_ips="127.0.0.1")))

if __name__ == "__main__":
    main()
