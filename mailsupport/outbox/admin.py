"""The outbox for operators: list items, queue a failed one again (`mailsupport outbox`)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import defer
from sqlmodel import Session, col, func, select

from mailsupport.errors import NotFoundError, UsageError
from mailsupport.outbox.queue import STATUSES, unclaimed
from mailsupport.store.db import Store
from mailsupport.store.models import OutboxItem, Ticket
from mailsupport.store.queries import iso


def list_items(
    session: Session, status: str | None = None, limit: int | None = None, newest: bool = False
) -> list[tuple[OutboxItem, int | None]]:
    """Items with their ticket's number, oldest first (the order they are sent in). With
    `newest`, the limit keeps the most recent items (still listed oldest first)."""
    if status is not None and status not in STATUSES:
        raise UsageError(f"unknown outbox status {status!r}: use one of {', '.join(STATUSES)}")
    order = col(OutboxItem.id).desc() if newest else col(OutboxItem.id)
    query = (
        select(OutboxItem, Ticket.number)
        .join(Ticket, col(Ticket.id) == col(OutboxItem.ticket_id))
        .order_by(order)
        .options(defer(OutboxItem.data))  # type: ignore[arg-type]  # the bytes are not listed
    )
    if status is not None:
        query = query.where(OutboxItem.status == status)
    if limit is not None:
        query = query.limit(limit)
    rows = [(item, number) for item, number in session.exec(query).all()]
    return rows[::-1] if newest else rows


def item_dict(item: OutboxItem, ticket_number: int | None) -> dict[str, Any]:
    """An item for `outbox list --json`; the message bytes are left out."""
    return {
        "id": item.id,
        "ticket": ticket_number,
        "message_id": item.message_id,
        "kind": item.kind,
        "recipients": list(item.recipients),
        "recipient_status": dict(item.recipient_status),
        "status": item.status,
        "attempts": item.attempts,
        "next_attempt_at": iso(item.next_attempt_at) if item.status == "queued" else None,
        "last_error": item.last_error,
        "created_at": iso(item.created_at),
        "sent_at": iso(item.sent_at),
    }


def retry(session: Session, item_id: int, now: datetime) -> OutboxItem:
    """Queue a failed (or waiting) item again, due now, with a fresh SMTP_MAX_AGE.

    Recipients that already got the message do not get it again; those that refused it are
    tried again. A claim by a running sender is respected: it records its own result.
    """
    item = session.get(OutboxItem, item_id, with_for_update=True)
    if item is None:
        raise NotFoundError(f"no outbox item {item_id}")
    if item.status == "sent" and all(v == "sent" for v in item.recipient_status.values()):
        raise UsageError(f"outbox item {item_id} was sent to every recipient already")
    item.recipient_status = {r: v for r, v in item.recipient_status.items() if v == "sent"}
    item.status = "queued"
    item.next_attempt_at = now
    item.queued_at = now
    session.add(item)
    session.flush()
    return item


def latest(
    store: Store, status: str | None, limit: int
) -> tuple[list[tuple[OutboxItem, int | None]], bool]:
    """The latest `limit` items (with `status`), oldest first, and whether there were more."""
    with store.read() as session:
        # One more than asked, to tell whether the list was cut short.
        rows = list_items(session, status, limit + 1, newest=True)
    return rows[-limit:], len(rows) > limit


def retry_item(store: Store, item_id: int, now: datetime) -> tuple[OutboxItem, int | None]:
    """retry() in a transaction of its own; the item and its ticket's number."""
    with store.write() as session:
        item = retry(session, item_id, now)
        ticket = session.get(Ticket, item.ticket_id)
        return item, ticket.number if ticket is not None else None


def make_due(store: Store, now: datetime) -> int:
    """Make queued items that wait for a later retry due at `now`; returns how many.

    Only the next attempt moves: attempts, and SMTP_MAX_AGE counted from queued_at, stay.
    A row claimed by a running sender keeps its claim; the sender records its own result.
    """
    with store.write() as session:
        result = session.execute(
            sa.update(OutboxItem)
            .where(col(OutboxItem.status) == "queued", col(OutboxItem.next_attempt_at) > now)
            .values(next_attempt_at=now)
            .execution_options(synchronize_session=False)
        )
        return int(result.rowcount)  # type: ignore[attr-defined]


def count_due(store: Store, now: datetime) -> int:
    """Queued items due at `now`."""
    with store.read() as session:
        query = select(func.count()).where(
            col(OutboxItem.status) == "queued", col(OutboxItem.next_attempt_at) <= now
        )
        return int(session.exec(query).one())


def waiting(store: Store, now: datetime) -> tuple[int, datetime | None]:
    """Queued items waiting for a later retry, and when the first of them is due."""
    with store.read() as session:
        count, first = session.exec(
            select(func.count(), func.min(OutboxItem.next_attempt_at)).where(
                col(OutboxItem.status) == "queued", col(OutboxItem.next_attempt_at) > now
            )
        ).one()
    return int(count), first


def withdraw(session: Session, ticket_id: int, reason: str, now: datetime) -> int:
    """Take the ticket's queued mail out of delivery (as failed, with `reason`), in the
    caller's transaction; returns how many. An item a running sender holds is left to it:
    it records its own result. `outbox retry` can still send a withdrawn item."""
    result = session.execute(
        sa.update(OutboxItem)
        .where(
            col(OutboxItem.ticket_id) == ticket_id,
            col(OutboxItem.status) == "queued",
            unclaimed(OutboxItem, now),
        )
        .values(status="failed", last_error=reason)
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]
