"""`mailsupport report`: statistics of requests over a time range. Pure.

Everything here works on plain data: `TicketFacts` rows (read from the database by
`mailsupport.reportdata`), the range and `now`. `build_report` turns them into one JSON-ready
dict, and `render_text` and `render_html` only lay that dict out, so the terminal, `--json`
and `--html` always show the same figures.

Definitions (the contract of the figures):

- The range is [since, until): `since` included, `until` excluded, both UTC. Days are UTC
  calendar days; weeks are ISO weeks (Monday first) in UTC.
- "Tickets of the range" are the tickets created in it. Merged tickets are left out (they
  live on in the ticket they joined). Volume, categories, response and resolution times, SLA
  breaches, senders, domains and topics are about these tickets.
- First-response time: first agent reply minus creation, over the tickets answered so far.
  Resolution time: the (last) closing minus creation, over the tickets closed now.
- Median and 90th percentile use the nearest-rank method (see `percentile`): each is one
  of the measured values, and the median of an even count is the lower middle value.
- SLA breach: answered (resolved) after the due time, or not answered (resolved) yet and
  `now` is past the due time. Tickets without a due time have no target and are not counted.
- Backlog: tickets created and not closed at the end of each day of the range (at `until`
  for its last day), counting older tickets still open and following reopenings.
- Topics: see `find_topics`.
"""

from __future__ import annotations

import html
import math
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from typing import Any

from mailsupport.errors import UsageError

__all__ = [
    "REPORT_VERSION",
    "Period",
    "TicketFacts",
    "Topic",
    "build_report",
    "clean_text",
    "find_topics",
    "parse_period",
    "percentile",
    "render_html",
    "render_text",
]

REPORT_VERSION = 1  # bumped when a JSON field changes meaning or goes away
PRIORITY_ORDER = ("urgent", "high", "normal", "low")
DEFAULT_DAYS = 30
DEFAULT_TOP = 10
EXAMPLES = 5  # example tickets per topic


# ------------------------------------------------------------------------------------------
# Input
# ------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TicketFacts:
    """What the report needs of one ticket. Times are aware UTC."""

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

    def day_end(self, day: date) -> datetime:
        """The end of `day` (the next midnight), or `until` when that comes first."""
        midnight = datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(days=1)
        return min(midnight, self.until)


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


# ------------------------------------------------------------------------------------------
# Figures
# ------------------------------------------------------------------------------------------


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
    return _counted(key, counts)[:top]


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
    deltas: list[tuple[datetime, int]] = []
    for t in tickets:
        deltas.append((t.created_at, 1))
        deltas.extend((when, -1 if closed else 1) for when, closed in closed_spans(t))
    deltas.sort(key=lambda d: d[0])
    points, running, i = [], 0, 0
    for day in period.days():
        end = period.day_end(day)
        while i < len(deltas) and deltas[i][0] < end:
            running += deltas[i][1]
            i += 1
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
    tickets: Iterable[TicketFacts], period: Period, now: datetime, top: int = DEFAULT_TOP
) -> dict[str, Any]:
    """The whole report as one JSON-ready dict (see the `report` command's help for fields).

    `tickets` holds the tickets created in the period, plus any older ones that were open
    during it (they count only in the backlog)."""
    everything = list(tickets)
    ours = sorted(
        (t for t in everything if period.since <= t.created_at < period.until),
        key=lambda t: t.number,
    )
    days = period.days()
    per_day = Counter(t.created_at.astimezone(UTC).date() for t in ours)
    first_response = [
        _seconds(t.first_response_at - t.created_at) for t in ours if t.first_response_at
    ]
    resolution = [_seconds(t.resolved_at - t.created_at) for t in ours if t.resolved_at]
    senders = Counter(t.requester.lower() for t in ours if t.requester)
    domains = Counter(a.rpartition("@")[2] for a in senders.elements() if "@" in a)
    topics = find_topics(ours, top=top)
    return {
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
        "topics": [
            {
                "label": topic.label,
                "tickets": topic.count,
                "terms": list(topic.terms),
                "examples": [
                    {"number": t.number, "subject": t.subject}
                    for t in sorted(
                        (t for t in ours if t.number in topic.tickets),
                        key=lambda t: -t.number,
                    )[:EXAMPLES]
                ],
            }
            for topic in topics
        ],
    }


