"""Support practice applied to tickets: spam and automatic mail set apart, classification
rules, and SLA due times.

Held by the pipeline (new tickets are classified and given due times in the transaction
that creates them) and used by agent actions (a priority change moves the due times).
"""

from __future__ import annotations

import logging
from datetime import datetime
from pathlib import Path

from sqlmodel import Session

from mailsupport.automated import automatic_kind
from mailsupport.config import Settings
from mailsupport.mail import Inbound
from mailsupport.rules import TICKET_ACTIONS, Classification, RuleSet, classify, load_rules
from mailsupport.sla import due_times, parse_hours, parse_targets
from mailsupport.spam import spam_verdict
from mailsupport.store import NO_NOTIFY
from mailsupport.store.models import Ticket, TicketTag
from mailsupport.store.tickets import record_event

log = logging.getLogger(__name__)

RULES_ACTOR = "rules"


class Dropped(Exception):
    """A classification rule said drop = true: the message goes to the quarantine."""

    def __init__(self, rule: str) -> None:
        super().__init__(f"dropped by rule {rule!r} (drop = true)")


class Practice:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.first_response = parse_targets(settings.sla_first_response)
        self.resolution = parse_targets(settings.sla_resolution)
        self.hours = parse_hours(settings.business_hours, settings.timezone)
        self._rules: RuleSet | None = None
        self._rules_stamp: tuple[float, int] | None = None

    # -- rules ---------------------------------------------------------------------------------

    def rules(self) -> RuleSet | None:
        """The rules file in effect, read again when it changes; None when none is set.
        A file that has become broken raises ConfigError (startup) — see `classify_new`."""
        if not self.settings.rules_file:
            return None
        path = Path(self.settings.rules_file)
        try:
            stat = path.stat()
            stamp = (stat.st_mtime, stat.st_size)
        except OSError:
            stamp = None
        if self._rules is None or stamp != self._rules_stamp:
            self._rules = load_rules(path)
            self._rules_stamp = stamp
        return self._rules

    def check(self) -> None:
        """Raise ConfigError for a bad rules file: run at startup, before any mail is taken."""
        self.rules()

    def classify_new(
        self, session: Session, ticket: Ticket, message: Inbound, now: datetime
    ) -> Classification | None:
        """Apply the rules to a new ticket and record what they set and why."""
        try:
            rules = self.rules()
        except Exception as error:  # edited into a broken state while running: keep taking mail
            log.error("classification rules not applied to ticket #%s: %s", ticket.number, error)
            return None
        if rules is None:
            return None
        result = classify(rules, message)
        changes = result.changes()
        if not changes:
            return result
        assert ticket.id is not None
        for key, value in changes.items():
            if key in TICKET_ACTIONS and key != "tags":  # the rest is the pipeline's to apply
                setattr(ticket, key, value)
        for tag in changes.get("tags", []):
            if session.get(TicketTag, (ticket.id, tag)) is None:
                session.add(TicketTag(ticket_id=ticket.id, tag=tag))
        names = ", ".join(name for name, _ in result.matched)
        what = ", ".join(
            f"{k} {' '.join(v) if isinstance(v, list) else v}" for k, v in changes.items()
        )
        record_event(session, ticket.id, "classified", f"{what} (rules: {names})", now, RULES_ACTOR)
        session.add(ticket)
        return result

    # -- new tickets: spam, automatic mail, what the rules say ----------------------------

    def set_aside_spam(
        self, session: Session, ticket: Ticket, message: Inbound, now: datetime
    ) -> str:
        """A new ticket whose mail a spam filter condemned gets the `spam` status (no
        acknowledgement, no due times, not in `list` or the report). Returns why, or ""."""
        verdict = spam_verdict(message, self.settings.spam_score)
        if verdict:
            ticket.status = "spam"
            session.add(ticket)
            record_event(session, ticket.id, "spam", verdict, now)  # type: ignore[arg-type]
        return f"spam: {verdict}" if verdict else ""

    @staticmethod
    def handle(
        session: Session, ticket: Ticket, classified: Classification | None, now: datetime
    ) -> str:
        """What the classification rules say about handling a new ticket: a status (spam,
        or closed silently), no acknowledgement, no mail at all, or no ticket (Dropped).
        Returns why no acknowledgement, or ""."""
        if classified is None:
            return ""
        by = classified.decided_by
        if classified.drop:
            raise Dropped(by["drop"])
        assert ticket.id is not None
        if classified.status:
            detail = f"{ticket.status} -> {classified.status} (rule {by['status']!r})"
            record_event(session, ticket.id, "status", detail, now, RULES_ACTOR)
            ticket.status = classified.status
            ticket.closed_at = now if classified.status == "closed" else None
            session.add(ticket)
        if classified.notify is False:
            detail = f"no mail to the customer (rule {by['notify']!r})"
            record_event(session, ticket.id, NO_NOTIFY, detail, now, RULES_ACTOR)
            return f"rule {by['notify']!r} says notify = false"
        if classified.ack is False:
            return f"rule {by['ack']!r} says ack = false"
        if classified.status:
            return f"rule {by['status']!r} set the status {classified.status}"
        return ""

    def mark_automatic(
        self, session: Session, ticket: Ticket, message: Inbound, now: datetime
    ) -> None:
        """Record once, on the new ticket, that automatic mail opened it: such tickets get no
        acknowledgement, closing notice or due times, and the report counts them apart."""
        kind = automatic_kind(message, self.settings.our_addresses)
        if kind:
            ticket.automatic = kind
            session.add(ticket)
            detail = f"opened by automatic mail ({kind})"
            record_event(session, ticket.id, "automatic", detail, now)  # type: ignore[arg-type]

    # -- SLA -----------------------------------------------------------------------------------

    def set_due_times(self, ticket: Ticket) -> None:
        """Due times from the ticket's creation and its priority (again after a change)."""
        ticket.first_response_due, ticket.resolution_due = due_times(
            ticket.created_at, ticket.priority, self.first_response, self.resolution, self.hours
        )
