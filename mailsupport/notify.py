"""Agents told what needs them: a new ticket, a customer's answer, an assignment, an SLA
due soon, an escalation to their line.

Each event becomes a Notification row in the transaction of the change that caused it. An
agent on `instant` (MAILSUPPORT_NOTIFY, or their own `--notify`) gets a mail at once, queued
in that transaction; on `digest:N` the rows wait for `run_due`, which the daemon and `poll`
call, and go out together at most every N. Notifications leave through the outbox like all
our mail, only ever to registered agents, marked Auto-Submitted so no responder answers
them, and are no ticket messages (not shown, not searched). An instant notification's
Message-ID carries a reply token for its agent: replying to it answers the customer
(agentmail.py).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from sqlmodel import Session, col, select

from mailsupport.agents import Known, Roster, known_agents, mode_of
from mailsupport.config import Settings
from mailsupport.outbox.queue import DIGEST as DIGEST_MAIL
from mailsupport.outbox.queue import NOTIFICATION
from mailsupport.quoting import Folded, fold
from mailsupport.store.db import Store
from mailsupport.store.models import Agent, Message, Notification, Ticket
from mailsupport.team import DIGEST, INSTANT, OFF
from mailsupport.ticketmail import Outgoing

log = logging.getLogger(__name__)

NEW, ANSWER, ASSIGNED, DUE, ESCALATED = "new", "answer", "assigned", "due", "escalated"
WHAT = {
    NEW: "New ticket",
    ANSWER: "The customer answered",
    ASSIGNED: "Assigned to you",
    DUE: "Due soon",
    ESCALATED: "Escalated to your line",
}
MESSAGE_LINES = 60  # of the new message, in a notification
DIGEST_ENTRIES = 200  # in one digest mail; the rest go in the next


def audience(agents: Sequence[Agent], ticket: Ticket, kind: str, *, by: str = "") -> list[Agent]:
    """Who hears about `kind` on `ticket`: its assignee (when registered), else the agents
    whose queues and line it is in; an assignment only its new assignee; an escalation the
    agents of its new line. Never `by`, who did it."""
    others = [a for a in agents if a.name.lower() != by.lower()]
    assignee = (ticket.assignee or "").lower()
    mine = [a for a in others if a.name.lower() == assignee]
    if kind == ASSIGNED:
        return mine
    if kind != ESCALATED and assignee and any(a.name.lower() == assignee for a in agents):
        return mine
    return [
        a
        for a in others
        if (not a.queues or ticket.queue in a.queues) and (a.line is None or a.line == ticket.line)
    ]


def notice_text(
    kind: str,
    ticket: Ticket,
    *,
    message: Message | None,
    detail: str,
    answerable: bool,
) -> str:
    """A notification's text: the ticket, the customer, what happened, the new message, and
    how to answer."""
    assert ticket.number is not None
    customer = ticket.requester_name and f"{ticket.requester_name} <{ticket.requester}>"
    lines = [
        f"{WHAT.get(kind, kind)}: #{ticket.number} {ticket.subject}",
        f"Customer: {customer or ticket.requester or 'unknown'}",
        f"Status: {ticket.status}, priority {ticket.priority}"
        + (f", queue {ticket.queue}" if ticket.queue else "")
        + (f", line {ticket.line}" if ticket.line != 1 else "")
        + (f", assigned to {ticket.assignee}" if ticket.assignee else ""),
    ]
    lines += [detail] if detail else []
    if message is not None and message.text.strip():
        who = message.from_name or message.from_address or "someone"
        lines += ["", f"{who} wrote:", "", *_message_lines(message.text)]
    lines += ["", "--"]
    if answerable:
        lines += [
            "Reply to this mail to answer the customer: your text above the quote goes to them",
            "from the support address. A first line #note makes it an internal note instead;",
            "lines #close, #pending or #assign NAME act on the ticket.",
        ]
    lines += [f"Or work it in mailsupport: mailsupport show {ticket.number}"]
    return "\n".join(lines)


def _message_lines(text: str) -> list[str]:
    """The message without the history it quotes, at most MESSAGE_LINES lines."""
    shown = [x for x in fold(text) if not isinstance(x, Folded)]
    if len(shown) > MESSAGE_LINES:
        shown = [*shown[:MESSAGE_LINES], f"[... {len(shown) - MESSAGE_LINES} more lines]"]
    return [str(x) for x in shown]


class Notifier:
    """Records and sends notifications, with the desk's mail setup in `outgoing`."""

    def __init__(self, outgoing: Outgoing, roster: Roster | None = None) -> None:
        self.outgoing = outgoing
        self.settings = outgoing.settings
        self.roster = roster  # intake's cached registry; None: read it each time

    def agents(self, session: Session) -> list[Known]:
        """The registered agents (intake's cached copy when it has one)."""
        return self.roster.agents(session) if self.roster else known_agents(session)

    def tell(
        self,
        session: Session,
        ticket: Ticket,
        kind: str,
        *,
        now: datetime,
        message_pk: int | None = None,
        by: str = "",
        detail: str = "",
    ) -> int:
        """Tell the agents `kind` happened to `ticket`; returns how many were told. Nothing
        for tickets automatic mail opened, spam, or closed ones: they are nobody's work."""
        if ticket.automatic or ticket.status in ("spam", "closed") or ticket.merged_into_id:
            return 0  # nobody's work (a rule may have closed a new ticket at once)
        agents = self.agents(session)
        if not agents:
            return 0
        told = 0
        for agent in audience(agents, ticket, kind, by=by):
            mode = mode_of(agent, self.settings.notify)
            if mode.kind == OFF:
                continue
            assert ticket.id is not None
            row = Notification(
                agent=agent.name,
                ticket_id=ticket.id,
                kind=kind,
                message_pk=message_pk,
                detail=detail,
                created_at=now,
            )
            if mode.kind == INSTANT:
                row.outbox_id = self._mail(session, agent, ticket, kind, message_pk, detail, now)
                row.sent_at = now
            session.add(row)
            told += 1
        return told

    def _mail(
        self,
        session: Session,
        agent: Known,
        ticket: Ticket,
        kind: str,
        message_pk: int | None,
        detail: str,
        now: datetime,
    ) -> int | None:
        if not self.outgoing.settings_of(ticket).support_address:
            return None  # no address to send from (and none to answer to)
        message = session.get(Message, message_pk) if message_pk else None
        text = notice_text(kind, ticket, message=message, detail=detail, answerable=True)
        return self.outgoing.team_notice(
            session, ticket, to=agent.email, subject=WHAT.get(kind, kind), now=now, text=text,
            kind=NOTIFICATION, reply_token_for=agent.email,
        )  # fmt: skip

    # -- what runs now and then ------------------------------------------------------------

    def run_due(self, session: Session, now: datetime) -> int:
        """Warn of SLA times falling due, and mail the digests whose time has come. Returns
        how many mails were queued."""
        self.warn_due(session, now)
        return self.send_digests(session, now)

    def warn_due(self, session: Session, now: datetime) -> int:
        """Tell agents, once per due time, of tickets whose first answer or resolution falls
        due within MAILSUPPORT_SLA_WARNING. Times long past (more than that ago) are not
        warned of: a desk turning warnings on is not flooded with its backlog."""
        if not self.settings.sla_warning or not known_agents(session):
            return 0
        from mailsupport.sla import parse_duration

        window = parse_duration(self.settings.sla_warning)
        told = 0
        for ticket, what, due in _falling_due(session, now - window, now + window):
            detail = f"{what} due {due:%Y-%m-%d %H:%M} UTC"
            if _told_before(session, ticket, detail):
                continue
            told += self.tell(session, ticket, DUE, now=now, detail=detail) or _mark(
                session, ticket, detail, now
            )
        return told

    def send_digests(self, session: Session, now: datetime) -> int:
        """One mail per agent whose oldest waiting notification is their digest interval
        old (an agent gone instant gets what waits at once; gone off, it is dropped)."""
        sent = 0
        for agent in known_agents(session):
            rows = list(
                session.exec(
                    select(Notification)
                    .where(Notification.agent == agent.name, col(Notification.sent_at).is_(None))
                    .order_by(col(Notification.id))
                    .limit(DIGEST_ENTRIES)
                ).all()
            )
            mode = mode_of(agent, self.settings.notify)
            if not rows or (mode.kind == DIGEST and rows[0].created_at + mode.every > now):
                continue
            outbox_id = None if mode.kind == OFF else self._digest(session, agent, rows, now)
            sent += outbox_id is not None
            for row in rows:
                row.sent_at, row.outbox_id = now, outbox_id
                session.add(row)
        return sent

    def _digest(
        self, session: Session, agent: Known, rows: list[Notification], now: datetime
    ) -> int | None:
        tickets = {t.id: t for t in _tickets(session, {r.ticket_id for r in rows})}
        entries = [r for r in rows if r.ticket_id in tickets]
        if not entries:
            return None
        first = tickets[entries[0].ticket_id]
        if not self.outgoing.settings_of(first).support_address:
            return None
        parts = [f"{len(entries)} things for {agent.name} since {entries[0].created_at:%H:%M} UTC"]
        for row in entries:
            ticket = tickets[row.ticket_id]
            message = session.get(Message, row.message_pk) if row.message_pk else None
            text = notice_text(
                row.kind, ticket, message=message, detail=row.detail, answerable=False
            )
            parts += ["", "=" * 72, "", text]
        return self.outgoing.team_notice(
            session, first, to=agent.email, subject=f"{len(entries)} notifications (digest)",
            now=now, text="\n".join(parts), kind=DIGEST_MAIL,
        )  # fmt: skip


