"""What the real-server tests (tests/e2e, tests/security) and the benchmarks (bench/) share.

- ``paths``: the project root and the shared, externally made test data.
- ``sockets``: free ports, raw HTTP requests and WebSocket handshakes over plain sockets.
- ``frames``: Twilio Media Streams messages and client WebSocket frames, built byte for byte.
- ``server``: a real ``callscribe serve`` in a child process on a free 127.0.0.1 port.
- ``signals``: marker tones to place in a call's audio and find again in its recording.
- ``fixtures``: the pytest fixtures over ``server`` (``make_server``, ``module_server_factory``).

``paths``, ``sockets``, ``frames`` and ``server`` use the standard library only, so bench's load
generator can import them without paying for numpy or pytest.
"""
