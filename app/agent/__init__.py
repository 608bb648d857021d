"""Agent: stage interfaces, turn taking and barge-in, local and HTTP speech providers.

Nothing here imports FastAPI or Starlette; the call session (``app/call``) implements
:class:`~app.agent.interfaces.CallIO` and drives :class:`~app.agent.session.AgentSession` (the
conversation loop, with turns.py collecting the caller's turns and playout.py speaking replies)
or :class:`~app.agent.transcriber.TrackTranscriber` (transcripts of calls nobody answers).
Heavy engines (faster-whisper, hibari, espeak) are imported lazily by their adapters.
"""
