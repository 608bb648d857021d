"""Shared dependencies: the app's services, the API-key guard for management endpoints, and the
dashboard's login (a session cookie the guard accepts too; pages redirect to /login without it)."""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import time
from dataclasses import dataclass
from typing import Annotated
from urllib.parse import urlencode, urlsplit

from fastapi import Depends, Request, Security
from fastapi.responses import RedirectResponse
from fastapi.security import APIKeyCookie, APIKeyHeader, APIKeyQuery, HTTPBearer

from app.config import Settings
from app.call.registry import CallRegistry
from app.recording.finalize import ExportOptions
from app.storage.artefacts import ArtefactStore
from app.storage.coordination import Coordinator
from app.storage.store import CallStore
from app.web.errors import ApiError

__all__ = ["Services", "ServicesDep", "require_api_key", "ApiKeyDep", "install_log_redaction", "DASHBOARD_COOKIE",
           "SESSION_MAX_AGE_S", "dashboard_session", "session_ok", "credentials", "same_origin", "safe_next",
           "login_redirect", "require_dashboard_login", "DashboardLoginDep"]


@dataclass
class Services:
    settings: Settings
    store: CallStore
    registry: CallRegistry
    opts: ExportOptions
    agent_factory: object = None  # callable(CallSession) -> the assistant (and .transcriber(io, tracks)), or None
    events: object = None  # RecordingEvents for embedders
    chunk_bytes: int = 32000
    web_calls: object = None  # app.web.browser_calls.BrowserCalls: this process's browser calls
    catalog_ready: object = None  # asyncio.Future: the catalog's check (and rebuild) at start-up

    @property
    def artefacts(self) -> ArtefactStore:
        """Finished files (downloads): the store's artefact store."""
        return self.store.artefacts

    @property
    def coordinator(self) -> Coordinator:
        """Ownership, live calls, format choices, the stream secret: shared by every worker."""
        return self.store.coordinator

    @property
    def stream_secret(self) -> bytes:
        """Signs the per-call stream tokens: the webhook's worker and the stream's must agree."""
        return self.store.coordinator.stream_secret()


def get_services(request: Request) -> Services:
    return request.app.state.services


ServicesDep = Annotated[Services, Depends(get_services)]


def api_key_ok(settings: Settings, headers, query) -> bool:
    """`Authorization: Bearer <key>`, `X-API-Key: <key>`, or `?api_key=<key>` (for browser links)."""
    key = settings.api_key
    if not key:
        return True
    given = headers.get("x-api-key") or ""
    auth = headers.get("authorization") or ""
    if auth.lower().startswith("bearer "):
        given = given or auth[7:].strip()
    given = given or query.get("api_key", "")
    return bool(given) and hmac.compare_digest(given.encode(), key.encode())


# ---------------------------------------------------------------------------------- the dashboard's session
# With API_KEY set, a browser asks for the key once (GET/POST /login, app.web.dashboard) and then
# holds a cookie instead. The cookie is not the key: it is `v1.<issued>.<mac>`, where mac is
# HMAC-SHA256(stream secret, "dashboard:<api_key>:<issued>"). Every worker shares the stream secret
# (the coordinator's), so every worker accepts it; a new API_KEY (or a new secret) ends every session
# at once; a cookie older than SESSION_MAX_AGE_S is refused even if the browser kept it.
#
# Cross-site requests: the cookie is SameSite=Strict, so a browser sends it only with requests that
# a page of this site started; and a cookie-authenticated unsafe request (POST, DELETE, ...) must
# also come from this origin (`same_origin`: its Origin header, when the browser sends one, names
# this server, and Sec-Fetch-Site does not say cross-site). Requests with the key in a header need
# no such check: a browser never adds that header by itself.
DASHBOARD_COOKIE = "callscribe_session"
SESSION_MAX_AGE_S = 30 * 86400
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def _session_mac(secret: bytes, api_key: str, issued: int) -> str:
    return hmac.new(secret, f"dashboard:{api_key}:{issued}".encode(), hashlib.sha256).hexdigest()


def dashboard_session(settings: Settings, secret: bytes, issued: int | None = None) -> str | None:
    """A new session value for the cookie (None when no API_KEY is set: the dashboard is open)."""
    if not settings.api_key:
        return None
    issued = int(time.time()) if issued is None else issued
    return f"v1.{issued}.{_session_mac(secret, settings.api_key, issued)}"


def session_ok(settings: Settings, secret: bytes, value: str | None, now: float | None = None) -> bool:
    """Whether a cookie value is a live session for this API_KEY (made by `dashboard_session`)."""
    if not settings.api_key or not value:
        return False
    parts = value.split(".")
    if len(parts) != 3 or parts[0] != "v1" or not parts[1].isdigit() or len(parts[1]) > 12:
        return False
    issued = int(parts[1])
    age = (time.time() if now is None else now) - issued
    if not -300 <= age <= SESSION_MAX_AGE_S:  # a little clock skew between hosts is fine
        return False
    return hmac.compare_digest(parts[2].encode(), _session_mac(secret, settings.api_key, issued).encode())


