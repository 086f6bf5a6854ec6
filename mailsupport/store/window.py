"""What the next messages of a batch need to know from the store, asked for all at once.

On PostgreSQL a read waits for every write sent before it (direct.pipelined): each read in
a message's path kept the poll idle while the server stored the message before, and the
server idle while the poll worked, so the two took turns. Before a window of messages is
filed (batching.file_batch), one round trip asks for everything their filing would read:
the thread facts of each message (their tickets locked first, as thread_facts() does), the
raw messages already stored with the same bytes, the acknowledgements counted for their
senders, and ids drawn from the sequences for the rows they will insert. (SQLite: intake
files without a window, Pipeline.take; a read there waits for nothing.)

What the window's own messages write afterwards can make an answer stale. Each write that
could is recorded here (a Message-ID indexed, a ticket opened, its participants or row
changed, an acknowledgement made, a merge). An answer that meets one is brought up to date
from those records where they say exactly what a read would find (_since_read, the counts
of acknowledgements), and otherwise not used: that message reads again, as without a
window. So every message decides on what it would have read itself.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlmodel import Session, SQLModel, col, select

from mailsupport.store import MAILED_ROLES, claims, direct
from mailsupport.store.models import (
    Message,
    MessageRef,
    OutboxItem,
    Participant,
    RawMessage,
    Ticket,
)

_KEY = "mailsupport.window"


class ThreadFacts(NamedTuple):
    """What threading needs to know of a message's Message-IDs (see thread_facts)."""

    known: dict[str, int]  # the ticket each indexed Message-ID points at
    numbers: dict[int, int]  # the number agents see of each of those tickets
    taking_part: set[int]  # those tickets the sender takes part in (a mailed role)


class AckKeys(NamedTuple):
    """Whose acknowledgements are counted for a message (acks.Acknowledger._recent_acks):
    to its recipient, of mail from its sender, of mail from its domain ("" = not counted)."""

    to: str
    sender: str
    domain: str


@dataclass(frozen=True, slots=True)
class Wanted:
    """What one parsed message of a window will ask for (Pipeline.read_ahead)."""

    message_ids: tuple[str, ...]  # its own and those it refers to, as thread_facts gets them
    address: str  # its sender's
    ack: AckKeys | None = None  # whose acknowledgements count, when it may get one


@dataclass
class Window:
    facts: dict[tuple[tuple[str, ...], str], ThreadFacts] = field(default_factory=dict)
    raws: dict[str, int] = field(default_factory=dict)  # digest -> stored raw message's id
    digests: set[str] = field(default_factory=set)  # those asked for
    acks: dict[AckKeys, tuple[int, int, int]] = field(default_factory=dict)
    ids: dict[str, list[int]] = field(default_factory=dict)  # table -> ids drawn, unused
    # Written by this transaction since the window was read:
    indexed: set[str] = field(default_factory=set)  # Message-IDs that may point elsewhere now
    people: set[tuple[int, str]] = field(default_factory=set)  # (ticket, address) added
    touched: set[int] = field(default_factory=set)  # tickets' rows changed by a statement
    # What those writes did, as far as threading reads it (thread_facts), while `overlay`:
    pointed: dict[str, int] = field(default_factory=dict)  # Message-ID -> its ticket now
    opened: dict[int, int] = field(default_factory=dict)  # new tickets' ids -> numbers
    roles: dict[tuple[int, str], str] = field(default_factory=dict)  # (ticket, address)
    overlay: bool = True  # False after a savepoint rolled some of it back
    made: list[tuple[str | None, str | None, str | None]] = field(default_factory=list)
    moves: int = 0  # claims.times_everything() when read: once it changes, none is used
    # Tickets read with the window, locked (held here: the session keeps them only weakly).
    loaded: dict[int, Ticket] = field(default_factory=dict)


def current(session: Session) -> Window | None:
    """The window being filed, unless something moved much since it was read (a merge)."""
    window = session.info.get(_KEY)
    if window is None or window.moves != claims.times_everything(session):
        return None
    return window


