"""The database layer: migrations match the models, schema checks, SQLite settings, times."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from psycopg.errors import DeadlockDetected, SerializationFailure
from sqlalchemy import exc
from sqlalchemy.types import TypeDecorator
from sqlmodel import SQLModel

from mailsupport.config import Settings
from mailsupport.errors import SchemaError, TemporaryError
from mailsupport.mail import Address
from mailsupport.search import include_name, include_object
from mailsupport.store import CC, REQUESTER, SEEN, direct, tickets
from mailsupport.store.db import SCHEMA_REVISION, Store, alembic_config, translate_db_error
from mailsupport.store.models import RawMessage, Ticket, UTCDateTime
from tests.conftest import postgresql_schema
from tests.support.faults import impatient, write_lock_held


def test_schema_revision_constant_is_the_migration_head() -> None:
    assert ScriptDirectory.from_config(alembic_config()).get_current_head() == SCHEMA_REVISION


def test_migrations_create_exactly_the_models(store: Store) -> None:
    with store.engine.connect() as conn:
        # The same filter as migrations/env.py: the search index is SQL the models do not describe.
        opts = {"compare_type": True, "include_name": include_name}
        opts["include_object"] = include_object
        context = MigrationContext.configure(conn, opts=opts)
        assert compare_metadata(context, SQLModel.metadata) == []


def test_a_schema_that_is_behind_is_refused(store: Store) -> None:
    with store.engine.begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = '0000'"))
    with pytest.raises(SchemaError, match="mailsupport db upgrade"):
        store.ensure_schema()


def test_foreign_tables_are_refused(db_url: str, tmp_path: Path) -> None:
    (tmp_path / "data").mkdir(exist_ok=True)
    engine = sa.create_engine(db_url)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE something_else (id INTEGER)"))
    engine.dispose()
    with pytest.raises(SchemaError, match="not a mailsupport database"):
        Store.open(db_url)


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[Store]:
    store = Store.open(f"sqlite:///{tmp_path / 'lite.db'}")
    yield store
    store.engine.dispose()


def test_sqlite_runs_in_wal_mode(sqlite_store: Store) -> None:
    store = sqlite_store
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"


def test_times_come_back_aware_utc(store: Store) -> None:
    moscow = timezone(timedelta(hours=3))
    at = datetime(2026, 3, 1, 12, 0, tzinfo=moscow)
    with store.write() as session:
        ticket = Ticket(subject="x", created_at=at, updated_at=at)
        session.add(ticket)
        session.flush()
        ticket_id = ticket.id
    with store.read() as session:
        loaded = session.get(Ticket, ticket_id)
        assert loaded is not None
        assert loaded.created_at == at
        assert loaded.created_at.tzinfo is not None
        assert loaded.created_at.utcoffset() == timedelta(0)
        assert loaded.created_at.astimezone(UTC).hour == 9


def test_sqlite_stores_times_as_sqlalchemys_own_chain_would(sqlite_store: Store) -> None:
    """UTCDateTime's one-step processor on SQLite writes exactly the text that
    process_bind_param followed by SQLite's DATETIME wrote: queries compare these texts."""
    dialect = sqlite_store.engine.dialect
    utc_type = UTCDateTime().dialect_impl(dialect)
    ours = utc_type.bind_processor(dialect)
    chain = TypeDecorator.bind_processor(utc_type, dialect)
    times = [
        datetime(2026, 12, 6, 22, 31, 5, 123456, tzinfo=UTC),
        datetime(2026, 1, 1, 0, 0, tzinfo=timezone(timedelta(hours=3))),  # another day in UTC
        datetime(2026, 3, 29, 1, 30, 0, 1, tzinfo=ZoneInfo("Europe/Berlin")),
        datetime(1, 1, 1, 12, 0, tzinfo=UTC),
        datetime(999, 5, 5, 1, 2, 3, 7, tzinfo=timezone(timedelta(minutes=-90))),
        datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=ZoneInfo("UTC")),
    ]
    for at in times:
        assert ours(at) == chain(at)
    assert ours(None) is None
    with pytest.raises(ValueError, match="naive"):
        ours(datetime(2026, 1, 1))
    with sqlite_store.write() as session:  # and what the file holds is that text
        ticket = Ticket(subject="x", created_at=times[1], updated_at=times[2])
        session.add(ticket)
        session.flush()
        stored = session.execute(
            sa.text("SELECT created_at, updated_at FROM tickets WHERE id = :id"),
            {"id": ticket.id},
        ).one()
    assert tuple(stored) == (chain(times[1]), chain(times[2]))
    assert stored[0] == "2025-12-31 21:00:00.000000"


