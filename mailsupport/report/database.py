"""Reads what the report needs from the database: the report's only adapter.

`load_tickets` runs a handful of set-based queries (no query per ticket), so a report over
thousands of tickets stays quick on SQLite and PostgreSQL alike; `read_tickets` does the same
in a read transaction of its own, for callers that hold a Store (the CLI).
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlmodel import Session, col

from mailsupport.report.facts import TicketFacts
from mailsupport.store.models import Message, Ticket, TicketEvent

if TYPE_CHECKING:
    from mailsupport.store.db import Store

__all__ = ["load_tickets", "read_tickets"]

# Our automatic mail (acknowledgements, closing notices) is not a response. Agents' replies
# say who wrote them; mail we sent from elsewhere and imported from a Sent folder has raw
# bytes, which mail composed here never has.
AGENT_REPLY = "reply by %"


def read_tickets(store: Store, since: datetime, until: datetime) -> list[TicketFacts]:
    """`load_tickets` in a read transaction of its own."""
    with store.read() as session:
        return load_tickets(session, since, until)


def load_tickets(session: Session, since: datetime, until: datetime) -> list[TicketFacts]:
    """The tickets a report over [since, until) needs, as plain facts.

    That is the tickets created in the range, with the text of their first incoming
    message, and older tickets that were not closed for the whole range (they count in the
    backlog). Merged tickets are left out: their messages live on in the ticket they joined;
    so are spam tickets.
    """
    # Closed before the range and still closed: it cannot be open on any day of it.
    in_play = sa.and_(
        col(Ticket.merged_into_id).is_(None),
        col(Ticket.status) != "spam",
        col(Ticket.created_at) < until,
        sa.or_(
            col(Ticket.created_at) >= since,
            col(Ticket.status) != "closed",
            col(Ticket.closed_at).is_(None),
            col(Ticket.closed_at) >= since,
        ),
    )
    created_in = sa.and_(
        col(Ticket.merged_into_id).is_(None),
        col(Ticket.status) != "spam",
        col(Ticket.created_at) >= since,
        col(Ticket.created_at) < until,
    )
    # Columns, not model objects: a year of a big desk is hundreds of thousands of tickets,
    # and building an ORM object for each costs more than the query.
    tickets = session.execute(sa.select(*_TICKET_COLUMNS).where(in_play)).all()
    texts = _first_texts(session, created_in)
    replies = _first_replies(session, created_in)
    changes = _status_changes(session, in_play)

    facts = []
    for t in tickets:
        assert t.id is not None
        facts.append(
            TicketFacts(
                number=t.number if t.number is not None else t.id,
                created_at=t.created_at,
                subject=t.subject,
                status=t.status,
                priority=t.priority,
                requester=t.requester,
                queue=t.queue or "",
                type=t.type or "",
                line=t.line or 1,
                closed_at=t.closed_at,
                # Kept by `reply` since schema 0007; older tickets and replies imported from
                # a Sent folder have only the thread to tell.
                first_response_at=t.first_response_at or replies.get(t.id),
                first_response_due=t.first_response_due,
                resolution_due=t.resolution_due,
                text=texts.get(t.id, ""),
                status_changes=tuple(changes.get(t.id, ())),
                automatic=t.automatic or "",
            )
        )
    return facts


_TICKET_COLUMNS = tuple(
    col(getattr(Ticket, name))
    for name in (
        "id", "number", "created_at", "subject", "status", "priority", "requester", "queue",
        "type", "line", "closed_at", "first_response_at", "first_response_due",
        "resolution_due", "automatic",
    )
)  # fmt: skip


def _first_texts(session: Session, created_in: Any) -> dict[int, str]:
    """Ticket id -> text of its first incoming message (for the tickets created_in)."""
    ranked = (
        sa.select(
            col(Message.ticket_id).label("ticket_id"),
            col(Message.text).label("text"),
            sa.func.row_number()
            .over(
                partition_by=col(Message.ticket_id),
                order_by=(col(Message.received_at), col(Message.id)),
            )
            .label("rank"),
        )
        .join(Ticket, col(Ticket.id) == col(Message.ticket_id))
        .where(created_in, col(Message.direction) == "in")
        .subquery()
    )
    rows = session.execute(
        sa.select(ranked.c.ticket_id, ranked.c.text).where(ranked.c.rank == 1)
    ).all()
    return {ticket_id: text or "" for ticket_id, text in rows}


def _first_replies(session: Session, created_in: Any) -> dict[int, datetime]:
    """Ticket id -> when a person on our side first answered (for the tickets created_in)."""
    rows = session.execute(
        sa.select(col(Message.ticket_id), sa.func.min(col(Message.received_at)))
        .join(Ticket, col(Ticket.id) == col(Message.ticket_id))
        .where(
            created_in,
            col(Message.direction) == "out",
            sa.or_(
                col(Message.thread_reason).like(AGENT_REPLY),
                col(Message.raw_id).is_not(None),
            ),
        )
        .group_by(col(Message.ticket_id))
    ).all()
    return {ticket_id: first for ticket_id, first in rows if first is not None}


def _status_changes(session: Session, in_play: Any) -> dict[int, list[tuple[datetime, bool]]]:
    """Ticket id -> [(when, closed?)] from its history: closings and reopenings, in order."""
    rows = session.execute(
        sa.select(
            col(TicketEvent.ticket_id), col(TicketEvent.at), TicketEvent.action, TicketEvent.detail
        )
        .join(Ticket, col(Ticket.id) == col(TicketEvent.ticket_id))
        .where(in_play, col(TicketEvent.action).in_(("status", "reopened")))
        .order_by(col(TicketEvent.at), col(TicketEvent.id))
    ).all()
    changes: dict[int, list[tuple[datetime, bool]]] = defaultdict(list)
    for ticket_id, at, action, detail in rows:
        if action == "reopened":  # the customer wrote to a closed ticket
            changes[ticket_id].append((at, False))
        else:  # "open -> closed", "closed -> open", ...
            changes[ticket_id].append((at, detail.rpartition("->")[2].strip() == "closed"))
    return changes
