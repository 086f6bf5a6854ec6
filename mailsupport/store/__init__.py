"""Storage: SQLModel tables, the database session, raw and attachment stores.

The constants here are importable without SQLAlchemy, so that settings validation and the
fast read path of `list` and `show` do not pay for loading it.
"""

import re

# The Alembic revision this code expects. tests/unit/test_store.py checks it is the head.
SCHEMA_REVISION = "0021"

# "spam": set aside by a spam verdict; outside the default `list`, no SLA, not in the report.
TICKET_STATUSES = ("new", "open", "pending", "closed", "spam")
PRIORITIES = ("low", "normal", "high", "urgent")
# Most urgent first: the order of `list --sort priority` and of `next`, which two indexes
# of tickets give without sorting (models.Ticket; migration 0018 has the same expression).
PRIORITY_RANK = (
    "(CASE priority WHEN 'urgent' THEN 0 WHEN 'high' THEN 1 WHEN 'normal' THEN 2 "
    "WHEN 'low' THEN 3 ELSE 4 END)"
)
# Their names (the schema comparison leaves them out: search.include_object).
EXPRESSION_INDEXES = ("ix_tickets_priority_rank", "ix_tickets_waiting_priority")
DIRECTIONS = ("in", "out", "note")
# Messages in which a person on our side answered: an agent's reply (`reply` says who) or our
# mail imported from a Sent folder (it has raw bytes; mail composed here has none), not our
# automatic mail. The report's first response for tickets without a stored one; a partial
# index of messages (migration 0019 has the same condition) makes that a lookup.
AGENT_ANSWERS = "direction = 'out' AND (thread_reason LIKE 'reply by %' OR raw_id IS NOT NULL)"
# A participant's role. Requesters and cc are mailed with every reply; "seen" are addresses
# that mail after the ticket's first message brought in: shown, mailed only once an agent
# adds them (they could be anyone a stranger put in Cc). Only mailed roles take part in
# threading.
REQUESTER, CC, SEEN = "requester", "cc", "seen"
MAILED_ROLES = (REQUESTER, CC)
# The event a rule's `notify = false` leaves on a ticket: the desk mails its customer nothing
# on its own (no acknowledgement, no closing notice).
NO_NOTIFY = "no-notify"
# A tag, queue or type name: letters, digits and a few separators, no spaces.
NAME = re.compile(r"[^\W_][\w.:/-]*")
