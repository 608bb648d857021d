"""`callscribe` command line: serve, simulate (a Twilio emulator), export, recover."""

from __future__ import annotations

import argparse
import logging
import sys

__all__ = ["main"]


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from app.config import Settings
    from app.main import create_app

    settings = Settings.load()
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = create_app(settings)
    # uvicorn's own limit sits above ours so that the app, not uvicorn, refuses an oversized
    # message, with close code 1009 and a reason, and the call's end reason says why.
    uvicorn.run(app, host=args.host, port=args.port, ws_max_size=2 * settings.max_ws_message_bytes + 4096,
                timeout_graceful_shutdown=args.graceful_timeout, log_level=settings.log_level.lower(),
                proxy_headers=True, forwarded_allow_ips=args.forwarded_allow_ips, ws="websockets")
    return 0


def _simulate(args: argparse.Namespace) -> int:
    from app.simulator import main_from_args

    return main_from_args(args)


def _export(args: argparse.Namespace) -> int:
    from app.config import Settings
    from app.main import export_options
    from app.recording.finalize import finalize_call
    from app.recording.store import CallStore

    settings = Settings.load()
    store = CallStore(settings.recordings_directory)
    if args.format:
        store.set_format(args.call_sid, args.format, None)
    lock = store.lock(args.call_sid, blocking=False)
    if lock is None:
        print(f"call {args.call_sid} is being recorded right now; try after it ends", file=sys.stderr)
        return 1
    try:
        prev = store.read_result(args.call_sid) or {}
        result = finalize_call(store, args.call_sid, export_options(settings), recovered=bool(prev.get("recovered")))
    finally:
        lock.release()
    print(result["audio"].get("path"))
    return 0


def _recover(args: argparse.Namespace) -> int:
    from app.config import Settings
    from app.main import export_options
    from app.recording.registry import CallRegistry
    from app.recording.store import CallStore

    settings = Settings.load()
    logging.basicConfig(level="INFO", format="%(levelname)s %(name)s: %(message)s")
    registry = CallRegistry(CallStore(settings.recordings_directory), export_options(settings))
    done = registry.recover_sync()
    print(f"recovered {len(done)} call(s)" + (": " + ", ".join(done) if done else ""))
    registry.executor.shutdown()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="callscribe", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("serve", help="serve the app (Twilio webhook, media stream, API)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--graceful-timeout", type=int, default=30, help="seconds to finish live calls at SIGTERM")
    p.add_argument("--forwarded-allow-ips", default="127.0.0.1", help="proxies trusted for X-Forwarded-Proto")
    p.set_defaults(func=_serve)
    p = sub.add_parser("simulate", help="place a call against a running server, as Twilio would")
    from app.simulator import add_arguments

    add_arguments(p)
    p.set_defaults(func=_simulate)
    p = sub.add_parser("export", help="(re-)export one call from its kept masters")
    p.add_argument("call_sid")
    p.add_argument("--format", help="mp3, wav, ogg or flac (default: the call's chosen format)")
    p.set_defaults(func=_export)
    p = sub.add_parser("recover", help="finalise calls a crash left unfinished (also done at every start)")
    p.set_defaults(func=_recover)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
