"""An agent's own mail to the desk: answers to notifications, and forwarded customer mail.

An answer counts only when it comes from a registered agent's address and carries the reply
token of a notification made for that address (signing.make_notice_id): then the agent's
words above the quote (agentwords.own_words) become their reply to the customer, from the
ticket's address, threaded and quoting as `reply` does; a first line `#note` makes them an
internal note; `#close`, `#pending` and `#assign NAME` act on the ticket; attachments pass
through. Anything less (no token, a wrong one, another sender) is nobody's answer: the
pipeline files it as a stranger's mail, which never reaches the customer.

A registered agent's mail that forwards a message (attached, or inline the way mail clients
forward) files that message as its sender's: the original sender is the requester, its date
and text the first message; the agent's words above it become an internal note. The customer
is acknowledged only when the agent writes `#ack`.

Either way the agent's mail is kept (its raw bytes, linked from the note or reply it made)
and indexed by its Message-ID, so that taking it twice does nothing twice.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime

from sqlmodel import Session, select

from mailsupport import agent as actions
from mailsupport.agents import Known, Roster, known_name
from mailsupport.agentwords import (
    Instructions,
    own_words,
    read_inline_forward,
    read_instructions,
    strip_forward_prefix,
)
from mailsupport.automated import is_automated
from mailsupport.errors import NotFoundError, RefusedError, UsageError
from mailsupport.mail import Inbound
from mailsupport.notify import ASSIGNED, Notifier
from mailsupport.signing import notice_ticket
from mailsupport.store import claims
from mailsupport.store import tickets as db
from mailsupport.store.models import Agent, Message, Ticket

log = logging.getLogger(__name__)

ANSWERED, FORWARDED, DUPLICATE = "reply", "new", "duplicate"
FORWARD_NOTE = "forwarded by {agent}"


@dataclass(frozen=True, slots=True)
class Taken:
    """What became of an agent's mail: `kind` as the pipeline counts it (reply for an
    answer, new or reply for a forward, duplicate), the ticket, and one line saying what."""

    kind: str
    ticket_number: int | None
    detail: str


# Files a message as the pipeline would: (session, message, no_ack_reason, by) -> (kind,
# ticket number). `by` is the agent who forwarded it (not told of it).
FileOriginal = Callable[[Session, Inbound, str, str], tuple[str, int | None]]


class AgentMail:
    def __init__(self, notifier: Notifier, roster: Roster) -> None:
        self.notifier = notifier
        self.outgoing = notifier.outgoing
        self.roster = roster

    def take(
        self,
        session: Session,
        message: Inbound,
        now: datetime,
        file_original: FileOriginal,
        raw_id: int | None,
    ) -> Taken | None:
        """The agent's answer or forward, acted on; None when `message` is neither (or its
        sender no agent), for the pipeline to file as any mail."""
        sender = message.from_
        if sender is None or message.sender_doubt:
            return None
        agent = self.roster.by_address(session, sender.address)
        if agent is None or is_automated(message):
            return None  # an agent's out-of-office answering a notification is no answer
        number = self._answered(message, agent)
        if number is not None:
            claims.everything(session)  # an agent's work: no other writer meanwhile
            ticket = db.ticket_by_number(session, number)
            if ticket is None:
                return None
            if self._seen(session, message):
                return Taken(DUPLICATE, ticket.number, "an answer taken before")
            return self._answer(session, agent, ticket, message, now, raw_id)
        original = _forwarded(message)
        if original is None:
            return None
        claims.everything(session)
        if self._seen(session, message):
            return Taken(DUPLICATE, None, "a forward taken before")
        return self._forward(session, agent, message, original, now, file_original, raw_id)

    # -- answers ---------------------------------------------------------------------------

    def _answered(self, message: Inbound, agent: Agent) -> int | None:
        """The ticket a notification's reply token in the message names, made for `agent`."""
        key = self.outgoing.key()
        for candidate in (*message.in_reply_to, *message.references):
            number = notice_ticket(candidate, key, agent.email)
            if number is not None:
                return number
        return None

    @staticmethod
    def _seen(session: Session, message: Inbound) -> bool:
        return bool(db.known_refs(session, [message.message_id]))

    def _answer(
        self,
        session: Session,
        agent: Known,
        ticket: Ticket,
        message: Inbound,
        now: datetime,
        raw_id: int | None,
    ) -> Taken:
        orders = read_instructions(own_words(message.text))
        files = [(a.filename, a.content_type, a.data) for a in message.attachments if not a.inline]
        try:
            with session.begin_nested():
                done = self._act(session, agent, ticket, orders, files, message, now, raw_id)
        except (RefusedError, UsageError, NotFoundError) as error:
            done = f"not applied: {error}"
            text = f"{agent.name}'s answer by mail was not applied: {error}\n\n{orders.text}"
            self._note(session, ticket, agent, text, message, now, raw_id, files)
            self.outgoing.team_notice(
                session, ticket, to=agent.email, subject="Your answer was not applied",
                now=now, text=f"{error}\n\nYour text is kept as an internal note on the ticket.",
            )  # fmt: skip
        db.index_refs(session, ticket.id, [message.message_id])  # type: ignore[arg-type]
        return Taken(ANSWERED, ticket.number, f"answer by mail from agent {agent.name}: {done}")

    def _act(
        self,
        session: Session,
        agent: Known,
        ticket: Ticket,
        orders: Instructions,
        files: list[tuple[str, str, bytes]],
        message: Inbound,
        now: datetime,
        raw_id: int | None,
    ) -> str:
        done: list[str] = []
        if orders.assign is not None:
            assignee = known_name(session, orders.assign)
            actions.assign(session, ticket, assignee, agent=agent.name, now=now)
            self.notifier.tell(session, ticket, ASSIGNED, now=now, by=agent.name)
            done.append(f"assigned to {assignee}")
        status = "closed" if orders.close else "pending" if orders.pending else None
        if orders.note and (orders.text or files):
            self._note(session, ticket, agent, orders.text, message, now, raw_id, files)
            done.append("internal note")
        elif orders.text or (files and not orders.note):
            if not orders.text:
                raise RefusedError("the answer has attachments but no text: nothing sent")
            composed, _ = actions.reply(
                session, self.outgoing, ticket, orders.text, agent=agent.name, now=now,
                attachments=files, status=status,
            )  # fmt: skip
            _link_raw(session, composed.message_id, raw_id)
            done.append("replied" + (f", {status}" if status else ""))
            status = None
        if status == "closed":
            notice, _ = actions.close(session, self.outgoing, ticket, agent=agent.name, now=now)
            done.append(f"closed ({notice})")
        elif status == "pending":
            actions.set_pending(session, ticket, agent=agent.name, now=now)
            done.append("pending")
        if not done:
            raise RefusedError("the answer is empty: nothing done")
        return ", ".join(done)

    def _note(
        self,
        session: Session,
        ticket: Ticket,
        agent: Known,
        text: str,
        message: Inbound,
        now: datetime,
        raw_id: int | None,
        files: list[tuple[str, str, bytes]],
    ) -> None:
        """An internal note of the agent's mail, under its own Message-ID, with its bytes
        and attachments."""
        from mailsupport.mail import Attachment

        assert ticket.id is not None
        values = {
            "ticket_id": ticket.id,
            "message_id": message.message_id,
            "direction": "note",
            "from_address": agent.email,
            "from_name": agent.name,
            "subject": "(internal note)",
            "date": message.date or now,
            "received_at": now,
            "text": text.strip("\n") or "(attachments)",
            "raw_id": raw_id,
            "thread_reason": "internal note by mail",
            "author": agent.name,
            "created_at": now,
        }
        parts = [Attachment(name, kind, data) for name, kind, data in files]
        db.store_message(session, values, parts, self.outgoing.files, [message.message_id])
        actions.record(session, ticket, "note", actions.first_line(values["text"]), agent.name, now)

    # -- forwards --------------------------------------------------------------------------

    def _forward(
        self,
        session: Session,
        agent: Known,
        message: Inbound,
        original: tuple[Inbound, list[str]],
        now: datetime,
        file_original: FileOriginal,
        raw_id: int | None,
    ) -> Taken | None:
        forwarded, above = original
        sender = forwarded.from_
        ours = self.outgoing.settings.our_addresses
        if sender is None or sender.key in ours or self.roster.by_address(session, sender.address):
            return None  # nobody's mail to file as a customer's
        orders = read_instructions(above)
        ignored = ours | {a.email for a in self.roster.agents(session)}
        forwarded = replace(
            forwarded,
            to=tuple(a for a in forwarded.to if a.key not in ignored),
            cc=tuple(a for a in forwarded.cc if a.key not in ignored),
        )
        no_ack = "" if orders.ack else f"forwarded by agent {agent.name} without #ack"
        if db.message_exists(session, forwarded.message_id):
            found = db.known_refs(session, [forwarded.message_id])
            ticket = session.get(Ticket, next(iter(found.values()))) if found else None
            ticket = db.follow_merges(session, ticket)
            kind = "reply"
        else:
            kind, number = file_original(session, forwarded, no_ack, agent.name)
            ticket = db.ticket_by_number(session, number) if number is not None else None
        if ticket is None:
            return None
        note = orders.text or FORWARD_NOTE.format(agent=agent.name)
        self._note(session, ticket, agent, note, message, now, raw_id, [])
        what = FORWARD_NOTE.format(agent=agent.name) + ("" if no_ack else ", acknowledged")
        return Taken(kind, ticket.number, what)


