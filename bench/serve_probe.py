"""`callscribe serve` exactly as app/cli.py runs it, plus the frame-lateness probe (bench/probe.py).

Used only by the concurrency benchmark. The probe wraps `StreamProtocol.receive` (bench code; app/
is not modified; a frame is timed when it is parsed, in the same turn of the loop that records it)
and adds GET /bench/lat?reset=1. The memory, CPU and hang-up benchmarks use the unmodified
`python -m app.cli serve`.

BENCH_WORKERS=N (N > 1) serves with N worker processes on one socket, as `callscribe serve --workers N`
does; each worker's probe then flushes its figures to files in BENCH_LAT_DIR (probe.read_dumps).
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


def build_app():  # type: ignore[no-untyped-def]
    """The app with the probe (a uvicorn factory: each worker process builds its own)."""
    from app.config import Settings
    from app.main import create_app
    from app.twilio.events import Start
    from app.twilio.protocol import StreamProtocol

    orig = StreamProtocol.receive
    orig_media = StreamProtocol.receive_media
    stall_beat = None
    if os.environ.get("BENCH_STALL_LOG"):  # diagnostic: where the loop is when no frame is parsed
        import stalls

        stalls.install(os.environ["BENCH_STALL_LOG"])
        stall_beat = stalls.beat

    def receive_media(self, text):  # type: ignore[no-untyped-def]
        ev = orig_media(self, text)
        if ev is not None:
            t0 = self.__dict__.get("_bench_t0")
            if t0 is not None:
                probe.record(t0, ev.timestamp)
                if stall_beat is not None:
                    stall_beat()
        return ev

    def receive(self, text):  # type: ignore[no-untyped-def]
        ev = orig(self, text)
        if ev.__class__ is Start:
            v = ev.custom_parameters.get("bench_t0")
            self._bench_t0 = float(v) if v else None
        return ev

    StreamProtocol.receive = receive
    StreamProtocol.receive_media = receive_media
    if os.environ.get("BENCH_LAT_DIR"):
        probe.dump_to(os.environ["BENCH_LAT_DIR"])
    app = create_app(Settings.load())

    @app.get("/bench/lat")
    async def lat(reset: int = 0) -> dict:
        return probe.stats(bool(reset))

    return app


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    args = ap.parse_args()

    import uvicorn

    from app.config import Settings
    from app.serving import uvicorn_options

    settings = Settings.load()
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    options = probe.bench_stack(uvicorn_options(
        host=args.host, port=args.port, max_ws_message_bytes=settings.max_ws_message_bytes,
        log_level=settings.log_level, graceful_timeout=20, forwarded_allow_ips="127.0.0.1"))
    workers = int(os.environ.get("BENCH_WORKERS", "1"))
    if workers > 1:
        uvicorn.run("serve_probe:build_app", factory=True, workers=workers, **options)
    else:
        uvicorn.run(build_app(), **options)


if __name__ == "__main__":
    main()
