"""Twilio request signatures (`X-Twilio-Signature`), computed and validated.

Pure functions: no web framework, no I/O. The algorithm (Twilio "webhooks security" page):

1. start from the full URL Twilio requested (scheme through the query string);
2. for a form POST, sort the parameters by name (code-point order, case-sensitive) and append
   each ``name + value`` with no delimiter; a name sent several times contributes every value,
   values sorted;
3. HMAC-SHA1 keyed with the auth token, base64.

Validation follows twilio-python's ``RequestValidator`` and the quirks Twilio documents:

- Twilio's signing is inconsistent about default ports, so the URL is tried as given, without
  its port and with the scheme's default port (``:443`` for https/wss, ``:80`` for http/ws;
  twilio-python also tries ``:80`` for wss, and so do we).
- For the Media Streams WebSocket upgrade (a GET, no params, header ``x-twilio-signature``)
  Twilio signs the ``wss://`` URL from the TwiML; the docs advise also trying it with a
  trailing ``/``. Both are accepted for ``ws``/``wss`` URLs.
- twilio-python de-duplicates repeated identical values of one name before signing; Twilio's
  docs and twilio-node do not. Both variants are accepted.
- JSON bodies: the URL carries ``?bodySHA256=<hex sha256 of the body>`` and is signed with no
  params. Pass the raw body (``str``/``bytes``) as ``params`` to check both.

A missing or empty signature never validates (twilio-python raises ``TypeError`` on ``None``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterable, Mapping
from typing import Any, Union
from urllib.parse import parse_qs, urlsplit, urlunsplit

__all__ = ["compute_signature", "validate", "compute_body_hash", "url_variants"]

Params = Union[Mapping[str, Any], Iterable[tuple[str, str]], None]

_DEFAULT_PORTS = {"https": 443, "wss": 443, "http": 80, "ws": 80}


def _items(params: Params) -> list[tuple[str, list[str]]]:
    """Normalise params to ``[(name, [values…]), …]``.

    Accepts a plain mapping (value a str or a list of str), multi-dicts with ``getlist``
    (Starlette ``FormData``, Django ``QueryDict``) or ``getall`` (Flask/multidict), or an
    iterable of ``(name, value)`` pairs.
    """
    if not params:
        return []
    if isinstance(params, Mapping):
        out: list[tuple[str, list[str]]] = []
        for name in set(params.keys()):
            getlist = getattr(params, "getlist", None) or getattr(params, "getall", None)
            if getlist is not None:
                values = list(getlist(name))
            else:
                value = params[name]
                values = list(value) if isinstance(value, (list, tuple)) else [value]
            out.append((str(name), ["" if v is None else str(v) for v in values]))
        return out
    grouped: dict[str, list[str]] = {}
    for name, value in params:
        grouped.setdefault(str(name), []).append("" if value is None else str(value))
    return list(grouped.items())


def _payload(url: str, items: list[tuple[str, list[str]]], dedupe: bool) -> str:
    parts = [url]
    for name, values in sorted(items, key=lambda kv: kv[0]):
        for value in sorted(set(values) if dedupe else values):
            parts.append(name + value)
    return "".join(parts)


def _sign(payload: str, auth_token: str) -> str:
    mac = hmac.new(auth_token.encode("utf-8"), payload.encode("utf-8"), hashlib.sha1)
    return base64.b64encode(mac.digest()).decode("ascii")


def compute_signature(url: str, params: Params, auth_token: str) -> str:
    """Signature Twilio would send for a request to ``url`` with form ``params``.

    ``params`` is ``None``/empty for GETs and the WebSocket upgrade. Repeated names keep every
    value (sorted), as Twilio's docs and twilio-node do.
    """
    return _sign(_payload(url, _items(params), dedupe=False), auth_token)


def compute_body_hash(body: str | bytes) -> str:
    """Hex SHA-256 of a JSON body, the value Twilio puts in ``?bodySHA256=``."""
    raw = body.encode("utf-8") if isinstance(body, str) else body
    return hashlib.sha256(raw).hexdigest()


def _netloc(userinfo: str, host: str, port: int | None) -> str:
    if ":" in host and not host.startswith("["):  # bare IPv6 literal
        host = f"[{host}]"
    loc = f"{userinfo}@{host}" if userinfo else host
    return f"{loc}:{port}" if port is not None else loc


def url_variants(url: str) -> list[str]:
    """URLs worth trying for one request: as given, without port, with the default port(s).

    For ``ws``/``wss`` each variant is also tried with a trailing ``/`` added to the path.
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    userinfo, _, hostport = parts.netloc.rpartition("@")
    try:
        port = parts.port
    except ValueError:  # a garbage port: only the literal URL can match
        return [url]
    # Keep the host exactly as written (urlsplit's .hostname lower-cases it).
    host = hostport[: hostport.rfind(":")] if port is not None else hostport

    variants = [url]
    without = urlunsplit(parts._replace(netloc=_netloc(userinfo, host, None)))
    variants.append(without)
    default_ports = [_DEFAULT_PORTS.get(scheme, 80)]
    if scheme == "wss":
        default_ports.append(80)  # twilio-python's add_port: 443 only for "https"
    if port is None:
        for p in default_ports:
            variants.append(urlunsplit(parts._replace(netloc=_netloc(userinfo, host, p))))
    if scheme in ("ws", "wss"):
        slashed = []
        for v in variants:
            p = urlsplit(v)
            if not p.path.endswith("/"):
                slashed.append(urlunsplit(p._replace(path=p.path + "/")))
        variants.extend(slashed)
    seen: set[str] = set()
    return [v for v in variants if not (v in seen or seen.add(v))]


def validate(url: str, params: Params | str | bytes, signature: str | None, auth_token: str) -> bool:
    """True if ``signature`` is Twilio's signature for this request.

    ``url`` is the full public URL Twilio requested (rebuild it from the configured public
    origin behind a proxy; use the ``wss://`` URL for a Media Streams upgrade). ``params`` are
    all form fields as received, or the raw body for JSON requests carrying ``bodySHA256``.
    Comparison is constant-time.
    """
    if not signature or not auth_token:
        return False
    body_ok = True
    if isinstance(params, (str, bytes)):
        query = parse_qs(urlsplit(url).query)
        expected = query.get("bodySHA256", [None])[0]
        body_ok = expected is not None and hmac.compare_digest(compute_body_hash(params), expected.lower())
        params = None
    items = _items(params)
    has_repeats = any(len(values) != len(set(values)) for _, values in items)
    given = signature.strip().encode("ascii", "replace")
    ok = False
    for candidate_url in url_variants(url):
        for dedupe in (False, True) if has_repeats else (False,):
            computed = _sign(_payload(candidate_url, items, dedupe), auth_token).encode("ascii")
            # Evaluate every variant so timing does not reveal which one matched.
            ok |= hmac.compare_digest(computed, given)
    return ok and body_ok