def test_a_locked_sqlite_database_is_a_temporary_error(
    sqlite_store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("mailsupport.store.db.SQLITE_BUSY_SECONDS", 0)
    url = sqlite_store.engine.url.render_as_string()
    impatient = Store.open(url)
    blocker = sa.create_engine(url, connect_args={"isolation_level": None})
    now = datetime.now(UTC)
    with blocker.connect() as conn:
        conn.exec_driver_sql("BEGIN IMMEDIATE")
        with pytest.raises(TemporaryError, match="locked"), impatient.write() as session:
            session.add(Ticket(subject="y", created_at=now, updated_at=now))
        conn.exec_driver_sql("ROLLBACK")
    blocker.dispose()
    impatient.engine.dispose()


def test_lock_timeout_deadlock_and_conflict_on_postgresql_are_temporary_errors(
    store: Store, settings: Settings
) -> None:
    if store.engine.dialect.name != "postgresql":
        pytest.skip("SQLite's locked database is the test above")
    # As an operator would: lock_timeout in the URL's options; another writer holds the lock.
    env, _ = impatient(store, {"MAILSUPPORT_DATABASE_URL": settings.db_url}, 0.2)
    waiting = Store.open(env["MAILSUPPORT_DATABASE_URL"])
    now = datetime.now(UTC)
    try:
        with (
            write_lock_held(store),
            pytest.raises(TemporaryError) as caught,
            waiting.write() as session,
        ):
            session.add(Ticket(subject="y", created_at=now, updated_at=now))
    finally:
        waiting.engine.dispose()
    assert str(caught.value) == (
        "database is locked by another process (canceling statement due to lock timeout); try again"
    )
    assert caught.value.exit_code == 75
    with store.read() as session:
        assert session.exec(sa.select(Ticket)).all() == []  # rolled back, nothing half-done
    # Deadlocks and serialization failures come back from the server the same way.
    for error, expected in [
        (DeadlockDetected("deadlock detected\nDETAIL: ..."), "database deadlock with another"),
        (SerializationFailure("could not serialize access"), "database conflict with another"),
    ]:
        mapped = translate_db_error(exc.OperationalError("UPDATE ...", {}, error))
        assert isinstance(mapped, TemporaryError), error
        assert str(mapped).startswith(expected) and str(mapped).endswith("; try again")
        assert "\n" not in str(mapped)


def test_desks_in_other_schemas_of_one_database_do_not_wait_for_each_others_writers(
    store: Store, settings: Settings
) -> None:
    if store.engine.dialect.name != "postgresql":
        pytest.skip("PostgreSQL's advisory locks belong to the whole database")
    now = datetime.now(UTC)
    with postgresql_schema() as other_url:
        env, _ = impatient(store, {"MAILSUPPORT_DATABASE_URL": other_url}, 0.2)
        other = Store.open(env["MAILSUPPORT_DATABASE_URL"])
        try:
            with write_lock_held(store):
                # Another desk's writer goes ahead while this desk's lock is held...
                with other.write() as session:
                    session.add(Ticket(subject="other desk", created_at=now, updated_at=now))
                # ...and still waits for a writer of its own desk.
                with (
                    write_lock_held(other),
                    pytest.raises(TemporaryError, match="locked"),
                    other.write() as session,
                ):
                    session.add(Ticket(subject="waits", created_at=now, updated_at=now))
            with other.read() as session:
                subjects = session.exec(sa.select(Ticket.subject)).scalars().all()
            assert subjects == ["other desk"]
        finally:
            other.engine.dispose()


def test_no_pooled_connection_free_in_time_is_a_temporary_error(store: Store) -> None:
    # Many threads (the daemon's mailboxes) can wait for the pool longer than its timeout.
    busy = Store(sa.create_engine(store.engine.url, pool_size=1, max_overflow=0, pool_timeout=0.1))
    try:
        with busy.engine.connect(), pytest.raises(TemporaryError) as caught, busy.read() as s:
            s.execute(sa.text("SELECT 1"))
    finally:
        busy.engine.dispose()
    assert str(caught.value) == "no database connection came free in time; try again"
    assert caught.value.exit_code == 75


def test_upgrade_from_the_first_schema_keeps_data(db_url: str, tmp_path: Path) -> None:
    (tmp_path / "data").mkdir(exist_ok=True)
    store = Store.open(db_url, check_schema=False)
    store.upgrade("0001")
    now = datetime.now(UTC)
    with store.engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO tickets (subject, status, priority, requester, requester_name,"
                " created_at, updated_at) VALUES ('kept', 'new', 'normal', '', '', :t, :t)"
            ),
            {"t": now.replace(tzinfo=None)},
        )
    with pytest.raises(SchemaError, match="mailsupport db upgrade"):
        store.ensure_schema()
    store.upgrade()
    store.ensure_schema()
    with store.read() as session:
        assert [t.subject for t in session.exec(sa.select(Ticket)).scalars()] == ["kept"]
    store.engine.dispose()