# ------------------------------------------------------------------------------------------
# Topics: the most frequent problems
# ------------------------------------------------------------------------------------------

MIN_TOPIC_TICKETS = 2  # a topic must recur
MERGE_JACCARD = 0.6  # candidates sharing this much of their tickets are one topic
CONTAIN_SHARE = 0.8  # a topic this much inside a bigger one with a common word joins it
PHRASE_LABEL_SHARE = 0.5  # a phrase names its topic when it covers this share of it
COMMON_SHARE = 0.5  # in bigger reports, words in more tickets than this say nothing
COMMON_MIN_TICKETS = 20
MAX_CANDIDATES = 400  # enough for any top list; bounds the merging work
TEXT_CHARS = 2000  # of the first message: the problem is stated at the top

# Phrases never run across punctuation or lines.
_BOUNDARY = re.compile(r"[\r\n.!?;:,()\[\]{}<>\"«»„“”|/\\]+")
_TOKEN = re.compile(r"[^\W_]+(?:['’][^\W_]+)?")
_URL = re.compile(r"\b(?:https?://|mailto:|www\.)\S+|[^\s@<>()]+@[^\s@<>()]+", re.IGNORECASE)
# Kept in front of a phrase when shown ("не приходит счёт"), though never matched on.
_NEGATIONS = frozenset(
    ("не", "нет", "ни", "not", "no", "never", "cannot", "can't", "don't", "doesn't", "didn't")
)
# Words every support mail has, beyond the knowledge base's stop words (compared by stem).
_GENERIC = """
    re fw fwd aw work works working need needs want try tried trying use using used know see
    still also anymore today yesterday tomorrow time thing something anything everything ok
    okay yes attached attachment find
    работает работать работают хочу хотел хотела хотим сделать делать пробовал пробовала
    пробовали знаю сейчас сегодня вчера завтра снова опять просто получается никак прошу
    вложении приложении прикладываю
"""
_SIGNATURE = re.compile(r"\s*(--|—|__)\s*")
_SIGN_OFF = re.compile(
    r"\s*(best regards|kind regards|regards|thanks|thank you|many thanks|cheers|sincerely|"
    r"с уважением|спасибо|заранее спасибо|заранее благодарю|благодарю|всего доброго|"
    r"всего хорошего)\b[\s,.!]*(\S+\s*){0,3}",
    re.IGNORECASE,
)
_DEVICE = re.compile(r"\s*(sent from|get outlook|отправлено (с|из))\b", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Topic:
    label: str  # the most readable surface form
    count: int  # tickets
    tickets: frozenset[int]  # ticket numbers
    terms: tuple[str, ...]  # the other words and phrases merged into it


@dataclass(slots=True)
class _Candidate:
    key: tuple[str, ...]  # one stem, or two stems in sorted order
    tickets: set[int]
    forms: list[str]  # every written form met, repeats included
    _surface: str | None = None

    @property
    def phrase(self) -> bool:
        return len(self.key) == 2

    @property
    def surface(self) -> str:
        """The most common original form; ties to the shorter, then by text."""
        if self._surface is None:
            counts = Counter(" ".join(form.split()) for form in self.forms)
            self._surface = min(counts, key=lambda s: (-counts[s], len(s), s))
        return self._surface

    def order(self) -> tuple[int, int, int, str]:
        # Among equals, words written side by side ("личный кабинет") read better than a
        # pair with words between them ("войти в личном").
        surface = self.surface
        return (-len(self.tickets), 0 if self.phrase else 1, len(surface.split()), surface)


def clean_text(text: str) -> str:
    """The customer's own words: no quoted history, no signature, no links or addresses."""
    from mailsupport.quoting import is_quoted, new_text

    kept: list[str] = []
    for line in new_text(text.splitlines()):
        if _SIGNATURE.fullmatch(line) or _DEVICE.match(line):
            break
        if kept and len(line.strip()) <= 40 and _SIGN_OFF.fullmatch(line):
            break
        if not is_quoted(line):
            kept.append(line)
    return _URL.sub(" ", "\n".join(kept))


@lru_cache(maxsize=1)
def _generic_stems() -> frozenset[str]:
    from mailsupport.kb import normalise, stem

    return frozenset(stem(normalise(word)) for word in _GENERIC.split())


@lru_cache(maxsize=65536)
def _term(token: str) -> str | None:
    """The stem a lowercased token counts as, or None for a word that says nothing."""
    from mailsupport.kb import stem, words

    found = words(token)  # the knowledge base's normalising and stop words: one vocabulary
    if token in _NEGATIONS or len(found) != 1 or len(found[0]) < 3 or found[0].isdigit():
        return None
    stemmed = stem(found[0])
    return None if stemmed in _generic_stems() else stemmed


def _ticket_terms(text: str) -> dict[tuple[str, ...], list[str]]:
    """Stems (as 1-tuples) and stem pairs (adjacent once stop words are left out, sorted)
    of one ticket's text, each with the forms it was written in."""
    found: dict[tuple[str, ...], list[str]] = defaultdict(list)
    for segment in _BOUNDARY.split(text.lower().replace("’", "'")):
        previous, previous_at = "", 0  # the last kept stem, where its written form starts
        before, before_at = "", 0  # the word just before the current one, kept or not
        for match in _TOKEN.finditer(segment):
            word = match.group()
            stemmed = _term(word)
            if stemmed is not None:
                found[(stemmed,)].append(word)
                # "не приходит" reads very differently from "приходит": show the negation
                start = before_at if before in _NEGATIONS else match.start()
                if previous and previous != stemmed:
                    key = (previous, stemmed) if previous < stemmed else (stemmed, previous)
                    found[key].append(segment[previous_at : match.end()])
                previous, previous_at = stemmed, start
            before, before_at = word, match.start()
    return found


def _absorb_narrower(
    groups: list[tuple[list[_Candidate], set[int]]],
) -> list[tuple[list[_Candidate], set[int]]]:
    """Fold each topic that lies mostly inside a bigger one sharing a word into it."""
    ordered = sorted(enumerate(groups), key=lambda g: (-len(g[1][1]), g[0]))
    kept: list[tuple[list[_Candidate], set[int], set[str]]] = []
    for _, (members, numbers) in ordered:
        stems = {stem for m in members for stem in m.key}
        best, best_shared = None, CONTAIN_SHARE * len(numbers)
        for host in kept:
            if not stems & host[2]:
                continue
            shared = len(numbers & host[1])
            if shared >= best_shared and (best is None or shared > best_shared):
                best, best_shared = host, shared
        if best is None:
            kept.append((list(members), set(numbers), stems))
        else:
            best[0].extend(members)
            best[1].update(numbers)
            best[2].update(stems)
    return [(members, numbers) for members, numbers, _ in kept]


def find_topics(
    tickets: Sequence[TicketFacts], top: int = DEFAULT_TOP, min_tickets: int = MIN_TOPIC_TICKETS
) -> list[Topic]:
    """The most frequent problems across the tickets' subjects and first messages.

    1. Each ticket's subject and first message (`clean_text`) are split into words;
       lowercase, ё = е, the knowledge base's stop words and a few generic support words
       left out, every word stemmed (Snowball, Russian or English by script), so
       "счёт", "счета" and "счету" are one term.
    2. Candidates are terms and two-word phrases (neighbours once stop words are out, in
       either order: "не приходит счёт" and "счета не приходят" are one phrase), with the
       tickets they occur in (document frequency). Those in fewer than `min_tickets` tickets
       are dropped, and so, from 20 tickets on, those in more than half of all tickets.
    3. From the most tickets down (at equal counts phrases first, then the fewest written
       words, then by text), a candidate joins the topic whose tickets it shares most, when
       they overlap by Jaccard >= 0.6, else it starts a topic. A topic's tickets are its
       members' union. Then, from the biggest down, a topic with at least 80% of its
       tickets inside a bigger one that shares a word with it joins that one: it is a
       narrower wording ("счёт не пришёл" inside "счёт"), listed among its terms.
    4. A topic is named by its widest phrase when that covers at least half of its tickets,
       else by its first member; a name is the member's most common written form (ties to
       the shorter, then by text). Topics are ranked by tickets, then name.
    """
    where: dict[tuple[str, ...], set[int]] = defaultdict(set)
    forms: dict[tuple[str, ...], list[str]] = defaultdict(list)
    for t in tickets:
        text = f"{t.subject}\n{clean_text(t.text[:TEXT_CHARS])}"
        for key, written in _ticket_terms(text).items():
            where[key].add(t.number)
            forms[key].extend(written)
    ceiling = len(tickets) * COMMON_SHARE if len(tickets) >= COMMON_MIN_TICKETS else math.inf
    ordered = sorted(
        (
            _Candidate(key, numbers, forms[key])
            for key, numbers in where.items()
            if min_tickets <= len(numbers) <= ceiling
        ),
        key=_Candidate.order,
    )[:MAX_CANDIDATES]

    groups: list[tuple[list[_Candidate], set[int]]] = []
    for candidate in ordered:
        best, best_score = None, MERGE_JACCARD
        size = len(candidate.tickets)
        for index, (_, numbers) in enumerate(groups):
            other = len(numbers)
            if min(size, other) < MERGE_JACCARD * max(size, other):
                continue  # cannot reach the threshold: skip the set work
            shared = len(candidate.tickets & numbers)
            score = shared / (size + other - shared)
            if score >= best_score and (best is None or score > best_score):
                best, best_score = index, score
        if best is None:
            groups.append(([candidate], set(candidate.tickets)))
        else:
            groups[best][0].append(candidate)
            groups[best][1].update(candidate.tickets)
    groups = _absorb_narrower(groups)

    topics = []
    for members, numbers in groups:
        phrases = sorted((m for m in members if m.phrase), key=_Candidate.order)
        name = members[0]
        if phrases and len(phrases[0].tickets) >= PHRASE_LABEL_SHARE * len(numbers):
            name = phrases[0]
        label = name.surface
        terms = tuple(dict.fromkeys(m.surface for m in members if m.surface != label))
        topics.append(Topic(label, len(numbers), frozenset(numbers), terms[:5]))
    topics.sort(key=lambda t: (-t.count, t.label))
    return topics[:top]


# ------------------------------------------------------------------------------------------
# Terminal
# ------------------------------------------------------------------------------------------


def duration(seconds: int | None) -> str:
    """45s, 12m, 3h 05m, 2d 04h; "-" for nothing measured."""
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds}s"
    minutes = seconds // 60
    if minutes < 60:
        return f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h {minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d {hours:02d}h"


def _name(value: Any, empty: str) -> str:
    return str(value) if value not in ("", None) else empty


def _table(
    title: str, header: Sequence[str], rows: Sequence[Sequence[Any]], left: int = 1
) -> list[str]:
    """A heading and an aligned table: numbers right-aligned, the first `left` columns and
    a last column of bars or ticket numbers (header "" or EXAMPLES) left-aligned."""
    cells = [[str(c) for c in header], *([str(c) for c in row] for row in rows)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    flush_left = {*range(left)}
    if header[-1] in ("", "EXAMPLES"):
        flush_left.add(len(header) - 1)

    def line(row: list[str]) -> str:
        return (
            "  "
            + "  ".join(
                cell.ljust(width) if i in flush_left else cell.rjust(width)
                for i, (cell, width) in enumerate(zip(row, widths, strict=True))
            ).rstrip()
        )

    out = [title]
    out += [line(row) for row in cells] if rows else ["  (none)"]
    return [*out, ""]


def _share(part: int, whole: int) -> str:
    """A whole percentage, halves rounded up (12.5% -> 13%)."""
    return f"{(200 * part + whole) // (2 * whole)}%" if whole else "-"


def _bar(value: int, most: int, width: int = 30) -> str:
    return "#" * (math.ceil(width * value / most) if most and value else 0)


def _sla_rows(sla: dict[str, Any]) -> list[tuple[str, bool, int, int, int, str]]:
    """(label, by priority?, with target, breached, still waiting, share) for both targets,
    each followed by its priorities that have targets."""
    rows = []
    for key in ("first_response", "resolution"):
        for s, sub in [(sla[key], False), *((p, True) for p in sla[key]["by_priority"])]:
            if sub and not s["with_target"]:
                continue
            label = s["priority"] if sub else key.replace("_", " ")
            figures = (s["with_target"], s["breached"], s["still_waiting"])
            rows.append((label, sub, *figures, _share(s["breached"], s["with_target"])))
    return rows


def _days(count: int) -> str:
    return f"{count} day" if count == 1 else f"{count} days"


def _span(r: dict[str, Any]) -> tuple[str, str]:
    return r["since"][:16].replace("T", " "), r["until"][:16].replace("T", " ")


def render_text(report: dict[str, Any]) -> str:
    """The report as aligned tables for a terminal (or a mail, or a pipe)."""
    r = report["range"]
    total = report["tickets"]
    out = [
        f"Tickets created {_span(r)[0]} to {_span(r)[1]} UTC ({_days(r['days'])}): {total}",
        "",
    ]
    per_day = report["volume"]["per_day"]
    most = max((d["tickets"] for d in per_day), default=0)
    out += _table(
        "Volume per day (UTC)",
        ["DAY", "TICKETS", ""],
        [
            (
                f"{d['date']} {date.fromisoformat(d['date']):%a}",
                d["tickets"],
                _bar(d["tickets"], most),
            )
            for d in per_day
        ],
    )
    out += _table(
        "Volume per ISO week",
        ["WEEK", "STARTS", "DAYS", "TICKETS"],
        [
            (w["week"], w["start"], w["days_in_range"], w["tickets"])
            for w in report["volume"]["per_week"]
        ],
    )
    for key, title, empty in (
        ("queue", "By queue", "(none)"),
        ("type", "By type", "(unclassified)"),
        ("priority", "By priority", ""),
        ("line", "By line", ""),
    ):
        out += _table(
            title,
            [key.upper(), "TICKETS", "SHARE"],
            [
                (_name(row[key], empty), row["tickets"], _share(row["tickets"], total))
                for row in report[f"by_{key}"]
            ],
        )
    out += _table(
        "Response times",
        ["", "MEASURED", "MEDIAN", "90TH PCT"],
        [
            (
                label,
                report[key]["measured"],
                duration(report[key]["median_seconds"]),
                duration(report[key]["p90_seconds"]),
            )
            for key, label in (("first_response", "first response"), ("resolution", "resolution"))
        ],
    )
    sla = report["sla"]
    rows = [(("  " if sub else "") + label, *figures) for label, sub, *figures in _sla_rows(sla)]
    out += _table("SLA breaches", ["", "WITH TARGET", "BREACHED", "STILL WAITING", "SHARE"], rows)
    backlog_points = report["backlog"]
    most = max((d["open"] for d in backlog_points), default=0)
    out += _table(
        "Backlog: open tickets at the end of each day (UTC)",
        ["DAY", "OPEN", ""],
        [(d["date"], d["open"], _bar(d["open"], most)) for d in backlog_points],
    )
    out += _table(
        "Top senders",
        ["ADDRESS", "TICKETS"],
        [(s["address"], s["tickets"]) for s in report["top_senders"]],
    )
    out += _table(
        "Top domains",
        ["DOMAIN", "TICKETS"],
        [(s["domain"], s["tickets"]) for s in report["top_domains"]],
    )
    out += _table(
        "Most frequent problems",
        ["TOPIC", "TICKETS", "EXAMPLES"],
        [
            (t["label"], t["tickets"], " ".join(f"#{e['number']}" for e in t["examples"]))
            for t in report["topics"]
        ],
    )
    return "\n".join(out).rstrip() + "\n"


# ------------------------------------------------------------------------------------------
# HTML: one self-contained page, charts drawn as inline SVG
# ------------------------------------------------------------------------------------------

_CSS = """
:root { --ink: #1f2328; --muted: #656d76; --line: #d0d7de; --bar: #3b6fb6; --warn: #c2410c;
  --back: #ffffff; --panel: #f6f8fa; }
@media (prefers-color-scheme: dark) { :root { --ink: #e6edf3; --muted: #9198a1;
  --line: #3d444d; --bar: #6ea8fe; --warn: #fb923c; --back: #0d1117; --panel: #151b23; } }
* { box-sizing: border-box; }
body { margin: 0 auto; max-width: 980px; padding: 24px; font: 15px/1.45 system-ui, -apple-system,
  "Segoe UI", Roboto, sans-serif; color: var(--ink); background: var(--back); }
h1 { font-size: 1.5em; margin: 0 0 4px; } h2 { font-size: 1.15em; margin: 28px 0 8px; }
.muted { color: var(--muted); }
.cards { display: flex; flex-wrap: wrap; gap: 12px; margin: 16px 0; }
.card { background: var(--panel); border: 1px solid var(--line); border-radius: 8px;
  padding: 10px 14px; min-width: 150px; }
.card b { display: block; font-size: 1.5em; }
.grid { display: grid; grid-template-columns: repeat(auto-fit, minmax(300px, 1fr)); gap: 8px 24px; }
table { border-collapse: collapse; width: 100%; font-variant-numeric: tabular-nums; }
th, td { text-align: left; padding: 4px 8px; border-bottom: 1px solid var(--line);
  vertical-align: top; }
th { color: var(--muted); font-weight: 600; }
td.n, th.n { text-align: right; }
svg { display: block; width: 100%; height: auto; }
svg text { fill: var(--muted); font-size: 11px; }
svg .bar { fill: var(--bar); } svg .axis { stroke: var(--line); }
svg .line { fill: none; stroke: var(--bar); stroke-width: 2; }
svg .dot { fill: var(--bar); } svg .label { fill: var(--ink); font-size: 12px; }
.warn { color: var(--warn); font-weight: 600; }
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _scale_top(most: int) -> int:
    """A round top for an axis at or above `most`, with a whole half for the middle line:
    1, 2, 4, 6, 8, 10, 12, 16, 20, 30, 40, 60, 80, 100, 120, ..."""
    scale = 1
    while True:
        for mantissa in (1, 1.2, 1.6, 2, 3, 4, 6, 8):
            top = round(mantissa * scale, 6)
            if top >= most and top == int(top) and (top == 1 or top % 2 == 0):
                return int(top)
        scale *= 10


def _column_chart(points: Sequence[tuple[str, int]], caption: str, line: bool = False) -> str:
    """Columns (or a line) over days, with a light grid, a y scale and date labels."""
    width, height, left, bottom, top_pad = 760, 220, 36, 34, 10
    plot_w, plot_h = width - left - 8, height - bottom - top_pad
    most = _scale_top(max((v for _, v in points), default=0))
    n = max(len(points), 1)
    step = plot_w / n
    parts = [
        f'<svg viewBox="0 0 {width} {height}" role="img" aria-label="{_e(caption)}">',
        f"<title>{_e(caption)}</title>",
    ]
    for fraction in (0, 0.5, 1):
        y = top_pad + plot_h * (1 - fraction)
        parts.append(
            f'<line class="axis" x1="{left}" x2="{width - 8}" y1="{y:.1f}" y2="{y:.1f}"/>'
            f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">'
            f"{_e(round(most * fraction, 1) if most * fraction % 1 else int(most * fraction))}"
            "</text>"
        )
    every = max(1, math.ceil(n / 10))
    coords = []
    for i, (label, value) in enumerate(points):
        x = left + i * step
        h = plot_h * value / most
        y = top_pad + plot_h - h
        tip = f"<title>{_e(label)}: {value}</title>"
        if line:
            coords.append(f"{x + step / 2:.1f},{y:.1f}")
            parts.append(
                f'<circle class="dot" cx="{x + step / 2:.1f}" cy="{y:.1f}" r="3">{tip}</circle>'
            )
        else:
            parts.append(
                f'<rect class="bar" x="{x + step * 0.12:.1f}" y="{y:.1f}" width="{step * 0.76:.1f}"'
                f' height="{h:.1f}">{tip}</rect>'
            )
        if i % every == 0:
            parts.append(
                f'<text x="{x + step / 2:.1f}" y="{height - bottom + 16}" text-anchor="middle">'
                f"{_e(label[5:])}</text>"
            )
    if line and coords:
        parts.insert(2, f'<polyline class="line" points="{" ".join(coords)}"/>')
    parts.append("</svg>")
    return "".join(parts)


def _bars(items: Sequence[tuple[str, int]], caption: str) -> str:
    """Horizontal bars with their label and count: for categories."""
    if not items:
        return '<p class="muted">No tickets.</p>'
    row, label_w, width = 24, 150, 460
    most = max(v for _, v in items) or 1
    height = row * len(items) + 4
    parts = [
        f'<svg viewBox="0 0 {width} {height}" role="img" aria-label="{_e(caption)}">',
        f"<title>{_e(caption)}</title>",
    ]
    for i, (label, value) in enumerate(items):
        y = i * row + 2
        w = (width - label_w - 50) * value / most
        shown = label if len(label) <= 22 else label[:21] + "…"
        parts.append(
            f'<text class="label" x="{label_w - 8}" y="{y + 15}" text-anchor="end">{_e(shown)}'
            f"<title>{_e(label)}</title></text>"
            f'<rect class="bar" x="{label_w}" y="{y + 3}" width="{w:.1f}" height="{row - 8}">'
            f"<title>{_e(label)}: {value}</title></rect>"
            f'<text x="{label_w + w + 6:.1f}" y="{y + 15}">{value}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _html_table(header: Sequence[str], rows: Sequence[Sequence[Any]], numeric: set[int]) -> str:
    if not rows:
        return '<p class="muted">None.</p>'

    def cell(tag: str, i: int, value: Any) -> str:
        cls = ' class="n"' if i in numeric else ""
        return f"<{tag}{cls}>{value}</{tag}>"

    head = "".join(cell("th", i, _e(h)) for i, h in enumerate(header))
    body = "".join(
        "<tr>" + "".join(cell("td", i, v) for i, v in enumerate(row)) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def render_html(report: dict[str, Any]) -> str:
    """One HTML page with inline CSS and SVG: opens anywhere, with no network.

    Every value that came from mail or from people (subjects, addresses, queue names,
    topics) is escaped here; cells are passed already escaped to `_html_table`."""
    r = report["range"]
    total = report["tickets"]
    since, until = _span(r)
    fr, res = report["first_response"], report["resolution"]
    sla = report["sla"]
    cards = [
        ("tickets created", str(total)),
        ("first response, median", duration(fr["median_seconds"])),
        ("resolution, median", duration(res["median_seconds"])),
        ("first-response SLA breached", f"{sla['first_response']['breached']}"),
        ("resolution SLA breached", f"{sla['resolution']['breached']}"),
        ("open at the end", str(report["backlog"][-1]["open"] if report["backlog"] else 0)),
    ]
    body = [
        f'<h1>Support report</h1><p class="muted">Tickets created from {_e(since)} to'
        f" {_e(until)} UTC ({_days(r['days'])}). Days are UTC days. Generated"
        f" {_e(report['generated_at'][:16].replace('T', ' '))} UTC.</p>",
        '<div class="cards">'
        + "".join(
            f'<div class="card"><b>{_e(v)}</b><span class="muted">{_e(k)}</span></div>'
            for k, v in cards
        )
        + "</div>",
        "<h2>Volume per day</h2>",
        _column_chart(
            [(d["date"], d["tickets"]) for d in report["volume"]["per_day"]],
            "Tickets created per day",
        ),
        "<h2>Volume per ISO week</h2>",
        _html_table(
            ["Week", "Starts", "Days in range", "Tickets"],
            [
                (_e(w["week"]), _e(w["start"]), w["days_in_range"], w["tickets"])
                for w in report["volume"]["per_week"]
            ],
            {2, 3},
        ),
        '<h2>Backlog</h2><p class="muted">Tickets open (created and not closed) at the end'
        " of each day.</p>",
        _column_chart(
            [(d["date"], d["open"]) for d in report["backlog"]], "Open tickets", line=True
        ),
        '<h2>Categories</h2><div class="grid">',
    ]
    for key, title, empty in (
        ("queue", "Queue", "(none)"),
        ("type", "Type", "(unclassified)"),
        ("priority", "Priority", ""),
        ("line", "Line", ""),
    ):
        items = [(_name(row[key], empty), row["tickets"]) for row in report[f"by_{key}"]]
        if key == "line":
            items = [(f"line {label}", value) for label, value in items]
        body.append(f"<div><h3>{_e(title)}</h3>{_bars(items, f'Tickets by {key}')}</div>")
    body.append("</div>")
    body += [
        '<h2>Response times</h2><p class="muted">Median and 90th percentile by the'
        " nearest-rank method, over the tickets answered (closed) so far.</p>",
        _html_table(
            ["", "Measured", "Median", "90th percentile"],
            [
                (
                    label,
                    report[k]["measured"],
                    _e(duration(report[k]["median_seconds"])),
                    _e(duration(report[k]["p90_seconds"])),
                )
                for k, label in (("first_response", "First response"), ("resolution", "Resolution"))
            ],
            {1, 2, 3},
        ),
        '<h2>SLA breaches</h2><p class="muted">Late, or still waiting past the due time;'
        " tickets without a target are not counted.</p>",
    ]
    rows = [
        (
            f"&nbsp;&nbsp;{_e(label)}" if sub else f"<b>{_e(label.capitalize())}</b>",
            target,
            f'<span class="warn">{late}</span>' if late else "0",
            waiting,
            share,
        )
        for label, sub, target, late, waiting, share in _sla_rows(sla)
    ]
    body.append(
        _html_table(["", "With target", "Breached", "Still waiting", "Share"], rows, {1, 2, 3, 4})
    )
    body += [
        '<div class="grid"><div><h2>Top senders</h2>',
        _html_table(
            ["Address", "Tickets"],
            [(_e(s["address"]), s["tickets"]) for s in report["top_senders"]],
            {1},
        ),
        "</div><div><h2>Top domains</h2>",
        _html_table(
            ["Domain", "Tickets"],
            [(_e(s["domain"]), s["tickets"]) for s in report["top_domains"]],
            {1},
        ),
        "</div></div>",
        '<h2>Most frequent problems</h2><p class="muted">Recurring words and phrases of'
        " subjects and first messages; examples are the latest tickets.</p>",
        _html_table(
            ["Topic", "Tickets", "Examples"],
            [
                (
                    f"<b>{_e(t['label'])}</b>"
                    + (
                        f'<br><span class="muted">{_e(", ".join(t["terms"]))}</span>'
                        if t["terms"]
                        else ""
                    ),
                    t["tickets"],
                    "<br>".join(f"#{e['number']} {_e(e['subject'])}" for e in t["examples"]),
                )
                for t in report["topics"]
            ],
            {1},
        ),
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>Support report {_e(since[:10])} to {_e(until[:10])}</title>"
        f"<style>{_CSS}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n"
    )
