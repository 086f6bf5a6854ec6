"""Mail we write on a ticket: composed, queued in the outbox, and kept on the ticket, all in
the caller's transaction.

Acknowledgements, agents' replies and closing notices all end the same way: the composed
message is queued in the outbox (outbox/queue.py; delivery happens later, elsewhere), stored
on its ticket as an outgoing message (so `show` has it and its attachments), and its
Message-ID is indexed, so that the customer's answer threads into the ticket. One place for
that, used by acks.py and agent.py.
"""

from __future__ import annotations

import mimetypes
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlmodel import Session

from mailsupport.compose import (
    Composed,
    Kind,
    Sender,
    ThreadParent,
    compose,
    compose_notice,
)
from mailsupport.config import Settings
from mailsupport.errors import ConfigError, UsageError
from mailsupport.mail import Address
from mailsupport.mail import Attachment as MailPart
from mailsupport.mailboxes import Mailbox, Mailboxes, load_mailboxes
from mailsupport.outbox.queue import queue
from mailsupport.signing import load_or_create_secret, make_notice_id
from mailsupport.store.attachments import attachment_store
from mailsupport.store.models import Message, Ticket
from mailsupport.store.tickets import store_message
from mailsupport.templating import Templates, choose_language

# (file name, content type, bytes), as compose() takes attachments
FilePart = tuple[str, str, bytes]


def file_part(name: str, data: bytes) -> FilePart:
    content_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
    return name, content_type, data


def parent_of(message: Message) -> ThreadParent:
    """A stored message as the one being answered."""
    return ThreadParent(
        message_id=message.message_id,
        references=tuple(message.refs.split()),
        in_reply_to=tuple(message.in_reply_to.split()),
        subject=message.subject,
        from_name=message.from_name,
        from_address=message.from_address,
        date=message.date or message.received_at,
        text=message.text,
    )


@dataclass(frozen=True, slots=True)
class Prepared:
    """Mail of ours composed for a ticket, not yet queued or stored (Outgoing.compose_for)."""

    kind: Kind
    composed: Composed
    box: Mailbox
    address: str  # the From address
    to: tuple[Address, ...]
    cc: tuple[Address, ...]
    now: datetime
    thread_reason: str
    author: str
    attachments: tuple[FilePart, ...]


