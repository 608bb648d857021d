"""GET /readyz in-process: ready on one host; 503 with the reason while draining; with Redis, the host named."""

from __future__ import annotations

from fastapi.testclient import TestClient

from app.config import Settings
from app.main import create_app


def settings(tmp_path, **over) -> Settings:
    return Settings.load(recordings_directory=tmp_path / "responses", greeting="tone", transcribe=False, **over)


def test_one_host_is_ready_until_it_drains(tmp_path):
    app = create_app(settings(tmp_path))
    with TestClient(app) as client:
        assert client.get("/readyz").json() == {"ready": True}
        assert "host" not in client.get("/healthz").json()
        app.state.services.registry.draining = True
        r = client.get("/readyz")
        assert r.status_code == 503 and r.json() == {"ready": False, "reasons": ["draining: the server is shutting down"]}
        assert client.get("/healthz").status_code == 200


def test_with_redis_the_host_is_named_and_ready(tmp_path, redis_server):
    app = create_app(settings(tmp_path, redis_url=redis_server.url, host_id="host-r"))
    with TestClient(app) as client:
        assert client.get("/readyz").json() == {"ready": True}
        assert client.get("/healthz").json()["host"] == "host-r"
        assert "callscribe_redis_up 1" in client.get("/metrics").text
