"""SQLite's search index (FTS5, kept by triggers: migrations 0014 and 0020) filled by batch.

Intake files a batch of messages in one transaction. Through the triggers each message's
INSERT cost FTS5 a small segment of its own (it writes out what it holds in memory at every
statement savepoint) and then merging them: `indexed_at_end` has the triggers skip the
batch's messages and indexes them all by one statement before the transaction commits. The
row that says so (`messages_fts_deferred`) never outlives the transaction: every other
writer, and every reader, finds the table empty. PostgreSQL: nothing to do (its index is
generated columns).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy as sa
from sqlmodel import Session

from mailsupport.store import direct

# What 0014's triggers index of a message (and its statement that fills the index), for
# the messages of the batch: a test holds the two the same.
_FOLD = "replace(replace(substr({col}, 1, {n}), 'ё', 'е'), 'Ё', 'Е')"
_INDEX_BATCH = (
    "INSERT INTO messages_fts (rowid, subject, text, subject_stems, text_stems) "
    f"SELECT messages.id, {_FOLD.format(col='messages.subject', n=1000)}, "
    f"{_FOLD.format(col='messages.text', n=100000)}, messages.subject_stems, "
    "messages.text_stems FROM messages "
    "WHERE NOT (messages.direction = 'out' AND messages.author = '' "
    "AND messages.raw_id IS NULL) AND messages.id >= :lo"
)


@contextmanager
def indexed_at_end(session: Session) -> Iterator[None]:
    """Within, on SQLite: the messages written are indexed for search when the block ends
    (not when it raises: the transaction is then rolled back, the row that said so too)."""
    if session.connection().dialect.name != "sqlite":
        yield
        return
    lo = direct.scalar(session, _next_id(), {})
    direct.write(session, _defer(), {"lo": lo})
    yield
    direct.write(session, _index_batch(), {"lo": lo})
    direct.write(session, _undefer(), {})


@functools.cache
def _next_id() -> sa.TextClause:
    # Every message written after this has a larger id (SQLite gives a new row the largest
    # id plus one; one writer at a time).
    return sa.text("SELECT coalesce(max(id), 0) + 1 FROM messages")


@functools.cache
def _defer() -> sa.TextClause:
    return sa.text("INSERT INTO messages_fts_deferred (lo) VALUES (:lo)")


@functools.cache
def _index_batch() -> sa.TextClause:
    return sa.text(_INDEX_BATCH)


@functools.cache
def _undefer() -> sa.TextClause:
    return sa.text("DELETE FROM messages_fts_deferred")
