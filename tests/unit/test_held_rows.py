"""A new ticket's row held back in intake's pipeline and written once (store/direct.hold).

On PostgreSQL intake's batch writes a new ticket's row when its message is filed, with its
final values, rather than inserting it and changing it; the message's other rows wait behind
it, and anything else that runs first writes it. SQLite inserts the row first, as before.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlmodel import Session, select

from mailsupport.config import Settings
from mailsupport.pipeline import Incoming, Outcome, Pipeline
from mailsupport.store import direct, tickets
from mailsupport.store.db import Store
from mailsupport.store.models import Ticket, TicketEvent
from tests.support.mailfactory import BASE_TIME, make_message

NOW = BASE_TIME + timedelta(hours=1)


@pytest.fixture
def pg_store(store: Store) -> Store:
    if store.engine.dialect.name != "postgresql":
        pytest.skip("rows are held back in PostgreSQL's pipeline only")
    return store


@pytest.fixture
def ticket_statements(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[str, Any]]]:
    """Every statement on the tickets table that intake runs directly: (kind, parameters)."""
    seen: list[tuple[str, Any]] = []
    run_one, run_many = direct._execute, direct._execute_many

    def note(statement: sa.Executable, params: Any) -> None:
        table = getattr(statement, "table", None)
        if table is not None and table.name == "tickets":
            seen.append((type(statement).__name__, params))

    def one(session: Session, statement: sa.Executable, params: Any, **options: Any) -> Any:
        note(statement, params)
        return run_one(session, statement, params, **options)

    def many(session: Session, statement: sa.Executable, rows: Any) -> None:
        note(statement, rows)
        run_many(session, statement, rows)

    monkeypatch.setattr(direct, "_execute", one)
    monkeypatch.setattr(direct, "_execute_many", many)
    yield seen


def test_a_new_ticket_is_inserted_once_with_its_final_values(
    pg_store: Store, settings: Settings, ticket_statements: list[tuple[str, Any]]
) -> None:
    items = [
        Incoming(
            make_message(f"q{i}@customer.example.org", subject=f"Question {i}"),
            f"test#{i}",
            BASE_TIME + timedelta(minutes=i),
            live=True,
        )
        for i in range(3)
    ]
    outcomes: list[Outcome] = []
    with Pipeline(settings, pg_store) as pipeline:
        assert pipeline.batched
        pipeline.run(items, lambda: NOW, batch_size=3, on_each=outcomes.append)
    assert [o.kind for o in outcomes] == ["new"] * 3
    # One INSERT a ticket and nothing else: no UPDATE of a row just inserted.
    assert [kind for kind, _ in ticket_statements] == ["Insert"] * 3
    with pg_store.read() as session:
        stored = {t.id: t for t in session.exec(select(Ticket)).all()}
    for _, values in ticket_statements:
        row = stored[values["id"]]
        assert values["number"] == row.number == row.id  # set after the ticket was made
        assert values["first_response_due"] == row.first_response_due is not None
        assert values["last_writer"] == row.last_writer == "customer"
        assert values["subject"] == row.subject


def _ticket_row(session: Session, subject: str) -> dict[str, Any]:
    drawn = session.execute(sa.text("SELECT nextval(pg_get_serial_sequence('tickets', 'id'))"))
    ticket_id = drawn.scalar_one()
    when = datetime(2026, 1, 1, tzinfo=UTC)
    return {
        **tickets._new_ticket_defaults(),
        "id": ticket_id,
        "number": ticket_id,
        "subject": subject,
        "created_at": when,
        "updated_at": when,
    }


def _event(ticket_id: int, detail: str) -> dict[str, Any]:
    return {"ticket_id": ticket_id, "action": "note", "detail": detail, "at": datetime.now(UTC)}


def _hold(session: Session, row: dict[str, Any]) -> None:
    insert = sa.insert(Ticket.__table__)  # type: ignore[attr-defined]
    direct.hold(session, row["id"], "tickets", lambda: direct.write(session, insert, row))


def test_rows_behind_a_held_row_follow_it_and_a_read_writes_it_first(pg_store: Store) -> None:
    events = TicketEvent.__table__  # type: ignore[attr-defined]
    count = sa.select(sa.func.count()).select_from(Ticket.__table__)  # type: ignore[attr-defined]
    with pg_store.write() as session, direct.pipelined(session):
        row = _ticket_row(session, "held")
        _hold(session, row)
        # Inserts into other tables wait behind it (their foreign key to it is checked when
        # they run: in the wrong order the server refuses them).
        direct.write(session, sa.insert(events), _event(row["id"], "first"))
        later = direct.sent(
            session, sa.insert(events).returning(events.c.id), _event(row["id"], "second")
        )
        assert direct.scalar(session, count, {}) == 1  # a read: the row is there for it
        assert len(direct.fetched(session, later)) == 1
        row["subject"] = "changed after it was written"  # not written again
    with pg_store.read() as session:
        ticket = session.get(Ticket, row["id"])
        assert ticket is not None and ticket.subject == "held"
        details = session.exec(select(TicketEvent.detail).order_by(TicketEvent.id)).all()
        assert details == ["first", "second"]


def test_a_change_of_the_held_table_or_a_statement_sqlalchemy_runs_writes_it_first(
    pg_store: Store,
) -> None:
    with pg_store.write() as session, direct.pipelined(session):
        first = _ticket_row(session, "first")
        _hold(session, first)
        # An UPDATE of the held row's table runs after the row went in, not before it.
        direct.set_by_id(session, Ticket, first["id"], subject="updated")
        second = _ticket_row(session, "second")
        _hold(session, second)
        found = session.execute(sa.select(Ticket.subject).order_by(Ticket.id)).scalars().all()
        assert found == ["updated", "second"]
        third = _ticket_row(session, "third")
        _hold(session, third)  # never released by its writer: the block's end writes it
    with pg_store.read() as session:
        subjects = session.exec(select(Ticket.subject).order_by(Ticket.id)).all()
        assert subjects == ["updated", "second", "third"]


def test_the_writer_releasing_its_own_row_is_told_so(pg_store: Store) -> None:
    with pg_store.write() as session, direct.pipelined(session):
        row = _ticket_row(session, "mine")
        _hold(session, row)
        assert not direct.release(session, "another key")  # written all the same
        assert not direct.release(session, row["id"])  # nothing held any more
        other = _ticket_row(session, "other")
        _hold(session, other)
        assert direct.release(session, other["id"])


def test_holding_outside_the_pipeline_is_refused(store: Store) -> None:
    with store.write() as session, pytest.raises(RuntimeError, match="pipelined"):
        direct.hold(session, 1, "tickets", lambda: None)