def _link_raw(session: Session, message_id: str, raw_id: int | None) -> None:
    """Point our reply at the agent's mail it came from: its bytes stay with the ticket."""
    row = session.exec(select(Message).where(Message.message_id == message_id)).first()
    if row is not None and raw_id is not None:
        row.raw_id = raw_id
        session.add(row)


def _forwarded(message: Inbound) -> tuple[Inbound, list[str]] | None:
    """The message `message` forwards, and the forwarding agent's words: an attached message
    (message/rfc822) or one forwarded inline; None when it forwards nothing."""
    from mailsupport.parsing.workers import ParseFailure, parse_safely

    for part in message.attachments:
        if part.content_type.lower() == "message/rfc822":
            parsed = parse_safely(part.data)
            if isinstance(parsed, ParseFailure) or parsed.from_ is None:
                continue
            return parsed, own_words(message.text)
    inline = read_inline_forward(message.text, message.subject)
    if inline is None:
        return None
    original = Inbound(
        message_id=f"fwd.{message.message_id}",
        message_id_generated=True,
        in_reply_to=(),
        references=(),
        subject=inline.subject or strip_forward_prefix(message.subject),
        from_=inline.sender,
        to=(),
        cc=(),
        reply_to=(),
        date=inline.date or message.date,
        text=inline.text,
        html=None,
        attachments=tuple(a for a in message.attachments if not a.inline),
    )
    return original, inline.above
