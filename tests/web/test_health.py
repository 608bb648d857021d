"""GET /healthz and GET /metrics in-process, before, during and after a call."""

from __future__ import annotations

import os
import re

from tests.web.inprocess import look_mid_call, wait_until


def metrics(client) -> dict[str, float]:
    r = client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    assert "# TYPE callscribe_live_calls gauge" in r.text
    assert "# TYPE callscribe_calls_finalized_total counter" in r.text
    return {name: float(value) for name, value in re.findall(r"^(callscribe_\w+) (\S+)$", r.text, re.M)}


def test_health_and_metrics_follow_a_call(twilio):
    client = twilio()
    assert client.get("/healthz").json() == {"status": "ok", "pid": os.getpid(), "live_calls": 0, "assistant": None}
    before = metrics(client)
    assert before["callscribe_live_calls"] == before["callscribe_calls_finalized_total"] == 0
    _, (health, live) = look_mid_call(client, lambda sid: (client.get("/healthz").json(), metrics(client)), 0.5)
    assert health["live_calls"] == 1 and live["callscribe_live_calls"] == 1
    assert live["callscribe_live_frames"] >= 25  # the caller's 25 frames (and the greeting's)
    # the call's files are written (what stream_call waits for) just before the registry counts it
    wait_until(lambda: metrics(client)["callscribe_calls_finalized_total"] == 1)
    after = metrics(client)
    assert after["callscribe_live_calls"] == 0 and after["callscribe_calls_finalized_total"] == 1
    assert after["callscribe_calls_refused_total"] == 0
