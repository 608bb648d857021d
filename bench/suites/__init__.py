"""The benchmarks of bench/run.py, one module each; `run(args, R, ...)` measures and stores into R.

hangup (hang-up → files ready), memory (RSS and CPU per call, ours), baselines (pipecat + pydub for
those), micro (per-frame costs in process, orjson), concurrency (paced-call ceilings, ours vs
bare), profile (py-spy under load), wer (word error rate), assistant (latency by stage).
calls.py drives one call through a real server for hangup and memory.
"""
