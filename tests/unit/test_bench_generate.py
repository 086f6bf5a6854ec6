"""The read benchmark's store generator (bench/generate.py): its shortcut for the search
stems gives what the column defaults would, and the SQLite store it writes is searchable."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from bench.generate import build, check_stems, generate, show_ticket


def test_the_stems_are_those_the_column_defaults_give() -> None:
    [rows] = list(generate(300))
    messages = rows["messages"]
    assert len(messages) > 900
    assert any("> " in m["text"] and m["text_stems"] for m in messages)  # quotes in the mix
    check_stems(messages)  # raises on the first message that differs
    wrong = dict(messages[1], text_stems=messages[1]["text_stems"] + " extra")
    with pytest.raises(AssertionError):
        check_stems([wrong])


def test_the_sqlite_store_is_indexed_and_its_triggers_are_back(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    show = build(path, 200, log=lambda _: None)
    assert show == show_ticket(200) == 100
    with sqlite3.connect(path) as conn:
        by_stems = {
            pk
            for pk, stems in conn.execute("SELECT id, text_stems FROM messages")
            if "счет" in stems.split()
        }
        found = {
            pk
            for (pk,) in conn.execute(
                "SELECT rowid FROM messages_fts WHERE messages_fts MATCH 'text_stems: счет'"
            )
        }
        assert by_stems and found == by_stems
        triggers = dict(conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'trigger'"))
        assert {"messages_fts_insert", "messages_fts_delete", "messages_fts_update"} <= {*triggers}
        # As the last migration made them: a batch of intake indexes its messages at its end.
        assert all("messages_fts_deferred" in triggers[n] for n in triggers if "_fts_" in n)
        [(shown,)] = conn.execute("SELECT count(*) FROM messages WHERE ticket_id = 100")
        assert shown == 10
