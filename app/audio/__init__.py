"""Audio primitives: μ-law codec, resampling, mixdown and the output format registry.

Nothing here knows about calls, files of a call, HTTP or asyncio.
"""
