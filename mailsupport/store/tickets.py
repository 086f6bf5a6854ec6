"""Ticket-side storage operations. Each takes an open session; the caller owns the transaction."""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy.orm import make_transient_to_detached
from sqlmodel import Session, SQLModel, col, select

from mailsupport.mail import Address
from mailsupport.mail import Attachment as MailPart
from mailsupport.store import MAILED_ROLES, claims, direct, window
from mailsupport.store.models import (
    Attachment,
    Message,
    MessageRef,
    Participant,
    QuarantineEntry,
    RawMessage,
    Ticket,
    TicketEvent,
)

if TYPE_CHECKING:
    from mailsupport.store.attachments import Attachments

# Threading's lookup lives with the window that reads it ahead; known here by these names.
ThreadFacts = window.ThreadFacts
thread_facts = window.thread_facts


class StoredRaw(NamedTuple):
    """A raw message's row: what the steps after storing it need of it."""

    id: int
    size: int


def save_raw(
    session: Session, raw: bytes, origin: str, now: datetime
) -> Callable[[], tuple[StoredRaw, bool]]:
    """Keep the bytes exactly as they came; the same bytes are stored once. The call
    returned gives the row and whether it is new (bytes never seen before cannot be in the
    quarantine): call it when they are needed, so that on PostgreSQL the answer can come
    with the next read's (direct.Later)."""
    digest = digest_of(raw)
    values = {"sha256": digest, "size": len(raw), "data": raw, "origin": origin, "stored_at": now}
    found, asked = window.stored_raw(session, digest)
    if found is not None:  # the window found them stored
        return lambda: (StoredRaw(found, len(raw)), False)
    drawn = window.new_id(session, RawMessage) if asked else None
    if drawn is not None:  # new bytes, and their id known without waiting (PostgreSQL)
        # Bytes another process stores at this moment make the message's row fail for its
        # raw_id: the batch is filed again, message by message, and finds them.
        direct.write(session, _insert_raw_with_id(), {**values, "id": drawn})
        window.raw_stored(session, digest, drawn)
        return lambda: (StoredRaw(drawn, len(raw)), True)
    # Bytes seen for the first time (nearly always) take one statement; known bytes, or
    # bytes another process stores at the same moment, are looked up after it.
    dialect = session.get_bind().dialect.name
    new = direct.later(session, _insert_raw(dialect), values)

    def stored() -> tuple[StoredRaw, bool]:
        if new.get() is not None:
            window.raw_stored(session, digest, new.get())
            return StoredRaw(new.get(), len(raw)), True
        existing = direct.scalar(session, _raw_by_digest(), {"sha256": digest})
        return StoredRaw(existing, len(raw)), False

    return stored


@functools.cache
def _insert_raw(dialect: str) -> sa.Insert:
    table = RawMessage.__table__  # type: ignore[attr-defined]
    return direct.insert_ignoring(dialect, RawMessage).returning(table.c.id)


def digest_of(raw: bytes) -> str:
    """What stored bytes are known by (raw_messages.sha256)."""
    return hashlib.sha256(raw).hexdigest()


@functools.cache
def _insert_raw_with_id() -> sa.Insert:
    return direct.insert_ignoring("postgresql", RawMessage)


@functools.cache
def _raw_by_digest() -> sa.Select[tuple[int]]:
    table = RawMessage.__table__  # type: ignore[attr-defined]
    return sa.select(table.c.id).where(table.c.sha256 == sa.bindparam("sha256"))


def insert_row(session: Session, model: type[SQLModel], values: dict[str, Any]) -> int:
    """Insert one row without the ORM and return its id. The hot path of intake stores
    rows this way: the unit of work and the model's validation cost more than the insert
    (cProfile of intake), and nothing on that path reads the rows back as objects."""
    drawn = window.new_id(session, model)
    if drawn is not None:  # no answer to wait for (PostgreSQL, in a window)
        direct.write(session, _insert_plain(model), {**values, "id": drawn})
        return drawn
    return int(direct.scalar(session, _insert_returning_id(model), values))


def insert_rows(session: Session, model: type[SQLModel], rows: list[dict[str, Any]]) -> None:
    """insert_row() for several rows at once; no ids."""
    direct.execute_many(session, _insert_plain(model), rows)


@functools.cache
def _insert_returning_id(model: type[SQLModel]) -> sa.Insert:
    table = model.__table__  # type: ignore[attr-defined]
    return sa.insert(table).returning(table.c.id)


