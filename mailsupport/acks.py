"""Acknowledging new tickets, inside the transaction that files the customer's message.

The decision comes from ackrules.py, the mail from compose.py, and the outbox row is written
in the caller's transaction: the acknowledgement exists if and only if the ticket does.
Whatever the answer, it is recorded on the incoming message (`ack_decision`), so an agent
can see in `show` why a customer did or did not get one.

Acknowledgements go out with our support address as the envelope sender, not the null
sender RFC 3834 suggests for personal auto-responders: submission servers refuse <> from a
logged-in user, and a bounce is how we learn that the customer's address does not work.
Loops are held off by our Auto-Submitted and X-Loop headers and by ACK_LIMIT.

Anyone can write any From and Reply-To, so an acknowledgement is mail we send to an address
a stranger chose (backscatter). Hence: ACK_LIMIT per recipient and per From address,
ACK_DOMAIN_LIMIT per From domain, no acknowledgement to a Reply-To in another domain unless
an agent has answered the sender before, and of the sender's words only a display name that
reads as a person's name and a bounded, cleaned subject are repeated.
"""

from __future__ import annotations

import functools
import logging
import unicodedata
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlmodel import Session

from mailsupport.ackrules import (
    AckContext,
    ack_decision,
    ack_recipient,
    other_domain_reply_to,
    person_name,
    sender_domain,
)
from mailsupport.compose import ComposeError, ThreadParent
from mailsupport.config import Settings
from mailsupport.errors import ConfigError
from mailsupport.mail import Address, Inbound
from mailsupport.store import MAILED_ROLES, direct, window
from mailsupport.store.models import Participant, Ticket
from mailsupport.store.window import AckKeys
from mailsupport.templating import TemplateError, check_templates, choose_language
from mailsupport.ticketmail import Outgoing, Prepared

log = logging.getLogger(__name__)

ACKNOWLEDGED = "acknowledged"  # how a positive decision starts
# The subject an acknowledgement repeats (in its Subject and its text), in characters: room
# for any real subject, none for a page of a stranger's advertising.
ACK_SUBJECT_MAX_CHARS = 100


@dataclass(frozen=True, slots=True)
class AckOutcome:
    decision: str  # recorded on the incoming message
    to: str | None = None  # lowercased address the acknowledgement went to
    message_id: str | None = None  # of the acknowledgement
    # Whose mail (and which domain's) was acknowledged, recorded with the decision for the
    # next counts (ACK_LIMIT per From address, ACK_DOMAIN_LIMIT).
    sender: str | None = None
    domain: str | None = None


@dataclass(frozen=True, slots=True)
class PreparedAck:
    """A decision on acknowledging, with the acknowledgement composed when one goes out."""

    outcome: AckOutcome
    mail: Prepared | None = None