def _falling_due(
    session: Session, since: datetime, until: datetime
) -> list[tuple[Ticket, str, datetime]]:
    """Tickets in work whose first answer (not given yet) or resolution is due between."""
    working = sa.and_(
        col(Ticket.status).in_(("new", "open")),
        col(Ticket.merged_into_id).is_(None),
        col(Ticket.automatic) == "",
    )
    found: list[tuple[Ticket, str, datetime]] = []
    first = select(Ticket).where(
        working,
        col(Ticket.first_response_at).is_(None),
        col(Ticket.first_response_due) > since,
        col(Ticket.first_response_due) <= until,
    )
    for ticket in session.exec(first).all():
        assert ticket.first_response_due is not None
        found.append((ticket, "first answer", ticket.first_response_due))
    resolved = select(Ticket).where(
        working, col(Ticket.resolution_due) > since, col(Ticket.resolution_due) <= until
    )
    for ticket in session.exec(resolved).all():
        assert ticket.resolution_due is not None
        found.append((ticket, "resolution", ticket.resolution_due))
    return found


def _told_before(session: Session, ticket: Ticket, detail: str) -> bool:
    return (
        session.exec(
            select(Notification.id).where(
                Notification.ticket_id == ticket.id,
                Notification.kind == DUE,
                Notification.detail == detail,
            )
        ).first()
        is not None
    )


def _mark(session: Session, ticket: Ticket, detail: str, now: datetime) -> int:
    """Remember a due time nobody was there to hear about, so it is not looked at again."""
    assert ticket.id is not None
    row = Notification(agent="", ticket_id=ticket.id, kind=DUE, detail=detail, created_at=now)
    row.sent_at = now
    session.add(row)
    return 0


def _tickets(session: Session, ids: set[int]) -> Sequence[Ticket]:
    return session.exec(select(Ticket).where(col(Ticket.id).in_(ids))).all()


def run_due(store: Store, settings: Settings, now: datetime) -> int:
    """`Notifier.run_due` in a transaction of its own, for `poll` and the daemon: the SLA
    warnings and digests due now. Returns how many digests were queued."""
    with store.write() as session:
        if not known_agents(session):
            return 0
        return Notifier(Outgoing(settings)).run_due(session, now)
