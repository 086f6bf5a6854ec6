"""A batch's window (store/window.py) answers what a read at that moment would answer.

The window reads the thread facts of its messages before any of them is filed; the messages
filed before a later one change what a read would find. Every answer the window gives after
such writes is compared here with the reads it stands for, after random writes of the kinds
intake makes (tickets opened, Message-IDs indexed, participants added or their role set).
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlmodel import Session

from mailsupport.mail import Address
from mailsupport.store import CC, REQUESTER, SEEN, direct, tickets, window
from mailsupport.store.db import Store
from mailsupport.store.models import Ticket

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
IDS = [f"m{i}@example.org" for i in range(14)]
PEOPLE = ["ann@example.org", "Bob@Example.org", "cat@example.org", ""]
ROLES = [REQUESTER, CC, SEEN]


def read_now(session: Session, message_ids: list[str], address: str) -> tuple[Any, ...]:
    """The three lookups thread_facts stands for, made now."""
    known = tickets.known_refs(session, message_ids)
    numbers = {t.id: t.number for t in (session.get(Ticket, i) for i in set(known.values())) if t}
    return known, numbers, tickets.participating(session, set(known.values()), address)


@pytest.fixture
def facts_reads(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """How many times thread facts were read from the database, not the window."""
    reads: list[int] = []
    real = direct.rows_in

    def counted(session: Session, build: Any, *args: Any, **kwargs: Any) -> Any:
        if build is window._facts_of:
            reads.append(1)
        return real(session, build, *args, **kwargs)

    monkeypatch.setattr(direct, "rows_in", counted)
    yield reads


@pytest.mark.parametrize("seed", range(8))
def test_the_windows_facts_are_what_a_read_would_find_after_the_windows_writes(
    store: Store, seed: int, facts_reads: list[int]
) -> None:
    rng = random.Random(seed)
    with store.write() as session:  # what was there before the batch
        before = [tickets.create_ticket(session, f"old {i}", None, NOW) for i in range(3)]
        for message_id in IDS[:5]:
            tickets.index_refs(session, rng.choice(before).id, [message_id])  # type: ignore[arg-type]
        for ticket in before:
            people = [(Address("", a), rng.choice(ROLES)) for a in PEOPLE[:3] if rng.random() < 0.5]
            tickets.add_participants(session, ticket, people, NOW)
    queries = [(rng.sample(IDS, rng.randint(1, 4)), rng.choice(PEOPLE)) for _ in range(40)]
    answered = 0
    with store.write() as session:
        wanted = [window.Wanted(tuple(dict.fromkeys(ids)), who) for ids, who in queries]
        window.read_ahead(session, wanted, [], NOW - timedelta(days=1))
        facts_reads.clear()
        opened = list(before)
        for _ in range(40):  # what the window's messages write, one after another
            action = rng.random()
            ticket = rng.choice(opened[-3:])  # mostly the new ones
            assert ticket.id is not None
            if action < 0.2:
                opened.append(tickets.create_ticket(session, "new", None, NOW))
                tickets.write_changes(session, opened[-1])  # its number: as intake ends it
            elif action < 0.55:
                ids = rng.sample(IDS, rng.randint(1, 3))
                # As threading found them (intake), or not looked up (an agent's answer).
                unseen = set(ids) - set(tickets.known_refs(session, ids))
                tickets.index_refs(session, ticket.id, ids, rng.choice([unseen, None]))
            elif action < 0.85:
                people = [(Address("", rng.choice(PEOPLE[:3])), rng.choice(ROLES))]
                tickets.add_participants(session, ticket, people, NOW)
            else:
                who = Address("", rng.choice(PEOPLE[:3]))
                tickets.set_role(session, ticket, who, rng.choice(ROLES), NOW)
            for ids, who in queries:
                reads = len(facts_reads)
                found = window.thread_facts(session, ids, who)
                answered += len(facts_reads) == reads
                assert tuple(found) == read_now(session, ids, who), (ids, who)
    assert answered > 5 * len(queries)  # many from the window, with what was written since


def test_what_a_merge_moved_is_read_again(store: Store, facts_reads: list[int]) -> None:
    from mailsupport.store import claims

    with store.write() as session:
        ticket = tickets.create_ticket(session, "one", None, NOW)
        tickets.index_refs(session, ticket.id, ["a@x"])  # type: ignore[arg-type]
    with store.write() as session:
        window.read_ahead(session, [window.Wanted(("a@x",), "ann@example.org")], [], NOW)
        facts_reads.clear()
        window.thread_facts(session, ["a@x"], "ann@example.org")
        assert not facts_reads  # the window's
        claims.everything(session)  # what a merge takes first
        window.thread_facts(session, ["a@x"], "ann@example.org")
        assert facts_reads == [1]
        assert window.current(session) is None


def test_bytes_stored_before_or_earlier_in_the_window_are_found_without_a_read(
    store: Store,
) -> None:
    with store.write() as session:
        stored = tickets.save_raw(session, b"Subject: one\r\n\r\nbody\r\n", "here", NOW)()
        assert stored[1]
    digests = [tickets.digest_of(raw) for raw in (b"Subject: one\r\n\r\nbody\r\n", b"two")]
    with store.write() as session:
        window.read_ahead(session, [], digests, NOW)
        again = tickets.save_raw(session, b"Subject: one\r\n\r\nbody\r\n", "there", NOW)()
        assert again == (stored[0], False)
        new = tickets.save_raw(session, b"two", "there", NOW)()
        assert new[1] and new[0].id != stored[0].id
        assert tickets.save_raw(session, b"two", "again", NOW)() == (new[0], False)


def test_who_takes_part_in_a_ticket_opened_in_the_window_is_known_as_stored(
    store: Store, facts_reads: list[int]
) -> None:
    # An address first seen in passing stays so when a later message names it as a
    # requester (the stored row keeps its first role), until a role is set.
    seen, later = Address("", "ann@example.org"), [(Address("", "ann@example.org"), REQUESTER)]
    with store.write() as session:
        window.read_ahead(session, [window.Wanted(("reply@x", "first@x"), seen.address)], [], NOW)
        facts_reads.clear()
        ticket = tickets.create_ticket(session, "new", None, NOW)
        assert ticket.id is not None
        tickets.index_refs(session, ticket.id, ["first@x"], {"first@x"})
        tickets.add_participants(session, ticket, [(seen, SEEN)], NOW)
        tickets.add_participants(session, ticket, later, NOW)
        found = window.thread_facts(session, ["reply@x", "first@x"], seen.address)
        assert found == ({"first@x": ticket.id}, {ticket.id: ticket.number}, set())
        tickets.set_role(session, ticket, seen, CC, NOW)
        found = window.thread_facts(session, ["reply@x", "first@x"], seen.address)
        assert found.taking_part == {ticket.id}
        assert not facts_reads  # both from the window
        assert tuple(found) == read_now(session, ["reply@x", "first@x"], seen.address)


def test_a_ticket_the_window_read_or_opened_is_joined_without_reading_it_again(
    store: Store,
) -> None:
    import sqlalchemy as sa

    with store.write() as session:
        old = tickets.create_ticket(session, "old", None, NOW)
        tickets.index_refs(session, old.id, ["a@x"])  # type: ignore[arg-type]
    statements: list[str] = []
    with store.write() as session:
        window.read_ahead(session, [window.Wanted(("a@x",), "ann@example.org")], [], NOW)
        new = tickets.create_ticket(session, "new", None, NOW)
        new.status = "open"
        tickets.write_changes(session, new)  # through its object: the object has it
        connection = session.connection()
        sa.event.listen(connection, "before_cursor_execute", lambda *a: statements.append(a[2]))
        assert window.ticket(session, new.id) is new and new.status == "open"
        assert statements == []  # not read again (on PostgreSQL: locked and read)
        assert window.ticket(session, old.id) is not None
        postgresql = store.engine.dialect.name == "postgresql"
        assert statements == [] or not postgresql  # read with the window (PostgreSQL only)