@functools.cache
def _insert_plain(model: type[SQLModel]) -> sa.Insert:
    return sa.insert(model.__table__)  # type: ignore[attr-defined]


def quarantine(
    session: Session, raw: StoredRaw, origin: str, error: str, now: datetime
) -> QuarantineEntry:
    """Set a message aside with its error; one entry per raw message, however often it fails."""
    entry = session.exec(select(QuarantineEntry).where(QuarantineEntry.raw_id == raw.id)).first()
    if entry is None:
        entry = QuarantineEntry(raw_id=raw.id, origin=origin, error=error, created_at=now)
    else:
        entry.error = error
    session.add(entry)
    session.flush()
    return entry


def release_quarantine(session: Session, raw: StoredRaw) -> None:
    """The message was stored after all: drop its quarantine entry, if any."""
    session.execute(sa.delete(QuarantineEntry).where(col(QuarantineEntry.raw_id) == raw.id))


def message_exists(session: Session, message_id: str) -> bool:
    return direct.scalar(session, _message_by_id(), {"message_id": message_id}) is not None


@functools.cache
def _message_by_id() -> sa.Select[tuple[int]]:
    table = Message.__table__  # type: ignore[attr-defined]
    return sa.select(table.c.id).where(table.c.message_id == sa.bindparam("message_id"))


def known_refs(session: Session, message_ids: Iterable[str]) -> dict[str, int]:
    """The ticket each of these Message-IDs is indexed to, for those that are known.
    (Read without flushing the session: the index is only ever written by statements.)"""
    wanted = list(dict.fromkeys(message_ids))
    if not wanted:
        return {}
    return dict(direct.rows_in(session, _refs_of, wanted))


@functools.cache
def _refs_of(count: int) -> sa.Select[tuple[str, int]]:
    table = MessageRef.__table__  # type: ignore[attr-defined]
    return sa.select(table.c.message_id, table.c.ticket_id).where(
        direct.in_values(table.c.message_id, count)
    )


def ticket_by_number(session: Session, number: int, *, locked: bool = False) -> Ticket | None:
    """The ticket with this number, following merges to the ticket that lives on. `locked`:
    each ticket on the way locked and read afresh (claims.ticket)."""
    if locked:
        found_id = session.exec(select(Ticket.id).where(Ticket.number == number)).first()
        return follow_merges(session, claims.ticket(session, found_id), locked=True)
    found = session.exec(select(Ticket).where(Ticket.number == number)).first()
    return follow_merges(session, found)


def follow_merges(
    session: Session, ticket: Ticket | None, *, locked: bool = False
) -> Ticket | None:
    """The ticket that lives on after `ticket` was merged (itself when it was not).
    `locked`: see ticket_by_number."""
    seen: set[int] = set()
    while ticket is not None and ticket.merged_into_id is not None and ticket.id not in seen:
        seen.add(ticket.id)  # type: ignore[arg-type]
        following = ticket.merged_into_id
        ticket = claims.ticket(session, following) if locked else session.get(Ticket, following)
    return ticket


def is_participant(session: Session, ticket_id: int, address: str) -> bool:
    found = session.get(Participant, (ticket_id, address.lower()))
    return found is not None and found.role in MAILED_ROLES


def participating(session: Session, ticket_ids: Iterable[int], address: str) -> set[int]:
    """Those of these tickets that `address` takes part in. (Without flushing: participants
    are only ever added by statements.)"""
    wanted = list(dict.fromkeys(ticket_ids))
    if not wanted or not address:
        return set()
    rows = direct.rows_in(session, _participating, wanted, {"address": address.lower()})
    return {ticket_id for (ticket_id,) in rows}


@functools.cache
def _participating(count: int) -> sa.Select[tuple[int]]:
    table = Participant.__table__  # type: ignore[attr-defined]
    return sa.select(table.c.ticket_id).where(
        direct.in_values(table.c.ticket_id, count),
        table.c.address == sa.bindparam("address"),
        sa.or_(*(table.c.role == role for role in MAILED_ROLES)),  # not one only seen in Cc
    )


