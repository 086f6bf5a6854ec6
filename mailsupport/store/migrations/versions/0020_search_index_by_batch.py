"""SQLite: intake indexes a batch's messages for search by one statement at its end.

Filed one at a time through the triggers of 0014, every message cost FTS5 a segment of its
own: a message's INSERT may abort halfway (its unique Message-ID) and fires a trigger, so it
runs in a statement savepoint, and FTS5 writes out what it holds in memory at every
savepoint. The index then spent its time merging those small segments (for 3,000 messages
about 47,000 writes to its tables where 14,000 do).

A row in `messages_fts_deferred` says: the messages from id `lo` on are indexed later, by the
transaction that wrote the row. Intake writes it when a batch begins and, at the end, indexes
those messages with one INSERT ... SELECT and deletes the row, in the same transaction (the
runtime side: mailsupport/store/searchindex.py); nobody else ever sees it. The triggers skip
such messages, so each is indexed once, with the values it has when its batch ends. (Ids of
messages never change, so a message is deferred or not for its whole life in the batch.)
Every other writer finds the table empty, and the triggers index as before.

PostgreSQL: nothing (its index is generated columns, see 0014).

Revision ID: 0020
Revises: 0019
"""

import importlib

from alembic import op

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None

# 0014's trigger statements, from 0014 itself (frozen as this one is): the triggers here
# are the same with a condition.
_SEARCH = importlib.import_module("mailsupport.store.migrations.versions.0014_search_stems")
_index, _forget = _SEARCH._index, _SEARCH._forget


def _now(row: str) -> str:
    """The trigger's condition: the message is not one a batch indexes at its end."""
    return f"WHEN NOT EXISTS (SELECT 1 FROM messages_fts_deferred WHERE {row}.id >= lo) "


_TRIGGERS_0014 = [s for s in _SEARCH.SQLITE_UP if s.startswith("CREATE TRIGGER")]
SQLITE_TRIGGERS = [
    f"CREATE TRIGGER messages_fts_insert AFTER INSERT ON messages {_now('new')}"
    f"BEGIN {_index('new')}END",
    f"CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages {_now('old')}"
    f"BEGIN {_forget('old')}END",
    "CREATE TRIGGER messages_fts_update AFTER UPDATE OF id, subject, text, subject_stems, "
    f"text_stems, direction, author, raw_id ON messages {_now('old')}BEGIN "
    f"{_forget('old')}{_index('new')}END",
]
_DROP_TRIGGERS = [s for s in _SEARCH.SQLITE_DROP if s.startswith("DROP TRIGGER")]


def upgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    op.execute("CREATE TABLE messages_fts_deferred (lo INTEGER NOT NULL)")
    for statement in _DROP_TRIGGERS + SQLITE_TRIGGERS:
        op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    for statement in _DROP_TRIGGERS + _TRIGGERS_0014:
        op.execute(statement)
    op.execute("DROP TABLE messages_fts_deferred")
