"""One place that maps errors to HTTP statuses and JSON bodies: {"error": message, ...hints}."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.audio.formats import FORMATS, InvalidFormatChoice, UnsupportedFormatError
from app.storage.paths import CallNotFound, InvalidCallSid

__all__ = ["ApiError", "ErrorBody", "error_responses", "not_recorded", "install"]

log = logging.getLogger("callscribe.http")


class ApiError(Exception):
    def __init__(self, status: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.extra = extra


class ErrorBody(BaseModel):
    """Every error's body (OpenAPI): the message says what went wrong and what is accepted."""

    error: str


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses=` for these error statuses, all with the `{"error": ...}` body."""
    what = {400: "malformed call SID or body", 401: "missing or wrong API key", 404: "no such call or file",
            409: "the call cannot be re-exported", 413: "body over MAX_BODY_BYTES",
            422: "unknown format, wrong-typed or inapplicable choice"}
    return {s: {"model": ErrorBody, "description": what.get(s, "error")} for s in statuses}


def not_recorded(sid: str) -> CallNotFound:
    """The one message for a CallSid nothing was recorded for (HTTP 404; the CLI prints it)."""
    return CallNotFound(f"no call {sid} has been recorded")


def _json(status: int, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status_code=status)


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api(_: Request, exc: ApiError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        resp = _json(exc.status, str(exc), **exc.extra)
        if headers:
            resp.headers.update(headers)
        return resp

    @app.exception_handler(InvalidCallSid)
    async def _sid(_: Request, exc: InvalidCallSid) -> JSONResponse:
        return _json(400, str(exc))

    @app.exception_handler(UnsupportedFormatError)
    async def _fmt(_: Request, exc: UnsupportedFormatError) -> JSONResponse:
        return _json(422, str(exc), accepted=sorted(FORMATS))

    @app.exception_handler(InvalidFormatChoice)
    async def _choice(_: Request, exc: InvalidFormatChoice) -> JSONResponse:
        return _json(422, str(exc))

    @app.exception_handler(CallNotFound)
    async def _nf(_: Request, exc: CallNotFound) -> JSONResponse:
        return _json(404, str(exc))

    @app.exception_handler(RequestValidationError)
    async def _val(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}" for e in exc.errors()]
        return _json(422, "invalid request: " + "; ".join(problems))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _json(exc.status_code, str(exc.detail))

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> JSONResponse:
        # Still JSON, and no traceback or internals in the body; the log has the type and the route.
        log.error("%s %s failed: %s", request.method, request.url.path, type(exc).__name__)
        return _json(500, "internal error; the server log has the details")
