"""Callscribe: a self-hosted, Twilio-compatible voice assistant that records every call."""

__version__ = "0.1.0"
