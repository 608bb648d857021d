"""Recording: the call timeline, masters and journal on disk, finalisation, transcript and summary.

No FastAPI/Starlette here; time comes from Twilio's media clock passed in, never from a hidden clock.
"""
