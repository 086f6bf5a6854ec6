"""Purging old spam tickets: the tickets and their rows go, the mail stays in the quarantine.

A spam ticket's incoming messages keep their raw bytes as quarantine entries that say which
ticket they came from, so nothing a sender wrote is lost: `quarantine show` reads it and
`quarantine retry` files it again. The caller owns the transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlmodel import Session, col, select

from mailsupport.store.db import Store
from mailsupport.store.models import (
    Attachment,
    Message,
    MessageRef,
    OutboxItem,
    Participant,
    QuarantineEntry,
    Ticket,
    TicketEvent,
    TicketTag,
)


@dataclass(frozen=True, slots=True)
class Purged:
    numbers: tuple[int, ...]  # the spam tickets purged (not those merged into them)
    kept: int  # messages whose raw bytes went to the quarantine


def purge_old_spam(store: Store, days: int, now: datetime) -> Purged:
    """purge_spam() in a transaction of its own, for spam not updated for `days` days
    (MAILSUPPORT_SPAM_DAYS): what `spam --purge` and the daemon do."""
    with store.write() as session:
        return purge_spam(session, now - timedelta(days=days), now)


def purge_spam(session: Session, before: datetime, now: datetime) -> Purged:
    """Delete the spam tickets last updated before `before`, with the tickets merged into
    them; their incoming mail goes to the quarantine first."""
    spam = session.exec(
        select(Ticket.id, Ticket.number).where(
            Ticket.status == "spam", col(Ticket.updated_at) < before
        )
    ).all()
    if not spam:
        return Purged((), 0)
    numbers = {ticket_id: number or ticket_id for ticket_id, number in spam if ticket_id}
    ids = set(numbers)
    while True:  # and whatever was merged into them, however deep
        merged = set(
            session.exec(select(Ticket.id).where(col(Ticket.merged_into_id).in_(ids))).all()
        )
        if merged <= ids:
            break
        ids |= {i for i in merged if i is not None}
    kept = _keep_mail(session, ids, numbers, now)
    messages = select(Message.id).where(col(Message.ticket_id).in_(ids))
    session.execute(sa.delete(Attachment).where(col(Attachment.message_pk).in_(messages)))
    for model in (MessageRef, Message, Participant, TicketTag, TicketEvent, OutboxItem):
        session.execute(sa.delete(model).where(col(model.ticket_id).in_(ids)))  # type: ignore[attr-defined]
    others = sa.update(Ticket).where(col(Ticket.follows_id).in_(ids)).values(follows_id=None)
    session.execute(others)
    session.execute(sa.update(Ticket).where(col(Ticket.id).in_(ids)).values(merged_into_id=None))
    session.execute(sa.delete(Ticket).where(col(Ticket.id).in_(ids)))
    return Purged(tuple(sorted(numbers.values())), kept)


def _keep_mail(session: Session, ids: set[int], numbers: dict[int, int], now: datetime) -> int:
    """A quarantine entry for each stored message of these tickets that has raw bytes."""
    rows = session.exec(
        select(Message.raw_id, Message.ticket_id).where(
            col(Message.ticket_id).in_(ids), col(Message.raw_id).is_not(None)
        )
    ).all()
    raw_ids = [raw_id for raw_id, _ in rows]
    queued = set(
        session.exec(
            select(QuarantineEntry.raw_id).where(col(QuarantineEntry.raw_id).in_(raw_ids))
        ).all()
    )
    for raw_id, ticket_id in rows:
        if raw_id is None or raw_id in queued:
            continue
        where = f"#{numbers[ticket_id]}" if ticket_id in numbers else "a ticket merged into it"
        error = f"spam, purged from ticket {where} after MAILSUPPORT_SPAM_DAYS"
        session.add(QuarantineEntry(raw_id=raw_id, origin="spam", error=error, created_at=now))
        queued.add(raw_id)
    session.flush()
    return len(rows)
