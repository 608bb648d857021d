"""FastAPI routers and the transport shells (Twilio's Media Streams in media_stream.py): thin; the
logic lives in call/, recording/, agent/ and each transport's sans-I/O protocol (twilio/)."""
