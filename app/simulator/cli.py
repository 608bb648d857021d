"""``callscribe simulate``: its flags, and one call run from them with a printed summary.

``add_arguments`` adds the flags to a parser (``app.cli`` builds ``callscribe simulate`` with
it); ``main_from_args`` places the call (``run_call``), writes what the caller heard, waits for
the server to have written the call's files (``wait_for_call_files``) and returns the exit
status: 0 done, 1 the call could not be placed, 2 unreadable audio, 3 the files did not appear.
Secrets (``$TWILIO_AUTH_TOKEN``, ``$API_KEY``) are read when the call runs, never into ``--help``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path
from typing import Any, Callable

from app.simulator.call import run_call
from app.simulator.config import RATE, SimConfig
from app.simulator.errors import SimulatorError
from app.simulator.files import FilesNotReady, load_wav_8k, wait_for_call_files, write_wav_8k

__all__ = ["add_arguments", "main_from_args"]


def _pairs(text: str, what: str) -> list[tuple[float, str]]:
    out = []
    for item in filter(None, (s.strip() for s in text.split(","))):
        at, sep, value = item.partition(":")
        if not sep:
            raise argparse.ArgumentTypeError(f"{what}: expected 'seconds:value', got {item!r}")
        try:
            out.append((float(at), value))
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what}: bad time {at!r} in {item!r}") from None
    return out


def _dtmf_arg(text: str) -> list[tuple[float, str]]:
    pairs = _pairs(text, "--dtmf")
    for _, digit in pairs:
        if len(digit) != 1 or digit not in "0123456789*#ABCDabcd":
            raise argparse.ArgumentTypeError(f"--dtmf: {digit!r} is not a DTMF digit (0-9 * # A-D)")
    return pairs


def _gaps_arg(text: str) -> list[tuple[float, float]]:
    try:
        return [(at, float(length)) for at, length in _pairs(text, "--gaps")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--gaps: expected 'at:length,…' in seconds, got {text!r}") from None


def _kv_arg(sep: str) -> Callable[[str], tuple[str, str]]:
    def parse(text: str) -> tuple[str, str]:
        key, found, value = text.partition(sep)
        if not found or not key.strip():
            raise argparse.ArgumentTypeError(f"expected NAME{sep}VALUE, got {text!r}")
        return key.strip(), value.strip() if sep == ":" else value

    return parse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``callscribe simulate`` (and its description and exit codes, unless the parser has its own)."""
    if not parser.description:
        parser.description = (
            "Place one call against a running server, exactly as Twilio would. By default the caller listens to the "
            "greeting, plays --wav, stays on the line until the assistant has finished its reply (at most --max-wait "
            "s), hangs up, and waits until the server has written the call's files, then prints where they are."
        )
    if not parser.epilog:
        parser.epilog = ("Exit status: 0 the call went through and its files are written; 1 the call could not be "
                         "placed; 2 unreadable audio; 3 the files did not appear within --files-timeout.")
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="server base URL where /voice and /status live (default %(default)s)")
    parser.add_argument("--wav", help="caller audio (inbound track), any rate/channels; default: silence")
    parser.add_argument("--wav-outbound", help="listen mode only: the other party's audio (outbound track)")
    parser.add_argument("--mode", choices=("auto", "connect", "listen"), default="auto", help="expected mode; auto = whatever the TwiML says")
    parser.add_argument("--speed", type=float, default=1.0, help="1 = real time, 10 = ten times faster, 0 = as fast as possible")
    parser.add_argument(
        "--tail", type=float, default=None, metavar="SECONDS",
        help="hang up this many seconds after the caller's audio ends (0 = right after speaking). Default: like a "
             "caller who listens to the end — keep the line open (silence) until the assistant has finished "
             "speaking: everything it sent has played and nothing new came for --quiet seconds; at most --max-wait",
    )
    parser.add_argument(
        "--speak-at", type=float, default=None, metavar="SECONDS",
        help="start the caller's audio this many seconds into the call (0 = at once, over the greeting). Default: "
             "once the assistant's greeting has finished, by the same rule as the default --tail (listen mode: at once)",
    )
    parser.add_argument("--quiet", type=float, default=2.0, metavar="SECONDS",
                        help="how long the line must stay quiet, with nothing left to play, for the assistant to count "
                             "as finished (default %(default)s; it needs time to answer the caller's last words)")
    parser.add_argument("--max-wait", type=float, default=30.0, metavar="SECONDS",
                        help="wait at most this long for the greeting, and again at the end (default %(default)s)")
    parser.add_argument("--duration", type=float,
                        help="total call length in seconds: the call ends then, whatever --tail says "
                             "(default: until the tail is over; 10 s without --wav)")
    parser.add_argument("--files-timeout", type=float, default=60.0, metavar="SECONDS",
                        help="after the call, wait this long for the server to have written the call's files "
                             "(polls GET /calls/{sid}); exit 3 if they are not there by then. 0 = do not wait "
                             "(default %(default)s)")
    parser.add_argument("--api-key", default=None,
                        help="the server's API_KEY, to ask it for the call's files (default: $API_KEY)")
    parser.add_argument("--auth-token", default=None, help="sign requests like Twilio (default: $TWILIO_AUTH_TOKEN; '' = unsigned)")
    parser.add_argument("--out", default="heard.wav", help="write what the caller heard here (8 kHz WAV; default %(default)s; '' to skip)")
    parser.add_argument("--call-sid", help="CallSid to use (default: random CA…)")
    parser.add_argument("--dtmf", type=_dtmf_arg, default=[], help='key presses at seconds into the call, e.g. "1.5:1,2.0:#" (connect mode only)')
    parser.add_argument("--gaps", type=_gaps_arg, default=[], help='frames not sent, e.g. "3.0:0.5" = a 0.5 s hole at 3 s')
    parser.add_argument("--no-stop", action="store_true", help="drop the socket at the end instead of sending stop")
    parser.add_argument("--no-status-callback", action="store_true", help="do not POST /status after the call")
    parser.add_argument("--stream-url", help="dial this WebSocket URL instead of the TwiML one (the TwiML URL is still signed)")
    parser.add_argument("--first-timestamp", type=int, default=120, help="media.timestamp of the first frame in ms (default %(default)s)")
    parser.add_argument("--header", type=_kv_arg(":"), action="append", default=[], metavar="NAME:VALUE", help="extra HTTP/WS header (repeatable), e.g. 'X-API-Key: k'")
    parser.add_argument("--param", type=_kv_arg("="), action="append", default=[], metavar="NAME=VALUE", help="extra webhook form parameter (repeatable)")
    parser.add_argument("--from", dest="from_number", default="+15005550006", help="caller number (default: Twilio test number %(default)s)")
    parser.add_argument("--to", dest="to_number", default="+15005550001", help="called number (default: Twilio test number %(default)s)")


