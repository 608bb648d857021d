"""Shared dependencies: the app's services, and the API-key guard for management endpoints."""

from __future__ import annotations

import hmac
import logging
import re
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader, APIKeyQuery, HTTPBearer

from app.config import Settings
from app.call.registry import CallRegistry
from app.recording.finalize import ExportOptions
from app.storage.artefacts import ArtefactStore
from app.storage.coordination import Coordinator
from app.storage.store import CallStore
from app.web.errors import ApiError

__all__ = ["Services", "ServicesDep", "require_api_key", "ApiKeyDep", "install_log_redaction"]


@dataclass
class Services:
    settings: Settings
    store: CallStore
    registry: CallRegistry
    opts: ExportOptions
    agent_factory: object = None  # callable(CallSession) -> the assistant (and .transcriber(io, tracks)), or None
    events: object = None  # RecordingEvents for embedders
    chunk_bytes: int = 32000
    web_calls: object = None  # app.web.web_call.BrowserCalls: this process's browser calls
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


# For the OpenAPI schema only (the "Authorize" button in /docs): the check is api_key_ok's.
_BEARER = Security(HTTPBearer(auto_error=False, description="Authorization: Bearer <API_KEY>"))
_HEADER = Security(APIKeyHeader(name="X-API-Key", auto_error=False, description="X-API-Key: <API_KEY>"))
_QUERY = Security(APIKeyQuery(name="api_key", auto_error=False, description="?api_key=<API_KEY> (browser links)"))


def require_api_key(request: Request, _bearer: Annotated[object, _BEARER] = None,
                    _header: Annotated[object, _HEADER] = None, _query: Annotated[object, _QUERY] = None) -> None:
    settings: Settings = request.app.state.services.settings
    if not api_key_ok(settings, request.headers, request.query_params):
        raise ApiError(401, "missing or wrong API key: send 'Authorization: Bearer <API_KEY>' or 'X-API-Key: <API_KEY>' "
                            "(browsers: append ?api_key=<API_KEY>)")


ApiKeyDep = Depends(require_api_key)


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
