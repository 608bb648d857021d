"""Twilio, sans-I/O: Media Streams messages and stream state, TwiML, request signatures.

Nothing here does I/O or imports a web framework; it is tested with plain function calls.
"""