def read_ahead(
    session: Session, wanted: Sequence[Wanted], digests: Sequence[str], since: datetime
) -> None:
    """Ask for what the `wanted` messages will read, and whether the bytes of `digests`
    are stored, and keep it for them: one wait on PostgreSQL for all of it, and a short
    second one for the new tickets' ids. `since`: where the acknowledgement counts start
    (the counting window at the first message's time)."""
    pending = session.info.get(_KEY)
    window = Window(  # ids drawn and not used carry on
        ids=pending.ids if pending is not None else {}, moves=claims.times_everything(session)
    )
    session.info[_KEY] = window
    wanted = list(dict.fromkeys(wanted))
    union = sorted({i for w in wanted for i in w.message_ids})
    claims.lock_tickets_of(session, union)
    facts = [
        (w, direct.sent_in(session, _facts_of, w.message_ids, _sender(w.address))) for w in wanted
    ]
    digests = sorted(set(digests))
    raws = direct.sent_in(session, _raws_by_digest, digests)
    keys = list(dict.fromkeys(w.ack for w in wanted if w.ack is not None))
    counts = [direct.sent(session, acks_since(), {**k._asdict(), "since": since}) for k in keys]
    # Rows a message may insert: its raw bytes, itself and our acknowledgement's copy, the
    # acknowledgement's outbox item. Ids not used go to the next window of the transaction.
    draws = _draw(session, window, {RawMessage: len(digests), Message: 2 * len(wanted)})
    draws += _draw(session, window, {OutboxItem: len(keys)})
    window.loaded = _load_tickets(session, union)  # (PostgreSQL: waits for all of the above)
    for w, cursors in facts:  # the answers, in the order asked
        window.facts[w.message_ids, w.address] = _facts_from(
            direct.fetched_in(session, cursors), w.address
        )
    window.raws = dict(direct.fetched_in(session, raws))
    window.digests = set(digests)
    for key, cursor in zip(keys, counts, strict=True):
        [row] = direct.fetched(session, cursor)
        window.acks[key] = (int(row[0]), int(row[1]), int(row[2]))
    _drawn(session, window, draws)
    # A message none of whose Message-IDs is known opens a ticket, nearly always: drawn
    # now, as many as that (a ticket's id is its number: an id drawn and not used is a
    # number skipped, so not one more).
    opening = sum(1 for w in wanted if not window.facts[w.message_ids, w.address].known)
    _drawn(session, window, _draw(session, window, {Ticket: opening}))


def _load_tickets(session: Session, message_ids: list[str]) -> dict[int, Ticket]:
    """Read afresh the tickets these Message-IDs point at, which the window locked, as a
    message joining one would (claims.ticket): PostgreSQL, where that read waits."""
    if not message_ids or session.get_bind().dialect.name != "postgresql":
        return {}
    refs = sa.select(MessageRef.ticket_id).where(col(MessageRef.message_id).in_(message_ids))
    found = session.exec(
        select(Ticket).where(col(Ticket.id).in_(refs)).execution_options(populate_existing=True)
    )
    return {ticket.id: ticket for ticket in found if ticket.id is not None}


def ticket(session: Session, ticket_id: int | None) -> Ticket | None:
    """claims.ticket(): the ticket's row, locked and read afresh; the object in the session
    when the window read it or a message of the window opened it (this transaction's own
    row) and no statement changed it since (what changed through the object, it has)."""
    window = current(session)
    if window is not None and ticket_id is not None and ticket_id not in window.touched:
        found = window.loaded.get(ticket_id)
        if found is None and ticket_id in window.opened:
            found = session.get(Ticket, ticket_id)  # (create_ticket keeps it in the session)
        if found is not None and found in session:
            return found
    return claims.ticket(session, ticket_id)


def _sender(address: str) -> dict[str, Any]:
    """The parameter of _facts_of besides the Message-IDs."""
    return {"address": address.lower()}


def _draw(
    session: Session, window: Window, counts: dict[type[SQLModel], int]
) -> list[tuple[str, Any]]:
    """Ask for ids from these tables' sequences, as many as `counts` less those the window
    has (PostgreSQL only: elsewhere an insert's id costs no wait)."""
    if session.get_bind().dialect.name != "postgresql":
        return []
    asked = []
    for model, count in counts.items():
        table: str = model.__tablename__  # type: ignore[assignment]
        missing = count - len(window.ids.get(table, ()))
        if missing > 0:
            asked.append((table, direct.sent(session, _next_ids(table), {"count": missing})))
    return asked


def _drawn(session: Session, window: Window, asked: list[tuple[str, Any]]) -> None:
    for table, cursor in asked:
        drawn = window.ids.setdefault(table, [])
        drawn.extend(int(row[0]) for row in direct.fetched(session, cursor))


