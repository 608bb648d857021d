"""Benchmark `assistant` (only with --assistant): the assistant's response latency by stage, from the
JSON of calls placed here or found in --assistant-dir (bench/assistant.py does the work).

Placing calls, it measures the end of turn decided by the words against the fixed 700 ms wait it
replaced (same calls, side by side), and counts false cut-offs of both rules on the testdata's real
speech."""

from __future__ import annotations

from pathlib import Path


def run(args, R: dict) -> None:
    from assistant import compare_end_of_turn, cutoff_report, latency_report

    if args.assistant_dir:
        rep = latency_report(sorted(Path(args.assistant_dir).glob("call_*.json")))
        R["assistant"] = rep
        print(rep.get("text", ""))
        return
    cut = cutoff_report()
    print(cut["text"])
    rep = compare_end_of_turn(n=1 if args.quick else 3)
    R["assistant"] = rep["ours"] | {"baseline": rep["baseline"], "comparison": rep["text"], "cutoffs": cut}
    print(rep["text"])
