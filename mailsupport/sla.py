"""Service-level targets: when a ticket's first response and resolution are due. Pure.

Targets are per priority ("urgent=1h, high=4h, normal=1d, low=3d"); time counts round the
clock, or only within business hours ("mon-fri 09:00-18:00" in a time zone), so a ticket
that arrives on Friday evening with 4 working hours to go is due on Monday at 13:00.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from mailsupport.store import PRIORITIES

__all__ = ["BusinessHours", "Targets", "add_working_time", "parse_hours", "parse_targets"]

_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_DURATION = re.compile(r"(\d+)\s*([dhm])")
_SEGMENT = re.compile(
    r"(?P<first>[a-z]{3})(?:-(?P<last>[a-z]{3}))?\s+(?P<start>\d{1,2}:\d{2})-(?P<end>\d{1,2}:\d{2})"
)
MAX_DAYS = 400  # no target is meant to run more than a year of working days


@dataclass(frozen=True, slots=True)
class Targets:
    """Per-priority durations; a missing priority has no target."""

    by_priority: dict[str, timedelta]

    def get(self, priority: str) -> timedelta | None:
        return self.by_priority.get(priority)

    def __bool__(self) -> bool:
        return bool(self.by_priority)


@dataclass(frozen=True, slots=True)
class BusinessHours:
    """Working intervals per weekday (0 = Monday) in a time zone."""

    zone: ZoneInfo
    days: dict[int, tuple[tuple[time, time], ...]]

    def intervals(self, day: date) -> list[tuple[datetime, datetime]]:
        return [
            (
                datetime.combine(day, start, self.zone).astimezone(UTC),
                datetime.combine(day, end, self.zone).astimezone(UTC),
            )
            for start, end in self.days.get(day.weekday(), ())
        ]


def parse_duration(text: str) -> timedelta:
    """ "1d", "4h", "90m", "1d 4h" -> timedelta; ValueError otherwise."""
    compact = text.strip().lower()
    parts = _DURATION.findall(compact)
    if not parts or _DURATION.sub("", compact).strip():
        raise ValueError(f"not a duration: {text!r} (like 4h, 1d, 90m, 1d 4h)")
    unit = {"d": timedelta(days=1), "h": timedelta(hours=1), "m": timedelta(minutes=1)}
    return sum((int(n) * unit[u] for n, u in parts), timedelta())


def parse_targets(text: str) -> Targets:
    """ "urgent=1h, high=4h, normal=1d, low=3d" ("" = no targets)."""
    found: dict[str, timedelta] = {}
    for item in filter(None, (x.strip() for x in text.split(","))):
        name, equals, value = item.partition("=")
        name = name.strip().lower()
        if not equals or name not in PRIORITIES:
            raise ValueError(
                f"{item!r}: write priority=duration, priority one of {', '.join(PRIORITIES)}"
            )
        if name in found:
            raise ValueError(f"{name} is given twice")
        duration = parse_duration(value)
        if duration <= timedelta():
            raise ValueError(f"{item!r}: the duration must be positive")
        found[name] = duration
    return Targets(found)


def parse_hours(text: str, zone_name: str = "UTC") -> BusinessHours | None:
    """ "mon-fri 09:00-18:00; sat 10:00-14:00" in `zone_name`; "" = round the clock."""
    if not text.strip():
        return None
    try:
        zone = ZoneInfo(zone_name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {zone_name!r} (like Europe/Moscow or UTC)") from None
    days: dict[int, list[tuple[time, time]]] = {}
    for part in filter(None, (x.strip().lower() for x in text.split(";"))):
        match = _SEGMENT.fullmatch(part)
        if not match or match["first"] not in _DAYS or (match["last"] or "mon") not in _DAYS:
            raise ValueError(f"{part!r}: write days and hours like mon-fri 09:00-18:00")
        first = _DAYS.index(match["first"])
        last = _DAYS.index(match["last"]) if match["last"] else first
        if last < first:
            raise ValueError(f"{part!r}: days run from the first to the last (mon-fri)")
        start, end = _clock(match["start"]), _clock(match["end"])
        if end <= start:
            raise ValueError(f"{part!r}: the day must end after it starts")
        for day in range(first, last + 1):
            days.setdefault(day, []).append((start, end))
    return BusinessHours(zone, {d: tuple(sorted(v)) for d, v in days.items()})


def _clock(text: str) -> time:
    hours, minutes = (int(x) for x in text.split(":"))
    if hours > 24 or minutes > 59 or (hours == 24 and minutes):
        raise ValueError(f"not a time of day: {text}")
    return time.max if hours == 24 else time(hours, minutes)


def add_working_time(start: datetime, duration: timedelta, hours: BusinessHours | None) -> datetime:
    """`start` plus `duration` of working time (all time when `hours` is None)."""
    if hours is None:
        return start + duration
    left = duration
    day = start.astimezone(hours.zone).date() - timedelta(days=1)  # a night shift's start
    for _ in range(MAX_DAYS):
        for begin, end in hours.intervals(day):
            begin = max(begin, start)
            if end <= begin:
                continue
            if end - begin >= left:
                return begin + left
            left -= end - begin
        day += timedelta(days=1)
    raise ValueError("business hours leave no working time within a year")


def due_times(
    created_at: datetime,
    priority: str,
    first_response: Targets,
    resolution: Targets,
    hours: BusinessHours | None,
) -> tuple[datetime | None, datetime | None]:
    """(first response due, resolution due) for a ticket; None where there is no target."""
    first = first_response.get(priority)
    whole = resolution.get(priority)
    return (
        add_working_time(created_at, first, hours) if first else None,
        add_working_time(created_at, whole, hours) if whole else None,
    )
