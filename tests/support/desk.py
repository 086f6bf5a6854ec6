"""A desk's store in tests: feeding it mail and reading back what it made of it."""

from __future__ import annotations

import email
import email.policy
from datetime import UTC, datetime
from email.message import EmailMessage

from sqlmodel import select

from mailsupport.config import Settings
from mailsupport.pipeline import Incoming, Pipeline
from mailsupport.store.db import Store
from mailsupport.store.models import Message, Ticket


def take(settings: Settings, store: Store, raw: bytes, when: datetime | None = None) -> int:
    """Feed one message through the pipeline (at `when`, default now); its ticket's number."""
    now = when or datetime.now(UTC)
    outcome = Pipeline(settings, store).ingest(Incoming(raw, "test", now), now)
    assert outcome.ticket_number is not None
    return outcome.ticket_number


def ticket_of(store: Store, message_id: str) -> Ticket:
    """The ticket a stored message belongs to."""
    with store.read() as session:
        row = session.exec(select(Message).where(Message.message_id == message_id)).one()
        return session.exec(select(Ticket).where(Ticket.id == row.ticket_id)).one()


def parsed(data: bytes) -> EmailMessage:
    """Mail as sent (bytes) read back with the standard library."""
    message = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message
