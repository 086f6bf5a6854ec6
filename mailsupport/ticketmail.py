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
from datetime import datetime

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
from mailsupport.errors import ConfigError
from mailsupport.mail import Address
from mailsupport.mail import Attachment as MailPart
from mailsupport.outbox.queue import queue
from mailsupport.signing import load_or_create_secret
from mailsupport.store.files import AttachmentStore
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


class Outgoing:
    """Holds what every outgoing message needs (templates, the Message-ID key), made once."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._templates: Templates | None = None
        self._secret: bytes | None = None
        self.files = AttachmentStore(settings.data_dir / "attachments")

    @property
    def templates(self) -> Templates:
        if self._templates is None:
            self._templates = Templates(self.settings.templates_path)
        return self._templates

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
    ) -> tuple[Composed, int]:
        """Compose `kind`, queue it, and store it on `ticket`; returns it with its outbox
        item's id. Raises TemplateError or ComposeError before anything is written."""
        s = self.settings
        if not s.support_address:
            raise ConfigError(
                "MAILSUPPORT_SUPPORT_ADDRESS is not set: name the address our mail comes from"
            )
        assert ticket.id is not None and ticket.number is not None
        composed = compose(
            kind,
            sender=Sender(s.support_name, s.support_address),
            to=to,
            cc=cc,
            ticket_number=ticket.number,
            ticket_subject=ticket.subject,
            parent=parent,
            language=language
            or choose_language(s.language, language_hint or (parent.text if parent else "")),
            templates=self.templates,
            secret=self.key(),
            now=now,
            text=text,
            agent_name=author,
            attachments=attachments,
            tag_format=s.ticket_tag,
            tag_pattern=s.tag_pattern,
            articles=articles,
        )
        envelope = [a.address for a in (*to, *cc) if a.key not in s.our_addresses]
        item_id = queue(
            session,
            ticket_id=ticket.id,
            kind=kind,
            message=composed.data,
            message_id=composed.message_id,
            mail_from=s.support_address,
            recipients=envelope,
            now=now,
        )
        values = {
            "ticket_id": ticket.id,
            "message_id": composed.message_id,
            "direction": "out",
            "in_reply_to": composed.in_reply_to or "",
            "refs": " ".join(composed.references),
            "from_address": s.support_address,
            "from_name": s.support_name,
            "to": [a.as_json() for a in to],
            "cc": [a.as_json() for a in cc],
            "subject": composed.subject,
            "date": now,
            "received_at": now,
            "text": composed.text,
            "html": composed.html,
            "thread_reason": thread_reason,
            "author": author,
            "created_at": now,
        }
        parts = [MailPart(name, content_type, data) for name, content_type, data in attachments]
        # The customer's answer threads here by its In-Reply-To.
        store_message(session, values, parts, self.files, [composed.message_id])
        return composed, item_id

    def team_notice(
        self, session: Session, ticket: Ticket, *, to: str, subject: str, now: datetime, text: str
    ) -> int:
        """Queue an internal notice about `ticket` to a team address; returns the outbox
        item's id. Not stored as a ticket message and not indexed: an answer to it must not
        land in the customer's ticket."""
        s = self.settings
        assert ticket.id is not None and ticket.number is not None
        composed = compose_notice(
            sender=Sender(s.support_name, s.support_address),
            to=to,
            subject=f"{s.format_tag(ticket.number)} {subject}: {ticket.subject}",
            text=text,
            secret=self.key(),
            now=now,
        )
        return queue(
            session,
            ticket_id=ticket.id,
            kind="notice",
            message=composed.data,
            message_id=composed.message_id,
            mail_from=s.support_address,
            recipients=[to],
            now=now,
        )