class Acknowledger:
    """Decides on acknowledgements and has them sent through `Outgoing`."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.outgoing = Outgoing(settings)

    def off_reason(self, ticket: Ticket | None = None) -> str | None:
        """Why this desk (or the mailbox of `ticket`) sends no acknowledgements at all, or
        None when it does."""
        s = self.settings if ticket is None else self.outgoing.settings_of(ticket)
        if s.ack_limit == 0:
            return "acknowledgements are off (MAILSUPPORT_ACK_LIMIT=0)"
        if not s.support_address:
            return "MAILSUPPORT_SUPPORT_ADDRESS is not set"
        if not s.smtp_host:
            return "outgoing mail is off (MAILSUPPORT_SMTP_HOST is not set)"
        return None

    def check(self) -> None:
        """Raise ConfigError when acknowledgements are on but could not be made: a broken
        template (of any mailbox), an unusable secret. Run at startup, before any mail is
        taken."""
        if self.settings.ack_limit == 0:
            return
        paths = {box.settings.templates_path for box in self.outgoing.mailboxes.all
                 if box.settings.smtp_host and box.address}  # fmt: skip
        problems = [p for path in paths for p in check_templates(path)]
        if problems:
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            raise TemplateError(
                f"{problems[0]}{more}: acknowledgements need working templates "
                "(`mailsupport doctor` lists every problem)"
            )
        if paths:
            self.outgoing.key()

    def prepare(
        self,
        session: Session,
        message: Inbound,
        ticket: Ticket,
        *,
        new_ticket: bool,
        source_reason: str,
        now: datetime,
    ) -> PreparedAck:
        """Decide; when the answer is yes, compose the acknowledgement (send_prepared()
        queues it and stores it on the ticket, in the caller's transaction). Intake records
        the decision with the message's own row, then has the mail queued."""
        off = source_reason or self.off_reason(ticket)
        if off:
            return PreparedAck(AckOutcome(f"no acknowledgement: {off}"))
        recipient = ack_recipient(message, self.settings.our_addresses)
        context = self._context(session, message, recipient, new_ticket, now)
        decision = ack_decision(message, context)
        if not decision.send or recipient is None:
            return PreparedAck(AckOutcome(decision.reason))
        try:
            mail, outcome = self._compose(message, ticket, recipient, now)
        except (ConfigError, ComposeError) as error:
            # A broken template or an address we cannot write: the customer's message is
            # filed all the same, and the reason is on it for the agent to see.
            log.error("ticket #%s: no acknowledgement: %s", ticket.number, error)
            return PreparedAck(AckOutcome(f"no acknowledgement: could not compose it: {error}"))
        sender = message.from_.key if message.from_ is not None else None
        return PreparedAck(
            replace(outcome, sender=sender, domain=sender_domain(message) or None), mail
        )

    def send_prepared(self, session: Session, ticket: Ticket, prepared: PreparedAck) -> None:
        """Queue the acknowledgement prepare() composed, if any, and store it on the ticket."""
        if prepared.mail is not None:
            self.outgoing.queue_composed(session, ticket, prepared.mail)

    def _context(
        self,
        session: Session,
        message: Inbound,
        recipient: Address | None,
        new_ticket: bool,
        now: datetime,
    ) -> AckContext:
        """The rules' view of our state. Only a new ticket is ever acknowledged, so only then
        are the counts looked up: one statement, plus one lookup for a Reply-To elsewhere."""
        s = self.settings
        to_recipient = from_sender = from_domain = 0
        known = False
        keys = self._keys(message, recipient) if new_ticket and recipient is not None else None
        if keys is not None:
            to_recipient, from_sender, from_domain = self._recent_acks(session, keys, now)
            if keys.sender and other_domain_reply_to(message, s.our_addresses) is not None:
                known = self._known(session, keys.sender)
        return AckContext(
            our_addresses=s.our_addresses,
            is_reply_to_existing_ticket=not new_ticket,
            recent_acks_to_sender=to_recipient,
            ack_limit=s.ack_limit,
            recent_acks_from_sender=from_sender,
            recent_acks_from_domain=from_domain,
            domain_limit=self._domain_limit(sender_domain(message)),
            sender_known=known,
        )

    def counted(self, message: Inbound) -> AckKeys | None:
        """Whose acknowledgements limit one of a new ticket of `message`, or None when it
        has no one to go to."""
        recipient = ack_recipient(message, self.settings.our_addresses)
        return None if recipient is None else self._keys(message, recipient)

    def _keys(self, message: Inbound, recipient: Address) -> AckKeys:
        """counted(), the acknowledgement going to `recipient`."""
        sender = message.from_.key if message.from_ is not None else ""
        domain = sender_domain(message)
        return AckKeys(recipient.key, sender, domain if self._domain_limit(domain) else "")

    def _domain_limit(self, domain: str) -> int:
        """ACK_DOMAIN_LIMIT for mail from `domain`: 0 (none) for a shared mail provider's."""
        s = self.settings
        return 0 if domain in s.shared_domains else s.ack_domain_limit

    def since(self, now: datetime) -> datetime:
        """Where the counting window of ACK_WINDOW ends before `now`."""
        return now - timedelta(seconds=self.settings.ack_window)

    def _recent_acks(self, session: Session, keys: AckKeys, now: datetime) -> tuple[int, int, int]:
        """Acknowledgements within the window: to `to`, of mail from `sender`, of mail from
        `domain` ("" = not counted); as the batch's window read them, when it did."""
        counted = window.recent_acks(session, keys)
        if counted is not None:
            return counted
        # A statement on the connection, without the ORM's autoflush: acknowledgements are
        # recorded with the messages' own rows, written by statements too (pipeline.py).
        values = {**keys._asdict(), "since": self.since(now)}
        [row] = direct.rows(session, window.acks_since(), values)
        return int(row[0]), int(row[1]), int(row[2])

    @staticmethod
    def _known(session: Session, address: str) -> bool:
        """Whether `address` takes part in a ticket an agent has answered. Having written to
        us before is not enough: the stranger's first mail would make them known."""
        return direct.scalar(session, _known_sender(), {"address": address}) is not None

    def _compose(
        self, message: Inbound, ticket: Ticket, to: Address, now: datetime
    ) -> tuple[Prepared, AckOutcome]:
        from mailsupport.kb import article_body, suggestions_for

        language = choose_language(self.outgoing.settings_of(ticket).language, message.text)
        found = suggestions_for(self.settings, f"{message.subject}\n{message.text}", language)
        # Of the stranger's words, repeat only a name that reads as a person's (in To, the
        # greeting and quote_name) and a bounded, cleaned subject.
        to = Address(person_name(to.name), to.address)
        sender_name = message.from_.name if message.from_ is not None else ""
        parent = replace(
            ThreadParent.from_inbound(message),
            subject=ack_subject(message.subject),
            from_name=person_name(sender_name),
        )
        mail = self.outgoing.compose_for(
            "ack",
            ticket,
            title=ack_subject(ticket.subject),  # bounded here; the stored title stays whole
            to=[to],
            parent=parent,
            now=now,
            language=language,
            thread_reason="acknowledgement of a new ticket",
            articles=[(s.article.title, article_body(s.article)) for s in found],
        )
        composed = mail.composed
        suggested = f" with articles {', '.join(s.article.slug for s in found)}" if found else ""
        return mail, AckOutcome(
            f"{ACKNOWLEDGED} to {to.address} as <{composed.message_id}>{suggested}",
            to=to.key,
            message_id=composed.message_id,
        )


def ack_subject(subject: str) -> str:
    """`subject` as an acknowledgement repeats it: control characters as spaces, format
    characters (bidi overrides that reorder what the reader sees, zero-width ones) dropped,
    runs of spaces as one, at most ACK_SUBJECT_MAX_CHARS characters, cut after a word when
    one ends near the limit."""
    limit = ACK_SUBJECT_MAX_CHARS
    kept: list[str] = []
    for char in subject[: limit * 4]:  # a 100 KiB subject costs no more than a short one
        kind = unicodedata.category(char)
        if kind == "Cf":
            continue
        kept.append(" " if kind == "Cc" or char in "\u2028\u2029" else char)
    text = " ".join("".join(kept).split())
    if len(text) <= limit:
        return text
    cut = text[:limit]
    if cut.rfind(" ") >= limit * 3 // 4:
        cut = cut[: cut.rfind(" ")]
    return cut.rstrip(" ,.;:-") + "…"


@functools.cache
def _known_sender() -> sa.Select[tuple[int]]:
    people = Participant.__table__  # type: ignore[attr-defined]
    tickets = Ticket.__table__  # type: ignore[attr-defined]
    return (
        sa.select(people.c.ticket_id)
        .select_from(people.join(tickets, tickets.c.id == people.c.ticket_id))
        .where(
            people.c.address == sa.bindparam("address"),
            sa.or_(*(people.c.role == role for role in MAILED_ROLES)),  # not one seen in a Cc
            tickets.c.first_response_at.is_not(None),
        )
        .limit(1)
    )
