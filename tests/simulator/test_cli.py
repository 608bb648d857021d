"""``callscribe simulate``'s flags and ``main_from_args`` against the fake server in a thread."""

from __future__ import annotations

import argparse

import pytest
import soundfile as sf

from app.simulator import add_arguments, main_from_args
from tests.simulator.fake_server import TOKEN, FakeServer, reply_after_caller, served_in_thread, tone


def test_cli(tmp_path, capsys) -> None:
    with served_in_thread(FakeServer()) as server:
        wav = tmp_path / "caller.wav"
        sf.write(wav, tone(0.4), 8000, subtype="PCM_16")
        out = tmp_path / "heard.wav"
        parser = argparse.ArgumentParser()
        add_arguments(parser)
        args = parser.parse_args(
            ["--url", server.base_url, "--wav", str(wav), "--speed", "0", "--speak-at", "0", "--tail", "0.2", "--out", str(out),
             "--dtmf", "0.1:5", "--auth-token", TOKEN, "--call-sid", "CA" + "a" * 32]
        )
        assert args.dtmf == [(0.1, "5")]
        assert main_from_args(args) == 0
        text = capsys.readouterr().out
        assert "CA" + "a" * 32 in text and "connect" in text and "frames sent:   30" in text and str(out) in text
        data, rate = sf.read(out)
        assert rate == 8000 and len(data) == (120 + 600) * 8
        with pytest.raises(SystemExit):
            parser.parse_args(["--dtmf", "1.0:x"])


def cli_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(list(argv))


def test_cli_defaults_wait_for_the_assistant_and_the_files(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("API_KEY", "the-key")
    wav = tmp_path / "caller.wav"
    sf.write(wav, tone(0.4), 8000, subtype="PCM_16")
    args = cli_args("--wav", str(wav), "--out", str(tmp_path / "heard.wav"), "--speed", "10", "--quiet", "0.4")
    assert args.tail is None and args.speak_at is None and args.max_wait == 30 and args.files_timeout == 60
    server = FakeServer(handler=reply_after_caller(delay_s=0.2, seconds=0.5))
    server.state["call_states"] = ["live", "unfinished", "finalized"]
    with served_in_thread(server):
        args.url = server.base_url
        assert main_from_args(args) == 0
    out = capsys.readouterr().out
    assert "for the greeting: it had" in out and "for the assistant to finish: it had" in out
    assert "call files:    /srv/responses (on the server)" in out
    for suffix in ("_conversation.mp3", ".txt", "_summary.txt", ".json"):
        assert f"_{suffix}" not in out and suffix in out
    polls = [r for r in server.http_requests if r["path"].startswith("/calls/")]
    assert len(polls) == 3 and all(r["headers"]["x-api-key"] == "the-key" for r in polls)
    assert server.events("mark") and [m["mark"]["name"] for m in server.events("mark")] == ["reply"]


def test_cli_gives_up_on_the_files_with_exit_3(tmp_path, capsys) -> None:
    server = FakeServer()
    server.state["call_states"] = ["live"]
    with served_in_thread(server):
        args = cli_args("--url", server.base_url, "--duration", "0.2", "--speed", "0", "--out", "",
                        "--files-timeout", "0.5", "--no-stop")
        assert main_from_args(args) == 3
    err = capsys.readouterr().err
    assert "gave up waiting for the call's files after 0.5 s: the call is still 'live'" in err
