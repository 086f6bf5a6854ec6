"""Outgoing mail for delivery tests: a ticket, and replies on it queued straight into the
outbox at a fixed time."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from email.message import EmailMessage

from mailsupport.mail import Address
from mailsupport.outbox import queue as outbox
from mailsupport.store.db import Store
from mailsupport.store.models import OutboxItem
from mailsupport.store.tickets import create_ticket

T0 = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
ANNA = "anna@customer.example.org"
SUPPORT = "support@example.com"


def at(moment: datetime) -> Callable[[], datetime]:
    """A clock stopped at `moment`."""
    return lambda: moment


def new_ticket(store: Store) -> int:
    """A ticket from Anna to hang mail on: its id."""
    with store.write() as session:
        ticket = create_ticket(session, "Cannot log in", Address("Anna", ANNA), T0)
        assert ticket.id is not None
        return ticket.id


def plain_message(
    message_id: str, to: str = ANNA, subject: str = "Re: Cannot log in"
) -> EmailMessage:
    message = EmailMessage()
    message["From"] = f"Example Support <{SUPPORT}>"
    message["To"] = to
    message["Subject"] = subject
    message["Message-ID"] = f"<{message_id}>"
    message.set_content("We are on it.\n.\nA line with a lone dot above.\n")
    return message


def queue(
    store: Store, ticket_id: int, message_id: str, recipients: list[str] | None = None,
    when: datetime = T0, kind: str = "reply",
) -> int:  # fmt: skip
    """Queue a reply (or mail of `kind`) to ANNA (or `recipients`) on the ticket; the outbox
    item's id."""
    recipients = recipients or [ANNA]
    with store.write() as session:
        return outbox.queue(
            session, ticket_id=ticket_id, kind=kind, message=plain_message(message_id),
            message_id=message_id, mail_from=SUPPORT, recipients=recipients, now=when,
        )  # fmt: skip


def get(store: Store, item_id: int) -> OutboxItem:
    """The outbox item as stored now."""
    with store.read() as session:
        item = session.get(OutboxItem, item_id)
        assert item is not None
        return item
