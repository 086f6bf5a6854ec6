"""What an intake transaction on PostgreSQL holds, so that several pollers file mail at once.

Every other writer takes the desk's writers' lock (db.WRITE_LOCK) and so has the database to
itself, as on SQLite. Intake takes that lock shared instead (db.INTAKE_LOCK): intake
transactions run side by side, and each claims what its decisions read and its writes
change, before it reads them (transaction-level advisory locks, released at commit):

- the Message-IDs a message has and refers to: threading reads their index rows and the
  message writes them, so two messages of one conversation take turns (`conversation`);
- the addresses whose participation it reads (its sender) or writes (its people);
- a ticket it joins, before its row is read (`ticket`), and an outbox item a bounce
  reports on;
- the counts acknowledgements are limited by (`ack_keys`).

What is rare and touches much (merging tickets, an agent's answer or forward by mail) takes
the writers' lock itself (`everything`): it waits for the other intake transactions to
end and keeps the rest out until it ends.

Two transactions that claim the same keys in different orders can deadlock; PostgreSQL
ends one of them (40P01) and intake files that batch again (`contended`). On SQLite, whose
one writer has the database to itself, claiming does nothing.
"""

from __future__ import annotations

from collections.abc import Iterable

import sqlalchemy as sa
from sqlalchemy import exc
from sqlmodel import Session

from mailsupport.store import direct
from mailsupport.store.db import WRITE_LOCK
from mailsupport.store.models import Ticket

# The keys in one statement, each once and in order (two claims of the same keys never
# wait on each other half-way), in the namespace of the desk's schema as db.WRITE_LOCK.
_CLAIM = sa.text(
    "SELECT count(pg_advisory_xact_lock(k)) FROM ("
    " SELECT DISTINCT ('x' || left(md5('mailsupport claim ' || coalesce(current_schema(), '')"
    "  || ' ' || v), 16))::bit(64)::bigint AS k"
    " FROM unnest(CAST(:keys AS text[])) AS v ORDER BY k) AS keys"
)
# SQLSTATEs of a transaction ended because another was in the way (db.RETRY_SQLSTATES):
# the batch succeeds when filed again.
CONTENTION = {"40P01", "55P03", "40001"}


def _claims(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def claim(session: Session, keys: Iterable[str]) -> None:
    """Hold `keys` until the transaction ends (PostgreSQL; elsewhere nothing)."""
    wanted = [key for key in keys if key]
    if wanted and _claims(session):
        direct.write(session, _CLAIM, {"keys": wanted})  # pipelined: the next read waits


def conversation(message_ids: Iterable[str], sender: str) -> list[str]:
    """The keys of a message's Message-IDs (its own and those it refers to) and its sender's
    participation: what threading reads."""
    return [*(f"id {m}" for m in message_ids if m), *addresses([sender])]


def addresses(found: Iterable[str]) -> list[str]:
    """The keys of these addresses' participation in tickets."""
    return [f"address {a.lower()}" for a in found if a]


def ack_keys(to: str, sender: str, domain: str) -> list[str]:
    """The keys of the acknowledgement counts a decision reads."""
    return [f"ack-to {to}", f"ack-from {sender}" if sender else "", f"ack-domain {domain}"]


def ticket(session: Session, ticket_id: int) -> Ticket | None:
    """The ticket's row, claimed and read afresh: one this transaction read before it held
    the claim may have changed since."""
    if not _claims(session):
        return session.get(Ticket, ticket_id)
    claim(session, [f"ticket {ticket_id}"])
    return session.get(Ticket, ticket_id, populate_existing=True)


def everything(session: Session) -> None:
    """The writers' lock, for the rest of the transaction: no other writer runs meanwhile.
    What this transaction read before may have changed until then: read again when used."""
    if _claims(session):
        session.execute(WRITE_LOCK)
        session.flush()
        session.expire_all()


def contended(error: BaseException) -> bool:
    """Whether `error` (or what it was raised from) ended the transaction because another
    was in the way: what filing again cures."""
    while error is not None:
        if isinstance(error, exc.DBAPIError):
            return getattr(error.orig, "sqlstate", None) in CONTENTION
        error = error.__cause__  # type: ignore[assignment]
    return False