class Outgoing:
    """Holds what every outgoing message needs (templates, the Message-ID key), made once.

    Mail on a ticket comes from the ticket's mailbox (mailboxes.py): its address and display
    name, its language, its templates, its SMTP server; or from another of the desk's
    addresses when one is asked for (`reply --from`)."""

    def __init__(self, settings: Settings, mailboxes: Mailboxes | None = None) -> None:
        self.mailboxes = mailboxes or load_mailboxes(settings)
        # The default mailbox's: they know every address of the desk as ours.
        self.settings = self.mailboxes.default.settings
        self._templates: dict[str, Templates] = {}
        self._secret: bytes | None = None
        self.files = attachment_store(settings)

    @property
    def templates(self) -> Templates:
        return self.templates_of(self.settings)

    def templates_of(self, settings: Settings) -> Templates:
        key = str(settings.templates_path or "")
        if key not in self._templates:
            self._templates[key] = Templates(settings.templates_path)
        return self._templates[key]

    def mailbox_of(self, ticket: Ticket, address: str = "") -> tuple[Mailbox, str]:
        """The mailbox our mail on `ticket` comes from, and the address: the ticket's, or
        the mailbox of `address` when given (one of the desk's addresses or aliases)."""
        if not address:
            box = self.mailboxes.of_ticket(ticket.mailbox)
            return box, box.address
        box_of_address = self.mailboxes.for_address(address)
        if box_of_address is None:
            known = ", ".join(sorted(self.mailboxes.our_addresses))
            raise UsageError(f"{address} is not one of our addresses ({known})")
        return box_of_address, address.strip()

    def settings_of(self, ticket: Ticket) -> Settings:
        """The settings our mail on `ticket` is sent with (its mailbox's)."""
        return self.mailbox_of(ticket)[0].settings

    def key(self) -> bytes:
        if self._secret is None:
            configured = self.settings.secret.get_secret_value()
            self._secret = load_or_create_secret(self.settings.data_dir, configured)
        return self._secret

    def send(
        self,
        session: Session,
        kind: Kind,
        ticket: Ticket,
        **how: Any,
    ) -> tuple[Composed, int]:
        """Compose `kind`, queue it, and store it on `ticket`; returns it with its outbox
        item's id. Raises TemplateError or ComposeError before anything is written. `how`:
        compose_for()'s options."""
        return self.queue_composed(session, ticket, self.compose_for(kind, ticket, **how))

    def compose_for(
        self,
        kind: Kind,
        ticket: Ticket,
        *,
        to: Sequence[Address],
        cc: Sequence[Address] = (),
        parent: ThreadParent | None,
        now: datetime,
        text: str = "",
        author: str = "",
        attachments: Sequence[FilePart] = (),
        language_hint: str = "",
        language: str = "",
        thread_reason: str,
        articles: Sequence[tuple[str, str]] = (),
        from_address: str = "",
        title: str | None = None,
    ) -> Prepared:
        """`kind` composed for `ticket`, nothing written yet (queue_composed() does).
        Raises TemplateError or ComposeError. It comes from the ticket's mailbox, or from
        `from_address` (see `mailbox_of`). `title`: the ticket's subject as this mail
        repeats it (None: as it is)."""
        box, address = self.mailbox_of(ticket, from_address)
        s = box.settings
        if not address:
            raise ConfigError(
                "MAILSUPPORT_SUPPORT_ADDRESS is not set: name the address our mail comes from"
            )
        assert ticket.id is not None and ticket.number is not None
        composed = compose(
            kind,
            sender=Sender(s.support_name, address),
            to=to,
            cc=cc,
            ticket_number=ticket.number,
            ticket_subject=ticket.subject if title is None else title,
            parent=parent,
            language=language
            or choose_language(s.language, language_hint or (parent.text if parent else "")),
            templates=self.templates_of(s),
            secret=self.key(),
            now=now,
            text=text,
            agent_name=author,
            attachments=attachments,
            tag_format=s.ticket_tag,
            tag_pattern=s.tag_pattern,
            articles=articles,
        )
        return Prepared(
            kind,
            composed,
            box,
            address,
            tuple(to),
            tuple(cc),
            now,
            thread_reason,
            author,
            tuple(attachments),
        )

    def queue_composed(
        self, session: Session, ticket: Ticket, prepared: Prepared
    ) -> tuple[Composed, int]:
        """Queue what compose_for() made and store it on `ticket`; returns it with its
        outbox item's id."""
        composed, s, now = prepared.composed, prepared.box.settings, prepared.now
        assert ticket.id is not None
        people = (*prepared.to, *prepared.cc)
        item_id = queue(
            session,
            ticket_id=ticket.id,
            kind=prepared.kind,
            message=composed.data,
            message_id=composed.message_id,
            mail_from=prepared.address,
            recipients=[a.address for a in people if a.key not in s.our_addresses],
            now=now,
            mailbox=prepared.box.name,
        )
        values = {
            "ticket_id": ticket.id,
            "message_id": composed.message_id,
            "direction": "out",
            "in_reply_to": composed.in_reply_to or "",
            "refs": " ".join(composed.references),
            "from_address": prepared.address,
            "from_name": s.support_name,
            "to": [a.as_json() for a in prepared.to],
            "cc": [a.as_json() for a in prepared.cc],
            "subject": composed.subject,
            "date": now,
            "received_at": now,
            "text": composed.text,
            "html": composed.html,
            "thread_reason": prepared.thread_reason,
            "author": prepared.author,
            "created_at": now,
        }
        parts = [MailPart(*part) for part in prepared.attachments]
        # The customer's answer threads here by its In-Reply-To.
        store_message(session, values, parts, self.files, [composed.message_id])
        return composed, item_id

    def team_notice(
        self,
        session: Session,
        ticket: Ticket,
        *,
        to: str,
        subject: str,
        now: datetime,
        text: str,
        kind: str = "notice",
        reply_token_for: str = "",
    ) -> int:
        """Queue an internal notice about `ticket` to a team address or an agent; returns
        the outbox item's id. Not stored as a ticket message and not indexed: an answer to
        it must not land in the customer's ticket. With `reply_token_for` (an agent's
        address) its Message-ID carries the token that makes that agent's reply an answer
        on the ticket (signing.make_notice_id, agentmail.py)."""
        box, address = self.mailbox_of(ticket)
        s = box.settings
        assert ticket.id is not None and ticket.number is not None
        domain = address.rpartition("@")[2]
        composed = compose_notice(
            sender=Sender(s.support_name, address),
            to=to,
            subject=f"{s.format_tag(ticket.number)} {subject}: {ticket.subject}",
            text=text,
            secret=self.key(),
            now=now,
            message_id=make_notice_id(self.key(), domain, ticket.number, reply_token_for, now)
            if reply_token_for
            else "",
        )
        return queue(
            session,
            ticket_id=ticket.id,
            kind=kind,
            message=composed.data,
            message_id=composed.message_id,
            mail_from=address,
            recipients=[to],
            now=now,
            mailbox=box.name,
        )
