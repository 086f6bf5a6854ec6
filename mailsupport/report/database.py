"""Reads what the report needs from the database: the report's only adapter.

`load_tickets` runs two queries (none per ticket) in plain SQL through a `Reader`
(store/reader.py): on the driver itself for the `report` command, so that a year of a big
desk (hundreds of thousands of rows) pays neither SQLAlchemy's import nor its per-row
processing. Each ticket's topic terms come stored with it (intake works them out); only
tickets without them have their first message's text read. `load_words` reads those words
alone, for the topics found in a second process (report/topicsworker.py). `read_tickets`
does what `load_tickets` does for callers that hold a Store.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from typing import TYPE_CHECKING

from mailsupport.report.facts import TicketFacts
from mailsupport.store import AGENT_ANSWERS
from mailsupport.store.reader import Reader, stored_time
from mailsupport.topicterms import VERSION

if TYPE_CHECKING:
    from mailsupport.store.db import Store

__all__ = ["load_tickets", "load_words", "read_tickets"]

# Closed before the range and still closed: it cannot be open on any day of it. Merged
# tickets live on in the ticket they joined; spam is no request.
_IN_PLAY = (
    "t.merged_into_id IS NULL AND t.status <> 'spam' AND t.created_at < :until AND "
    "(t.created_at >= :since OR t.status <> 'closed' OR t.closed_at IS NULL "
    "OR t.closed_at >= :since)"
)
# Of the tickets created in the range: those whose terms were not stored (or by another
# version of the code) get the text of their first incoming message, to work them out
# from; those without a stored first response (kept by `reply` since schema 0007) get the
# first of our people's answers in the thread (older tickets, replies imported from a Sent
# folder), which an index of those answers finds (store.AGENT_ANSWERS).
_FIRST_TEXT = (
    f"CASE WHEN t.created_at >= :since AND (t.topic_terms IS NULL OR "
    f"t.topic_terms NOT LIKE '{VERSION} %') THEN COALESCE((SELECT m.text FROM messages m "
    "WHERE m.ticket_id = t.id AND m.direction = 'in' ORDER BY m.received_at, m.id LIMIT 1), "
    "'') END"
)
_FIRST_ANSWER = (
    "CASE WHEN t.created_at >= :since AND t.first_response_at IS NULL THEN (SELECT "
    f"MIN(m.received_at) FROM messages m WHERE m.ticket_id = t.id AND {AGENT_ANSWERS}) END"
)
_CURRENT_TERMS = f"CASE WHEN t.topic_terms LIKE '{VERSION} %' THEN t.topic_terms END"
_WORDS = f"{_CURRENT_TERMS}, {_FIRST_TEXT}"
# Every ticket of the store is looked at (older ones may be open), so SQLite is told to
# read the table through rather than through the index of creation times.
_TICKETS = (
    "SELECT t.id, t.number, t.created_at, t.subject, t.status, t.priority, t.requester, "
    "t.queue, t.type, t.line, t.closed_at, COALESCE(t.first_response_at, "
    f"{_FIRST_ANSWER}), t.first_response_due, t.resolution_due, t.automatic, "
    f"{{words}} FROM tickets t {{not_indexed}} WHERE {_IN_PLAY}"
)
_CREATED_IN = (
    "t.merged_into_id IS NULL AND t.status <> 'spam' AND t.created_at >= :since "
    "AND t.created_at < :until"
)
# What the topics need alone: the words of the tickets of the range that are work.
_TICKET_WORDS = (
    f"SELECT t.id, t.number, t.created_at, t.subject, {_WORDS} FROM tickets t "
    f"{{not_indexed}} WHERE {_CREATED_IN} AND t.automatic = ''"
)
# Closings and reopenings, of every ticket: fewer rows to read than the join with the
# tickets in play would probe for; the tickets not in play are left out here.
_STATUS_CHANGES = (
    "SELECT e.ticket_id, e.at, e.action, e.detail FROM ticket_events e "
    "WHERE e.action IN ('status', 'reopened') ORDER BY e.at, e.id"
)


def read_tickets(store: Store, since: datetime, until: datetime) -> list[TicketFacts]:
    """`load_tickets` in a read transaction of its own, on the Store's connection."""
    with store.engine.connect() as connection, connection.begin():
        sqlite = connection.dialect.name == "sqlite"
        return load_tickets(Reader(connection, sqlite=sqlite, dbapi=False), since, until)


