"""Where personal data goes. Phone numbers and caller names from Twilio's webhook are never written
to disk; the log carries call SIDs and reasons, never numbers, names, DTMF digits, transcripts,
the Twilio auth token, the API key or the per-call stream token; per-call state is not
world-readable and the server secret is owner-only."""

from __future__ import annotations

import json
import stat

import pytest

from app.simulator import SimConfig, run_call
from tests.security.helpers import log_text, noise, result_of

pytestmark = [pytest.mark.security, pytest.mark.timeout(60)]

TOKEN = "tw-" + "privacy" * 4
KEY = "key-" + "privacy" * 4
CALLER, CALLED, NAME = "+14155550123", "+14155550987", "Jane Q. Caller"


async def test_numbers_names_digits_and_secrets_stay_out_of_the_journal_and_the_log(make_server):
    srv = make_server(TWILIO_AUTH_TOKEN=TOKEN, API_KEY=KEY, DEFAULT_AUDIO_FORMAT="wav")
    res = await run_call(SimConfig(srv.base, noise(2.0, seed=61), auth_token=TOKEN, speed=0, tail_s=0,
                                   from_number=CALLER, to_number=CALLED, dtmf=[(0.5, "7"), (1.0, "3")],
                                   extra_params={"CallerName": NAME, "CallerCity": "Springfield"}))
    sid = res.call_sid
    out = await result_of(srv, sid)
    stream_token = res.custom_parameters["token"]
    pii = [CALLER, CALLER[2:], CALLED, CALLED[2:], "4155550", NAME, "Springfield"]
    # Nothing the call left on disk holds a number or a name: journal, status, JSON, summary, transcript.
    files = [p for p in (srv.responses / ".calls" / sid).iterdir() if p.is_file() and p.suffix != ".wav"]
    files += [p for p in srv.responses.glob(f"call_{sid}*") if p.suffix in (".json", ".txt")]
    assert len(files) >= 5
    for p in files:
        text = p.read_text(errors="replace")
        for item in pii + [TOKEN, KEY, stream_token]:
            assert item not in text, (p.name, item)
    start = next(json.loads(l) for l in (srv.responses / ".calls" / sid / "journal.jsonl").read_text().splitlines()
                 if json.loads(l)["t"] == "start")
    assert start["params"] == ["callSid"]  # parameter names only; the token's value is never kept
    # The digits are the call's content: in its transcript and JSON, not in the log.
    assert [d["digit"] for d in out["dtmf"]] == ["7", "3"]
    log = log_text(srv)
    for item in pii + [TOKEN, KEY, stream_token, "pressed", "digit"]:
        assert item not in log, item
    # Permissions: the server secret is owner-only; masters and the journal are not world-readable.
    secret = srv.responses / ".calls" / ".stream-secret"
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    for name in ("inbound.wav", "outbound.wav", "journal.jsonl"):
        assert not stat.S_IMODE((srv.responses / ".calls" / sid / name).stat().st_mode) & 0o007, name
