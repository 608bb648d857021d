"""Shared dependencies: the app's services, and the API-key guard for management endpoints."""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from app.config import Settings
from app.recording.finalize import ExportOptions
from app.recording.registry import CallRegistry
from app.recording.store import CallStore
from app.web.errors import ApiError

__all__ = ["Services", "ServicesDep", "require_api_key", "ApiKeyDep"]


@dataclass
class Services:
    settings: Settings
    store: CallStore
    registry: CallRegistry
    opts: ExportOptions
    stream_secret: bytes
    agent_factory: object = None  # callable(LiveCall) -> session, or None
    stats: dict | None = None


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


def require_api_key(request: Request) -> None:
    settings: Settings = request.app.state.services.settings
    if not api_key_ok(settings, request.headers, request.query_params):
        raise ApiError(401, "missing or wrong API key: send 'Authorization: Bearer <API_KEY>' or 'X-API-Key: <API_KEY>' "
                            "(browsers: append ?api_key=<API_KEY>)")


ApiKeyDep = Depends(require_api_key)
