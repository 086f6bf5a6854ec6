"""The report's figures: volume, categories, response times, SLA breaches and the backlog.

`build_report` turns the tickets' facts into one JSON-ready dict that every rendering lays
out; the definitions of its figures are in the package's docstring.
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, date, datetime, timedelta
from operator import attrgetter
from typing import Any

from mailsupport.report.facts import DEFAULT_TOP, Period, TicketFacts
from mailsupport.report.topics import Topic, find_topics

__all__ = ["REPORT_VERSION", "backlog", "build_report", "closed_spans", "percentile"]

# Bumped when a JSON field changes meaning or goes away. 2: tickets opened by automatic mail
# are counted apart (`automatic`), left out of `tickets` and every other figure; spam is
# left out entirely.
REPORT_VERSION = 2
PRIORITY_ORDER = ("urgent", "high", "normal", "low")
EXAMPLES = 5  # example tickets per topic


def percentile(values: Iterable[int], p: int) -> int | None:
    """Nearest-rank percentile: the smallest value with at least p% of all values at or
    below it, i.e. sorted(values)[ceil(p * n / 100) - 1]. None for no values.

    Chosen because it is always a real measured time and needs no interpolation, so a test
    (or a reader) can point at the ticket it came from."""
    ordered = sorted(values)
    if not ordered:
        return None
    rank = max(1, -(-p * len(ordered) // 100))  # integer ceil: no float surprises
    return ordered[rank - 1]


def _seconds(delta: timedelta) -> int:
    return max(0, int(delta.total_seconds()))  # clocks of imported mail can disagree


def _times(values: list[int]) -> dict[str, Any]:
    return {
        "measured": len(values),
        "median_seconds": percentile(values, 50),
        "p90_seconds": percentile(values, 90),
    }


def _counted(
    key: str, counts: Counter[Any], order: Sequence[Any] | None = None
) -> list[dict[str, Any]]:
    """[{key: value, "tickets": n}], most tickets first (ties by value), or in `order`."""
    if order is not None:
        values = [*order, *sorted(v for v in counts if v not in order)]
    else:
        values = sorted(counts, key=lambda v: (-counts[v], str(v)))
    return [{key: value, "tickets": counts[value]} for value in values]


def _top(key: str, counts: Counter[str], top: int) -> list[dict[str, Any]]:
    """The first `top` of `_counted`, without sorting them all (a year of a big desk has
    hundreds of thousands of senders): those with at least the top-th count, sorted."""
    if len(counts) <= top:
        return _counted(key, counts)
    least = counts.most_common(top)[-1][1]
    values = sorted((v for v, n in counts.items() if n >= least), key=lambda v: (-counts[v], v))
    return [{key: value, "tickets": counts[value]} for value in values[:top]]


def _breaches(
    tickets: Sequence[TicketFacts], now: datetime, due_of: str, done_of: str
) -> dict[str, Any]:
    total, late, waiting = Counter[str](), Counter[str](), Counter[str]()
    for t in tickets:
        due: datetime | None = getattr(t, due_of)
        if due is None:
            continue
        done: datetime | None = getattr(t, done_of)
        total[t.priority] += 1
        if done is not None and done > due:
            late[t.priority] += 1
        elif done is None and now > due:
            late[t.priority] += 1
            waiting[t.priority] += 1
    priorities = [*PRIORITY_ORDER, *sorted(set(total) - set(PRIORITY_ORDER))]
    return {
        "with_target": sum(total.values()),
        "breached": sum(late.values()),
        "still_waiting": sum(waiting.values()),
        "by_priority": [
            {
                "priority": p,
                "with_target": total[p],
                "breached": late[p],
                "still_waiting": waiting[p],
            }
            for p in priorities
        ],
    }


def closed_spans(t: TicketFacts) -> list[tuple[datetime, bool]]:
    """The ticket's history as alternating (when, closed?) changes after its creation,
    made to agree with its status now (a closed ticket ends closed at `closed_at`)."""
    changes: list[tuple[datetime, bool]] = []
    closed = False
    for when, to_closed in sorted(t.status_changes, key=lambda c: c[0]):
        if to_closed != closed:
            changes.append((max(when, t.created_at), to_closed))
            closed = to_closed
    if t.status == "closed" and not closed:
        changes.append((max(t.closed_at or t.created_at, t.created_at), True))
    elif t.status != "closed" and closed:
        changes.pop()  # reopened without a recorded event: open since that closing
    return changes


def backlog(tickets: Iterable[TicketFacts], period: Period) -> list[dict[str, Any]]:
    """Tickets open (created, not closed) at the end of each day of the period."""
    days = period.days()
    first, until = days[0], period.until
    opening = 0  # open at the start of the first day
    change: Counter[date] = Counter()  # opened less closed during each day
    for t in tickets:
        created = t.created_at
        if t.status_changes:
            deltas = [(when, -1 if closed else 1) for when, closed in closed_spans(t)]
        elif t.status == "closed":  # (most tickets: no history to follow)
            deltas = [(max(t.closed_at or created, created), -1)]
        else:
            deltas = []
        for when, delta in ((created, 1), *deltas):
            if when >= until:  # after the end of the last day
                continue
            day = (when if when.tzinfo is UTC else when.astimezone(UTC)).date()
            if day < first:
                opening += delta
            else:
                change[day] += delta
    points, running = [], opening
    for day in days:
        running += change[day]
        points.append({"date": day.isoformat(), "open": running})
    return points


def _weeks(per_day: Counter[date], days: list[date]) -> list[dict[str, Any]]:
    weeks: dict[tuple[int, int], dict[str, Any]] = {}
    for day in days:
        year, week, weekday = day.isocalendar()
        entry = weeks.setdefault(
            (year, week),
            {
                "week": f"{year}-W{week:02d}",
                "start": (day - timedelta(days=weekday - 1)).isoformat(),
                "days_in_range": 0,
                "tickets": 0,
            },
        )
        entry["days_in_range"] += 1
        entry["tickets"] += per_day[day]
    return list(weeks.values())


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat()


def build_report(
    tickets: Iterable[TicketFacts],
    period: Period,
    now: datetime,
    top: int = DEFAULT_TOP,
    topics: Callable[[], list[Topic]] | None = None,
) -> dict[str, Any]:
    """The whole report as one JSON-ready dict (see the `report` command's help for fields).

    `tickets` holds the tickets created in the period, plus any older ones that were open
    during it (they count only in the backlog). `topics`, when given, gives `find_topics` of
    the tickets of the period that are work, found elsewhere (report/topicsworker.py): it
    is called last, so that they are found while the other figures are."""
    everything = list(tickets)
    robots = Counter(
        t.automatic
        for t in everything
        if t.automatic and period.since <= t.created_at < period.until
    )
    everything = [t for t in everything if not t.automatic]  # no work: counted apart
    ours = sorted(
        (t for t in everything if period.since <= t.created_at < period.until),
        key=attrgetter("number"),
    )
    days = period.days()
    per_day = Counter(t.created_at.astimezone(UTC).date() for t in ours)
    first_response = [
        _seconds(t.first_response_at - t.created_at) for t in ours if t.first_response_at
    ]
    resolution = [_seconds(t.resolved_at - t.created_at) for t in ours if t.resolved_at]
    senders = Counter(t.requester.lower() for t in ours if t.requester)
    domains: Counter[str] = Counter()
    for address, count in senders.items():
        if "@" in address:
            domains[address.rpartition("@")[2]] += count
    report = {
        "report_version": REPORT_VERSION,
        "generated_at": _iso(now.replace(microsecond=0)),
        "range": {
            "since": _iso(period.since),
            "until": _iso(period.until),
            "days": len(days),
            "time_zone": "UTC",
        },
        "tickets": len(ours),
        "volume": {
            "per_day": [{"date": d.isoformat(), "tickets": per_day[d]} for d in days],
            "per_week": _weeks(per_day, days),
        },
        "by_queue": _counted("queue", Counter(t.queue for t in ours)),
        "by_type": _counted("type", Counter(t.type for t in ours)),
        "by_priority": _counted(
            "priority", Counter(t.priority for t in ours), order=PRIORITY_ORDER
        ),
        "by_line": _counted(
            "line", Counter(t.line for t in ours), order=sorted({1, *(t.line for t in ours)})
        ),
        "first_response": _times(first_response),
        "resolution": _times(resolution),
        "sla": {
            "first_response": _breaches(ours, now, "first_response_due", "first_response_at"),
            "resolution": _breaches(ours, now, "resolution_due", "resolved_at"),
        },
        "backlog": backlog(everything, period),
        "top_senders": _top("address", senders, top),
        "top_domains": _top("domain", domains, top),
        "automatic": {
            "tickets": sum(robots.values()),
            "by_kind": _counted("kind", robots),
        },
    }
    found = find_topics(ours, top=top) if topics is None else topics()
    by_number = {t.number: t for t in ours} if found else {}
    report["topics"] = [
        {
            "label": topic.label,
            "tickets": topic.count,
            "terms": list(topic.terms),
            "examples": [  # the latest tickets: the highest numbers
                {"number": number, "subject": by_number[number].subject}
                for number in heapq.nlargest(EXAMPLES, topic.tickets)
            ],
        }
        for topic in found
    ]
    return report