def test_large_values_go_in_with_lz4_on_postgresql_and_back_on_downgrade(db_url: str) -> None:
    """Migration 0021: what PostgreSQL compresses (a raw message, a long text, a blob's
    piece) it compresses with lz4, which costs the server a third of pglz's CPU."""
    if not db_url.startswith("postgresql"):
        pytest.skip("SQLite compresses nothing")
    store = Store.open(db_url)  # an empty database: every migration, as a new desk runs them
    methods = sa.text(
        "SELECT c.relname || '.' || a.attname, a.attcompression FROM pg_attribute a"
        " JOIN pg_class c ON c.oid = a.attrelid WHERE c.relkind = 'r' AND a.attnum > 0"
        " AND NOT a.attisdropped AND a.attstorage IN ('x', 'm')"
        " AND c.relnamespace = current_schema()::regnamespace"
    )
    try:
        with store.engine.begin() as conn:
            lz4 = conn.execute(
                sa.text("SELECT 'lz4' = ANY(enumvals) FROM pg_settings"
                        " WHERE name = 'default_toast_compression'")
            ).scalar()  # fmt: skip
            assert lz4, "this test's server has lz4 (PostgreSQL 14 or newer, built with it)"
            columns = dict(conn.execute(methods).all())
            for name in ("raw_messages.data", "messages.text", "messages.html",
                         "attachment_chunks.data", "outbox.data"):  # fmt: skip
                assert columns[name] == "l", name
            assert {n for n, m in columns.items() if m != "l"} == set()
            raw = ("Received: from somewhere\r\n" * 4000).encode()  # 100 KB, compressible
            with store.write() as session:
                tickets.save_raw(session, raw, "test", datetime.now(UTC))()
            method = conn.execute(
                sa.text("SELECT pg_column_compression(data) FROM raw_messages")
            ).scalar()
            assert method == "lz4"
        with store.engine.begin() as conn:
            config = alembic_config()
            config.attributes["connection"] = conn
            command.downgrade(config, "0020")
            assert set(dict(conn.execute(methods).all()).values()) == {""}  # the default
    finally:
        store.engine.dispose()


def test_lookups_of_lists_of_any_length_find_exactly_the_known_and_keep_few_statements(
    store: Store,
) -> None:
    # Threading looks up a message's references as one IN list. Every list length used to
    # be a statement of its own, compiled and kept for the life of the process: memory that
    # climbed through a long import. Lists are padded to a few lengths instead.
    now = datetime.now(UTC)
    with store.write() as session:
        ticket = Ticket(subject="refs", created_at=now, updated_at=now)
        session.add(ticket)
        session.flush()
        assert ticket.id is not None
        known = [f"known{n}@example.org" for n in range(700)]
        tickets.index_refs(session, ticket.id, known)
    lengths_before = tickets._refs_of.cache_info().currsize
    with store.read() as session:
        for length in [*range(1, 70), 127, 128, 129, 255, 256, 257, 499, 500, 501, 619]:
            wanted = [f"unknown{n}@example.org" for n in range(length)]
            wanted[::3] = known[: len(wanted[::3])]
            found = tickets.known_refs(session, wanted)
            assert found == {mid: ticket.id for mid in wanted[::3]}, length
    assert tickets._refs_of.cache_info().currsize - lengths_before <= len(direct.LIST_LENGTHS)


def test_thread_facts_answer_as_the_three_lookups_they_replace(store: Store) -> None:
    # Threading's one statement: the ticket each known ID points at, those tickets' numbers,
    # and which of them the sender takes part in by mail (a role seen only in passing is not).
    now = datetime.now(UTC)
    with store.write() as session:
        first = tickets.create_ticket(session, "first", None, now)
        second = tickets.create_ticket(session, "second", None, now)
        session.flush()
        assert first.id is not None and second.id is not None
        tickets.index_refs(session, first.id, ["a1@x", "a2@x"])
        tickets.index_refs(session, second.id, ["b1@x"])
        alice, bob = Address("Alice", "alice@example.org"), Address("", "bob@example.org")
        tickets.add_participants(session, first, [(alice, REQUESTER)], now)
        tickets.add_participants(session, second, [(alice, SEEN), (bob, CC)], now)
    wanted = ["a1@x", "b1@x", "nowhere@x", "a2@x"]
    with store.read() as session:
        for address in ("ALICE@example.org", "bob@example.org", "carol@example.org", ""):
            facts = tickets.thread_facts(session, wanted, address)
            known = tickets.known_refs(session, wanted)
            assert facts.known == known == {"a1@x": first.id, "a2@x": first.id, "b1@x": second.id}
            assert facts.numbers == {first.id: first.number, second.id: second.number}
            expected = tickets.participating(session, set(known.values()), address)
            assert facts.taking_part == expected, address
        assert tickets.thread_facts(session, wanted, "alice@example.org").taking_part == {first.id}
        assert tickets.thread_facts(session, wanted, "bob@example.org").taking_part == {second.id}
        assert tickets.thread_facts(session, [], "bob@example.org") == ({}, {}, set())


