"""SQLite's search index filled by batch (store/searchindex.py, migration 0020): intake indexes
a batch's messages at its end, and the index is the one the triggers make a message at a
time."""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlmodel import Session

from mailsupport.config import Settings
from mailsupport.pipeline import Incoming, Pipeline
from mailsupport.store import searchindex
from mailsupport.store.db import Store
from mailsupport.store.models import Message
from tests.support.mailfactory import make_message

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
_SEARCH = importlib.import_module("mailsupport.store.migrations.versions.0014_search_stems")
# 0014's statement that indexes every message of a store it upgrades.
[FILL] = [s for s in _SEARCH.SQLITE_UP if s.startswith("INSERT INTO messages_fts")]


@pytest.fixture
def db_url(tmp_path: Path) -> Iterator[str]:
    yield f"sqlite:///{tmp_path / 'data' / 'mailsupport.db'}"  # the index of SQLite only


@pytest.fixture
def acking(settings: Settings) -> Settings:
    """Settings that acknowledge new tickets (queued: nothing listens on port 9)."""
    return settings.model_copy(update={"smtp_host": "127.0.0.1", "smtp_port": 9})


def index_entries(conn: sa.Connection, table: str = "messages_fts") -> list[tuple[Any, ...]]:
    """Every (term, message, column, position) of an FTS5 index: what a search can find."""
    schema, _, name = table.rpartition(".")
    conn.exec_driver_sql("DROP TABLE IF EXISTS temp.entries")
    conn.exec_driver_sql(
        f"CREATE VIRTUAL TABLE temp.entries USING fts5vocab({schema or 'main'}, {name}, instance)"
    )
    found = conn.exec_driver_sql("SELECT term, doc, col, offset FROM temp.entries").all()
    return sorted(tuple(row) for row in found)


def as_the_triggers_index(conn: sa.Connection) -> list[tuple[Any, ...]]:
    """The index of the messages as stored, made anew by 0014's own statement."""
    conn.exec_driver_sql("DROP TABLE IF EXISTS temp.fresh")
    conn.exec_driver_sql(
        "CREATE VIRTUAL TABLE temp.fresh USING fts5(subject, text, subject_stems, text_stems, "
        "content='', tokenize='unicode61 remove_diacritics 2')"
    )
    conn.exec_driver_sql(FILL.replace("INSERT INTO messages_fts", "INSERT INTO temp.fresh"))
    return index_entries(conn, "temp.fresh")


def test_the_batch_statement_is_0014s_for_the_messages_of_the_batch() -> None:
    statement = searchindex._INDEX_BATCH
    assert statement == f"{FILL} AND messages.id >= :lo"


def test_a_batch_of_intake_is_indexed_as_the_triggers_index_one_at_a_time(
    acking: Settings,
) -> None:
    store = Store.open(acking.db_url)
    first = make_message("a1@example.org", subject="Счёт за декабрь", body="Где мой счёт?")
    mail = [
        first,
        make_message("a2@example.org", subject="Re: Счёт за декабрь", body="Ещё жду счета.",
                     in_reply_to="a1@example.org", references="a1@example.org"),
        make_message("b1@example.org", sender="Bob <bob@example.net>", subject="Printer",
                     body="The toner is empty again."),
        b"this is not a message at all",  # quarantined: nothing of it in the index
        make_message("c1@example.org", sender="Cid <cid@example.net>", subject="Export",
                     body="The export to CSV fails.", charset="koi8-r"),
    ]  # fmt: skip
    with Pipeline(acking, store) as pipeline:
        counts = pipeline.run([Incoming(raw, "test", NOW) for raw in mail], lambda: NOW)
        assert counts["new"] == 3 and counts["reply"] == 1
        # A message in a batch of its own after the others, and filed again (a duplicate).
        pipeline.run([Incoming(first, "test", NOW)], lambda: NOW)
    with store.engine.connect() as conn:
        acks = conn.exec_driver_sql("SELECT count(*) FROM outbox").scalar()
        assert acks == 3  # our acknowledgements are stored, and left out of the index
        assert conn.exec_driver_sql("SELECT count(*) FROM messages_fts_deferred").scalar() == 0
        entries = index_entries(conn)
        assert {"счет", "toner", "export"} <= {term for term, *_ in entries}
        assert entries == as_the_triggers_index(conn)
    store.engine.dispose()


def test_changes_inside_the_batch_and_writers_outside_it_keep_the_index_exact(
    acking: Settings,
) -> None:
    store = Store.open(acking.db_url)
    with Pipeline(acking, store) as pipeline:
        pipeline.run([Incoming(make_message("old@example.org"), "test", NOW)], lambda: NOW)
    with store.engine.connect() as conn:
        [ticket] = conn.exec_driver_sql("SELECT id FROM tickets").scalars().all()

    def add(session: Session, message_id: str, text: str) -> int:
        row = Message(ticket_id=ticket, message_id=message_id, direction="in", subject="s",
                      text=text, received_at=NOW, created_at=NOW)  # fmt: skip
        session.add(row)
        session.flush()
        assert row.id is not None
        return row.id

    with store.write() as session, searchindex.indexed_at_end(session):
        kept, gone = add(session, "k@x", "alpha"), add(session, "g@x", "beta")
        # A message of the batch changed, another one deleted, and an older one changed: the
        # index ends with the values they have when the batch ends.
        conn = session.connection()
        conn.execute(sa.text("UPDATE messages SET text = 'gamma' WHERE id = :i"), {"i": kept})
        conn.execute(sa.text("DELETE FROM messages WHERE id = :i"), {"i": gone})
        conn.execute(sa.text("UPDATE messages SET text = 'delta' WHERE id < :i"), {"i": kept})
        assert "gamma" not in {term for term, *_ in index_entries(conn)}  # not yet
    with store.write() as session:  # not intake (an agent's note, say): indexed at once
        add(session, "n@x", "epsilon")
    with store.engine.connect() as conn:
        # (The stem columns keep "alpha": a raw UPDATE of the text does not stem it again.)
        words = {term for term, _, column, _ in index_entries(conn) if column == "text"}
        assert {"gamma", "delta", "epsilon"} <= words and not {"alpha", "beta"} & words
        assert index_entries(conn) == as_the_triggers_index(conn)
    store.engine.dispose()


def test_a_batch_that_fails_leaves_nothing_deferred(acking: Settings) -> None:
    store = Store.open(acking.db_url)
    with (
        pytest.raises(RuntimeError),
        store.write() as session,
        searchindex.indexed_at_end(session),
    ):
        raise RuntimeError("the batch fails")
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM messages_fts_deferred").scalar() == 0
    store.engine.dispose()
