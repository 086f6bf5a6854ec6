"""The Date header as a timezone-aware UTC datetime.

mail-parser's reading is preferred (obsolete forms, alphabetic zones); the stdlib's and an
ISO 8601 reading are the fallbacks, and an unreadable or missing Date is noted.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import parsedate_tz


def parse_date(
    value: str | None, from_mailparser: datetime | None, notes: list[str]
) -> datetime | None:
    """Timezone-aware UTC; a missing zone counts as UTC."""
    if from_mailparser is not None:
        return from_mailparser.astimezone(UTC)
    if value is None:
        notes.append("no Date header")
        return None
    parsed = parsedate_tz(value)  # tolerant of missing zones and odd spacing
    if parsed is not None:
        try:
            stamp = datetime(*parsed[:6], tzinfo=UTC)
            return stamp - timedelta(seconds=parsed[9] or 0)
        except (ValueError, OverflowError):
            pass
    try:
        iso = datetime.fromisoformat(value.strip())
        return (iso if iso.tzinfo else iso.replace(tzinfo=UTC)).astimezone(UTC)
    except ValueError:
        notes.append(f"unreadable Date header: {value[:100]!r}")
        return None