@functools.cache
def _next_ids(table: str) -> sa.TextClause:
    return sa.text(
        f"SELECT nextval(pg_get_serial_sequence('{table}', 'id'))"
        " FROM generate_series(1, CAST(:count AS integer)) ORDER BY 1"
    )


def new_id(session: Session, model: type[SQLModel]) -> int | None:
    """An id drawn ahead for a row of `model` to be inserted with, or None (then the insert
    returns one)."""
    window = session.info.get(_KEY)
    if window is None:
        return None
    drawn = window.ids.get(model.__tablename__)  # type: ignore[attr-defined]
    return drawn.pop(0) if drawn else None


# -- answers, and what makes them stale -------------------------------------------------------


def thread_facts(session: Session, message_ids: Iterable[str], address: str) -> ThreadFacts:
    """known_refs(), with the numbers of the tickets found and participating() of `address`
    in them, in one statement (on PostgreSQL each of the three was a round trip); from the
    window when it read them and what was written since is known (_since_read)."""
    wanted = tuple(dict.fromkeys(message_ids))
    window = current(session)
    facts = window.facts.get((wanted, address)) if window is not None else None
    if facts is not None:
        found = _since_read(window, facts, wanted, address.lower())  # type: ignore[arg-type]
        if found is not None:
            return found
    claims.lock_tickets_of(session, wanted)  # PostgreSQL: before who takes part is read
    if not wanted:
        return ThreadFacts({}, {}, set())
    return _facts_from(direct.rows_in(session, _facts_of, wanted, _sender(address)), address)


def _since_read(
    window: Window, facts: ThreadFacts, wanted: tuple[str, ...], address: str
) -> ThreadFacts | None:
    """`facts` as a read now would find them, or None when what was written since the
    window read them leaves that unknown. Known: a Message-ID indexed since points at the
    ticket that indexed it first, as the index's unique key keeps it; who takes part in a
    ticket opened since is all written since. Not known: who takes part now in a ticket
    that had `address` added since, or in one a Message-ID now points at that the read did
    not see."""
    if not window.people.isdisjoint((t, address) for t in facts.known.values()):
        return None
    if window.indexed.isdisjoint(wanted):
        return facts
    if not window.overlay:
        return None
    known, numbers, taking_part = dict(facts.known), dict(facts.numbers), set(facts.taking_part)
    for message_id in window.indexed.intersection(wanted).difference(facts.known):
        ticket_id = window.pointed.get(message_id)
        if ticket_id is None:
            return None
        known[message_id] = ticket_id
        if ticket_id in facts.known.values():
            continue  # who takes part in it: read, and not changed for `address` (above)
        if ticket_id not in window.opened:
            return None
        numbers[ticket_id] = window.opened[ticket_id]
        if address and window.roles.get((ticket_id, address)) in MAILED_ROLES:
            taking_part.add(ticket_id)
    return ThreadFacts(known, numbers, taking_part)


def _facts_from(rows: Iterable[tuple[Any, ...]], address: str) -> ThreadFacts:
    known: dict[str, int] = {}
    numbers: dict[int, int] = {}
    taking_part: set[int] = set()
    for message_id, ticket_id, number, takes_part in rows:
        known[message_id] = ticket_id
        if number:
            numbers[ticket_id] = number
        if takes_part and address:
            taking_part.add(ticket_id)
    return ThreadFacts(known, numbers, taking_part)


@functools.cache
def _facts_of(count: int) -> sa.Select[tuple[str, int, int | None, bool]]:
    refs = MessageRef.__table__  # type: ignore[attr-defined]
    tickets = Ticket.__table__  # type: ignore[attr-defined]
    people = Participant.__table__  # type: ignore[attr-defined]
    takes_part = (
        sa.exists()
        .where(
            people.c.ticket_id == refs.c.ticket_id,
            people.c.address == sa.bindparam("address"),
            sa.or_(*(people.c.role == role for role in MAILED_ROLES)),  # not one only in Cc
        )
        .label("takes_part")
    )
    return (
        sa.select(refs.c.message_id, refs.c.ticket_id, tickets.c.number, takes_part)
        .select_from(refs.outerjoin(tickets, tickets.c.id == refs.c.ticket_id))
        .where(direct.in_values(refs.c.message_id, count))
    )