def test_a_tickets_changes_written_by_a_statement_are_stored_and_leave_nothing_to_flush(
    store: Store,
) -> None:
    now = datetime.now(UTC)
    with store.write() as session:
        ticket = tickets.create_ticket(session, "written", None, now)
        session.flush()
    with store.write() as session:
        ticket = session.get(Ticket, ticket.id)
        assert ticket is not None
        ticket.status, ticket.priority, ticket.queue = "open", "urgent", "billing"
        ticket.first_response_due = now + timedelta(hours=4)
        tickets.write_changes(session, ticket)
        assert not session.is_modified(ticket) and not session.dirty
        ticket_id = ticket.id
    with store.read() as session:
        stored = session.get(Ticket, ticket_id)
        assert stored is not None
        assert (stored.status, stored.priority, stored.queue) == ("open", "urgent", "billing")
        assert stored.first_response_due == now + timedelta(hours=4)
        assert (stored.subject, stored.number) == ("written", ticket_id)


def test_a_new_ticket_in_the_session_is_the_row_it_wrote(store: Store) -> None:
    # create_ticket builds the object as the ORM builds one it loads, not through the
    # model's __init__: it must hold exactly what the row holds, defaults included.
    at = datetime(2026, 3, 1, 9, 30, tzinfo=UTC)
    with store.write() as session:
        made = tickets.create_ticket(session, "Счёт не пришёл", Address("Анна", "Anna@X.org"), at)
        made.queue = "billing"
        session.flush()
        seen = made.model_dump()
    with store.read() as session:
        stored = session.get(Ticket, seen["id"])
        assert stored is not None
        assert stored.model_dump() == seen
    assert seen["number"] == seen["id"] and seen["requester"] == "anna@x.org"
    assert (seen["status"], seen["priority"], seen["line"]) == ("new", "normal", 1)


@pytest.mark.parametrize("wait", ["sync", "statement"])
def test_a_write_of_many_megabytes_is_sent_whole_before_its_answer_is_awaited(
    store: Store, wait: str
) -> None:
    # psycopg's pipeline waited for answers with part of a large statement still unsent,
    # and the server waited for that part: a message of 30 MB hung the poll for ever.
    table = RawMessage.__table__  # type: ignore[attr-defined]
    big = {"sha256": "f" * 64, "size": 1, "data": os.urandom(32 << 20), "origin": "t",
           "stored_at": datetime.now(UTC)}  # fmt: skip
    signal.signal(signal.SIGALRM, lambda *_: pytest.fail("the pipeline hung"))
    signal.alarm(60)
    try:
        with store.write() as session, direct.pipelined(session):
            direct.write(session, sa.insert(table), big)
            if wait == "sync":
                direct.sync(session)  # what the end of a batch does
            else:  # a statement SQLAlchemy runs waits for the answers so far
                assert session.execute(sa.select(sa.func.count()).select_from(table)).scalar()
    finally:
        signal.alarm(0)
    with store.read() as session:
        size = session.execute(sa.select(sa.func.length(table.c.data))).scalar()
        assert size == 32 << 20


def test_a_value_read_later_arrives_with_the_next_read_and_so_does_its_error(
    store: Store,
) -> None:
    # Intake sends the INSERTs whose ids it needs a little later without waiting for them
    # (PostgreSQL's pipeline); the id comes with the next read's answer, and a refusal
    # comes out there as SQLAlchemy's error, as it would have at once.
    now = datetime.now(UTC)
    table = RawMessage.__table__  # type: ignore[attr-defined]
    insert = sa.insert(table).returning(table.c.id)
    count = sa.select(sa.func.count()).select_from(table)

    def row(n: int) -> dict[str, object]:
        return {"sha256": f"{n:064x}", "size": 1, "data": b"x", "origin": "t", "stored_at": now}

    with store.write() as session, direct.pipelined(session):
        first, second = direct.later(session, insert, row(1)), direct.later(session, insert, row(2))
        assert direct.scalar(session, count, {}) == 2
        assert second.get() == first.get() + 1
    with pytest.raises(exc.IntegrityError), store.write() as session, direct.pipelined(session):
        again = direct.later(session, insert, row(1))  # the same sha256: refused
        direct.scalar(session, count, {})
        again.get()
