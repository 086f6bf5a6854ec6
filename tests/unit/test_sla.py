"""SLA due times: durations, targets per priority, business hours across nights, weekends
and time zones."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from mailsupport.sla import add_working_time, due_times, parse_duration, parse_hours, parse_targets

MSK = "Europe/Moscow"  # UTC+3 all year


def utc(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 11, day, hour, minute, tzinfo=UTC)  # 2026-11-16 is a Monday


@pytest.mark.parametrize(
    ("text", "expected"),
    [("4h", timedelta(hours=4)), ("1d", timedelta(days=1)), ("90m", timedelta(minutes=90)),
     ("1d 4h", timedelta(days=1, hours=4)), (" 2D ", timedelta(days=2))],
)  # fmt: skip
def test_durations(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "4", "4x", "soon", "4h later"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)


def test_targets_per_priority() -> None:
    targets = parse_targets("urgent=1h, high=4h, normal=1d")
    assert targets.get("urgent") == timedelta(hours=1)
    assert targets.get("low") is None
    assert not parse_targets("")
    for bad in ("asap=1h", "urgent", "urgent=1h, urgent=2h", "high=0h"):
        with pytest.raises(ValueError):
            parse_targets(bad)


def test_round_the_clock_is_plain_addition() -> None:
    assert add_working_time(utc(20, 16), timedelta(hours=4), None) == utc(20, 20)


def test_within_one_working_day() -> None:
    hours = parse_hours("mon-fri 09:00-18:00", MSK)
    # Wednesday 10:00 in Moscow (07:00 UTC) plus 4 working hours: 14:00 Moscow.
    assert add_working_time(utc(18, 7), timedelta(hours=4), hours) == utc(18, 11)


def test_friday_evening_waits_for_monday() -> None:
    hours = parse_hours("mon-fri 09:00-18:00", MSK)
    # Friday 19:00 Moscow: nothing left that day; Monday 09:00 + 4 h = 13:00 Moscow.
    assert add_working_time(utc(20, 16), timedelta(hours=4), hours) == utc(23, 10)
    # Friday 16:00 Moscow with 4 h to go: 2 h on Friday, 2 h on Monday morning.
    assert add_working_time(utc(20, 13), timedelta(hours=4), hours) == utc(23, 8)


def test_a_day_target_counts_working_hours() -> None:
    hours = parse_hours("mon-fri 09:00-18:00", MSK)
    # 1d of working time is 24 working hours: 2 days and 6 hours of a 9-hour day.
    assert add_working_time(utc(16, 6), timedelta(days=1), hours) == utc(18, 12)


def test_several_segments_and_a_saturday() -> None:
    hours = parse_hours("mon-fri 09:00-13:00; mon-fri 14:00-18:00; sat 10:00-12:00", "UTC")
    assert add_working_time(utc(16, 12), timedelta(hours=2), hours) == utc(16, 15)  # lunch
    assert add_working_time(utc(20, 17), timedelta(hours=3), hours) == utc(21, 12)  # 1 + 2 h
    assert add_working_time(utc(20, 17), timedelta(hours=4), hours) == utc(23, 10)  # + Monday


@pytest.mark.parametrize(
    ("text", "zone", "words"),
    [("mon-fri 9-18", "UTC", "like mon-fri"), ("fri-mon 09:00-18:00", "UTC", "first to the last"),
     ("mon 18:00-09:00", "UTC", "end after"), ("mon-fri 09:00-18:00", "Mars/Base", "time zone"),
     ("mon 25:00-26:00", "UTC", "time of day")],
)  # fmt: skip
def test_bad_business_hours(text: str, zone: str, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        parse_hours(text, zone)


def test_due_times_for_a_ticket() -> None:
    first = parse_targets("high=4h")
    whole = parse_targets("high=2d, normal=5d")
    assert due_times(utc(16, 9), "high", first, whole, None) == (utc(16, 13), utc(18, 9))
    assert due_times(utc(16, 9), "normal", first, whole, None) == (None, utc(21, 9))
    assert due_times(utc(16, 9), "low", first, whole, None) == (None, None)