def create_ticket(
    session: Session,
    subject: str,
    requester: Address | None,
    at: datetime,
    topic_terms: str | None = None,
) -> Ticket:
    """A new ticket, in the database and in the session. Its row goes in by a statement (the
    ORM's unit of work cost intake more than the insert); the object joins the session as
    if loaded, so what the caller changes on it is written when the session flushes. On
    PostgreSQL in intake's batch the row is held back (direct.hold) and written once, with
    its final values, by write_changes(): inserted and then changed, it cost the server a
    second row version and an entry in each of the table's nineteen indexes again."""
    values = {
        **_new_ticket_defaults(),
        "subject": subject,
        "requester": requester.key if requester else "",
        "requester_name": requester.name if requester else "",
        "created_at": at,
        "updated_at": at,
        "topic_terms": topic_terms,
    }
    drawn = window.new_id(session, Ticket) if direct.can_hold(session) else None
    ticket_id = drawn if drawn is not None else insert_row(session, Ticket, values)
    # The object is made as the ORM makes one it loads: the model's __init__ sets and checks
    # every field one at a time, a third of a new ticket's cost in intake's profile.
    ticket = sa.inspect(Ticket).class_manager.new_instance()
    ticket.__dict__.update(values, id=ticket_id, number=None)
    make_transient_to_detached(ticket)
    session.add(ticket)
    ticket.number = ticket.id  # the number agents see; equal to the id, but its own column
    if drawn is not None:
        table: str = Ticket.__tablename__  # type: ignore[assignment]
        direct.hold(session, ticket, table, lambda: _insert_held(session, ticket))
    window.opened(session, ticket_id, ticket_id)
    session.info.setdefault(_CREATED, []).append(ticket)
    return ticket


def write_changes(session: Session, ticket: Ticket) -> None:
    """Write what changed on a loaded `ticket` by one statement now, as the session's flush
    would, and let the ORM take those values as stored. Intake ends each message this way:
    the ORM's flush of a ticket cost more than the UPDATE (intake's profile), and on
    PostgreSQL it waited for the answer, where this one is pipelined. A caller whose
    savepoint rolls back after this must call expire_written() (the ORM, which expires
    what it flushed itself, does not know of these)."""
    if direct.release(session, ticket):  # its row was held back: written now, whole
        return
    state = sa.inspect(ticket)
    if ticket.id is None or not state.persistent or not state.modified:
        return
    values = state.dict
    changed = {  # the attributes set since the ticket was loaded (a value set again too)
        key: values[key] for key in state.committed_state if key != "id" and key in values
    }
    if changed:  # (the object in the session has them: nothing for store/window.py)
        direct.set_by_id(session, Ticket, ticket.id, **changed)
        session.info.setdefault(_WRITTEN, []).append(ticket)
    # What the ORM does after its own UPDATE: the values are the stored ones now and the
    # object is not modified. (The public set_committed_value leaves it marked modified, and
    # the next flush would go through all of it again: no faster than before.)
    state._commit_all(state.dict, session.identity_map)


def _insert_held(session: Session, ticket: Ticket) -> None:
    """The row of a new ticket held back (create_ticket), with the values it has now; the
    ORM takes them as stored, as after write_changes()."""
    state = sa.inspect(ticket)
    values = state.dict
    direct.write(session, _insert_plain(Ticket), {key: values[key] for key in _ALL_COLUMNS})
    state._commit_all(values, session.identity_map)


def expire_written(session: Session) -> None:
    """After a savepoint that wrote tickets by write_changes() rolled back: make the ORM read
    them again (it took the values written as stored)."""
    for ticket in session.info.pop(_WRITTEN, ()):
        if ticket in session:
            session.expire(ticket)


def forget_written(session: Session) -> None:
    """A message's writes stand (its savepoint was released): nothing to take back."""
    session.info.pop(_WRITTEN, None)


_WRITTEN = "mailsupport_written_tickets"


def created_tickets(session: Session) -> int:
    """How many tickets create_ticket() has made in this session so far (see forget_created)."""
    return len(session.info.get(_CREATED, ()))


def forget_created(session: Session, since: int) -> None:
    """Take out of the session the tickets create_ticket() made after the first `since`,
    after a savepoint that inserted them was rolled back. (The ORM forgets the objects it
    inserted itself; these it took for loaded rows, which would clash with a new ticket
    given the same id.)"""
    created = session.info.get(_CREATED, [])
    for ticket in created[since:]:
        if ticket in session:
            session.expunge(ticket)
    del created[since:]


_CREATED = "mailsupport_created_tickets"


@functools.cache
def _new_ticket_defaults() -> dict[str, Any]:
    """The columns of a new ticket as the model's defaults fill them (plain values)."""
    blank = Ticket(subject="", created_at=datetime.min, updated_at=datetime.min)
    return {name: getattr(blank, name) for name in _TICKET_COLUMNS}


