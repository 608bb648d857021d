"""Times in query strings (`?since=`, `?until=`): ISO 8601 dates or dates and times, read as UTC."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

from app.web.errors import ApiError

__all__ = ["when"]

_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def when(value: str | None, name: str) -> datetime | None:
    """The time a query parameter names (no zone: UTC). A date alone is its midnight, or for
    ``until`` the next one, so `until=2025-07-13` includes that day. Raises ApiError 422."""
    if value is None or value == "":
        return None
    try:
        t = datetime.fromisoformat(value.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ApiError(422, f"{name} {value[:40]!r} is not a date or time; accepted: an ISO 8601 date "
                            "(2025-07-13) or date and time (2025-07-13T10:30:00Z, or with an offset; none means UTC)")
    t = t if t.tzinfo else t.replace(tzinfo=timezone.utc)
    if name == "until" and _DATE.match(value.strip()):
        t += timedelta(days=1)
    return t
