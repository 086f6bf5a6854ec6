"""Queueing our mail in the outbox, in the caller's transaction (see the package's notes).

The transactional half of the outbox: acknowledgements, replies and notices are queued here
by whatever changes the ticket, in the same transaction. Delivery (outbox/delivery.py) reads
the rows later; nothing here sends.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable
from datetime import datetime
from email.message import EmailMessage
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, col, select

from mailsupport.store.db import Store
from mailsupport.store.models import OutboxItem
from mailsupport.store.tickets import insert_row

STATUSES = ("queued", "sent", "failed")


# Mail to agents (notify.py) keeps no order with a ticket's other mail: a notification neither
# waits behind a customer's mail that is being retried nor holds one back.
NOTIFICATION, DIGEST = "notification", "digest"
UNORDERED_KINDS = (NOTIFICATION, DIGEST)


def queue(
    session: Session,
    *,
    ticket_id: int,
    kind: str,
    message: EmailMessage | bytes,
    message_id: str,
    mail_from: str,
    recipients: Iterable[str],
    now: datetime,
    mailbox: str = "",
) -> int:
    """Queue `message` for delivery to the envelope `recipients`, due at once. Returns the
    outbox item's id.

    `mailbox` names the mailbox whose SMTP server sends it ("" = the default one).
    Writes in the caller's transaction and does not commit. The bytes are fixed here: a
    Bcc header is left out (its recipients belong in the envelope only), lines end in CRLF.
    A message given as bytes (compose's `Composed.data`) is queued exactly as it is.
    """
    message_id = message_id.strip().removeprefix("<").removesuffix(">")
    if _message_id_of(message) != message_id:
        raise ValueError(f"the message's Message-ID header is not <{message_id}>")
    envelope = list(dict.fromkeys(r.strip() for r in recipients if r.strip()))
    if not envelope:
        raise ValueError("an outgoing message needs at least one recipient")
    values = {
        "ticket_id": ticket_id,
        "message_id": message_id,
        "kind": kind,
        "mail_from": mail_from.strip(),
        "recipients": envelope,
        "data": message if isinstance(message, bytes) else _wire_bytes(message),
        "next_attempt_at": now,
        "mailbox": mailbox,
        "created_at": now,
        "queued_at": now,
    }
    return insert_row(session, OutboxItem, values)


def _message_id_of(message: EmailMessage | bytes) -> str | None:
    if isinstance(message, bytes):
        head = message.split(b"\r\n\r\n", 1)[0]
        found = re.search(rb"^Message-ID:\s*<([^>\s]+)>", head, re.IGNORECASE | re.MULTILINE)
        return found[1].decode("ascii", "replace") if found else None
    header = message.get("Message-ID")
    if header is None:
        return None
    return str(header).strip().removeprefix("<").removesuffix(">")


def _wire_bytes(message: EmailMessage) -> bytes:
    if "Bcc" in message:
        message = copy.deepcopy(message)
        del message["Bcc"]
    # The SMTP payload is CRLF-terminated; serializing so means what is stored is what is sent.
    return message.as_bytes(policy=message.policy.clone(linesep="\r\n"))


def load_data(store: Store, item_id: int) -> bytes:
    """One queued message's bytes, as they are sent. One at a time: a batch of large messages
    need not fit in memory."""
    with store.read() as session:
        data = session.exec(select(OutboxItem.data).where(OutboxItem.id == item_id)).one()
    return bytes(data)


def unclaimed(item: Any, at: datetime) -> Any:
    """The SQL condition that no sender holds `item` (OutboxItem, or an alias of it) at `at`:
    never claimed, or its claim's lease has run out."""
    return sa.or_(col(item.claimed_until).is_(None), col(item.claimed_until) < at)
