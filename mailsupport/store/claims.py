"""How intake transactions on PostgreSQL file mail side by side (several pollers) and still
decide what one at a time would decide.

Every other writer takes the desk's writers' lock (db.WRITE_LOCK) and so has the database to
itself, as on SQLite. Intake takes that lock shared (db.INTAKE_LOCK), so intake transactions
run at the same time, and each makes sure of what its decisions read:

- **Tickets by their rows' locks.** Threading locks the tickets a message's Message-IDs
  point at (FOR UPDATE, in the order of their ids) before it reads who takes part in them
  (store.tickets.thread_facts), and a ticket is locked before its row is read to be changed
  (`ticket`; tickets.ticket_by_number with `locked`): another message joining the same
  ticket waits for this transaction to end and then reads what it wrote. A row lock is
  kept in the row itself, not in PostgreSQL's shared lock table, so a batch may hold
  thousands (advisory locks per Message-ID, tried first, filled that table with a few
  pollers' batches).
- **The Message-ID index by its unique key.** A Message-ID that threading found in no
  ticket, and that another transaction indexed meanwhile, cannot go in for this message:
  the insert says so (`index_checked`), and before the batch commits (`verify`) that
  makes the whole batch be filed again (Contended), now seeing the other's rows.
- **What is rare and touches much** (merging tickets, an agent's answer or forward by mail)
  takes the writers' lock itself (`everything`): it waits for the other intake
  transactions to end and keeps them out until it ends.

Two batches can still lock two tickets in opposite orders; PostgreSQL then fails one of
them (40P01), which is filed again too (batching.file_batch). Not made exact: the counts
acknowledgements are limited by (ACK_LIMIT, ACK_DOMAIN_LIMIT) see what other pollers have
committed, not what they are filing in the same second. On SQLite, whose one writer has the
database to itself, all of this does nothing.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy import exc
from sqlmodel import Session

from mailsupport.errors import TemporaryError
from mailsupport.store import direct
from mailsupport.store.db import WRITE_LOCK
from mailsupport.store.models import MessageRef, OutboxItem, Ticket

# SQLSTATEs of a transaction ended because another was in the way (db.RETRY_SQLSTATES):
# the batch succeeds when filed again.
CONTENTION = {"40P01", "55P03", "40001"}
# session.info: the index inserts whose rows must all have gone in (index_checked).
_EXPECTED = "mailsupport.claims.expected"


class Contended(TemporaryError):
    """Another transaction indexed a Message-ID this one found nowhere: file it again."""


def _claims(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def ticket(session: Session, ticket_id: int | None) -> Ticket | None:
    """The ticket's row, locked and read afresh: one this transaction read before may have
    changed since."""
    if ticket_id is None:
        return None
    if not _claims(session):
        return session.get(Ticket, ticket_id)
    return session.get(Ticket, ticket_id, with_for_update=True, populate_existing=True)


def outbox_item(session: Session, item: OutboxItem) -> OutboxItem:
    """`item` locked and read afresh, before a bounce changes it."""
    if _claims(session):
        session.get(OutboxItem, item.id, with_for_update=True, populate_existing=True)
    return item


def lock_tickets_of(session: Session, message_ids: Sequence[str]) -> None:
    """Lock the tickets these Message-IDs point at, in one order for every locker (fewer
    deadlocks). Sent without waiting: what the caller reads next runs after it all the same."""
    if message_ids and _claims(session):
        direct.write_in(session, _lock_tickets_of, message_ids)


@functools.cache
def _lock_tickets_of(count: int) -> sa.Select[tuple[int]]:
    refs = MessageRef.__table__  # type: ignore[attr-defined]
    tickets = Ticket.__table__  # type: ignore[attr-defined]
    linked = sa.select(refs.c.ticket_id).where(direct.in_values(refs.c.message_id, count))
    return (
        sa.select(tickets.c.id).where(tickets.c.id.in_(linked)).order_by(tickets.c.id)
    ).with_for_update()


def index_checked(session: Session, ticket_id: int, unseen: set[str]) -> set[str]:
    """Index the Message-IDs of `unseen` (threading found them in no ticket) to the ticket
    by a statement that says which went in, for verify(); returns those it took on
    (PostgreSQL; elsewhere none: the caller indexes them as the others)."""
    if not unseen or not _claims(session):
        return set()
    values = {"ids": sorted(unseen), "ticket_id": ticket_id}
    cursor = direct.sent(session, _index(), values)
    session.info.setdefault(_EXPECTED, []).append((cursor, unseen))
    return unseen


@functools.cache
def _index() -> sa.Insert:
    """One that another transaction indexed since threading looked is not returned. (An
    insert construct, not text: it may wait behind a held ticket row, direct.hold.)"""
    from sqlalchemy.dialects.postgresql import ARRAY, insert

    refs = MessageRef.__table__  # type: ignore[attr-defined]
    ids = sa.func.unnest(sa.cast(sa.bindparam("ids"), ARRAY(sa.Text)))
    chosen = sa.select(ids, sa.bindparam("ticket_id", type_=sa.Integer))
    return (
        insert(refs)
        .from_select(["message_id", "ticket_id"], chosen)
        .on_conflict_do_nothing()
        .returning(refs.c.message_id)
    )


def verify(session: Session) -> None:
    """Raise Contended when an index insert of index_checked() found a Message-ID indexed
    by another transaction since threading looked it up."""
    for cursor, wanted in session.info.pop(_EXPECTED, ()):
        missing = wanted - {row[0] for row in direct.fetched(session, cursor)}
        if missing:
            raise Contended(
                f"<{min(missing)}> was indexed by another process while this one filed "
                "its mail; filing it again"
            )


def everything(session: Session) -> None:
    """The writers' lock, for the rest of the transaction: no other writer runs meanwhile.
    What this transaction read before may have changed until then: read again when used."""
    session.info[_EVERYTHING] = times_everything(session) + 1
    if _claims(session):
        session.execute(WRITE_LOCK)
        session.flush()
        session.expire_all()


def times_everything(session: Session) -> int:
    """How often this session took everything(): what it read before may have moved (a
    merge, an agent's mail), on SQLite too (store/window.py)."""
    return int(session.info.get(_EVERYTHING, 0))


_EVERYTHING = "mailsupport.claims.everything"


def contended(error: BaseException | None) -> bool:
    """Whether `error` (or what it was raised from) ended the transaction because another
    was in the way: what filing again cures."""
    while error is not None:
        if isinstance(error, Contended):
            return True
        if isinstance(error, exc.DBAPIError):
            return getattr(error.orig, "sqlstate", None) in CONTENTION
        if getattr(error, "sqlstate", None) in CONTENTION:  # the driver's own
            return True
        error = error.__cause__
    return False
