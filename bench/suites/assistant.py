"""Benchmark `assistant` (only with --assistant): the assistant's response latency by stage, from the
JSON of calls placed here or found in --assistant-dir (bench/assistant.py does the work)."""

from __future__ import annotations

from pathlib import Path


def run(args, R: dict) -> None:
    from assistant import latency_report, place_assistant_calls

    if args.assistant_dir:
        paths = sorted(Path(args.assistant_dir).glob("call_*.json"))
    else:
        paths = place_assistant_calls(n=1 if args.quick else 3)
    rep = latency_report(paths)
    R["assistant"] = rep
    print(rep.get("text", ""))