def _auth_token(args: argparse.Namespace) -> str | None:
    # Read at run time, not when the parser is built, so --help never captures the secret.
    token = args.auth_token if args.auth_token is not None else os.environ.get("TWILIO_AUTH_TOKEN")
    return token or None



def _api_headers(headers: dict[str, str], api_key: str | None) -> dict[str, str]:
    out = dict(headers)
    if api_key:
        out["X-API-Key"] = api_key
    return out



def _print_files(base_url: str, body: dict[str, Any]) -> None:
    result = body.get("result") or {}
    files = result.get("files") or {}
    names = [files[k] for k in ("conversation", "transcript", "summary", "json") if isinstance(files.get(k), str)]
    names += [n for k in ("tracks", "turn_clips") for n in files.get(k, []) if isinstance(n, str)]
    names += [n for n in (body.get("files") or {}) if n not in names]
    path = (result.get("audio") or {}).get("path")
    where = str(Path(path).parent) if path else None
    print(f"call files:    {where + ' (on the server)' if where else 'on the server'}; "
          f"each also at {base_url.rstrip('/')}/calls/{body.get('call_sid')}/files/<name>")
    for n in names:
        print(f"               {n}")


def main_from_args(args: argparse.Namespace) -> int:
    """Run one call from parsed ``simulate`` flags; print a summary.

    Exit codes: 0 the call went through and the server has its files; 1 the call could not be
    placed; 2 unreadable audio; 3 the call went through but its files did not appear in
    ``--files-timeout`` seconds (or the server would not say).
    """
    try:
        caller = load_wav_8k(args.wav) if args.wav else None
        outbound = load_wav_8k(args.wav_outbound) if getattr(args, "wav_outbound", None) else None
    except Exception as exc:  # soundfile raises several types; the message is what matters
        print(f"simulate: cannot read audio: {exc}", file=sys.stderr)
        return 2
    duration = args.duration
    if duration is None and caller is None and outbound is None:
        duration = 10.0
    cfg = SimConfig(
        base_url=args.url,
        caller_audio=caller,
        outbound_audio=outbound,
        duration_s=duration,
        tail_s=args.tail,
        speak_at_s=getattr(args, "speak_at", None),
        quiet_s=getattr(args, "quiet", 2.0),
        max_wait_s=getattr(args, "max_wait", 30.0),
        speed=args.speed,
        auth_token=_auth_token(args),
        call_sid=args.call_sid,
        from_number=getattr(args, "from_number", "+15005550006"),
        to_number=getattr(args, "to_number", "+15005550001"),
        first_timestamp_ms=getattr(args, "first_timestamp", 120),
        dtmf=list(args.dtmf or []),
        stream_url=args.stream_url,
        gaps=list(getattr(args, "gaps", None) or []),
        send_stop=not args.no_stop,
        extra_params=dict(getattr(args, "param", None) or []),
        headers=dict(getattr(args, "header", None) or []),
        status_callback=not getattr(args, "no_status_callback", False),
        mode=args.mode,
    )
    try:
        res = asyncio.run(run_call(cfg))
    except SimulatorError as exc:
        print(f"simulate: {exc}", file=sys.stderr)
        return 1
    print(f"call sid:      {res.call_sid}")
    print(f"stream sid:    {res.stream_sid}")
    print(f"mode:          {res.mode} (tracks {', '.join(res.tracks)})  stream {res.connected_url}")
    print(f"frames sent:   {res.frames_sent}  ({res.stream_duration_ms / 1000:.2f} s of stream time)")
    if res.speech_start_ms is not None and (args.wav or getattr(args, "wav_outbound", None)):
        end = f" to {res.speech_end_ms / 1000:.2f} s" if res.speech_end_ms is not None else ""
        print(f"caller audio:  from {res.speech_start_ms / 1000:.2f} s{end} of stream time")
    for what, waited, how in res.waits:
        label = "the greeting" if what == "greeting" else "the assistant to finish"
        outcome = {"quiet": "it had", "max-wait": "gave up (--max-wait)", "closed": "the call ended",
                   "duration": "--duration ran out"}[how]
        print(f"waited:        {waited / 1000:.2f} s for {label}: {outcome}")
    print(f"received:      {res.media_received_bytes} bytes of audio ({res.media_received_bytes / RATE:.2f} s)")
    print(f"marks:         {len(res.marks_echoed)} echoed, {len(res.marks_cleared)} of them by clear; clears: {res.clears}")
    ended = "server closed the socket" if res.closed_by_server else ("stop sent" if res.stop_sent else "socket dropped")
    print(f"ended:         {ended}; close code {res.close_code} {res.close_reason or ''}".rstrip())
    if res.status_callback_status is not None:
        print(f"status cb:     HTTP {res.status_callback_status}")
    for w in res.warnings:
        print(f"warning:       {w}")
    if args.out:
        out = Path(args.out)
        write_wav_8k(out, res.heard)
        print(f"heard audio:   {out} ({len(res.heard) / RATE:.2f} s)")
    timeout = getattr(args, "files_timeout", 0.0) or 0.0
    if timeout <= 0:
        return 0
    api_key = args.api_key if getattr(args, "api_key", None) is not None else os.environ.get("API_KEY")
    try:
        body = wait_for_call_files(cfg.base_url, res.call_sid, headers=_api_headers(cfg.headers, api_key or None),
                                   timeout_s=timeout)
    except FilesNotReady as exc:
        print(f"simulate: {exc}", file=sys.stderr)
        return 3
    _print_files(cfg.base_url, body)
    return 0
