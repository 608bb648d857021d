"""Recording: the call's timeline (one clock per kind of transport), masters and journal on disk,
incremental export, finalisation, transcript and summary.

It knows no transport, no assistant and no web framework: audio arrives as PCM16 at the call's
rate with a position its clock turns into a sample index (timeline.py).
"""
