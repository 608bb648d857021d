"""The app's API docs (app.main: FastAPIOffline) in-process: /docs and /redoc load nothing from
another host, and the schema lists every HTTP route."""

from __future__ import annotations

import re

import pytest


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
async def test_the_docs_pages_and_their_assets_come_from_the_app(serve, page):
    client = await serve(api_key="docs-stay-public")
    html = (await client.get(page)).text
    assert not re.search(r"(?i)\b(https?:)?//[\w.-]+\.[a-z]{2,}/", html), "an outside host in the page"
    assets = re.findall(r'(?:src|href)="(/[^"]+)"', html)
    assert any(a.endswith(".js") for a in assets), assets
    for asset in assets:
        r = await client.get(asset)
        assert r.status_code == 200 and r.content, asset


async def test_the_schema_lists_every_http_route(serve):
    paths = (await (await serve()).get("/openapi.json")).json()["paths"]
    assert set(paths) >= {"/voice", "/status", "/audio/formats", "/audio/set-format/{call_sid}", "/calls",
                          "/calls/{call_sid}", "/calls/{call_sid}/files/{name}", "/healthz", "/metrics"}
