"""GET /call (the browser call page) and GET /call/assets/{name} (its script, worklet and styles).

The page is plain HTML, CSS and an ES module in app/web/static/call/, served by the app itself: no
CDN, no build step, nothing from another host (the Content-Security-Policy says so to the
browser). It speaks the Micdrop protocol to ``WS /web-call`` exactly as the Micdrop client does.

The only thing the route changes in the HTML is ``data-auth`` on ``<body>``: ``required`` when
the server has an API key (the page then asks for the key or a browser-call token), ``open``
otherwise. The page itself is public: it holds no secret and every call it makes is checked by
the socket.

The assets are a fixed allow-list, so no request can name any other file.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse

from app.web.errors import ApiError, error_responses

__all__ = ["router", "STATIC", "ASSETS"]

router = APIRouter(tags=["browser call"])

STATIC = Path(__file__).parent / "static" / "call"

# name → content type: everything the page loads besides itself.
ASSETS: dict[str, str] = {
    "call.js": "text/javascript; charset=utf-8",
    "capture-worklet.js": "text/javascript; charset=utf-8",
    "call.css": "text/css; charset=utf-8",
}

_BODY = '<body data-auth="open">'  # as written in index.html, which then works as a plain file too

# Same-origin only. 'self' covers ws:// and wss:// to this host (CSP level 3); the audio worklet
# is a script. No inline script or style is used, so none is allowed.
_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
        "media-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")

_HEADERS = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}


@router.get("/call", response_class=HTMLResponse, summary="The browser call page (Micdrop protocol over WS /web-call)")
def call_page(request: Request) -> HTMLResponse:
    """A sync route: the file read runs on the threadpool, never on the event loop."""
    html = (STATIC / "index.html").read_text(encoding="utf-8")
    auth = "required" if request.app.state.services.settings.api_key else "open"
    if _BODY not in html:  # a broken edit of index.html should fail loudly, not serve an open page
        raise RuntimeError(f"app/web/static/call/index.html lost its {_BODY!r} tag")
    html = html.replace(_BODY, f'<body data-auth="{auth}">', 1)
    # no-referrer: a ?token=… in the address never leaves in a Referer header.
    return HTMLResponse(html, headers=_HEADERS | {"Content-Security-Policy": _CSP, "Referrer-Policy": "no-referrer"})


@router.get("/call/assets/{name:path}", include_in_schema=False, responses=error_responses(404))
def call_asset(name: str) -> Response:
    content_type = ASSETS.get(name)
    if content_type is None:
        raise ApiError(404, f"no call-page asset {name[:80]!r}: the call page serves only "
                            + ", ".join(sorted(ASSETS)))
    return Response((STATIC / name).read_bytes(), media_type=content_type, headers=_HEADERS)
