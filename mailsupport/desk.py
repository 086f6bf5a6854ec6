"""An agent's work on tickets by their numbers, each action in a transaction of its own.

The use cases a command line or a script calls: `Desk(store, settings, agent, clock)`, then
`desk.close(12)`. The actions themselves are in `agent`, which works inside a caller's
transaction. Every action here commits before it returns, and returns the ticket as
committed (with what the action produced), so that what a caller says about it is true.
Sending the mail an action queued is left to the caller, after the commit: the outbox's
`deliver_due` for the ticket's number, which sends the ticket's earlier due mail first.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from mailsupport import agent as actions
from mailsupport.drafting import Frame, reply_frame
from mailsupport.errors import RefusedError
from mailsupport.notify import ASSIGNED, ESCALATED, Notifier
from mailsupport.practice import Practice
from mailsupport.ticketmail import Outgoing

if TYPE_CHECKING:
    from sqlmodel import Session

    from mailsupport.config import Settings
    from mailsupport.mail import Address
    from mailsupport.store.db import Store
    from mailsupport.store.models import Message, Ticket
    from mailsupport.ticketmail import FilePart

# The latest messages shown to an agent who writes a reply or a note.
CONTEXT_MESSAGES = 10


@dataclass(frozen=True, slots=True)
class Conversation:
    """A ticket and its latest messages, oldest first: what an agent reads before writing."""

    ticket: Ticket
    messages: tuple[Message, ...]


@dataclass(frozen=True, slots=True)
class Sent:
    """A committed change that may have queued mail: `item_id` is the outbox row to send
    (None when nothing was queued), `detail` one line about the mail."""

    ticket: Ticket
    detail: str
    item_id: int | None


@dataclass(frozen=True, slots=True)
class Replied:
    """A committed reply: its Message-ID, and the outbox row that sends it."""

    ticket: Ticket
    message_id: str
    item_id: int


@dataclass(frozen=True, slots=True)
class ReplyStart:
    """What an agent answering a ticket reads and starts from; `mark` is the id of the
    ticket's latest message then (0 for none)."""

    conversation: Conversation
    people: actions.Recipients
    frame: Frame
    mark: int


