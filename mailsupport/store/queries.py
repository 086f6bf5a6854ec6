"""Read-side queries: tickets and messages as plain dicts for the CLI, JSON and export."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, col, select

from mailsupport.store.models import (
    Attachment,
    Message,
    OutboxItem,
    Participant,
    QuarantineEntry,
    RawMessage,
    Ticket,
    TicketEvent,
)


def iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def format_address(entry: dict[str, str]) -> str:
    name, address = entry.get("name", ""), entry.get("address", "")
    return f"{name} <{address}>" if name else address


def ticket_dict(ticket: Ticket) -> dict[str, Any]:
    return {
        "id": ticket.id,
        "number": ticket.number,
        "subject": ticket.subject,
        "status": ticket.status,
        "priority": ticket.priority,
        "requester": ticket.requester,
        "requester_name": ticket.requester_name,
        "created_at": iso(ticket.created_at),
        "updated_at": iso(ticket.updated_at),
        "closed_at": iso(ticket.closed_at),
        "merged_into": ticket.merged_into_id,
    }


def message_dict(
    message: Message, attachments: Sequence[Attachment], delivery: OutboxItem | None = None
) -> dict[str, Any]:
    sender = format_address({"name": message.from_name, "address": message.from_address})
    return {
        "message_id": message.message_id,
        "direction": message.direction,
        "from": sender,
        "to": [format_address(a) for a in message.to],
        "cc": [format_address(a) for a in message.cc],
        "subject": message.subject,
        "date": iso(message.date or message.received_at),
        "received_at": iso(message.received_at),
        "in_reply_to": message.in_reply_to.split(),
        "references": message.refs.split(),
        "text": message.text,
        "thread_reason": message.thread_reason,
        # Incoming mail: whether it was acknowledged, or why not ("" when never considered).
        "ack": message.ack_decision,
        # Our own mail sent through the outbox: how its delivery went (None otherwise).
        "delivery": None if delivery is None else _delivery(delivery),
        "attachments": [
            {
                "filename": a.filename,
                "content_type": a.content_type,
                "size": a.size,
                "sha256": a.sha256,
                "inline": a.inline,
            }
            for a in attachments
        ],
    }


def _delivery(item: OutboxItem) -> dict[str, Any]:
    return {
        "outbox_id": item.id,
        "status": item.status,
        "attempts": item.attempts,
        "last_error": item.last_error,
        "sent_at": iso(item.sent_at),
    }


def list_tickets(
    session: Session, status: str | None = None, limit: int | None = None, offset: int = 0
) -> list[tuple[Ticket, int]]:
    """Tickets, most recently updated first, each with its message count."""
    counts = (
        select(Message.ticket_id, sa.func.count().label("n")).group_by(Message.ticket_id).subquery()
    )
    query = (
        select(Ticket, sa.func.coalesce(counts.c.n, 0))
        .outerjoin(counts, counts.c.ticket_id == Ticket.id)
        .where(col(Ticket.merged_into_id).is_(None))
        .order_by(col(Ticket.updated_at).desc(), col(Ticket.id).desc())
        .offset(offset)
    )
    if status:
        query = query.where(Ticket.status == status)
    if limit is not None:
        query = query.limit(limit)
    return [(ticket, int(n)) for ticket, n in session.exec(query).all()]


def messages_of(session: Session, ticket_ids: Sequence[int]) -> dict[int, list[dict[str, Any]]]:
    """Each ticket's messages in conversation order, as dicts with their attachments."""
    if not ticket_ids:
        return {}
    messages = session.exec(
        select(Message)
        .where(col(Message.ticket_id).in_(ticket_ids))
        .order_by(col(Message.received_at), col(Message.id))
    ).all()
    attachments: dict[int, list[Attachment]] = defaultdict(list)
    if messages:
        for part in session.exec(
            select(Attachment)
            .where(col(Attachment.message_pk).in_([m.id for m in messages]))
            .order_by(col(Attachment.id))
        ).all():
            attachments[part.message_pk].append(part)
    ours = [m.message_id for m in messages if m.direction == "out"]
    deliveries = {
        item.message_id: item
        for item in (
            session.exec(select(OutboxItem).where(col(OutboxItem.message_id).in_(ours))).all()
            if ours
            else []
        )
    }
    result: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for message in messages:
        result[message.ticket_id].append(
            message_dict(
                message,
                attachments[message.id],  # type: ignore[index]
                deliveries.get(message.message_id),
            )
        )
    return result


def ticket_detail(session: Session, ticket: Ticket) -> dict[str, Any]:
    """Everything `show` displays about one ticket."""
    assert ticket.id is not None
    detail = ticket_dict(ticket)
    detail["messages"] = messages_of(session, [ticket.id]).get(ticket.id, [])
    detail["participants"] = [
        {"address": p.address, "name": p.name, "role": p.role}
        for p in session.exec(
            select(Participant)
            .where(Participant.ticket_id == ticket.id)
            .order_by(col(Participant.first_seen), col(Participant.address))
        ).all()
    ]
    detail["history"] = [
        {"at": iso(e.at), "actor": e.actor, "action": e.action, "detail": e.detail}
        for e in session.exec(
            select(TicketEvent)
            .where(TicketEvent.ticket_id == ticket.id)
            .order_by(col(TicketEvent.at), col(TicketEvent.id))
        ).all()
    ]
    return detail


def export_tickets(session: Session, page: int = 500) -> Iterator[dict[str, Any]]:
    """Every ticket with its messages, oldest first, a page of tickets per query."""
    last_id = 0
    while True:
        tickets = session.exec(
            select(Ticket).where(col(Ticket.id) > last_id).order_by(col(Ticket.id)).limit(page)
        ).all()
        if not tickets:
            return
        messages = messages_of(session, [t.id for t in tickets])  # type: ignore[misc]
        for ticket in tickets:
            line = ticket_dict(ticket)
            line["messages"] = messages.get(ticket.id, [])  # type: ignore[arg-type]
            yield line
        last_id = tickets[-1].id  # type: ignore[assignment]


def quarantine_entries(session: Session) -> list[tuple[QuarantineEntry, int]]:
    """Quarantined messages, oldest first, with their size in bytes."""
    rows = session.exec(
        select(QuarantineEntry, RawMessage.size)
        .join(RawMessage, col(RawMessage.id) == QuarantineEntry.raw_id)
        .order_by(col(QuarantineEntry.id))
    ).all()
    return [(entry, int(size)) for entry, size in rows]


def quarantine_dict(entry: QuarantineEntry, size: int) -> dict[str, Any]:
    return {
        "id": entry.id,
        "origin": entry.origin,
        "error": entry.error,
        "size": size,
        "created_at": iso(entry.created_at),
        "retry_count": entry.retry_count,
        "last_retry_at": iso(entry.last_retry_at),
    }
