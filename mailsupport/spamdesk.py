"""Spam tickets by hand: an agent sets a ticket aside as spam, or releases one a spam filter
set aside. Each action by ticket number in its own transaction (as desk.py does)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlmodel import Session

from mailsupport.agent import ticket as find_ticket
from mailsupport.desk import Desk
from mailsupport.errors import RefusedError, UsageError
from mailsupport.outbox.admin import withdraw
from mailsupport.practice import Practice
from mailsupport.store.models import Ticket
from mailsupport.store.spam import Purged, purge_old_spam
from mailsupport.store.tickets import record_event

SPAM = "spam"


def mark_spam(session: Session, t: Ticket, *, agent: str, now: datetime) -> None:
    """Set the ticket aside as spam: out of `list` and the report, no due times, and its
    mail not yet sent (an acknowledgement to a forged sender) withdrawn from the outbox."""
    if t.status == SPAM:
        raise RefusedError(f"ticket #{t.number} is spam already")
    assert t.id is not None
    record_event(session, t.id, "status", f"{t.status} -> {SPAM}", now, agent)
    reason = f"not sent: ticket #{t.number} was marked spam by {agent}"
    if withdrawn := withdraw(session, t.id, reason, now):
        record_event(
            session, t.id, "outbox", f"{withdrawn} unsent message(s) withdrawn", now, agent
        )
    t.status, t.closed_at = SPAM, None
    t.first_response_due = t.resolution_due = None
    session.add(t)


def release(session: Session, t: Ticket, *, agent: str, now: datetime, practice: Practice) -> None:
    """Take the ticket out of spam: it is new again, with due times as any ticket (counted
    from its creation) unless automatic mail opened it. No acknowledgement is sent: an agent
    who looked at it answers better than a template, days later."""
    if t.status != SPAM:
        raise RefusedError(f"ticket #{t.number} is {t.status}, not spam")
    assert t.id is not None
    record_event(session, t.id, "status", f"{SPAM} -> new (not spam)", now, agent)
    t.status = "new"
    if not t.automatic:
        practice.set_due_times(t)
    session.add(t)


@dataclass(frozen=True, slots=True)
class SpamDesk:
    """Spam sorting at the agent's `desk`: its store, settings, agent and clock."""

    desk: Desk

    def mark(self, number: int) -> Ticket:
        with self.desk.store.write() as session:
            t = find_ticket(session, number)
            mark_spam(session, t, agent=self.desk.agent, now=self.desk.clock())
        return t

    def release(self, number: int) -> Ticket:
        desk = self.desk
        with desk.store.write() as session:
            t = find_ticket(session, number)
            practice = Practice(desk.settings)
            release(session, t, agent=desk.agent, now=desk.clock(), practice=practice)
        return t

    def purge(self) -> Purged:
        """Delete the spam tickets not updated for MAILSUPPORT_SPAM_DAYS days; their mail
        stays in the quarantine."""
        days = self.desk.settings.spam_days
        if not days:
            raise UsageError("MAILSUPPORT_SPAM_DAYS is 0: spam is never purged; set it first")
        return purge_old_spam(self.desk.store, days, self.desk.clock())