_ALL_COLUMNS = tuple(column.key for column in Ticket.__table__.columns)  # type: ignore[attr-defined]
_TICKET_COLUMNS = tuple(key for key in _ALL_COLUMNS if key not in ("id", "number"))


def index_refs(
    session: Session,
    ticket_id: int,
    message_ids: Iterable[str],
    unseen: Iterable[str] | None = None,
) -> None:
    """Point each ID at the ticket unless it is indexed already (possibly by another process).
    `unseen`: those that threading found in no ticket (None: not looked up), the only ones
    this can point anywhere. On PostgreSQL, where another poller may have indexed one of
    them since, their rows must go in (claims.index_checked)."""
    ids = list(dict.fromkeys(message_ids))
    window.indexed(session, ticket_id, ids if unseen is None else set(unseen).intersection(ids))
    checked = claims.index_checked(session, ticket_id, set(unseen or ()).intersection(ids))
    rows = [{"message_id": mid, "ticket_id": ticket_id} for mid in ids if mid not in checked]
    _insert_new(session, MessageRef, rows)


def store_message(
    session: Session,
    values: dict[str, Any],
    attachments: Sequence[MailPart],
    files: Attachments,
    refs: Iterable[str],
    *,
    counts: bool = True,
    ticket: Ticket | None = None,
    unseen: Iterable[str] | None = None,
) -> direct.Later:
    """Insert a ticket message (`values`: Message's columns) with its attachments, their
    bytes kept in `files`, and index `refs` (its own Message-ID and those it refers to) to
    its ticket, so that mail referring to any of them threads there. Incoming and our own
    mail are stored alike. The ticket's `last_writer` follows the customer's mail and an
    agent's, unless not `counts` (a bounce). `ticket`, when the caller has it loaded, takes
    the change with its own (no statement of its own). Returns the message's primary key,
    read when asked for (direct.Later). `unseen`: see index_refs."""
    drawn = window.new_id(session, Message)
    if drawn is not None:  # no answer to wait for (PostgreSQL, in a window)
        direct.write(session, _insert_plain(Message), {**values, "id": drawn})
        message_pk = direct.Later.known(drawn)
    else:
        message_pk = direct.later(session, _insert_returning_id(Message), values)
    window.wrote_message(session, values)
    writer = last_writer_of(values["direction"], values.get("author", "")) if counts else ""
    if writer and ticket is not None:
        ticket.last_writer = writer
    elif writer:
        direct.set_by_id(session, Ticket, values["ticket_id"], last_writer=writer)
        window.touched(session, values["ticket_id"])
    rows = [
        {
            "message_pk": message_pk.get(),
            "filename": part.filename,
            "content_type": part.content_type,
            "size": len(part.data),
            "sha256": files.put(session, part.data),
            "content_id": part.content_id,
            "inline": part.inline,
        }
        for part in attachments
    ]
    insert_rows(session, Attachment, rows)
    index_refs(session, values["ticket_id"], refs, unseen)
    return message_pk


def _latest_writer(session: Session, ticket_id: int) -> str:
    """`last_writer` as the ticket's messages say (after a merge brought in others)."""
    latest = session.exec(
        select(Message.direction, Message.author)
        .where(
            Message.ticket_id == ticket_id,
            sa.or_(
                col(Message.direction) == "in",
                sa.and_(col(Message.direction) == "out", col(Message.author) != ""),
            ),
        )
        .order_by(col(Message.received_at).desc(), col(Message.id).desc())
        .limit(1)
    ).first()
    return last_writer_of(*latest) if latest else ""


def last_writer_of(direction: str, author: str) -> str:
    """Who a message makes the last writer: the customer (incoming mail), us (our mail an
    agent wrote), or nobody new ("": acknowledgements, notices without an author, notes)."""
    if direction == "in":
        return "customer"
    return "us" if direction == "out" and author else ""


def add_participants(
    session: Session, ticket: Ticket, people: Sequence[tuple[Address, str]], at: datetime
) -> None:
    """Add (address, role) pairs not yet on the ticket; those on it keep their role."""
    assert ticket.id is not None
    rows = {  # the first mention of an address wins, as it would one at a time
        person.key: {
            "ticket_id": ticket.id,
            "address": person.key,
            "name": person.name,
            "role": role,
            "first_seen": at,
        }
        for person, role in reversed(people)
        if person.address
    }
    window.joined(session, ticket.id, [(row["address"], row["role"]) for row in rows.values()])
    _insert_new(session, Participant, list(reversed(rows.values())))


