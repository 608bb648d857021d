"""FastAPI routers and the WebSocket shell: thin; the logic lives in recording/, agent/, twilio/."""
