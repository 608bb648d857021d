"""`callscribe` command line: serve, simulate (a Twilio emulator), export, recover."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import TYPE_CHECKING

from pydantic import ValidationError

if TYPE_CHECKING:
    from app.storage.store import CallStore

__all__ = ["main"]


def _serve(args: argparse.Namespace) -> int:
    """One process, or (``--workers N``) N worker processes on one socket, each building its own app
    (app.main.app_factory) on the shared store: file locks decide who records a call."""
    import uvicorn

    from app.config import Settings
    from app.main import configure_logging, create_app, store_for
    from app.serving import uvicorn_options

    if args.workers < 1:
        raise UsageError("--workers must be 1 or more")
    settings = Settings.load()  # checked here, so a bad setting exits 2 before any worker starts
    configure_logging(settings, process=args.workers > 1)
    config = uvicorn_options(host=args.host, port=args.port, max_ws_message_bytes=settings.max_ws_message_bytes,
                             log_level=settings.log_level, graceful_timeout=args.graceful_timeout,
                             forwarded_allow_ips=args.forwarded_allow_ips)
    logging.getLogger("callscribe").info("serving on %s", ", ".join(f"{k}={v}" for k, v in config.items()
                                                                     if k in ("loop", "http", "ws")))
    if args.workers == 1:
        uvicorn.run(create_app(settings), **config)
        return 0
    store_for(settings).coordinator.stream_secret()  # a folder (or Redis) fault exits here, once
    uvicorn.run("app.main:app_factory", factory=True, workers=args.workers, log_config=_worker_log_config(),
                **config)
    return 0


def _worker_log_config() -> dict:
    """uvicorn's logging with each line's worker pid (access lines too: which worker served what)."""
    import copy

    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    for formatter in config["formatters"].values():
        formatter["fmt"] = "[%(process)d] " + formatter["fmt"]
    return config


def _simulate(args: argparse.Namespace) -> int:
    from app.simulator import main_from_args

    return main_from_args(args)


class UsageError(Exception):
    """Bad input on the command line: its message goes to stderr, exit status 2, nothing written."""


def _export(args: argparse.Namespace) -> int:
    """Validated as set-format validates (same rules, same messages) before anything touches the disk."""
    from app.audio.formats import InvalidFormatChoice, UnsupportedFormatError, choose_format
    from app.config import Settings
    from app.main import export_options, store_for
    from app.recording.finalize import FinalizeIncomplete, finalize_call
    from app.storage.coordination import FormatChoice
    from app.storage.paths import CallNotFound, InvalidCallSid, validate_sid
    from app.web.audio_api import reexport_check
    from app.web.errors import ApiError

    sid = args.call_sid
    try:
        validate_sid(sid)
        if args.bitrate and not args.format:
            raise UsageError("--bitrate needs --format mp3")
        fmt, kbps = choose_format(args.format, args.bitrate) if args.format else (None, None)
        settings = Settings.load()
        store = store_for(settings, create=False)
        reexport_check(store, sid)
    except (InvalidCallSid, UnsupportedFormatError, InvalidFormatChoice, CallNotFound, ApiError) as e:
        raise UsageError(str(e)) from None
    lock = store.coordinator.acquire(sid)
    if lock is None:
        print(f"call {sid} is being recorded right now; try after it ends", file=sys.stderr)
        return 1
    try:
        if fmt is not None:
            store.coordinator.set_format(sid, FormatChoice(fmt.name, kbps))
        prev = store.read_result(sid) or {}
        # Not finalised and nobody recording it: a call a crash left unfinished, exported as recovery does.
        recovered = bool(prev.get("recovered")) or not store.is_finalized(sid)
        result = finalize_call(store, sid, export_options(settings), recovered=recovered,
                               end_reason=prev.get("end_reason"))
    except FinalizeIncomplete as e:
        print(f"callscribe export: {e}", file=sys.stderr)
        return 1
    finally:
        lock.release()
    print(result["audio"].get("path"))
    return 0


def _recover(args: argparse.Namespace) -> int:
    from app.config import Settings
    from app.main import export_options, store_for
    from app.call.registry import CallRegistry

    settings = Settings.load()
    logging.basicConfig(level="INFO", format="%(levelname)s %(name)s: %(message)s")
    store = store_for(settings)
    registry = CallRegistry(store, export_options(settings))
    try:
        done = registry.recover_sync()
    finally:
        registry.executor.shutdown()
    print(f"recovered {len(done)} call(s)" + (": " + ", ".join(done) if done else ""))
    failed = _still_unfinished(store)
    if failed:
        print(f"callscribe recover: {len(failed)} call(s) could not be finalised (see the log above; their masters "
              f"and journal are kept for the next attempt): {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def _still_unfinished(store: CallStore) -> list[str]:
    """Unfinished calls nobody is recording (a live server's are not ours to finish): after
    recovery, the ones it failed to finalise."""
    return [sid for sid in store.unfinished() if not store.coordinator.is_live(sid)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="callscribe", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("serve", help="serve the app (Twilio webhook, media stream, API)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--graceful-timeout", type=int, default=30, help="seconds to finish live calls at SIGTERM")
    p.add_argument("--forwarded-allow-ips", default="127.0.0.1", help="proxies trusted for X-Forwarded-Proto")
    p.add_argument("--workers", type=int, default=1,
                   help="worker processes on this host sharing RECORDINGS_DIRECTORY (any may take any request)")
    p.set_defaults(func=_serve)
    p = sub.add_parser("simulate", help="place a call against a running server, as Twilio would")
    from app.simulator import add_arguments

    add_arguments(p)
    p.set_defaults(func=_simulate)
    p = sub.add_parser("export", help="(re-)export one call from its kept masters")
    p.add_argument("call_sid")
    p.add_argument("--format", help="mp3, wav, ogg or flac (default: the call's chosen format)")
    p.add_argument("--bitrate", help="mp3 only: kbps such as 64k (default: MP3_BITRATE)")
    p.set_defaults(func=_export)
    p = sub.add_parser("recover", help="finalise calls a crash left unfinished (also done at every start)")
    p.set_defaults(func=_recover)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except UsageError as e:
        print(f"callscribe {args.command}: {e}", file=sys.stderr)
        return 2
    except ValidationError as e:  # settings from the environment, .env or audio_config.env
        for err in e.errors():
            name = "_".join(str(p) for p in err.get("loc", ())).upper()
            msg = str(err.get("msg", "")).removeprefix("Value error, ")
            print(f"callscribe {args.command}: invalid setting{' ' + name if name else ''}: {msg}", file=sys.stderr)
        return 2
    except OSError as e:  # e.g. RECORDINGS_DIRECTORY is not a writable folder
        print(f"callscribe {args.command}: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