def own_origins(request: Request) -> set[str]:
    """This server's origins: the one the request was made to (scheme from a trusted proxy's
    X-Forwarded-Proto, host from the Host header), and PUBLIC_BASE_URL's."""
    origins = {f"{request.url.scheme}://{request.url.netloc}".lower()}
    base = request.app.state.services.settings.public_base_url
    if base:
        parts = urlsplit(base)
        origins.add(f"{parts.scheme}://{parts.netloc}".lower())
    return origins


def same_origin(request: Request) -> bool:
    """Whether a browser request came from one of this server's own pages. A request without an
    Origin header (curl; a same-origin GET) passes unless Sec-Fetch-Site says another site sent it."""
    origin = request.headers.get("origin")
    if origin is None:
        return request.headers.get("sec-fetch-site", "same-origin") in ("same-origin", "none")
    return origin.lower() in own_origins(request)


def credentials(request: Request) -> str | None:
    """How the request is allowed in: ``"open"`` (no API_KEY), ``"key"`` (the key, as api_key_ok
    accepts it), ``"cookie"`` (a dashboard session), or None."""
    services: Services = request.app.state.services
    settings = services.settings
    if not settings.api_key:
        return "open"
    if api_key_ok(settings, request.headers, request.query_params):
        return "key"
    cookie = request.cookies.get(DASHBOARD_COOKIE)
    if cookie and session_ok(settings, services.stream_secret, cookie):
        return "cookie"
    return None


# For the OpenAPI schema only (the "Authorize" button in /docs): the check is api_key_ok's.
_BEARER = Security(HTTPBearer(auto_error=False, description="Authorization: Bearer <API_KEY>"))
_HEADER = Security(APIKeyHeader(name="X-API-Key", auto_error=False, description="X-API-Key: <API_KEY>"))
_QUERY = Security(APIKeyQuery(name="api_key", auto_error=False, description="?api_key=<API_KEY> (browser links)"))
_COOKIE = Security(APIKeyCookie(name=DASHBOARD_COOKIE, auto_error=False,
                                description="the dashboard's session cookie (set by POST /login)"))


def require_api_key(request: Request, _bearer: Annotated[object, _BEARER] = None,
                    _header: Annotated[object, _HEADER] = None, _query: Annotated[object, _QUERY] = None,
                    _cookie: Annotated[object, _COOKIE] = None) -> None:
    """The management endpoints' guard: the API key (header or query), or the dashboard's session
    cookie; a cookie-authenticated unsafe method must come from this server's own pages (403)."""
    how = credentials(request)
    if how is None:
        raise ApiError(401, "missing or wrong API key: send 'Authorization: Bearer <API_KEY>' or 'X-API-Key: <API_KEY>' "
                            "(browsers: append ?api_key=<API_KEY>, or log in to the dashboard at /login)")
    if how == "cookie" and request.method not in _SAFE_METHODS and not same_origin(request):
        raise ApiError(403, "cross-site request refused: a request authenticated by the dashboard's cookie must "
                            "come from this server's own pages (send the API key in a header instead)")


ApiKeyDep = Depends(require_api_key)


def safe_next(value: str | None) -> str:
    """Where to go after logging in: a path on this site (``/…``, not ``//host`` or ``/\\host``), else ``/``."""
    if not value or not value.startswith("/") or value.startswith(("//", "/\\")) or any(
            c in value for c in "\\\r\n\t") or len(value) > 2000:
        return "/"
    return value


def login_redirect(request: Request) -> RedirectResponse | None:
    """None when the request may see dashboard pages (no API_KEY, the key, or a session cookie);
    else a 303 to ``/login?next=<this path and query>``."""
    if credentials(request) is not None:
        return None
    here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse("/login?" + urlencode({"next": safe_next(here)}), status_code=303,
                            headers={"Cache-Control": "no-store"})


def require_dashboard_login(request: Request) -> RedirectResponse | None:
    """The dependency for every dashboard PAGE (HTML; not the JSON API, which answers 401).

    Use it as ``login: DashboardLoginDep`` and return the redirect when there is one::

        @router.get("/calls/{call_sid}/view")
        def view(call_sid: str, login: DashboardLoginDep) -> Response:
            if login is not None:
                return login  # 303 to /login?next=/calls/<sid>/view
            ...

    (A returned response rather than a raised one: app.web.errors turns HTTP exceptions into JSON.)
    """
    return login_redirect(request)


DashboardLoginDep = Annotated[RedirectResponse | None, Depends(require_dashboard_login)]


class _RedactApiKey(logging.Filter):
    """Browser links carry `?api_key=<key>`; uvicorn's access log prints the query string. Not the key."""

    _KEY = re.compile(r"(api(?:_|%5f)key=)[^&\s\"']*", re.IGNORECASE)

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and any(isinstance(a, str) and self._KEY.search(a) for a in record.args):
            record.args = tuple(self._KEY.sub(r"\1[redacted]", a) if isinstance(a, str) else a for a in record.args)
        elif isinstance(record.msg, str) and self._KEY.search(record.msg):
            record.msg = self._KEY.sub(r"\1[redacted]", record.msg)
        return True


def install_log_redaction() -> None:
    """Idempotent. Logger filters survive uvicorn's dictConfig (it replaces handlers, not filters)."""
    for name in ("uvicorn.access", "uvicorn.error"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _RedactApiKey) for f in logger.filters):
            logger.addFilter(_RedactApiKey())


install_log_redaction()  # at import, so every app built from this package has it (create_app imports us)