def set_role(
    session: Session, ticket: Ticket, person: Address, role: str, at: datetime
) -> str | None:
    """Make `person` a participant of `ticket` with `role`; the role they had, or None."""
    assert ticket.id is not None
    window.joined(session, ticket.id, [(person.key, role)], replace=True)
    row = session.get(Participant, (ticket.id, person.key))
    if row is None:
        session.add(
            Participant(
                ticket_id=ticket.id, address=person.key, name=person.name, role=role, first_seen=at
            )
        )
        session.flush()
        return None
    before = row.role
    row.role = role
    if person.name and not row.name:
        row.name = person.name
    session.add(row)
    session.flush()
    return before


def participants(session: Session, ticket: Ticket) -> list[Participant]:
    """The ticket's participants in the order they came."""
    return list(
        session.exec(
            select(Participant)
            .where(Participant.ticket_id == ticket.id)
            .order_by(col(Participant.first_seen), col(Participant.address))
        ).all()
    )


def _insert_new(session: Session, model: type[SQLModel], rows: list[dict[str, Any]]) -> None:
    """Insert the rows whose key is not in the table yet, in one statement (an intake
    profile showed a lookup and an ORM flush per row costing more than the rest)."""
    if not rows:
        return
    if any(isinstance(pending, model) for pending in session.new):
        session.flush()  # rows of this model added as objects go first
    statement = direct.insert_ignoring(session.get_bind().dialect.name, model)
    direct.execute_many(session, statement, rows)


def record_event(
    session: Session, ticket_id: int, action: str, detail: str, at: datetime, actor: str = "system"
) -> None:
    """One line of the ticket's history, written at once (by a statement, not the ORM)."""
    values = {"ticket_id": ticket_id, "at": at, "actor": actor, "action": action, "detail": detail}
    direct.write(session, _insert_plain(TicketEvent), values)


def merge_tickets(
    session: Session,
    target: Ticket,
    sources: Sequence[Ticket],
    reason: str,
    at: datetime,
    actor: str = "system",
) -> None:
    """Move everything of `sources` into `target`; the sources are closed and point at it."""
    assert target.id is not None
    source_ids = [t.id for t in sources]
    for table, column in (
        (Message, Message.ticket_id),
        (MessageRef, MessageRef.ticket_id),
        (TicketEvent, TicketEvent.ticket_id),
    ):
        session.execute(
            sa.update(table).where(col(column).in_(source_ids)).values(ticket_id=target.id)
        )
    session.execute(
        sa.update(Ticket)
        .where(col(Ticket.merged_into_id).in_(source_ids))
        .values(merged_into_id=target.id)
    )
    target.last_writer = _latest_writer(session, target.id)
    for source in sources:
        moved = session.exec(select(Participant).where(Participant.ticket_id == source.id)).all()
        for person in moved:
            if session.get(Participant, (target.id, person.address)) is None:
                session.add(
                    Participant(
                        ticket_id=target.id,
                        address=person.address,
                        name=person.name,
                        role=person.role,
                        first_seen=person.first_seen,
                    )
                )
            session.delete(person)
        if source.created_at < target.created_at:
            target.created_at = source.created_at
            target.subject, target.requester = source.subject, source.requester
            target.requester_name = source.requester_name
        target.updated_at = max(target.updated_at, source.updated_at)
        source.status, source.closed_at, source.merged_into_id = "closed", at, target.id
        session.add(source)
        record_event(
            session, target.id, "merged", f"#{source.number} merged in: {reason}", at, actor
        )
        record_event(session, source.id, "merged", f"merged into #{target.number}", at, actor)  # type: ignore[arg-type]
    # Its first incoming message may be one it took over, and its subject may have changed.
    target.topic_terms = first_topic_terms(session, target.id, target.subject)
    session.add(target)
    session.flush()


def first_topic_terms(session: Session, ticket_id: int, subject: str) -> str | None:
    """The topic terms (mailsupport.topicterms) of a ticket with this subject, from its first
    incoming message as stored (None: it has none)."""
    from mailsupport.topicterms import ticket_terms

    first = session.execute(
        sa.select(col(Message.text), col(Message.received_at))
        .where(col(Message.ticket_id) == ticket_id, col(Message.direction) == "in")
        .order_by(col(Message.received_at), col(Message.id))
        .limit(1)
    ).first()
    return None if first is None else ticket_terms(subject, first.text, first.received_at)
