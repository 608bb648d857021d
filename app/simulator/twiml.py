"""Reading the webhook's TwiML as Twilio does: which ``<Stream>`` to open, and where to dial it.

``<Connect><Stream>`` → bidirectional "connect" mode (inbound track only, the server may talk
back); ``<Start><Stream>`` (e.g. ``track="both_tracks"`` before ``<Dial>``) → unidirectional
"listen" mode. The first one in document order wins.

Reaching a local server: Twilio only connects to ``wss://``. When ``base_url`` is plain
``http://`` and the TwiML stream URL has the same host and port, the socket is opened with
``ws://`` instead (as a TLS-terminating proxy would); ``SimConfig.stream_url`` overrides the
address entirely. In both cases the signature is still computed over the TwiML URL
(``TwimlStream.signed_url``), because that is what Twilio signs.

Nothing here does I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable
from urllib.parse import urljoin, urlsplit, urlunsplit
from xml.etree import ElementTree as ET

from app.simulator.errors import SimulatorError

__all__ = ["TwimlStream", "parse_twiml", "stream_target"]

# The <Stream track=…> attribute → the tracks Twilio names in `start` and streams.
_TRACKS = {"inbound_track": ("inbound",), "outbound_track": ("outbound",), "both_tracks": ("inbound", "outbound")}


@dataclass
class TwimlStream:
    """The ``<Stream>`` Twilio would open: its mode, URL, track and ``<Parameter>``s."""

    mode: str  # "connect" | "listen"
    url: str
    track: str  # inbound_track | outbound_track | both_tracks
    parameters: dict[str, str]
    name: str | None

    @property
    def tracks(self) -> list[str]:
        """The tracks of the stream as ``start.tracks`` names them."""
        return list(_TRACKS[self.track])

    @property
    def signed_url(self) -> str:
        """The stream URL as Twilio signs it: as written in the TwiML, without query or fragment."""
        return urlunsplit(urlsplit(self.url)._replace(query="", fragment=""))


def parse_twiml(twiml: str, webhook_url: str) -> TwimlStream:
    """Find the ``<Stream>`` Twilio would open in a TwiML document.

    ``<Connect><Stream>`` is bidirectional (connect mode, inbound track only);
    ``<Start><Stream track=…>`` is unidirectional (listen mode). The first one in document
    order wins. Raises ``SimulatorError`` for anything else.
    """
    try:
        root = ET.fromstring(twiml.strip().encode("utf-8"))
    except ET.ParseError as exc:
        raise SimulatorError(f"webhook answer is not XML TwiML ({exc}): {twiml[:200]!r}") from None
    if root.tag != "Response":
        raise SimulatorError(f"TwiML root must be <Response>, got <{root.tag}>")
    for verb in root:
        if verb.tag not in ("Connect", "Start"):
            continue
        stream = verb.find("Stream")
        if stream is None:
            continue
        url = (stream.get("url") or "").strip()
        if not url:
            raise SimulatorError("<Stream> has no url attribute (Twilio error 31923 Malformed URL)")
        url = urljoin(webhook_url, url)  # Twilio allows relative URLs
        params: dict[str, str] = {}
        for p in stream.findall("Parameter"):
            name = p.get("name")
            if name is None:
                raise SimulatorError("<Parameter> without a name attribute")
            params[name] = p.get("value", "")
        if verb.tag == "Connect":
            return TwimlStream("connect", url, "inbound_track", params, stream.get("name"))
        track = stream.get("track", "inbound_track")
        if track not in _TRACKS:
            raise SimulatorError(f"<Stream track={track!r}>: Twilio accepts inbound_track, outbound_track, both_tracks")
        return TwimlStream("listen", url, track, params, stream.get("name"))
    verbs = ", ".join(f"<{v.tag}>" for v in root) or "nothing"
    raise SimulatorError(
        f"TwiML has neither <Connect><Stream> nor <Start><Stream> (it has {verbs}); "
        "the simulator cannot stream this call"
    )


def stream_target(twiml_url: str, base_url: str, override: str | None, warn: Callable[[str, str], None]) -> str:
    """The URL to dial for the stream (see the module docstring on the ws:// downgrade)."""
    parts = urlsplit(twiml_url)
    if parts.scheme in ("http", "https"):  # relative URL resolved against the webhook
        parts = parts._replace(scheme="wss" if parts.scheme == "https" else "ws")
    if parts.scheme == "ws":
        warn("scheme", "stream URL uses ws:// — real Twilio accepts only wss:// (error 31922)")
    elif parts.scheme != "wss":
        raise SimulatorError(f"stream URL scheme {parts.scheme!r} not supported (Twilio error 31922): {twiml_url}")
    if parts.query:
        warn("query", "stream URL has a query string — Twilio does not support it; the simulator drops it")
        parts = parts._replace(query="")
    if parts.fragment:
        parts = parts._replace(fragment="")
    if override:
        return override
    base = urlsplit(base_url)
    if parts.scheme == "wss" and base.scheme == "http" and parts.netloc.lower() == base.netloc.lower():
        parts = parts._replace(scheme="ws")
    return urlunsplit(parts)
