"""Micdrop, sans-I/O: the browser-call wire protocol of the Micdrop client (params, commands,
PCM16 16 kHz frames, server messages, close codes). No I/O, no web framework; see protocol.py and
../shared/reference/micdrop-protocol.md."""
