"""Acknowledging new tickets, inside the transaction that files the customer's message.

The decision comes from rules.py, the mail from compose.py, and the outbox row is written
in the caller's transaction: the acknowledgement exists if and only if the ticket does.
Whatever the answer, it is recorded on the incoming message (`ack_decision`), so an agent
can see in `show` why a customer did or did not get one.

Acknowledgements go out with our support address as the envelope sender, not the null
sender RFC 3834 suggests for personal auto-responders: submission servers refuse <> from a
logged-in user, and a bounce is how we learn that the customer's address does not work.
Loops are held off by our Auto-Submitted and X-Loop headers and by ACK_LIMIT.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlmodel import Session

from mailsupport.compose import ComposeError, ThreadParent
from mailsupport.config import Settings
from mailsupport.errors import ConfigError
from mailsupport.mail import Address, Inbound
from mailsupport.outgoing import Outgoing
from mailsupport.rules import AckContext, ack_decision, is_noreply_address
from mailsupport.store.models import Message, Ticket
from mailsupport.templating import TemplateError, check_templates, choose_language

log = logging.getLogger(__name__)

ACKNOWLEDGED = "acknowledged"  # how a positive decision starts


@dataclass(frozen=True, slots=True)
class AckOutcome:
    decision: str  # recorded on the incoming message
    to: str | None = None  # lowercased address the acknowledgement went to
    message_id: str | None = None  # of the acknowledgement


class Acknowledger:
    """Decides on acknowledgements and has them sent through `Outgoing`."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.outgoing = Outgoing(settings)

    def off_reason(self) -> str | None:
        """Why this desk sends no acknowledgements at all, or None when it does."""
        s = self.settings
        if s.ack_limit == 0:
            return "acknowledgements are off (MAILSUPPORT_ACK_LIMIT=0)"
        if not s.support_address:
            return "MAILSUPPORT_SUPPORT_ADDRESS is not set"
        if not s.smtp_host:
            return "outgoing mail is off (MAILSUPPORT_SMTP_HOST is not set)"
        return None

    def check(self) -> None:
        """Raise ConfigError when acknowledgements are on but could not be made: a broken
        template, an unusable secret. Run at startup, before any mail is taken."""
        if self.off_reason():
            return
        problems = check_templates(self.settings.templates_path)
        if problems:
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            raise TemplateError(
                f"{problems[0]}{more}: acknowledgements need working templates "
                "(`mailsupport doctor` lists every problem)"
            )
        self.outgoing.key()

    def acknowledge(
        self,
        session: Session,
        message: Inbound,
        ticket: Ticket,
        *,
        new_ticket: bool,
        source_reason: str,
        now: datetime,
    ) -> AckOutcome:
        """Decide; when the answer is yes, compose the acknowledgement, queue it and store it
        on the ticket. Writes in the caller's transaction."""
        off = source_reason or self.off_reason()
        if off:
            return AckOutcome(f"no acknowledgement: {off}")
        recipient = self._recipient(message)
        context = AckContext(
            our_addresses=self.settings.our_addresses,
            is_reply_to_existing_ticket=not new_ticket,
            recent_acks_to_sender=(
                self._recent_acks(session, recipient.key, now) if recipient and new_ticket else 0
            ),
            ack_limit=self.settings.ack_limit,
        )
        decision = ack_decision(message, context)
        if not decision.send or recipient is None:
            return AckOutcome(decision.reason)
        try:
            return self._send(session, message, ticket, recipient, now)
        except (ConfigError, ComposeError) as error:
            # A broken template or an address we cannot write: the customer's message is
            # filed all the same, and the reason is on it for the agent to see.
            log.error("ticket #%s: no acknowledgement: %s", ticket.number, error)
            return AckOutcome(f"no acknowledgement: could not compose it: {error}")

    def _recipient(self, message: Inbound) -> Address | None:
        """Reply-To when it names one other person, else From."""
        ours = self.settings.our_addresses
        reply_to = [a for a in message.reply_to if a.key not in ours]
        if len(reply_to) == 1 and not is_noreply_address(reply_to[0].address):
            return reply_to[0]
        return message.from_

    def _recent_acks(self, session: Session, address: str, now: datetime) -> int:
        # A statement on the connection, without the ORM's autoflush: acknowledgements are
        # recorded on messages by statements too (store.tickets.set_ack).
        since = now - timedelta(seconds=self.settings.ack_window)
        found = session.connection().execute(_acks_since(), {"to": address, "since": since})
        return int(found.scalar_one())

    def _send(
        self, session: Session, message: Inbound, ticket: Ticket, to: Address, now: datetime
    ) -> AckOutcome:
        from mailsupport.kb import article_text, suggestions_for

        language = choose_language(self.settings.language, message.text)
        found = suggestions_for(self.settings, f"{message.subject}\n{message.text}", language)
        composed, _ = self.outgoing.send(
            session,
            "ack",
            ticket,
            to=[to],
            parent=ThreadParent.from_inbound(message),
            now=now,
            language=language,
            thread_reason="acknowledgement of a new ticket",
            articles=[(s.article.title, article_text(s.article)) for s in found],
        )
        suggested = f" with articles {', '.join(s.article.slug for s in found)}" if found else ""
        return AckOutcome(
            f"{ACKNOWLEDGED} to {to.address} as <{composed.message_id}>{suggested}",
            to=to.key,
            message_id=composed.message_id,
        )


@functools.cache
def _acks_since() -> sa.Select[tuple[int]]:
    table = Message.__table__  # type: ignore[attr-defined]
    return sa.select(sa.func.count(table.c.id)).where(
        table.c.ack_to == sa.bindparam("to"), table.c.created_at >= sa.bindparam("since")
    )
