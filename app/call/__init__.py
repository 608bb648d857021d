"""The call core: one session per call, whatever carries it.

A transport (Twilio Media Streams now, browser calls next) turns its wire format into PCM16 at its
own rate plus events, and turns the session's commands into its wire format; it implements
:class:`~app.call.transport.CallTransport`. :class:`~app.call.session.CallSession` owns the
recorder, the incremental export, the assistant (or the transcriber) and the limits, and knows no
wire format and no web framework. :class:`~app.call.registry.CallRegistry` holds the live calls,
admits new ones, finalises ended ones and recovers those a crash left behind.

Dependency direction: ``web → call → recording / agent → audio``.
"""