@dataclass(frozen=True, slots=True)
class Desk:
    """`agent` at work on the tickets in `store`; `clock` tells the time of each change."""

    store: Store
    settings: Settings
    agent: str
    clock: Callable[[], datetime]

    # -- reading ---------------------------------------------------------------------------

    def conversation(self, number: int, limit: int = CONTEXT_MESSAGES) -> Conversation:
        """Ticket #number (following merges) and its latest `limit` messages."""
        with self.store.read() as session:
            return _conversation(session, number, limit)

    def reply_draft(
        self,
        number: int,
        *,
        to: Sequence[Address] = (),
        cc: Sequence[Address] = (),
        limit: int = CONTEXT_MESSAGES,
    ) -> tuple[Conversation, actions.Recipients]:
        """What an agent answering ticket #number reads, in one transaction: the
        conversation, and who a reply would go to (see `agent.recipients`)."""
        with self.store.read() as session:
            found = _conversation(session, number, limit)
            people = actions.recipients(session, self.settings, found.ticket, to=to, cc=cc)
        return found, people

    def start_reply(
        self,
        number: int,
        *,
        to: Sequence[Address] = (),
        cc: Sequence[Address] = (),
        macros: Sequence[str] = (),
        from_address: str = "",
        limit: int = CONTEXT_MESSAGES,
    ) -> ReplyStart:
        """What an agent answering ticket #number starts from (`reply_draft`, and how the
        reply will read around their text, with `macros` filled in: see `drafting`), and
        where the conversation stood: `news` tells what arrived after."""
        with self.store.read() as session:
            found = _conversation(session, number, limit)
            t = found.ticket
            people = actions.recipients(session, self.settings, t, to=to, cc=cc)
            parent = actions.reply_parent(session, t, people)
            mark = actions.newest_message_id(session, t)
        frame = reply_frame(
            Outgoing(self.settings), t, people, parent, agent=self.agent, now=self.clock(),
            macros=macros, from_address=from_address,
        )  # fmt: skip
        return ReplyStart(found, people, frame, mark)

    def news(self, number: int, mark: int) -> tuple[Message, ...]:
        """Ticket #number's messages stored after `mark` (`ReplyStart.mark`), oldest first."""
        with self.store.read() as session:
            t = actions.ticket(session, number)
            return tuple(actions.messages_after(session, t, mark))

    # -- mail ------------------------------------------------------------------------------

    def reply(
        self,
        number: int,
        text: str,
        *,
        cc: Sequence[Address] = (),
        to: Sequence[Address] = (),
        attachments: Sequence[FilePart] = (),
        status: str | None = None,
        from_address: str = "",
    ) -> Replied:
        """Answer ticket #number by mail (see `agent.reply`)."""
        with self._writing(number) as (session, t):
            composed, item_id = actions.reply(
                session, Outgoing(self.settings), t, text, agent=self.agent, now=self.clock(),
                cc=cc, to=to, attachments=attachments, status=status,
                from_address=from_address,
            )  # fmt: skip
        return Replied(t, composed.message_id, item_id)

    def note(self, number: int, text: str) -> Ticket:
        """Add an internal note to ticket #number; it is never mailed."""
        with self._writing(number) as (session, t):
            actions.note(session, t, text, agent=self.agent, now=self.clock())
        return t

    def change_cc(self, number: int, changes: Sequence[str]) -> tuple[Ticket, actions.Recipients]:
        """Mail (+addr) or stop mailing (-addr) people with the replies; who is who after."""
        with self._writing(number) as (session, t):
            people = actions.change_cc(session, t, changes, agent=self.agent, now=self.clock())
        return t, people

    # -- status and fields -----------------------------------------------------------------

    def close(self, number: int, *, silent: bool = False, comment: str = "") -> Sent:
        """Close ticket #number, queueing the closing notice unless it is off (`agent.close`)."""
        with self._writing(number) as (session, t):
            notice, item_id = actions.close(
                session, Outgoing(self.settings), t, agent=self.agent, now=self.clock(),
                silent=silent, comment=comment,
            )  # fmt: skip
        return Sent(t, notice, item_id)

    def reopen(self, number: int) -> Ticket:
        """Open a closed or pending ticket again."""
        with self._writing(number) as (session, t):
            actions.reopen(session, t, agent=self.agent, now=self.clock())
        return t

    def assign(self, number: int, assignee: str | None) -> Ticket:
        """Give ticket #number to `assignee`; None takes it back."""
        from mailsupport.agents import known_name

        with self._writing(number) as (session, t):
            assignee = known_name(session, assignee) if assignee else None
            actions.assign(session, t, assignee, agent=self.agent, now=self.clock())
            if assignee:
                Notifier(Outgoing(self.settings)).tell(
                    session, t, ASSIGNED, now=self.clock(), by=self.agent
                )
        return t

    def set_priority(self, number: int, level: str) -> Ticket:
        """Set ticket #number's priority; its SLA due times follow the desk's practice."""
        with self._writing(number) as (session, t):
            practice = Practice(self.settings)
            actions.set_priority(
                session, t, level, agent=self.agent, now=self.clock(), practice=practice
            )
        return t

    def escalate(self, number: int, *, to_line: int | None = None, reason: str = "") -> Sent:
        """Move ticket #number to another line, queueing the team's notice."""
        with self._writing(number) as (session, t):
            outgoing = Outgoing(self.settings)
            notice, item_id = actions.escalate(
                session, outgoing, t, agent=self.agent, now=self.clock(),
                to_line=to_line, reason=reason,
            )  # fmt: skip
            detail = f"Moved to line {t.line} by {self.agent}" + (f": {reason}" if reason else "")
            Notifier(outgoing).tell(
                session, t, ESCALATED, now=self.clock(), by=self.agent, detail=detail
            )
        return Sent(t, notice, item_id)

    def change_tags(self, number: int, changes: Iterable[str]) -> tuple[Ticket, list[str]]:
        """Add (+x) and remove (-x) tags; the ticket and its tags after the change."""
        with self._writing(number) as (session, t):
            tags = actions.change_tags(session, t, changes, agent=self.agent, now=self.clock())
        return t, tags

    def merge(self, number: int, other: int) -> Ticket:
        """Merge ticket #other into #number; returns the ticket that stays."""
        with self._writing(number) as (session, target):
            source = actions.ticket(session, other)
            if source.number != other:
                raise RefusedError(f"ticket #{other} was merged into #{source.number} already")
            actions.merge(session, target, source, agent=self.agent, now=self.clock())
        return target

    @contextmanager
    def _writing(self, number: int) -> Iterator[tuple[Session, Ticket]]:
        """Ticket #number in a write transaction that commits on leaving."""
        with self.store.write() as session:
            yield session, actions.ticket(session, number)


def _conversation(session: Session, number: int, limit: int) -> Conversation:
    t = actions.ticket(session, number)
    return Conversation(t, tuple(reversed(actions.latest_messages(session, t, limit))))
