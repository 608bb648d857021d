"""TwiML for the voice webhook: the assistant (`<Connect><Stream>`) or the listen-only recorder."""

from __future__ import annotations

from xml.etree import ElementTree as ET

__all__ = ["connect_stream", "listen_and_dial", "say_and_hangup"]

_DECL = '<?xml version="1.0" encoding="UTF-8"?>'


def _to_str(root: ET.Element) -> str:
    return _DECL + ET.tostring(root, encoding="unicode", short_empty_elements=True)


def _stream(parent: ET.Element, url: str, params: dict[str, str], **attrs: str) -> ET.Element:
    stream = ET.SubElement(parent, "Stream", {"url": url, **attrs})
    for name, value in params.items():
        ET.SubElement(stream, "Parameter", {"name": name, "value": value})
    return stream


def connect_stream(stream_url: str, params: dict[str, str]) -> str:
    """Bidirectional stream: the caller talks with our assistant until we close the socket."""
    root = ET.Element("Response")
    _stream(ET.SubElement(root, "Connect"), stream_url, params)
    return _to_str(root)


def listen_and_dial(stream_url: str, params: dict[str, str], forward_to: str, caller_id: str | None = None) -> str:
    """Fork both voices to us (`both_tracks`), then ring `forward_to`; we only listen."""
    root = ET.Element("Response")
    _stream(ET.SubElement(root, "Start"), stream_url, params, name="callscribe", track="both_tracks")
    dial_attrs = {"callerId": caller_id} if caller_id else {}
    dial = ET.SubElement(root, "Dial", dial_attrs)
    dial.text = forward_to
    return _to_str(root)


def say_and_hangup(text: str) -> str:
    root = ET.Element("Response")
    ET.SubElement(root, "Say").text = text
    ET.SubElement(root, "Hangup")
    return _to_str(root)
