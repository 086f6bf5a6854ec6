"""Support practice applied to tickets: classification rules and SLA due times.

Held by the pipeline (new tickets are classified and given due times in the transaction
that creates them) and used by agent actions (a priority change moves the due times).
"""

from __future__ import annotations

import logging
from datetime import datetime
from pathlib import Path

from sqlmodel import Session

from mailsupport.config import Settings
from mailsupport.mail import Inbound
from mailsupport.rules import TICKET_ACTIONS, Classification, RuleSet, classify, load_rules
from mailsupport.sla import due_times, parse_hours, parse_targets
from mailsupport.store.models import Ticket, TicketTag
from mailsupport.store.tickets import record_event

log = logging.getLogger(__name__)

RULES_ACTOR = "rules"


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

    # -- SLA -----------------------------------------------------------------------------------

    def set_due_times(self, ticket: Ticket) -> None:
        """Due times from the ticket's creation and its priority (again after a change)."""
        ticket.first_response_due, ticket.resolution_due = due_times(
            ticket.created_at, ticket.priority, self.first_response, self.resolution, self.hours
        )
