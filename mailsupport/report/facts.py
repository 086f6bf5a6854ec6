"""What a report is made of: one ticket's facts, and the range read from --since/--until."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import NamedTuple

from mailsupport.errors import UsageError

__all__ = ["DEFAULT_DAYS", "DEFAULT_TOP", "Period", "TicketFacts", "parse_period", "parse_when"]

DEFAULT_DAYS = 30
DEFAULT_TOP = 10  # senders, domains and topics listed


class TicketFacts(NamedTuple):
    """What the report needs of one ticket. Times are aware UTC. (A named tuple: a year of
    a big desk is hundreds of thousands of them, and a tuple is the quickest to make.)"""

    number: int
    created_at: datetime
    subject: str = ""
    status: str = "new"  # new / open / pending / closed
    priority: str = "normal"
    requester: str = ""  # the customer's address
    queue: str = ""
    type: str = ""  # "" = unclassified
    line: int = 1
    closed_at: datetime | None = None  # the last closing; counts only while status is closed
    first_response_at: datetime | None = None
    first_response_due: datetime | None = None
    resolution_due: datetime | None = None
    text: str = ""  # the customer's first message
    # (when, closed?) from the ticket's history, oldest first: closings and reopenings.
    status_changes: tuple[tuple[datetime, bool], ...] = ()
    automatic: str = ""  # opened by automatic mail: its kind (bounce, auto-reply...); no work
    # The topic terms intake stored (keys and forms: `topicterms.encode_body`); None:
    # worked out from `text`.
    terms: str | None = None

    @property
    def resolved_at(self) -> datetime | None:
        return self.closed_at if self.status == "closed" else None


@dataclass(frozen=True, slots=True)
class Period:
    since: datetime
    until: datetime

    def days(self) -> list[date]:
        first, last = self.since.date(), (self.until - timedelta(microseconds=1)).date()
        return [first + timedelta(days=n) for n in range((last - first).days + 1)]


_AGO = re.compile(r"(\d+)\s*([dwh])")


def _midnight(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def parse_when(text: str, now: datetime, option: str, *, end: bool) -> datetime:
    """One bound of the range; UsageError naming `option` when it cannot be read.

    - `2026-03-01`: a UTC day; as --since its start, as --until its end (the day is in).
    - `2026-03-01T12:30` (ISO 8601; UTC unless it names a zone): that moment.
    - `30d`, `2w`: that many days (weeks) back from the end of today, at midnight UTC, so
      `--since 30d` is the last 30 days with today and `--since 14d --until 7d` one week.
    - `12h`: exactly that many hours before now.
    """
    value = text.strip()
    ago = _AGO.fullmatch(value.lower())
    if ago:
        count, unit = int(ago.group(1)), ago.group(2)
        if count > 100_000:
            raise UsageError(f"{option} {text}: too far back")
        if unit == "h":
            return now - timedelta(hours=count)
        days = count * 7 if unit == "w" else count
        return _midnight(now) + timedelta(days=1 - days)
    try:
        if "T" not in value.upper() and " " not in value:  # a day, not a moment
            day = date.fromisoformat(value)
            start = datetime(day.year, day.month, day.day, tzinfo=UTC)
            return start + timedelta(days=1) if end and day < date.max else start
        moment = datetime.fromisoformat(value)
    except (ValueError, OverflowError):
        pass
    else:
        return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    raise UsageError(
        f"{option} {text!r}: give a date (2026-03-01) or a time back from now (30d, 2w, 12h)"
    )


def parse_period(since: str | None, until: str | None, now: datetime) -> Period:
    """The report's range from the --since and --until options (default: the last 30 days).

    `until` never goes past `now`: the future has no tickets yet."""
    now = now.replace(microsecond=0)  # whole seconds read better, and nothing hangs on less
    start = parse_when(since or f"{DEFAULT_DAYS}d", now, "--since", end=False)
    stop = min(parse_when(until, now, "--until", end=True) if until else now, now)
    if start >= stop:
        raise UsageError(
            f"nothing to report between {start:%Y-%m-%d %H:%M} and {stop:%Y-%m-%d %H:%M} UTC:"
            " --since must come before --until and before now"
        )
    return Period(start, stop)