def load_tickets(
    reader: Reader, since: datetime, until: datetime, *, words: bool = True
) -> list[TicketFacts]:
    """The tickets a report over [since, until) needs, as plain facts.

    That is the tickets created in the range, with their topic terms (or the text of their
    first incoming message), and older tickets that were not closed for the whole range
    (they count in the backlog). Merged tickets are left out: their messages live on in the
    ticket they joined; so are spam tickets. Without `words`, the facts have no terms and
    no text (for a caller that has the topics: `load_words`)."""
    bounds = {"since": reader.time_param(since), "until": reader.time_param(until)}
    not_indexed = "NOT INDEXED" if reader.sqlite else ""
    sql = _TICKETS.format(words=_WORDS if words else "NULL, NULL", not_indexed=not_indexed)
    tickets = reader.rows(sql, bounds)
    in_play = {row[0] for row in tickets}
    changes: dict[int, list[tuple[datetime, bool]]] = defaultdict(list)
    for ticket_id, at, action, detail in reader.rows(_STATUS_CHANGES):
        if ticket_id not in in_play:
            continue
        if action == "reopened":  # the customer wrote to a closed ticket
            changes[ticket_id].append((stored_time(at), False))
        else:  # "open -> closed", "closed -> open", ...
            closed = detail.rpartition("->")[2].strip() == "closed"
            changes[ticket_id].append((stored_time(at), closed))

    time = _sqlite_time if reader.sqlite else stored_time
    nothing = ()
    return [
        TicketFacts(
            number if number is not None else ticket_id,
            time(created),
            subject,
            status,
            priority,
            requester,
            queue or "",
            kind or "",
            line or 1,
            closed_at and time(closed_at),
            first_response and time(first_response),
            first_response_due and time(first_response_due),
            resolution_due and time(resolution_due),
            text or "",
            tuple(changes.get(ticket_id, nothing)),
            automatic or "",
            _stored(terms, text),
        )
        for (
            ticket_id, number, created, subject, status, priority, requester, queue, kind,
            line, closed_at, first_response, first_response_due, resolution_due, automatic,
            terms, text,
        ) in tickets
    ]  # fmt: skip


def load_words(reader: Reader, since: datetime, until: datetime) -> list[TicketFacts]:
    """What `find_topics` needs of the tickets of the range that are work (created in it,
    not merged, not spam, not opened by automatic mail): numbers, subjects, terms or text."""
    bounds = {"since": reader.time_param(since), "until": reader.time_param(until)}
    # A year of a big desk is much of the table: read through, rather than by the index of
    # creation times, one lookup a ticket (on SQLite; PostgreSQL's planner knows).
    sql = _TICKET_WORDS.format(not_indexed="NOT INDEXED" if reader.sqlite else "")
    time = _sqlite_time if reader.sqlite else stored_time
    return [
        TicketFacts(
            number if number is not None else ticket_id,
            time(created),
            subject,
            text=text or "",
            terms=_stored(terms, text),
        )
        for ticket_id, number, created, subject, terms, text in reader.rows(sql, bounds)
    ]


def _stored(terms: str | None, text: str | None) -> str | None:
    """The keys and forms of stored terms (their first line only says whose they are), when
    the query took them (it read the text instead of terms it could not use)."""
    return terms.partition("\n")[2] if terms is not None and text is None else None


def _sqlite_time(value: str) -> datetime:
    """A time as SQLite keeps it (naive UTC text): a fifth of `stored_time`'s cost, which
    counts over hundreds of thousands of tickets."""
    return datetime.fromisoformat(value + "+00:00")
