"""The app in-process: httpx over its ASGI interface (with its lifespan), and calls recorded through
Starlette's TestClient into this test's folder."""

from __future__ import annotations

from contextlib import AsyncExitStack

import httpx
import pytest
from starlette.testclient import TestClient

from app.main import create_app
from tests.web.inprocess import settings_for, stream_call


@pytest.fixture
async def serve(tmp_path):
    """`await serve(**settings)` → an httpx.AsyncClient on a started app over this test's folder
    (`client.app` is the app); stopped, calls drained, at the end."""
    async with AsyncExitStack() as stack:
        async def serve_(**overrides: object) -> httpx.AsyncClient:
            app = create_app(settings_for(tmp_path, **overrides))
            await stack.enter_async_context(app.router.lifespan_context(app))
            client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")
            client.app = app
            return await stack.enter_async_context(client)

        yield serve_


@pytest.fixture
def twilio(tmp_path):
    """`twilio(**settings)` → a started TestClient (HTTP and the Media Streams WebSocket) over this test's folder."""
    with_clients: list[TestClient] = []

    def make(**overrides: object) -> TestClient:
        client = TestClient(create_app(settings_for(tmp_path, **overrides)))
        with_clients.append(client.__enter__())
        return client

    yield make
    for client in reversed(with_clients):
        client.__exit__(None, None, None)


@pytest.fixture
def recorded(tmp_path) -> str:
    """The CallSid of one finished 1 s call in this test's folder (its app stopped again)."""
    with TestClient(create_app(settings_for(tmp_path))) as client:
        return stream_call(client)