def stored_raw(session: Session, digest: str) -> tuple[int | None, bool]:
    """What the window knows of these bytes: (the id of the row that holds them, True), or
    (None, True) when none does (they are to be inserted), or (None, False) when it was
    not asked."""
    window = current(session)
    if window is None or digest not in window.digests:
        return None, False
    return window.raws.get(digest), True


def raw_stored(session: Session, digest: str, raw_id: int) -> None:
    """These bytes were inserted by this transaction, as row `raw_id`."""
    window = session.info.get(_KEY)
    if window is not None:
        window.raws[digest] = raw_id


@functools.cache
def _raws_by_digest(count: int) -> sa.Select[tuple[str, int]]:
    table = RawMessage.__table__  # type: ignore[attr-defined]
    return sa.select(table.c.sha256, table.c.id).where(direct.in_values(table.c.sha256, count))


def recent_acks(session: Session, keys: AckKeys) -> tuple[int, int, int] | None:
    """The acknowledgement counts of `keys` (acks_since), when the window read them: those
    it read, with those this transaction made since."""
    window = current(session)
    counted = window.acks.get(keys) if window is not None else None
    if counted is None:
        return None
    to, sender, domain = counted
    for made_to, made_from, made_domain in window.made:  # type: ignore[union-attr]
        to += made_to == keys.to
        sender += made_from == keys.sender
        domain += bool(keys.domain) and made_domain == keys.domain
    return to, sender, domain


@functools.cache
def acks_since() -> sa.Select[tuple[int, int, int]]:
    """Acknowledgements made since :since to :to, of mail from :sender and from :domain."""
    # One round trip, three index range scans (each count stays below its limit).
    table = Message.__table__  # type: ignore[attr-defined]
    since = sa.bindparam("since")

    def count(column: sa.Column[str], key: str) -> sa.ScalarSelect[int]:
        return (
            sa.select(sa.func.count())
            .select_from(table)
            .where(column == sa.bindparam(key), table.c.created_at >= since)
            .scalar_subquery()
        )

    return sa.select(
        count(table.c.ack_to, "to"),
        count(table.c.ack_from, "sender"),
        count(table.c.ack_domain, "domain"),
    )


def wrote_message(session: Session, values: dict[str, Any]) -> None:
    """A message row went in (store_message): its acknowledgement counts from now on."""
    window = session.info.get(_KEY)
    made = (values.get("ack_to"), values.get("ack_from"), values.get("ack_domain"))
    if window is not None and any(made):
        window.made.append(made)


def indexed(session: Session, ticket_id: int, message_ids: Iterable[str]) -> None:
    """These Message-IDs were indexed to the ticket where none pointed before (a poller's
    insert of one another indexed meanwhile fails the batch: store/claims.py)."""
    window = session.info.get(_KEY)
    if window is not None:
        for message_id in message_ids:
            window.indexed.add(message_id)
            window.pointed.setdefault(message_id, ticket_id)  # the first insert's stays


def opened(session: Session, ticket_id: int, number: int) -> None:
    """A ticket was created."""
    window = session.info.get(_KEY)
    if window is not None:
        window.opened[ticket_id] = number


def joined(
    session: Session, ticket_id: int, roles: Iterable[tuple[str, str]], *, replace: bool = False
) -> None:
    """These (address lowercased, role) were added to the ticket's participants, unless
    there already (`replace`: their role set either way)."""
    window = session.info.get(_KEY)
    if window is not None:
        for address, role in roles:
            window.people.add((ticket_id, address))
            if replace:
                window.roles[ticket_id, address] = role
            else:
                window.roles.setdefault((ticket_id, address), role)


def touched(session: Session, ticket_id: int) -> None:
    """The ticket's row was changed by a statement (not through its object)."""
    window = session.info.get(_KEY)
    if window is not None:
        window.touched.add(ticket_id)


def mark(session: Session) -> int:
    """Where a message's savepoint starts, for rolled_back()."""
    window = session.info.get(_KEY)
    return len(window.made) if window is not None else 0


def rolled_back(session: Session, mark: int) -> None:
    """A message's savepoint that started at `mark` was rolled back: its acknowledgements
    do not count, and what it wrote is not known any more (its Message-IDs and tickets stay
    marked as changed: a message that meets them reads them)."""
    window = session.info.get(_KEY)
    if window is not None:
        del window.made[mark:]
        window.overlay = False
