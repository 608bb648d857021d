"""Audio primitives: μ-law codec (used only at the Twilio edge), resampling, PCM16 conversion,
the built-in chime and the output format registry.

Nothing here knows about calls, files of a call, HTTP or asyncio.
"""
