"""Agent: stage interfaces, turn taking and barge-in, local and HTTP speech providers.

Nothing here imports FastAPI or Starlette; the WebSocket shell in ``app/web`` implements
:class:`~app.agent.interfaces.CallIO` and drives :class:`~app.agent.session.AgentSession`.
Heavy engines (faster-whisper, hibari, espeak) are imported lazily by their adapters.
"""
