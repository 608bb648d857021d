"""The dashboard's list of calls (GET /), its login (GET/POST /login, POST /logout) and its assets.

The pages are plain HTML, CSS and ES modules in app/web/static/dashboard/, served by the app: no
CDN, no build step, nothing from another host (the Content-Security-Policy says so). The list page
holds no data: its script reads `GET /calls` (app.web.calls_api) with the filters in the page's
address, so a filtered view can be bookmarked, and polls `GET /calls?status=live` every 2 s for
live calls (why polling rather than a stream: see list.js's header).

Access (app.web.deps): without API_KEY everything is open and the page says so in a banner. With
it, pages need `require_dashboard_login` (the key, or the session cookie set by POST /login), and
redirect to `/login?next=…` without; the JSON API answers 401 instead and the page's script then
goes to the login form. The cookie holds an HMAC of the key, never the key. It is SameSite=Strict,
so a link from another site (a chat, an email) arrives without it: the login page then asks once
more from this site (`again.js` navigates to `/login?…&again=1`, which carries the cookie) before it
shows the form.

Assets: `GET /dashboard/assets/<name>` serves the .js, .css and .svg files of the static folder by
their exact names (another page's script dropped in the folder is served too); nothing else.
"""

from __future__ import annotations

import asyncio
import html
from pathlib import Path
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Form, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from starlette.concurrency import run_in_threadpool

from app.web.deps import (DASHBOARD_COOKIE, SESSION_MAX_AGE_S, DashboardLoginDep, api_key_ok, credentials,
                          dashboard_session, safe_next, same_origin)
from app.web.errors import ApiError, error_responses

__all__ = ["router", "STATIC", "CSP", "page_headers", "render_page"]

router = APIRouter(tags=["dashboard"])

STATIC = Path(__file__).parent / "static" / "dashboard"

_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml"}

# Same origin only, no inline script or style; forms post only here (log in, log out).
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "media-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")

_HEADERS = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}
_BODY = '<body data-auth="open">'  # as written in the HTML files, which then work as plain files too
_WRONG_KEY_DELAY_S = 0.5  # a wrong key waits this long: guessing is slow
_AGAIN = ('<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Log in · Callscribe</title>'
          '<script type="module" src="/dashboard/assets/again.js"></script></head>'
          '<body><p><a id="again" href="{url}">Continue to the dashboard</a></p></body></html>')


def page_headers() -> dict[str, str]:
    """Headers for every dashboard page: the CSP, no caching without revalidation, no referrer."""
    return _HEADERS | {"Content-Security-Policy": CSP, "Referrer-Policy": "same-origin"}


def render_page(request: Request, name: str, replace: dict[str, str] | None = None, status: int = 200) -> HTMLResponse:
    """A page of the static folder with ``<body data-auth="open|required">`` set from API_KEY (the
    CSS shows the open-server banner or the log-out button from it) and ``replace``'s markers."""
    text = (STATIC / name).read_text(encoding="utf-8")
    if _BODY not in text:  # a broken edit should fail loudly, not serve a page that hides the banner
        raise RuntimeError(f"app/web/static/dashboard/{name} lost its {_BODY!r} tag")
    auth = "required" if request.app.state.services.settings.api_key else "open"
    text = text.replace(_BODY, f'<body data-auth="{auth}">', 1)
    for marker, value in (replace or {}).items():
        text = text.replace(marker, value)
    return HTMLResponse(text, status_code=status, headers=page_headers())


# ---------------------------------------------------------------------------------- the list
@router.get("/", response_class=HTMLResponse, summary="The dashboard: every call, filtered, sorted, paged",
            responses={303: {"description": "to /login?next=/ when API_KEY is set and no session"}})
def calls_page(request: Request, login: DashboardLoginDep) -> Response:
    """A sync route: the file read runs on the threadpool."""
    if login is not None:
        return login
    return render_page(request, "list.html")


@router.get("/dashboard/assets/{name:path}", include_in_schema=False, responses=error_responses(404))
def dashboard_asset(name: str) -> Response:
    kind = _TYPES.get(Path(name).suffix)
    names = {p.name for p in STATIC.iterdir() if p.is_file()} if kind else set()
    if name not in names:  # exact names of files in the folder: no path, no other kind of file
        raise ApiError(404, f"no dashboard asset {name[:80]!r}: the dashboard serves only its "
                            + ", ".join(f"*{s}" for s in _TYPES) + " files")
    return Response((STATIC / name).read_bytes(), media_type=kind, headers=_HEADERS)


# ---------------------------------------------------------------------------------- login and logout
def _login_form(request: Request, next_path: str, error: str = "", status: int = 200) -> HTMLResponse:
    return render_page(request, "login.html", {
        'name="next" value="/"': f'name="next" value="{html.escape(next_path, quote=True)}"',
        "<!--error-->": html.escape(error),
    }, status=status)


def _cross_site() -> ApiError:
    return ApiError(403, "cross-site request refused: log in and out from this server's own pages")


@router.get("/login", response_class=HTMLResponse, summary="The dashboard's login form (asks for the API key)")
def login_page(request: Request, next: str = "/", again: str = "") -> Response:  # noqa: A002 (the parameter's name)
    target = safe_next(next)
    how = credentials(request)
    if how == "cookie":  # already logged in
        return RedirectResponse(target, status_code=303)
    if how is None and not again and request.headers.get("sec-fetch-site") == "cross-site":
        # A link from another site (a chat, an email): the browser left the SameSite=Strict cookie
        # out. Ask once more from this site's own page, which sends it; without one, the form.
        return HTMLResponse(_AGAIN.format(url=html.escape("/login?" + urlencode({"next": target, "again": 1}))),
                            headers=page_headers())
    return _login_form(request, target)


@router.post("/login", response_class=HTMLResponse, summary="Log in to the dashboard with the API key",
             responses={303: {"description": "logged in: the session cookie, and on to `next`"},
                        401: {"description": "wrong key: the form again, with the error"},
                        403: {"description": "posted from another site"}})
async def login(request: Request, key: Annotated[str, Form(max_length=4096)] = "",
                next: Annotated[str, Form(max_length=2000)] = "/") -> Response:  # noqa: A002
    if not same_origin(request):
        raise _cross_site()
    services = request.app.state.services
    settings = services.settings
    target = safe_next(next)
    if target.startswith("/login"):
        target = "/"
    if not settings.api_key:  # open: nothing to check, no cookie to set
        return RedirectResponse(target, status_code=303)
    if not api_key_ok(settings, {"x-api-key": key.strip()}, {}):  # the one comparison with API_KEY
        await asyncio.sleep(_WRONG_KEY_DELAY_S)
        return await run_in_threadpool(_login_form, request, target, "That is not this server's API key. Try again.",
                                       401)
    response = RedirectResponse(target, status_code=303, headers={"Cache-Control": "no-store"})
    response.set_cookie(DASHBOARD_COOKIE, dashboard_session(settings, services.stream_secret),
                        max_age=SESSION_MAX_AGE_S, path="/", httponly=True, samesite="strict",
                        secure=request.url.scheme == "https")
    return response


@router.post("/logout", summary="Log out of the dashboard (the session cookie is cleared)",
             responses={303: {"description": "to the login form"}, 403: {"description": "posted from another site"}})
def logout(request: Request) -> Response:
    if not same_origin(request):
        raise _cross_site()
    response = RedirectResponse("/login", status_code=303, headers={"Cache-Control": "no-store"})
    response.delete_cookie(DASHBOARD_COOKIE, path="/", httponly=True, samesite="strict",
                           secure=request.url.scheme == "https")
    return response
